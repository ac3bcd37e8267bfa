"""The kernel report's instructions and loops: the one shape SASS and PTX are read into, so that
loops and their figures have one code path; the loops of a kernel, their figures (instructions,
access widths, MUFU ops, loads in flight) and the manifest's rules that pick one."""
import collections
import dataclasses
import re


@dataclasses.dataclass
class Insn:
    op: str           # opcode with its modifiers: LDG.E.128, ld.global.nc.v4.u32
    args: str         # operands
    addr: str = ""    # SASS: its address; PTX: its index
    line: str = ""    # source file:line (-lineinfo)
    frames: tuple = ()  # SASS: `line` and the file:line of every call that inlined it there
    guarded: bool = False  # SASS: under a predicate (@P0), so issued whether or not it runs
    target: str = ""  # branch target label
    mem: str = ""     # ldg, stg, lds, sts, ld, st (generic), ldl, stl (local), async, or ""
    width: int = 0    # access width in bits
    mufu: str = ""    # EX2, LG2, RCP, TANH, ... (PTX: ex2, lg2, ... .approx)
    call: str = ""
    nop: bool = False
    label: bool = False  # a branch target: a basic block begins here
    regs: frozenset = frozenset()   # registers the operands name
    dests: frozenset = frozenset()  # a 128-bit global or generic load's destination registers


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

    def blocks(self):
        """The loop's basic blocks, in program order: a branch target begins one, a branch or an
        EXIT ends one."""
        out, block = [], []
        for i in self.insns:
            if i.label and block:
                out.append(block)
                block = []
            block.append(i)
            if i.target or i.op.startswith("EXIT"):
                out.append(block)
                block = []
        return out + ([block] if block else [])

    def cold_blocks(self, regions):
        """The blocks of code in `regions` ({name: (file, first line, last line)}): those whose
        instructions all come from a region's lines (itself or through a call made there: SASS's
        inlining chain), and those that at least half do, none of those under a predicate (a
        branch's own aside). The others in such a block are what ptxas copies or moves into a
        branch's blocks (a loop's step after a `continue`, an address computed there for a later
        store); region code under a predicate beside other code was merged into the block around
        it, which issues it whether or not it runs."""
        def inside(where):
            name, n = where.rsplit(":", 1)
            return any(name == f and a <= int(n) <= b for f, a, b in regions.values())

        cold = []
        for b in self.blocks():
            code = [i for i in b if not i.nop]
            ours = [i for i in code if any(inside(w) for w in i.frames)]
            merged = any(i.guarded and not i.target for i in ours)
            if code and (len(ours) == len(code) or (2 * len(ours) >= len(code) and not merged)):
                cold.append(code)
        return cold

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
