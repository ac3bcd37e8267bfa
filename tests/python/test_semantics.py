"""The deliberate differences from PyTorch (docs/SEMANTICS.md, "Deliberate differences"), each
asserted as a difference: what fusedloss gives, and that PyTorch gives something else. Also the
empty-mean policy and the invalid-target report."""

import pytest
import torch
import torch.nn.functional as F
import torchvision

import fusedloss
from conftest import DEVICES

INF = float("inf")


def grad_of(out, x):
    (g,) = torch.autograd.grad(out, x, torch.ones_like(out))
    return g


@pytest.mark.parametrize("device", DEVICES)
def test_difference_1_bce_at_matching_infinities_is_zero(device):
    dtype = torch.float64 if device == "cpu" else torch.float32
    x = torch.tensor([-INF, INF], dtype=dtype, device=device, requires_grad=True)
    y = torch.tensor([0.0, 1.0], dtype=dtype, device=device)
    ours = fusedloss.binary_cross_entropy_with_logits(x, y, reduction="none")
    assert torch.equal(ours, torch.zeros_like(ours))
    assert torch.equal(grad_of(ours, x), torch.zeros_like(x))
    theirs = F.binary_cross_entropy_with_logits(x, y, reduction="none")
    assert torch.isnan(theirs).all()  # PyTorch: NaN loss (its gradient is 0 too)


@pytest.mark.parametrize("device", DEVICES)
def test_difference_2_ignored_rows_get_zero_gradient_even_at_minus_inf(device):
    dtype = torch.float64 if device == "cpu" else torch.float32
    x = torch.tensor([[-INF, -INF, -INF], [0.5, 1.0, -2.0]], dtype=dtype, device=device,
                     requires_grad=True)
    y = torch.tensor([-100, 1], device=device)
    ours = fusedloss.cross_entropy(x, y)
    theirs = F.cross_entropy(x, y)
    torch.testing.assert_close(ours, theirs)  # the loss agrees
    g, theirs_g = grad_of(ours, x), grad_of(theirs, x)
    assert torch.equal(g[0], torch.zeros_like(g[0]))
    assert torch.isnan(theirs_g[0]).all()  # PyTorch: NaN on the ignored row
    torch.testing.assert_close(g[1], theirs_g[1])


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("loss", [fusedloss.cross_entropy, fusedloss.softmax_focal_loss])
def test_difference_3_out_of_range_target_raises_naming_the_count(device, loss):
    x = torch.randn(5, 4, device=device, requires_grad=True)
    y = torch.tensor([0, 4, 1, -1, 3], device=device)  # 4 and -1 are out of [0, 4)
    with pytest.raises(ValueError, match=r"2 target value\(s\) are neither ignore_index \(-100\) "
                                         r"nor a class index in \[0, 4\)"):
        loss(x, y)
    if device == "cpu":  # PyTorch: an IndexError on the CPU (a device assert on CUDA)
        with pytest.raises(IndexError):
            F.cross_entropy(x, y)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("loss", [fusedloss.cross_entropy, fusedloss.softmax_focal_loss])
def test_difference_3_without_validation_the_rows_are_ignored(device, loss):
    x = torch.randn(5, 4, device=device, requires_grad=True)
    y = torch.tensor([0, 4, 1, -1, 3], device=device)
    got = loss(x, y, validate_targets=False)
    g = grad_of(got, x)
    ignored = torch.where((y < 0) | (y >= 4), torch.full_like(y, -100), y)
    want = loss(x, ignored)
    torch.testing.assert_close(got, want, rtol=0, atol=0)
    torch.testing.assert_close(g, grad_of(want, x), rtol=0, atol=0)
    assert torch.equal(g[1], torch.zeros_like(g[1])) and torch.equal(g[3], torch.zeros_like(g[3]))


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("gamma", [0.25, 0.5, 0.9])
def test_difference_4_focal_gradients_finite_for_gamma_below_1(device, gamma):
    dtype = torch.float64 if device == "cpu" else torch.float32
    x = torch.tensor([100.0, -100.0, 100.0, -100.0], dtype=dtype, device=device,
                     requires_grad=True)
    y = torch.tensor([1.0, 0.0, 0.0, 1.0], dtype=dtype, device=device)  # saturated both ways
    ours = fusedloss.sigmoid_focal_loss(x, y, gamma=gamma, reduction="sum")
    assert torch.isfinite(ours) and torch.isfinite(grad_of(ours, x)).all()
    theirs = torchvision.ops.sigmoid_focal_loss(x, y, gamma=gamma, reduction="sum")
    assert torch.isnan(grad_of(theirs, x)).any()  # torchvision: NaN at the confident elements

    rows = torch.tensor([[30.0, 0.0, -30.0], [0.0, -20.0, 5.0]], dtype=dtype, device=device,
                        requires_grad=True)
    target = torch.tensor([0, 2], device=device)
    loss = fusedloss.softmax_focal_loss(rows, target, gamma=gamma)
    assert torch.isfinite(loss) and torch.isfinite(grad_of(loss, rows)).all()


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("empty_mean,value", [("nan", float("nan")), ("zero", 0.0)])
def test_difference_5_empty_mean_policy(device, empty_mean, value):
    dtype = torch.float64 if device == "cpu" else torch.float32
    x = torch.randn(4, 3, dtype=dtype, device=device, requires_grad=True)
    all_ignored = torch.full((4,), -100, device=device)
    cases = {
        "cross_entropy all ignored": lambda: fusedloss.cross_entropy(
            x, all_ignored, empty_mean=empty_mean),
        "cross_entropy zero weight": lambda: fusedloss.cross_entropy(
            x, torch.tensor([0, 0, 1, 1], device=device),
            torch.tensor([0.0, 0.0, 1.0], device=device), empty_mean=empty_mean),
        "softmax_focal all ignored": lambda: fusedloss.softmax_focal_loss(
            x, all_ignored, empty_mean=empty_mean),
        "cross_entropy no rows": lambda: fusedloss.cross_entropy(
            x[:0], all_ignored[:0], empty_mean=empty_mean),
        "bce no elements": lambda: fusedloss.binary_cross_entropy_with_logits(
            x[:0], x[:0].detach(), empty_mean=empty_mean),
        "sigmoid_focal no elements": lambda: fusedloss.sigmoid_focal_loss(
            x[:0], x[:0].detach(), reduction="mean", empty_mean=empty_mean),
        "mse no elements": lambda: fusedloss.mse_loss(x[:0], x[:0].detach(),
                                                      empty_mean=empty_mean),
    }
    for what, run in cases.items():
        out = run()
        assert out.shape == () and out.dtype == dtype, what
        torch.testing.assert_close(out, torch.tensor(value, dtype=dtype, device=device),
                                   equal_nan=True, msg=what)
        assert torch.equal(grad_of(out, x), torch.zeros_like(x)), what  # 0 under both policies
    # PyTorch's own empty mean is NaN, the default policy
    assert torch.isnan(F.cross_entropy(x, all_ignored))


@pytest.mark.parametrize("device", DEVICES)
def test_difference_6_bce_zero_weight_silences_an_infinite_logit(device):
    dtype = torch.float64 if device == "cpu" else torch.float32
    x = torch.tensor([-INF, INF, INF, 1.0], dtype=dtype, device=device, requires_grad=True)
    y = torch.tensor([1.0, 0.0, 0.5, 0.0], dtype=dtype, device=device)
    w = torch.tensor([0.0, 0.0, 0.0, 2.0], dtype=dtype, device=device)
    ours = fusedloss.binary_cross_entropy_with_logits(x, y, weight=w, reduction="none")
    theirs = F.binary_cross_entropy_with_logits(x, y, weight=w, reduction="none")
    assert torch.equal(ours[:3], torch.zeros_like(ours[:3]))
    assert torch.isnan(theirs[:3]).all()  # PyTorch: 0 * inf, a NaN loss
    torch.testing.assert_close(ours[3], theirs[3])  # a weighted finite element agrees
    g, theirs_g = grad_of(ours, x), grad_of(theirs, x)
    assert torch.equal(g[:3], torch.zeros_like(g[:3]))
    torch.testing.assert_close(g, theirs_g)  # the gradient agrees (0 where w = 0)
    total = fusedloss.binary_cross_entropy_with_logits(x, y, weight=w, reduction="sum")
    torch.testing.assert_close(total, theirs[3])  # not NaN: the silenced elements add 0


@pytest.mark.parametrize("device", DEVICES)
def test_empty_inputs_under_none_and_sum(device):
    x = torch.randn(0, 5, device=device, requires_grad=True)
    y = torch.zeros(0, dtype=torch.int64, device=device)
    assert fusedloss.cross_entropy(x, y, reduction="none").shape == (0,)
    total = fusedloss.cross_entropy(x, y, reduction="sum")
    assert total.item() == 0 and grad_of(total, x).shape == (0, 5)
    assert fusedloss.mse_loss(x, x.detach(), reduction="none").shape == (0, 5)
    assert fusedloss.binary_cross_entropy_with_logits(x, x.detach(), reduction="sum").item() == 0
    spatial = torch.randn(2, 3, 0, device=device, requires_grad=True)
    out = fusedloss.cross_entropy(spatial, torch.zeros(2, 0, dtype=torch.int64, device=device),
                                  reduction="none")
    assert out.shape == (2, 0)


def test_index_targets_with_smoothing_equal_smoothed_one_hot_probabilities():
    # docs/SEMANTICS.md: row by row under none and sum (with weight), under mean only without
    # weight.
    g = torch.Generator().manual_seed(7)
    x = torch.randn(6, 5, generator=g, dtype=torch.float64)
    y = torch.randint(0, 5, (6,), generator=g)
    w = torch.rand(5, generator=g, dtype=torch.float64).float() + 0.5
    one_hot = F.one_hot(y, 5).double()
    for reduction, weight in [("none", w), ("sum", w), ("mean", None)]:
        torch.testing.assert_close(
            fusedloss.cross_entropy(x, y, weight, reduction=reduction, label_smoothing=0.2),
            fusedloss.cross_entropy(x, one_hot, weight, reduction=reduction, label_smoothing=0.2),
            rtol=1e-13, atol=1e-15)
