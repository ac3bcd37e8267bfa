"""What the Python suite shares: the import of fusedloss, the devices and dtypes, the tolerances
(stated once, here), input generation, and running a loss with its gradient.

The oracle is PyTorch (torch.nn.functional, torchvision) in float64 on the same device, or PyTorch
ops composed from docs/SEMANTICS.md where PyTorch has no such loss or option. 16-bit inputs are
rounded to their dtype first and the rounded values upcast to float64 for the oracle: Debian's
PyTorch 1.13 has no half-precision CPU kernels for these losses, and the library computes from the
rounded values too.
"""

import os
import sys
import zlib
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[2]
#: FUSEDLOSS_TEST_INSTALLED=1: test the installed package (`pip install .`, as CI does), not the
#: source tree's, which is otherwise put first so that `pytest tests/python` runs from anywhere.
INSTALLED = os.environ.get("FUSEDLOSS_TEST_INSTALLED") == "1"
if not INSTALLED and str(REPO / "python") not in sys.path:
    sys.path.insert(0, str(REPO / "python"))

import fusedloss  # noqa: E402

if INSTALLED and REPO in Path(fusedloss.__file__).resolve().parents:
    raise RuntimeError(f"FUSEDLOSS_TEST_INSTALLED=1, but fusedloss comes from {fusedloss.__file__}")

#: The devices under test: the CPU reference always, the CUDA kernels when there is a GPU and the
#: library was built with CUDA (scripts/gpu-check.sh runs this suite there).
DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() and fusedloss.built_with_cuda else [])


def pytest_sessionstart(session):
    """FUSEDLOSS_REQUIRE_GPU=1 (scripts/gpu-check.sh) makes a run without the CUDA path fail
    instead of quietly testing the CPU alone, as in the C++ GPU suite."""
    if os.environ.get("FUSEDLOSS_REQUIRE_GPU") == "1" and "cuda" not in DEVICES:
        why = ("torch.cuda.is_available() is False" if not torch.cuda.is_available() else
               f"{fusedloss.library_path} was built without CUDA")
        pytest.exit(f"FUSEDLOSS_REQUIRE_GPU=1, but the CUDA path cannot run: {why}", returncode=1)


DTYPES = [torch.float64, torch.float32, torch.bfloat16, torch.float16]
REDUCTIONS = ["none", "mean", "sum"]

# Tolerances, |got - want| <= floor + of_largest * max|want| + rtol * |want|, per device and dtype.
#
# CPU: the reference computes in double and rounds each result once to the output dtype (the loss
# via float32), so it is within half an ulp of the exact value plus float32's step; one ulp of the
# dtype relative (2^(1-p)) bounds that with room. The oracle is PyTorch in float64, itself off by a
# few float64 ulps of the largest term where terms cancel (p - y): 1e-12 of the largest value
# absorbs that. float16 adds its subnormal spacing (2^-24) as a floor.
#
# CUDA: the kernels compute in float32, each operation within a few float32 ulps, so values are
# within ~1e-5 relative for the row sizes here (a sum over C <= 64 terms, exp and log), and
# cancellation leaves an absolute float32 error relative to the largest value; then one ulp of
# the output dtype for the final rounding (the same figures as tests/gpu/).
_ULP = {torch.float64: 0.0, torch.float32: 2.0**-23, torch.bfloat16: 2.0**-7,
        torch.float16: 2.0**-10}
TOLERANCE = {
    ("cpu", torch.float64): (0.0, 1e-12, 1e-12),
    ("cpu", torch.float32): (0.0, 1e-12, _ULP[torch.float32]),
    ("cpu", torch.bfloat16): (0.0, 1e-12, _ULP[torch.bfloat16]),
    ("cpu", torch.float16): (2.0**-24, 1e-12, _ULP[torch.float16]),
    ("cuda", torch.float32): (0.0, 1e-5, 1e-5 + _ULP[torch.float32]),
    ("cuda", torch.bfloat16): (0.0, 1e-5, 1e-5 + _ULP[torch.bfloat16]),
    ("cuda", torch.float16): (2.0**-24, 1e-5, 1e-5 + _ULP[torch.float16]),
}


def device_dtype_params():
    """(device, dtype) pairs the library runs: float64 only on the CPU reference."""
    return [pytest.param(d, t, id=f"{d}-{str(t).split('.')[-1]}") for d in DEVICES for t in DTYPES
            if not (d == "cuda" and t == torch.float64)]


def assert_close(got, want, dtype, what=""):
    """``got`` (the library's result, in ``dtype``) against the float64 oracle ``want``: the same
    shape, NaN and infinities in the same places, finite values within TOLERANCE."""
    assert got.shape == want.shape, f"{what}: shape {tuple(got.shape)} != {tuple(want.shape)}"
    floor, of_largest, rtol = TOLERANCE[(got.device.type, dtype)]
    got, want = got.detach().double().cpu(), want.detach().double().cpu()
    nan = torch.isnan(want)
    assert torch.equal(torch.isnan(got), nan), f"{what}: NaN in other places\n{got}\n{want}"
    infinite = torch.isinf(want)
    assert torch.equal(got[infinite], want[infinite]), f"{what}: infinities differ"
    finite = ~(nan | infinite)
    g, w = got[finite], want[finite]
    largest = w.abs().max().item() if w.numel() else 0.0
    allowed = floor + of_largest * largest + rtol * w.abs()
    error = (g - w).abs()
    worst = (error - allowed).argmax() if error.numel() else None
    outside = int((error > allowed).sum())
    assert outside == 0, (
        f"{what}: got {g[worst].item()!r}, want {w[worst].item()!r} (error "
        f"{error[worst].item():.3g}, allowed {allowed[worst].item():.3g}; {outside} of "
        f"{error.numel()} outside)")


def logits(shape, dtype, device, generator, scale=2.0):
    """Random logits N(0, scale^2), rounded to ``dtype``, as a leaf that requires grad."""
    x = torch.randn(shape, generator=generator, dtype=torch.float64) * scale
    return x.to(dtype).to(device).requires_grad_()


def oracle_input(x):
    """The rounded input upcast to float64, a fresh leaf for the oracle's autograd."""
    return x.detach().double().requires_grad_()


def upstream(loss, generator):
    """An upstream gradient for ``loss``: powers of two (exact in every dtype, so multiplying by
    it adds no rounding), one per element under none."""
    choices = torch.tensor([0.5, 1.0, 2.0, -1.0, 0.25], dtype=torch.float64)
    index = torch.randint(0, len(choices), loss.shape, generator=generator)
    return choices[index]


def check_loss(ours, oracle, x, dtype, generator, what=""):
    """Runs ``ours(x)`` and ``oracle(x64)`` with the same upstream gradient and compares the value
    (in x's dtype, as PyTorch returns it) and the gradient (in x's dtype) with the oracle's."""
    out = ours(x)
    assert out.dtype == x.dtype, f"{what}: the loss is {out.dtype}, the input {x.dtype}"
    g = upstream(out, generator)
    x64 = oracle_input(x)
    want = oracle(x64)
    (want_grad,) = torch.autograd.grad(want, x64, g.to(want.device))
    (got_grad,) = torch.autograd.grad(out, x, g.to(out.dtype).to(out.device))
    assert got_grad.dtype == x.dtype
    assert_close(out, want, dtype, f"{what} loss")
    assert_close(got_grad, want_grad, dtype, f"{what} grad")
    return out, got_grad


@pytest.fixture
def gen(request):
    """A generator seeded from the test's name and parameters: fixed per test, different across
    tests, the same wherever pytest runs from."""
    return torch.Generator().manual_seed(zlib.crc32(request.node.name.encode()))


def randint(generator, low, high):
    """A random int in [low, high]."""
    return int(torch.randint(low, high + 1, (), generator=generator))
