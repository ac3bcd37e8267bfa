#!/usr/bin/env python3
"""Fused linear + cross-entropy against PyTorch eager, torch.compile and the floor (the three
GEMMs alone): time and peak memory of one training step of an LLM head's loss on one GPU, written
as docs/linear-cross-entropy.md and .json.

Usage (on a machine with a GPU and a CUDA build of the library):

    PYTHONPATH=python python3 bench/linear_cross_entropy.py --out docs/

Shapes (N tokens x H hidden x V vocabulary, bfloat16): 8192 x 4096 x 128256 and 32768 x 4096 x
128256 (--shapes to choose). Per shape, on the same input tensors:
- fusedloss: ``fusedloss.linear_cross_entropy(x, w, y)`` then ``backward()``;
- eager: ``F.cross_entropy(F.linear(x, w), y)`` then ``backward()`` (the logits and their
  gradient materialised: 2 N V values of bfloat16 and PyTorch's float32 softmax on top);
- compile: ``torch.compile`` of the eager function (--no-compile leaves it out);
- gemms: the three products alone into preallocated outputs, ``x @ wᵀ`` (N x V), ``dz @ w``
  (N x H) and ``dzᵀ @ x`` (V x H), with cuBLAS: the floor, 3 x 2 N H V FLOPs.
Timing as bench/compare.py times (its Timer: the L2 flushed, the stream held, CUDA events, the
median of --repeats); peak memory is torch.cuda.max_memory_allocated over one step less what was
allocated before it (the inputs), the gradients left in .grad included. fusedloss runs with
validate_targets=False (no synchronisation inside the step).
"""

import argparse
import json
import statistics
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from compare import Timer, environment  # noqa: E402

SHAPES = ("8192x4096x128256", "32768x4096x128256")


def parse_args():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=None, help="folder for the .md and .json")
    parser.add_argument("--shapes", default=",".join(SHAPES), help="NxHxV,... to run")
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--no-compile", action="store_true", help="leave torch.compile out")
    return parser.parse_args()


def measure(torch, timer, step, leaves, repeats):
    """(median ms, peak MiB) of step(), the leaves' .grad cleared before each call."""
    def clear():
        for t in leaves:
            t.grad = None

    for _ in range(3):
        clear()
        step()
    clear()
    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats()
    base = torch.cuda.memory_allocated()
    step()
    torch.cuda.synchronize()
    peak = (torch.cuda.max_memory_allocated() - base) / 2**20
    times = []
    for _ in range(repeats):
        clear()
        times.append(timer.time(step)[0])
    clear()
    return statistics.median(times), peak


def run_shape(torch, F, fusedloss, timer, shape, repeats, compile_too):
    n, h, v = shape
    g = torch.Generator(device="cuda").manual_seed(0)
    x = (torch.randn(n, h, device="cuda", generator=g) / h ** 0.5).bfloat16().requires_grad_()
    w = (torch.randn(v, h, device="cuda", generator=g) * 0.02).bfloat16().requires_grad_()
    y = torch.randint(0, v, (n,), device="cuda", generator=g)

    def eager():
        F.cross_entropy(F.linear(x, w), y).backward()

    def fused():
        fusedloss.linear_cross_entropy(x, w, y, validate_targets=False).backward()

    z = torch.empty(n, v, dtype=torch.bfloat16, device="cuda")
    dx = torch.empty(n, h, dtype=torch.bfloat16, device="cuda")
    dw = torch.empty(v, h, dtype=torch.bfloat16, device="cuda")

    def gemms():
        torch.matmul(x.detach(), w.detach().t(), out=z)
        torch.matmul(z, w.detach(), out=dx)
        torch.matmul(z.t(), x.detach(), out=dw)

    steps = {"fusedloss": fused, "eager": eager}
    if compile_too:
        compiled = torch.compile(lambda: F.cross_entropy(F.linear(x, w), y))
        steps["compile"] = lambda: compiled().backward()
    results = {}
    for name, step in steps.items():
        try:
            ms, peak = measure(torch, timer, step, (x, w), repeats)
            results[name] = {"ms": ms, "peak_mib": peak}
        except torch.cuda.OutOfMemoryError as e:  # eager at 32768 rows may not fit
            results[name] = {"error": f"out of memory: {e}".splitlines()[0]}
            torch.cuda.empty_cache()
    ms, _ = measure(torch, timer, gemms, (), repeats)
    flops = 3 * 2 * n * h * v
    results["gemms"] = {"ms": ms, "tflops": flops / (ms * 1e-3) / 1e12}
    return results


def write_markdown(path, env, rows):
    lines = ["# Fused linear + cross-entropy: one training step of an LLM head's loss", "",
             f"{env['gpu']}, CUDA {env['cuda']}, PyTorch {env['torch']}, commit {env['commit']}, "
             f"{env['date']}. bfloat16; times are medians of CUDA-event timings (L2 flushed).", "",
             "| N x H x V | implementation | ms | over the GEMMs | peak MiB |",
             "|---|---|---|---|---|"]
    for shape, results in rows:
        floor = results["gemms"]["ms"]
        lines.append(f"| {shape} | three GEMMs alone (floor, {results['gemms']['tflops']:.0f} "
                     f"TFLOP/s) | {floor:.2f} | 1.00 | |")
        for name in ("fusedloss", "eager", "compile"):
            r = results.get(name)
            if r is None:
                continue
            if "error" in r:
                lines.append(f"| {shape} | {name} | {r['error']} | | |")
            else:
                lines.append(f"| {shape} | {name} | {r['ms']:.2f} | {r['ms'] / floor:.2f} | "
                             f"{r['peak_mib']:.0f} |")
    path.write_text("\n".join(lines) + "\n")


def main():
    args = parse_args()
    import torch
    import torch.nn.functional as F
    if not torch.cuda.is_available():
        sys.exit("linear_cross_entropy.py: needs a GPU (torch.cuda.is_available() is False)")
    import fusedloss
    if not fusedloss.built_with_cuda:
        sys.exit(f"linear_cross_entropy.py: {fusedloss.library_path} has no CUDA path")
    timer = Timer(torch)
    env = environment(torch, fusedloss)
    rows = []
    for text in args.shapes.split(","):
        shape = tuple(int(part) for part in text.split("x"))
        rows.append((text, run_shape(torch, F, fusedloss, timer, shape, args.repeats,
                                     not args.no_compile)))
        torch.cuda.empty_cache()  # the shape's tensors, before the next shape's
        print(text, json.dumps(rows[-1][1]), flush=True)
    if args.out is not None:
        args.out.mkdir(parents=True, exist_ok=True)
        (args.out / "linear-cross-entropy.json").write_text(
            json.dumps({"environment": env, "shapes": dict(rows)}, indent=1))
        write_markdown(args.out / "linear-cross-entropy.md", env, rows)


if __name__ == "__main__":
    main()
