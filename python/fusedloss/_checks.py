"""The losses' argument checks, with PyTorch's messages where PyTorch has one: ``TypeError`` for a
wrong type or dtype, ``ValueError`` for a wrong shape, value or device. The checks that lay a
tensor out as the library reads it return the tensor so laid out (copies made here, outside the
autograd function, so that autograd routes the gradient back through them).
"""

import math
import numbers
import operator

import torch
from torch import Tensor

from . import _abi

_FLOATING = (torch.float32, torch.float16, torch.bfloat16, torch.float64)


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


def _check_count(fn, count, ignore_index, classes):
    """Raises ValueError, naming ``count``, when invalid targets were counted."""
    if count:
        raise ValueError(
            f"{fn}(): {count} target value(s) are neither ignore_index ({ignore_index}) nor a "
            f"class index in [0, {classes}); their rows were treated as ignored (pass "
            "validate_targets=False to allow that)")
