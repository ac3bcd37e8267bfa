"""functorch's transforms (torch.func on PyTorch >= 2.0, the separate functorch on 1.13) over the
losses. On PyTorch >= 2.0, vmap, grad, vjp and jvp run over every loss and agree with eager
autograd sample by sample; on 1.13, and for a second derivative on any version, each transform
raises fusedloss's error naming it. The vmap rule and the out-of-place backward that the transforms
run are tested here on any version, called as PyTorch >= 2.0 calls them; the oracle is the
public function of each sample, eager (itself proved against PyTorch by test_losses.py).
"""

import types

import pytest
import torch
import torch.autograd.forward_ad as fwAD

import fusedloss
from conftest import assert_close
from fusedloss import _engine

try:
    import torch.func as func
except ImportError:  # PyTorch 1.13 ships the transforms as the separate functorch
    import functorch as func

TORCH_FUNC = _engine._SETUP_CONTEXT
needs_torch_func = pytest.mark.skipif(
    not TORCH_FUNC, reason="PyTorch < 2.0: functorch runs no autograd.Function; torch.func on "
    "PyTorch >= 2.0 runs autograd functions written with setup_context")
BATCH = 3


def _ce(x, y):
    return fusedloss.cross_entropy(x, y, torch.tensor([0.5, 1.0, 2.0, 1.5]), label_smoothing=0.1,
                                   z_loss=1e-3, return_z_loss=True)


def cases(gen):
    """(name, loss of one sample, a batch of inputs, a batch of targets): every loss, reductions
    and options, an (N, C, S) row loss and per-class weights included."""
    x = torch.randn(BATCH, 5, 4, generator=gen, dtype=torch.float64) * 2
    classes = torch.randint(0, 4, (BATCH, 5), generator=gen)
    classes[1, 2] = -100  # an ignored row
    p = torch.rand(BATCH, 5, 4, generator=gen, dtype=torch.float64)
    spatial = torch.randn(BATCH, 3, 4, 2, generator=gen, dtype=torch.float64)
    spatial_classes = torch.randint(0, 4, (BATCH, 3, 2), generator=gen)
    w = torch.tensor([0.5, 1.0, 2.0, 1.5])
    return [
        ("cross_entropy with z-loss term", _ce, x, classes),
        ("cross_entropy (N, C, S) none",
         lambda a, b: fusedloss.cross_entropy(a, b, reduction="none"), spatial, spatial_classes),
        ("softmax_focal_loss sum",
         lambda a, b: fusedloss.softmax_focal_loss(a, b, [1.0, 0.5, 2.0, 1.0], reduction="sum"),
         x, classes),
        ("binary_cross_entropy_with_logits none",
         lambda a, b: fusedloss.binary_cross_entropy_with_logits(a, b, w, reduction="none",
                                                                 pos_weight=w), x, p),
        ("sigmoid_focal_loss mean",
         lambda a, b: fusedloss.sigmoid_focal_loss(a, b, 0.25, 2, "mean"), x, p),
        ("mse_loss sum", lambda a, b: fusedloss.mse_loss(a, b, reduction="sum"), x, p),
    ]


def loss_of(out):
    """The loss alone, of a function that may also return the z-loss term."""
    return out[0] if isinstance(out, tuple) else out


def eager(fn, x, y):
    """Each sample's loss and its gradient with respect to the input (upstream gradient 1),
    through eager autograd, stacked."""
    losses, grads = [], []
    for a, b in zip(x, y):
        a = a.clone().requires_grad_()
        out = loss_of(fn(a, b))
        losses.append(out.detach())
        grads.append(torch.autograd.grad(out, a, torch.ones_like(out))[0])
    return torch.stack(losses), torch.stack(grads)


def recorded_args(monkeypatch, fn, x, y):
    """The arguments each sample's call hands the autograd function (inputs laid out for the
    library, options, whether to keep the gradient)."""
    calls = []
    apply = _engine._FusedLoss.apply
    with monkeypatch.context() as patch:
        patch.setattr(_engine._FusedLoss, "apply", lambda *args: calls.append(args) or apply(*args))
        for a, b in zip(x, y):
            fn(a.clone().requires_grad_(), b)
    return calls


def batched(calls, where):
    """The per-sample arguments as vmap's rule receives them: each tensor that differs between
    the samples stacked along dimension ``where`` (0, or its last, whose slices are strided), its
    in_dim beside it; the others as they are, in_dim None."""
    args, in_dims = [], []
    for per_sample in zip(*calls):
        first = per_sample[0]
        if isinstance(first, torch.Tensor) and any(t is not first for t in per_sample):
            dim = 0 if where == "first" else first.dim()
            args.append(torch.stack([t.detach() for t in per_sample], dim).requires_grad_(
                first.requires_grad))
            in_dims.append(dim)
        else:
            assert all(a is first or a == first for a in per_sample)
            args.append(first)
            in_dims.append(None)
    return args, tuple(in_dims)


@pytest.mark.parametrize("where", ["first", "last"])
def test_the_vmap_rule_runs_each_sample(gen, monkeypatch, where):
    """The rule's outputs are each sample's, stacked along 0 (loss, z-loss term, kept gradient),
    and autograd through them gives each sample's gradient."""
    for name, fn, x, y in cases(gen):
        want_loss, want_grad = eager(fn, x, y)
        args, in_dims = batched(recorded_args(monkeypatch, fn, x, y), where)
        (out, z_loss, grad), out_dims = _engine._FusedLoss.vmap(
            types.SimpleNamespace(batch_size=BATCH, randomness="error"), in_dims, *args)
        assert out_dims == (0, 0, 0), name
        assert_close(out, want_loss, torch.float64, f"{name}: loss")
        assert_close(grad.reshape(want_grad.shape), want_grad, torch.float64, f"{name}: kept grad")
        if fn is _ce:
            want_z = torch.stack([fn(a, b)[1] for a, b in zip(x, y)])
            assert_close(z_loss, want_z, torch.float64, f"{name}: z-loss term")
        (through,) = torch.autograd.grad(out, args[0], torch.ones_like(out))
        assert_close(through.movedim(in_dims[0], 0).reshape(want_grad.shape), want_grad,
                     torch.float64, f"{name}: gradient through the rule")


def test_the_backward_under_a_transform_scales_out_of_place(gen, monkeypatch):
    """Under a transform the backward multiplies the kept gradient out of place: the same
    gradient as the eager in-place backward, as often as a vjp function is called."""
    for name, fn, x, y in cases(gen):
        (args,) = recorded_args(monkeypatch, fn, x[:1], y[:1])
        out, _, kept = _engine._compute(*args)
        g = torch.rand_like(out) + 0.5
        a = x[0].clone().requires_grad_()
        (want,) = torch.autograd.grad(loss_of(fn(a, y[0])), a, g)
        row_none = args[5] in _engine._ROW_LOSSES and args[6].reduction == _engine._NONE
        ctx = types.SimpleNamespace(saved_tensors=(kept,), needs_input_grad=(True,) + (False,) * 7,
                                    row_none=row_none, in_place=False)
        before = kept.clone()
        for _ in range(2):
            got = _engine._FusedLoss.backward(ctx, g, None, None)[0]
            assert_close(got.reshape(want.shape), want, torch.float64, name)
        assert torch.equal(kept, before), f"{name}: the kept gradient was changed"


@pytest.mark.parametrize("transform", ["hessian", "jvp(grad)", "grad(grad)"])
def test_a_second_derivative_raises_naming_it(gen, transform):
    x = torch.randn(4, 3, generator=gen, dtype=torch.float64)
    y = torch.tensor([0, 2, 1, 1])

    def loss(a):
        return fusedloss.cross_entropy(a, y)

    run = {"hessian": lambda: func.hessian(loss)(x),
           "jvp(grad)": lambda: func.jvp(func.grad(loss), (x,), (x,)),
           "grad(grad)": lambda: func.grad(lambda a: func.grad(loss)(a).sum())(x)}[transform]
    with pytest.raises(RuntimeError, match="2 nested grad or jvp levels.*second derivative"):
        run()


@pytest.mark.parametrize("transform", ["vmap", "grad"])
def test_the_losses_without_torch_func_support_refuse_every_transform(gen, transform):
    x = torch.randn(BATCH, 4, 5, generator=gen, dtype=torch.float64)
    y = torch.randint(0, 5, (4,), generator=gen)
    head = torch.randn(5, 5, generator=gen, dtype=torch.float64)
    for fn, why in [
        (lambda a: fusedloss.linear_cross_entropy(a, head, y), "no torch.func support"),
        (lambda a: fusedloss.distributed.vocab_parallel_cross_entropy(
            a, y, vocab_start_index=0, vocab_size=5), "collectives across the ranks"),
    ]:
        name = "vmap" if transform == "vmap" else "grad or jvp"
        with pytest.raises(RuntimeError, match=f"cannot run under .*{name}.*{why}.*torch.autograd"):
            if transform == "vmap":
                func.vmap(fn)(x)
            else:
                func.grad(fn)(x[0])


@pytest.mark.skipif(TORCH_FUNC, reason="PyTorch >= 2.0 runs the transforms (tested below)")
@pytest.mark.parametrize("transform", ["vmap", "grad", "vjp", "jvp", "jacrev", "jacfwd"])
def test_functorch_before_torch_2_raises_naming_the_transform(gen, transform):
    name = "functorch.vmap" if transform == "vmap" else "functorch's grad or jvp"
    for case, fn, x, y in cases(gen):
        def single(a):
            return loss_of(fn(a, y[0]))

        run = {"vmap": lambda: func.vmap(lambda a, b: loss_of(fn(a, b)))(x, y),
               "grad": lambda: func.grad(lambda a: single(a).sum())(x[0]),
               "vjp": lambda: func.vjp(single, x[0]),
               "jvp": lambda: func.jvp(single, (x[0],), (x[0],)),
               "jacrev": lambda: func.jacrev(single)(x[0]),
               "jacfwd": lambda: func.jacfwd(single)(x[0])}[transform]
        with pytest.raises(RuntimeError, match=f"cannot run under {name}.*PyTorch >= 2.0.*"
                           "torch.autograd.grad.*forward_ad"):
            run()


@needs_torch_func
def test_vmap_over_every_loss(gen):
    for name, fn, x, y in cases(gen):
        want_loss, _ = eager(fn, x, y)
        got = func.vmap(lambda a, b: loss_of(fn(a, b)))(x, y)
        assert_close(got, want_loss, torch.float64, name)


@needs_torch_func
def test_grad_and_per_sample_gradients(gen):
    for name, fn, x, y in cases(gen):
        _, want_grad = eager(fn, x, y)

        def total(a, b):
            return loss_of(fn(a, b)).sum()

        assert_close(func.grad(total)(x[0], y[0]), want_grad[0], torch.float64, f"{name}: grad")
        assert_close(func.vmap(func.grad(total))(x, y), want_grad, torch.float64,
                     f"{name}: vmap(grad)")


@needs_torch_func
def test_vjp_as_often_as_it_is_called(gen):
    for name, fn, x, y in cases(gen):
        out, vjp_fn = func.vjp(lambda a: loss_of(fn(a, y[0])), x[0])
        g = torch.rand_like(out) + 0.5
        a = x[0].clone().requires_grad_()
        (want,) = torch.autograd.grad(loss_of(fn(a, y[0])), a, g)
        for _ in range(2):
            assert_close(vjp_fn(g)[0], want, torch.float64, name)


@needs_torch_func
def test_jvp_agrees_with_forward_mode_ad(gen):
    for name, fn, x, y in cases(gen):
        t = torch.randn(x[0].shape, generator=gen, dtype=torch.float64)
        value, tangent = func.jvp(lambda a: loss_of(fn(a, y[0])), (x[0],), (t,))
        with fwAD.dual_level():
            want_value, want_tangent = fwAD.unpack_dual(loss_of(fn(fwAD.make_dual(x[0], t),
                                                                   y[0])))
        assert_close(value, want_value, torch.float64, f"{name}: value")
        assert_close(tangent, want_tangent, torch.float64, f"{name}: tangent")
