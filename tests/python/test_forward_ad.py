"""Forward-mode AD: the loss's tangent is the kept gradient dotted with the input's tangent, for
every loss and reduction; torch.autograd.gradcheck's forward-mode check passes; the oracle is
PyTorch's own loss in float64, differentiated by PyTorch (jvp through its double backward)."""

import pytest
import torch
import torch.autograd.forward_ad as fwAD
import torch.nn.functional as F
import torchvision

import fusedloss
from conftest import REDUCTIONS, assert_close, randint


def tangent_of(fn, primals, tangents):
    """fn's output tangent along `tangents`, through fusedloss's forward-mode AD."""
    with fwAD.dual_level():
        duals = [fwAD.make_dual(p, t) if t is not None else p for p, t in zip(primals, tangents)]
        out = fn(*duals)
        primal, tangent = fwAD.unpack_dual(out)
        assert tangent is not None, "the loss has no tangent"
        return primal, tangent


def oracle_tangent(fn, primals, tangents):
    """The same through PyTorch's own loss: the backward-of-backward jvp of
    torch.autograd.functional.jvp."""
    inputs = tuple(p for p, t in zip(primals, tangents) if t is not None)
    which = [i for i, t in enumerate(tangents) if t is not None]

    def on_differentiated(*xs):
        args = list(primals)
        for i, x in zip(which, xs):
            args[i] = x
        return fn(*args)

    return torch.autograd.functional.jvp(on_differentiated, inputs,
                                         tuple(tangents[i] for i in which))


def cases(gen):
    """(name, ours, theirs, primals, tangents) for each loss: float64 on the CPU reference."""
    n, c = randint(gen, 2, 6), randint(gen, 2, 7)
    x = torch.randn(n, c, generator=gen, dtype=torch.float64) * 2
    t = torch.randn(n, c, generator=gen, dtype=torch.float64)
    y = torch.randint(0, c, (n,), generator=gen)
    y[0] = -100  # an ignored row
    p = torch.rand(n, c, generator=gen, dtype=torch.float64)
    w = (torch.rand(c, generator=gen) + 0.5).double()  # float32 values: the library's weights
    soft = torch.rand(n, c, generator=gen, dtype=torch.float64)
    yt = torch.randn(n, c, generator=gen, dtype=torch.float64)
    out = []
    for r in REDUCTIONS:
        out += [
            (f"cross_entropy {r}",
             lambda a, r=r: fusedloss.cross_entropy(a, y, w.float(), reduction=r,
                                                    label_smoothing=0.1),
             lambda a, r=r: F.cross_entropy(a, y, w, reduction=r, label_smoothing=0.1),
             [x], [t]),
            (f"cross_entropy probabilities {r}",
             lambda a, r=r: fusedloss.cross_entropy(a, soft / soft.sum(1, keepdim=True),
                                                    reduction=r),
             lambda a, r=r: F.cross_entropy(a, soft / soft.sum(1, keepdim=True), reduction=r),
             [x], [t]),
            (f"binary_cross_entropy_with_logits {r}",
             lambda a, r=r: fusedloss.binary_cross_entropy_with_logits(
                 a, p, w.float(), reduction=r, pos_weight=w.float()),
             lambda a, r=r: F.binary_cross_entropy_with_logits(a, p, w, reduction=r,
                                                               pos_weight=w),
             [x], [t]),
            (f"sigmoid_focal_loss {r}",
             lambda a, r=r: fusedloss.sigmoid_focal_loss(a, p, 0.25, 2, r),
             lambda a, r=r: torchvision.ops.sigmoid_focal_loss(a, p, 0.25, 2, r),
             [x], [t]),
            (f"mse_loss input and target {r}",
             lambda a, b, r=r: fusedloss.mse_loss(a, b, reduction=r),
             lambda a, b, r=r: F.mse_loss(a, b, reduction=r),
             [x, p], [t, yt]),
        ]
    return out


def test_every_loss_and_reduction_against_pytorch(gen):
    for name, ours, theirs, primals, tangents in cases(gen):
        value, tangent = tangent_of(ours, primals, tangents)
        want_value, want_tangent = oracle_tangent(theirs, primals, tangents)
        assert_close(value, want_value, torch.float64, f"{name} value")
        assert_close(tangent, want_tangent, torch.float64, f"{name} tangent")


def test_softmax_focal_and_spatial_rows_against_composed_oracle(gen):
    """Softmax focal (no PyTorch loss) and (N, C, S) rows under 'none': the tangent is each row's
    gradient dotted with its tangent."""
    x = torch.randn(3, 5, 4, generator=gen, dtype=torch.float64)
    t = torch.randn(3, 5, 4, generator=gen, dtype=torch.float64)
    y = torch.randint(0, 5, (3, 4), generator=gen)
    for name, ours in [
        ("softmax_focal_loss", lambda a: fusedloss.softmax_focal_loss(a, y, reduction="none")),
        ("cross_entropy (N, C, S)", lambda a: fusedloss.cross_entropy(a, y, reduction="none")),
    ]:
        _, tangent = tangent_of(ours, [x], [t])
        leaf = x.clone().requires_grad_()
        out = ours(leaf)
        rows = []
        for i in range(out.numel()):
            (g,) = torch.autograd.grad(ours(leaf).reshape(-1)[i], leaf)
            rows.append((g * t).sum())
        assert tangent.shape == out.shape, name
        assert_close(tangent, torch.stack(rows).reshape(out.shape), torch.float64, name)


@pytest.mark.parametrize("reduction", REDUCTIONS)
def test_gradcheck_forward_mode(gen, reduction):
    x = torch.randn(4, 3, generator=gen, dtype=torch.float64, requires_grad=True)
    y = torch.randint(0, 3, (4,), generator=gen)
    p = torch.rand(4, 3, generator=gen, dtype=torch.float64)
    for fn in [lambda a: fusedloss.cross_entropy(a, y, reduction=reduction),
               lambda a: fusedloss.binary_cross_entropy_with_logits(a, p, reduction=reduction),
               lambda a: fusedloss.sigmoid_focal_loss(a, p, reduction=reduction),
               lambda a: fusedloss.mse_loss(a, p, reduction=reduction)]:
        assert torch.autograd.gradcheck(fn, (x,), check_forward_ad=True, check_backward_ad=False,
                                        check_undefined_grad=False, check_batched_grad=False)


def test_a_target_tangent_is_refused_where_the_target_has_no_gradient(gen):
    x = torch.randn(4, 3, generator=gen, dtype=torch.float64)
    p = torch.rand(4, 3, generator=gen, dtype=torch.float64)
    with fwAD.dual_level():
        dual_target = fwAD.make_dual(p, torch.ones_like(p))
        with pytest.raises(RuntimeError, match="binary_cross_entropy_with_logits.*target"):
            fusedloss.binary_cross_entropy_with_logits(fwAD.make_dual(x, torch.ones_like(x)),
                                                       dual_target)
