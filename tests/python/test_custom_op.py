"""The torch.library registration (``fusedloss::loss``, PyTorch >= 2.4), which torch.compile traces.

With PyTorch >= 2.4: opcheck on the op, and torch.compile(fullgraph=True) of the functions against
eager, in value and gradient. On older PyTorch (Debian's 1.13 in CI) the op cannot be registered,
so a stand-in for torch.library.custom_op records what the binding registers, in a fresh
interpreter, and the test runs those pieces by hand: the fake implementation must give the real
outputs' shapes and dtypes, and the registered backward the autograd function's gradients.
"""

import os
import subprocess
import sys

import pytest
import torch

import fusedloss
from conftest import REPO

HAS_CUSTOM_OP = hasattr(torch.library, "custom_op")

CASES = {
    "cross_entropy": lambda x, y, **kw: fusedloss.cross_entropy(x, y.long(), **kw),
    "cross_entropy_options": lambda x, y, **kw: fusedloss.cross_entropy(
        x, y.long(), label_smoothing=0.1, z_loss=1e-3, softcap=5.0, **kw),
    "softmax_focal": lambda x, y, **kw: fusedloss.softmax_focal_loss(x, y.long(), **kw),
    "bce": lambda x, y, **kw: fusedloss.binary_cross_entropy_with_logits(
        x, (y % 2).to(x.dtype).expand_as(x).contiguous(), **kw),
    "mse": lambda x, y, **kw: fusedloss.mse_loss(x, y.to(x.dtype).expand_as(x).contiguous(), **kw),
    "sigmoid_focal": lambda x, y, **kw: fusedloss.sigmoid_focal_loss(
        x, (y % 2).to(x.dtype).expand_as(x).contiguous(), **kw),
    "cross_entropy_probabilities": lambda x, y, **kw: fusedloss.cross_entropy(
        x, torch.softmax(torch.arange(x.numel(), dtype=x.dtype).reshape(x.shape) % 7 * 0.3,
                         dim=1), **kw),
}


@pytest.mark.skipif(not HAS_CUSTOM_OP, reason="PyTorch < 2.4 has no torch.library.custom_op")
@pytest.mark.parametrize("reduction", ["none", "mean"])
@pytest.mark.parametrize("name", CASES)
def test_torch_compile_traces_the_losses_without_a_graph_break(name, reduction):
    torch._dynamo.reset()
    x = torch.randn(6, 5, dtype=torch.float64, requires_grad=True)
    y = torch.arange(6).unsqueeze(1) % 5 if name in ("bce", "mse", "sigmoid_focal") else (
        torch.arange(6) % 5)

    def run(x):
        return CASES[name](x, y, reduction=reduction)

    compiled = torch.compile(run, backend="aot_eager", fullgraph=True)
    got = compiled(x)
    g = torch.ones_like(got)
    (got_grad,) = torch.autograd.grad(got, x, g)
    want = run(x)
    (want_grad,) = torch.autograd.grad(want, x, g)
    torch.testing.assert_close(got, want, rtol=0, atol=0)
    torch.testing.assert_close(got_grad, want_grad, rtol=0, atol=0)


@pytest.mark.skipif(not HAS_CUSTOM_OP, reason="PyTorch < 2.4 has no torch.library.custom_op")
def test_opcheck():
    x = torch.randn(4, 7, dtype=torch.float64, requires_grad=True)
    y = torch.tensor([0, 6, 3, 1])
    ints, floats = [1, 0, -100, 0, 0], [1.0, 0.1, 0.0, 0.0]
    torch.library.opcheck(torch.ops.fusedloss.loss.default,
                          ("cross_entropy", x, y, None, None, None, ints, floats, True))


HARNESS = r"""
import inspect
import torch

captured = {}


class RecordedOp:
    def __init__(self, fn):
        self.fn = fn

    def __call__(self, *args):
        captured["calls"].append(args)
        return self.fn(*args)

    def register_fake(self, fn):
        captured["fake"] = fn
        return fn

    def register_autograd(self, backward, setup_context):
        captured["backward"], captured["setup_context"] = backward, setup_context


def custom_op(name, mutates_args):
    assert name == "fusedloss::loss" and tuple(mutates_args) == ()

    def decorate(fn):
        captured["signature"] = inspect.signature(fn)
        return RecordedOp(fn)

    return decorate


torch.library.custom_op = custom_op
import fusedloss
from fusedloss import _engine

assert _engine._custom_op is not None
annotations = [p.annotation for p in captured["signature"].parameters.values()]
assert all(a is not inspect.Parameter.empty for a in annotations), "custom_op needs every hint"


class Ctx:
    def save_for_backward(self, *tensors):
        self.saved_tensors = tensors


cases = [
    (lambda x, y, r: fusedloss.cross_entropy(x, y, reduction=r, label_smoothing=0.1),
     torch.randn(5, 7, dtype=torch.float64), torch.tensor([0, 6, 2, 3, 1]), False),
    (lambda x, y, r: fusedloss.cross_entropy(x, y, reduction=r, z_loss=1e-2),
     torch.randn(2, 7, 3, dtype=torch.float64), torch.randint(0, 7, (2, 3)), False),
    (lambda x, y, r: fusedloss.softmax_focal_loss(x, y, reduction=r),
     torch.randn(3, 4, dtype=torch.float64), torch.tensor([1, 0, 3]), False),
    (lambda x, y, r: fusedloss.binary_cross_entropy_with_logits(x, y, reduction=r),
     torch.randn(4, 3, dtype=torch.float64), torch.rand(4, 3, dtype=torch.float64), False),
    (lambda x, y, r: fusedloss.mse_loss(x, y, reduction=r),
     torch.randn(4, 3, dtype=torch.float64), torch.randn(4, 3, dtype=torch.float64), True),
]
for run, x, y, target_grad in cases:
    for reduction in ("none", "mean", "sum"):
        _engine._compiling = lambda: True
        captured["calls"] = []
        xc = x.clone().requires_grad_()
        yc = y.clone().requires_grad_() if target_grad else y
        run(xc, yc, reduction)
        (args,) = captured["calls"]
        real = _engine._custom_op.fn(*args)
        fake = captured["fake"](*args)
        assert [(t.shape, t.dtype) for t in real] == [(t.shape, t.dtype) for t in fake], (
            [(t.shape, t.dtype) for t in real], [(t.shape, t.dtype) for t in fake])
        ctx = Ctx()
        ctx.needs_input_grad = (False, True, target_grad) + (False,) * 6
        captured["setup_context"](ctx, args, real)
        g = torch.rand_like(real[0])
        grads = captured["backward"](ctx, g, None, None)
        assert len(grads) == len(args)

        _engine._compiling = lambda: False
        xf = x.clone().requires_grad_()
        yf = y.clone().requires_grad_() if target_grad else y
        want = torch.autograd.grad(run(xf, yf, reduction), [xf] + ([yf] if target_grad else []), g)
        assert torch.equal(grads[1], want[0])
        if target_grad:
            assert torch.equal(grads[2], want[1])
print("custom op harness: ok")
"""


@pytest.mark.skipif(HAS_CUSTOM_OP, reason="the real registration is tested above")
def test_registration_pieces_through_a_stand_in(tmp_path):
    script = tmp_path / "harness.py"
    script.write_text(HARNESS)
    env = dict(os.environ, PYTHONPATH=str(REPO / "python"),
               FUSEDLOSS_LIBRARY=str(fusedloss.library_path))
    result = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, env=env)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "custom op harness: ok" in result.stdout
