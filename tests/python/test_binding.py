"""How the binding carries the library into PyTorch: the gradient's scaling (grad_output, the
grad_scale extension, in place and only once), layouts (strided rows read in place,
non-contiguous inputs copied, unbatched and spatial shapes), dtypes in and out, no_grad, and the
nn.Module wrappers."""

import inspect

import pytest
import torch
import torch.nn.functional as F
import torchvision

import fusedloss
from conftest import DEVICES, assert_close, logits

# Every function with a call that makes a scalar loss from a (6, 5) float input x.
LOSSES = {
    "bce": lambda x, **kw: fusedloss.binary_cross_entropy_with_logits(
        x, torch.ones_like(x.detach()) * 0.25, **kw),
    "cross_entropy": lambda x, **kw: fusedloss.cross_entropy(
        x, torch.arange(x.shape[0], device=x.device) % x.shape[1], **kw),
    "sigmoid_focal": lambda x, **kw: fusedloss.sigmoid_focal_loss(
        x, (torch.arange(x.numel(), device=x.device) % 2).view(x.shape).to(x.dtype),
        reduction="sum", **kw),
    "softmax_focal": lambda x, **kw: fusedloss.softmax_focal_loss(
        x, torch.arange(x.shape[0], device=x.device) % x.shape[1], **kw),
    "mse": lambda x, **kw: fusedloss.mse_loss(x, torch.full_like(x.detach(), 0.5), **kw),
}


def grad_of(out, x, g=None):
    (grad,) = torch.autograd.grad(out, x, torch.ones_like(out) if g is None else g)
    return grad


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("name", LOSSES)
def test_grad_scale_scales_the_gradient_not_the_loss(device, name):
    run = LOSSES[name]
    x = torch.randn(6, 5, device=device, requires_grad=True)
    plain = run(x)
    base = grad_of(plain, x)
    for scale in (2.0 ** 10, torch.tensor(0.125, device=device),
                  torch.tensor(3.0, dtype=torch.float64, device=device)):
        scaled = run(x, grad_scale=scale)
        assert torch.equal(scaled, plain)
        factor = float(scale)
        torch.testing.assert_close(grad_of(scaled, x), base * factor, rtol=1e-6, atol=0)
    # ... and grad_output still multiplies on top of it
    torch.testing.assert_close(grad_of(run(x, grad_scale=4.0), x, torch.tensor(0.5, device=device)),
                               base * 2.0, rtol=1e-6, atol=0)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("name", LOSSES)
def test_second_backward_raises_instead_of_rescaling(device, name):
    x = torch.randn(6, 5, device=device, requires_grad=True)
    loss = LOSSES[name](x)
    loss.backward(retain_graph=True)
    first = x.grad.clone()
    with pytest.raises(RuntimeError, match="a second time"):
        loss.backward()
    # Gradients of separate forwards accumulate as usual.
    LOSSES[name](x).backward()
    torch.testing.assert_close(x.grad, 2 * first)
    # Double backward is refused by once_differentiable, not silently wrong.
    (g,) = torch.autograd.grad(LOSSES[name](x), x, create_graph=True)
    with pytest.raises(RuntimeError):
        g.sum().backward()


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("name", LOSSES)
def test_no_grad_and_inputs_without_grad(device, name):
    x = torch.randn(6, 5, device=device, requires_grad=True)
    with torch.no_grad():
        a = LOSSES[name](x)
    b = LOSSES[name](x.detach())
    assert not a.requires_grad and not b.requires_grad
    torch.testing.assert_close(a, b, rtol=0, atol=0)
    torch.testing.assert_close(a, LOSSES[name](x).detach(), rtol=0, atol=0)


@pytest.mark.parametrize("device", DEVICES)
def test_strided_rows_are_read_in_place_and_other_layouts_copied(device, gen):
    dtype = torch.float64 if device == "cpu" else torch.float32  # the layouts, not the rounding
    wide = logits((7, 12), dtype, device, gen)
    y = torch.tensor([0, 3, 2, 9, 1, 5, 4], device=device)
    views = {
        "columns 2..11 of a wider tensor": lambda t: t[:, 2:12],
        "every other row": lambda t: t[::2, 1:11],
        "transposed": lambda t: t.t()[:10, :7].t(),       # class stride 7: copied
        "expanded row": lambda t: t[:1, :10].expand(7, 10),  # row stride 0: copied
    }
    for what, view in views.items():
        target = y[: view(wide).shape[0]]
        out = fusedloss.cross_entropy(view(wide), target, reduction="none")
        wide64 = wide.detach().double().requires_grad_()
        want = F.cross_entropy(view(wide64), target, reduction="none")
        g = torch.linspace(-1, 1, out.numel(), device=device)
        assert_close(out, want, dtype, what)
        assert_close(grad_of(out, wide, g.to(dtype)), grad_of(want, wide64, g.double()), dtype,
                     what)


@pytest.mark.parametrize("device", DEVICES)
def test_non_contiguous_element_and_spatial_inputs(device, gen):
    x = logits((4, 6, 3), torch.float32, device, gen)
    y = torch.rand(4, 6, 3, generator=gen).to(device)
    for view in (lambda t: t.transpose(0, 2), lambda t: t[:, ::2]):
        out = fusedloss.binary_cross_entropy_with_logits(view(x), view(y), reduction="none")
        x64 = x.detach().double().requires_grad_()
        want = F.binary_cross_entropy_with_logits(view(x64), view(y).double(), reduction="none")
        assert_close(out, want, torch.float32, "bce view")
        assert_close(grad_of(out, x), grad_of(want, x64), torch.float32, "bce view grad")
    # (N, C, d) with the class dimension permuted into place: copied, then read as (N, C, S)
    z = logits((4, 3, 5), torch.float32, device, gen)
    target = torch.randint(0, 5, (4, 3), generator=gen).to(device)
    out = fusedloss.cross_entropy(z.transpose(1, 2), target, reduction="sum")
    z64 = z.detach().double().requires_grad_()
    want = F.cross_entropy(z64.transpose(1, 2), target, reduction="sum")
    assert_close(out, want, torch.float32, "spatial view")
    assert_close(grad_of(out, z), grad_of(want, z64), torch.float32, "spatial view grad")


@pytest.mark.parametrize("device", DEVICES)
def test_shapes_of_none_reduction(device):
    x = torch.randn(2, 5, 3, 4, device=device)
    assert fusedloss.cross_entropy(x, torch.zeros(2, 3, 4, dtype=torch.long, device=device),
                                   reduction="none").shape == (2, 3, 4)
    assert fusedloss.cross_entropy(x, torch.softmax(x, 1), reduction="none").shape == (2, 3, 4)
    assert fusedloss.cross_entropy(x[0, :, 0, 0], torch.tensor(1, device=device),
                                   reduction="none").shape == ()
    assert fusedloss.softmax_focal_loss(x[0, :, 0, 0], torch.tensor(1, device=device),
                                        reduction="none").shape == ()
    assert fusedloss.mse_loss(x, x, reduction="none").shape == x.shape
    assert fusedloss.mse_loss(x[0, 0, 0, 0], x[1, 0, 0, 0], reduction="none").shape == ()


def test_int32_and_int64_targets_agree(gen):
    x = logits((8, 6), torch.float64, "cpu", gen)
    y = torch.randint(0, 6, (8,), generator=gen)
    torch.testing.assert_close(fusedloss.cross_entropy(x, y.int()), fusedloss.cross_entropy(x, y),
                               rtol=0, atol=0)


def test_target_dtypes_other_than_float32_or_the_inputs_are_converted(gen):
    x = logits((5, 4), torch.float32, "cpu", gen)
    y = torch.rand(5, 4, generator=gen, dtype=torch.float64)
    torch.testing.assert_close(fusedloss.binary_cross_entropy_with_logits(x, y),
                               fusedloss.binary_cross_entropy_with_logits(x, y.float()))
    torch.testing.assert_close(fusedloss.cross_entropy(x, y.softmax(1)),
                               fusedloss.cross_entropy(x, y.softmax(1).float()))


@pytest.mark.parametrize("device", DEVICES)
def test_cuda_path_uses_the_current_stream(device):
    if device != "cuda":
        pytest.skip("needs a GPU")
    x = torch.randn(64, 1000, device=device, requires_grad=True)
    y = torch.randint(0, 1000, (64,), device=device)
    want = fusedloss.cross_entropy(x, y)
    want_grad = grad_of(want, x)
    stream = torch.cuda.Stream()
    stream.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(stream):
        got = fusedloss.cross_entropy(x, y, validate_targets=False)
        got_grad = grad_of(got, x)
    torch.cuda.current_stream().wait_stream(stream)
    assert torch.equal(got, want) and torch.equal(got_grad, want_grad)  # deterministic, bitwise


# ------------------------------------------------------------------------------------------------
# nn.Module wrappers


# Parameters PyTorch added after the binding was written, at the end of its list (mse_loss's
# weight, 2.6): missing from ours, they cannot shift a positional call.
NEWER_IN_PYTORCH = {"weight"}


def assert_follows(ours, theirs):
    """Our positional parameters are PyTorch's, in its order with its defaults, the deprecated
    size_average and reduce included."""
    want = [(p.name, p.default) for p in theirs.parameters.values()
            if p.kind is not inspect.Parameter.KEYWORD_ONLY]
    got = [(p.name, p.default) for p in ours.parameters.values()
           if p.kind is not inspect.Parameter.KEYWORD_ONLY]
    assert got == want[:len(got)], (got, want)
    assert {name for name, _ in want[len(got):]} <= NEWER_IN_PYTORCH, (got, want)


MODULES = [
    (fusedloss.BCEWithLogitsLoss, torch.nn.BCEWithLogitsLoss),
    (fusedloss.CrossEntropyLoss, torch.nn.CrossEntropyLoss),
    (fusedloss.MSELoss, torch.nn.MSELoss),
]


@pytest.mark.parametrize("ours,theirs", MODULES, ids=[m[1].__name__ for m in MODULES])
def test_module_signatures_follow_pytorch(ours, theirs):
    """PyTorch's parameters in PyTorch's order and defaults, size_average and reduce included."""
    assert_follows(inspect.signature(ours), inspect.signature(theirs))


@pytest.mark.parametrize("fn,theirs", [
    (fusedloss.binary_cross_entropy_with_logits, F.binary_cross_entropy_with_logits),
    (fusedloss.cross_entropy, F.cross_entropy),
    (fusedloss.mse_loss, F.mse_loss),
    (fusedloss.sigmoid_focal_loss, torchvision.ops.sigmoid_focal_loss),
])
def test_function_signatures_follow_pytorch(fn, theirs):
    assert_follows(inspect.signature(fn), inspect.signature(theirs))


def test_modules_match_the_functions(gen):
    x = logits((6, 5), torch.float64, "cpu", gen)
    y = torch.randint(0, 5, (6,), generator=gen)
    p = torch.rand(6, 5, generator=gen, dtype=torch.float64)
    w = torch.rand(5, generator=gen) + 0.5
    pairs = [
        (fusedloss.CrossEntropyLoss(w, ignore_index=3, label_smoothing=0.1, z_loss=1e-3,
                                    softcap=5.0)(x, y),
         fusedloss.cross_entropy(x, y, w, None, 3, None, "mean", 0.1, z_loss=1e-3,
                                 softcap=5.0)),
        (fusedloss.CrossEntropyLoss(w, ignore_index=3, label_smoothing=0.1)(x, y),
         F.cross_entropy(x, y, w.double(), ignore_index=3, label_smoothing=0.1)),
        (fusedloss.BCEWithLogitsLoss(w, None, None, "sum", pos_weight=w * 2)(x, p),
         F.binary_cross_entropy_with_logits(x, p, w.double(), reduction="sum",
                                            pos_weight=w.double() * 2)),
        (fusedloss.MSELoss(None, None, "none")(x, p), F.mse_loss(x, p, reduction="none")),
        (fusedloss.SigmoidFocalLoss(0.3, 1.5, "mean")(x, p),
         torchvision.ops.sigmoid_focal_loss(x, p, 0.3, 1.5, "mean")),
        (fusedloss.SoftmaxFocalLoss([1.0, 2.0, 0.5, 1.0, 1.0], gamma=0.0)(x, y),
         fusedloss.softmax_focal_loss(x, y, torch.tensor([1.0, 2.0, 0.5, 1.0, 1.0]), 0.0)),
    ]
    for got, want in pairs:
        torch.testing.assert_close(got, want, rtol=1e-12, atol=1e-14)


def test_module_weights_are_buffers():
    w = torch.rand(5)
    module = fusedloss.CrossEntropyLoss(weight=w)
    assert torch.equal(module.state_dict()["weight"], w)
    bce = fusedloss.BCEWithLogitsLoss(pos_weight=w)
    assert set(bce.state_dict()) == {"pos_weight"}
    assert "alpha" in fusedloss.SoftmaxFocalLoss(alpha=[1.0, 2.0]).state_dict()
    assert "label_smoothing=0.0" in repr(module) and "reduction='mean'" in repr(module)


def test_module_grad_scale_and_backward(gen):
    x = logits((6, 5), torch.float32, "cpu", gen)
    y = torch.randint(0, 5, (6,), generator=gen)
    loss = fusedloss.CrossEntropyLoss()(x, y, grad_scale=8.0)
    loss.backward()
    x64 = x.detach().double().requires_grad_()
    (F.cross_entropy(x64, y) * 8).backward()
    assert_close(x.grad, x64.grad, torch.float32, "module grad")


def test_package_reports_its_library():
    assert fusedloss.library_path.is_file()
    assert isinstance(fusedloss.built_with_cuda, bool)
    assert set(fusedloss.__all__) <= set(dir(fusedloss))
