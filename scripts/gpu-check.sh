#!/usr/bin/env bash
# scripts/gpu-check.sh: the one command a developer with a GPU runs.
#
# It runs, on the GPU that is present: the whole test suite (the CPU suite, the C ABI test, the GPU
# suite with FUSEDLOSS_REQUIRE_GPU=1 so that a skipped GPU test is a failure, `fusedloss validate` on
# the GPU and its two self-checks), the GPU suite under compute-sanitizer (memcheck, racecheck,
# initcheck, synccheck) on sizes that finish, and the benchmarks; then it writes docs/gpu-report.md:
# the commit, the GPU and driver, each step's result and the benchmark table.
#
# Usage (from anywhere; it works in the repository root):
#   scripts/gpu-check.sh --package DIR
#       On a machine WITHOUT a GPU that has GoogleTest and Google Benchmark: builds the `default`
#       preset (sm_90) and copies the binaries and the non-system shared libraries they need into DIR
#       (DIR/bin, DIR/lib, DIR/BUILD_INFO). DIR is what a GPU machine with neither library carries.
#   scripts/gpu-check.sh --prebuilt DIR [--stage STAGES] [--publish DIR]
#       On the GPU machine: runs the stages with the binaries of DIR.
#   scripts/gpu-check.sh [--stage STAGES]
#       On a GPU machine that has GoogleTest and Google Benchmark: builds the `default` preset here,
#       then runs the stages. Fails at once, recommending --prebuilt, when either library is missing.
#   scripts/gpu-check.sh --merge DIR [DIR...]
#       Anywhere: writes docs/gpu-report.md from the stage results (stage-*.json) found in the DIRs,
#       e.g. the folders that separate GPU calls returned. Refuses results of different builds.
#
# STAGES is a comma-separated list of tests, sanitize, bench, or all (the default). On a lent
# machine run two calls back to back (project decision 13): `GPU_CHECK_BUDGET=420 ... --stage
# tests,bench` (7 minutes) and `GPU_CHECK_BUDGET=240 ... --stage sanitize` (4 minutes), and merge
# their results with --merge. Every step runs under `timeout`, its limit written beside it below and
# cut to what is left of the budget.
#
# Each run writes its stages' results to RESULTS (--results, default build/gpu-check): a
# stage-<name>.json per stage, logs/, bench.json; then docs/gpu-report.md from every stage-*.json in
# RESULTS of the same build. With --publish DIR, the report, the stage results, bench.json and a
# tarball of the logs are copied to DIR as well, after every stage (a run cut short still leaves
# what it did), for a caller that fetches one folder back.
#
# A failed step is recorded and later steps and stages still run; the exit status is 1 when any
# step failed, 2 on a usage error.
#
# Environment: GPU_CHECK_JOBS (build parallelism, default 2); GPU_CHECK_SANITIZER_FILTER (the GPU
# tests run under the sanitizers, a --gtest_filter); GPU_CHECK_SANITIZER_TIMEOUT (seconds per tool,
# default 55, so that the four fit 4 minutes); GPU_CHECK_BUDGET (seconds the whole run may take,
# build included, default 560: each step's limit is cut to what is left, so that the report is
# written inside one call: 420 for `--stage tests,bench` and 240 for `--stage sanitize` keep the
# two calls inside 7 and 4 minutes);
# FUSEDLOSS_COMMIT (the commit to name when neither git nor BUILD_INFO knows it).
#
# (The stage functions and the EXIT trap are called indirectly: "stage_$s", trap.)
# shellcheck disable=SC2317
set -euo pipefail

repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$repo"

# The whole run, build included, ends within this many seconds (one device call allows 600).
budget=${GPU_CHECK_BUDGET:-560}
deadline=$(($(date +%s) + budget))

readonly targets=(fusedloss_tests fusedloss_gpu_tests fusedloss_c_abi_test fusedloss_bench fusedloss_cli)
# The GPU tests each sanitizer runs: a set that reaches every kernel and every tier once at small
# sizes, with FUSEDLOSS_TEST_SIZE_SCALE shrinking what is large in it. The element kernels: every
# loss and call (EveryCall), the sizes around their chunks (SizesThatBreakKernels: 0, 1, 7, 4095,
# 4097, ...), the element-by-element path and in place. The row kernels: every tier forced
# (EveryTierForced: warp, block, cluster, two_pass, spatial, with class weights and label smoothing,
# the forward alone, the backward from a saved LSE, softmax focal, probability targets), in place on
# every layout, a NaN alone in a thread's share; scale_in_place; the memory-space checks.
sanitizer_filter=${GPU_CHECK_SANITIZER_FILTER:-"ElementKernels/*.EveryCall:ElementKernels/bfloat16.SizesThatBreakKernels:ElementKernels/float32.ScalarPathAndInPlace:RowKernels/bfloat16.EveryTierForced:RowKernels/float32.InPlaceGradient:RowKernels/float16.NanLogitAloneInAThreadsShare:ScaleInPlaceGpu.*:MemorySpace.*:ElementKernelsBadInput.*"}
sanitizer_timeout=${GPU_CHECK_SANITIZER_TIMEOUT:-55}

usage() {
  sed -n '2,/^# (The stage functions/p' "${BASH_SOURCE[0]}" | sed -e '$d' -e 's/^# \{0,1\}//'
}

die() {
  echo "gpu-check: $*" >&2
  exit 1
}

# ------------------------------------------------------------------------------------------------
# Arguments

mode=build
dir=""
stage_list=all
results=build/gpu-check
report=docs/gpu-report.md
merge_dirs=()
publish_dir=""
while (($#)); do
  case $1 in
    --package | --prebuilt)
      (($# >= 2)) || { echo "gpu-check: $1 needs a folder" >&2; exit 2; }
      mode=${1#--}
      dir=$2
      shift 2
      ;;
    --stage)
      (($# >= 2)) || { echo "gpu-check: --stage needs a value" >&2; exit 2; }
      stage_list=$2
      shift 2
      ;;
    --results)
      (($# >= 2)) || { echo "gpu-check: --results needs a folder" >&2; exit 2; }
      results=$2
      shift 2
      ;;
    --report)
      (($# >= 2)) || { echo "gpu-check: --report needs a file" >&2; exit 2; }
      report=$2
      shift 2
      ;;
    --publish)
      (($# >= 2)) || { echo "gpu-check: --publish needs a folder" >&2; exit 2; }
      publish_dir=$2
      shift 2
      ;;
    --merge)
      mode=merge
      shift
      while (($#)) && [[ $1 != --* ]]; do
        merge_dirs+=("$1")
        shift
      done
      ((${#merge_dirs[@]})) || { echo "gpu-check: --merge needs at least one folder" >&2; exit 2; }
      ;;
    -h | --help)
      usage
      exit 0
      ;;
    *)
      echo "gpu-check: unknown argument '$1' (see --help)" >&2
      exit 2
      ;;
  esac
done

stages=()
IFS=, read -r -a requested <<<"$stage_list"
for s in "${requested[@]}"; do
  case $s in
    all) stages+=(tests sanitize bench) ;;
    tests | sanitize | bench) stages+=("$s") ;;
    *)
      echo "gpu-check: unknown stage '$s' (tests, sanitize, bench, all)" >&2
      exit 2
      ;;
  esac
done

# ------------------------------------------------------------------------------------------------
# The embedded Python: stage results from the step records, and the report from the stage results.

read -r -d '' PYTHON <<'PY' || true
import datetime, glob, json, os, re, shutil, subprocess, sys

def sh(cmd):
    try:
        r = subprocess.run(cmd, shell=True, capture_output=True, text=True, timeout=60)
        return (r.stdout + r.stderr).strip()
    except Exception as e:  # noqa: BLE001 - any failure is reported as text
        return f"({e})"

def read_info(path):
    info = {}
    if path and os.path.exists(path):
        for line in open(path, encoding="utf-8", errors="replace"):
            if "=" in line:
                k, v = line.rstrip("\n").split("=", 1)
                info[k] = v
    return info

def tail(path, lines=30):
    try:
        with open(path, encoding="utf-8", errors="replace") as f:
            return "".join(f.readlines()[-lines:])
    except OSError:
        return "(no log)"

def gtest_counts(path):
    """passed, failed, skipped, disabled and the failed tests' names, from --gtest_output=json."""
    try:
        data = json.load(open(path, encoding="utf-8"))
    except (OSError, ValueError):
        return None
    c = {"passed": 0, "failed": 0, "skipped": 0, "disabled": 0, "failed_tests": [], "skipped_tests": [],
         "first_failures": []}
    for suite in data.get("testsuites", []):
        for t in suite.get("testsuite", []):
            name = f"{suite.get('name')}.{t.get('name')}"
            if t.get("status") == "NOTRUN":
                c["disabled"] += 1
            elif t.get("failures"):
                c["failed"] += 1
                c["failed_tests"].append(name)
                if len(c["first_failures"]) < 3:
                    message = t["failures"][0].get("failure", "")
                    c["first_failures"].append(f"{name}: {message[:600]}")
            elif t.get("result") == "SKIPPED":
                c["skipped"] += 1
                c["skipped_tests"].append(name)
            else:
                c["passed"] += 1
    return c

TARGET = re.compile(r"^(bce|sigmoid_focal|mse)/(float32|bfloat16)/forward_backward/n268435456$")
# The row-loss targets (issue): the fused bf16 cross-entropy at 8192 x 128256 at >= 90% of the copy
# bandwidth, and >= 1.4x the throughput of its forward_then_backward row (the same computation as a
# forward call plus a backward call from the saved LSE, counted with the same bytes).
ROW_TARGET = "cross_entropy/bfloat16/forward_backward/8192x128256"
ROW_TARGET_SEPARATE = "cross_entropy/bfloat16/forward_then_backward/8192x128256"
ROW_TARGET_FRAC, ROW_TARGET_SPEEDUP = 0.90, 1.4

def bench_rows(path):
    try:
        data = json.load(open(path, encoding="utf-8"))
    except (OSError, ValueError):
        return None
    rows = []
    for b in data.get("benchmarks", []):
        if b.get("run_type", "iteration") != "iteration":
            continue
        name = b.get("run_name", b.get("name")) or ""
        # UseManualTime adds /manual_time, a row's own MinTime /min_time:X (the small row shapes).
        name = re.sub(r"/(min_time:[^/]*|manual_time|real_time)(?=/|$)", "", name)
        rows.append({
            "name": name,
            "label": b.get("label", ""),
            "time_us": b.get("real_time"),
            "time_unit": b.get("time_unit", "us"),
            "gbps": (b["bytes"] / 1e9) if "bytes" in b else None,
            "frac": b.get("frac_of_copy"),
            "speedup": b.get("speedup_vs_separate"),  # fused row loss over its forward_then_backward
            "iterations": b.get("iterations"),
            "loss": b.get("loss"),
            "error": b.get("error_message") if b.get("error_occurred") else None,
        })
    return {"context": data.get("context", {}), "rows": rows}

def environment():
    return {
        "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC"),
        "host": sh("hostname"),
        "kernel": sh("uname -sr"),
        "gpu": sh("nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv")
               if shutil.which("nvidia-smi") else "nvidia-smi not found: no NVIDIA driver on this machine",
        "nvcc": (sh("nvcc --version | tail -n 2") if shutil.which("nvcc") else "nvcc not found"),
        "sanitizer": (sh("compute-sanitizer --version | tail -n 1")
                      if shutil.which("compute-sanitizer") else "compute-sanitizer not on PATH"),
    }

def cmd_stage(args):
    stage, steps_tsv, info_path, results, out = args
    info = read_info(info_path)
    steps = []
    for line in open(steps_tsv, encoding="utf-8"):
        name, kind, status, rc, seconds, log, extra, command = line.rstrip("\n").split("\t")
        step = {"name": name, "kind": kind, "status": status, "rc": int(rc),
                "seconds": float(seconds), "log": log, "command": command}
        log_path = os.path.join(results, log)
        if kind in ("gtest", "gtest-gpu", "sanitizer") and extra != "-":
            counts = gtest_counts(os.path.join(results, extra))
            step["counts"] = counts
            if counts and kind in ("gtest-gpu", "sanitizer") and counts["skipped"] and status == "pass":
                step["status"] = "fail"
                step["detail"] = f"{counts['skipped']} GPU test(s) skipped; none may skip here"
            if counts is None and status == "pass":
                step["status"] = "fail"
                step["detail"] = "no gtest result file"
        if kind == "sanitizer":
            text = tail(log_path, 400)
            m = re.findall(r"ERROR SUMMARY: (\d+) error", text)
            step["sanitizer_errors"] = int(m[-1]) if m else None
            r = re.findall(r"RACECHECK SUMMARY: .*", text)
            if r:
                step["detail"] = r[-1].strip()
        if kind in ("validate", "expect-fail"):
            lines = [l.strip() for l in tail(log_path, 5000).splitlines() if l.startswith("validate (")]
            step["summary"] = lines[-1] if lines else "(no summary line)"
        if kind == "bench" and extra != "-":
            step["bench"] = bench_rows(os.path.join(results, extra))
            if step["bench"] is None and status == "pass":
                step["status"] = "fail"
                step["detail"] = "no benchmark JSON"
            elif step["bench"] is not None:
                errors = [r for r in step["bench"]["rows"] if r["error"]]
                if errors and status == "pass":
                    step["status"] = "fail"
                    step["detail"] = f"{len(errors)} benchmark(s) failed"
        if kind == "note":
            step["detail"] = open(log_path, encoding="utf-8").read().strip() if os.path.exists(log_path) else ""
        if step["status"] != "pass" and kind != "note":
            counts = step.get("counts")
            if kind in ("validate", "expect-fail"):
                failed = [l for l in tail(log_path, 100000).splitlines() if " FAIL" in l]
                step["log_tail"] = "\n".join(failed[:25]) if failed else tail(log_path)
            elif counts and counts["first_failures"] and kind != "sanitizer":
                step["log_tail"] = "\n\n".join(counts["first_failures"])
            else:
                step["log_tail"] = tail(log_path)
        steps.append(step)
    extra_env = {}
    gpu_state = os.path.join(results, "logs", f"{stage}-gpu-state.txt")
    if os.path.exists(gpu_state):
        extra_env["gpu_state"] = open(gpu_state, encoding="utf-8", errors="replace").read().strip()
    result = {
        "stage": stage,
        "status": "pass" if all(s["status"] in ("pass", "info") for s in steps) else "fail",
        "build": info,
        "environment": {**environment(), **extra_env},
        "steps": steps,
    }
    json.dump(result, open(out, "w", encoding="utf-8"), indent=1)
    return 0 if result["status"] == "pass" else 1

ORDER = {"tests": 0, "sanitize": 1, "bench": 2}

def fmt_seconds(s):
    return f"{s:.0f} s" if s >= 10 else f"{s:.1f} s"

def md_block(text):
    return "```\n" + text.rstrip() + "\n```\n"

def render_stage(st, lines):
    env = st["environment"]
    lines.append(f"## Stage `{st['stage']}`: {'PASS' if st['status'] == 'pass' else '**FAIL**'}\n")
    lines.append(f"Ran {env['date']} on `{env['host']}` ({env['kernel']}).\n")
    lines.append(md_block(env["gpu"]))
    lines.append(f"nvcc on that machine: {env['nvcc'].splitlines()[-1] if env['nvcc'] else '?'}; "
                 f"{env['sanitizer']}.\n")
    steps = [s for s in st["steps"] if s["kind"] != "note"]
    notes = [s for s in st["steps"] if s["kind"] == "note" and s.get("detail")]
    if st["stage"] == "sanitize":
        lines.append("| Tool | Result | Sanitizer errors | Tests passed | failed | skipped | Time |")
        lines.append("| --- | --- | ---: | ---: | ---: | ---: | ---: |")
        for s in steps:
            c = s.get("counts") or {}
            errs = s.get("sanitizer_errors")
            lines.append(f"| {s['name']} | {s['status']} | {'?' if errs is None else errs} | "
                         f"{c.get('passed', '?')} | {c.get('failed', '?')} | {c.get('skipped', '?')} | "
                         f"{fmt_seconds(s['seconds'])} |")
    elif st["stage"] == "tests":
        lines.append("| Step | Result | Passed | Failed | Skipped | Time |")
        lines.append("| --- | --- | ---: | ---: | ---: | ---: |")
        for s in steps:
            c = s.get("counts")
            if c:
                cells = f"{c['passed']} | {c['failed']} | {c['skipped']}"
            else:
                cells = "- | - | -"
            lines.append(f"| {s['name']} | {s['status']} | {cells} | {fmt_seconds(s['seconds'])} |")
        summaries = [s for s in steps if s.get("summary")]
        if summaries:
            lines.append("")
            lines.append("`fusedloss validate` summary lines:\n")
            for s in summaries:
                lines.append(f"- {s['name']}: `{s['summary']}`")
    else:
        lines.append("| Step | Result | Time |")
        lines.append("| --- | --- | ---: |")
        for s in steps:
            lines.append(f"| {s['name']} | {s['status']} | {fmt_seconds(s['seconds'])} |")
    lines.append("")
    for s in steps:
        lines.append(f"- `{s['name']}`: `{s['command']}`" + (f" ({s['detail']})" if s.get("detail") else ""))
    lines.append("")
    for n in notes:
        lines.append(f"Note: {n['detail']}\n")
    for s in steps:
        c = s.get("counts") or {}
        if c.get("failed_tests"):
            shown = c["failed_tests"][:40]
            lines.append(f"Failed in {s['name']} ({c['failed']}): " + ", ".join(f"`{t}`" for t in shown)
                         + (" ..." if len(c["failed_tests"]) > len(shown) else "") + "\n")
        if c.get("skipped_tests") and s["kind"] != "gtest":
            lines.append(f"Skipped in {s['name']}: " + ", ".join(f"`{t}`" for t in c["skipped_tests"][:40]) + "\n")
        if s.get("log_tail"):
            lines.append(f"<details><summary>{s['name']}: why (from {s['log']})</summary>\n")
            lines.append(md_block(s["log_tail"]))
            lines.append("</details>\n")
    for s in steps:
        if s.get("bench"):
            render_bench(s["bench"], st["environment"], lines)

def render_bench(bench, env, lines):
    ctx, rows = bench["context"], bench["rows"]
    copy = next((r for r in rows if r["name"] == "copy" and not r["error"]), None)
    if env.get("gpu_state"):
        lines.append("GPU state before the benchmarks:\n")
        lines.append(md_block(env["gpu_state"]))
    lines.append(f"Benchmark context: GPU {ctx.get('gpu', '?')}, {ctx.get('gpu_sms', '?')} SMs, "
                 f"L2 {int(ctx.get('gpu_l2_bytes', 0)) / 1e6:.1f} MB (flush reads "
                 f"{int(ctx.get('l2_flush_bytes', 0)) / 1e6:.1f} MB between repeats), CUDA runtime "
                 f"{ctx.get('cuda_runtime', '?')}, driver API {ctx.get('cuda_driver', '?')}, "
                 f"{ctx.get('date', '')}.\n")
    if copy:
        lines.append(f"Device-to-device copy (the reference): **{copy['gbps']:.0f} GB/s** "
                     f"(bytes read + written, decimal), {copy['label']}.\n")
    targets = [r for r in rows if TARGET.match(r["name"] or "")]
    if targets:
        met = [r for r in targets if not r["error"] and r["frac"] is not None and r["frac"] >= 0.90]
        verdict = "met" if len(met) == len(targets) == 6 else "**NOT met**"
        lines.append(f"Target (issue item 7): fused forward+backward of every element loss at 2^28 "
                     f"elements, bf16 and f32, at >= 90% of the copy bandwidth: {verdict} "
                     f"({len(met)} of {len(targets)} rows; 6 expected).\n")
        lines.append("| Target row | GB/s | Fraction of copy | Met |")
        lines.append("| --- | ---: | ---: | --- |")
        for r in targets:
            ok = (not r["error"]) and r["frac"] is not None and r["frac"] >= 0.90
            lines.append(f"| {r['label'] or r['name']} | {fmt(r['gbps'], '.0f')} | {fmt(r['frac'], '.3f')} | "
                         f"{'yes' if ok else '**no**'} |")
        lines.append("")
    render_row_target(rows, lines)
    lines.append("| Benchmark | Time per call | GB/s | Fraction of copy | Fused vs separate | Repeats |")
    lines.append("| --- | ---: | ---: | ---: | ---: | ---: |")
    for r in rows:
        if r["error"]:
            lines.append(f"| {r['label'] or r['name']} | error: {r['error']} | | | | |")
            continue
        speedup = f"{r['speedup']:.2f}x" if r.get("speedup") is not None else ""
        lines.append(f"| {r['label'] or r['name']} | {fmt(r['time_us'], '.1f')} {r['time_unit']} | "
                     f"{fmt(r['gbps'], '.0f')} | {fmt(r['frac'], '.3f')} | {speedup} | {r['iterations']} |")
    lines.append("")
    lines.append("GB/s counts the bytes that must move (inputs read once, outputs written once) over the "
                 "CUDA-event time of one call, with L2 flushed before each repeat; time is the mean over "
                 "the repeats. Element losses: logits + targets + gradient for forward_backward, "
                 "logits + targets for forward; targets in the logits' dtype; reduction mean. Row losses "
                 "(N x C logits, int64 class-index targets, reduction mean, per-row LSE written): "
                 "logits + gradient + targets + LSE for forward_backward and forward_then_backward "
                 "(the forward call, then the backward call from the saved LSE, timed together and "
                 "counted the same, so that their GB/s ratio is the throughput ratio), logits + "
                 "targets + LSE for forward. \"Fused vs separate\" is a fused row's time per call "
                 "over its forward_then_backward row's, measured in the same run.\n")

def render_row_target(rows, lines):
    """The row-loss target: fused bf16 cross-entropy at 8192 x 128256, fraction of copy and speedup."""
    if not any(re.match(r"^(cross_entropy|softmax_focal)", r["name"] or "") for r in rows):
        return
    fused = next((r for r in rows if r["name"] == ROW_TARGET), None)
    separate = next((r for r in rows if r["name"] == ROW_TARGET_SEPARATE), None)
    frac = fused["frac"] if fused and not fused["error"] else None
    speedup = fused.get("speedup") if fused and not fused["error"] else None
    if (speedup is None and fused and separate and not fused["error"] and not separate["error"]
            and fused["time_us"] and separate["time_us"] and fused["time_unit"] == separate["time_unit"]):
        speedup = separate["time_us"] / fused["time_us"]  # the counter is missing: the rows' ratio
    frac_ok = frac is not None and frac >= ROW_TARGET_FRAC
    speedup_ok = speedup is not None and speedup >= ROW_TARGET_SPEEDUP
    verdict = "met" if frac_ok and speedup_ok else "**NOT met**"
    lines.append(f"Target (issue, row losses): fused forward+backward bf16 cross-entropy at 8192 x 128256 "
                 f"at >= {ROW_TARGET_FRAC:.0%} of the copy bandwidth and >= {ROW_TARGET_SPEEDUP}x the "
                 f"throughput of a forward call plus a backward call: {verdict}.\n")
    lines.append("| Target | Measured | Required | Met |")
    lines.append("| --- | ---: | ---: | --- |")
    if fused is None or fused["error"]:
        why = "row missing" if fused is None else f"error: {fused['error']}"
        lines.append(f"| `{ROW_TARGET}` | {why} | | **no** |")
    else:
        lines.append(f"| {fused['label'] or fused['name']}: fraction of copy | {fmt(frac, '.3f')} "
                     f"({fmt(fused['gbps'], '.0f')} GB/s) | >= {ROW_TARGET_FRAC:.2f} | "
                     f"{'yes' if frac_ok else '**no**'} |")
    sep = "" if separate is None or separate["error"] else f" (separate: {fmt(separate['gbps'], '.0f')} GB/s)"
    lines.append(f"| fused / forward_then_backward throughput | "
                 f"{'?' if speedup is None else format(speedup, '.2f') + 'x'}{sep} | "
                 f">= {ROW_TARGET_SPEEDUP}x | {'yes' if speedup_ok else '**no**'} |")
    lines.append("")

def fmt(v, spec):
    return "?" if v is None else format(v, spec)

def cmd_report(args):
    out, dirs = args[0], args[1:]
    found = {}
    for d in dirs:
        for path in sorted(glob.glob(os.path.join(d, "stage-*.json"))):
            st = json.load(open(path, encoding="utf-8"))
            found[st["stage"]] = st  # a later folder wins
    if not found:
        print(f"gpu-check: no stage-*.json in {' '.join(dirs)}", file=sys.stderr)
        return 1
    stages = sorted(found.values(), key=lambda s: ORDER.get(s["stage"], 9))
    builds = {(s["build"].get("commit"), s["build"].get("fingerprint")) for s in stages}
    if len(builds) > 1:
        print("gpu-check: these stage results come from different builds; run the stages again on one:",
              file=sys.stderr)
        for s in stages:
            print(f"  {s['stage']}: commit {s['build'].get('commit')} fingerprint "
                  f"{s['build'].get('fingerprint')}", file=sys.stderr)
        return 3
    b = stages[0]["build"]
    overall = all(s["status"] == "pass" for s in stages)
    missing = [n for n in ORDER if n not in found]
    lines = ["# fusedloss GPU check report", ""]
    lines.append("Written by `scripts/gpu-check.sh`; do not edit by hand.\n")
    lines.append("| | |")
    lines.append("| --- | --- |")
    commit = b.get("commit", "unknown")
    dirty = b.get("dirty", "unknown")
    state = ("exactly this commit" if dirty == "no" else
             f"**with uncommitted changes** ({b.get('changed_files', '?')} files; working-tree "
             f"fingerprint `{b.get('fingerprint', '?')}`)" if dirty == "yes" else "working tree state unknown")
    lines.append(f"| Commit | `{commit}` ({b.get('describe', '?')}), {state} |")
    lines.append(f"| Result | {'**PASS**' if overall else '**FAIL**'}: "
                 + ", ".join(f"{s['stage']} {s['status']}" for s in stages)
                 + (f"; not run: {', '.join(missing)}" if missing else "") + " |")
    gpus = sorted({s["environment"]["gpu"].splitlines()[-1] for s in stages})
    lines.append(f"| GPU, driver, memory | {'; '.join(gpus)} |")
    lines.append(f"| Build | {b.get('mode', '?')}: preset `{b.get('preset', '?')}` ({b.get('build_type', '?')}, "
                 f"CUDA architectures {b.get('cuda_architectures', '?')}), {b.get('nvcc', '?')}, "
                 f"{b.get('cxx', '?')}, on {b.get('built_on', '?')} at {b.get('built_at', '?')} |")
    lines.append(f"| Report written | {datetime.datetime.now(datetime.timezone.utc).strftime('%Y-%m-%d %H:%M:%S UTC')} |")
    lines.append("")
    for st in stages:
        render_stage(st, lines)
    os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)
    with open(out, "w", encoding="utf-8") as f:
        f.write("\n".join(lines).rstrip() + "\n")
    print(f"gpu-check: wrote {out}: {'PASS' if overall else 'FAIL'} "
          f"({', '.join(s['stage'] + ' ' + s['status'] for s in stages)})")
    return 0 if overall else 1

def cmd_prune(args):
    """Moves the stage results of another build out of RESULTS (to RESULTS/stale)."""
    results, info_path = args
    info = read_info(info_path)
    for path in glob.glob(os.path.join(results, "stage-*.json")):
        try:
            b = json.load(open(path, encoding="utf-8"))["build"]
        except (OSError, ValueError, KeyError):
            b = {}
        if (b.get("commit"), b.get("fingerprint")) != (info.get("commit"), info.get("fingerprint")):
            os.makedirs(os.path.join(results, "stale"), exist_ok=True)
            shutil.move(path, os.path.join(results, "stale", os.path.basename(path)))
            print(f"gpu-check: {os.path.basename(path)} is from another build: moved to stale/")
    return 0

if __name__ == "__main__":
    command, rest = sys.argv[1], sys.argv[2:]
    if command == "prune":
        sys.exit(cmd_prune(rest))
    if command == "stage":
        sys.exit(cmd_stage(rest))
    elif command == "report":
        sys.exit(cmd_report(rest))
PY

py() {
  python3 -c "$PYTHON" "$@"
}

# ------------------------------------------------------------------------------------------------
# Build information: which source the binaries come from.

# Writes key=value lines about the source tree and the build in BUILD_DIR to FILE.
write_build_info() {
  local file=$1 build_dir=$2 how=$3 exclude=${4:-}
  local commit=unknown describe=unknown dirty=unknown changed='?' fingerprint=unknown
  if git -C "$repo" rev-parse HEAD >/dev/null 2>&1; then
    commit=$(git -C "$repo" rev-parse HEAD)
    describe=$(git -C "$repo" describe --always --dirty 2>/dev/null || echo "$commit")
    local pathspec=(. ':(exclude)docs/gpu-report.md')
    [[ -n $exclude ]] && pathspec+=(":(exclude)$exclude")
    local status
    status=$(git -C "$repo" status --porcelain --untracked-files=all -- "${pathspec[@]}")
    if [[ -z $status ]]; then dirty=no; changed=0; else dirty=yes; changed=$(wc -l <<<"$status"); fi
    # The uncommitted state: the diff against HEAD and the untracked files' contents.
    fingerprint=$({
      git -C "$repo" diff HEAD --binary -- "${pathspec[@]}"
      git -C "$repo" ls-files --others --exclude-standard -z -- "${pathspec[@]}" |
        (cd "$repo" && xargs -0 -r sha256sum)
    } | sha256sum | cut -c1-16)
  elif [[ -n ${FUSEDLOSS_COMMIT:-} ]]; then
    commit=$FUSEDLOSS_COMMIT
    describe="from FUSEDLOSS_COMMIT"
  fi
  local cache=$build_dir/CMakeCache.txt
  {
    echo "commit=$commit"
    echo "describe=$describe"
    echo "dirty=$dirty"
    echo "changed_files=$changed"
    echo "fingerprint=$fingerprint"
    echo "mode=$how"
    echo "preset=default"
    echo "build_type=$(sed -n 's/^CMAKE_BUILD_TYPE:[A-Z]*=//p' "$cache")"
    echo "cuda_architectures=$(sed -n 's/^CMAKE_CUDA_ARCHITECTURES:[A-Z]*=//p' "$cache")"
    echo "nvcc=$(nvcc --version | sed -n 's/^Cuda compilation tools, //p')"
    echo "cxx=$("$(sed -n 's/^CMAKE_CXX_COMPILER:[A-Z]*=//p' "$cache")" --version | head -n 1)"
    # shellcheck source=/dev/null
    echo "built_on=$(hostname) ($( (. /etc/os-release && echo "$PRETTY_NAME") 2>/dev/null || uname -sr))"
    echo "built_at=$(date -u '+%Y-%m-%d %H:%M:%S UTC')"
    echo "source_dir=$repo"
  } >"$file"
}

# Configures and builds the default preset's targets that the checks run.
build_default_preset() {
  local jobs=${GPU_CHECK_JOBS:-2}
  local log=build/gpu-check-configure.log
  mkdir -p build
  echo "gpu-check: configuring the default preset (build/default)"
  cmake --preset default -DFUSEDLOSS_BUILD_TESTS=ON -DFUSEDLOSS_BUILD_TOOLS=ON \
    -DFUSEDLOSS_BUILD_BENCH=ON >"$log" 2>&1 || {
    tail -n 30 "$log" >&2
    die "configuring failed (log: $log)"
  }
  echo "gpu-check: building ${targets[*]} with $jobs jobs"
  cmake --build --preset default --parallel "$jobs" --target "${targets[@]}" fusedloss_shared
}

# Where each target's binary is in a build folder.
find_binary() {
  local build_dir=$1 name=$2
  [[ $name == fusedloss_cli ]] && name=fusedloss
  find "$build_dir" -maxdepth 3 -type f -name "$name" -perm -u+x -not -path '*/CMakeFiles/*' | head -n 1
}

# Is a CMake package (or, for GTest, its headers and library) installed where CMake looks?
have_package() {
  local name=$1 p extra=()
  IFS=: read -r -a extra <<<"${CMAKE_PREFIX_PATH:-}"
  for p in "${extra[@]}" /usr/lib /usr/lib64 /usr/share /usr/local/lib /usr/local/lib64 /usr/local/share; do
    [[ -n $p && -d $p ]] || continue
    if find "$p" -maxdepth 4 \( -name "${name}Config.cmake" -o -name "${name,,}-config.cmake" \) \
      -print -quit 2>/dev/null | grep -q .; then
      return 0
    fi
  done
  [[ $name == GTest && -f /usr/include/gtest/gtest.h ]] &&
    compgen -G '/usr/lib/*/libgtest.*' >/dev/null
}

# ------------------------------------------------------------------------------------------------
# --package DIR

package() {
  local out=$1
  [[ -n $out && $out != / && $(cd "$out" 2>/dev/null && pwd || echo "$out") != "$repo" ]] ||
    die "refusing to package into '$out'"
  if [[ -d $out && -n $(ls -A "$out") && ! -f $out/BUILD_INFO ]]; then
    die "$out exists and is not a package folder (no BUILD_INFO): refusing to replace it"
  fi
  for tool in cmake ninja nvcc ldd; do
    command -v "$tool" >/dev/null || die "$tool not found"
  done
  have_package GTest || die "GoogleTest not found (apt-get install libgtest-dev)"
  have_package benchmark || die "Google Benchmark not found (apt-get install libbenchmark-dev)"
  build_default_preset
  local build_dir=$repo/build/default
  rm -rf "$out"
  mkdir -p "$out/bin" "$out/lib"
  local t bin
  for t in "${targets[@]}"; do
    bin=$(find_binary "$build_dir" "$t")
    [[ -n $bin ]] || die "no binary for $t in $build_dir"
    cp -L "$bin" "$out/bin/"
  done
  # The shared library the Python binding loads (ctypes), beside the binaries' libraries.
  cp -L "$build_dir/libfusedloss.so" "$out/lib/"
  # The shared libraries that are not part of the system every Linux has (glibc, libstdc++,
  # libgcc_s), nor the driver's (libcuda), nor the CUDA toolkit's (NCCL and cuBLASLt, 200 and 540
  # MB: the GPU machine's toolkit has them, see use_prebuilt): with static cudart and GoogleTest
  # that is Google Benchmark alone.
  local line soname path
  while read -r line; do
    soname=${line%% => *}
    path=${line#* => }
    path=${path%% (*}
    case $soname in
      linux-vdso* | libc.so* | libm.so* | libstdc++.so* | ld-linux* | libgcc_s.so* | libcuda.so* | \
        libpthread.so* | libdl.so* | librt.so* | libnccl.so* | libcublas*.so*) continue ;;
    esac
    [[ $path == /* ]] || die "cannot resolve $soname ($line)"
    cp -L "$path" "$out/lib/$soname"
  done < <(ldd "$out"/bin/* | grep ' => ' | sed 's/^[[:space:]]*//' | sort -u)
  # The binaries keep their debug information (file:line in the sanitizers' host backtraces) unless
  # the folder would pass 48 MiB (small enough to travel beside a working tree); then they keep
  # only their symbols.
  if (($(du -sm "$out" | cut -f1) > 48)) && command -v objcopy >/dev/null; then
    echo "gpu-check: stripping debug information to keep $out under 48 MiB"
    for bin in "$out"/bin/*; do objcopy --strip-debug "$bin"; done
  fi
  local missing
  missing=$(LD_LIBRARY_PATH=$out/lib:$(toolkit_libraries) ldd "$out"/bin/* 2>&1 | grep -i 'not found' || true)
  [[ -z $missing ]] || die "libraries not found with LD_LIBRARY_PATH=$out/lib: $missing"
  write_build_info "$out/BUILD_INFO" "$build_dir" "prebuilt (--package)" "${out#"$repo"/}"
  local glibc
  glibc=$(objdump -T "$out"/bin/* "$out"/lib/* 2>/dev/null | grep -o 'GLIBC_[0-9.]*' | sort -V -u | tail -n 1 || true)
  echo "glibc_needed=${glibc:-unknown}" >>"$out/BUILD_INFO"
  echo "gpu-check: packaged into $out ($(du -sh "$out" | cut -f1)); needs ${glibc:-?} or newer:"
  (cd "$out" && ls -l bin lib)
  cat "$out/BUILD_INFO"
}

# ------------------------------------------------------------------------------------------------
# Running the stages

declare -A bin
shared_library=""  # libfusedloss.so, for the Python binding's tests
steps_file=""
any_failed=0

# run_step NAME KIND TIMEOUT EXTRA -- COMMAND...: runs COMMAND from the repository root under
# `timeout`, its output in RESULTS/logs/NAME.log, and records the step. KIND: gtest, gtest-gpu,
# sanitizer, exit, validate, expect-fail (passes when the command exits 1), bench. EXTRA is the
# result file (relative to RESULTS) that the report reads, or -.
run_step() {
  local name=$1 kind=$2 limit=$3 result_file=$4
  shift 5
  local log=logs/$name.log start end rc status
  # Never past the run's deadline: the report must still be written inside one call.
  local left=$((deadline - $(date +%s) - 20))
  if ((left < limit)); then limit=$left; fi
  start=$(date +%s.%N)
  if ((limit < 5)); then
    echo "not run: the run's time budget (GPU_CHECK_BUDGET=${budget} s) was spent" >"$results/$log"
    rc=124
  else
    set +e
    timeout -k 10 "$limit" "$@" >"$results/$log" 2>&1
    rc=$?
    set -e
  fi
  end=$(date +%s.%N)
  if ((limit < 5)); then
    status=not-run
  elif ((rc == 124 || rc == 137)); then
    status=timeout
    echo "(stopped by gpu-check after ${limit} s)" >>"$results/$log"
  elif [[ $kind == expect-fail ]]; then
    if ((rc == 1)); then status=pass; else status=fail; fi
  elif ((rc == 0)); then
    status=pass
  else
    status=fail
  fi
  local seconds
  seconds=$(awk -v a="$start" -v b="$end" 'BEGIN { printf "%.2f", b - a }')
  local shown="$*"
  shown=${shown//$repo\//}
  printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$name" "$kind" "$status" "$rc" "$seconds" "$log" \
    "$result_file" "${shown//$'\t'/ }" >>"$steps_file"
  printf 'gpu-check: %-28s %-7s (exit %s, %s s)\n' "$name" "$status" "$rc" "$seconds"
  if [[ $status != pass ]]; then
    tail -n 15 "$results/$log" | sed 's/^/    | /'
  fi
}

# A line of context that the report prints with the stage.
note() {
  local name=$1 text=$2
  printf '%s\n' "$text" >"$results/logs/$name.log"
  printf '%s\tnote\tinfo\t0\t0\tlogs/%s.log\t-\t-\n' "$name" "$name" >>"$steps_file"
  echo "gpu-check: note: $text"
}

begin_stage() {
  local stage=$1
  steps_file=$results/steps-$stage.tsv
  : >"$steps_file"
  rm -f "$results/stage-$stage.json"
  echo "gpu-check: ---- stage $stage ----"
}

end_stage() {
  local stage=$1
  py stage "$stage" "$steps_file" "$build_info" "$results" "$results/stage-$stage.json" || any_failed=1
}

# Time budget: about 5 minutes on an H100 (the GPU suite's CPU reference at 2^26 elements and the
# three `fusedloss validate` sweeps dominate). Limits below are per step.
stage_tests() {
  begin_stage tests
  local b=$bin_dir
  run_step fusedloss_tests gtest 240 logs/fusedloss_tests.json -- \
    "${bin[fusedloss_tests]}" --gtest_output="json:$results/logs/fusedloss_tests.json"
  run_step fusedloss_c_abi_test exit 60 - -- "${bin[fusedloss_c_abi_test]}"
  # No GPU test may skip here, except those that need a second GPU on a machine with one.
  local only_one_gpu='*'
  if (($(nvidia-smi -L 2>/dev/null | grep -c '^GPU') < 2)); then only_one_gpu='-MemorySpaceMultiGpu.*'; fi
  run_step fusedloss_gpu_tests gtest-gpu 300 logs/fusedloss_gpu_tests.json -- \
    env FUSEDLOSS_REQUIRE_GPU=1 "${bin[fusedloss_gpu_tests]}" --gtest_filter="$only_one_gpu" \
    --gtest_output="json:$results/logs/fusedloss_gpu_tests.json"
  # The GPU checks must run: --device cuda fails when no device is usable.
  run_step validate validate 180 - -- "${bin[fusedloss_cli]}" validate --device cuda --golden tests/golden
  # `validate` must catch a wrong backend and an impossible tolerance (exit 1), as in CTest: with the
  # default device (auto), so that a missing GPU cannot make them pass.
  run_step validate_catches_wrong_backend expect-fail 180 - -- \
    "${bin[fusedloss_cli]}" validate --golden tests/golden --perturb 1e-3
  run_step validate_catches_tight_tolerance expect-fail 180 - -- \
    "${bin[fusedloss_cli]}" validate --golden tests/golden --tolerance-scale 1e-6
  # The Python binding against PyTorch's CUDA results (every test also runs on the CPU path).
  run_step python_binding exit 300 - -- env FUSEDLOSS_REQUIRE_GPU=1 PYTHONPATH=python \
    FUSEDLOSS_LIBRARY="$shared_library" python3 -m pytest tests/python -q -p no:cacheprovider
  note tests-not-run "Not run here: CTest's find_package_consumer (an install/packaging test with no GPU code; CI runs it). Binaries from ${b}."
  end_stage tests
}

# Time budget: about 9 minutes at most (4 tools x GPU_CHECK_SANITIZER_TIMEOUT = 130 s, plus start).
stage_sanitize() {
  begin_stage sanitize
  local sanitizer
  sanitizer=$(command -v compute-sanitizer || true)
  for candidate in /usr/local/cuda/bin/compute-sanitizer /usr/local/cuda/compute-sanitizer/compute-sanitizer; do
    [[ -z $sanitizer && -x $candidate ]] && sanitizer=$candidate
  done
  local tool
  for tool in memcheck racecheck initcheck synccheck; do
    if [[ -z $sanitizer ]]; then
      run_step "$tool" sanitizer 10 - -- sh -c 'echo "compute-sanitizer not found"; exit 127'
      continue
    fi
    local options=(--tool "$tool" --error-exitcode 1 --print-limit 50)
    [[ $tool == memcheck ]] && options+=(--leak-check full)
    run_step "$tool" sanitizer "$sanitizer_timeout" "logs/$tool.json" -- \
      env FUSEDLOSS_REQUIRE_GPU=1 FUSEDLOSS_TEST_SIZE_SCALE=0.05 \
      "$sanitizer" "${options[@]}" "${bin[fusedloss_gpu_tests]}" \
      --gtest_filter="$sanitizer_filter" --gtest_output="json:$results/logs/$tool.json"
  done
  note sanitize-scope "Each tool ran fusedloss_gpu_tests --gtest_filter='$sanitizer_filter' with --error-exitcode 1 (memcheck with --leak-check full). initcheck cannot see an output the kernels fail to write: the tests poison outputs with cudaMemset, which counts as initialisation; the tests' own poison checks cover that, and initcheck covers reads of memory nothing wrote (inputs, workspace)."
  end_stage sanitize
}

# Time budget: an estimate of 5 to 6 minutes, not yet measured (101 rows, most of at least 0.5 s of
# event time; the largest rows spend most of theirs generating and uploading inputs). Run it as its
# own device call when the tests stage shares one.
stage_bench() {
  begin_stage bench
  if command -v nvidia-smi >/dev/null; then
    {
      nvidia-smi --query-gpu=clocks.sm,clocks.max.sm,clocks.mem,temperature.gpu,power.draw,utilization.gpu --format=csv 2>&1
      echo "compute processes already on the GPU: $(nvidia-smi --query-compute-apps=pid,process_name,used_memory --format=csv,noheader 2>&1 | tr '\n' ';' || true)"
    } >"$results/logs/bench-gpu-state.txt" || true
  fi
  rm -f "$results/bench.json"
  run_step fusedloss_bench bench 480 bench.json -- \
    env FUSEDLOSS_REQUIRE_GPU=1 "${bin[fusedloss_bench]}" --benchmark_format=console \
    --benchmark_counters_tabular=true --benchmark_out="$results/bench.json" --benchmark_out_format=json
  end_stage bench
}

# The CUDA toolkit's library folders (NCCL's and cuBLASLt's, which packages leave out), from
# nvcc's place.
toolkit_libraries() {
  local root
  root=$(dirname "$(dirname "$(command -v nvcc || echo /usr/local/cuda/bin/nvcc)")")
  echo "$root/lib64:$root/lib"
}

# Binaries of --prebuilt DIR: checks them and sets LD_LIBRARY_PATH.
use_prebuilt() {
  local d
  d=$(cd "$dir" 2>/dev/null && pwd) || die "--prebuilt $dir: no such folder"
  [[ -f $d/BUILD_INFO ]] || die "--prebuilt $dir: no BUILD_INFO (make it with --package)"
  chmod +x "$d"/bin/* 2>/dev/null || true  # in case a copy lost the mode bits
  local t
  for t in "${targets[@]}"; do
    local name=$t
    [[ $t == fusedloss_cli ]] && name=fusedloss
    [[ -x $d/bin/$name ]] || die "--prebuilt $dir: bin/$name missing"
    bin[$t]=$d/bin/$name
  done
  shared_library=$d/lib/libfusedloss.so
  local toolkit
  toolkit=$(toolkit_libraries)
  export LD_LIBRARY_PATH=$d/lib:$toolkit${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}
  local missing
  missing=$(ldd "$d"/bin/* 2>&1 | grep -E 'not found' || true)
  [[ -z $missing ]] || die "--prebuilt $dir: libraries missing on this machine: $missing"
  build_info=$d/BUILD_INFO
  bin_dir="$dir (prebuilt)"
  # The CPU suite compiled in the golden files' path of the machine it was built on.
  export FUSEDLOSS_GOLDEN_DIR=$repo/tests/golden
}

# Builds here when GoogleTest and Google Benchmark are installed.
use_build_here() {
  local lacking=()
  have_package GTest || lacking+=("GoogleTest (libgtest-dev)")
  have_package benchmark || lacking+=("Google Benchmark (libbenchmark-dev)")
  if ((${#lacking[@]})); then
    die "cannot build here: missing ${lacking[*]}. Build on a machine that has them with
  scripts/gpu-check.sh --package .gpu-build
and run here with
  scripts/gpu-check.sh --prebuilt .gpu-build"
  fi
  build_default_preset
  local build_dir=$repo/build/default t
  for t in "${targets[@]}"; do
    bin[$t]=$(find_binary "$build_dir" "$t")
    [[ -n ${bin[$t]} ]] || die "no binary for $t in $build_dir"
  done
  shared_library=$build_dir/libfusedloss.so
  build_info=$build_dir/gpu-check-build-info
  write_build_info "$build_info" "$build_dir" "built by gpu-check.sh where it ran"
  bin_dir=build/default
}

# ------------------------------------------------------------------------------------------------
# Main

case $mode in
  package)
    package "$dir"
    exit 0
    ;;
  merge)
    merge_rc=0
    py report "$report" "${merge_dirs[@]}" || merge_rc=$?
    exit "$merge_rc"
    ;;
esac

command -v python3 >/dev/null || die "python3 is needed for the report"
build_info=""
bin_dir=""
if [[ $mode == prebuilt ]]; then use_prebuilt; else use_build_here; fi

mkdir -p "$results/logs"
results=$(cd "$results" && pwd)
py prune "$results" "$build_info"
if ! command -v nvidia-smi >/dev/null || ! nvidia-smi -L >/dev/null 2>&1; then
  echo "gpu-check: warning: no NVIDIA GPU visible (nvidia-smi); the GPU steps will fail" >&2
fi
echo "gpu-check: stages: ${stages[*]}; results in $results"

# Writes the report from RESULTS and, with --publish, copies it, the stage results and the logs
# to that folder (after each stage, so that a run cut short still returns what it did).
publish() {
  report_rc=0
  py report "$report" "$results" || report_rc=$?
  if [[ -n $publish_dir ]]; then
    mkdir -p "$publish_dir"
    cp "$report" "$publish_dir/gpu-report.md" 2>/dev/null || true
    cp "$results"/stage-*.json "$publish_dir/" 2>/dev/null || true
    if [[ -f $results/bench.json ]]; then cp "$results/bench.json" "$publish_dir/"; fi
    tar -czf "$publish_dir/gpu-check-logs.tar.gz" -C "$results" logs 2>/dev/null || true
    echo "gpu-check: copied the report, stage results and logs to $publish_dir"
  fi
}

report_rc=0
for s in "${stages[@]}"; do
  "stage_$s"
  publish
done
if ((report_rc == 3)); then
  echo "gpu-check: the report was not written (stage results of different builds in $results)" >&2
  exit 1
fi
exit $((any_failed || report_rc))
