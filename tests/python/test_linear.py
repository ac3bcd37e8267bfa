"""fusedloss.linear_cross_entropy against PyTorch: F.linear then F.cross_entropy in float64 with
autograd, on odd shapes, every option PyTorch has (z-loss and soft-cap composed from
docs/SEMANTICS.md), bias and no bias, every reduction with a random upstream gradient, 16-bit
inputs, and its module; gradcheck in float64; the refusals."""

import pytest
import torch
import torch.nn.functional as F

import fusedloss
from conftest import DEVICES, assert_close, upstream

SHAPES = [(1, 1, 1), (7, 33, 1), (7, 1, 33), (33, 7, 7), (5, 16, 1000)]


def _oracle(x, w, b, target, weight, reduction, label_smoothing, z_loss, softcap):
    """PyTorch in float64: the logits, the soft-cap, cross_entropy, plus the z-loss term."""
    z = F.linear(x, w, b)
    if softcap:
        z = softcap * torch.tanh(z / softcap)
    loss = F.cross_entropy(z, target, weight=weight, reduction=reduction,
                           label_smoothing=label_smoothing)
    if z_loss:
        kept = target != -100
        zl = z_loss * torch.logsumexp(z, dim=1) ** 2 * kept
        if reduction == "none":
            loss = loss + zl
        else:
            total = zl.sum()
            if reduction == "mean":
                denominator = (weight[target[kept]].sum() if weight is not None
                               else kept.sum())
                total = total / denominator
            loss = loss + total
    return loss


def _inputs(n, h, v, dtype, device, gen, bias):
    x = (torch.randn(n, h, generator=gen, dtype=torch.float64) / h ** 0.5 * 2)
    w = torch.randn(v, h, generator=gen, dtype=torch.float64)
    b = torch.randn(v, generator=gen, dtype=torch.float64) * 0.5 if bias else None
    target = torch.randint(0, v, (n,), generator=gen)
    if n > 2:
        target[1] = -100
    leaf = lambda t: None if t is None else t.to(dtype).to(device).requires_grad_()  # noqa: E731
    return leaf(x), leaf(w), leaf(b), target.to(device)


def _compare(x, w, b, target, reduction, dtype, gen, weight=None, label_smoothing=0.0, z_loss=0.0,
             softcap=0.0, what=""):
    out = fusedloss.linear_cross_entropy(x, w, target, linear_bias=b, weight=weight,
                                         reduction=reduction, label_smoothing=label_smoothing,
                                         z_loss=z_loss, softcap=softcap)
    assert out.dtype == x.dtype
    g = upstream(out, gen)
    leaves = [t.detach().double().requires_grad_() if t is not None else None for t in (x, w, b)]
    want = _oracle(*leaves, target, None if weight is None else weight.double(), reduction,
                   label_smoothing, z_loss, softcap)
    inputs = [t for t in (x, w, b) if t is not None]
    oracle_inputs = [t for t in leaves if t is not None]
    got_grads = torch.autograd.grad(out, inputs, g.to(out.dtype).to(out.device))
    want_grads = torch.autograd.grad(want, oracle_inputs, g.to(want.device))
    assert_close(out, want, dtype, f"{what} loss")
    for name, got, expected in zip(("input", "linear_weight", "linear_bias"), got_grads,
                                   want_grads):
        assert_close(got, expected, dtype, f"{what} grad {name}")


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("n,h,v", SHAPES)
@pytest.mark.parametrize("reduction", ["none", "mean", "sum"])
@pytest.mark.parametrize("bias", [False, True])
def test_matches_linear_then_cross_entropy(device, n, h, v, reduction, bias, gen):
    x, w, b, target = _inputs(n, h, v, torch.float64, device, gen, bias)
    _compare(x, w, b, target, reduction, torch.float64, gen, what=f"{n}x{h}x{v}")


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("options", [
    dict(label_smoothing=0.1), dict(weighted=True), dict(weighted=True, label_smoothing=0.2),
    dict(z_loss=1e-2), dict(softcap=3.0), dict(weighted=True, label_smoothing=0.1, z_loss=1e-3,
                                               softcap=5.0)])
@pytest.mark.parametrize("reduction", ["none", "mean", "sum"])
def test_every_option(device, options, reduction, gen):
    options = dict(options)
    x, w, b, target = _inputs(9, 12, 17, torch.float64, device, gen, True)
    weighted = options.pop("weighted", False)
    weight = (torch.rand(17, generator=gen) + 0.25).to(device) if weighted else None
    _compare(x, w, b, target, reduction, torch.float64, gen, weight=weight, what=str(options),
             **options)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_lower_precision_and_leading_dimensions(device, dtype, gen):
    """(s, b, H) hidden states, as a transformer hands them over; the oracle takes the rounded
    values in float64."""
    x, w, b, target = _inputs(12, 8, 30, dtype, device, gen, True)
    x3 = x.detach().reshape(3, 4, 8).requires_grad_()
    out = fusedloss.linear_cross_entropy(x3, w, target.reshape(3, 4), linear_bias=b,
                                         reduction="none")
    assert out.shape == (3, 4) and out.dtype == dtype
    out.sum().backward()
    leaves = [t.detach().double().requires_grad_() for t in (x3, w, b)]
    want = _oracle(leaves[0].reshape(12, 8), leaves[1], leaves[2], target, None, "none", 0.0, 0.0,
                   0.0)
    want.sum().backward()
    # The library's float32 sums over H, rounded once to the dtype, against float64 ones.
    tolerance = {torch.float32: 1e-5, torch.bfloat16: 2.0**-7}[dtype]
    for got, expected in ((out.reshape(-1), want), (x3.grad, leaves[0].grad),
                          (w.grad, leaves[1].grad), (b.grad, leaves[2].grad)):
        assert torch.allclose(got.double().cpu(), expected.detach().cpu(), rtol=tolerance,
                              atol=tolerance * expected.abs().max().item())


def test_gradcheck_in_float64(gen):
    """Under 'none' (each backward recomputes, so gradcheck may run it again and again); the
    reduced losses keep their fused gradient for one backward, checked against PyTorch above."""
    x, w, b, target = _inputs(4, 3, 5, torch.float64, "cpu", gen, True)
    assert torch.autograd.gradcheck(
        lambda x, w, b: fusedloss.linear_cross_entropy(x, w, target, linear_bias=b,
                                                       reduction="none", label_smoothing=0.1),
        (x, w, b))


def test_module_and_grad_scale(gen):
    x, w, b, target = _inputs(6, 4, 9, torch.float64, "cpu", gen, True)
    loss_fn = fusedloss.LinearCrossEntropyLoss(label_smoothing=0.1)
    out = loss_fn(x, w, target, linear_bias=b, grad_scale=4.0)
    out.backward()
    leaves = [t.detach().requires_grad_() for t in (x, w, b)]
    want = _oracle(*leaves, target, None, "mean", 0.1, 0.0, 0.0)
    (want * 4.0).backward()
    assert torch.allclose(out, want) and torch.allclose(w.grad, leaves[1].grad)
    assert "label_smoothing=0.1" in repr(loss_fn)


def test_a_second_backward_is_refused(gen):
    x, w, _, target = _inputs(3, 2, 4, torch.float64, "cpu", gen, False)
    out = fusedloss.linear_cross_entropy(x, w, target)
    out.backward(retain_graph=True)
    with pytest.raises(RuntimeError, match="a second time"):
        out.backward()


def test_refusals(gen):
    x, w, b, target = _inputs(3, 4, 5, torch.float32, "cpu", gen, True)
    with pytest.raises(ValueError, match="does not fit input"):
        fusedloss.linear_cross_entropy(x, w[:, :3], target)
    with pytest.raises(TypeError, match="input's dtype"):
        fusedloss.linear_cross_entropy(x, w.double(), target)
    with pytest.raises(ValueError, match="batch_size"):
        fusedloss.linear_cross_entropy(x, w, target[:2])
    with pytest.raises(ValueError, match="linear_bias"):
        fusedloss.linear_cross_entropy(x, w, target, linear_bias=b[:4])
    with pytest.raises(TypeError, match="int64 or int32"):
        fusedloss.linear_cross_entropy(x, w, target.float())
    bad = target.clone()
    bad[0] = 5
    with pytest.raises(ValueError, match="1 target value"):
        fusedloss.linear_cross_entropy(x, w, bad)
