"""The losses as functions with ``torch.nn.functional``'s (and torchvision's) signatures.

Each function checks its arguments the way PyTorch does (``TypeError`` for a wrong type or dtype,
``ValueError`` for a wrong shape, value or device), lays its tensors out as the library reads them
(copies made here, outside the autograd function, so that autograd routes the gradient back
through them), and hands them to one autograd function shared by every loss.

How training works (the kernel's economy kept): when the input needs a gradient, the forward runs
the library's fused call, which writes the loss and the gradient in one pass, and keeps the
gradient. The backward multiplies that gradient in place by ``grad_output`` on the device: a
0-dim ``grad_output`` (``mean``/``sum``) through the library's ``fusedloss_scale_in_place``, whose
kernel reads the scale and exits when it is 1 (an unscaled backward costs a launch, not a pass over
the gradient), one value per row or element (``none``) with a broadcast ``mul_``. No host
synchronisation, no second read of the logits, no second gradient-sized buffer. Loss scaling
(mixed precision) and gradient accumulation pass their factor as ``grad_scale``, which the fused
call applies in the same pass, and call ``backward()`` on the unscaled loss. Because the gradient
is scaled in place, a graph through these losses can be differentiated once: a second backward
through the same loss (``retain_graph=True``) raises.

On PyTorch >= 2.4 the same computation is also registered as the custom op ``fusedloss::loss``
with a fake implementation, so ``torch.compile`` traces these functions without a graph break.
"""

import contextlib
import math
import numbers
import operator
from typing import List, Optional, Tuple

import torch
from torch import Tensor
from torch.autograd import forward_ad

from . import _abi

__all__ = [
    "binary_cross_entropy_with_logits",
    "cross_entropy",
    "sigmoid_focal_loss",
    "softmax_focal_loss",
    "mse_loss",
]

_DTYPES = {
    torch.float32: _abi.FLOAT32,
    torch.float16: _abi.FLOAT16,
    torch.bfloat16: _abi.BFLOAT16,
    torch.float64: _abi.FLOAT64,
    torch.int32: _abi.INT32,
    torch.int64: _abi.INT64,
}
_FLOATING = (torch.float32, torch.float16, torch.bfloat16, torch.float64)
_ROW_LOSSES = ("cross_entropy", "softmax_focal")
# Each loss's float options, in the order _apply passes them after the grad scale.
_FLOAT_OPTIONS = {
    "bce": (),
    "sigmoid_focal": ("alpha", "gamma"),
    "mse": (),
    "cross_entropy": ("label_smoothing", "z_loss", "softcap"),
    "softmax_focal": ("gamma",),
}
# The params field that takes each loss's per-class (or, for BCE, per-element) weight vector.
_WEIGHT_FIELD = {"bce": "weight", "cross_entropy": "weight", "softmax_focal": "alpha"}
_PUBLIC_NAME = {"bce": "binary_cross_entropy_with_logits", "cross_entropy": "cross_entropy",
                "sigmoid_focal": "sigmoid_focal_loss", "softmax_focal": "softmax_focal_loss",
                "mse": "mse_loss"}
_NONE = _abi.REDUCTIONS["none"]


# --------------------------------------------------------------------------------------------
# The library call, written once for every loss


def _loss_shape(loss, input, reduction):
    """The loss's shape: per row (row losses) or element under none, a scalar otherwise."""
    if reduction != _NONE:
        return ()
    return (input.shape[0],) + tuple(input.shape[2:]) if loss in _ROW_LOSSES else tuple(input.shape)


def _compute(loss, input, target, weight, pos_weight, scale, ints, floats, compute_grad):
    """Runs loss ``loss`` of the library on tensors already laid out for it.

    ``ints`` is [reduction, empty_mean, ignore_index, validate_targets, return_z_loss] and
    ``floats`` [grad_scale, *the loss's _FLOAT_OPTIONS]. Returns (loss in the input's dtype,
    z-loss term or an empty tensor, gradient or an empty tensor): the forward call, or the fused
    call when ``compute_grad``.
    """
    lib = _abi.load()
    reduction, empty_mean, ignore_index, validate_targets, want_z_loss = ints
    cuda = input.device.type == "cuda"
    p = lib.params(loss)
    p.device = _abi.DEVICE_CUDA if cuda else _abi.DEVICE_CPU
    p.logits, p.logits_dtype = input.data_ptr(), _DTYPES[input.dtype]
    p.targets, p.targets_dtype = target.data_ptr(), _DTYPES[target.dtype]
    p.reduction, p.empty_mean = reduction, empty_mean
    for field, value in zip(_FLOAT_OPTIONS[loss], floats[1:]):
        setattr(p, field, value)
    if weight is not None:
        setattr(p, _WEIGHT_FIELD[loss], weight.data_ptr())

    counter = None
    if loss in _ROW_LOSSES:
        n, c, s = input.shape[0], input.shape[1], math.prod(input.shape[2:])
        p.batch, p.num_classes, p.spatial, p.ignore_index = n, c, s, ignore_index
        p.row_stride = input.stride(0) if input.dim() == 2 and n > 1 else 0
        p.grad_row_stride = c * s  # the gradient is contiguous whatever the logits' row stride
        if validate_targets and not target.is_floating_point():
            counter = torch.zeros((), dtype=torch.int64, device=input.device)
            p.invalid_target_count = counter.data_ptr()
    else:
        p.numel = input.numel()
        if loss == "bce":
            p.num_classes = input.shape[-1] if input.dim() > 0 else 1
            if weight is not None and weight.shape != input.shape:
                p.weight_layout = _abi.WEIGHT_PER_CLASS
            if pos_weight is not None:
                p.pos_weight = pos_weight.data_ptr()

    loss_dtype = torch.float64 if input.dtype == torch.float64 else torch.float32
    out = torch.empty(_loss_shape(loss, input, reduction), dtype=loss_dtype, device=input.device)
    p.loss = out.data_ptr()
    z_loss = torch.empty(out.shape if want_z_loss else (0,), dtype=loss_dtype, device=input.device)
    if want_z_loss:
        p.z_loss_out = z_loss.data_ptr()
    grad = torch.empty(input.shape if compute_grad else (0,), dtype=input.dtype,
                       device=input.device)
    if compute_grad:
        p.grad_logits = grad.data_ptr()
        p.grad_scale = floats[0]
        if scale is not None:
            p.grad_scale_ptr = scale.data_ptr()

    with _workspace(lib, loss, p, input.device) as (workspace, size, stream):
        lib.call(loss, "forward_backward" if compute_grad else "forward", p, workspace, size,
                 stream)
        if counter is not None:
            _check_count(_PUBLIC_NAME[loss],
                         lib.read_and_clear_counter(counter.data_ptr(), p.device, stream),
                         ignore_index, p.num_classes)
    return out.to(input.dtype), z_loss.to(input.dtype), grad


@contextlib.contextmanager
def _workspace(lib, name, params, device):
    """Within ``device``'s context: (the workspace's address, its bytes, the current stream) for
    the calls of ``name`` (a loss, or ``cross_entropy_shard``) with ``params``."""
    cuda = device.type == "cuda"
    with torch.cuda.device(device) if cuda else contextlib.nullcontext():
        stream = torch.cuda.current_stream().cuda_stream if cuda else None
        size = lib.workspace_size(name, params)
        workspace = torch.empty(size, dtype=torch.uint8, device=device) if size else None
        yield (workspace.data_ptr() if size else None), size, stream


def _check_count(fn, count, ignore_index, classes):
    """Raises ValueError, naming ``count``, when invalid targets were counted."""
    if count:
        raise ValueError(
            f"{fn}(): {count} target value(s) are neither ignore_index ({ignore_index}) nor a "
            f"class index in [0, {classes}); their rows were treated as ignored (pass "
            "validate_targets=False to allow that)")


def _scale_gradient(grad, grad_output, row_none):
    """The saved gradient times the upstream gradient, in place, on the tensors' device. A scalar
    upstream gradient goes through the library, whose kernel reads it and exits when it is 1 (the
    unscaled backward costs a launch, not a pass over the gradient); one value per row or element
    (reduction 'none') is a broadcast multiply."""
    if grad_output.dim() > 0:
        if row_none:
            grad_output = grad_output.unsqueeze(1)  # one value per row (n, s): over the classes
        return grad.mul_(grad_output)
    if grad.numel() == 0:
        return grad
    # grad_output has the loss's dtype, the input's: one the library reads on the input's device.
    scale = grad_output.contiguous()
    cuda = grad.is_cuda
    with torch.cuda.device(grad.device) if cuda else contextlib.nullcontext():
        stream = torch.cuda.current_stream().cuda_stream if cuda else None
        _abi.load().scale_in_place(grad.data_ptr(), _DTYPES[grad.dtype], grad.numel(),
                                   scale.data_ptr(), _DTYPES[scale.dtype],
                                   _abi.DEVICE_CUDA if cuda else _abi.DEVICE_CPU, stream)
    return grad


class _FusedLoss(torch.autograd.Function):
    """Every loss: the forward runs the library (fused when a gradient is needed); the backward
    scales the kept gradient by grad_output; forward-mode AD (jvp) dots it with the input's
    tangent."""

    @staticmethod
    def forward(ctx, input, target, weight, pos_weight, scale, loss, ints, floats, compute_grad):
        out, z_loss, grad = _compute(loss, input, target, weight, pos_weight, scale, ints, floats,
                                     compute_grad)
        ctx.mark_non_differentiable(z_loss, grad)
        ctx.set_materialize_grads(False)  # jvp: an argument without a tangent gets None, not 0
        ctx.save_for_backward(grad)
        ctx.save_for_forward(grad)
        ctx.loss = loss
        ctx.z_loss_shape = z_loss.shape
        ctx.none = ints[0] == _NONE
        ctx.row_none = loss in _ROW_LOSSES and ctx.none
        ctx.consumed = False
        return out, z_loss, grad

    @staticmethod
    def jvp(ctx, input_t, target_t, *_):
        """The loss's tangent: the kept gradient (d loss / d input, the mean's 1/M and grad_scale
        included, as in the backward) times the input's tangent, summed over what the loss sums:
        everything when reduced, the classes of each row under 'none' for the row losses, nothing
        for an element loss under 'none'. MSE's target contributes minus the same product."""
        (grad,) = ctx.saved_tensors
        if target_t is not None and ctx.loss != "mse":
            raise RuntimeError(
                f"fusedloss: {_PUBLIC_NAME[ctx.loss]}() has no forward-mode derivative with "
                "respect to its target (its target gets no gradient); give only the input a "
                "tangent")
        product = None
        if input_t is not None:
            product = grad * input_t
        if target_t is not None:
            product = -grad * target_t if product is None else product - grad * target_t
        if product is None:
            tangent = None
        elif not ctx.none:
            tangent = product.sum()
        elif ctx.row_none:
            tangent = product.sum(dim=1)
        else:
            tangent = product
        # The non-differentiable outputs get zero tangents, not None, which PyTorch 1.13 cannot
        # take (an internal assert).
        zero = grad.new_zeros(())
        return tangent, zero.expand(ctx.z_loss_shape), zero.expand(grad.shape)

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad_output, _grad_z_loss, _grad_grad):
        if ctx.consumed:
            raise RuntimeError(
                "fusedloss: trying to backward through a fusedloss loss a second time; its saved "
                "gradient was scaled in place by the first backward. Compute the loss again "
                "instead of using retain_graph=True.")
        ctx.consumed = True
        (grad,) = ctx.saved_tensors
        grad = _scale_gradient(grad, grad_output, ctx.row_none)
        grad_target = -grad if ctx.needs_input_grad[1] else None  # MSE only: d/dy = -d/dx
        return (grad if ctx.needs_input_grad[0] else None, grad_target) + (None,) * 7


def _register_custom_op():
    """Registers ``fusedloss::loss`` with a fake implementation and autograd (PyTorch >= 2.4), so
    that torch.compile traces the losses; returns the op, or None on older PyTorch."""
    if not hasattr(torch.library, "custom_op"):
        return None

    @torch.library.custom_op("fusedloss::loss", mutates_args=())
    def op(loss: str, input: Tensor, target: Tensor, weight: Optional[Tensor],
           pos_weight: Optional[Tensor], scale: Optional[Tensor], ints: List[int],
           floats: List[float], compute_grad: bool) -> Tuple[Tensor, Tensor, Tensor]:
        return _compute(loss, input, target, weight, pos_weight, scale, ints, floats,
                        compute_grad)

    @op.register_fake
    def _(loss, input, target, weight, pos_weight, scale, ints, floats, compute_grad):
        out = input.new_empty(_loss_shape(loss, input, ints[0]))
        return (out, input.new_empty(out.shape if ints[4] else (0,)),
                input.new_empty(input.shape if compute_grad else (0,)))

    def setup_context(ctx, inputs, output):
        ctx.row_none = inputs[0] in _ROW_LOSSES and inputs[6][0] == _NONE
        ctx.save_for_backward(output[2])

    def backward(ctx, grad_output, _grad_z_loss, _grad_grad):
        # Out of place here (a traced graph is functional; the compiler reuses the buffer); eager
        # calls take _FusedLoss, which scales in place.
        (grad,) = ctx.saved_tensors
        grad = grad * (grad_output.unsqueeze(1) if ctx.row_none else grad_output)
        return (None, grad if ctx.needs_input_grad[1] else None,
                -grad if ctx.needs_input_grad[2] else None) + (None,) * 6

    op.register_autograd(backward, setup_context=setup_context)
    return op


_custom_op = _register_custom_op()


def _has_tangent(tensor):
    """Whether ``tensor`` is a dual tensor of forward-mode AD (its tangent needs the gradient)."""
    return forward_ad.unpack_dual(tensor).tangent is not None


def _compiling():
    is_compiling = getattr(getattr(torch, "compiler", None), "is_compiling", None)
    return is_compiling is not None and is_compiling()


def _apply(loss, fn, input, target, weight=None, pos_weight=None, *, reduction, empty_mean,
           grad_scale, options=(), ignore_index=-100, validate_targets=False,
           return_z_loss=False, target_grad=False):
    """Runs ``loss`` (public name ``fn``) through the custom op (while compiling) or the autograd
    function, on tensors laid out for the library."""
    scale, scale_value = _grad_scale(fn, grad_scale, input)
    ints = [_reduction(reduction, loss), _empty_mean(empty_mean), ignore_index,
            int(validate_targets), int(return_z_loss)]
    floats = [scale_value, *options]
    compute_grad = (torch.is_grad_enabled() and (
        input.requires_grad or (target_grad and target.requires_grad))) or (
        _has_tangent(input) or (target_grad and _has_tangent(target)))
    args = (input, target, weight, pos_weight, scale, loss, ints, floats, compute_grad)
    if _custom_op is not None and _compiling():
        out, z_loss, _ = _custom_op(loss, *args[:5], ints, floats, compute_grad)
    else:
        out, z_loss, _ = _FusedLoss.apply(*args)
    return out, z_loss


# --------------------------------------------------------------------------------------------
# Argument checks, with PyTorch's messages where PyTorch has one


def _legacy_none(fn, size_average, reduce):
    """Refuses a deprecated size_average or reduce other than None (their slots stay where PyTorch
    has them, so that positional calls line up) with a TypeError naming it."""
    given = [f"{name}={value!r}" for name, value in (("size_average", size_average),
                                                     ("reduce", reduce)) if value is not None]
    if given:
        names = " and ".join(repr(g.split("=")[0]) for g in given)
        raise TypeError(
            f"{fn}() got {', '.join(given)}: fusedloss accepts the deprecated {names} only as "
            "None; use reduction='none', 'mean' or 'sum'")


def _check_tensor(fn, name, position, value):
    if not isinstance(value, Tensor):
        raise TypeError(
            f"{fn}(): argument '{name}' (position {position}) must be Tensor, not "
            f"{type(value).__name__}")


def _check_input(fn, input, name="input"):
    _check_tensor(fn, name, 1, input)
    if input.dtype not in _FLOATING:
        raise TypeError(
            f"{fn}(): expected {name} of a floating-point dtype (float32, float16, bfloat16 or "
            f"float64), but got {input.dtype}")
    if input.device.type not in ("cpu", "cuda"):
        raise ValueError(f"{fn}(): fusedloss runs on CPU and CUDA tensors, not on {input.device}")
    if input.device.type == "cuda":
        if not _abi.load().built_with_cuda:
            raise RuntimeError(
                f"{fn}(): {_abi.load().path} was built without CUDA (FUSEDLOSS_WITH_CUDA=OFF), so "
                "it cannot run on CUDA tensors")
        if input.dtype == torch.float64:
            raise TypeError(
                f"{fn}(): float64 runs on the CPU reference only; on CUDA use float32, float16 or "
                "bfloat16")


def _not_floating(fn, name, tensor):
    raise TypeError(f"{fn}(): expected {name} of a floating-point dtype, but got {tensor.dtype}")


def _check_device(input, *others):
    for other in others:
        if other is not None and other.device != input.device:
            raise ValueError(
                "Expected all tensors to be on the same device, but found at least two devices, "
                f"{input.device} and {other.device}!")


def _no_gradient_for(fn, **tensors):
    """The library differentiates the input (and MSE's target) only: refuse to drop a gradient."""
    if not torch.is_grad_enabled():
        return
    for name, tensor in tensors.items():
        if tensor is not None and tensor.requires_grad:
            raise NotImplementedError(
                f"{fn}(): fusedloss computes no gradient with respect to '{name}', which requires "
                f"grad; pass {name}.detach()")


def _reduction(reduction, loss=None):
    """The library's code of ``reduction``; a bad one raises ValueError in PyTorch's words, or in
    torchvision's for sigmoid focal (its tests match them)."""
    if not isinstance(reduction, str) or reduction not in _abi.REDUCTIONS:
        if loss == "sigmoid_focal":
            raise ValueError(f"Invalid Value for arg 'reduction': '{reduction} \n Supported "
                             "reduction modes: 'none', 'mean', 'sum'")
        raise ValueError(f"{reduction} is not a valid value for reduction")
    return _abi.REDUCTIONS[reduction]


def _empty_mean(empty_mean):
    if not isinstance(empty_mean, str) or empty_mean not in _abi.EMPTY_MEAN:
        raise ValueError(f"empty_mean must be 'nan' or 'zero', but got {empty_mean!r}")
    return _abi.EMPTY_MEAN[empty_mean]


def _grad_scale(fn, grad_scale, input):
    """(device float32 scalar or None, host float) for the fused call's grad_scale fields."""
    if isinstance(grad_scale, Tensor):
        if grad_scale.dim() != 0 or not grad_scale.is_floating_point():
            raise ValueError(
                f"{fn}(): grad_scale must be a float or a 0-dim floating-point tensor, but got a "
                f"{grad_scale.dtype} tensor of shape {list(grad_scale.shape)}")
        _check_device(input, grad_scale)
        return grad_scale.detach().to(torch.float32), 1.0
    if not isinstance(grad_scale, numbers.Real):
        raise TypeError(
            f"{fn}(): grad_scale must be a float or a 0-dim tensor, not "
            f"{type(grad_scale).__name__}")
    return None, float(grad_scale)


def _number(fn, name, value, minimum=None, exclusive=False):
    """``value`` as a finite float, at least (or above) ``minimum``."""
    if not isinstance(value, numbers.Real) and not (isinstance(value, Tensor) and
                                                    value.numel() == 1):
        raise TypeError(f"{fn}(): {name} must be a number, not {type(value).__name__}")
    value = float(value)
    if not math.isfinite(value) or (minimum is not None and (
            value < minimum or (exclusive and value == minimum))):
        bound = "" if minimum is None else f" {'>' if exclusive else '>='} {minimum}"
        raise ValueError(f"{fn}(): {name} must be a finite number{bound}, but got {value}")
    return value


def _float_target(fn, input, target, name="target"):
    """An element-loss target: the input's shape, float32 or the input's dtype, contiguous."""
    _check_tensor(fn, name, 2, target)
    if target.shape != input.shape:
        raise ValueError(
            f"{name.capitalize()} size ({target.size()}) must be the same as input size "
            f"({input.size()})")
    if not target.is_floating_point():
        _not_floating(fn, name, target)
    _check_device(input, target)
    if target.dtype not in (torch.float32, input.dtype):
        target = target.to(torch.float64 if input.dtype == torch.float64 else torch.float32)
    return target.contiguous()


def _class_vector(fn, name, vector, input, classes):
    """A per-class vector (CE's weight, softmax focal's alpha) as C contiguous float32 values."""
    if vector is None:
        return None
    if not isinstance(vector, Tensor):
        vector = torch.as_tensor(vector, dtype=torch.float32, device=input.device)
    if not vector.is_floating_point():
        _not_floating(fn, name, vector)
    if tuple(vector.shape) != (classes,):
        raise ValueError(
            f"{name} tensor should be defined either for all {classes} classes or no classes but "
            f"got {name} tensor of shape: {list(vector.shape)}")
    _check_device(input, vector)
    _no_gradient_for(fn, **{name: vector})
    return vector.to(torch.float32).contiguous()


def _bce_vector(fn, name, vector, input, per_class_only):
    """BCE's weight or pos_weight as the library takes it: C per-class values (broadcast along the
    input's last dimension) or, for weight, one value per element (any other broadcast shape)."""
    if vector is None or input.numel() == 0:
        return None
    _check_tensor(fn, name, 3 if name == "weight" else 5, vector)
    if not vector.is_floating_point():
        _not_floating(fn, name, vector)
    _check_device(input, vector)
    _no_gradient_for(fn, **{name: vector})
    try:
        broadcasts = torch.broadcast_shapes(vector.shape, input.shape) == input.shape
    except RuntimeError:
        broadcasts = False
    classes = input.shape[-1] if input.dim() > 0 else 1
    per_class = broadcasts and all(size == 1 for size in vector.shape[:-1])
    if per_class:
        vector = vector.reshape(-1).expand(classes)
    elif broadcasts and not per_class_only:
        vector = vector.expand(input.shape)
    else:
        what = ("one value per class (the input's last dimension)" if per_class_only
                else "a shape that broadcasts to the input's")
        raise ValueError(
            f"{fn}(): {name} of shape {list(vector.shape)} does not fit input of shape "
            f"{list(input.shape)}: fusedloss takes {what}")
    return vector.to(torch.float32).contiguous()


def _row_inputs(fn, input, target, probabilities_allowed):
    """Checks a row loss's input and target and lays them out for the library: input (N, C) with
    unit class stride and any row stride >= C, or (N, C, d1, ...) contiguous; class indices
    (N, d1, ...) int32/int64, or probabilities of the input's shape. Returns (input, target,
    unbatched, probabilities)."""
    _check_input(fn, input)
    _check_tensor(fn, "target", 2, target)
    if input.dim() == 0:
        raise ValueError(f"{fn}(): expected input of 1 or more dimensions (got 0)")
    _check_device(input, target)
    probabilities = target.shape == input.shape
    unbatched = input.dim() == 1
    if unbatched:  # (C) with a () class index or (C) probabilities, as PyTorch takes them
        input, target = input.unsqueeze(0), target.unsqueeze(0)
    if probabilities:
        if not probabilities_allowed:
            raise TypeError(
                f"{fn}(): expected class-index targets (int64 or int32); probability targets of "
                "the input's shape are not supported by this loss")
        if not target.is_floating_point():
            raise TypeError(
                f"Expected floating point type for target with class probabilities, got "
                f"{target.dtype}")
        _no_gradient_for(fn, target=target)
        if target.dtype not in (torch.float32, input.dtype):
            target = target.to(torch.float64 if input.dtype == torch.float64 else torch.float32)
        target = target.contiguous()
    else:
        if target.dtype not in (torch.int64, torch.int32):
            raise TypeError(
                f"{fn}(): expected target of dtype int64 or int32 (class indices)"
                + (", or of the input's shape (class probabilities)" if probabilities_allowed
                   else "")
                + f", but got {target.dtype} of shape {list(target.shape)}")
        if target.dim() == 0 or target.shape[0] != input.shape[0]:
            raise ValueError(
                f"Expected input batch_size ({input.shape[0]}) to match target batch_size "
                f"({target.shape[0] if target.dim() else 0}).")
        expected = (input.shape[0],) + tuple(input.shape[2:])
        if tuple(target.shape) != expected:
            raise ValueError(f"Expected target size {list(expected)}, got {list(target.shape)}")
        target = target.contiguous()
    n, c = input.shape[0], input.shape[1]
    if input.dim() == 2:
        library_ready = (c <= 1 or input.stride(1) == 1) and (n <= 1 or input.stride(0) >= c)
    else:
        library_ready = input.is_contiguous()
    if not library_ready:
        input = input.contiguous()
    return input, target, unbatched, probabilities


def _ignore_index(fn, ignore_index):
    try:
        return operator.index(ignore_index)
    except TypeError:
        raise TypeError(
            f"{fn}(): ignore_index must be an int, not {type(ignore_index).__name__}") from None


def _row_result(result, unbatched, return_z_loss):
    out, z_loss = result
    if unbatched:  # under none, the one row's loss as a 0-dim tensor, as PyTorch returns it
        out, z_loss = out.squeeze(0), z_loss.squeeze(0)
    return (out, z_loss) if return_z_loss else out


# --------------------------------------------------------------------------------------------
# The public functions


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
    options = (float(label_smoothing), _number(fn, "z_loss", z_loss, 0.0),
               0.0 if softcap is None else _number(fn, "softcap", softcap, 0.0, exclusive=True))
    result = _apply("cross_entropy", fn, input, target, weight, reduction=reduction,
                    empty_mean=empty_mean, grad_scale=grad_scale, options=options,
                    ignore_index=ignore_index,
                    validate_targets=bool(validate_targets), return_z_loss=bool(return_z_loss))
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
    options = (_number(fn, "alpha", alpha), _number(fn, "gamma", gamma, 0.0))
    out, _ = _apply("sigmoid_focal", fn, inputs.contiguous(), targets, reduction=reduction,
                    empty_mean=empty_mean, grad_scale=grad_scale, options=options)
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
                    options=(_number(fn, "gamma", gamma, 0.0),),
                    ignore_index=_ignore_index(fn, ignore_index),
                    validate_targets=bool(validate_targets))
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
