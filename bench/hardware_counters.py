#!/usr/bin/env python3
"""The hot kernels' hardware counters on a GPU, beside the kernel report's static counts: each row
of ROWS runs alone in the benchmark binary under Nsight Compute (ncu), which profiles the first
launch of the row's kernel.

    hardware_counters.py --bench PATH/fusedloss_bench --out DIR [--ncu NCU] [--kernel-report FILE]

NCU: $FUSEDLOSS_NCU, else ncu on the PATH, else the CUDA toolkit's (beside nvcc, or
/usr/local/cuda/bin).

Writes DIR/counters.md (the table docs/gpu-report.md shows) and DIR/counters.json. Per row:
- thread instructions executed an element (smsp__thread_inst_executed.sum over the row's
  elements) beside the static count of the kernel's hot loops in docs/kernel-report.md: the
  kernel's fixed work (the lookup table's fill, the block's partial sum, a row's set-up) comes on
  top, about 0.15 an element for the lookup kernel at 2^28;
- DRAM bytes an element (dram__bytes_read.sum + dram__bytes_write.sum) beside what the call must
  move: one read of each input and one write of the gradient;
- shared-memory load wavefronts and bank conflicts an element (the lookup kernel's table: about
  0.19 wavefronts an element predicted in docs/performance.md);
- achieved occupancy (sm__warps_active.avg.pct_of_peak_sustained_active) and the kernel's
  duration under the profiler (gpu__time_duration.sum: the clocks are left alone, but ncu's cache
  control empties the caches first), with the TB/s its DRAM bytes make of it.
The rows share 75 s, no row more than 40: a row over its time ends the run, with the rows before
it in the table, and exits 1. Where ncu is missing or cannot read the counters (some containers
cannot), the table says why and the script exits 0: the counters check the prediction, they do not
gate the run. A row whose report ncu wrote but whose figures cannot be read exits 1.
"""

import argparse
import csv
import io
import json
import os
import re
import shutil
import subprocess
import sys
import time

# bench row, the kernel that carries its work (ncu --kernel-name regex), the start of the kernel
# report's case text for its static count, elements, bytes an element the call must move.
ROWS = [
    ("bce/bfloat16/forward_backward/n268435456", "element_lookup_kernel",
     "BCE fused, 2^28 elements", 1 << 28, 6),
    ("sigmoid_focal/bfloat16/forward_backward/n268435456", "element_lookup_kernel",
     "sigmoid focal fused, γ = 2, 2^28 elements", 1 << 28, 6),
    ("mse/bfloat16/forward_backward/n268435456", "element_loss_kernel",
     "MSE fused, 2^28 elements", 1 << 28, 6),
    ("cross_entropy/bfloat16/forward_backward/8192x128256", "row_(cluster|block|warp)_kernel",
     "CE fused, no options, 8192 × 128256", 8192 * 128256, 4),
    ("cross_entropy_tier_warp/bfloat16/forward_backward/262144x1024", "row_warp_kernel",
     "CE fused, mean, small C (262144 × 1024)", 262144 * 1024, 4),
]
METRICS = ["smsp__thread_inst_executed.sum", "dram__bytes_read.sum", "dram__bytes_write.sum",
           "l1tex__data_pipe_lsu_wavefronts_mem_shared_op_ld.sum",
           "l1tex__data_bank_conflicts_pipe_lsu_mem_shared_op_ld.sum",
           "sm__warps_active.avg.pct_of_peak_sustained_active", "gpu__time_duration.sum"]
# What ncu prints when this machine's counters are out of its reach.
NO_COUNTERS = re.compile(r"ERR_NVGPUCTRPERM|LibraryNotLoaded|Failed to initialize the profiler|"
                         r"not supported on this (device|platform)")
# CTest gives the script 90 s: the rows share 75 of them, so that a slow machine still gets the
# table of the rows that ran, and no row takes more than 40.
TOTAL_S = 75
ROW_TIMEOUT_S = 40


class NoCounters(Exception):
    """ncu runs, but this machine does not let it read the counters."""


def parse_details(text):
    """ncu's CSV details page (--csv --page details --print-units base): {kernel name: {metric:
    value}} for the first launch of each kernel in it."""
    lines = text.splitlines()
    start = next((i for i, line in enumerate(lines) if '"Metric Name"' in line), None)
    if start is None:
        return {}
    kernels = {}
    for rec in csv.DictReader(io.StringIO("\n".join(lines[start:]))):
        name, metric = rec.get("Kernel Name"), rec.get("Metric Name")
        value = rec.get("Metric Value")
        if not name or not metric or value is None:
            continue
        launch = kernels.setdefault(name, {"id": rec.get("ID"), "metrics": {}})
        if launch["id"] != rec.get("ID"):
            continue  # a later launch of the same kernel
        try:
            launch["metrics"][metric] = float(value.replace(",", ""))
        except ValueError:
            pass
    return {name: k["metrics"] for name, k in kernels.items()}


def static_counts(report_text):
    """The kernel report's budgeted cases: [(kernel, case text, instructions an element)]."""
    out = []
    for line in report_text.splitlines():
        m = re.match(r"\| `([^`]+)` \| ([^|]+) \| ([0-9.]+) \| [0-9.]+ \|", line)
        if m:
            out.append((m.group(1), m.group(2).strip(), float(m.group(3))))
    return out


def static_count(counts, case_start):
    return next((n for _, case, n in counts if case.startswith(case_start)), None)


def figures(metrics, elements, must_move, static):
    """A row's figures from its kernel's metrics."""
    need = ("smsp__thread_inst_executed.sum", "dram__bytes_read.sum", "dram__bytes_write.sum",
            "gpu__time_duration.sum")
    missing = [m for m in need if m not in metrics]
    if missing:
        raise ValueError("ncu reported no " + ", ".join(missing))
    dram = metrics["dram__bytes_read.sum"] + metrics["dram__bytes_write.sum"]
    seconds = metrics["gpu__time_duration.sum"] * 1e-9
    shared = metrics.get("l1tex__data_pipe_lsu_wavefronts_mem_shared_op_ld.sum")
    conflicts = metrics.get("l1tex__data_bank_conflicts_pipe_lsu_mem_shared_op_ld.sum")
    return {
        "instructions_per_element": metrics["smsp__thread_inst_executed.sum"] / elements,
        "static_per_element": static,
        "dram_bytes_per_element": dram / elements,
        "must_move_per_element": must_move,
        "shared_wavefronts_per_element": None if shared is None else shared / elements,
        "bank_conflicts_per_element": None if conflicts is None else conflicts / elements,
        "achieved_occupancy_pct": metrics.get("sm__warps_active.avg.pct_of_peak_sustained_active"),
        "duration_us": seconds * 1e6,
        "tb_per_s": dram / seconds / 1e12 if seconds > 0 else None,
    }


def run_row(args, row, index, timeout):
    """Profiles one row within `timeout` seconds: (kernel name, metrics); NoCounters, or
    RuntimeError with ncu's words."""
    started = time.monotonic()
    name, kernel = row[0], row[1]
    report = os.path.join(args.out, f"row{index}")
    cmd = [args.ncu, "--clock-control", "none", "--kernel-name", f"regex:{kernel}",
           "--launch-count", "1", "--metrics", ",".join(METRICS), "--export", report,
           "--force-overwrite", args.bench, f"--benchmark_filter=^{re.escape(name)}(/|$)",
           "--benchmark_min_time=0.01"]
    env = dict(os.environ, FUSEDLOSS_REQUIRE_GPU="1")
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=env)
    said = r.stdout + r.stderr
    if NO_COUNTERS.search(said):
        raise NoCounters(next(line for line in said.splitlines() if NO_COUNTERS.search(line)))
    if r.returncode != 0 or not os.path.exists(report + ".ncu-rep"):
        how = f"exited {r.returncode}" if r.returncode != 0 else "wrote no report"
        raise RuntimeError(f"ncu {how}: " + " / ".join(said.splitlines()[-5:]))
    page = subprocess.run([args.ncu, "--import", report + ".ncu-rep", "--csv", "--page", "details",
                           "--print-units", "base"], capture_output=True, text=True,
                          timeout=max(1.0, timeout - (time.monotonic() - started)))
    kernels = parse_details(page.stdout)
    if not kernels:
        raise RuntimeError(f"no launch of {kernel} in the report: " + page.stderr.strip()[-300:])
    return next(iter(kernels.items()))


def find_ncu():
    """$FUSEDLOSS_NCU, else ncu on the PATH, else the one beside nvcc or in /usr/local/cuda."""
    if os.environ.get("FUSEDLOSS_NCU"):
        return os.environ["FUSEDLOSS_NCU"]
    found = shutil.which("ncu")
    if found:
        return found
    nvcc = shutil.which("nvcc")
    root = os.path.dirname(os.path.dirname(nvcc)) if nvcc else "/usr/local/cuda"
    return os.path.join(root, "bin", "ncu")


def fmt(value, spec, suffix=""):
    return "–" if value is None else f"{value:{spec}}{suffix}"


def table(results, note):
    lines = ["| row | kernel | instr / element (static) | DRAM B / element (must move) | "
             "shared wavefronts / element (conflicts) | achieved occupancy | duration | TB/s |",
             "|---|---|---|---|---|---|---|---|"]
    for r in results:
        f = r.get("figures")
        if f is None:
            lines.append(f"| `{r['row']}` | – | {r['error']} | | | | | |")
            continue
        lines.append(
            f"| `{r['row']}` | `{r['kernel']}` | {fmt(f['instructions_per_element'], '.1f')} "
            f"({fmt(f['static_per_element'], '.1f')}) | {fmt(f['dram_bytes_per_element'], '.2f')} "
            f"({f['must_move_per_element']}) | {fmt(f['shared_wavefronts_per_element'], '.2f')} "
            f"({fmt(f['bank_conflicts_per_element'], '.2f')}) | "
            f"{fmt(f['achieved_occupancy_pct'], '.0f', '%')} | "
            f"{fmt(f['duration_us'], '.0f', ' µs')} | {fmt(f['tb_per_s'], '.2f')} |")
    lines += ["", note]
    return "\n".join(lines) + "\n"


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--bench", required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--ncu", default=find_ncu())
    ap.add_argument("--kernel-report",
                    default=os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(
                        __file__))), "docs", "kernel-report.md"))
    args = ap.parse_args()
    os.makedirs(args.out, exist_ok=True)
    note = ("Hardware counters under ncu (`bench/hardware_counters.py`), the first launch of each "
            "row's kernel; static counts from docs/kernel-report.md (hot loops only).")
    try:
        with open(args.kernel_report, encoding="utf-8") as f:
            counts = static_counts(f.read())
    except OSError:
        counts = []
    results, failed = [], False
    if shutil.which(args.ncu) is None:
        note = f"No counters: no ncu at `{args.ncu}`."
    else:
        deadline = time.monotonic() + TOTAL_S
        for index, row in enumerate(ROWS):
            entry = {"row": row[0]}
            timeout = max(1.0, min(ROW_TIMEOUT_S, deadline - time.monotonic()))
            try:
                kernel, metrics = run_row(args, row, index, timeout)
                entry.update(kernel=kernel, metrics=metrics,
                             figures=figures(metrics, row[3], row[4],
                                             static_count(counts, row[2])))
            except NoCounters as e:
                note = f"No counters: ncu cannot read them on this machine ({e})."
                results = []
                break
            except (RuntimeError, ValueError) as e:
                entry["error"] = str(e).replace("|", "/")
                failed = True
            except subprocess.TimeoutExpired:
                # The rows after it would take as long: the stage's time is not theirs.
                entry["error"] = (f"over its {timeout:.0f} s ({ROW_TIMEOUT_S} s a row, {TOTAL_S} s "
                                  "for all); the rows after it not run")
                results.append(entry)
                failed = True
                break
            results.append(entry)
    with open(os.path.join(args.out, "counters.json"), "w", encoding="utf-8") as f:
        json.dump({"rows": results, "note": note}, f, indent=1)
    with open(os.path.join(args.out, "counters.md"), "w", encoding="utf-8") as f:
        f.write(table(results, note))
    print(table(results, note))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
