"""fusedloss.distributed.vocab_parallel_cross_entropy really distributed: 1 to 4 processes on
loopback, a gloo process group, each rank holding its slice of the classes (uneven slices, one
class wide included). Every rank's loss and the ranks' gradients put side by side must equal
fusedloss.cross_entropy of the whole rows (itself proved against PyTorch), and PyTorch's
cross_entropy in float64 where PyTorch has the options. Each world size is one spawn whose ranks
run every case, so that a failure names its case and rank.
"""

import itertools

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
import torch.nn.functional as F

import fusedloss
from fusedloss import distributed as fd

# Tolerance of a vocab-parallel result against the whole-row one, both from the CPU reference,
# as (absolute relative to the largest value, relative): they differ by the order of the sums and,
# below float64, by the float32 rounding of the row summaries the collectives carry (2^-24
# relative each, a few float32 ulps in a row's LSE), and then both round once to the dtype. The
# gradient of a 16-bit dtype may round to neighbouring values: one ulp of it.
TOLERANCE = {
    torch.float64: (1e-12, 1e-10),
    torch.float32: (1e-6, 1e-5),
    torch.bfloat16: (2.0**-8, 2.0**-7),
}

VOCAB = 23
ROWS = 12


def _close(got, want, dtype, what):
    of_largest, rtol = TOLERANCE[dtype]
    got, want = got.detach().double(), want.detach().double()
    assert got.shape == want.shape, f"{what}: shape {tuple(got.shape)} != {tuple(want.shape)}"
    assert torch.equal(torch.isnan(got), torch.isnan(want)), f"{what}: NaN in other places"
    finite = torch.isfinite(want)
    assert torch.equal(got[~finite & ~torch.isnan(want)], want[~finite & ~torch.isnan(want)])
    g, w = got[finite], want[finite]
    largest = w.abs().max().item() if w.numel() else 0.0
    bad = (g - w).abs() > of_largest * largest + rtol * w.abs()
    assert not bad.any(), f"{what}: got {g[bad][:4].tolist()}, want {w[bad][:4].tolist()}"


def _slices(world):
    """Uneven starts over VOCAB classes: rank 0 one class wide when there are ranks to spare."""
    cuts = {1: [0], 2: [0, 1], 3: [0, 9, 10], 4: [0, 1, 8, 15]}[world]
    return [(start, (cuts + [VOCAB])[k + 1] - start) for k, start in enumerate(cuts)]


def _cases():
    """Every option on and off with every reduction, in two dtypes, plus a 16-bit and a 3-D case."""
    for weighted, smoothing, z, cap, reduction, dtype in itertools.product(
            (False, True), (0.0, 0.1), (0.0, 1e-3), (0.0, 4.0), ("none", "mean", "sum"),
            (torch.float64, torch.float32)):
        yield dict(weighted=weighted, label_smoothing=smoothing, z_loss=z, softcap=cap,
                   reduction=reduction, dtype=dtype, shape=(ROWS,))
    yield dict(weighted=True, label_smoothing=0.2, z_loss=1e-2, softcap=0.0, reduction="mean",
               dtype=torch.bfloat16, shape=(ROWS,))
    yield dict(weighted=False, label_smoothing=0.1, z_loss=0.0, softcap=0.0, reduction="none",
               dtype=torch.float32, shape=(3, 4))  # Megatron's (s, b, V / p)


def _problem(case, seed):
    """The whole rows every rank draws alike: logits, targets in every rank's slice, two ignored
    rows, class weights."""
    g = torch.Generator().manual_seed(seed)
    n = ROWS
    logits = (torch.randn(n, VOCAB, generator=g, dtype=torch.float64) * 2).to(case["dtype"])
    target = torch.randint(0, VOCAB, (n,), generator=g)
    target[:4] = torch.tensor([0, 9, 15, VOCAB - 1])  # the first class of several slices, the last
    target[5] = target[7] = -100
    weight = torch.rand(VOCAB, generator=g, dtype=torch.float64) + 0.25
    weight[3] = 0.0
    upstream = torch.rand(n, generator=g, dtype=torch.float64) + 0.5
    return logits, target, weight.float() if case["weighted"] else None, upstream


def _run_case(rank, world, case, seed):
    start, width = _slices(world)[rank]
    logits, target, weight, upstream = _problem(case, seed)
    dtype, shape = case["dtype"], case["shape"]
    options = dict(label_smoothing=case["label_smoothing"], z_loss=case["z_loss"],
                   reduction=case["reduction"])
    cap = case["softcap"] or None

    shard = logits[:, start:start + width].clone().reshape(*shape, width).requires_grad_()
    out = fd.vocab_parallel_cross_entropy(
        shard, target.reshape(shape), vocab_start_index=start, vocab_size=VOCAB,
        weight=None if weight is None else weight[start:start + width], softcap=case["softcap"],
        **options)
    grad_output = upstream.to(out.dtype).reshape(shape) if out.dim() else upstream[0].to(out.dtype)
    (grad,) = torch.autograd.grad(out, shard, grad_output)

    whole = logits.clone().requires_grad_()
    want = fusedloss.cross_entropy(whole, target, weight=weight, softcap=cap, **options)
    want_grad_output = grad_output.reshape(-1) if want.dim() else grad_output
    (want_grad,) = torch.autograd.grad(want, whole, want_grad_output)
    what = f"rank {rank}/{world}, {case}"
    _close(out.reshape(want.shape), want, dtype, f"{what}: loss")
    _close(grad.reshape(ROWS, width), want_grad[:, start:start + width], dtype, f"{what}: grad")

    # Every rank holds the same loss, bit for bit.
    mine = out.detach().double().reshape(-1)  # gloo gathers neither 0-dim nor bfloat16 tensors
    gathered = [torch.empty_like(mine) for _ in range(world)]
    dist.all_gather(gathered, mine)
    assert all(torch.equal(t, gathered[0]) for t in gathered), f"{what}: ranks disagree"

    if case["z_loss"] == 0 and cap is None and dtype == torch.float64:
        x64 = logits.double().requires_grad_()
        torch_loss = F.cross_entropy(x64, target, weight=None if weight is None else
                                     weight.double(), **{k: v for k, v in options.items()
                                                         if k != "z_loss"})
        (torch_grad,) = torch.autograd.grad(torch_loss, x64, want_grad_output.double())
        _close(out.reshape(torch_loss.shape), torch_loss, dtype, f"{what}: PyTorch's loss")
        _close(grad.reshape(ROWS, width), torch_grad[:, start:start + width], dtype,
               f"{what}: PyTorch's grad")


def _expect_refusal(kind, words, call):
    with pytest.raises(kind) as raised:
        call()
    assert words in str(raised.value), str(raised.value)


def _run_refusals(rank, world, seed):
    """Bad layouts and options are refused on every rank alike (the check is collective, so no
    rank is left waiting in an all-reduce)."""
    start, width = _slices(world)[rank]
    logits, target, _, _ = _problem(dict(dtype=torch.float32, weighted=False), seed)
    shard = logits[:, start:start + width].contiguous()
    run = fd.vocab_parallel_cross_entropy
    _expect_refusal(ValueError, "do not tile", lambda: run(
        shard, target, vocab_start_index=0, vocab_size=VOCAB))  # every rank claims class 0
    _expect_refusal(ValueError, "do not tile", lambda: run(
        shard, target, vocab_start_index=start, vocab_size=VOCAB + 1))
    _expect_refusal(ValueError, "disagree", lambda: run(
        shard, target, vocab_start_index=start, vocab_size=VOCAB, label_smoothing=0.1 * rank))
    bad = target.clone()
    bad[2] = VOCAB  # out of range: counted once, reported on every rank
    _expect_refusal(ValueError, "1 target value(s)", lambda: run(
        shard, bad, vocab_start_index=start, vocab_size=VOCAB))
    _expect_refusal(TypeError, "vocab_size must be an int", lambda: run(
        shard, target, vocab_start_index=start, vocab_size=float(VOCAB)))
    _expect_refusal(ValueError, "expected target of shape", lambda: run(
        shard, target[:-1], vocab_start_index=start, vocab_size=VOCAB))


def _worker(rank, world, store, seed, refusals):
    dist.init_process_group("gloo", init_method=f"file://{store}", rank=rank, world_size=world)
    try:
        if refusals:
            _run_refusals(rank, world, seed)
        else:
            for k, case in enumerate(_cases()):
                _run_case(rank, world, case, seed + k)
    finally:
        dist.destroy_process_group()


def _spawn(tmp_path, world, refusals=False):
    mp.spawn(_worker, args=(world, str(tmp_path / "store"), 1234 + world, refusals),
             nprocs=world, join=True)


@pytest.mark.parametrize("world", [1, 2, 3, 4])
def test_vocab_parallel_equals_whole_rows(tmp_path, world):
    _spawn(tmp_path, world)


def test_bad_layouts_and_options_are_refused_on_every_rank(tmp_path):
    _spawn(tmp_path, 2, refusals=True)


def test_outside_a_process_group_it_says_so():
    if dist.is_initialized():
        pytest.skip("a process group is already initialised in this process")
    with pytest.raises(RuntimeError, match="process group"):
        fd.vocab_parallel_cross_entropy(torch.randn(2, 3), torch.tensor([0, 1]),
                                        vocab_start_index=0, vocab_size=3)


@pytest.fixture
def one_rank(tmp_path):
    """A gloo group of this process alone."""
    if dist.is_initialized():
        pytest.skip("a process group is already initialised in this process")
    dist.init_process_group("gloo", init_method=f"file://{tmp_path / 'store'}", rank=0,
                            world_size=1)
    yield
    dist.destroy_process_group()


def test_forward_mode_ad_is_refused_clearly(one_rank):
    """Forward-mode AD across ranks would need a collective inside the tangent."""
    import torch.autograd.forward_ad as fwad
    x = torch.randn(4, 5, dtype=torch.float64)
    with fwad.dual_level():
        dual = fwad.make_dual(x, torch.ones_like(x))
        with pytest.raises(RuntimeError, match="no forward-mode derivative"):
            fd.vocab_parallel_cross_entropy(dual, torch.tensor([0, 1, 2, 3]),
                                            vocab_start_index=0, vocab_size=5)


def test_a_second_backward_is_refused(one_rank):
    x = torch.randn(4, 5, dtype=torch.float64, requires_grad=True)
    loss = fd.vocab_parallel_cross_entropy(x, torch.tensor([0, 1, 2, 3]), vocab_start_index=0,
                                           vocab_size=5)
    loss.backward(retain_graph=True)
    with pytest.raises(RuntimeError, match="a second time"):
        loss.backward()


@pytest.mark.skipif(not (torch.cuda.is_available() and fusedloss.built_with_cuda
                         and dist.is_nccl_available()),
                    reason="needs a GPU, the CUDA path and NCCL")
def test_nccl_one_rank_equals_the_fused_call(tmp_path):
    """The NCCL path on one GPU: CUDA tensors, the collectives on the current stream."""
    dist.init_process_group("nccl", init_method=f"file://{tmp_path / 'store'}", rank=0,
                            world_size=1)
    try:
        g = torch.Generator().manual_seed(7)
        logits = (torch.randn(64, 1000, generator=g) * 3).to(torch.bfloat16).cuda()
        target = torch.randint(0, 1000, (64,), generator=g).cuda()
        target[3] = -100
        x = logits.clone().requires_grad_()
        out = fd.vocab_parallel_cross_entropy(x, target, vocab_start_index=0, vocab_size=1000,
                                              label_smoothing=0.1, z_loss=1e-4)
        out.backward()
        y = logits.clone().requires_grad_()
        want = fusedloss.cross_entropy(y, target, label_smoothing=0.1, z_loss=1e-4)
        want.backward()
        _close(out.float().cpu(), want.float().cpu(), torch.bfloat16, "loss")  # both in bf16
        _close(x.grad.cpu(), y.grad.cpu(), torch.bfloat16, "grad")
    finally:
        dist.destroy_process_group()
