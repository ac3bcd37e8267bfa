#!/usr/bin/env python3
"""fusedloss against PyTorch eager and torch.compile: forward + backward time, achieved bandwidth
and peak memory of each loss case on one GPU, written as docs/compare.md, docs/compare.png and
docs/compare.json.

Usage (on a machine with a GPU and a CUDA build of the library, build/default/libfusedloss.so or
$FUSEDLOSS_LIBRARY):

    PYTHONPATH=python python3 bench/compare.py --out docs/

Options: --cases REGEX runs the cases whose name matches (--list prints them); --repeats N
(default 60, at least 50); --no-compile leaves torch.compile out; --resume keeps the cases of an
earlier compare.json in --out that this run does not measure, so that the cases can be split over
several runs on one GPU (e.g. --cases LLM, then --resume --cases 'ImageNet|focal|BCE').

Cases: LLM cross-entropy bf16 8192 x 32000, 8192 x 128256 and 4096 x 256000, each plain and with
label_smoothing 0.1 and 10% of the targets at ignore_index; ImageNet cross-entropy 1024 x 1000 in
float32 and bfloat16; detection sigmoid focal loss (torchvision's, sum) over 2^20 anchors x 80
classes and multi-label BCE with logits 65536 x 1024, each in float32 and bfloat16.

Method, the same for the three implementations and on the same input tensors:
- what is timed is one training step of the loss: ``loss = f(x, y); loss.backward()``, with x a
  leaf that requires grad (its .grad is cleared, outside the timed region, before each repeat);
- each repeat is timed alone with a pair of CUDA events; before it, outside the region, the L2 is
  flushed by reading a buffer twice the L2's size, and the stream is held by torch.cuda._sleep
  while the host queues the step, so that the events measure the device's work, not the host's
  Python (the host's queueing time is recorded in the JSON as host_ms);
- warm-up calls first (compilation, autotuning, the caching allocator), then the median of
  --repeats repeats;
- fusedloss runs with validate_targets=False (no host synchronisation inside the step);
- peak memory is torch.cuda.max_memory_allocated over one step, less what was allocated before
  it (the inputs): the step's working memory, the gradient it leaves in x.grad included;
- GB/s (decimal) counts the bytes a fused step must move, the same for the three: row losses read
  the logits once and write the gradient once, plus the targets (8 bytes a row) and one float per
  row (the LSE a backward keeps), as bench/row_losses.cpp counts them; element losses read the
  logits and the targets and write the gradient (3 arrays of the logits' dtype), as
  bench/element_losses.cpp does;
- "of copy" divides that by the device-to-device copy bandwidth measured in the same run
  (x.copy_ of 1 GiB, counted as 2 GiB moved).
"""

import argparse
import datetime
import json
import math
import os
import re
import statistics
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
IMPLEMENTATIONS = ("fusedloss", "eager", "compile")
COPY_BYTES = 1 << 30


def parse_args():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=REPO / "docs",
                        help="where compare.md, compare.png and compare.json go")
    parser.add_argument("--cases", default="", help="regex: run the matching cases only")
    parser.add_argument("--repeats", type=int, default=60, help="timed repeats per case (>= 50)")
    parser.add_argument("--warmup", type=int, default=5, help="untimed calls before the repeats")
    parser.add_argument("--no-compile", action="store_true", help="leave torch.compile out")
    parser.add_argument("--list", action="store_true", help="print the case names and exit")
    parser.add_argument("--resume", action="store_true",
                        help="keep cases of an earlier compare.json in --out that this run skips")
    args = parser.parse_args()
    if args.repeats < 50:
        parser.error("--repeats must be at least 50 (the median of many repeats)")
    return args


def fail(message):
    print(f"compare.py: {message}", file=sys.stderr)
    sys.exit(2)


# ------------------------------------------------------------------------------------------------
# Cases


def cases(torch, F, fusedloss):
    """(name, kind, dtype, shape, options, fusedloss fn, PyTorch fn) for every case."""

    def ce(label_smoothing=0.0):
        ours = lambda x, y: fusedloss.cross_entropy(  # noqa: E731
            x, y, label_smoothing=label_smoothing, validate_targets=False)
        theirs = lambda x, y: F.cross_entropy(x, y, label_smoothing=label_smoothing)  # noqa: E731
        return ours, theirs

    def focal(x, y):  # torchvision.ops.sigmoid_focal_loss's expression, reduction 'sum'
        p = torch.sigmoid(x)
        ce_loss = F.binary_cross_entropy_with_logits(x, y, reduction="none")
        p_t = p * y + (1 - p) * (1 - y)
        loss = ce_loss * ((1 - p_t) ** 2)
        alpha_t = 0.25 * y + 0.75 * (1 - y)
        return (alpha_t * loss).sum()

    bf16, f32 = torch.bfloat16, torch.float32
    out = []
    for n, c in ((8192, 32000), (8192, 128256), (4096, 256000)):
        for label, options in (("", {}),
                               (" ls=0.1 10% ignored", {"label_smoothing": 0.1, "ignored": 0.1})):
            ours, theirs = ce(options.get("label_smoothing", 0.0))
            out.append((f"LLM cross-entropy bf16 {n} x {c}{label}", "rows", bf16, (n, c), options,
                        ours, theirs))
    for dtype, label in ((f32, "f32"), (bf16, "bf16")):
        ours, theirs = ce()
        out.append((f"ImageNet cross-entropy {label} 1024 x 1000", "rows", dtype, (1024, 1000), {},
                    ours, theirs))
    for dtype, label in ((f32, "f32"), (bf16, "bf16")):
        out.append((f"detection sigmoid focal {label} 2^20 x 80", "elements", dtype, (1 << 20, 80),
                    {}, lambda x, y: fusedloss.sigmoid_focal_loss(x, y, reduction="sum"), focal))
    for dtype, label in ((f32, "f32"), (bf16, "bf16")):
        out.append((f"multi-label BCE {label} 65536 x 1024", "elements", dtype, (65536, 1024), {},
                    fusedloss.binary_cross_entropy_with_logits,
                    F.binary_cross_entropy_with_logits))
    return out


class _NoLibrary:
    """Stands in for the fusedloss module when only the case names are wanted."""

    def __getattr__(self, name):
        return None


def make_inputs(torch, kind, dtype, shape, options):
    """Logits triangular on [-4, 4] (as bench/), targets: class indices (int64, a fraction set to
    ignore_index), or binary targets in the logits' dtype."""
    g = torch.Generator(device="cuda").manual_seed(1234)
    u = torch.rand(shape, generator=g, device="cuda", dtype=torch.float32)
    u += torch.rand(shape, generator=g, device="cuda", dtype=torch.float32)
    x = ((u - 1) * 4).to(dtype).requires_grad_()
    del u
    n, c = shape
    if kind == "rows":
        y = torch.randint(0, c, (n,), generator=g, device="cuda")
        ignored = options.get("ignored", 0.0)
        if ignored:
            y[torch.rand(n, generator=g, device="cuda") < ignored] = -100
    else:
        y = (torch.rand(shape, generator=g, device="cuda") < 0.1).to(dtype)
    return x, y


def bytes_moved(kind, dtype_bytes, shape):
    n, c = shape
    if kind == "rows":
        return 2 * n * c * dtype_bytes + n * (8 + 4)
    return 3 * n * c * dtype_bytes


# ------------------------------------------------------------------------------------------------
# Timing


class Timer:
    """CUDA-event timing of one region at a time, with the L2 flushed and the stream held first."""

    def __init__(self, torch):
        self.torch = torch
        props = torch.cuda.get_device_properties(0)
        l2 = getattr(props, "L2_cache_size", 0) or 64 << 20
        self.flush_buffer = torch.ones(2 * l2 // 4, dtype=torch.float32, device="cuda")
        self.sink = torch.empty((), dtype=torch.float32, device="cuda")
        self.start = torch.cuda.Event(enable_timing=True)
        self.stop = torch.cuda.Event(enable_timing=True)
        # torch.cuda._sleep spins for a number of clock cycles: calibrate them in milliseconds.
        torch.cuda._sleep(1000)
        self.start.record()
        torch.cuda._sleep(10_000_000)
        self.stop.record()
        self.stop.synchronize()
        self.cycles_per_ms = 10_000_000 / self.start.elapsed_time(self.stop)
        self.hold_ms = 2.0  # lengthened whenever the host needs longer to queue a step

    def time(self, step):
        """(device ms, host ms) of one call of step()."""
        torch = self.torch
        torch.sum(self.flush_buffer, dim=0, out=self.sink)  # reads twice the L2
        torch.cuda._sleep(int(self.hold_ms * self.cycles_per_ms))  # holds the stream while ...
        host = time.perf_counter()
        self.start.record()
        step()  # ... the host queues the step behind the start event
        self.stop.record()
        host = (time.perf_counter() - host) * 1e3
        self.stop.synchronize()
        if host > 0.8 * self.hold_ms:
            self.hold_ms = 2 * host
        return self.start.elapsed_time(self.stop), host


def measure(torch, timer, fn, x, y, repeats, warmup):
    """Median device ms, median host ms, peak MiB and the loss of fn(x, y) + backward."""

    def step():
        loss = fn(x, y)
        loss.backward()
        return loss

    for _ in range(warmup):
        x.grad = None
        step()
    x.grad = None
    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats()
    base = torch.cuda.memory_allocated()
    loss = step()
    torch.cuda.synchronize()
    peak = (torch.cuda.max_memory_allocated() - base) / 2**20
    value = loss.item()
    del loss
    devices, hosts = [], []
    for _ in range(repeats):
        x.grad = None
        device, host = timer.time(step)
        devices.append(device)
        hosts.append(host)
    x.grad = None
    return statistics.median(devices), statistics.median(hosts), peak, value


def copy_bandwidth(torch, timer):
    src = torch.empty(COPY_BYTES, dtype=torch.uint8, device="cuda").fill_(1)
    dst = torch.empty_like(src)
    for _ in range(3):
        dst.copy_(src)
    times = [timer.time(lambda: dst.copy_(src))[0] for _ in range(20)]
    return 2 * COPY_BYTES / (statistics.median(times) * 1e-3) / 1e9


# ------------------------------------------------------------------------------------------------
# Reports


def environment(torch, fusedloss):
    props = torch.cuda.get_device_properties(0)
    try:
        commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=REPO, check=True,
                                capture_output=True, text=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        commit = os.environ.get("FUSEDLOSS_COMMIT", "unknown")
    try:
        driver = subprocess.run(
            ["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"], check=True,
            capture_output=True, text=True).stdout.split()[0]
    except (OSError, subprocess.CalledProcessError, IndexError):
        driver = "unknown"
    return {
        "gpu": props.name,
        "gpu_memory_gib": round(props.total_memory / 2**30, 1),
        "driver": driver,
        "cuda": torch.version.cuda,
        "torch": torch.__version__,
        "triton": _version("triton"),
        "fusedloss_library": str(fusedloss.library_path),
        "commit": commit,
        "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
    }


def _version(module):
    try:
        return __import__(module).__version__
    except Exception:  # noqa: BLE001 -- absent or broken: just say so
        return "absent"


def write_markdown(path, env, copy_gbps, results, repeats):
    lines = [
        "# fusedloss against PyTorch: one training step of the loss",
        "",
        f"GPU: **{env['gpu']}** ({env['gpu_memory_gib']} GiB), driver {env['driver']}, "
        f"CUDA {env['cuda']}; PyTorch {env['torch']}, Triton {env['triton']}; fusedloss commit "
        f"{env['commit']}; {env['date']}. Written by `bench/compare.py`.",
        "",
        f"Device-to-device copy in the same run: **{copy_gbps:.0f} GB/s** (bytes read + written; "
        "\"of copy\" divides by the copy measured in the run that timed the row).",
        "",
        "Each row: `loss = f(x, y); loss.backward()` on the same inputs, timed with CUDA events "
        f"(device time; L2 flushed before each repeat), median of {repeats} repeats after warm-up. "
        "GB/s counts the bytes a fused step must move (row losses: logits read once, gradient "
        "written once, 8-byte targets and a 4-byte LSE per row; element losses: logits, targets "
        "and gradient once each), the same for all three. Peak memory is the step's working "
        "memory above the inputs, the gradient left in x.grad included. fusedloss runs with "
        "validate_targets=False; compile is torch.compile of the same PyTorch expression as "
        "eager. Speedup is eager's time over the row's.",
        "",
        "| Case | Implementation | Time (ms) | GB/s | Of copy | Peak memory (MiB) | Speedup "
        "vs eager | Loss rel. diff vs eager |",
        "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for case in results:
        eager = case["results"].get("eager")
        for impl in IMPLEMENTATIONS:
            r = case["results"].get(impl)
            if r is None:
                continue
            if "error" in r:
                lines.append(f"| {case['name']} | {impl} | failed: {r['error']} | | | | | |")
                continue
            speedup = (f"{eager['ms'] / r['ms']:.2f}x" if eager and "ms" in eager else "")
            diff = (f"{abs(r['loss'] - eager['loss']) / max(abs(eager['loss']), 1e-30):.1e}"
                    if eager and "loss" in eager else "")
            lines.append(
                f"| {case['name']} | {impl} | {r['ms']:.3f} | {r['gbps']:.0f} | "
                f"{r['gbps'] / case['copy_gbps']:.2f} | {r['peak_mib']:.0f} | {speedup} | "
                f"{diff} |")
    path.write_text("\n".join(lines) + "\n")


def write_plot(path, env, copy_gbps, results):
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("compare.py: matplotlib is not installed; wrote the table without the plot",
              file=sys.stderr)
        return False
    names = [case["name"] for case in results]
    impls = [i for i in IMPLEMENTATIONS if any(i in c["results"] for c in results)]
    fig, (top, bottom) = plt.subplots(2, 1, figsize=(max(10, 0.9 * len(names)), 10), sharex=True)
    width = 0.8 / max(len(impls), 1)
    for k, impl in enumerate(impls):
        xs = [i + (k - (len(impls) - 1) / 2) * width for i in range(len(names))]
        frac = [c["results"].get(impl, {}).get("gbps", math.nan) / c["copy_gbps"]
                for c in results]
        mem = [c["results"].get(impl, {}).get("peak_mib", math.nan) for c in results]
        top.bar(xs, frac, width, label=impl)
        bottom.bar(xs, mem, width, label=impl)
    top.axhline(1.0, color="black", linewidth=0.8, linestyle="--")
    top.set_ylabel("fraction of copy bandwidth")
    top.set_title(f"Loss forward + backward on {env['gpu']} (copy: {copy_gbps:.0f} GB/s)")
    top.legend(loc="upper left", bbox_to_anchor=(1.0, 1.0))
    bottom.set_yscale("log")
    bottom.set_ylabel("peak working memory (MiB, log)")
    bottom.set_xticks(range(len(names)))
    bottom.set_xticklabels(names, rotation=35, ha="right", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return True


# ------------------------------------------------------------------------------------------------


def main():
    args = parse_args()
    try:
        import torch
        import torch.nn.functional as F
    except ImportError as e:
        fail(f"needs PyTorch ({e})")
    if args.list:
        for case in cases(torch, F, _NoLibrary()):
            print(case[0])
        return
    if not torch.cuda.is_available():
        fail("no CUDA device is available (torch.cuda.is_available() is False): this benchmark "
             "times the GPU kernels and runs only on a machine with a GPU")
    sys.path.insert(0, str(REPO / "python"))
    try:
        import fusedloss
    except ImportError as e:
        fail(str(e))
    if not fusedloss.built_with_cuda:
        fail(f"{fusedloss.library_path} was built without CUDA: build the default preset "
             "(`cmake --preset default && cmake --build --preset default`) on a machine with the "
             "CUDA Toolkit, or point $FUSEDLOSS_LIBRARY at such a build")

    args.out.mkdir(parents=True, exist_ok=True)
    json_path = args.out / "compare.json"
    env = environment(torch, fusedloss)
    earlier = {}
    if args.resume and json_path.is_file():
        data = json.loads(json_path.read_text())
        if data.get("environment", {}).get("gpu") == env["gpu"]:
            earlier = {c["name"]: c for c in data.get("cases", [])}
        else:
            print("compare.py: --resume: the earlier results are from another GPU; not kept",
                  file=sys.stderr)

    timer = Timer(torch)
    copy_gbps = copy_bandwidth(torch, timer)
    print(f"{env['gpu']}: device-to-device copy {copy_gbps:.0f} GB/s", flush=True)
    pattern = re.compile(args.cases)
    all_cases = cases(torch, F, fusedloss)
    results = []
    for name, kind, dtype, shape, options, ours, theirs in all_cases:
        if not pattern.search(name):
            if name in earlier:
                results.append(earlier[name])
            continue
        x, y = make_inputs(torch, kind, dtype, shape, options)
        moved = bytes_moved(kind, x.element_size(), shape)
        implementations = {"fusedloss": ours, "eager": theirs}
        if not args.no_compile:
            torch._dynamo.reset()  # a fresh cache per case: no recompile limit, no stale graph
            implementations["compile"] = torch.compile(theirs)
        case = {"name": name, "dtype": str(dtype).split(".")[-1], "shape": list(shape),
                "options": options, "bytes": moved, "copy_gbps": copy_gbps, "results": {}}
        for impl, fn in implementations.items():
            try:
                ms, host_ms, peak, loss = measure(torch, timer, fn, x, y, args.repeats,
                                                  args.warmup)
                case["results"][impl] = {"ms": ms, "host_ms": host_ms, "peak_mib": peak,
                                         "loss": loss, "gbps": moved / (ms * 1e-3) / 1e9}
                print(f"{name:48s} {impl:9s} {ms:8.3f} ms {moved / ms / 1e6:7.0f} GB/s "
                      f"{peak:8.0f} MiB", flush=True)
            except Exception as e:  # noqa: BLE001 -- one failed implementation is a table row
                case["results"][impl] = {"error": f"{type(e).__name__}: {e}"[:200]}
                print(f"{name:48s} {impl:9s} failed: {e}", file=sys.stderr, flush=True)
                torch.cuda.empty_cache()
        results.append(case)
        del x, y
        torch.cuda.empty_cache()
        # Written after every case, so that a run cut short keeps what it measured.
        order = {c[0]: i for i, c in enumerate(all_cases)}
        results.sort(key=lambda c: order.get(c["name"], len(order)))
        json_path.write_text(json.dumps({"environment": env, "copy_gbps": copy_gbps,
                                         "repeats": args.repeats, "cases": results}, indent=1))
        write_markdown(args.out / "compare.md", env, copy_gbps, results, args.repeats)
    if not results:
        fail(f"no case matches --cases {args.cases!r}")
    plotted = write_plot(args.out / "compare.png", env, copy_gbps, results)
    print(f"wrote {args.out / 'compare.md'}, {json_path}"
          + (f", {args.out / 'compare.png'}" if plotted else ""))


if __name__ == "__main__":
    main()
