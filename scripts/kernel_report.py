#!/usr/bin/env python3
"""The compiler as profiler: resources and hot loops of the hot kernels, read off nvcc's output.

Compiles each source of the manifest once for sm_90 (nvcc -O3 -std=c++17 -lineinfo -cubin
-Xptxas -v; the PTX is kept from the same run) and reports per kernel ptxas' registers, spills,
stack frame, static shared memory and the theoretical occupancy on an H200; per hot loop its
instructions per element, the widths of its global, shared and generic accesses, its MUFU ops and
its 16-byte loads in flight, from SASS when a disassembler is found, else from PTX (the report
says which). --check: exit 1 when a hot kernel spills, has a stack frame, misses its budget, has
fewer loads in flight or less occupancy than asked, or the manifest names a kernel or loop that
is not there. Exit 2 when a tool or the manifest fails.

    scripts/kernel_report.py [--nvcc NVCC] [--source-dir DIR] [--manifest FILE]
        [--nvdisasm PATH] [--out FILE] [--check] [--list-loops REGEX]

--list-loops prints every loop of the kernels whose name matches: what select rules are made of.

Disassembler: --nvdisasm, else $FUSEDLOSS_NVDISASM, else nvdisasm on PATH; one named explicitly
must work (no silent fallback to PTX). CUDA 13's compiler packages have none; Debian's non-free
nvidia-cuda-toolkit 11.8 package does (.ci/run unpacks it into a cache: never installed, never
part of the build). That nvdisasm reads nvcc 13's sm_90 cubins once a copy has its ELF
ABI-version byte (offset 8) set to 7 and its e_flags (offset 48) to 0x005a055a, which this script
does to a copy. It prints nothing for the few opcodes newer than it (VIADD, VIMNMX: about 0.6%
of today's instructions); each such blank 16-byte slot counts as one instruction, its registers
read off its encoding (see undecoded_insn), and the report gives their number. (-lineinfo adds
line tables only: the SASS is the same without it.)

Manifest: JSON, default kernels/hot_kernels.json, paths relative to --source-dir.
  "sources": [".cu files"], compiled once each;  "includes": [-I directories];
  "kernels": one object per budgeted case (several may name one kernel):
    "name"      regex, matched in full against the short demangled name (namespaces, return
                type and parameters dropped: "row_block_kernel<__nv_bfloat16>"; a space after
                a template argument's comma is optional); it may match several kernels
    "case"      what the budget is for, shown in the report
    "threads"   threads per block; must equal the kernel's __launch_bounds__ (PTX .maxntid)
    "dynamic_shared"  bytes per block, or "max" (all a block can opt into: 227 KB less its
                static shared memory); default 0
    "budget"    SASS instructions per element, summed over the phases (not checked on PTX)
    "min_loads_in_flight"  the phases' default (not checked on PTX: ptxas schedules the loads)
    "min_occupancy"  fraction of the SM's 64 warps, e.g. 0.5; default 0
    "open"      a budget not met yet, and why: its misses of the budget and of the loads in
                flight are reported, not failed (spills, stack and missing loops still fail);
                one that meets them fails until the note is removed, so none stays stale
    "phases"    the hot loops: [{"name", "select": RULE, "elements": logit elements one
                iteration processes per thread, optional "min_loads_in_flight", optional
                "cold": [names of the sources' cold regions that the case never runs]}]
  RULE picks one loop of the kernel, in program order, by all of:
    "loops"     "innermost" (contains no other loop; the default), "outermost" (inside none)
                or "any"
    "having"    what the loop must contain: "ldg128", "lds128", "ld128" (generic), "load128"
                (any of those three), "stg128", "sts128", "mufu", or {"sass": REGEX, "ptx":
                REGEX} (an instruction matching it; a mode without one finds no loop)
    "index"     which of the loops left, 0-based, negative from the end; default 0
  Unknown keys are errors, so that a misspelt key cannot pass unnoticed; "comment" is allowed
  at the top level.

Definitions. A loop: in SASS, a BRA to a lower address closes a loop from that target to the
branch (several backward branches to one target: one loop, to the last of them; a branch back
into a loop from code placed after it, as ptxas does with out-of-line paths, closes none); in PTX
a bra to an earlier label (PTX's block order is NVVM's: rougher). Its instructions: every one
from the target to the backward branch inclusive, NOPs (padding) excluded and both sides of every
branch inside counted (a static count: exact for a branch-free body, an upper bound otherwise), a
CALL as one (its callee is listed, not counted); less, for a phase that names cold regions, the
loop's cold blocks: the basic blocks whose instructions all come from a named region (itself or
through the calls that inlined it there: nvdisasm -gi's chains), or at least half of them with
none of those under a predicate but a branch's (the rest being what ptxas copies into a branch's
blocks; region code predicated beside other code is issued either way). A cold region is the lines
between a `// cold: NAME` comment and the next `// cold end` in a source or header: code that a
case's input never reaches (another loss's finish, an ignored row). A named region that is no
block of the loop fails the case, so that a note cannot outlive its code. Instructions per
element: instructions / elements; a case's figure is the sum over its phases. Loads in flight:
walking the loop once in program order, consecutive 128-bit global or generic loads (LDG, LD: a
generic pointer may point to global memory) of one basic block form a batch until an instruction
reads or writes one of the batch's destination registers (a .128 load to R4 writes R4..R7), a
CALL or the block's end; the largest batch (so loads on two paths never add up).
"""
import argparse
import concurrent.futures
import os
import re
import shutil
import sys
import tempfile

# The command line; the work is done by the kernel_report_*.py modules beside this file, one job
# each, which Python finds because a script's own folder comes first on its path.
from kernel_report_compile import ReportError, compile_source, parse_ptxas, version
from kernel_report_manifest import cold_regions, evaluate, load_manifest
from kernel_report_names import demangle, enumerators, short_name
from kernel_report_ptx import parse_ptx
from kernel_report_render import case_table, list_loops, render
from kernel_report_sass import disassemble, parse_sass


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--nvcc", default=shutil.which("nvcc") or "/usr/local/cuda/bin/nvcc")
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    ap.add_argument("--source-dir", default=root)
    ap.add_argument("--manifest", default="kernels/hot_kernels.json")
    ap.add_argument("--nvdisasm", default=os.environ.get("FUSEDLOSS_NVDISASM") or None)
    ap.add_argument("--out", help="write the Markdown report here")
    ap.add_argument("--check", action="store_true", help="exit 1 when a case fails")
    ap.add_argument("--list-loops", metavar="REGEX", help="list the loops of matching kernels")
    ap.add_argument("--jobs", type=int, default=min(2, os.cpu_count() or 1))
    a = ap.parse_args(argv)
    try:
        manifest = load_manifest(os.path.join(a.source_dir, a.manifest))
        if a.nvdisasm and not (os.path.isfile(a.nvdisasm) and os.access(a.nvdisasm, os.X_OK)):
            raise ReportError(f"no executable nvdisasm at {a.nvdisasm}")
        nvdisasm = a.nvdisasm or shutil.which("nvdisasm")
        mode = "sass" if nvdisasm else "ptx"
        tools = {"nvcc": version(a.nvcc), "nvdisasm": nvdisasm and version(nvdisasm)}
        includes = [os.path.join(a.source_dir, i) for i in manifest.get("includes", [])]
        kernels = []
        with tempfile.TemporaryDirectory(prefix="kernel-report-") as work, \
                concurrent.futures.ThreadPoolExecutor(max(1, a.jobs)) as pool:
            # nvcc is nearly all of the run time: the sources compile side by side.
            futures = {s: pool.submit(compile_source, a.nvcc, os.path.join(a.source_dir, s),
                                      includes, work) for s in manifest["sources"]}
            for source, future in futures.items():
                cubin, log, ptx = future.result()
                found = parse_ptxas(log, source)
                with open(ptx) as f:
                    ptx_bodies = parse_ptx(f.read())
                sass_bodies = parse_sass(disassemble(nvdisasm, cubin)) if nvdisasm else {}
                for k in found.values():
                    insns, labels, k.max_threads = ptx_bodies.get(k.mangled, ([], {}, 0))
                    k.ptx, k.sass = (insns, labels), sass_bodies.get(k.mangled)
                    if nvdisasm and k.sass is None:
                        raise ReportError(f"{k.mangled} is not in the SASS of {source}")
                kernels += found.values()
        names = demangle([k.mangled for k in kernels])
        headers = [os.path.join(d, f) for i in includes for d, _, files in os.walk(i)
                   for f in files if f.endswith((".h", ".hpp", ".cuh"))]
        sources = [os.path.join(a.source_dir, s) for s in manifest["sources"]] + headers
        enums = enumerators(sources)
        for k in kernels:
            k.name = short_name(names[k.mangled], enums)
        if a.list_loops:
            list_loops([k for k in kernels if re.search(a.list_loops, k.name)], mode)
            return 0
        cases, stale = evaluate(kernels, manifest, mode, cold_regions(sources))
    except ReportError as e:
        print(f"kernel_report: {e}", file=sys.stderr)
        return 2
    failures = stale + [f"`{c.kernel.name}` ({c.spec.get('case', '')}): {f}"
                        for c in cases for f in c.failures]
    if a.out:
        with open(a.out, "w") as f:
            f.write(render(kernels, cases, failures, mode, tools, a.manifest))
    print(f"kernel_report: hot loops from {mode.upper()}"
          + (f" ({tools['nvdisasm']})" if nvdisasm else " (no nvdisasm found)"))
    print(case_table(cases, mode))
    for f in failures:
        print("FAIL:", f)
    return 1 if a.check and failures else 0


if __name__ == "__main__":
    sys.exit(main())
