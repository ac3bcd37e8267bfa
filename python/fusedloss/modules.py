"""``torch.nn.Module`` wrappers of the losses, with PyTorch's class names and constructor
arguments in PyTorch's order (the deprecated ``size_average`` and ``reduce`` keep their slots and
accept only None). Weight vectors are buffers, so
``.to(device)`` moves them and ``state_dict`` holds them, as in PyTorch. ``forward`` takes the
input and target, and the keyword-only ``grad_scale`` of the functional form."""

import torch

from . import functional as F
from ._checks import _empty_mean, _legacy_none, _reduction
from .linear import linear_cross_entropy

__all__ = [
    "BCEWithLogitsLoss",
    "CrossEntropyLoss",
    "SigmoidFocalLoss",
    "SoftmaxFocalLoss",
    "MSELoss",
    "LinearCrossEntropyLoss",
]


class _Loss(torch.nn.Module):
    _loss = None  # the library's name of the loss, for the words of a bad reduction's error

    def __init__(self, reduction, empty_mean):
        super().__init__()
        _reduction(reduction, self._loss)  # refuse a bad value here rather than at the first call
        _empty_mean(empty_mean)
        self.reduction = reduction
        self.empty_mean = empty_mean

    def extra_repr(self):
        fields = [f"reduction={self.reduction!r}"]
        fields += [f"{name}={getattr(self, name)!r}" for name in self._options]
        if self.empty_mean != "nan":
            fields.append(f"empty_mean={self.empty_mean!r}")
        return ", ".join(fields)

    _options = ()


class BCEWithLogitsLoss(_Loss):
    """:func:`fusedloss.functional.binary_cross_entropy_with_logits` as a module
    (``torch.nn.BCEWithLogitsLoss``)."""

    def __init__(self, weight=None, size_average=None, reduce=None, reduction="mean",
                 pos_weight=None, *, empty_mean="nan"):
        _legacy_none(type(self).__name__, size_average, reduce)
        super().__init__(reduction, empty_mean)
        self.register_buffer("weight", weight)
        self.register_buffer("pos_weight", pos_weight)

    def forward(self, input, target, *, grad_scale=1.0):
        return F.binary_cross_entropy_with_logits(
            input, target, self.weight, reduction=self.reduction, pos_weight=self.pos_weight,
            empty_mean=self.empty_mean, grad_scale=grad_scale)


class CrossEntropyLoss(_Loss):
    """:func:`fusedloss.functional.cross_entropy` as a module (``torch.nn.CrossEntropyLoss``,
    plus the keyword-only z-loss, soft-cap, empty-mean policy and target validation)."""

    _options = ("ignore_index", "label_smoothing", "z_loss", "softcap", "validate_targets")

    def __init__(self, weight=None, size_average=None, ignore_index=-100, reduce=None,
                 reduction="mean", label_smoothing=0.0, *, z_loss=0.0, softcap=None,
                 empty_mean="nan", validate_targets=True):
        _legacy_none(type(self).__name__, size_average, reduce)
        super().__init__(reduction, empty_mean)
        self.register_buffer("weight", weight)
        self.ignore_index = ignore_index
        self.label_smoothing = label_smoothing
        self.z_loss = z_loss
        self.softcap = softcap
        self.validate_targets = validate_targets

    def forward(self, input, target, *, grad_scale=1.0):
        return F.cross_entropy(
            input, target, self.weight, ignore_index=self.ignore_index, reduction=self.reduction,
            label_smoothing=self.label_smoothing, z_loss=self.z_loss, softcap=self.softcap,
            empty_mean=self.empty_mean, validate_targets=self.validate_targets,
            grad_scale=grad_scale)


class SigmoidFocalLoss(_Loss):
    """:func:`fusedloss.functional.sigmoid_focal_loss` (torchvision's) as a module."""

    _options = ("alpha", "gamma")
    _loss = "sigmoid_focal"

    def __init__(self, alpha=0.25, gamma=2, reduction="none", *, empty_mean="nan"):
        super().__init__(reduction, empty_mean)
        self.alpha = alpha
        self.gamma = gamma

    def forward(self, inputs, targets, *, grad_scale=1.0):
        return F.sigmoid_focal_loss(inputs, targets, self.alpha, self.gamma, self.reduction,
                                    empty_mean=self.empty_mean, grad_scale=grad_scale)


class SoftmaxFocalLoss(_Loss):
    """:func:`fusedloss.functional.softmax_focal_loss` as a module; ``alpha`` is a buffer."""

    _options = ("gamma", "ignore_index", "validate_targets")

    def __init__(self, alpha=None, gamma=2.0, ignore_index=-100, reduction="mean", *,
                 empty_mean="nan", validate_targets=True):
        super().__init__(reduction, empty_mean)
        if alpha is not None and not isinstance(alpha, torch.Tensor):
            alpha = torch.as_tensor(alpha, dtype=torch.float32)
        self.register_buffer("alpha", alpha)
        self.gamma = gamma
        self.ignore_index = ignore_index
        self.validate_targets = validate_targets

    def forward(self, input, target, *, grad_scale=1.0):
        return F.softmax_focal_loss(
            input, target, self.alpha, self.gamma, self.ignore_index, self.reduction,
            empty_mean=self.empty_mean, validate_targets=self.validate_targets,
            grad_scale=grad_scale)


class MSELoss(_Loss):
    """:func:`fusedloss.functional.mse_loss` as a module (``torch.nn.MSELoss``)."""

    def __init__(self, size_average=None, reduce=None, reduction="mean", *, empty_mean="nan"):
        _legacy_none(type(self).__name__, size_average, reduce)
        super().__init__(reduction, empty_mean)

    def forward(self, input, target, *, grad_scale=1.0):
        return F.mse_loss(input, target, reduction=self.reduction, empty_mean=self.empty_mean,
                          grad_scale=grad_scale)


class LinearCrossEntropyLoss(_Loss):
    """:func:`fusedloss.linear_cross_entropy` as a module: it holds the loss's options and class
    ``weight`` (a buffer), not the linear layer, whose weight and bias ``forward`` takes."""

    _options = ("ignore_index", "label_smoothing", "z_loss", "softcap", "validate_targets")

    def __init__(self, weight=None, ignore_index=-100, reduction="mean", label_smoothing=0.0, *,
                 z_loss=0.0, softcap=0.0, empty_mean="nan", validate_targets=True,
                 max_workspace_bytes=None):
        super().__init__(reduction, empty_mean)
        self.register_buffer("weight", weight)
        self.ignore_index = ignore_index
        self.label_smoothing = label_smoothing
        self.z_loss = z_loss
        self.softcap = softcap
        self.validate_targets = validate_targets
        self.max_workspace_bytes = max_workspace_bytes

    def forward(self, input, linear_weight, target, *, linear_bias=None, grad_scale=1.0):
        return linear_cross_entropy(
            input, linear_weight, target, linear_bias=linear_bias, weight=self.weight,
            ignore_index=self.ignore_index, reduction=self.reduction,
            label_smoothing=self.label_smoothing, z_loss=self.z_loss, softcap=self.softcap,
            empty_mean=self.empty_mean, validate_targets=self.validate_targets,
            grad_scale=grad_scale, max_workspace_bytes=self.max_workspace_bytes)
