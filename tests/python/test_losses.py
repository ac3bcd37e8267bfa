"""Every function and option against PyTorch, in value and gradient: random shapes and values
from a generator seeded per test, every dtype, reduction and layout.

The oracle is torch.nn.functional / torchvision in float64 on the same device; for what PyTorch
lacks (z-loss, soft-cap, softmax focal loss) it is PyTorch ops composed from docs/SEMANTICS.md, in
float64 with autograd for the gradient.
"""

import pytest
import torch
import torch.nn.functional as F
import torchvision

import fusedloss
from conftest import REDUCTIONS, assert_close, check_loss, device_dtype_params, logits, randint


def random_shape(gen, dims, low=1, high=9):
    return tuple(randint(gen, low, high) for _ in range(dims))


def reduce(values, reduction, normaliser):
    """PyTorch's reductions, with the mean's normaliser given; a mean over nothing is NaN with a
    zero gradient, as PyTorch's nll_loss gives it."""
    if reduction == "none":
        return values
    total = values.sum()
    if reduction == "sum":
        return total
    return total / normaliser if normaliser != 0 else total * 0 + float("nan")


# ------------------------------------------------------------------------------------------------
# BCE with logits


@pytest.mark.parametrize("soft", [False, True], ids=["hard", "soft"])
@pytest.mark.parametrize("pos_weight", [None, "class", "scalar"])
@pytest.mark.parametrize("weight", [None, "class", "element", "row"])
@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("device,dtype", device_dtype_params())
def test_bce_with_logits(device, dtype, reduction, weight, pos_weight, soft, gen):
    shape = random_shape(gen, randint(gen, 1, 3))
    classes = shape[-1]
    x = logits(shape, dtype, device, gen)
    y = torch.rand(shape, generator=gen) if soft else torch.randint(0, 2, shape, generator=gen)
    y = y.to(dtype if randint(gen, 0, 1) else torch.float32).to(device)  # both target dtypes
    w = {None: None,
         "class": torch.rand(classes, generator=gen) + 0.5,
         "element": torch.rand(shape, generator=gen) + 0.5,
         "row": torch.rand(shape[:-1] + (1,), generator=gen) + 0.5}[weight]
    pw = {None: None,
          "class": torch.rand(classes, generator=gen) * 3,
          "scalar": torch.tensor([2.5])}[pos_weight]
    w, pw = [None if t is None else t.float().to(device) for t in (w, pw)]

    def ours(x):
        return fusedloss.binary_cross_entropy_with_logits(x, y, w, None, None, reduction, pw)

    def oracle(x64):
        return F.binary_cross_entropy_with_logits(
            x64, y.double(), None if w is None else w.double(), reduction=reduction,
            pos_weight=None if pw is None else pw.double())

    check_loss(ours, oracle, x, dtype, gen, "bce")


# ------------------------------------------------------------------------------------------------
# Cross-entropy against F.cross_entropy


def row_problem(gen, dtype, device, layout, targets, ignore_index=-100):
    """Logits, targets and a logits transform (the strided layout's slice) for a row loss.

    layout: rows (N, C); spatial (N, C, d1, d2); unbatched (C); strided (N, C) sliced out of a
    wider tensor (read in place through the row stride). targets: index (int64), ignored (int32,
    some rows at ignore_index), probabilities (of the input's shape, float32 or the input's dtype).
    """
    n, c = randint(gen, 1, 24), randint(gen, 1, 40)
    shape = {"rows": (n, c), "spatial": (n, c, randint(gen, 1, 4), randint(gen, 1, 3)),
             "unbatched": (c,), "strided": (n, c + 5)}[layout]
    x = logits(shape, dtype, device, gen)
    view = (lambda t: t[:, 2:2 + c]) if layout == "strided" else (lambda t: t)
    input_shape = view(x).shape
    if targets == "probabilities":
        q = torch.softmax(torch.randn(input_shape, generator=gen, dtype=torch.float64) * 2, 1
                          if len(input_shape) > 1 else 0)
        y = q.to(dtype if randint(gen, 0, 1) else torch.float32)
    else:
        rows_shape = input_shape[:1] + input_shape[2:] if len(input_shape) > 1 else ()
        y = torch.randint(0, c, rows_shape, generator=gen)
        if targets == "ignored":
            y = torch.where(torch.rand(rows_shape, generator=gen) < 0.3,
                            torch.full_like(y, ignore_index), y).to(torch.int32)
    return x, y.to(device), view, c


@pytest.mark.parametrize("layout", ["rows", "spatial", "unbatched", "strided"])
@pytest.mark.parametrize("label_smoothing", [0.0, 0.15])
@pytest.mark.parametrize("weighted", [False, True], ids=["unweighted", "weighted"])
@pytest.mark.parametrize("targets", ["index", "ignored", "probabilities"])
@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("device,dtype", device_dtype_params())
def test_cross_entropy(device, dtype, reduction, targets, weighted, label_smoothing, layout, gen):
    # ignore_index inside [0, C) on some tests: a real class, skipped as PyTorch skips it
    # (PyTorch refuses any other ignore_index with probability targets, and so does fusedloss)
    ignore_index = -100 if randint(gen, 0, 1) or targets == "probabilities" else 0
    x, y, view, classes = row_problem(gen, dtype, device, layout, targets, ignore_index)
    w = (torch.rand(classes, generator=gen) + 0.25).to(device) if weighted else None

    def ours(x):
        return fusedloss.cross_entropy(view(x), y, w, None, ignore_index, None, reduction,
                                       label_smoothing)

    def oracle(x64):
        return F.cross_entropy(
            view(x64), y.long() if not y.is_floating_point() else y.double(),
            None if w is None else w.double(), ignore_index=ignore_index, reduction=reduction,
            label_smoothing=label_smoothing)

    check_loss(ours, oracle, x, dtype, gen, "cross_entropy")


def composed_cross_entropy(x, y, weight, ignore_index, reduction, label_smoothing, z_loss,
                           softcap):
    """Cross-entropy with z-loss and soft-cap composed from PyTorch ops (docs/SEMANTICS.md):
    x <- s tanh(x / s); L_n = CE_n + z_loss LSE_n^2 on non-ignored rows; mean over PyTorch's
    normaliser (the non-ignored rows' weight for index targets, the row count for probabilities).
    Returns (loss, the z-loss term alone reduced like it)."""
    if softcap is not None:
        x = softcap * torch.tanh(x / softcap)
    probabilities = y.is_floating_point()
    ce = F.cross_entropy(x, y if probabilities else y.long(), weight, ignore_index=ignore_index,
                         reduction="none", label_smoothing=label_smoothing)
    lse = torch.logsumexp(x, dim=1)
    if probabilities:
        kept = torch.ones_like(lse, dtype=torch.bool)
        normaliser = lse.numel()
    else:
        kept = y != ignore_index
        safe = torch.where(kept, y, torch.zeros_like(y)).long()
        normaliser = (weight[safe] * kept).sum() if weight is not None else kept.sum()
    z = z_loss * lse.square() * kept
    return reduce(ce + z, reduction, normaliser), reduce(z, reduction, normaliser)


@pytest.mark.parametrize("layout", ["rows", "spatial"])
@pytest.mark.parametrize("targets", ["ignored", "probabilities"])
@pytest.mark.parametrize("z_loss,softcap", [(1e-2, None), (0.0, 4.0), (3e-2, 2.5)])
@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("device,dtype", device_dtype_params())
def test_cross_entropy_z_loss_and_softcap(device, dtype, reduction, z_loss, softcap, targets,
                                          layout, gen):
    x, y, view, classes = row_problem(gen, dtype, device, layout, targets)
    w = (torch.rand(classes, generator=gen) + 0.25).to(device)
    smoothing = 0.1

    def ours(x):
        return fusedloss.cross_entropy(view(x), y, w, None, -100, None, reduction, smoothing,
                                       z_loss=z_loss, softcap=softcap)

    def oracle(x64):
        return composed_cross_entropy(view(x64), y if not y.is_floating_point() else y.double(),
                                      w.double(), -100, reduction, smoothing, z_loss, softcap)[0]

    check_loss(ours, oracle, x, dtype, gen, "cross_entropy z-loss/softcap")

    # The z-loss term on its own, as return_z_loss reports it (no gradient).
    with torch.no_grad():
        loss, term = fusedloss.cross_entropy(view(x), y, w, None, -100, None, reduction,
                                             smoothing, z_loss=z_loss, softcap=softcap,
                                             return_z_loss=True)
        want = composed_cross_entropy(view(x.double()), y if not y.is_floating_point()
                                      else y.double(), w.double(), -100, reduction, smoothing,
                                      z_loss, softcap)[1]
    assert term.dtype == x.dtype and not term.requires_grad
    assert_close(term, want, dtype, "z-loss term")


# ------------------------------------------------------------------------------------------------
# Sigmoid focal loss against torchvision


@pytest.mark.parametrize("soft", [False, True], ids=["hard", "soft"])
@pytest.mark.parametrize("gamma", [0, 0.5, 2, 3.5])
@pytest.mark.parametrize("alpha", [0.25, -1.0, 0.8])
@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("device,dtype", device_dtype_params())
def test_sigmoid_focal_loss(device, dtype, reduction, alpha, gamma, soft, gen):
    shape = random_shape(gen, randint(gen, 1, 3))
    x = logits(shape, dtype, device, gen)
    y = torch.rand(shape, generator=gen) if soft else torch.randint(0, 2, shape, generator=gen)
    y = y.to(dtype if randint(gen, 0, 1) else torch.float32).to(device)

    def ours(x):
        return fusedloss.sigmoid_focal_loss(x, y, alpha, gamma, reduction)

    def oracle(x64):
        return torchvision.ops.sigmoid_focal_loss(x64, y.double(), alpha, gamma, reduction)

    check_loss(ours, oracle, x, dtype, gen, "sigmoid_focal_loss")


def test_sigmoid_focal_loss_defaults_are_torchvisions(gen):
    x = logits((6, 5), torch.float64, "cpu", gen)
    y = torch.randint(0, 2, (6, 5), generator=gen).double()
    ours = fusedloss.sigmoid_focal_loss(x, y)
    want = torchvision.ops.sigmoid_focal_loss(x, y)
    assert ours.shape == want.shape == (6, 5)  # reduction 'none' by default, as torchvision
    torch.testing.assert_close(ours, want, rtol=1e-12, atol=1e-14)


# ------------------------------------------------------------------------------------------------
# Softmax focal loss against its composition


def composed_softmax_focal(x, y, alpha, gamma, ignore_index, reduction):
    """-alpha[y] (1 - p_y)^gamma log p_y per non-ignored row; mean over those rows."""
    kept = y != ignore_index
    safe = torch.where(kept, y, torch.zeros_like(y)).long()
    lp = F.log_softmax(x, dim=1).gather(1, safe.unsqueeze(1)).squeeze(1)
    a = alpha[safe] if alpha is not None else torch.ones_like(lp)
    # 1 - p_y is 0 only for a row whose loss is 0 (one class): the clamp keeps autograd's
    # 0^(gamma-1) out of it (the gradient there is 0) and changes no other value.
    m = (1 - lp.exp()).clamp_min(torch.finfo(lp.dtype).tiny)
    values = torch.where(kept, -a * m.pow(gamma) * lp, torch.zeros_like(lp))
    return reduce(values, reduction, kept.sum())


@pytest.mark.parametrize("layout", ["rows", "spatial", "unbatched"])
@pytest.mark.parametrize("targets", ["index", "ignored"])
@pytest.mark.parametrize("gamma", [0.0, 0.5, 2.0])
@pytest.mark.parametrize("weighted", [False, True], ids=["no-alpha", "alpha"])
@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("device,dtype", device_dtype_params())
def test_softmax_focal_loss(device, dtype, reduction, weighted, gamma, targets, layout, gen):
    x, y, view, classes = row_problem(gen, dtype, device, layout, targets)
    alpha = (torch.rand(classes, generator=gen) + 0.25).to(device) if weighted else None

    def ours(x):
        return fusedloss.softmax_focal_loss(view(x), y, alpha, gamma, -100, reduction)

    def oracle(x64):
        x64, y64 = view(x64), y
        if x64.dim() == 1:  # unbatched: one row
            x64, y64 = x64.unsqueeze(0), y64.unsqueeze(0)
        out = composed_softmax_focal(x64, y64, None if alpha is None else alpha.double(), gamma,
                                     -100, reduction)
        return out.squeeze(0) if view(x).dim() == 1 and reduction == "none" else out

    check_loss(ours, oracle, x, dtype, gen, "softmax_focal_loss")


@pytest.mark.parametrize("reduction", REDUCTIONS)
def test_softmax_focal_with_gamma_0_is_cross_entropy(reduction, gen):
    x = logits((9, 7), torch.float64, "cpu", gen)
    y = torch.randint(0, 7, (9,), generator=gen)
    y[2] = -100
    torch.testing.assert_close(fusedloss.softmax_focal_loss(x, y, gamma=0.0, reduction=reduction),
                               F.cross_entropy(x, y, reduction=reduction), rtol=1e-13, atol=1e-15)


# ------------------------------------------------------------------------------------------------
# MSE against F.mse_loss, with the target's gradient too


@pytest.mark.parametrize("target_grad", [False, True], ids=["target", "target-requires-grad"])
@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("device,dtype", device_dtype_params())
def test_mse_loss(device, dtype, reduction, target_grad, gen):
    shape = random_shape(gen, randint(gen, 0, 3))
    x = logits(shape, dtype, device, gen)
    y = torch.randn(shape, generator=gen).to(dtype).to(device)

    def ours(x):
        return fusedloss.mse_loss(x, y, None, None, reduction)

    def oracle(x64):
        return F.mse_loss(x64, y.double(), reduction=reduction)

    check_loss(ours, oracle, x, dtype, gen, "mse_loss")
    if target_grad:  # both sides differentiable, as in distillation: d/dy = -d/dx
        y.requires_grad_()
        out = fusedloss.mse_loss(x, y, None, None, reduction)
        gx, gy = torch.autograd.grad(out, (x, y), torch.ones_like(out))
        assert torch.equal(gy, -gx)
        y64 = y.detach().double().requires_grad_()
        want = F.mse_loss(x.detach().double(), y64, reduction=reduction)
        (want_gy,) = torch.autograd.grad(want, y64, torch.ones_like(want))
        assert_close(gy, want_gy, dtype, "mse target grad")
