"""Vocabulary-parallel cross-entropy over ``torch.distributed``: each rank of a process group holds
the logits of its own slice of the classes, and no rank ever holds a whole row.

A Megatron-style tensor-parallel trainer computes its classifier head's logits split by
vocabulary: rank k holds the classes ``[vocab_start_index, vocab_start_index + C_k)`` of
``vocab_size``. :func:`vocab_parallel_cross_entropy` then gives every rank the loss of the whole
rows and its own shard's gradient, with every option of :func:`fusedloss.cross_entropy`, through the
library's shard calls (``include/fusedloss/vocab_parallel.h``): a partial call reads the shard and
writes each row's summary, ``torch.distributed.all_reduce`` combines the summaries (a MAX over N
floats, the library's rescale, a SUM over 5 N floats), and a finish call reads the shard again and
writes the loss and the shard's gradient. The shard is read twice and its gradient written once;
the network carries 6 N floats a step (float64 for float64 logits), never logits.

The group's backend runs the collectives: gloo for CPU tensors, NCCL for CUDA tensors (which also
orders them on the current stream: no host synchronisation). Autograd works as for the other
losses: with a gradient needed, the forward keeps the shard's gradient and the backward scales it
in place by ``grad_output``.
"""

import torch
import torch.distributed as dist

from . import _abi
from ._checks import (_check_count, _check_device, _check_input, _check_tensor, _class_vector,
                      _empty_mean, _grad_scale, _ignore_index, _no_gradient_for, _number,
                      _reduction)
from ._engine import _DTYPES, _Options, _refuse_transforms, _scale_gradient, _workspace

__all__ = ["vocab_parallel_cross_entropy"]

_FN = "vocab_parallel_cross_entropy"
_NONE = _abi.REDUCTIONS["none"]

# The (group, rank's layout and options) whose slices were checked to tile the vocabulary with the
# same options on every rank: the check is a collective, run once per configuration.
_checked_layouts = set()


def _check_layout(group, logits, vocab_start, width, vocab_size, options):
    """Gathers every rank's slice and options and raises ValueError, on every rank alike, unless
    the slices tile [0, vocab_size) and the options agree."""
    key = (id(group), logits.device, vocab_start, width, vocab_size, options)
    if key in _checked_layouts:
        return
    mine = torch.tensor([vocab_start, width, vocab_size, *options], dtype=torch.float64,
                        device=logits.device)
    world = dist.get_world_size(group)
    gathered = [torch.empty_like(mine) for _ in range(world)]
    dist.all_gather(gathered, mine, group=group)
    rows = [tuple(t.tolist()) for t in gathered]
    if any(row[2:] != rows[0][2:] for row in rows):
        raise ValueError(
            f"{_FN}(): the ranks disagree on vocab_size or an option (ignore_index, "
            "label_smoothing, z_loss, softcap, reduction, empty_mean, weight given): "
            + "; ".join(f"rank {k}: {row[2:]}" for k, row in enumerate(rows)))
    end = 0
    for start, size in sorted((int(r[0]), int(r[1])) for r in rows):
        if start != end:
            break
        end = start + size
    if end != vocab_size:
        raise ValueError(
            f"{_FN}(): the ranks' slices [vocab_start_index, vocab_start_index + C) do not tile "
            f"[0, {vocab_size}): "
            + ", ".join(f"rank {k}: [{int(r[0])}, {int(r[0] + r[1])})" for k, r in enumerate(rows)))
    _checked_layouts.add(key)


def _compute(logits, target, weight, scale, group, vocab_start, vocab_size, options,
             compute_grad):
    """The three shard calls with the two all-reduces between them, with ``options`` (an
    _Options: the reduction, target and cross-entropy options, the grad scale). Returns (loss,
    z-loss term, gradient or an empty tensor)."""
    lib = _abi.load()
    cuda = logits.device.type == "cuda"
    n, width = logits.shape
    p = lib.params("cross_entropy_shard")
    p.device = _abi.DEVICE_CUDA if cuda else _abi.DEVICE_CPU
    p.batch, p.num_classes = n, width
    p.vocab_start, p.vocab_size = vocab_start, vocab_size
    p.row_stride = logits.stride(0) if n > 1 else 0
    p.logits, p.logits_dtype = logits.data_ptr(), _DTYPES[logits.dtype]
    p.targets, p.targets_dtype = target.data_ptr(), _DTYPES[target.dtype]
    if weight is not None:
        p.weight = weight.data_ptr()
    p.ignore_index = options.ignore_index
    p.label_smoothing, p.z_loss = options.label_smoothing, options.z_loss
    p.softcap = options.softcap
    p.reduction, p.empty_mean = options.reduction, options.empty_mean

    loss_dtype = torch.float64 if logits.dtype == torch.float64 else torch.float32
    device = logits.device
    summary = torch.empty(_abi.SUMMARY_FIELDS * n, dtype=loss_dtype, device=device)
    p.summary = summary.data_ptr()
    out = torch.empty((n,) if options.reduction == _NONE else (), dtype=loss_dtype,
                      device=device)
    z_loss = torch.empty_like(out)
    p.loss, p.z_loss_out = out.data_ptr(), z_loss.data_ptr()
    grad = torch.empty((n, width) if compute_grad else (0,), dtype=logits.dtype, device=device)
    if compute_grad:
        p.grad_logits, p.grad_row_stride = grad.data_ptr(), width
        p.grad_scale = options.grad_scale
        if scale is not None:
            p.grad_scale_ptr = scale.data_ptr()
    counter = None
    if options.validate_targets:
        counter = torch.zeros((), dtype=torch.int64, device=device)
        p.invalid_target_count = counter.data_ptr()

    with _workspace(lib, "cross_entropy_shard", p, device) as args:
        lib.shard_call("partial", p, *args)
        if n > 0:
            dist.all_reduce(summary[:n], op=dist.ReduceOp.MAX, group=group)
        lib.shard_call("rescale", p, *args)
        if n > 0:
            dist.all_reduce(summary[_abi.SUMMARY_SUM_EXP * n:], op=dist.ReduceOp.SUM, group=group)
        lib.shard_call("finish", p, *args)
        if counter is not None:
            # The rank whose slice starts at class 0 counts; the sum tells every rank alike.
            dist.all_reduce(counter, op=dist.ReduceOp.SUM, group=group)
            _check_count(_FN, int(counter), options.ignore_index, vocab_size)
    return out.to(logits.dtype), z_loss.to(logits.dtype), grad


class _VocabParallelLoss(torch.autograd.Function):
    """The forward runs the shard calls (the gradient written when one is needed); the backward
    scales the kept shard gradient by grad_output, as the other losses' autograd function does."""

    @staticmethod
    def forward(ctx, logits, target, weight, scale, group, vocab_start, vocab_size, options,
                compute_grad):
        out, z_loss, grad = _compute(logits, target, weight, scale, group, vocab_start,
                                     vocab_size, options, compute_grad)
        ctx.mark_non_differentiable(z_loss, grad)
        ctx.save_for_backward(grad)
        ctx.row_none = options.reduction == _NONE
        ctx.consumed = False
        return out, z_loss, grad

    @staticmethod
    def jvp(ctx, *_):
        raise RuntimeError(
            f"fusedloss: {_FN}() has no forward-mode derivative (its tangent would need a "
            "collective across the ranks); use reverse mode")

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad_output, _grad_z_loss, _grad_grad):
        if ctx.consumed:
            raise RuntimeError(
                f"fusedloss: trying to backward through {_FN}() a second time; its saved "
                "gradient was scaled in place by the first backward. Compute the loss again "
                "instead of using retain_graph=True.")
        ctx.consumed = True
        (grad,) = ctx.saved_tensors
        grad = _scale_gradient(grad, grad_output, ctx.row_none)
        return (grad if ctx.needs_input_grad[0] else None,) + (None,) * 8


def vocab_parallel_cross_entropy(logits, target, *, vocab_start_index, vocab_size, group=None,
                                 weight=None, ignore_index=-100, reduction="mean",
                                 label_smoothing=0.0, z_loss=0.0, softcap=0.0, empty_mean="nan",
                                 validate_targets=True, return_z_loss=False, grad_scale=1.0):
    """Cross-entropy of rows whose classes are split over the ranks of ``group``.

    ``logits`` is this rank's shard, (..., C) with C the width of its slice ``[vocab_start_index,
    vocab_start_index + C)`` of ``vocab_size`` classes (e.g. Megatron's (s, b, V / p)); ``target``
    holds the global class indices (int64 or int32) of the leading shape, the same on every rank.
    ``weight`` is this rank's slice of the class weights, (C). Every rank gets the loss of the
    whole rows (shape of ``target`` under 'none', else a scalar), equal on every rank and to
    :func:`fusedloss.cross_entropy` of the concatenated logits; the backward gives each rank its
    shard's gradient.

    Options as in :func:`fusedloss.cross_entropy` (label smoothing's eps / V uses ``vocab_size``;
    ``softcap`` 0 or None is off). Every rank must pass the same targets, ``vocab_size`` and
    options; the first call of each configuration checks, with one small all-gather, that the
    slices tile the vocabulary and the options agree, and raises ``ValueError`` on every rank if
    not (a later call in which one rank alone changes its options is a configuration the others
    have checked already: the ranks then disagree on the collectives, which the check cannot
    see). ``validate_targets`` costs one more all-reduce of one integer and a synchronisation.
    """
    _check_input(_FN, logits, "logits")
    _refuse_transforms(_FN, logits, "it has no torch.func support (its forward runs collectives "
                       "across the ranks)")
    _check_tensor(_FN, "target", 2, target)
    _check_device(logits, target)
    if logits.dim() == 0:
        raise ValueError(f"{_FN}(): expected logits of 1 or more dimensions (got 0)")
    if target.dtype not in (torch.int64, torch.int32):
        raise TypeError(f"{_FN}(): expected target of dtype int64 or int32 (class indices), but "
                        f"got {target.dtype}")
    if tuple(target.shape) != tuple(logits.shape[:-1]):
        raise ValueError(f"{_FN}(): expected target of shape {list(logits.shape[:-1])} (the "
                         f"logits' leading dimensions), got {list(target.shape)}")
    _no_gradient_for(_FN, target=target)
    for name, value in (("vocab_start_index", vocab_start_index), ("vocab_size", vocab_size)):
        if isinstance(value, bool) or not isinstance(value, int):
            raise TypeError(f"{_FN}(): {name} must be an int, not {type(value).__name__}")
    width = logits.shape[-1]
    shape = target.shape
    rows = logits.reshape(-1, width)
    if rows.shape[0] > 1 and (rows.stride(1) != 1 or rows.stride(0) < width):
        rows = rows.contiguous()  # the library reads rows with unit class stride, any row stride
    weight = _class_vector(_FN, "weight", weight, rows, width)
    ignore_index = _ignore_index(_FN, ignore_index)
    if not 0.0 <= label_smoothing <= 1.0:
        raise ValueError(f"label_smoothing must be between 0.0 and 1.0. Got: {label_smoothing}")
    cap = 0.0 if softcap is None or softcap == 0 else _number(_FN, "softcap", softcap, 0.0,
                                                              exclusive=True)
    options = _Options(reduction=_reduction(reduction), empty_mean=_empty_mean(empty_mean),
                       ignore_index=ignore_index, validate_targets=bool(validate_targets),
                       return_z_loss=bool(return_z_loss), label_smoothing=float(label_smoothing),
                       z_loss=_number(_FN, "z_loss", z_loss, 0.0), softcap=cap)
    if group is None:
        group = dist.group.WORLD
    _check_layout(group, rows, vocab_start_index, width, vocab_size,
                  (options.ignore_index, options.label_smoothing, options.z_loss, options.softcap,
                   options.reduction, options.empty_mean, int(weight is not None)))
    scale, scale_value = _grad_scale(_FN, grad_scale, rows)
    options = options._replace(grad_scale=scale_value)
    compute_grad = torch.is_grad_enabled() and logits.requires_grad
    out, z_term, _ = _VocabParallelLoss.apply(
        rows, target.reshape(-1).contiguous(), weight, scale, group, vocab_start_index,
        vocab_size, options, compute_grad)
    if options.reduction == _NONE:
        out, z_term = out.reshape(shape), z_term.reshape(shape)
    return (out, z_term) if return_z_loss else out
