"""The engine under the losses of :mod:`fusedloss.functional`: the library call, written once for
every loss; the autograd function that runs it; the custom op that torch.compile traces; and
``_apply``, which the public functions call with tensors laid out for the library.

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

torch.func (PyTorch >= 2.0): the autograd function is written with ``setup_context`` (its forward
takes no ctx) and has a ``vmap`` rule, so the transforms run over the losses. ``grad``, ``vjp``,
``jacrev`` and ``jvp`` use the gradient the fused call kept, as eager autograd does; under them the
backward multiplies it out of place (a transform's wrapped tensors have no memory of their own for
the library to scale, and a function from ``vjp`` may be called more than once). ``vmap`` runs one
library call per sample, since the library reads raw pointers and a batched tensor has none: each
sample's slice is laid out anew and the results are stacked, so ``vmap(grad(loss))`` gives
per-sample gradients for a launch per sample. What cannot run raises ``RuntimeError`` naming it: a
second derivative (a loss that two nested grad or jvp levels differentiate, as in ``hessian``,
``jacfwd(jacrev(...))`` or ``grad(grad(...))``), since the library differentiates once; and every
transform on PyTorch < 2.0, whose functorch runs no autograd.Function (there ``torch.autograd``
gives gradients and ``torch.autograd.forward_ad`` tangents).
"""

import contextlib
import math
from typing import List, NamedTuple, Optional, Tuple

import torch
from torch import Tensor
from torch.autograd import forward_ad

from . import _abi
from ._checks import _check_count, _empty_mean, _grad_scale, _reduction

_DTYPES = {
    torch.float32: _abi.FLOAT32,
    torch.float16: _abi.FLOAT16,
    torch.bfloat16: _abi.BFLOAT16,
    torch.float64: _abi.FLOAT64,
    torch.int32: _abi.INT32,
    torch.int64: _abi.INT64,
}
_ROW_LOSSES = ("cross_entropy", "softmax_focal")
# Each loss's float options: the params fields _compute sets, and their order after the grad scale
# in the custom op's float list.
_FLOAT_OPTIONS = {
    "bce": (),
    "sigmoid_focal": ("alpha", "gamma"),
    "mse": (),
    "cross_entropy": ("label_smoothing", "z_loss", "softcap"),
    "softmax_focal": ("gamma",),
}
# The custom op's int list, in its order.
_SCHEMA_INTS = ("reduction", "empty_mean", "ignore_index", "validate_targets", "return_z_loss")
# The params field that takes each loss's per-class (or, for BCE, per-element) weight vector.
_WEIGHT_FIELD = {"bce": "weight", "cross_entropy": "weight", "softmax_focal": "alpha"}
_PUBLIC_NAME = {"bce": "binary_cross_entropy_with_logits", "cross_entropy": "cross_entropy",
                "sigmoid_focal": "sigmoid_focal_loss", "softmax_focal": "softmax_focal_loss",
                "mse": "mse_loss"}
_NONE = _abi.REDUCTIONS["none"]
# PyTorch >= 2.0: an autograd function with setup_context runs under torch.func.
_SETUP_CONTEXT = hasattr(torch.autograd.Function, "setup_context")


class _Options(NamedTuple):
    """A call's options, the library's codes for the strings. A loss reads the float options that
    _FLOAT_OPTIONS names for it; the others keep their defaults."""

    reduction: int
    empty_mean: int
    ignore_index: int = -100
    validate_targets: bool = False
    return_z_loss: bool = False
    grad_scale: float = 1.0
    alpha: float = 0.0
    gamma: float = 0.0
    label_smoothing: float = 0.0
    z_loss: float = 0.0
    softcap: float = 0.0

    def to_schema(self, loss):
        """(ints, floats) for the custom op, whose schema takes lists of numbers."""
        return ([int(getattr(self, name)) for name in _SCHEMA_INTS],
                [self.grad_scale] + [getattr(self, name) for name in _FLOAT_OPTIONS[loss]])

    @classmethod
    def from_schema(cls, loss, ints, floats):
        """The options that ``to_schema(loss)`` gave as ``ints`` and ``floats``."""
        fields = dict(zip(_SCHEMA_INTS, ints), grad_scale=floats[0])
        fields.update(zip(_FLOAT_OPTIONS[loss], floats[1:]))
        fields["validate_targets"] = bool(fields["validate_targets"])
        fields["return_z_loss"] = bool(fields["return_z_loss"])
        return cls(**fields)


# --------------------------------------------------------------------------------------------
# The library call, written once for every loss


def _output_shapes(loss, input, options, compute_grad):
    """The shapes of _compute's outputs: the loss (per row for the row losses, or per element,
    under none; a scalar otherwise), the z-loss term (the loss's, or empty) and the gradient (the
    input's, or empty)."""
    if options.reduction != _NONE:
        shape = ()
    elif loss in _ROW_LOSSES:
        shape = (input.shape[0],) + tuple(input.shape[2:])
    else:
        shape = tuple(input.shape)
    return (shape, shape if options.return_z_loss else (0,),
            tuple(input.shape) if compute_grad else (0,))


def _compute(input, target, weight, pos_weight, scale, loss, options, compute_grad):
    """Runs loss ``loss`` of the library on tensors already laid out for it, with ``options`` (an
    _Options). Returns (loss in the input's dtype, z-loss term or an empty tensor, gradient or an
    empty tensor): the forward call, or the fused call when ``compute_grad``.
    """
    lib = _abi.load()
    cuda = input.device.type == "cuda"
    p = lib.params(loss)
    p.device = _abi.DEVICE_CUDA if cuda else _abi.DEVICE_CPU
    p.logits, p.logits_dtype = input.data_ptr(), _DTYPES[input.dtype]
    p.targets, p.targets_dtype = target.data_ptr(), _DTYPES[target.dtype]
    p.reduction, p.empty_mean = options.reduction, options.empty_mean
    for field in _FLOAT_OPTIONS[loss]:
        setattr(p, field, getattr(options, field))
    if weight is not None:
        setattr(p, _WEIGHT_FIELD[loss], weight.data_ptr())

    counter = None
    if loss in _ROW_LOSSES:
        n, c, s = input.shape[0], input.shape[1], math.prod(input.shape[2:])
        p.batch, p.num_classes, p.spatial, p.ignore_index = n, c, s, options.ignore_index
        p.row_stride = input.stride(0) if input.dim() == 2 and n > 1 else 0
        p.grad_row_stride = c * s  # the gradient is contiguous whatever the logits' row stride
        if options.validate_targets and not target.is_floating_point():
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
    out_shape, z_loss_shape, grad_shape = _output_shapes(loss, input, options, compute_grad)
    out = torch.empty(out_shape, dtype=loss_dtype, device=input.device)
    p.loss = out.data_ptr()
    z_loss = torch.empty(z_loss_shape, dtype=loss_dtype, device=input.device)
    if options.return_z_loss:
        p.z_loss_out = z_loss.data_ptr()
    grad = torch.empty(grad_shape, dtype=input.dtype, device=input.device)
    if compute_grad:
        p.grad_logits = grad.data_ptr()
        p.grad_scale = options.grad_scale
        if scale is not None:
            p.grad_scale_ptr = scale.data_ptr()

    with _workspace(lib, loss, p, input.device) as (workspace, size, stream):
        lib.call(loss, "forward_backward" if compute_grad else "forward", p, workspace, size,
                 stream)
        if counter is not None:
            _check_count(_PUBLIC_NAME[loss],
                         lib.read_and_clear_counter(counter.data_ptr(), p.device, stream),
                         options.ignore_index, p.num_classes)
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


def _scaled_gradient(grad, grad_output, row_none):
    """The saved gradient times the upstream gradient, out of place: for the graphs that must stay
    functional (a traced graph, a torch.func transform)."""
    return grad * (grad_output.unsqueeze(1) if row_none else grad_output)


# --------------------------------------------------------------------------------------------
# functorch's transforms (torch.func)


def _layers(tensor):
    """``tensor`` and what functorch's wrappers around it wrap, outermost first."""
    layers = [tensor]
    while torch._C._functorch.is_functorch_wrapped_tensor(layers[-1]):
        layers.append(torch._C._functorch.get_unwrapped(layers[-1]))
    return layers


def _transform_name(tensor):
    """The transform that wrapped ``tensor`` last, in the user's words."""
    module = "torch.func" if _SETUP_CONTEXT else "functorch"
    if torch._C._functorch.is_batchedtensor(tensor):
        return f"{module}.vmap"
    if torch._C._functorch.is_gradtrackingtensor(tensor):
        return f"{module}'s grad or jvp (grad, vjp, jacrev, jvp or jacfwd)"
    return f"a transform of {module}"


def _refuse_transforms(fn, tensor, why):
    """Raises RuntimeError when a functorch transform is active, naming the one that wrapped
    ``tensor``, ``why`` ``fn`` cannot run under it, and what to use instead."""
    if torch._C._are_functorch_transforms_active():
        raise RuntimeError(
            f"fusedloss: {fn}() cannot run under {_transform_name(tensor)}: {why}. Use "
            "torch.autograd instead: loss.backward() or torch.autograd.grad for gradients, "
            "torch.autograd.forward_ad for tangents, and a loop over the samples for vmap")


def _needs_gradient(tensor):
    """Whether the loss's gradient with respect to ``tensor`` may be asked for: it requires grad
    (grad mode on) or is a dual tensor of forward-mode AD."""
    return ((torch.is_grad_enabled() and tensor.requires_grad)
            or forward_ad.unpack_dual(tensor).tangent is not None)


def _transformed_needs_gradient(fn, tensors):
    """Under functorch's transforms: raises where the loss cannot run (a second derivative, or
    PyTorch < 2.0), else whether the forward must write the gradient of ``tensors`` (the
    differentiable arguments): when a grad or jvp level tracks one, or what vmap wraps needs it."""
    layers = [_layers(t) for t in tensors]
    levels = max(sum(map(torch._C._functorch.is_gradtrackingtensor, each)) for each in layers)
    if levels > 1:
        raise RuntimeError(
            f"fusedloss: {fn}() is differentiated here by {levels} nested grad or jvp levels (as "
            "in hessian, jacfwd(jacrev(...)) or grad(grad(...))): that is a second derivative, "
            "and fusedloss computes first derivatives only")
    if not _SETUP_CONTEXT:
        _refuse_transforms(fn, tensors[0], f"PyTorch {torch.__version__}'s functorch runs no "
                           "autograd.Function (torch.func runs this loss on PyTorch >= 2.0)")
    return levels > 0 or any(_needs_gradient(each[-1]) for each in layers)


# --------------------------------------------------------------------------------------------
# The autograd function and the custom op


def _setup_context(ctx, inputs, output):
    """Keeps the gradient (for the backward and the jvp) and what they need to know of the call."""
    _, _, _, _, _, loss, options, _ = inputs
    _, z_loss, grad = output
    ctx.mark_non_differentiable(z_loss, grad)
    ctx.set_materialize_grads(False)  # jvp: an argument without a tangent gets None, not 0
    ctx.save_for_backward(grad)
    ctx.save_for_forward(grad)
    ctx.loss = loss
    ctx.z_loss_shape = z_loss.shape
    ctx.none = options.reduction == _NONE
    ctx.row_none = loss in _ROW_LOSSES and ctx.none
    # A transform's wrapped gradient is scaled out of place, and may be scaled more than once.
    ctx.in_place = not torch._C._are_functorch_transforms_active()
    ctx.consumed = False


class _FusedLoss(torch.autograd.Function):
    """Every loss: the forward runs the library (fused when a gradient is needed); the backward
    scales the kept gradient by grad_output; forward-mode AD (jvp) dots it with the input's
    tangent; vmap runs each sample."""

    # PyTorch >= 2.0 calls a forward without ctx and then setup_context (as torch.func needs);
    # 1.13 knows only forward(ctx, ...).
    setup_context = staticmethod(_setup_context)
    if _SETUP_CONTEXT:
        forward = staticmethod(_compute)
    else:
        @staticmethod
        def forward(ctx, *inputs):
            output = _compute(*inputs)
            _setup_context(ctx, inputs, output)
            return output

    @staticmethod
    def vmap(info, in_dims, input, target, weight, pos_weight, scale, loss, options,
             compute_grad):
        """torch.func.vmap's rule: the library reads raw pointers, so each sample runs as its own
        call, on its slice of each batched tensor laid out anew (a slice along another dimension
        than the first is strided), and the outputs are stacked along dimension 0."""
        tensors = (input, target, weight, pos_weight, scale)
        samples = []
        for i in range(info.batch_size):
            sample = [t if dim is None else t.select(dim, i).contiguous()
                      for t, dim in zip(tensors, in_dims)]
            samples.append(_FusedLoss.apply(*sample, loss, options, compute_grad))
        return tuple(torch.stack(outputs) for outputs in zip(*samples)), (0, 0, 0)

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
        (grad,) = ctx.saved_tensors
        if ctx.in_place:
            if ctx.consumed:
                raise RuntimeError(
                    "fusedloss: trying to backward through a fusedloss loss a second time; its "
                    "saved gradient was scaled in place by the first backward. Compute the loss "
                    "again instead of using retain_graph=True.")
            ctx.consumed = True
            grad = _scale_gradient(grad, grad_output, ctx.row_none)
        else:
            grad = _scaled_gradient(grad, grad_output, ctx.row_none)
        grad_target = -grad if ctx.needs_input_grad[1] else None  # MSE only: d/dy = -d/dx
        return (grad if ctx.needs_input_grad[0] else None, grad_target) + (None,) * 6


def _register_custom_op():
    """Registers ``fusedloss::loss`` with a fake implementation and autograd (PyTorch >= 2.4), so
    that torch.compile traces the losses; returns the op, or None on older PyTorch."""
    if not hasattr(torch.library, "custom_op"):
        return None

    @torch.library.custom_op("fusedloss::loss", mutates_args=())
    def op(loss: str, input: Tensor, target: Tensor, weight: Optional[Tensor],
           pos_weight: Optional[Tensor], scale: Optional[Tensor], ints: List[int],
           floats: List[float], compute_grad: bool) -> Tuple[Tensor, Tensor, Tensor]:
        return _compute(input, target, weight, pos_weight, scale, loss,
                        _Options.from_schema(loss, ints, floats), compute_grad)

    @op.register_fake
    def _(loss, input, target, weight, pos_weight, scale, ints, floats, compute_grad):
        options = _Options.from_schema(loss, ints, floats)
        return tuple(input.new_empty(shape)
                     for shape in _output_shapes(loss, input, options, compute_grad))

    def setup_context(ctx, inputs, output):
        loss, _, _, _, _, _, ints, floats, _ = inputs
        options = _Options.from_schema(loss, ints, floats)
        ctx.row_none = loss in _ROW_LOSSES and options.reduction == _NONE
        ctx.save_for_backward(output[2])

    def backward(ctx, grad_output, _grad_z_loss, _grad_grad):
        # Out of place here (a traced graph is functional; the compiler reuses the buffer); eager
        # calls take _FusedLoss, which scales in place.
        (grad,) = ctx.saved_tensors
        grad = _scaled_gradient(grad, grad_output, ctx.row_none)
        return (None, grad if ctx.needs_input_grad[1] else None,
                -grad if ctx.needs_input_grad[2] else None) + (None,) * 6

    op.register_autograd(backward, setup_context=setup_context)
    return op


_custom_op = _register_custom_op()


def _compiling():
    is_compiling = getattr(getattr(torch, "compiler", None), "is_compiling", None)
    return is_compiling is not None and is_compiling()


def _apply(loss, fn, input, target, weight=None, pos_weight=None, *, reduction, empty_mean,
           grad_scale, ignore_index=-100, validate_targets=False, return_z_loss=False,
           target_grad=False, **float_options):
    """Runs ``loss`` (public name ``fn``) through the custom op (while compiling) or the autograd
    function, on tensors laid out for the library; ``float_options`` are the loss's (its
    _FLOAT_OPTIONS), checked. Returns (loss, z-loss term or an empty tensor)."""
    scale, scale_value = _grad_scale(fn, grad_scale, input)
    options = _Options(reduction=_reduction(reduction, loss), empty_mean=_empty_mean(empty_mean),
                       ignore_index=ignore_index, validate_targets=bool(validate_targets),
                       return_z_loss=bool(return_z_loss), grad_scale=scale_value,
                       **float_options)
    differentiable = (input, target) if target_grad else (input,)
    if _custom_op is not None and _compiling():
        compute_grad = any(_needs_gradient(t) for t in differentiable)
        out, z_loss, _ = _custom_op(loss, input, target, weight, pos_weight, scale,
                                    *options.to_schema(loss), compute_grad)
        return out, z_loss
    if torch._C._are_functorch_transforms_active():
        compute_grad = _transformed_needs_gradient(fn, differentiable)
    else:
        compute_grad = any(_needs_gradient(t) for t in differentiable)
    out, z_loss, _ = _FusedLoss.apply(input, target, weight, pos_weight, scale, loss, options,
                                      compute_grad)
    return out, z_loss
