"""Bad input: the error type PyTorch raises (TypeError for types and dtypes, ValueError for shapes,
values and devices) with a message naming what is wrong, before the library is called; and the
library's own refusal when the binding lets something through."""

import pytest
import torch

import fusedloss

X = torch.randn(4, 3)
Y_INDEX = torch.tensor([0, 2, 1, 0])
Y_FLOAT = torch.rand(4, 3)

CALLS = {
    "binary_cross_entropy_with_logits": lambda **kw: fusedloss.binary_cross_entropy_with_logits(
        X, Y_FLOAT, **kw),
    "cross_entropy": lambda **kw: fusedloss.cross_entropy(X, Y_INDEX, **kw),
    "sigmoid_focal_loss": lambda **kw: fusedloss.sigmoid_focal_loss(X, Y_FLOAT, **kw),
    "softmax_focal_loss": lambda **kw: fusedloss.softmax_focal_loss(X, Y_INDEX, **kw),
    "mse_loss": lambda **kw: fusedloss.mse_loss(X, Y_FLOAT, **kw),
}
MODULES = [fusedloss.BCEWithLogitsLoss, fusedloss.CrossEntropyLoss, fusedloss.SigmoidFocalLoss,
           fusedloss.SoftmaxFocalLoss, fusedloss.MSELoss]


# The losses PyTorch has: size_average and reduce keep its slots, None accepted.
LEGACY_CALLS = ["binary_cross_entropy_with_logits", "cross_entropy", "mse_loss"]
LEGACY_MODULES = [fusedloss.BCEWithLogitsLoss, fusedloss.CrossEntropyLoss, fusedloss.MSELoss]


@pytest.mark.parametrize("legacy", ["size_average", "reduce"])
@pytest.mark.parametrize("name", LEGACY_CALLS)
def test_deprecated_size_average_and_reduce_raise_type_error_naming_them(name, legacy):
    with pytest.raises(TypeError, match=f"'{legacy}'.*reduction="):
        CALLS[name](**{legacy: True})
    CALLS[name](**{legacy: None})  # PyTorch's own tables pass None there


@pytest.mark.parametrize("legacy", ["size_average", "reduce"])
@pytest.mark.parametrize("module", LEGACY_MODULES, ids=lambda m: m.__name__)
def test_modules_refuse_size_average_and_reduce(module, legacy):
    with pytest.raises(TypeError, match=f"'{legacy}'"):
        module(**{legacy: False})
    module(**{legacy: None})


def test_positional_calls_land_where_pytorch_puts_them():
    """CrossEntropyLoss(None, None, 1) is how PyTorch's criterion tables build the loss: 1 is
    ignore_index, not reduction; a legacy value in a positional slot is refused by name."""
    x = torch.randn(5, 4, dtype=torch.float64)
    y = torch.tensor([1, 0, 3, 1, 2])
    got = fusedloss.CrossEntropyLoss(None, None, 1)(x, y)
    want = torch.nn.CrossEntropyLoss(None, None, 1)(x, y)
    torch.testing.assert_close(got, want)
    torch.testing.assert_close(fusedloss.cross_entropy(x, y, None, None, 1, None, "sum", 0.1),
                               torch.nn.functional.cross_entropy(x, y, None, None, 1, None,
                                                                 "sum", 0.1))
    w = torch.rand(4, dtype=torch.float64) + 0.5
    torch.testing.assert_close(fusedloss.CrossEntropyLoss(w, None)(x, y),
                               torch.nn.CrossEntropyLoss(w, None)(x, y))
    p = torch.rand(5, 4, dtype=torch.float64)
    torch.testing.assert_close(
        fusedloss.binary_cross_entropy_with_logits(x, p, None, None, None, "sum", w),
        torch.nn.functional.binary_cross_entropy_with_logits(x, p, None, None, None, "sum", w))
    torch.testing.assert_close(fusedloss.MSELoss(None, None, "sum")(x, p),
                               torch.nn.MSELoss(None, None, "sum")(x, p))
    with pytest.raises(TypeError, match="'size_average'"):
        fusedloss.CrossEntropyLoss(w, True)
    with pytest.raises(TypeError, match="'reduce'"):
        fusedloss.cross_entropy(x, y, None, None, -100, False)


@pytest.mark.parametrize("legacy", ["size_average", "reduce"])
@pytest.mark.parametrize("name", ["sigmoid_focal_loss", "softmax_focal_loss"])
def test_losses_pytorch_lacks_have_no_legacy_slots(name, legacy):
    with pytest.raises(TypeError, match=f"'{legacy}'"):
        CALLS[name](**{legacy: None})


@pytest.mark.parametrize("name", CALLS)
def test_bad_reduction_and_empty_mean(name):
    """PyTorch's words for a bad reduction, torchvision's for its sigmoid focal loss (the tests of
    each match them)."""
    words = ("Invalid Value for arg 'reduction'" if name == "sigmoid_focal_loss"
             else "elementwise is not a valid value for reduction")
    with pytest.raises(ValueError, match=words):
        CALLS[name](reduction="elementwise")
    with pytest.raises(ValueError, match="empty_mean must be 'nan' or 'zero'"):
        CALLS[name](empty_mean="inf")


@pytest.mark.parametrize("module", MODULES, ids=lambda m: m.__name__)
def test_modules_check_reduction_when_built(module):
    words = ("Invalid Value for arg 'reduction'" if module is fusedloss.SigmoidFocalLoss
             else "batchmean is not a valid value for reduction")
    with pytest.raises(ValueError, match=words):
        module(reduction="batchmean")


@pytest.mark.parametrize("name", CALLS)
def test_grad_scale_must_be_a_float_or_a_0_dim_float_tensor(name):
    with pytest.raises(ValueError, match="grad_scale must be a float or a 0-dim"):
        CALLS[name](grad_scale=torch.ones(1))
    with pytest.raises(ValueError, match="grad_scale must be a float or a 0-dim"):
        CALLS[name](grad_scale=torch.tensor(2))
    with pytest.raises(TypeError, match="grad_scale must be a float"):
        CALLS[name](grad_scale="2")


def test_input_types_and_dtypes():
    with pytest.raises(TypeError,
                       match=r"argument 'input' \(position 1\) must be Tensor, not list"):
        fusedloss.cross_entropy([[0.0, 1.0]], Y_INDEX)
    with pytest.raises(TypeError, match=r"argument 'target' \(position 2\) must be Tensor"):
        fusedloss.mse_loss(X, 0.5)
    for fn, target in [(fusedloss.cross_entropy, Y_INDEX), (fusedloss.mse_loss, Y_FLOAT)]:
        with pytest.raises(TypeError, match="floating-point dtype.*torch.int64"):
            fn(X.long(), target)
    with pytest.raises(TypeError, match="expected inputs of a floating-point dtype"):
        fusedloss.sigmoid_focal_loss(X.int(), Y_FLOAT)
    with pytest.raises(TypeError, match="expected target of a floating-point dtype"):
        fusedloss.binary_cross_entropy_with_logits(X, Y_FLOAT.long())


def test_cross_entropy_targets():
    with pytest.raises(ValueError, match=r"Expected input batch_size \(4\) to match target "
                                         r"batch_size \(3\)\."):
        fusedloss.cross_entropy(X, Y_INDEX[:3])
    with pytest.raises(ValueError, match=r"Expected target size \[2, 4\], got \[2, 3\]"):
        fusedloss.cross_entropy(torch.randn(2, 5, 4), torch.zeros(2, 3, dtype=torch.long))
    with pytest.raises(TypeError, match="Expected floating point type for target with class "
                                        "probabilities, got torch.int64"):
        fusedloss.cross_entropy(X, Y_FLOAT.long())
    with pytest.raises(TypeError, match="int64 or int32.*got torch.float32"):
        fusedloss.cross_entropy(X, Y_INDEX.float())
    with pytest.raises(TypeError, match="int64 or int32.*got torch.int16"):
        fusedloss.cross_entropy(X, Y_INDEX.short())
    with pytest.raises(ValueError, match="ignore_index is not supported for floating point"):
        fusedloss.cross_entropy(X, Y_FLOAT, ignore_index=0)
    with pytest.raises(TypeError, match="probability targets.*not supported by this loss"):
        fusedloss.softmax_focal_loss(X, Y_FLOAT)
    with pytest.raises(ValueError, match="1 or more dimensions"):
        fusedloss.cross_entropy(torch.tensor(1.0), torch.tensor(0))
    with pytest.raises(TypeError, match="ignore_index must be an int"):
        fusedloss.cross_entropy(X, Y_INDEX, ignore_index=1.5)


def test_option_values():
    with pytest.raises(ValueError, match="label_smoothing must be between 0.0 and 1.0. Got: 1.5"):
        fusedloss.cross_entropy(X, Y_INDEX, label_smoothing=1.5)
    with pytest.raises(ValueError, match="z_loss must be a finite number >= 0.0"):
        fusedloss.cross_entropy(X, Y_INDEX, z_loss=-1e-4)
    for softcap in (0.0, -3.0, float("inf")):
        with pytest.raises(ValueError, match="softcap must be a finite number > 0.0"):
            fusedloss.cross_entropy(X, Y_INDEX, softcap=softcap)
    for gamma in (-0.5, float("nan")):
        with pytest.raises(ValueError, match="gamma must be a finite number >= 0.0"):
            fusedloss.sigmoid_focal_loss(X, Y_FLOAT, gamma=gamma)
        with pytest.raises(ValueError, match="gamma must be a finite number >= 0.0"):
            fusedloss.softmax_focal_loss(X, Y_INDEX, gamma=gamma)
    with pytest.raises(ValueError, match="alpha must be a finite number"):
        fusedloss.sigmoid_focal_loss(X, Y_FLOAT, alpha=float("inf"))
    with pytest.raises(TypeError, match="alpha must be a number"):
        fusedloss.sigmoid_focal_loss(X, Y_FLOAT, alpha="0.25")


def test_weight_shapes():
    with pytest.raises(ValueError, match="weight tensor should be defined either for all 3 classes "
                                         r"or no classes but got weight tensor of shape: \[4\]"):
        fusedloss.cross_entropy(X, Y_INDEX, torch.ones(4))
    with pytest.raises(ValueError, match=r"alpha tensor should be defined either for all 3 "
                                         r"classes"):
        fusedloss.softmax_focal_loss(X, Y_INDEX, [1.0, 2.0])
    with pytest.raises(TypeError, match="expected weight of a floating-point dtype"):
        fusedloss.cross_entropy(X, Y_INDEX, torch.ones(3, dtype=torch.long))
    with pytest.raises(ValueError, match=r"weight of shape \[4, 2\] does not fit input of shape "
                                         r"\[4, 3\]"):
        fusedloss.binary_cross_entropy_with_logits(X, Y_FLOAT, torch.ones(4, 2))
    with pytest.raises(ValueError, match="pos_weight of shape \\[4, 1\\].*one value per class"):
        fusedloss.binary_cross_entropy_with_logits(X, Y_FLOAT, pos_weight=torch.ones(4, 1))


def test_shape_mismatches_of_element_losses():
    with pytest.raises(ValueError, match=r"Target size \(torch.Size\(\[4, 2\]\)\) must be the same "
                                         r"as input size \(torch.Size\(\[4, 3\]\)\)"):
        fusedloss.binary_cross_entropy_with_logits(X, Y_FLOAT[:, :2])
    with pytest.raises(ValueError, match="Targets size"):
        fusedloss.sigmoid_focal_loss(X, Y_FLOAT[:2])
    with pytest.raises(ValueError, match="different to the input size.*does not broadcast"):
        fusedloss.mse_loss(X, Y_FLOAT[:1])


def test_devices():
    meta = torch.empty(4, 3, device="meta")
    with pytest.raises(ValueError, match="runs on CPU and CUDA tensors, not on meta"):
        fusedloss.mse_loss(meta, meta)
    with pytest.raises(ValueError, match="Expected all tensors to be on the same device, but found "
                                         "at least two devices, cpu and meta!"):
        fusedloss.mse_loss(X, meta)
    with pytest.raises(ValueError, match="same device"):
        fusedloss.cross_entropy(X, Y_INDEX, torch.ones(3, device="meta"))
    with pytest.raises(ValueError, match="same device"):
        fusedloss.cross_entropy(X, Y_INDEX, grad_scale=torch.tensor(1.0, device="meta"))


@pytest.mark.skipif(not torch.cuda.is_available() or fusedloss.built_with_cuda,
                    reason="needs a GPU and a library built without CUDA")
def test_cuda_tensors_with_a_cpu_only_library():
    with pytest.raises(RuntimeError, match="built without CUDA"):
        fusedloss.mse_loss(X.cuda(), Y_FLOAT.cuda())


@pytest.mark.skipif(not torch.cuda.is_available() or not fusedloss.built_with_cuda,
                    reason="needs a GPU")
def test_float64_on_cuda_is_refused():
    with pytest.raises(TypeError, match="float64 runs on the CPU reference only"):
        fusedloss.mse_loss(X.double().cuda(), Y_FLOAT.double().cuda())


def test_no_gradient_for_targets_and_weights():
    """The library differentiates the input only (and MSE's target): asking for another gradient
    raises instead of silently giving none."""
    x = X.clone().requires_grad_()
    y = Y_FLOAT.clone().requires_grad_()
    w = torch.ones(3, requires_grad=True)
    for call in (lambda: fusedloss.binary_cross_entropy_with_logits(x, y),
                 lambda: fusedloss.sigmoid_focal_loss(x, y),
                 lambda: fusedloss.cross_entropy(x, y.softmax(1))):
        with pytest.raises(NotImplementedError, match="no gradient with respect to 'target"):
            call()
    with pytest.raises(NotImplementedError, match="'weight'"):
        fusedloss.cross_entropy(x, Y_INDEX, w)
    with pytest.raises(NotImplementedError, match="'pos_weight'"):
        fusedloss.binary_cross_entropy_with_logits(x, Y_FLOAT, pos_weight=w)
    with torch.no_grad():  # nothing to differentiate: fine
        fusedloss.binary_cross_entropy_with_logits(x, y, pos_weight=w)


def test_the_library_refuses_what_the_binding_lets_through():
    """C = 0 with rows: no Python check stands in the way; the library's message names the field."""
    with pytest.raises(fusedloss.InvalidArgumentError, match="num_classes: 0 with 4 rows") as info:
        fusedloss.cross_entropy(torch.randn(4, 0), torch.zeros(4, dtype=torch.long))
    assert isinstance(info.value, ValueError) and info.value.argument == "num_classes"
