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
                iteration processes per thread, optional "min_loads_in_flight"}]
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
CALL as one (its callee is listed, not counted). Instructions per element: instructions /
elements; a case's figure is the sum over its phases. Loads in flight: walking the loop once in
program order, consecutive 128-bit global or generic loads (LDG, LD: a generic pointer may point
to global memory) of one basic block form a batch until an instruction reads or writes one of
the batch's destination registers (a .128 load to R4 writes R4..R7), a CALL or the block's end;
the largest batch (so loads on two paths never add up).
"""
import argparse
import collections
import concurrent.futures
import dataclasses
import json
import math
import os
import re
import shutil
import subprocess
import sys
import tempfile

NVCC_FLAGS = ["-O3", "-std=c++17", "-arch=sm_90", "-lineinfo"]

# H200 (sm_90) as the CUDA occupancy calculator (cuda_occupancy.h) models it: registers are
# allocated per warp in units of 256 from four partitions of 16384, shared memory in units of 128
# bytes with 1 KB reserved by the runtime for each block.
H200 = dict(regs_per_sm=65536, reg_unit=256, partitions=4, max_warps=64, max_blocks=32,
            shared_per_sm=228 * 1024, shared_per_block=227 * 1024, shared_reserved=1024,
            shared_unit=128)

# The manifest's keys: required, then optional.
KERNEL_KEYS = ({"name", "threads", "budget", "phases"},
               {"case", "dynamic_shared", "min_loads_in_flight", "min_occupancy", "open"})
PHASE_KEYS = ({"name", "select", "elements"}, {"min_loads_in_flight"})
RULE_KEYS = (set(), {"loops", "having", "index"})
HAVING = {"ldg128", "lds128", "ld128", "load128", "stg128", "sts128", "mufu"}


class ReportError(Exception):
    """A tool or the manifest failed, so there is no report (exit 2)."""


def run(cmd):
    p = subprocess.run(cmd, capture_output=True, text=True)
    if p.returncode != 0:
        raise ReportError(f"{' '.join(cmd)} failed ({p.returncode}):\n{p.stdout}{p.stderr}")
    return p.stdout + p.stderr


# ------------------------------------------------------------------------------------------------
# Compiling; ptxas' resources; names

@dataclasses.dataclass
class Kernel:
    mangled: str
    source: str
    name: str = ""  # short demangled name
    registers: int = 0
    spill_stores: int = 0
    spill_loads: int = 0
    stack: int = 0
    static_shared: int = 0
    max_threads: int = 0  # __launch_bounds__ (PTX .maxntid); 0: none
    sass: tuple = None    # ([Insn], {label: index})
    ptx: tuple = None


def compile_source(nvcc, source, includes, workdir):
    """One nvcc run: the cubin, ptxas -v's log, and the PTX that --keep leaves behind."""
    stem = os.path.splitext(os.path.basename(source))[0]
    keep = tempfile.mkdtemp(dir=workdir)  # a folder each: two sources may share a file name
    cubin, ptx = os.path.join(keep, stem + ".cubin"), os.path.join(keep, stem + ".ptx")
    flags = [*NVCC_FLAGS, *(f"-I{i}" for i in includes)]
    log = run([nvcc, *flags, "-cubin", "-Xptxas", "-v", "--keep", "--keep-dir", keep,
               "-o", cubin, source])
    if not os.path.exists(ptx):  # should --keep ever name its files otherwise
        run([nvcc, *flags, "-ptx", "-o", ptx, source])
    return cubin, log, ptx


def parse_ptxas(log, source):
    kernels, current, props_for = {}, None, None
    for line in log.splitlines():
        if m := re.search(r"Compiling entry function '([^']+)'", line):
            current = kernels.setdefault(m[1], Kernel(m[1], source))
        elif m := re.search(r"Function properties for (\S+)", line):
            props_for = m[1]
        elif m := re.search(r"(\d+) bytes stack frame, (\d+) bytes spill stores, "
                            r"(\d+) bytes spill loads", line):
            if props_for in kernels:  # not a device function that has a frame of its own
                k = kernels[props_for]
                k.stack, k.spill_stores, k.spill_loads = (int(g) for g in m.groups())
        elif (m := re.search(r"Used (\d+) registers", line)) and current:
            current.registers = int(m[1])
            if s := re.search(r"(\d+) bytes smem", line):
                current.static_shared = int(s[1])
            if s := re.search(r"(\d+) bytes cumulative stack size", line):
                current.stack = max(current.stack, int(s[1]))
    return kernels


def enumerators(paths):
    """{(enum, value): enumerator} of the enums defined in these files, so that a template
    argument that c++filt writes `(ns::feature)0` reads `plain`. Enumerators with initialisers
    other than plain integers, and enum names defined twice, are left out."""
    found, twice = {}, set()
    for path in paths:
        with open(path, errors="replace") as f:
            text = re.sub(r"//[^\n]*", "", f.read())
        for m in re.finditer(r"\benum\s+(?:class\s+|struct\s+)?(\w+)\s*(?::\s*[\w:]+\s*)?"
                             r"\{([^}]*)\}", text):
            values, value = {}, 0
            for item in filter(None, (i.strip() for i in m[2].split(","))):
                name, _, init = (x.strip() for x in item.partition("="))
                if init and not re.fullmatch(r"-?\d+", init):
                    break
                value = int(init) if init else value
                values[value], value = name, value + 1
            twice |= {m[1]} & {e for e, _ in found}
            found.update({(m[1], v): n for v, n in values.items()})
    return {k: n for k, n in found.items() if k[0] not in twice}


def short_name(demangled, enums):
    """`void ns::(anonymous namespace)::k<ns::T, (ns::feature)0>(args)` -> `k<T, plain>`."""
    s = re.sub(r"^void ", "", demangled.replace("(anonymous namespace)::", ""))
    depth = 0
    for i, c in enumerate(s):  # the parameter list: the first '(' outside template arguments
        depth += (c == "<") - (c == ">")
        if c == "(" and depth == 0:
            s = s[:i]
            break
    s = re.sub(r"\b[A-Za-z_]\w*::", "", s)
    return re.sub(r"\((\w+)\)(-?\d+)", lambda m: enums.get((m[1], int(m[2])), m[0]), s)


def demangle(names):
    try:
        out = subprocess.run(["c++filt"], input="\n".join(names), capture_output=True,
                             text=True, check=True).stdout.splitlines()
    except (OSError, subprocess.CalledProcessError):
        out = []
    return dict(zip(names, out)) if len(out) == len(names) else {n: n for n in names}


# ------------------------------------------------------------------------------------------------
# Instructions: one shape for SASS and PTX, so that loops and their figures have one code path

@dataclasses.dataclass
class Insn:
    op: str           # opcode with its modifiers: LDG.E.128, ld.global.nc.v4.u32
    args: str         # operands
    addr: str = ""    # SASS: its address; PTX: its index
    line: str = ""    # source file:line (-lineinfo)
    target: str = ""  # branch target label
    mem: str = ""     # ldg, stg, lds, sts, ld, st (generic), ldl, stl (local), async, or ""
    width: int = 0    # access width in bits
    mufu: str = ""    # EX2, LG2, RCP, TANH, ... (PTX: ex2, lg2, ... .approx)
    call: str = ""
    nop: bool = False
    label: bool = False  # a branch target: a basic block begins here
    regs: frozenset = frozenset()   # registers the operands name
    dests: frozenset = frozenset()  # a 128-bit global or generic load's destination registers


SASS_LINE = re.compile(r"^\s*/\*([0-9a-f]+)\*/\s*(?:@!?U?P[T0-9]+\s+)?"
                       r"([A-Z0-9_]+(?:\.[A-Z0-9_]+)*)\s*(.*?)\s*;")
SASS_MEM = {"LDG": "ldg", "STG": "stg", "LDS": "lds", "STS": "sts", "LD": "ld", "ST": "st",
            "LDL": "ldl", "STL": "stl",
            "LDGSTS": "async", "UBLKCP": "async", "UTMALDG": "async"}  # copies into shared memory
SASS_WIDTH = {"128": 128, "64": 64, "U8": 8, "S8": 8, "U16": 16, "S16": 16}


def sass_insn(addr, op, args, line):
    base, *mods = op.split(".")
    regs = set()
    for m in re.finditer(r"\bR(\d+)(\.64)?", args):  # R2.64: the pair R2, R3
        regs.update(range(int(m[1]), int(m[1]) + (2 if m[2] else 1)))
    ins = Insn(op, args, f"0x{addr}", line, regs=frozenset(regs), nop=base == "NOP")
    if base == "BRA" and (t := re.search(r"\((\.L\w+)\)", args)):
        ins.target = t[1]
    elif base == "CALL" and (t := re.search(r"`\(([^)]+)\)", args)):
        ins.call = re.sub(r"^\$__internal_\d+_\$", "", t[1])
    elif base == "MUFU":
        ins.mufu = mods[0] if mods else "?"
    elif base in SASS_MEM:
        ins.mem = SASS_MEM[base]
        ins.width = next((SASS_WIDTH[m] for m in mods if m in SASS_WIDTH), 32)
        if base in ("LDG", "LD") and ins.width == 128 and (d := re.match(r"R(\d+)", args)):
            ins.dests = frozenset(range(int(d[1]), int(d[1]) + 4))
    return ins


def undecoded_insn(addr, low, line):
    """A slot that nvdisasm 11.8 leaves blank (opcodes newer than it: VIADD, VIMNMX), from its
    encoding's low word: opcode bits 0-11, Rd bits 16-23, Ra 24-31, Rb 32-39 in the
    register-register form (opcode 0x2..); R255 is RZ."""
    fields = [16, 24] + ([32] if low >> 9 & 7 == 1 else [])
    regs = frozenset(r for r in (low >> f & 0xFF for f in fields) if r != 255)
    return Insn(f"?{low & 0xFFF:#05x}", "", f"0x{addr:04x}", line, regs=regs)


def parse_sass(text):
    """nvdisasm -hex -g's listing -> {mangled kernel: ([Insn], {label: index})}. The internal
    functions that follow a kernel in its section ($__internal_*) are not part of it."""
    functions, insns, labels, line, words = {}, [], {}, "", None
    for text_line in text.splitlines():
        if m := SASS_LINE.match(text_line):
            insns.append(sass_insn(*m.groups(), line))
            base, words = int(m[1], 16), 0
        elif (m := re.match(r"^\s*/\* (0x[0-9a-f]+) \*/\s*$", text_line)) and words is not None:
            # An instruction's high word, then (low, high) pairs of the slots left blank.
            words += 1
            if words % 2 == 0:
                insns.append(undecoded_insn(base + 8 * words, int(m[1], 16), line))
        elif m := re.match(r'\s*//## File "([^"]+)", line (\d+)', text_line):
            line = f"{os.path.basename(m[1])}:{m[2]}"
        elif m := re.match(r"^(\.L\w+):", text_line):
            labels[m[1]] = len(insns)
        elif m := re.match(r"^([^.\s/][^\s:]*):\s*$", text_line):  # a function begins
            insns, labels, words = [], {}, None
            if not m[1].startswith("$"):
                functions[m[1]] = (insns, labels)
    return functions


PTX_SPACES = {"global": "g", "shared": "s", "shared::cta": "s", "shared::cluster": "s",
              "local": "l"}  # the state space's letter in SASS' opcode: LDG, STS, LDL
PTX_BITS = {"8": 8, "16": 16, "32": 32, "64": 64, "128": 128}
PTX_MUFU = re.compile(r"^(ex2|lg2|rcp|rsqrt|sqrt|sin|cos|tanh)\.approx")


def ptx_insn(op, args, addr, line):
    parts = op.split(".")
    ins = Insn(op, args, addr, line, regs=frozenset(re.findall(r"%[a-z]+\d+", args)))
    if parts[0] == "bra":
        ins.target = args.strip()
    elif parts[0] == "call":
        ins.call = next((a for a in re.split(r"[\s,()]+", args)
                         if a and not re.match(r"%|param|retval", a)), "?")
    elif m := PTX_MUFU.match(op):
        ins.mufu = m[1]
    elif parts[0] == "cp" and "async" in parts:
        ins.mem = "async"
    elif parts[0] in ("ld", "st") and not {"param", "const"} & set(parts):
        ins.mem = parts[0] + next((PTX_SPACES[q] for q in parts if q in PTX_SPACES), "")
        vector = next((int(q[1:]) for q in parts if re.fullmatch(r"v\d", q)), 1)
        bits = next((PTX_BITS[q[1:]] for q in reversed(parts) if q[1:] in PTX_BITS), 32)
        ins.width = vector * bits
        if ins.mem in ("ldg", "ld") and ins.width == 128:
            ins.dests = frozenset(re.findall(r"%[a-z]+\d+", args.split("}")[0]))
    return ins


def parse_ptx(text):
    """PTX -> {mangled kernel: ([Insn], {label: index}, max threads)}. Statements that span
    lines (calls) are joined; directives and scopes are skipped."""
    files = dict(re.findall(r'^\s*\.file\s+(\d+)\s+"([^"]+)"', text, re.M))
    entries, lines = {}, iter(text.splitlines())
    for text_line in lines:
        if not (m := re.match(r"^\s*(?:\.visible\s+)?\.entry\s+([\w$]+)\s*\(", text_line)):
            continue
        insns, labels, maxntid, depth, stmt, line = [], {}, 0, 0, "", ""
        for text_line in lines:
            s = text_line.split("//")[0].strip()
            if t := re.match(r"\.maxntid\s+(\d+)\s*,\s*(\d+)\s*,\s*(\d+)", s):
                maxntid = int(t[1]) * int(t[2]) * int(t[3])
            elif t := re.match(r"\.loc\s+(\d+)\s+(\d+)", s):
                line = f"{os.path.basename(files.get(t[1], '?'))}:{t[2]}"
            elif s in ("{", "}"):
                depth += 1 if s == "{" else -1
                if depth == 0:
                    break
            elif depth and not stmt and (lab := re.match(r"^([\w$]+):$", s)):
                labels[lab[1]] = len(insns)
            elif depth and s:
                stmt += " " + s
                if ";" in stmt:
                    s, stmt = re.sub(r"^@!?%\w+\s+", "", stmt.split(";")[0].strip()), ""
                    if not s.startswith("."):
                        op, _, args = s.partition(" ")
                        insns.append(ptx_insn(op, args.strip(), f"#{len(insns)}", line))
        entries[m[1]] = (insns, labels, maxntid)
    return entries


# ------------------------------------------------------------------------------------------------
# Loops and their figures; occupancy

@dataclasses.dataclass
class Loop:
    start: int  # index of its first instruction
    end: int    # index of its (last) backward branch
    insns: list

    def contains(self, other):
        return self is not other and self.start <= other.start and other.end <= self.end

    @property
    def instructions(self):
        return sum(1 for i in self.insns if not i.nop)

    def counted(self):
        blank = sum(1 for i in self.insns if i.op.startswith("?"))
        return f"{self.instructions}" + (f" ({blank} blank)" if blank else "")

    @property
    def in_flight(self):
        best, batch, pending = 0, 0, set()
        for i in self.insns:
            if i.label or pending & i.regs:  # a block begins, or a load is used: the batch ends
                best, batch, pending = max(best, batch), 0, set()
            if i.dests:
                batch += 1
                pending |= i.dests
            if i.target or i.call:  # so does the block
                best, batch, pending = max(best, batch), 0, set()
        return max(best, batch)

    def widths(self, *kinds):
        c = collections.Counter(i.width for i in self.insns if i.mem in kinds)
        return ", ".join(f"{n}×{w}" for w, n in sorted(c.items(), reverse=True)) or "–"

    def global_loads(self):
        copies = sum(1 for i in self.insns if i.mem == "async")
        return self.widths("ldg") + (f" + {copies} async copies" if copies else "")

    def where(self, loops):
        return " ".join(w for w, test in (
            ("innermost", not any(self.contains(o) for o in loops)),
            ("outermost", not any(o.contains(self) for o in loops))) if test)

    def mufu(self):
        c = collections.Counter(i.mufu for i in self.insns if i.mufu)
        return ", ".join(f"{n} {k}" for k, n in sorted(c.items())) or "–"

    def calls(self):
        return ", ".join(sorted({i.call for i in self.insns if i.call})) or "–"


def find_loops(insns, labels):
    for j in labels.values():  # mark the blocks' first instructions, for Loop.in_flight
        if j < len(insns):
            insns[j].label = True
    ends = {}
    for i, ins in enumerate(insns):
        j = labels.get(ins.target)
        if j is not None and j < i:  # j == i: the `BRA self` after EXIT, not a loop
            ends[j] = max(ends.get(j, i), i)
    # A branch back into a loop's middle from code that ptxas placed after it (a warp shuffle's
    # divergent path, BRA.DIV's target, sits at the kernel's end) closes no loop: of two loops
    # that overlap without nesting, the one that begins first is the loop.
    loops = []
    for s, e in sorted(ends.items()):
        if not any(o.start < s <= o.end < e for o in loops):
            loops.append(Loop(s, e, insns[s:e + 1]))
    return loops


def has(loop, what, mode):
    if isinstance(what, dict):
        return what.get(mode) is not None and any(
            re.search(what[mode], f"{i.op} {i.args}") for i in loop.insns)
    if what == "mufu":
        return any(i.mufu for i in loop.insns)
    kinds = ("ldg", "lds", "ld") if what == "load128" else (what[:-3],)  # "stg128" -> stg
    return any(i.mem in kinds and i.width == 128 for i in loop.insns)


def select_loop(loops, rule, mode):
    kind = rule.get("loops", "innermost")
    if kind == "innermost":
        loops = [loop for loop in loops if not any(loop.contains(o) for o in loops)]
    elif kind == "outermost":
        loops = [loop for loop in loops if not any(o.contains(loop) for o in loops)]
    for what in rule.get("having", []):
        loops = [loop for loop in loops if has(loop, what, mode)]
    index = rule.get("index", 0)
    return loops[index] if -len(loops) <= index < len(loops) else None


def occupancy(regs, threads, shared):
    """(fraction of the SM's warps, blocks per SM, what limits them) on an H200."""
    h, warps = H200, math.ceil(threads / 32)
    per_warp = math.ceil(max(regs, 1) * 32 / h["reg_unit"]) * h["reg_unit"]
    limits = {"warps": h["max_warps"] // warps, "blocks": h["max_blocks"],
              "registers": h["regs_per_sm"] // h["partitions"] // per_warp * h["partitions"]
              // warps}
    if shared > h["shared_per_block"]:
        limits["shared memory"] = 0
    elif shared:
        unit = h["shared_unit"]
        limits["shared memory"] = h["shared_per_sm"] // (
            math.ceil((shared + h["shared_reserved"]) / unit) * unit)
    limit = min(limits, key=limits.get)
    return limits[limit] * warps / h["max_warps"], limits[limit], limit


# ------------------------------------------------------------------------------------------------
# The manifest and the verdict

def check_keys(obj, keys, what):
    required, optional = keys
    if not isinstance(obj, dict):
        raise ReportError(f"manifest: {what} is not an object")
    if required - set(obj) or set(obj) - required - optional:
        raise ReportError(f"manifest: {what} lacks {sorted(required - set(obj))} or has unknown "
                          f"keys {sorted(set(obj) - required - optional)}")


def load_manifest(path):
    try:
        with open(path) as f:
            m = json.load(f)
    except (OSError, ValueError) as e:
        raise ReportError(f"manifest {path}: {e}")
    check_keys(m, ({"sources", "kernels"}, {"comment", "includes"}), "the top level")
    for k in m["kernels"]:
        check_keys(k, KERNEL_KEYS, f"kernel {k.get('name')!r}")
        for p in k["phases"]:
            check_keys(p, PHASE_KEYS, f"a phase of {k['name']!r}")
            check_keys(p["select"], RULE_KEYS, f"phase {p['name']!r}'s select")
            for what in p["select"].get("having", []):
                if not (what in HAVING if isinstance(what, str) else
                        isinstance(what, dict) and what and set(what) <= {"sass", "ptx"}):
                    raise ReportError(f"manifest: unknown 'having' {what!r}")
            if p["select"].get("loops", "innermost") not in ("innermost", "outermost", "any"):
                raise ReportError(f"manifest: phase {p['name']!r}: unknown 'loops'")
    return m


@dataclasses.dataclass
class Case:
    kernel: Kernel
    spec: dict
    phases: list   # [(phase spec, Loop or None)]
    occupancy: tuple
    failures: list
    open_misses: list = dataclasses.field(default_factory=list)  # reported, not failed ("open")

    @property
    def per_element(self):
        v = [l.instructions / p["elements"] if l else None for p, l in self.phases]
        return sum(v) if v and None not in v else None

    def min_in_flight(self, p):
        return p.get("min_loads_in_flight", self.spec.get("min_loads_in_flight", 0))


def evaluate(kernels, manifest, mode):
    """Every manifest case against its kernels; returns the cases and the stale entries."""
    cases, stale = [], []
    for spec in manifest["kernels"]:
        rx = re.compile(spec["name"])
        matched = [k for k in kernels
                   if rx.fullmatch(k.name) or rx.fullmatch(k.name.replace(", ", ","))]
        if not matched:
            stale.append(f"manifest kernel {spec['name']!r} matches no kernel of the sources")
        for k in matched:
            fails, threads, dynamic = [], spec["threads"], spec.get("dynamic_shared", 0)
            if dynamic == "max":
                dynamic = H200["shared_per_block"] - k.static_shared
            if k.max_threads and k.max_threads != threads:
                fails.append(f"manifest: {threads} threads, __launch_bounds__: {k.max_threads}")
            if k.spill_stores or k.spill_loads:
                fails.append(f"spills ({k.spill_stores} B stored, {k.spill_loads} B loaded)")
            if k.stack:
                fails.append(f"{k.stack} B stack frame (local memory)")
            occ = occupancy(k.registers, threads, k.static_shared + dynamic)
            if occ[0] < spec.get("min_occupancy", 0):
                fails.append(f"occupancy {occ[0]:.0%} < {spec['min_occupancy']:.0%} ({occ[2]})")
            loops = find_loops(*(k.sass if mode == "sass" else k.ptx))
            phases = [(p, select_loop(loops, p["select"], mode)) for p in spec["phases"]]
            case = Case(k, spec, phases, occ, fails)
            if mode == "sass":
                misses = []  # of the budget and loads in flight: an "open" case reports them
                for p, l in case.phases:
                    if l is None:
                        fails.append(f"phase {p['name']!r}: no loop matches {p['select']}")
                    elif l.in_flight < case.min_in_flight(p):
                        misses.append(f"phase {p['name']!r}: {l.in_flight} 16-byte loads in "
                                      f"flight < {case.min_in_flight(p)}")
                if case.per_element is not None and case.per_element > spec["budget"]:
                    misses.append(f"{case.per_element:.1f} instructions/element > "
                                  f"{spec['budget']}")
                if "open" not in spec:
                    fails.extend(misses)
                elif misses:
                    case.open_misses = misses
                else:  # an open case that meets its budget must say so in the manifest
                    fails.append("meets its budget now: remove its 'open' note")
            cases.append(case)
    return cases, stale


# ------------------------------------------------------------------------------------------------
# The report

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
            key = (c.kernel.mangled, p["name"], l and l.start, p["elements"])
            if key in seen:
                continue  # another case of the same kernel and loop
            seen.add(key)
            if l is None:
                rows.append([f"`{c.kernel.name}`", p["name"], "not found"] + ["–"] * 11)
                continue
            rows.append([f"`{c.kernel.name}`", p["name"], f"{l.insns[0].addr}–{l.insns[-1].addr}",
                         l.insns[-1].line or "–", l.counted(), p["elements"],
                         f"{l.instructions / p['elements']:.1f}", l.global_loads(), l.widths("stg"),
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
        "branch inside counted (an upper bound for a body with branches), over the elements one "
        "iteration processes per thread, summed over the phases. Loads in flight: the most "
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


# ------------------------------------------------------------------------------------------------

def disassemble(nvdisasm, cubin):
    """SASS of a cubin, through a copy patched for an nvdisasm older than the compiler."""
    with open(cubin, "rb") as f:
        data = bytearray(f.read())
    if data[:4] != b"\x7fELF":
        raise ReportError(f"{cubin} is not an ELF file")
    data[8] = 7
    data[48:52] = (0x005A055A).to_bytes(4, "little")
    with open(cubin + ".patched", "wb") as f:
        f.write(data)
    return run([nvdisasm, "-c", "-g", "-hex", cubin + ".patched"])


def version(tool):
    m = re.search(r"release (\S+), (V\S+)", run([tool, "--version"]))
    return f"{os.path.basename(tool)} {m[1]} ({m[2]})" if m else os.path.basename(tool)


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
        enums = enumerators([os.path.join(a.source_dir, s) for s in manifest["sources"]] + headers)
        for k in kernels:
            k.name = short_name(names[k.mangled], enums)
        if a.list_loops:
            list_loops([k for k in kernels if re.search(a.list_loops, k.name)], mode)
            return 0
        cases, stale = evaluate(kernels, manifest, mode)
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
