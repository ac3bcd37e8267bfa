#!/usr/bin/env python3
"""docs/gpu-report.md from what scripts/gpu-check.sh ran: CTest's JUnit output, the result files
the suite's tests write (gtest JSON, pytest's JUnit, the benchmark JSON, the comparison tables) and
the build's record.

    gpu_report.py build-info --build-dir DIR --out FILE   the source and build a package holds
    gpu_report.py stage --results DIR --stage NAME --build-info FILE
        DIR/stage-NAME.json from CTest's DIR/junit-NAME.xml and the tests' result files
    gpu_report.py report --out FILE DIR [DIR ...]         the report from every stage-*.json

A stage passes when every test it expects ran and passed, and no GPU test skipped (on the GPU
machine none may). `report` refuses stage results of different builds (exit 3) and exits 1 when a
stage failed.
"""

import argparse
import datetime
import glob
import hashlib
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import xml.etree.ElementTree as ET

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# The tests each stage runs (tests/gpu-check/CTestTestfile.cmake.in), in the report's order.
STAGES = {
    "tests": ["cpu_suite", "c_abi", "gpu_suite", "validate_gpu", "bench_headline", "compare",
              "linear_bench", "hardware_counters", "python", "gpu_slow",
              "validate_catches_wrong_backend", "validate_catches_tight_tolerance"],
    "sanitize": ["sanitize_memcheck", "sanitize_racecheck", "sanitize_initcheck",
                 "sanitize_synccheck"],
}
# The GPU suites, where a skipped test is a failure (with FUSEDLOSS_REQUIRE_GPU=1 a missing device
# already fails; what else skips there, e.g. a tier this GPU lacks, must not pass unseen). The
# Python suite's skips are PyTorch-version gates, listed but allowed.
NO_SKIPS = {"gpu_suite", "gpu_slow"} | set(STAGES["sanitize"])
# The bandwidth targets (fraction of the copy bandwidth measured in the same run): the fused
# element losses at 2^28 elements, cross-entropy at the LLM head's shape and at a small class
# count; the fused LLM row also >= 1.4x a forward call plus a backward call.
TARGET_FRAC = 0.90
TARGETS = re.compile(r"^((bce|sigmoid_focal|mse)/bfloat16/forward_backward/n268435456|"
                     r"cross_entropy/bfloat16/forward_backward/(8192x128256|1024x1000))$")
SPEEDUP_ROW = ("cross_entropy/bfloat16/forward_backward/8192x128256",
               "cross_entropy/bfloat16/forward_then_backward/8192x128256", 1.4)


def sh(cmd):
    try:
        r = subprocess.run(cmd, shell=True, capture_output=True, text=True, timeout=60)
        return (r.stdout + r.stderr).strip()
    except (OSError, subprocess.SubprocessError) as e:
        return f"({e})"


def load_json(path):
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except (OSError, ValueError):
        return None


def now():
    return datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC")


# ---------------------------------------------------------------------------------------------
# build-info


def build_info(build_dir):
    """Which source the binaries come from: the commit, and a fingerprint of uncommitted changes
    (the diff against HEAD and the untracked files' contents, the report itself left out)."""
    info = {"commit": "unknown", "describe": "unknown", "dirty": "unknown"}
    spec = ["--", ".", ":(exclude)docs/gpu-report.md"]
    git = ["git", "-C", REPO]
    try:
        info["commit"] = subprocess.check_output(git + ["rev-parse", "HEAD"], text=True).strip()
        info["describe"] = subprocess.check_output(git + ["describe", "--always", "--dirty"],
                                                   text=True).strip()
        status = subprocess.check_output(
            git + ["status", "--porcelain", "--untracked-files=all"] + spec, text=True)
        info["dirty"] = "yes" if status.strip() else "no"
        info["changed_files"] = len(status.splitlines())
        digest = hashlib.sha256(subprocess.check_output(git + ["diff", "HEAD", "--binary"] + spec))
        untracked = subprocess.check_output(
            git + ["ls-files", "--others", "--exclude-standard", "-z"] + spec).split(b"\0")
        for name in filter(None, untracked):
            with open(os.path.join(REPO, name.decode()), "rb") as f:
                digest.update(name + b"\0" + f.read())
        info["fingerprint"] = digest.hexdigest()[:16]
    except (OSError, subprocess.CalledProcessError):
        info["commit"] = os.environ.get("FUSEDLOSS_COMMIT", "unknown")
    cache = {}
    with open(os.path.join(build_dir, "CMakeCache.txt"), encoding="utf-8") as f:
        for line in f:
            m = re.match(r"^([A-Z_]+):[A-Z]+=(.*)$", line.rstrip("\n"))
            if m:
                cache[m.group(1)] = m.group(2)
    info.update({
        "build_type": cache.get("CMAKE_BUILD_TYPE", "?"),
        "cuda_architectures": cache.get("CMAKE_CUDA_ARCHITECTURES", "?"),
        "nvcc": sh("nvcc --version | sed -n 's/^Cuda compilation tools, //p'"),
        "cxx": sh(f"'{cache.get('CMAKE_CXX_COMPILER', 'c++')}' --version | head -n 1"),
        "built_on": f"{socket.gethostname()} ({sh('. /etc/os-release && echo $PRETTY_NAME')})",
        "built_at": now(),
    })
    return info


# ---------------------------------------------------------------------------------------------
# stage


def environment():
    def where(program, command):
        return sh(command) if shutil.which(program) else f"{program} not found"
    return {
        "date": now(),
        "host": socket.gethostname(),
        "kernel": sh("uname -sr"),
        "gpu": where("nvidia-smi", "nvidia-smi --query-gpu=name,driver_version,memory.total,"
                     "clocks.max.sm --format=csv,noheader"),
        "gpu_state": where("nvidia-smi", "nvidia-smi --query-gpu=clocks.sm,clocks.mem,"
                           "temperature.gpu,power.draw,utilization.gpu --format=csv,noheader"),
        "nvcc": where("nvcc", "nvcc --version | tail -n 1"),
        "sanitizer": where("compute-sanitizer", "compute-sanitizer --version | tail -n 1"),
        "torch": sh("python3 -c 'import torch; print(torch.__version__)'"),
    }


def gtest_counts(path):
    """Passed, failed and skipped tests, with the failed and skipped names, from gtest's JSON."""
    data = load_json(path)
    if data is None:
        return None
    c = {"passed": 0, "failed": 0, "skipped": 0, "failed_tests": [], "skipped_tests": [],
         "first_failures": []}
    for suite in data.get("testsuites", []):
        for t in suite.get("testsuite", []):
            name = f"{suite.get('name')}.{t.get('name')}"
            if t.get("failures"):
                c["failed"] += 1
                c["failed_tests"].append(name)
                if len(c["first_failures"]) < 3:
                    c["first_failures"].append(f"{name}: {t['failures'][0]['failure'][:600]}")
            elif t.get("result") == "SKIPPED":
                c["skipped"] += 1
                c["skipped_tests"].append(name)
            elif t.get("status") != "NOTRUN":
                c["passed"] += 1
    return c


def pytest_counts(path):
    """The same counts from pytest's JUnit XML."""
    try:
        root = ET.parse(path).getroot()
    except (OSError, ET.ParseError):
        return None
    c = {"passed": 0, "failed": 0, "skipped": 0, "failed_tests": [], "skipped_tests": [],
         "first_failures": []}
    for case in root.iter("testcase"):
        name = f"{case.get('classname')}.{case.get('name')}"
        failure = case.find("failure")
        if failure is None:
            failure = case.find("error")
        if failure is not None:
            c["failed"] += 1
            c["failed_tests"].append(name)
            if len(c["first_failures"]) < 3:
                c["first_failures"].append(f"{name}: {(failure.get('message') or '')[:600]}")
        elif case.find("skipped") is not None:
            c["skipped"] += 1
            c["skipped_tests"].append(f"{name} ({case.find('skipped').get('message', '')})")
        else:
            c["passed"] += 1
    return c


def bench_rows(path):
    data = load_json(path)
    if data is None:
        return None
    rows = []
    for b in data.get("benchmarks", []):
        if b.get("run_type", "iteration") != "iteration":
            continue
        # UseManualTime adds /manual_time, a row's own MinTime /min_time:X.
        name = re.sub(r"/(min_time:[^/]*|manual_time|real_time)(?=/|$)", "",
                      b.get("run_name", b.get("name")) or "")
        rows.append({"name": name, "label": b.get("label", ""), "time": b.get("real_time"),
                     "unit": b.get("time_unit", "us"),
                     "gbps": b["bytes"] / 1e9 if "bytes" in b else None,
                     "frac": b.get("frac_of_copy"), "speedup": b.get("speedup_vs_separate"),
                     "error": None, "skipped": None})
        if b.get("error_occurred"):
            # A row that does not apply (a tier that cannot hold the shape) says "skipped: why".
            message = b.get("error_message") or ""
            key = "skipped" if message.startswith("skipped: ") else "error"
            rows[-1][key] = message.removeprefix("skipped: ") or message
    return {"context": data.get("context", {}), "rows": rows}


def read_text(path):
    try:
        with open(path, encoding="utf-8", errors="replace") as f:
            return f.read()
    except OSError:
        return None


def test_result(results, case):
    """One CTest testcase of the JUnit file, with what its own result file says."""
    name = case.get("name")
    status = {"run": "pass", "fail": "fail"}.get(case.get("status"), case.get("status"))
    out = (case.findtext("system-out") or "").rstrip()
    t = {"name": name, "status": status, "seconds": float(case.get("time") or 0)}
    if name == "python":
        t["counts"] = pytest_counts(os.path.join(results, "python.xml"))
    elif os.path.exists(os.path.join(results, f"{name}.json")):
        t["counts"] = gtest_counts(os.path.join(results, f"{name}.json"))
    counts = t.get("counts")
    if counts and counts["skipped"] and name in NO_SKIPS and status == "pass":
        t["status"], t["detail"] = "fail", f"{counts['skipped']} test(s) skipped on the GPU"
    if name.startswith("sanitize_"):
        errors = re.findall(r"ERROR SUMMARY: (\d+) error", out)
        t["sanitizer_errors"] = int(errors[-1]) if errors else None
    if name == "bench_headline":
        t["bench"] = bench_rows(os.path.join(results, "bench.json"))
        if t["bench"] and any(r["error"] for r in t["bench"]["rows"]) and status == "pass":
            t["status"], t["detail"] = "fail", "a benchmark row failed"
    for table, path in (("compare", "compare/compare.md"), ("linear_bench", "linear/*.md"),
                        ("hardware_counters", "counters/counters.md")):
        if name == table:
            found = sorted(glob.glob(os.path.join(results, path)))
            t["table"] = read_text(found[0]) if found else None
    if name.startswith("validate"):
        summary = [line for line in out.splitlines() if line.startswith("validate (")]
        t["detail"] = summary[-1] if summary else None
    if t["status"] != "pass":
        if counts and counts["first_failures"]:
            t["why"] = "\n\n".join(counts["first_failures"])
        else:
            t["why"] = "\n".join(out.splitlines()[-30:])
    return t


def cmd_stage(args):
    junit = os.path.join(args.results, f"junit-{args.stage}.xml")
    try:
        cases = {c.get("name"): c for c in ET.parse(junit).getroot().iter("testcase")}
    except (OSError, ET.ParseError):
        cases = {}
    tests = []
    for name in STAGES[args.stage]:
        if name in cases:
            tests.append(test_result(args.results, cases[name]))
        else:
            tests.append({"name": name, "status": "not run", "seconds": 0,
                          "why": f"not in {os.path.basename(junit)} (CTest's stop time, or no "
                                 "such test)"})
    stage = {"stage": args.stage, "build": load_json(args.build_info) or {},
             "environment": environment(), "tests": tests,
             "status": "pass" if all(t["status"] == "pass" for t in tests) else "fail"}
    with open(os.path.join(args.results, f"stage-{args.stage}.json"), "w", encoding="utf-8") as f:
        json.dump(stage, f, indent=1)
    return 0 if stage["status"] == "pass" else 1


# ---------------------------------------------------------------------------------------------
# report


def fmt(value, spec):
    return "?" if value is None else format(value, spec)


def block(text):
    return "```\n" + text.rstrip() + "\n```\n"


def render_bench(bench, lines):
    rows = [r for r in bench["rows"] if not r["error"] and not r["skipped"]]
    by_name = {r["name"]: r for r in rows}
    ctx = bench["context"]
    lines.append(f"Benchmark context: {ctx.get('gpu', '?')}, {ctx.get('gpu_sms', '?')} SMs, L2 "
                 f"{int(ctx.get('gpu_l2_bytes', 0)) / 1e6:.1f} MB, CUDA runtime "
                 f"{ctx.get('cuda_runtime', '?')}.\n")
    if "copy" in by_name:
        lines.append(f"Device-to-device copy (the reference): **{by_name['copy']['gbps']:.0f} "
                     "GB/s** (bytes read + written, decimal).\n")
    lines += ["| Target | GB/s | Fraction of copy | Met |", "| --- | ---: | ---: | --- |"]
    for r in bench["rows"]:
        if TARGETS.match(r["name"]):
            ok = r in rows and r["frac"] is not None and r["frac"] >= TARGET_FRAC
            lines.append(f"| `{r['name']}` (>= {TARGET_FRAC:.0%}) | {fmt(r['gbps'], '.0f')} | "
                         f"{fmt(r['frac'], '.3f')} | {'yes' if ok else '**no**'} |")
    fused, separate, wanted = SPEEDUP_ROW
    if fused in by_name and separate in by_name:
        speedup = by_name[separate]["time"] / by_name[fused]["time"]
        lines.append(f"| `{fused}` over `{separate}` (>= {wanted}x) | | {speedup:.2f}x | "
                     f"{'yes' if speedup >= wanted else '**no**'} |")
    tiers = [r for r in bench["rows"] if "_tier_" in r["name"]]
    if tiers:
        lines += ["", "Forced tiers (the same call and bytes as the automatic row):", "",
                  "| Row | GB/s | Fraction of copy | Note |", "| --- | ---: | ---: | --- |"]
        for r in tiers:
            lines.append(f"| `{r['name']}` | {fmt(r['gbps'], '.0f')} | {fmt(r['frac'], '.3f')} | "
                         f"{r['error'] or r['skipped'] or ''} |")
    lines += ["", "| Row | Time per call | GB/s | Fraction of copy | Fused vs separate |",
              "| --- | ---: | ---: | ---: | ---: |"]
    for r in bench["rows"]:
        if r["error"] or r["skipped"]:
            lines.append(f"| `{r['name']}` | {r['error'] or 'skipped: ' + r['skipped']} | | | |")
            continue
        lines.append(f"| `{r['name']}` | {fmt(r['time'], '.1f')} {r['unit']} | "
                     f"{fmt(r['gbps'], '.0f')} | {fmt(r['frac'], '.3f')} | "
                     f"{fmt(r['speedup'], '.2f')} |")
    lines.append("\nGB/s counts the bytes a call must move (bench/row_losses.cpp and "
                 "bench/element_losses.cpp say which) over its CUDA-event time, the L2 flushed "
                 "before each repeat.\n")


def render_stage(st, lines):
    env = st["environment"]
    lines.append(f"## Stage `{st['stage']}`: {'PASS' if st['status'] == 'pass' else '**FAIL**'}\n")
    lines.append(f"Ran {env['date']} on `{env['host']}` ({env['kernel']}): {env['gpu']} "
                 f"(now: {env['gpu_state']}); {env['nvcc']}; {env['sanitizer']}; "
                 f"torch {env['torch']}.\n")
    lines += ["| Test | Result | Passed | Failed | Skipped | Time | Detail |",
              "| --- | --- | ---: | ---: | ---: | ---: | --- |"]
    for t in st["tests"]:
        c = t.get("counts") or {}
        detail = t.get("detail") or ""
        if t.get("sanitizer_errors") is not None:
            detail = f"{t['sanitizer_errors']} sanitizer errors"
        lines.append(f"| {t['name']} | {t['status']} | {c.get('passed', '')} | "
                     f"{c.get('failed', '')} | {c.get('skipped', '')} | {t['seconds']:.1f} s | "
                     f"{detail} |")
    lines.append(f"\nStage time: {sum(t['seconds'] for t in st['tests']):.0f} s of tests.\n")
    for t in st["tests"]:
        c = t.get("counts") or {}
        if c.get("failed_tests"):
            lines.append(f"Failed in {t['name']}: "
                         + ", ".join(f"`{n}`" for n in c["failed_tests"][:40]) + "\n")
        if c.get("skipped_tests"):
            lines.append(f"Skipped in {t['name']}: "
                         + ", ".join(f"`{n}`" for n in c["skipped_tests"][:40]) + "\n")
        if t.get("why"):
            lines.append(f"<details><summary>{t['name']}: why</summary>\n\n{block(t['why'])}"
                         "</details>\n")
    for t in st["tests"]:
        if t.get("bench"):
            render_bench(t["bench"], lines)
        if t.get("table"):
            lines += [f"### {t['name']}\n", t["table"].strip(), ""]


def cmd_report(args):
    found = {}
    for d in args.dirs:
        for path in sorted(glob.glob(os.path.join(d, "stage-*.json"))):
            st = load_json(path)
            found[st["stage"]] = st  # a later folder wins
    if not found:
        print(f"gpu_report: no stage-*.json in {' '.join(args.dirs)}", file=sys.stderr)
        return 1
    stages = [found[s] for s in STAGES if s in found]
    builds = {(s["build"].get("commit"), s["build"].get("fingerprint")) for s in stages}
    if len(builds) > 1:
        print("gpu_report: these stage results come from different builds:", file=sys.stderr)
        for s in stages:
            print(f"  {s['stage']}: {s['build'].get('commit')} {s['build'].get('fingerprint')}",
                  file=sys.stderr)
        return 3
    b = stages[0]["build"]
    passed = all(s["status"] == "pass" for s in stages)
    state = {"no": "exactly this commit",
             "yes": f"**with uncommitted changes** (fingerprint `{b.get('fingerprint')}`)"}
    lines = ["# fusedloss GPU check report", "",
             "Written by `scripts/gpu-check.sh` (scripts/gpu_report.py); do not edit by hand.", "",
             "| | |", "| --- | --- |",
             f"| Commit | `{b.get('commit')}` ({b.get('describe')}), "
             f"{state.get(b.get('dirty'), 'working tree unknown')} |",
             f"| Result | {'**PASS**' if passed else '**FAIL**'}: "
             + ", ".join(f"{s['stage']} {s['status']}" for s in stages)
             + "".join(f"; {s} not run" for s in STAGES if s not in found) + " |",
             f"| Build | {b.get('build_type')}, CUDA architectures {b.get('cuda_architectures')}, "
             f"{b.get('nvcc')}, {b.get('cxx')}, on {b.get('built_on')} at {b.get('built_at')} |",
             f"| Report written | {now()} |", ""]
    for st in stages:
        render_stage(st, lines)
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    with open(args.out, "w", encoding="utf-8") as f:
        f.write("\n".join(lines).rstrip() + "\n")
    print(f"gpu_report: wrote {args.out}: {'PASS' if passed else 'FAIL'}")
    return 0 if passed else 1


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("build-info")
    p.add_argument("--build-dir", required=True)
    p.add_argument("--out", required=True)
    p = sub.add_parser("stage")
    p.add_argument("--results", required=True)
    p.add_argument("--stage", required=True, choices=sorted(STAGES))
    p.add_argument("--build-info", required=True)
    p = sub.add_parser("report")
    p.add_argument("--out", required=True)
    p.add_argument("dirs", nargs="+")
    args = parser.parse_args()
    if args.command == "build-info":
        with open(args.out, "w", encoding="utf-8") as f:
            json.dump(build_info(args.build_dir), f, indent=1)
        return 0
    return cmd_stage(args) if args.command == "stage" else cmd_report(args)


if __name__ == "__main__":
    sys.exit(main())
