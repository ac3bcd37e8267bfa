"""Fused linear + cross-entropy: an LLM head's loss, ``cross_entropy(input @ linear_weight.T +
linear_bias, target)``, and the gradients of the hidden states, the weight and the bias, without
the (N, V) logits ever existing outside a chunk of the library's workspace
(``include/fusedloss/linear_cross_entropy.h``).

With ``mean`` or ``sum`` and a gradient needed, the forward runs the library's fused call, which
writes the loss and the three gradients, and keeps them; the backward scales them in place by
``grad_output`` on the device (a launch when it is 1, no host synchronisation), as the other
losses do. Under ``none`` the gradients depend on the per-row upstream gradient, so the forward
writes the loss alone and the backward runs the library's backward call, which recomputes the
logits chunk by chunk.
"""

import torch

from . import _abi
from ._checks import (_check_count, _check_device, _check_input, _check_tensor, _class_vector,
                      _empty_mean, _grad_scale, _ignore_index, _no_gradient_for, _number,
                      _reduction)
from ._engine import _DTYPES, _Options, _refuse_transforms, _scale_gradient, _workspace

__all__ = ["linear_cross_entropy"]

_FN = "linear_cross_entropy"
_NONE = _abi.REDUCTIONS["none"]


def _call(name, input, linear_weight, linear_bias, target, weight, scale, options,
          max_workspace_bytes, wants, grad_output=None):
    """Runs ``fusedloss_linear_cross_entropy_<name>`` with ``options`` (an _Options: the reduction,
    target and cross-entropy options, the grad scale) and the chunk buffer's bound; ``wants``
    says which of (grad_input, grad_linear_weight, grad_linear_bias) to write. Returns (loss,
    z-loss term, the three gradients or None)."""
    lib = _abi.load()
    cuda = input.device.type == "cuda"
    device = input.device
    n, h = input.shape
    p = lib.params("linear_cross_entropy")
    p.device = _abi.DEVICE_CUDA if cuda else _abi.DEVICE_CPU
    p.batch, p.hidden, p.num_classes = n, h, linear_weight.shape[0]
    p.input, p.input_dtype = input.data_ptr(), _DTYPES[input.dtype]
    p.input_row_stride = input.stride(0) if n > 1 else 0
    p.linear_weight = linear_weight.data_ptr()
    if linear_bias is not None:
        p.linear_bias = linear_bias.data_ptr()
    p.targets, p.targets_dtype = target.data_ptr(), _DTYPES[target.dtype]
    if weight is not None:
        p.weight = weight.data_ptr()
    p.ignore_index = options.ignore_index
    p.label_smoothing, p.z_loss = options.label_smoothing, options.z_loss
    p.softcap = options.softcap
    p.reduction, p.empty_mean = options.reduction, options.empty_mean
    p.max_workspace_bytes = max_workspace_bytes

    loss_dtype = torch.float64 if input.dtype == torch.float64 else torch.float32
    shape = (n,) if options.reduction == _NONE else ()
    out = torch.empty(shape, dtype=loss_dtype, device=device)
    z_term = torch.empty(shape, dtype=loss_dtype, device=device)
    if name != "backward":
        p.loss, p.z_loss_out = out.data_ptr(), z_term.data_ptr()
    # PyTorch wants each gradient in its tensor's dtype: the weight's and bias's are written in
    # the input's (which the weight shares), accumulated in float32 within a chunk.
    p.grad_linear_dtype = _DTYPES[input.dtype]
    grads = [torch.empty_like(t, memory_format=torch.contiguous_format) if want else None
             for t, want in zip((input, linear_weight, linear_bias), wants)]
    if grads[0] is not None:
        p.grad_input, p.grad_input_row_stride = grads[0].data_ptr(), h
    if grads[1] is not None:
        p.grad_linear_weight = grads[1].data_ptr()
    if grads[2] is not None:
        p.grad_linear_bias = grads[2].data_ptr()
    if name == "forward_backward":
        p.grad_scale = options.grad_scale
        if scale is not None:
            p.grad_scale_ptr = scale.data_ptr()
    if grad_output is not None:
        upstream = grad_output.to(loss_dtype).contiguous()
        p.grad_loss = upstream.data_ptr()
    counter = None
    if options.validate_targets and name != "backward":
        counter = torch.zeros((), dtype=torch.int64, device=device)
        p.invalid_target_count = counter.data_ptr()

    with _workspace(lib, "linear_cross_entropy", p, device) as (workspace, size, stream):
        lib.call("linear_cross_entropy", name, p, workspace, size, stream)
        if counter is not None:
            _check_count(_FN, lib.read_and_clear_counter(counter.data_ptr(), p.device, stream),
                         options.ignore_index, p.num_classes)
    return out.to(input.dtype), z_term.to(input.dtype), grads


class _LinearCrossEntropy(torch.autograd.Function):
    """mean/sum: the forward keeps the fused call's gradients and the backward scales them;
    none: the backward runs the library's backward with the per-row upstream gradient."""

    @staticmethod
    def forward(ctx, input, linear_weight, linear_bias, target, weight, scale, options,
                max_workspace_bytes, wants):
        none = options.reduction == _NONE
        fused = any(wants) and not none
        out, z_term, grads = _call("forward_backward" if fused else "forward", input,
                                   linear_weight, linear_bias, target, weight, scale, options,
                                   max_workspace_bytes, wants if fused else (False, False, False))
        ctx.mark_non_differentiable(z_term)
        ctx.none, ctx.wants, ctx.options = none, wants, options
        ctx.max_workspace_bytes = max_workspace_bytes
        ctx.consumed = False
        if fused:
            ctx.save_for_backward(*[g if g is not None else torch.empty(0) for g in grads])
        else:
            ctx.save_for_backward(input, linear_weight,
                                  linear_bias if linear_bias is not None else torch.empty(0),
                                  target, weight if weight is not None else torch.empty(0))
        return out, z_term

    @staticmethod
    def jvp(ctx, *_):
        raise RuntimeError(f"fusedloss: {_FN}() has no forward-mode derivative; use reverse mode")

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad_output, _grad_z):
        # Only the kept gradients are consumed: under none each backward recomputes its own.
        if ctx.consumed:
            raise RuntimeError(
                f"fusedloss: trying to backward through {_FN}() a second time; its saved "
                "gradients were scaled in place by the first backward. Compute the loss again "
                "instead of using retain_graph=True.")
        ctx.consumed = not ctx.none
        if ctx.none:
            input, linear_weight, bias, target, weight = ctx.saved_tensors
            _, _, grads = _call("backward", input, linear_weight,
                                bias if bias.numel() else None, target,
                                weight if weight.numel() else None, None, ctx.options,
                                ctx.max_workspace_bytes, ctx.wants, grad_output=grad_output)
        else:
            grads = [_scale_gradient(g, grad_output, False) if want else None
                     for g, want in zip(ctx.saved_tensors, ctx.wants)]
        return (grads[0], grads[1], grads[2]) + (None,) * 6


def linear_cross_entropy(input, linear_weight, target, *, linear_bias=None, weight=None,
                         ignore_index=-100, reduction="mean", label_smoothing=0.0, z_loss=0.0,
                         softcap=0.0, empty_mean="nan", validate_targets=True,
                         return_z_loss=False, grad_scale=1.0, max_workspace_bytes=None):
    """``cross_entropy(F.linear(input, linear_weight, linear_bias), target, ...)`` without the
    logits: ``input`` (..., H) hidden states, ``linear_weight`` (V, H) and ``linear_bias`` (V) in
    the input's dtype, ``target`` (...) class indices (int64 or int32). Options as in
    :func:`fusedloss.cross_entropy` (``softcap`` 0 or None is off); ``max_workspace_bytes``
    bounds the library's chunk buffer (default 512 MiB), which sets how many rows' logits exist at a
    time. Returns the loss (``target``'s shape under 'none'), in the input's dtype."""
    _check_input(_FN, input)
    _refuse_transforms(_FN, input, "it has no torch.func support (the element and row losses "
                       "have it, on PyTorch >= 2.0)")
    _check_tensor(_FN, "linear_weight", 2, linear_weight)
    _check_tensor(_FN, "target", 3, target)
    if input.dim() == 0:
        raise ValueError(f"{_FN}(): expected input of 1 or more dimensions (got 0)")
    if linear_weight.dim() != 2 or linear_weight.shape[1] != input.shape[-1]:
        raise ValueError(
            f"{_FN}(): linear_weight of shape {list(linear_weight.shape)} does not fit input of "
            f"shape {list(input.shape)}: expected (V, {input.shape[-1]})")
    if linear_weight.dtype != input.dtype:
        raise TypeError(f"{_FN}(): expected linear_weight of the input's dtype ({input.dtype}), "
                        f"but got {linear_weight.dtype}")
    vocab = linear_weight.shape[0]
    if linear_bias is not None:
        _check_tensor(_FN, "linear_bias", 4, linear_bias)
        if tuple(linear_bias.shape) != (vocab,) or linear_bias.dtype != input.dtype:
            raise ValueError(f"{_FN}(): expected linear_bias of shape [{vocab}] and dtype "
                             f"{input.dtype}, got {list(linear_bias.shape)} {linear_bias.dtype}")
        linear_bias = linear_bias.contiguous()
    _check_device(input, linear_weight, linear_bias, target)
    if target.dtype not in (torch.int64, torch.int32):
        raise TypeError(f"{_FN}(): expected target of dtype int64 or int32 (class indices), but "
                        f"got {target.dtype}")
    if tuple(target.shape) != tuple(input.shape[:-1]):
        raise ValueError(f"Expected input batch_size ({input.shape[:-1].numel()}) to match "
                         f"target batch_size ({target.numel()}).")
    _no_gradient_for(_FN, target=target)
    hidden = input.shape[-1]
    rows = input.reshape(-1, hidden)
    if rows.shape[0] > 1 and (rows.stride(1) != 1 or rows.stride(0) < hidden):
        rows = rows.contiguous()  # the library reads rows with unit stride, any row stride
    weight = _class_vector(_FN, "weight", weight, rows, vocab)
    ignore_index = _ignore_index(_FN, ignore_index)
    if not 0.0 <= label_smoothing <= 1.0:
        raise ValueError(f"label_smoothing must be between 0.0 and 1.0. Got: {label_smoothing}")
    cap = 0.0 if softcap is None or softcap == 0 else _number(_FN, "softcap", softcap, 0.0,
                                                              exclusive=True)
    scale, scale_value = _grad_scale(_FN, grad_scale, rows)
    workspace = 0 if max_workspace_bytes is None else int(max_workspace_bytes)
    options = _Options(reduction=_reduction(reduction), empty_mean=_empty_mean(empty_mean),
                       ignore_index=ignore_index, validate_targets=bool(validate_targets),
                       return_z_loss=bool(return_z_loss), grad_scale=scale_value,
                       label_smoothing=float(label_smoothing),
                       z_loss=_number(_FN, "z_loss", z_loss, 0.0), softcap=cap)
    grad_enabled = torch.is_grad_enabled()
    wants = tuple(grad_enabled and t is not None and t.requires_grad
                  for t in (input, linear_weight, linear_bias))
    out, z_term = _LinearCrossEntropy.apply(rows, linear_weight.contiguous(), linear_bias,
                                            target.reshape(-1).contiguous(), weight, scale,
                                            options, workspace, wants)
    if options.reduction == _NONE:
        out, z_term = out.reshape(target.shape), z_term.reshape(target.shape)
    return (out, z_term) if return_z_loss else out
