"""The kernel report's Markdown (docs/kernel-report.md) and its console output: the tables of
budgeted cases, hot loops and every kernel's resources, and --list-loops' listing."""
import os

from kernel_report_compile import NVCC_FLAGS
from kernel_report_loops import find_loops
from kernel_report_occupancy import occupancy


def table(header, rows):
    return "\n".join(["| " + " | ".join(header) + " |", "|" + "---|" * len(header)] +
                     ["| " + " | ".join(str(c) for c in r) + " |" for r in rows])


def case_table(cases, mode):
    rows, sass = [], mode == "sass"
    for c in cases:
        k, s = c.kernel, c.spec
        in_flight = " / ".join(str(l.in_flight) if l else "–" for _, l in c.phases)
        wanted = " / ".join(str(c.min_in_flight(p)) for p, _ in c.phases)
        rows.append([f"`{k.name}`", s.get("case", ""),
                     "–" if c.per_element is None else f"{c.per_element:.1f}",
                     s["budget"] if sass else "n/a (PTX)", in_flight,
                     wanted if sass else "n/a (PTX)", f"{c.occupancy[0]:.0%}",
                     f"{s.get('min_occupancy', 0):.0%}", k.registers,
                     f"{k.spill_stores}/{k.spill_loads}", k.stack,
                     "**fail**" if c.failures else "open" if c.open_misses else "pass"])
    return table(["kernel", "case", "instr/element", "budget", "loads in flight (per phase)",
                  "min", "occupancy", "min", "registers", "spill st/ld (B)", "stack (B)", "result"],
                 rows)


def loop_table(cases, mode):
    rows, seen = [], set()
    for c in cases:
        for p, l in c.phases:
            key = (c.kernel.mangled, p["name"], l and l.start, p["elements"],
                   tuple(p.get("cold", [])))
            if key in seen:
                continue  # another case of the same kernel and loop
            seen.add(key)
            if l is None:
                rows.append([f"`{c.kernel.name}`", p["name"], "not found"] + ["–"] * 11)
                continue
            rows.append([f"`{c.kernel.name}`", p["name"], f"{l.insns[0].addr}–{l.insns[-1].addr}",
                         l.insns[-1].line or "–", l.counted() + (
                             f"; {c.cold[p['name']]} cold" if c.cold.get(p["name"]) else ""),
                         p["elements"], f"{c.counted(p, l) / p['elements']:.1f}",
                         l.global_loads(), l.widths("stg"),
                         l.widths("lds", "sts"), l.widths("ld", "st"), l.mufu(), l.in_flight,
                         l.calls()])
    return table(["kernel", "phase", "loop", "backward branch at", "instructions", "elements",
                  "instr/element", "global loads (n×bits)", "global stores", "shared ld+st",
                  "generic ld+st", "MUFU", "loads in flight", "calls"], rows)


def resource_table(kernels, cases):
    hot, rows = {c.kernel.mangled for c in cases}, []
    for k in kernels:
        occ, blocks, limit = occupancy(k.registers, k.max_threads or 256, k.static_shared)
        rows.append([f"`{k.name}`", os.path.basename(k.source), k.max_threads or "– (256)",
                     k.registers, f"{k.spill_stores}/{k.spill_loads}", k.stack, k.static_shared,
                     f"{occ:.0%} ({blocks} blocks, {limit})", "yes" if k.mangled in hot else ""])
    return table(["kernel", "source", "threads", "registers", "spill st/ld (B)", "stack (B)",
                  "static smem (B)", "occupancy without dynamic smem", "hot"], rows)


def render(kernels, cases, failures, mode, tools, manifest_path):
    failing = sum(1 for c in cases if c.failures)
    opened = [c for c in cases if c.open_misses and not c.failures]
    verdict = f"{len(cases)} budgeted cases, {failing} failing, {len(opened)} open" + (
        ":\n\n" + "\n".join(f"- {f}" for f in failures) if failures else ".")
    if opened:
        verdict += ("\n\nOpen (a budget not met yet, reported and not failed; the manifest says "
                    "why):\n\n")
        verdict += "\n".join(f"- `{c.kernel.name}` ({c.spec.get('case', '')}): "
                             f"{'; '.join(c.open_misses)}. {c.spec['open']}" for c in opened)
    how = (f"{tools['nvdisasm']} on a copy of each cubin with ELF ABI version 7 and e_flags "
           "0x005a055a" if mode == "sass" else
           "no disassembler was found, so PTX is counted, in NVVM's block order: rough, and not "
           "comparable with the SASS budgets, which are not checked, nor are loads in flight "
           "(ptxas schedules the loads)")
    return "\n".join([
        "# Kernel report", "",
        "Written by `scripts/kernel_report.py` (CTest `kernel_report`) from the compiler's own "
        "output; do not edit by hand.", "",
        f"- Compiler: {tools['nvcc']}, `{' '.join(NVCC_FLAGS)}`; resources from `-Xptxas -v`.",
        f"- Hot loops from **{mode.upper()}**: {how}.",
        f"- Manifest: `{manifest_path}`: the hot kernels, their loops and budgets.",
        "- Occupancy: theoretical, on an H200 (65536 registers/SM allocated per warp in units "
        "of 256, 64 warps, 32 blocks, 228 KB shared memory/SM with 1 KB reserved per block), for "
        "the block size of `__launch_bounds__` and the manifest's dynamic shared memory.",
        "- Instructions per element: a loop's instructions, NOPs excluded and every side of a "
        "branch inside counted (an upper bound for a body with branches), less the basic blocks "
        "of the source's cold regions (`// cold: NAME` ... `// cold end`) that the case's phase "
        "names as code it never runs (shown as \"N cold\"), over the elements one iteration "
        "processes per thread, summed over the phases. Loads in flight: the most "
        "16-byte global (or generic) loads of one basic block issued before one of them is read. "
        "Definitions: the script's docstring.",
        "", "## Verdict", "", verdict, "",
        "## Budgeted cases", "", case_table(cases, mode), "",
        "## Hot loops", "", loop_table(cases, mode), "",
        "## Every kernel's resources", "", resource_table(kernels, cases), ""])


def list_loops(kernels, mode):
    for k in kernels:
        loops = find_loops(*(k.sass if mode == "sass" else k.ptx))
        print(f"{k.name}: {len(loops)} loops ({mode.upper()})")
        for n, l in enumerate(loops):
            print(f"  {n}: {l.insns[0].addr}–{l.insns[-1].addr}, backward branch at "
                  f"{l.insns[-1].line or '?'}, {l.where(loops)}: {l.counted()} instructions; "
                  f"ldg {l.global_loads()}; stg {l.widths('stg')}; "
                  f"lds/sts {l.widths('lds', 'sts')}; ld/st {l.widths('ld', 'st')}; "
                  f"MUFU {l.mufu()}; in flight {l.in_flight}; calls {l.calls()}")
