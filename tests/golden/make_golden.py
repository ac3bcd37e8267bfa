#!/usr/bin/python3
"""Writes the golden files of tests/golden/: expected outputs of every loss, from an oracle that
shares no code with the library.

Run with Debian's Python (PyTorch 1.13 CPU, torchvision 0.14):

    /usr/bin/python3 tests/golden/make_golden.py

Every case draws its inputs from a generator seeded by the case's name, so reruns reproduce the
committed files byte for byte, and adding a case does not change the others.

Oracles (docs/DESIGN.md, decisions 9-10):
- PyTorch's own loss where it has one: F.binary_cross_entropy_with_logits, F.cross_entropy (weight,
  ignore_index, label_smoothing, probability targets), F.mse_loss, torchvision's
  sigmoid_focal_loss; where it has not (z-loss, soft-cap, softmax focal, the zero empty-mean
  policy), PyTorch ops composed from docs/SEMANTICS.md. Always float64, with autograd for the
  gradient.
- Inputs of float32/float16/bfloat16 cases are drawn, rounded to the dtype with torch (`.to`), then
  upcast to float64 for the oracle.
- Where docs/SEMANTICS.md departs from PyTorch, the expected values are its; each patch below says
  which difference it implements.
- Every case is also computed a second way, straight from docs/SEMANTICS.md's formulas (loss and the
  analytic gradient, no autograd), and the script stops unless both ways agree to 1e-13 relative
  (NaN with NaN, infinities exactly). A case whose inputs make the float64 oracle inexact (a
  confident row whose tiny loss cancels) fails that check rather than going into a golden.

File format (read by tests/support/golden.cpp), one record per case:

    case <name>
    loss <bce|sigmoid_focal|mse|cross_entropy|softmax_focal>
    <key> <value>                    scalar options
    <array> <count> v1 v2 ...        arrays
    end

Lines starting with '#' are comments. Numbers are Python's repr(float) (nan, inf, -inf included);
integers plainly. `logits_dtype`, `targets_dtype` and `reduction` are always written (they say what
the case is); other options only when they differ from the params' defaults. `logits` holds the
layout the library reads (padding columns for row_stride > C*S hold a finite filler); `expect_grad`
has the same layout, 0 in padding positions.
"""

import math
import os
import sys
import zlib

import torch
import torch.nn.functional as F
import torchvision
from torchvision.ops import sigmoid_focal_loss

torch.set_num_threads(1)  # a fixed summation order: reruns reproduce every bit

OUT_DIR = os.path.dirname(os.path.abspath(__file__))
F64 = torch.float64
INF = math.inf
NAN = math.nan
DTYPES = {
    "float32": torch.float32,
    "float16": torch.float16,
    "bfloat16": torch.bfloat16,
    "float64": torch.float64,
}
PAD = 999.0  # padding filler: finite, and large enough to spoil any row that reads it
# How closely the two ways must agree: far inside the C++ tests' tolerance of the case's dtype (one
# ulp relative: 2^-23 for float32 outputs, 1e-12 for float64 logits).
CHECK_RTOL = {"float64": 1e-13, "float32": 1e-10, "float16": 1e-10, "bfloat16": 1e-10}


# ----------------------------------------------------------------------------------------------
# Inputs


def generator(name):
    g = torch.Generator()
    g.manual_seed(zlib.crc32(name.encode()))
    return g


def rounded(t, dtype):
    """`t` stored as `dtype` (one rounding, by torch), read back as float64."""
    return t.to(DTYPES[dtype]).to(F64)


def randn(g, shape, scale=1.0):
    return torch.randn(shape, generator=g, dtype=F64) * scale


def uniform(g, shape, lo, hi):
    return torch.rand(shape, generator=g, dtype=F64) * (hi - lo) + lo


def randint(g, shape, hi):
    return torch.randint(0, hi, shape, generator=g, dtype=torch.int64)


def upstream(g, count):
    """Upstream gradient values, non-unit with random signs, exact in float32 (the loss dtype,
    and the type of forward_backward's grad_scale)."""
    mag = uniform(g, (count,), 0.5, 2.0)
    sign = torch.where(torch.rand((count,), generator=g, dtype=F64) < 0.3, -1.0, 1.0)
    return rounded(mag * sign, "float32")


# ----------------------------------------------------------------------------------------------
# Records


def fmt(v):
    return repr(float(v))


class Case:
    def __init__(self, name, loss):
        assert " " not in name
        self.name = name
        self.loss = loss
        self.scalars = []
        self.arrays = []

    def scalar(self, key, value):
        if isinstance(value, float):
            value = fmt(value)
        self.scalars.append((key, str(value)))

    def array(self, key, values, integer=False):
        if isinstance(values, torch.Tensor):
            values = values.detach().reshape(-1).tolist()
        toks = [str(int(v)) for v in values] if integer else [fmt(v) for v in values]
        self.arrays.append((key, toks))

    def text(self):
        lines = ["case " + self.name, "loss " + self.loss]
        lines += ["%s %s" % kv for kv in self.scalars]
        lines += [" ".join([k, str(len(v))] + v) for k, v in self.arrays]
        lines.append("end")
        return "\n".join(lines) + "\n"


FILES = {k: [] for k in ("bce", "sigmoid_focal", "mse", "cross_entropy", "softmax_focal")}


def add(case):
    assert all(c.name != case.name for c in FILES[case.loss]), case.name
    FILES[case.loss].append(case)


# ----------------------------------------------------------------------------------------------
# The second way: docs/SEMANTICS.md's formulas, evaluated directly


def agree(name, what, got, want, ldt):
    rtol = CHECK_RTOL[ldt]
    got = torch.as_tensor(got, dtype=F64).reshape(-1)
    want = torch.as_tensor(want, dtype=F64).reshape(-1)
    assert got.numel() == want.numel(), (name, what, got.numel(), want.numel())
    for i, (a, b) in enumerate(zip(got.tolist(), want.tolist())):
        if math.isnan(a) or math.isnan(b):
            ok = math.isnan(a) and math.isnan(b)
        elif math.isinf(a) or math.isinf(b):
            ok = a == b
        else:
            ok = abs(a - b) <= rtol * max(abs(a), abs(b)) or abs(a - b) <= 1e-300
        if not ok:
            sys.exit("%s: %s[%d]: oracle %r, SEMANTICS formula %r" % (name, what, i, a, b))


def softplus(t):
    """log(1 + e^t), accurate everywhere: t + log1p(e^-t) for t > 0, log1p(e^t) otherwise."""
    pos = t > 0
    return torch.where(pos, t + torch.log1p(torch.exp(-t.abs())), torch.log1p(torch.exp(-t.abs())))


def times(coef, v):
    """coef * v with docs/SEMANTICS.md's rule: a term of coefficient exactly 0 contributes 0."""
    return torch.where(coef == 0, torch.zeros_like(v), coef * v)


def reduce_rows(rows, reduction, denom, empty_mean):
    if reduction == "none":
        return rows.reshape(-1)
    s = rows.sum()
    if reduction == "sum":
        return s.reshape(1)
    if denom == 0:
        return torch.tensor([NAN if empty_mean == "nan" else 0.0], dtype=F64)
    return (s / denom).reshape(1)


def scale_rows(grad_rows, g, reduction, denom):
    """d(sum_i g_i * loss_i)/d(row loss): per row under none, g / denom under mean."""
    if reduction == "none":
        return g
    if reduction == "sum":
        return g[0].expand(grad_rows)
    if denom == 0:
        return torch.zeros(grad_rows, dtype=F64)
    return (g[0] / denom).expand(grad_rows)


# ----------------------------------------------------------------------------------------------
# Element losses


def element_common(c, M, C, ldt, tdt, reduction, empty_mean):
    c.scalar("logits_dtype", ldt)
    c.scalar("targets_dtype", tdt)
    c.scalar("reduction", reduction)
    if empty_mean != "nan":
        c.scalar("empty_mean", empty_mean)
    c.scalar("numel", M)


def finish_element(c, name, ldt, x, y, g, reduction, empty_mean, loss, grad, loss2, grad2):
    M = x.numel()
    if reduction == "mean" and M == 0:
        # The zero empty-mean policy (not in PyTorch) and a zero gradient (SEMANTICS difference 5).
        loss = torch.tensor([NAN if empty_mean == "nan" else 0.0], dtype=F64)
    agree(name, "loss", loss, loss2, ldt)
    agree(name, "grad", grad, grad2, ldt)
    c.array("logits", x)
    c.array("targets", y)
    c.array("grad_loss", g)
    c.array("expect_loss", loss)
    c.array("expect_grad", grad)


def autograd_grad(x, loss, g, reduction):
    obj = (g * loss).sum() if reduction == "none" else g[0] * loss.reshape(())
    if not obj.requires_grad:  # M == 0
        return torch.zeros_like(x)
    (gx,) = torch.autograd.grad(obj, x)
    return gx


def bce(name, M=24, C=4, ldt="float32", tdt="float32", reduction="mean", empty_mean="nan",
        weight=None, pos_weight=False, soft=False, scale=2.0, x=None, y=None, weights=None):
    g = generator(name)
    c = Case(name, "bce")
    element_common(c, M, C, ldt, tdt, reduction, empty_mean)
    c.scalar("num_classes", C)
    x = rounded(randn(g, (M,), scale) if x is None else torch.tensor(x, dtype=F64), ldt)
    if y is None:
        y = uniform(g, (M,), 0, 1) if soft else torch.bernoulli(torch.full((M,), 0.5, dtype=F64),
                                                                generator=g)
    y = rounded(torch.as_tensor(y, dtype=F64), tdt)
    R = M // C
    w = wfull = None
    if weight is not None:
        n = M if weight == "per_element" else C
        w = rounded(uniform(g, (n,), 0.25, 2.0) if weights is None else
                    torch.tensor(weights, dtype=F64), "float32")
        wfull = w if weight == "per_element" else w.repeat(R)
        if weight == "per_class":
            c.scalar("weight_layout", "per_class")
    pw = pwfull = None
    if pos_weight:
        pw = rounded(uniform(g, (C,), 0.5, 3.0), "float32")
        pwfull = pw.repeat(R)
    gl = upstream(g, M if reduction == "none" else 1)

    xr = x.clone().requires_grad_(True)
    kw = dict(weight=None if w is None else wfull.view(R, C), pos_weight=pw)
    elems = F.binary_cross_entropy_with_logits(xr.view(R, C), y.view(R, C), reduction="none",
                                               **kw).reshape(M)
    # At infinite logits docs/SEMANTICS.md's formula holds, with a zero coefficient (the weight
    # included) contributing 0: difference 1 (x = -inf, y = 0 and x = +inf, y = 1 give 0; PyTorch:
    # NaN), difference 6 (w = 0 gives 0; PyTorch: NaN), and likewise x = -inf with y > 0 gives +inf
    # where PyTorch's max-shifted form gives NaN (exp(inf - inf)). The gradient is PyTorch's (finite
    # there).
    wv0 = torch.ones(M, dtype=F64) if wfull is None else wfull
    pwv0 = torch.ones(M, dtype=F64) if pwfull is None else pw.repeat(R)
    at_inf = torch.isinf(x)
    patched = bool(at_inf.any())
    if patched:
        # The gradient of the unpatched elements (reducing them by hand), the loss patched.
        grad = autograd_grad(xr, {"none": elems, "sum": elems.sum(), "mean": elems.sum() / M}[
            reduction], gl, reduction)
        sem = times(wv0 * pwv0 * y, softplus(-x)) + times(wv0 * (1 - y), softplus(x))
        elems = torch.where(at_inf, sem, elems.detach())
        loss = {"none": elems, "sum": elems.sum(), "mean": elems.sum() / M}[reduction]
    else:
        loss = elems if reduction == "none" else F.binary_cross_entropy_with_logits(
            xr.view(R, C), y.view(R, C), reduction=reduction, **kw)
        grad = autograd_grad(xr, loss, gl, reduction)

    # SEMANTICS: l = w [pw y softplus(-x) + (1 - y) softplus(x)], each term's coefficient (w pw y
    # and w (1 - y)) silencing it when 0; dl/dx = w [sigmoid(x) (1 + (pw - 1) y) - pw y].
    wv = torch.ones(M, dtype=F64) if wfull is None else wfull
    pwv = torch.ones(M, dtype=F64) if pwfull is None else pwfull
    rows2 = times(wv * pwv * y, softplus(-x)) + times(wv * (1 - y), softplus(x))
    loss2 = reduce_rows(rows2, reduction, M, empty_mean)
    grad2 = wv * (torch.sigmoid(x) * (1 + (pwv - 1) * y) - pwv * y)
    grad2 = grad2 * scale_rows(M, gl, reduction, M)

    finish_element(c, name, ldt, x, y, gl, reduction, empty_mean, loss.detach().reshape(-1), grad,
                   loss2, grad2)
    if w is not None:
        c.array("weight", w)
    if pw is not None:
        c.array("pos_weight", pw)
    add(c)


def sigmoid_focal(name, M=24, ldt="float32", tdt="float32", reduction="none", empty_mean="nan",
                  alpha=0.25, gamma=2.0, soft=False, scale=2.0, x=None, y=None, composed=False):
    g = generator(name)
    c = Case(name, "sigmoid_focal")
    element_common(c, M, None, ldt, tdt, reduction, empty_mean)
    if alpha != 0.25:
        c.scalar("alpha", float(alpha))
    if gamma != 2.0:
        c.scalar("gamma", float(gamma))
    x = rounded(randn(g, (M,), scale) if x is None else torch.tensor(x, dtype=F64), ldt)
    if y is None:
        y = uniform(g, (M,), 0, 1) if soft else torch.bernoulli(torch.full((M,), 0.5, dtype=F64),
                                                                generator=g)
    y = rounded(torch.as_tensor(y, dtype=F64), tdt)
    gl = upstream(g, M if reduction == "none" else 1)

    xr = x.clone().requires_grad_(True)
    if composed:
        # SEMANTICS difference 4: finite for gamma in (0, 1) at saturated logits, where
        # torchvision's (1 - p_t) ** gamma has an infinite derivative at 1 - p_t = 0 (NaN).
        # Composed from SEMANTICS: ce in BCE's form, 1 - p_t = sigmoid(x)(1 - y) + sigmoid(-x) y.
        ce = y * softplus(-xr) + (1 - y) * softplus(xr)
        om = torch.sigmoid(xr) * (1 - y) + torch.sigmoid(-xr) * y
        at = alpha * y + (1 - alpha) * (1 - y) if alpha >= 0 else torch.ones_like(y)
        elems = at * om ** gamma * ce
        loss = {"none": elems, "sum": elems.sum(), "mean": elems.mean()}[reduction]
    else:
        loss = sigmoid_focal_loss(xr, y, alpha=alpha, gamma=gamma, reduction=reduction)
    grad = autograd_grad(xr, loss, gl, reduction)

    # SEMANTICS: l = a_t (1 - p_t)^g ce; the gradient in its general form, or for hard targets
    # the form without a negative power.
    p, q = torch.sigmoid(x), torch.sigmoid(-x)
    ce2 = y * softplus(-x) + (1 - y) * softplus(x)
    om = p * (1 - y) + q * y
    pt = p * y + q * (1 - y)
    at = alpha * y + (1 - alpha) * (1 - y) if alpha >= 0 else torch.ones_like(y)
    loss2 = reduce_rows(at * om ** gamma * ce2, reduction, M, empty_mean)
    hard = (y == 0) | (y == 1)
    p_y = p * (1 - y) - q * y  # p - y without cancelling at saturated logits
    d_hard = at * om ** gamma * (p_y - (2 * y - 1) * gamma * pt * ce2)
    d_soft = at * (om ** gamma * p_y - gamma * om ** (gamma - 1) * (2 * y - 1) * p * q * ce2)
    grad2 = torch.where(hard, d_hard, d_soft) * scale_rows(M, gl, reduction, M)

    finish_element(c, name, ldt, x, y, gl, reduction, empty_mean, loss.detach().reshape(-1), grad,
                   loss2, grad2)
    add(c)


def mse(name, M=24, ldt="float32", tdt="float32", reduction="mean", empty_mean="nan", x=None,
        y=None):
    g = generator(name)
    c = Case(name, "mse")
    element_common(c, M, None, ldt, tdt, reduction, empty_mean)
    x = rounded(randn(g, (M,), 2.0) if x is None else torch.tensor(x, dtype=F64), ldt)
    y = rounded(randn(g, (M,), 1.5) if y is None else torch.tensor(y, dtype=F64), tdt)
    gl = upstream(g, M if reduction == "none" else 1)
    xr = x.clone().requires_grad_(True)
    loss = F.mse_loss(xr, y, reduction=reduction)
    grad = autograd_grad(xr, loss, gl, reduction)
    loss2 = reduce_rows((x - y) ** 2, reduction, M, empty_mean)
    grad2 = 2 * (x - y) * scale_rows(M, gl, reduction, M)
    finish_element(c, name, ldt, x, y, gl, reduction, empty_mean, loss.detach().reshape(-1), grad,
                   loss2, grad2)
    add(c)


# ----------------------------------------------------------------------------------------------
# Row losses


def literal_lse(x):
    """docs/SEMANTICS.md's LSE_n = m_n + log sum_c exp(x_{n,c} - m_n) over dim 1, in IEEE
    arithmetic: NaN for a row holding +inf or NaN, or only -inf."""
    m = x.amax(dim=1, keepdim=True)
    return (m + torch.log(torch.exp(x - m).sum(dim=1, keepdim=True))).squeeze(1)


def log_softmax_literal(x):
    """lp = (x - m) - log sum_c exp(x_c - m) over dim 1."""
    m = x.amax(dim=1, keepdim=True)
    return (x - m) - torch.log(torch.exp(x - m).sum(dim=1, keepdim=True))


def row_inputs(g, N, C, S, ldt, scale, x):
    if x is None:
        x = randn(g, (N, C, S), scale)
    else:
        x = torch.tensor(x, dtype=F64).reshape(N, C, S)
    return rounded(x, ldt)


def padded(t, N, C, S, row_stride, fill):
    out = torch.full((N, row_stride), fill, dtype=F64)
    out[:, : C * S] = t.reshape(N, C * S)
    return out


def index_targets(g, N, S, C, t, ignore_rows, ignore_index):
    t = randint(g, (N, S), C) if t is None else torch.tensor(t, dtype=torch.int64).reshape(N, S)
    t = t.clone()
    for r in ignore_rows:
        t.view(-1)[r] = ignore_index
    return t


def row_common(c, N, C, S, row_stride, ldt, tdt, reduction, empty_mean, ignore_index):
    c.scalar("logits_dtype", ldt)
    c.scalar("targets_dtype", tdt)
    c.scalar("reduction", reduction)
    if empty_mean != "nan":
        c.scalar("empty_mean", empty_mean)
    c.scalar("batch", N)
    c.scalar("num_classes", C)
    if S != 1:
        c.scalar("spatial", S)
    if row_stride != C * S:
        c.scalar("row_stride", row_stride)
    if ignore_index != -100:
        c.scalar("ignore_index", ignore_index)


def cross_entropy(name, N=6, C=10, S=1, row_stride=None, ldt="float32", tdt="int64",
                  reduction="mean", empty_mean="nan", weight=False, ignore_index=-100,
                  ignore_rows=(), label_smoothing=0.0, z_loss=0.0, softcap=0.0, scale=2.0, x=None,
                  t=None, w=None, with_lse=True, prob_normalised=True):
    g = generator(name)
    c = Case(name, "cross_entropy")
    row_stride = C * S if row_stride is None else row_stride
    prob = tdt not in ("int32", "int64")
    row_common(c, N, C, S, row_stride, ldt, tdt, reduction, empty_mean, ignore_index)
    if label_smoothing:
        c.scalar("label_smoothing", float(label_smoothing))
    if z_loss:
        c.scalar("z_loss", float(z_loss))
    if softcap:
        c.scalar("softcap", float(softcap))

    x = row_inputs(g, N, C, S, ldt, scale, x)  # (N, C, S)
    if prob:
        assert not ignore_rows
        if t is None:
            q = randn(g, (N, C, S), 2.0)
            q = torch.softmax(q, dim=1) if prob_normalised else uniform(g, (N, C, S), 0, 1)
        else:
            q = torch.tensor(t, dtype=F64).reshape(N, C, S)
        tgt = rounded(q, tdt)
        valid = torch.ones((N, S), dtype=torch.bool)
    else:
        tgt = index_targets(g, N, S, C, t, ignore_rows, ignore_index)
        valid = tgt != ignore_index
    if weight:
        w = uniform(g, (C,), 0.25, 2.0) if w is None else torch.tensor(w, dtype=F64)
        w = rounded(w, "float32")
    wv = torch.ones(C, dtype=F64) if w is None else w
    rows = N * S
    gl = upstream(g, rows if reduction == "none" else 1)
    tsafe = torch.where(valid, tgt, torch.zeros_like(tgt)) if not prob else None
    if prob:
        denom = rows
    else:
        denom = float(wv[tsafe][valid].sum()) if rows else 0.0

    # The oracle: soft-cap and z-loss (not in PyTorch) composed around PyTorch's cross_entropy.
    xr = x.clone().requires_grad_(True)
    xc = softcap * torch.tanh(xr / softcap) if softcap else xr
    inp = xc if S != 1 else xc[:, :, 0]
    target = tgt if S != 1 else tgt[:, :, 0] if prob else tgt[:, 0]
    kw = dict(weight=w, label_smoothing=label_smoothing)
    if not prob:
        kw["ignore_index"] = ignore_index
    ce_rows = F.cross_entropy(inp, target, reduction="none", **kw).reshape(N, S)
    lse = literal_lse(xc.detach())  # (N, S)
    if z_loss:
        zrows = torch.where(valid, z_loss * torch.logsumexp(xc, dim=1) ** 2,
                            torch.zeros((N, S), dtype=F64))
    else:
        zrows = torch.zeros((N, S), dtype=F64)
    if reduction == "none":
        loss = ce_rows + zrows
        zout = zrows
    elif reduction == "sum":
        loss = F.cross_entropy(inp, target, reduction="sum", **kw) + zrows.sum()
        zout = zrows.sum()
    else:
        loss = F.cross_entropy(inp, target, reduction="mean", **kw) + zrows.sum() / denom
        zout = zrows.sum() / denom
    grad = autograd_grad(xr, loss.reshape(-1), gl, reduction) if rows else torch.zeros_like(x)
    loss = loss.detach().reshape(-1)
    zout = zout.detach().reshape(-1)
    if reduction == "mean" and denom == 0:
        # The zero empty-mean policy (not in PyTorch); under the NaN policy NaN even where PyTorch's
        # smoothing term gives inf / 0 = inf (zero total weight with eps > 0), and a zero gradient
        # (SEMANTICS difference 5).
        loss = torch.tensor([NAN if empty_mean == "nan" else 0.0], dtype=F64)
        zout = loss.clone()
        grad = torch.zeros_like(x)
    # SEMANTICS difference 2: ignored rows get an exactly-zero gradient (PyTorch: NaN where the
    # row's logits are all -inf).
    grad = torch.where(valid.unsqueeze(1), grad, torch.zeros_like(grad))

    # The second way, from docs/SEMANTICS.md's formulas.
    xs = softcap * torch.tanh(x / softcap) if softcap else x
    lse2 = literal_lse(xs).unsqueeze(1)  # (N, 1, S)
    lp = log_softmax_literal(xs)
    p = torch.exp(lp)
    W = wv.view(1, C, 1)
    eps = label_smoothing
    if prob:
        qs = (1 - eps) * tgt + eps / C
        L = -(W * qs * lp).sum(dim=1)
        dL = p * (W * qs).sum(dim=1, keepdim=True) - W * qs
    else:
        onehot = F.one_hot(tsafe, C).permute(0, 2, 1).to(F64) if rows else torch.zeros_like(x)
        wy = wv[tsafe].unsqueeze(1)  # (N, 1, S)
        lpy = lp.gather(1, tsafe.unsqueeze(1))
        nll = -wy * lpy
        smooth = -(times(W.expand_as(lp), lp)).sum(dim=1, keepdim=True)
        L = (times(torch.tensor(1 - eps, dtype=F64), nll) + times(torch.tensor(eps / C, dtype=F64),
                                                                  smooth)).squeeze(1)
        dL = (1 - eps) * wy * (p - onehot) + (eps / C) * (p * wv.sum() - W)
    L = torch.where(valid, L, torch.zeros_like(L))
    lse_rows = lse2.squeeze(1)
    if z_loss:
        Z = torch.where(valid, z_loss * lse_rows ** 2, torch.zeros_like(lse_rows))
        dL = dL + 2 * z_loss * lse2 * p
    else:
        Z = torch.zeros_like(lse_rows)
    if softcap:
        dL = dL * (1 - torch.tanh(x / softcap) ** 2)
    dL = torch.where(valid.unsqueeze(1), dL, torch.zeros_like(dL))
    loss2 = reduce_rows(L + Z, reduction, denom, empty_mean)
    zout2 = reduce_rows(Z, reduction, denom, empty_mean)
    grad2 = dL * scale_rows(rows, gl, reduction, denom).reshape(N, 1, S)
    agree(name, "loss", loss, loss2, ldt)
    agree(name, "lse", lse, lse_rows, ldt)
    if z_loss:
        agree(name, "z_loss", zout, zout2, ldt)
    agree(name, "grad", grad, grad2, ldt)

    c.array("logits", padded(x, N, C, S, row_stride, PAD))
    c.array("targets", tgt, integer=not prob)
    if w is not None:
        c.array("weight", w)
    c.array("grad_loss", gl)
    c.array("expect_loss", loss)
    if with_lse:
        c.array("expect_lse", lse)
    if z_loss:
        c.array("expect_z_loss", zout)
    c.array("expect_grad", padded(grad, N, C, S, row_stride, 0.0))
    add(c)


def softmax_focal(name, N=6, C=10, S=1, row_stride=None, ldt="float32", tdt="int64",
                  reduction="mean", empty_mean="nan", alpha=False, gamma=2.0, ignore_index=-100,
                  ignore_rows=(), scale=2.0, x=None, t=None):
    g = generator(name)
    c = Case(name, "softmax_focal")
    row_stride = C * S if row_stride is None else row_stride
    row_common(c, N, C, S, row_stride, ldt, tdt, reduction, empty_mean, ignore_index)
    if gamma != 2.0:
        c.scalar("gamma", float(gamma))
    x = row_inputs(g, N, C, S, ldt, scale, x)
    tgt = index_targets(g, N, S, C, t, ignore_rows, ignore_index)
    valid = tgt != ignore_index
    a = rounded(uniform(g, (C,), 0.1, 1.0), "float32") if alpha else None
    av = torch.ones(C, dtype=F64) if a is None else a
    rows = N * S
    gl = upstream(g, rows if reduction == "none" else 1)
    tsafe = torch.where(valid, tgt, torch.zeros_like(tgt))
    denom = int(valid.sum())

    # The oracle: composed from SEMANTICS (PyTorch has no softmax focal loss).
    xr = x.clone().requires_grad_(True)
    lp = F.log_softmax(xr, dim=1)
    lpy = lp.gather(1, tsafe.unsqueeze(1)).squeeze(1)  # (N, S)
    m = -torch.expm1(lpy)  # 1 - u
    lrow = -av[tsafe] * m ** gamma * lpy
    lrow = torch.where(valid, lrow, torch.zeros_like(lrow))
    if reduction == "none":
        loss = lrow
    elif reduction == "sum":
        loss = lrow.sum()
    else:
        loss = lrow.sum() / denom
    grad = autograd_grad(xr, loss.reshape(-1), gl, reduction) if rows else torch.zeros_like(x)
    loss = loss.detach().reshape(-1)
    if reduction == "mean" and denom == 0:
        # The zero empty-mean policy and a zero gradient (SEMANTICS difference 5).
        loss = torch.tensor([NAN if empty_mean == "nan" else 0.0], dtype=F64)
        grad = torch.zeros_like(x)
    grad = torch.where(valid.unsqueeze(1), grad, torch.zeros_like(grad))
    lse = literal_lse(x)

    # The second way: docs/SEMANTICS.md's stable gradient, m^g (1 - g u r) ([j = y] - p), r = lp_y /
    # m.
    lse2 = literal_lse(x).unsqueeze(1)
    lp2 = log_softmax_literal(x)
    p = torch.exp(lp2)
    lpy2 = lp2.gather(1, tsafe.unsqueeze(1))
    u = torch.exp(lpy2)
    m2 = -torch.expm1(lpy2)
    r = torch.where(m2 == 0, torch.full_like(m2, -1.0), lpy2 / m2)
    ay = av[tsafe].unsqueeze(1)
    mg = torch.where(m2 == 0, torch.full_like(m2, 1.0 if gamma == 0 else 0.0), m2 ** gamma)
    L = torch.where(valid, (-ay * mg * lpy2).squeeze(1), torch.zeros((N, S), dtype=F64))
    onehot = F.one_hot(tsafe, C).permute(0, 2, 1).to(F64) if rows else torch.zeros_like(x)
    dL = -ay * mg * (1 - gamma * u * r) * (onehot - p)
    dL = torch.where(valid.unsqueeze(1), dL, torch.zeros_like(dL))
    agree(name, "loss", loss, reduce_rows(L, reduction, denom, empty_mean), ldt)
    agree(name, "lse", lse, lse2.squeeze(1), ldt)
    agree(name, "grad", grad, dL * scale_rows(rows, gl, reduction, denom).reshape(N, 1, S), ldt)

    c.array("logits", padded(x, N, C, S, row_stride, PAD))
    c.array("targets", tgt, integer=True)
    if a is not None:
        c.array("weight", a)
    c.array("grad_loss", gl)
    c.array("expect_loss", loss)
    c.array("expect_lse", lse)
    c.array("expect_grad", padded(grad, N, C, S, row_stride, 0.0))
    add(c)


# ----------------------------------------------------------------------------------------------
# The cases

LDTS = ("float32", "float16", "bfloat16", "float64")


def bce_cases():
    for ldt in LDTS:
        for reduction in ("none", "mean", "sum"):
            bce("bce_%s_%s_hard" % (ldt, reduction), ldt=ldt, reduction=reduction)
    bce("bce_float32_mean_soft", soft=True)
    bce("bce_float32_none_weight_per_element", weight="per_element", reduction="none")
    bce("bce_float32_sum_weight_per_element_soft", weight="per_element", soft=True, reduction="sum")
    bce("bce_float32_mean_weight_per_class", M=30, C=5, weight="per_class")
    bce("bce_float32_none_pos_weight_soft", M=30, C=6, pos_weight=True, soft=True, reduction="none")
    bce("bce_float32_mean_weight_per_class_pos_weight", M=40, C=8, weight="per_class",
        pos_weight=True, soft=True)
    bce("bce_float32_sum_weight_per_element_pos_weight", M=18, C=3, weight="per_element",
        pos_weight=True, reduction="sum")
    bce("bce_float16_none_targets_float16_soft_pos_weight", ldt="float16", tdt="float16", soft=True,
        pos_weight=True, reduction="none")
    bce("bce_float16_mean_weight_per_class", ldt="float16", weight="per_class", soft=True)
    bce("bce_bfloat16_sum_targets_bfloat16_soft", ldt="bfloat16", tdt="bfloat16", soft=True,
        reduction="sum")
    bce("bce_bfloat16_none_weight_per_element_pos_weight", ldt="bfloat16", weight="per_element",
        pos_weight=True, reduction="none")
    bce("bce_float64_none_targets_float64_weight_per_class_pos_weight", ldt="float64",
        tdt="float64", weight="per_class", pos_weight=True, soft=True, reduction="none")
    bce("bce_float64_mean_weight_per_element_soft", ldt="float64", weight="per_element", soft=True)
    bce("bce_float32_none_single_class", M=7, C=1, pos_weight=True, weight="per_class",
        reduction="none")
    bce("bce_float32_mean_large", M=320, C=40, soft=True, weight="per_class", pos_weight=True)
    # M = 0
    for reduction, em in (("mean", "nan"), ("mean", "zero"), ("sum", "nan"), ("none", "nan")):
        bce("bce_empty_%s_%s" % (reduction, em), M=0, C=3, reduction=reduction, empty_mean=em,
            pos_weight=reduction == "sum")
    bce("bce_empty_mean_zero_weight_per_class", M=0, C=4, weight="per_class", empty_mean="zero")
    # Large, infinite and NaN logits. Each logit paired with y = 0, 1 and 0.5.
    xs = [1e4, -1e4, INF, -INF, NAN, 0.0]
    xv = [v for v in xs for _ in range(3)]
    yv = [0.0, 1.0, 0.5] * len(xs)
    for ldt in LDTS:
        bce("bce_special_%s_none" % ldt, M=18, C=3, ldt=ldt, x=xv, y=yv, reduction="none")
    bce("bce_special_float32_none_pos_weight", M=18, C=3, x=xv, y=yv, pos_weight=True,
        reduction="none")
    bce("bce_special_float32_none_weight_per_class_targets_float32", M=18, C=3, x=xv, y=yv,
        weight="per_class", pos_weight=True, reduction="none")
    # Reduced over saturated logits: finite sums, and the infinities of the difference 1 that sum
    # to a finite value.
    bce("bce_large_float32_sum", M=8, C=2, x=[1e4, -1e4, 1e4, -1e4, INF, -INF, 3.0, -2.0],
        y=[1, 0, 0, 1, 1, 0, 1, 0], reduction="sum")
    bce("bce_large_bfloat16_mean", M=8, C=4, ldt="bfloat16", tdt="bfloat16",
        x=[1e4, -1e4, 1e4, -1e4, INF, -INF, 3.0, -2.0], y=[1, 0, 0, 1, 1, 0, 0.25, 0.75],
        pos_weight=True)
    bce("bce_inf_float16_mean", M=4, C=2, ldt="float16", x=[INF, 1.0, -1.0, 2.0], y=[0, 1, 0, 1])
    # Difference 6: a zero weight silences an infinite softplus, each way and with soft targets;
    # the weighted elements beside them keep their values, and their sum is finite.
    zx = [-INF, INF, -INF, INF, 1.5, -0.5, INF, -2.0]
    zy = [1.0, 0.0, 0.5, 0.5, 0.0, 1.0, 0.25, 0.0]
    zw = [0.0, 0.0, 0.0, 0.0, 1.5, 0.75, 0.0, 2.0]
    for ldt, reduction in (("float32", "none"), ("bfloat16", "sum"), ("float64", "mean")):
        bce("bce_zero_weight_at_inf_%s_%s" % (ldt, reduction), M=8, C=2, ldt=ldt, x=zx, y=zy,
            weight="per_element", weights=zw, pos_weight=True, reduction=reduction)
    bce("bce_zero_weight_per_class_at_inf_float32_none", M=8, C=4, x=zx, y=zy, weight="per_class",
        weights=[0.0, 0.0, 0.5, 2.0], reduction="none")
    bce("bce_nan_float32_sum", M=4, C=2, x=[NAN, 1.0, -1.0, 2.0], y=[0, 1, 0, 1], reduction="sum")


def sigmoid_focal_cases():
    for ldt in LDTS:
        for reduction in ("none", "mean", "sum"):
            sigmoid_focal("sigmoid_focal_%s_%s_hard" % (ldt, reduction), ldt=ldt,
                          reduction=reduction)
    for gamma in (0.0, 0.5, 2.0):
        for alpha in (0.25, -1.0):
            for soft in (False, True):
                sigmoid_focal("sigmoid_focal_gamma%s_alpha%s_%s" % (gamma, alpha,
                                                                    "soft" if soft else "hard"),
                              gamma=gamma, alpha=alpha, soft=soft, M=20,
                              reduction="sum" if soft else "none")
    sigmoid_focal("sigmoid_focal_gamma1.5_alpha0.75_mean_soft", gamma=1.5, alpha=0.75, soft=True,
                  reduction="mean")
    sigmoid_focal("sigmoid_focal_alpha1.5_none", alpha=1.5, reduction="none")
    sigmoid_focal("sigmoid_focal_float16_targets_float16_soft", ldt="float16", tdt="float16",
                  soft=True, gamma=0.5, reduction="none")
    sigmoid_focal("sigmoid_focal_bfloat16_targets_bfloat16_soft", ldt="bfloat16", tdt="bfloat16",
                  soft=True, reduction="mean")
    sigmoid_focal("sigmoid_focal_float64_targets_float64_soft", ldt="float64", tdt="float64",
                  soft=True, gamma=0.5, alpha=-1.0, reduction="none")
    sigmoid_focal("sigmoid_focal_float32_large", M=300, soft=True, reduction="mean", gamma=1.0)
    # Saturated logits, gamma in (0, 1): torchvision's gradient is NaN there (SEMANTICS
    # difference 4), so these use the oracle composed from SEMANTICS.
    xs = [100.0, -100.0, 100.0, -100.0, 30.0, -30.0, 30.0, -30.0]
    ys = [1.0, 1.0, 0.0, 0.0, 1.0, 1.0, 0.0, 0.0]
    for ldt in LDTS:
        sigmoid_focal("sigmoid_focal_saturated_gamma0.5_%s" % ldt, M=8, ldt=ldt, x=xs, y=ys,
                      gamma=0.5, composed=True)
    sigmoid_focal("sigmoid_focal_saturated_gamma0.5_float32_sum", M=8, x=xs, y=ys, gamma=0.5,
                  reduction="sum", composed=True)
    sigmoid_focal("sigmoid_focal_saturated_gamma0.25_alpha-1_float32", M=8, x=xs, y=ys,
                  gamma=0.25, alpha=-1.0, composed=True)
    sigmoid_focal("sigmoid_focal_saturated_gamma2_float32", M=8, x=xs, y=ys, gamma=2.0,
                  composed=True)
    sigmoid_focal("sigmoid_focal_saturated_gamma0_alpha-1_float32", M=8, x=xs, y=ys, gamma=0.0,
                  alpha=-1.0, composed=True)
    for reduction, em in (("mean", "nan"), ("mean", "zero"), ("sum", "nan"), ("none", "nan")):
        sigmoid_focal("sigmoid_focal_empty_%s_%s" % (reduction, em), M=0, reduction=reduction,
                      empty_mean=em)


def mse_cases():
    for ldt in LDTS:
        for reduction in ("none", "mean", "sum"):
            mse("mse_%s_%s" % (ldt, reduction), ldt=ldt, reduction=reduction)
    mse("mse_float16_targets_float16_none", ldt="float16", tdt="float16", reduction="none")
    mse("mse_bfloat16_targets_bfloat16_mean", ldt="bfloat16", tdt="bfloat16")
    mse("mse_float64_targets_float64_sum", ldt="float64", tdt="float64", reduction="sum")
    mse("mse_float32_large_mean", M=300)
    mse("mse_special_float32_none", M=6, x=[INF, -INF, NAN, 1e4, -1e4, 0.5],
        y=[1.0, 0.0, 0.0, -1e4, 0.25, 0.5], reduction="none")
    mse("mse_special_float32_sum", M=3, x=[1e4, -1e4, 2.0], y=[-1e4, 1e4, 2.0], reduction="sum")
    for reduction, em in (("mean", "nan"), ("mean", "zero"), ("sum", "nan"), ("none", "nan")):
        mse("mse_empty_%s_%s" % (reduction, em), M=0, reduction=reduction, empty_mean=em)


def cross_entropy_cases():
    ce = cross_entropy
    # Dtypes and reductions.
    for ldt in LDTS:
        for reduction in ("none", "mean", "sum"):
            ce("ce_%s_%s" % (ldt, reduction), ldt=ldt, reduction=reduction,
               tdt="int32" if reduction == "sum" else "int64")
    # Weight, ignore_index, smoothing, one at a time and together.
    ce("ce_weight_mean", weight=True)
    ce("ce_weight_none_int32", weight=True, reduction="none", tdt="int32")
    ce("ce_weight_sum", weight=True, reduction="sum")
    ce("ce_ignore_default_mean", N=8, ignore_rows=(1, 5))
    ce("ce_ignore_default_none", N=8, ignore_rows=(0, 7), reduction="none")
    ce("ce_ignore_nondefault_neg1_mean_weight", N=8, ignore_index=-1, ignore_rows=(2, 3),
       weight=True)
    ce("ce_ignore_nondefault_class3_sum", N=10, C=6, ignore_index=3, ignore_rows=(4,),
       reduction="sum", t=[0, 3, 1, 2, 3, 5, 4, 3, 1, 0])
    ce("ce_ignore_nondefault_class3_mean_smoothing", N=10, C=6, ignore_index=3,
       label_smoothing=0.1, t=[0, 3, 1, 2, 3, 5, 4, 3, 1, 0], weight=True)
    ce("ce_ignore_large_int32_none", N=5, C=4, ignore_index=2147483647, tdt="int32",
       ignore_rows=(1,), reduction="none")
    ce("ce_ignore_large_int64_mean", N=5, C=4, ignore_index=-(2 ** 40), ignore_rows=(3,))
    for eps in (0.1, 1.0):
        for reduction in ("none", "mean", "sum"):
            ce("ce_smoothing%s_%s" % (eps, reduction), label_smoothing=eps, reduction=reduction)
        ce("ce_smoothing%s_weight_ignore_mean" % eps, N=8, label_smoothing=eps, weight=True,
           ignore_rows=(2,))
        ce("ce_smoothing%s_weight_ignore_none" % eps, N=8, label_smoothing=eps, weight=True,
           ignore_rows=(6,), reduction="none")
    ce("ce_smoothing0.3_weight_ignore_sum_bfloat16", N=8, ldt="bfloat16", label_smoothing=0.3,
       weight=True, ignore_rows=(0, 1), reduction="sum")
    # z-loss and soft-cap.
    for reduction in ("none", "mean", "sum"):
        ce("ce_zloss_%s" % reduction, z_loss=1e-4, reduction=reduction, ignore_rows=(3,))
    ce("ce_zloss_weight_smoothing_mean", N=8, z_loss=0.01, weight=True, label_smoothing=0.1,
       ignore_rows=(5,))
    ce("ce_zloss_bfloat16_sum", N=8, ldt="bfloat16", z_loss=1e-3, scale=6.0)
    for reduction in ("none", "mean", "sum"):
        ce("ce_softcap_%s" % reduction, softcap=3.0, reduction=reduction, scale=4.0)
    ce("ce_softcap30_float16_mean", ldt="float16", softcap=30.0, scale=20.0)
    ce("ce_softcap_zloss_smoothing_weight_none_float64", ldt="float64", softcap=5.0, z_loss=1e-2,
       label_smoothing=0.2, weight=True, ignore_rows=(1,), reduction="none", scale=5.0)
    ce("ce_softcap_zloss_mean_bfloat16", ldt="bfloat16", softcap=10.0, z_loss=1e-4, scale=10.0)
    # Layouts: padded rows, (N, C, S), both.
    ce("ce_row_stride_mean", N=5, C=7, row_stride=10, weight=True, ignore_rows=(2,))
    ce("ce_row_stride_none_float16", N=5, C=7, row_stride=9, ldt="float16", reduction="none",
       label_smoothing=0.1)
    ce("ce_spatial_mean", N=3, C=5, S=4, ignore_rows=(1, 6), weight=True)
    ce("ce_spatial_none_smoothing_zloss", N=2, C=6, S=5, label_smoothing=0.1, z_loss=1e-3,
       ignore_rows=(3,), reduction="none", tdt="int32")
    ce("ce_spatial_sum_bfloat16_softcap", N=3, C=4, S=3, ldt="bfloat16", softcap=2.0,
       reduction="sum")
    ce("ce_spatial_row_stride_mean", N=3, C=4, S=3, row_stride=16, label_smoothing=0.2,
       weight=True, ignore_rows=(4,))
    ce("ce_spatial1_row_stride_single_row", N=1, C=9, row_stride=12, reduction="none")
    # Sizes: N = 0, C = 1, large C.
    for reduction, em in (("mean", "nan"), ("mean", "zero"), ("sum", "nan"), ("none", "nan")):
        ce("ce_empty_%s_%s" % (reduction, em), N=0, C=5, reduction=reduction, empty_mean=em)
    ce("ce_empty_spatial_mean_zero", N=2, C=5, S=0, empty_mean="zero", label_smoothing=0.1)
    ce("ce_single_class_none", N=4, C=1, reduction="none")
    ce("ce_single_class_mean_smoothing_zloss", N=4, C=1, label_smoothing=0.5, z_loss=0.1,
       weight=True)
    ce("ce_large_class_mean_smoothing", N=2, C=1000, label_smoothing=0.1, scale=3.0,
       ignore_rows=(1,))
    ce("ce_large_class_none_bfloat16_zloss", N=1, C=1024, ldt="bfloat16", z_loss=1e-4,
       reduction="none", scale=3.0, weight=True)
    # All rows ignored, zero total weight.
    for reduction, em in (("mean", "nan"), ("mean", "zero"), ("sum", "nan"), ("none", "nan")):
        ce("ce_all_ignored_%s_%s" % (reduction, em), N=4, C=5, ignore_rows=range(4),
           reduction=reduction, empty_mean=em)
    ce("ce_all_ignored_mean_zero_smoothing_zloss", N=4, C=5, ignore_rows=range(4), z_loss=1e-3,
       label_smoothing=0.1, empty_mean="zero")
    ce("ce_all_ignored_mean_nan_smoothing_zloss", N=4, C=5, ignore_rows=range(4), z_loss=1e-3,
       label_smoothing=0.1)
    zw = [0.0, 1.0, 0.0, 2.0]
    for em in ("nan", "zero"):
        ce("ce_zero_total_weight_mean_%s" % em, N=4, C=4, weight=True, w=zw, t=[0, 2, 0, 2],
           empty_mean=em)
        ce("ce_zero_total_weight_mean_smoothing_%s" % em, N=4, C=4, weight=True, w=zw,
           t=[0, 2, 0, 2], empty_mean=em, label_smoothing=0.1)
    ce("ce_zero_total_weight_sum", N=4, C=4, weight=True, w=zw, t=[0, 2, 0, 2], reduction="sum")
    # Large, infinite and NaN logits, one kind per row.
    rows = [
        [1e4, 0.0, -1e4, 1.0],       # 0: target 0, large finite
        [1e4, 0.0, -1e4, 1.0],       # 1: target 2, loss 2e4
        [0.5, -INF, 1.0, -0.5],      # 2: -inf on a non-target class
        [0.5, -INF, 1.0, -0.5],      # 3: -inf on the target
        [0.5, NAN, 1.0, -0.5],       # 4: NaN
        [-1e4, -1e4, -1e4, -1e4],    # 5: equal large negatives
    ]
    tv = [0, 2, 0, 1, 0, 3]
    flat = [v for r in rows for v in r]
    for ldt in LDTS:
        for eps in (0.0, 0.1):
            ce("ce_special_%s_eps%s_none" % (ldt, eps), N=6, C=4, ldt=ldt, x=flat, t=tv,
               label_smoothing=eps, reduction="none")
    ce("ce_special_float32_eps0.1_weight_none", N=6, C=4, x=flat, t=tv, label_smoothing=0.1,
       weight=True, reduction="none")
    ce("ce_special_float32_zloss_none", N=6, C=4, x=flat, t=tv, z_loss=1e-4, reduction="none")
    ce("ce_special_float32_softcap_eps0.1_none", N=6, C=4, x=flat, t=tv, softcap=20.0,
       label_smoothing=0.1, reduction="none")
    # -inf on a non-target class, reduced: finite with eps = 0, inf with eps > 0.
    ce("ce_masked_float32_eps0_mean", N=3, C=4, x=[0.5, -INF, 1.0, -0.5, 2.0, 1.0, -INF, -INF,
                                                   0.0, 0.0, 0.0, -INF], t=[0, 1, 2])
    ce("ce_masked_bfloat16_eps0.1_sum", N=3, C=4, ldt="bfloat16", label_smoothing=0.1,
       reduction="sum", x=[0.5, -INF, 1.0, -0.5, 2.0, 1.0, -INF, -INF, 0.0, 0.0, 0.0, -INF],
       t=[0, 1, 2])
    # Rows whose LSE SEMANTICS leaves open (+inf in a row; all -inf): loss and gradient only.
    ce("ce_posinf_float32_none", N=2, C=3, x=[INF, 0.0, 1.0, 0.0, 1.0, 2.0], t=[1, 2],
       reduction="none", with_lse=False)
    # SEMANTICS difference 2: an ignored row of -inf logits gets gradient 0 (PyTorch: NaN).
    ce("ce_ignored_neginf_row_float32_mean", N=3, C=3, ignore_rows=(1,),
       x=[0.0, 1.0, 2.0, -INF, -INF, -INF, 1.0, -INF, 0.5], t=[2, 0, 0], with_lse=False)
    ce("ce_ignored_neginf_row_bfloat16_none_smoothing", N=3, C=3, ldt="bfloat16",
       ignore_rows=(0,), label_smoothing=0.1, reduction="none",
       x=[-INF, -INF, -INF, 0.0, 1.0, 2.0, 1.0, -INF, 0.5], t=[0, 1, 0], with_lse=False)
    # Soft-cap undoes a -inf mask and maps +inf to s.
    ce("ce_softcap_inf_float32_none", N=3, C=3, softcap=5.0, reduction="none",
       x=[-INF, -INF, -INF, INF, 1.0, -INF, 1e4, -1e4, 0.0], t=[0, 1, 2])

    # Probability targets.
    ce("ce_prob_float32_mean", tdt="float32")
    ce("ce_prob_float32_none_weight_smoothing", tdt="float32", weight=True, label_smoothing=0.1,
       reduction="none")
    ce("ce_prob_float32_sum_weight", tdt="float32", weight=True, reduction="sum")
    ce("ce_prob_float32_mean_weight_smoothing", tdt="float32", weight=True, label_smoothing=0.2)
    ce("ce_prob_float32_mean_unnormalised", tdt="float32", prob_normalised=False)
    ce("ce_prob_bfloat16_targets_bfloat16_sum", ldt="bfloat16", tdt="bfloat16",
       label_smoothing=0.1)
    ce("ce_prob_float16_targets_float16_mean_weight", ldt="float16", tdt="float16", weight=True,
       reduction="mean")
    ce("ce_prob_float16_targets_float32_none", ldt="float16", tdt="float32", reduction="none")
    ce("ce_prob_float64_targets_float64_none_weight_smoothing", ldt="float64", tdt="float64",
       weight=True, label_smoothing=0.3, reduction="none")
    ce("ce_prob_spatial_mean", N=2, C=5, S=3, tdt="float32", weight=True, label_smoothing=0.1)
    ce("ce_prob_row_stride_none", N=4, C=6, row_stride=8, tdt="float32", reduction="none")
    ce("ce_prob_zloss_softcap_mean", tdt="float32", z_loss=1e-3, softcap=4.0, scale=4.0)
    ce("ce_prob_smoothing1_sum", tdt="float32", label_smoothing=1.0, reduction="sum")
    for em in ("nan", "zero"):
        ce("ce_prob_empty_mean_%s" % em, N=0, C=5, tdt="float32", empty_mean=em)
    ce("ce_prob_large_class_mean", N=1, C=512, tdt="float32", label_smoothing=0.1, scale=3.0)
    ce("ce_prob_special_none", N=3, C=3, tdt="float32", reduction="none",
       x=[0.0, -INF, 1.0, 1e4, -1e4, 0.0, NAN, 0.0, 1.0],
       t=[0.5, 0.1, 0.4, 0.25, 0.25, 0.5, 0.2, 0.3, 0.5])


def softmax_focal_cases():
    sf = softmax_focal
    for ldt in LDTS:
        for reduction in ("none", "mean", "sum"):
            sf("softmax_focal_%s_%s" % (ldt, reduction), ldt=ldt, reduction=reduction,
               tdt="int32" if reduction == "none" else "int64")
    for gamma in (0.0, 0.5, 2.0):
        sf("softmax_focal_gamma%s_none" % gamma, gamma=gamma, reduction="none")
        sf("softmax_focal_gamma%s_alpha_ignore_mean" % gamma, N=8, gamma=gamma, alpha=True,
           ignore_rows=(2, 6))
    sf("softmax_focal_gamma0_mean_as_cross_entropy", gamma=0.0, ignore_rows=(1,))
    sf("softmax_focal_alpha_sum", alpha=True, reduction="sum", gamma=1.5)
    sf("softmax_focal_ignore_nondefault", N=8, C=5, ignore_index=4, alpha=True,
       t=[0, 4, 1, 2, 4, 3, 0, 1], reduction="none")
    sf("softmax_focal_spatial_mean", N=3, C=5, S=4, alpha=True, ignore_rows=(0, 7), gamma=0.5)
    sf("softmax_focal_spatial_none_bfloat16", N=2, C=4, S=3, ldt="bfloat16", reduction="none")
    sf("softmax_focal_row_stride_sum", N=5, C=6, row_stride=8, alpha=True, reduction="sum")
    sf("softmax_focal_spatial_row_stride_mean_float16", N=2, C=3, S=4, row_stride=13,
       ldt="float16", gamma=0.5)
    sf("softmax_focal_confident_rows_float32_none", N=4, C=2, reduction="none", gamma=0.5,
       x=[0.0, -20.0, 0.0, -12.0, 3.0, -9.0, -15.0, 0.0], t=[0, 0, 0, 1])
    sf("softmax_focal_single_class", N=3, C=1, reduction="none")
    sf("softmax_focal_large_class_mean", N=1, C=1000, scale=3.0, alpha=True, gamma=0.5)
    for reduction, em in (("mean", "nan"), ("mean", "zero"), ("sum", "nan"), ("none", "nan")):
        sf("softmax_focal_empty_%s_%s" % (reduction, em), N=0, C=5, reduction=reduction,
           empty_mean=em)
    for em in ("nan", "zero"):
        sf("softmax_focal_all_ignored_mean_%s" % em, N=3, C=5, ignore_rows=range(3),
           empty_mean=em, alpha=True)
    sf("softmax_focal_large_logits_float32_none", N=3, C=3, reduction="none", gamma=0.5,
       x=[1e4, 0.0, -1e4, 1e4, 0.0, -1e4, 0.0, 0.0, 0.0], t=[1, 2, 0])


def main():
    bce_cases()
    sigmoid_focal_cases()
    mse_cases()
    cross_entropy_cases()
    softmax_focal_cases()
    header = ("# Generated by tests/golden/make_golden.py with PyTorch %s and torchvision %s; "
              "do not edit.\n" % (torch.__version__, torchvision.__version__))
    for loss, cases in FILES.items():
        path = os.path.join(OUT_DIR, loss + ".golden")
        with open(path, "w") as f:
            f.write(header)
            for c in cases:
                f.write(c.text())
        print("%s: %d cases, %d bytes" % (path, len(cases), os.path.getsize(path)))


if __name__ == "__main__":
    main()
