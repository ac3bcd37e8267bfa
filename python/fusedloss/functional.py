"""The losses as functions with ``torch.nn.functional``'s (and torchvision's) signatures.

Each function checks its arguments the way PyTorch does (:mod:`fusedloss._checks`), lays its
tensors out as the library reads them, and hands them to the engine (:mod:`fusedloss._engine`),
one autograd function shared by every loss; the engine's docstring says how training keeps the
kernel's economy, and what torch.compile and torch.func do over these functions.
"""

from ._checks import (_bce_vector, _check_input, _check_tensor, _class_vector, _float_target,
                      _ignore_index, _legacy_none, _no_gradient_for, _number, _row_inputs)
from ._engine import _apply

__all__ = [
    "binary_cross_entropy_with_logits",
    "cross_entropy",
    "sigmoid_focal_loss",
    "softmax_focal_loss",
    "mse_loss",
]


def _row_result(result, unbatched, return_z_loss):
    out, z_loss = result
    if unbatched:  # under none, the one row's loss as a 0-dim tensor, as PyTorch returns it
        out, z_loss = out.squeeze(0), z_loss.squeeze(0)
    return (out, z_loss) if return_z_loss else out


def binary_cross_entropy_with_logits(input, target, weight=None, size_average=None, reduce=None,
                                     reduction="mean", pos_weight=None, *, empty_mean="nan",
                                     grad_scale=1.0):
    """``torch.nn.functional.binary_cross_entropy_with_logits`` on the fused library.

    ``weight`` broadcasts to the input (a vector along the last dimension is passed as one weight
    per class, any other shape as one weight per element); ``pos_weight`` has one value per class
    (the last dimension). Weights are used as float32. Targets may be soft; the target, weight and
    pos_weight get no gradient. Deliberate differences: the loss at ``x = -inf, y = 0`` and
    ``x = +inf, y = 1`` is 0 with gradient 0 (PyTorch: NaN), and so is that of an element of
    weight 0 at an infinite logit (PyTorch: NaN).

    Keyword-only extensions: ``empty_mean`` ('nan' as PyTorch, or 'zero') is what ``mean`` gives
    for an empty input; ``grad_scale`` (a float or a 0-dim float tensor on the input's device)
    multiplies the gradient in the fused call, not the returned loss.
    """
    fn = "binary_cross_entropy_with_logits"
    _legacy_none(fn, size_average, reduce)
    _check_input(fn, input)
    target = _float_target(fn, input, target)
    _no_gradient_for(fn, target=target)
    weight = _bce_vector(fn, "weight", weight, input, per_class_only=False)
    pos_weight = _bce_vector(fn, "pos_weight", pos_weight, input, per_class_only=True)
    out, _ = _apply("bce", fn, input.contiguous(), target, weight, pos_weight,
                    reduction=reduction, empty_mean=empty_mean, grad_scale=grad_scale)
    return out


def cross_entropy(input, target, weight=None, size_average=None, ignore_index=-100, reduce=None,
                  reduction="mean", label_smoothing=0.0, *, z_loss=0.0, softcap=None,
                  empty_mean="nan", validate_targets=True, return_z_loss=False, grad_scale=1.0):
    """``torch.nn.functional.cross_entropy`` on the fused library.

    ``input`` is (C), (N, C) or (N, C, d1, ...); ``target`` holds class indices (int64 or int32) of
    shape (), (N) or (N, d1, ...), or class probabilities of the input's shape. An (N, C) input
    with a row stride (a slice of a wider tensor) is read in place; other layouts are made
    contiguous first.

    Keyword-only extensions:

    - ``z_loss``: adds ``z_loss * LSE**2`` for every non-ignored row (PaLM's z-loss).
    - ``softcap``: replaces every logit by ``softcap * tanh(x / softcap)`` first (Gemma 2).
    - ``empty_mean``: what ``mean`` gives over zero rows or zero total weight: 'nan' (PyTorch) or
      'zero'. The gradient is 0 either way.
    - ``validate_targets``: a class index that is neither ``ignore_index`` nor in [0, C) raises
      ``ValueError`` after the call, naming the count (on CUDA that reads a device counter: one
      small synchronisation). ``False`` skips the check on every device: such rows are then
      silently treated as ignored (for CUDA graph capture and benchmarks).
    - ``return_z_loss``: return ``(loss, z_loss_term)``, the z-loss term alone reduced like the
      loss, without gradient (to log it).
    - ``grad_scale``: a float or 0-dim float tensor that multiplies the gradient inside the fused
      call (not the returned loss): loss scaling and gradient accumulation without scaling the
      loss, so ``loss.backward()`` gives the scaled gradient.

    Deliberate differences from PyTorch: ignored rows get an exactly-zero gradient even when their
    logits are -inf (PyTorch: NaN); an out-of-range class index raises ``ValueError`` (PyTorch:
    ``IndexError`` on the CPU, a device assert on CUDA).
    """
    fn = "cross_entropy"
    _legacy_none(fn, size_average, reduce)
    input, target, unbatched, probabilities = _row_inputs(fn, input, target, True)
    classes = input.shape[1]
    weight = _class_vector(fn, "weight", weight, input, classes)
    ignore_index = _ignore_index(fn, ignore_index)
    if probabilities and ignore_index != -100:
        raise ValueError("ignore_index is not supported for floating point target")
    if not 0.0 <= label_smoothing <= 1.0:
        raise ValueError(f"label_smoothing must be between 0.0 and 1.0. Got: {label_smoothing}")
    result = _apply("cross_entropy", fn, input, target, weight, reduction=reduction,
                    empty_mean=empty_mean, grad_scale=grad_scale, ignore_index=ignore_index,
                    validate_targets=validate_targets, return_z_loss=return_z_loss,
                    label_smoothing=float(label_smoothing),
                    z_loss=_number(fn, "z_loss", z_loss, 0.0),
                    softcap=0.0 if softcap is None else _number(fn, "softcap", softcap, 0.0,
                                                                exclusive=True))
    return _row_result(result, unbatched, return_z_loss)


def sigmoid_focal_loss(inputs, targets, alpha=0.25, gamma=2, reduction="none", *,
                       empty_mean="nan", grad_scale=1.0):
    """``torchvision.ops.sigmoid_focal_loss`` on the fused library (its defaults, ``reduction``
    'none' included).

    ``alpha`` < 0 turns the class weighting off, as torchvision. Deliberate difference: the loss
    and gradient stay finite for every finite logit and every ``gamma`` >= 0, including
    ``gamma`` in (0, 1) at saturated logits (torchvision: NaN gradients there). The targets get no
    gradient. ``empty_mean`` and ``grad_scale`` as in :func:`binary_cross_entropy_with_logits`.
    """
    fn = "sigmoid_focal_loss"
    _check_input(fn, inputs, "inputs")
    targets = _float_target(fn, inputs, targets, "targets")
    _no_gradient_for(fn, targets=targets)
    out, _ = _apply("sigmoid_focal", fn, inputs.contiguous(), targets, reduction=reduction,
                    empty_mean=empty_mean, grad_scale=grad_scale,
                    alpha=_number(fn, "alpha", alpha), gamma=_number(fn, "gamma", gamma, 0.0))
    return out


def softmax_focal_loss(input, target, alpha=None, gamma=2.0, ignore_index=-100, reduction="mean",
                       *, empty_mean="nan", validate_targets=True, grad_scale=1.0):
    """Multi-class focal loss: ``-alpha[y] * (1 - p_y)**gamma * log p_y`` per row, 0 for an
    ignored row; ``mean`` divides by the number of non-ignored rows.

    ``input`` and class-index ``target`` are shaped as in :func:`cross_entropy`; ``alpha`` is None
    (all 1) or one weight per class (a tensor or a sequence of C numbers). ``gamma = 0`` with
    ``alpha = None`` is cross-entropy. The gradient is finite for every ``gamma`` >= 0 and every
    finite row. The keyword-only ``empty_mean``, ``validate_targets`` and ``grad_scale`` are as in
    :func:`cross_entropy`.
    """
    fn = "softmax_focal_loss"
    input, target, unbatched, _ = _row_inputs(fn, input, target, False)
    alpha = _class_vector(fn, "alpha", alpha, input, input.shape[1])
    result = _apply("softmax_focal", fn, input, target, alpha, reduction=reduction,
                    empty_mean=empty_mean, grad_scale=grad_scale,
                    gamma=_number(fn, "gamma", gamma, 0.0),
                    ignore_index=_ignore_index(fn, ignore_index),
                    validate_targets=validate_targets)
    return _row_result(result, unbatched, False)


def mse_loss(input, target, size_average=None, reduce=None, reduction="mean", *,
             empty_mean="nan", grad_scale=1.0):
    """``torch.nn.functional.mse_loss`` on the fused library.

    Both ``input`` and ``target`` may require grad (the target's gradient is the input's negated).
    Unlike PyTorch, a target of another shape is refused rather than broadcast with a warning.
    ``empty_mean`` and ``grad_scale`` as in :func:`binary_cross_entropy_with_logits`.
    """
    fn = "mse_loss"
    _legacy_none(fn, size_average, reduce)
    _check_input(fn, input)
    _check_tensor(fn, "target", 2, target)
    if target.shape != input.shape:
        raise ValueError(
            f"Using a target size ({target.size()}) that is different to the input size "
            f"({input.size()}) is not supported: fusedloss does not broadcast the target")
    target = _float_target(fn, input, target)
    out, _ = _apply("mse", fn, input.contiguous(), target, reduction=reduction,
                    empty_mean=empty_mean, grad_scale=grad_scale, target_grad=True)
    return out
