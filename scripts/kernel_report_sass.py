"""The kernel report's SASS: a cubin disassembled by an nvdisasm older than the compiler (through
a patched copy), its listing read into instructions, blank slots included."""
import os
import re

from kernel_report_compile import ReportError, run
from kernel_report_loops import Insn


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
    return run([nvdisasm, "-c", "-gi", "-hex", cubin + ".patched"])


SASS_LINE = re.compile(r"^\s*/\*([0-9a-f]+)\*/\s*(@!?U?P[T0-9]+\s+)?"
                       r"([A-Z0-9_]+(?:\.[A-Z0-9_]+)*)\s*(.*?)\s*;")
SASS_MEM = {"LDG": "ldg", "STG": "stg", "LDS": "lds", "STS": "sts", "LD": "ld", "ST": "st",
            "LDL": "ldl", "STL": "stl",
            "LDGSTS": "async", "UBLKCP": "async", "UTMALDG": "async"}  # copies into shared memory
SASS_WIDTH = {"128": 128, "64": 64, "U8": 8, "S8": 8, "U16": 16, "S16": 16}


def sass_insn(addr, guard, op, args, line, frames):
    base, *mods = op.split(".")
    regs = set()
    for m in re.finditer(r"\bR(\d+)(\.64)?", args):  # R2.64: the pair R2, R3
        regs.update(range(int(m[1]), int(m[1]) + (2 if m[2] else 1)))
    ins = Insn(op, args, f"0x{addr}", line, frames=frames, regs=frozenset(regs),
               nop=base == "NOP", guarded=bool(guard) and "PT" not in guard)
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


def undecoded_insn(addr, low, line, frames):
    """A slot that nvdisasm 11.8 leaves blank (opcodes newer than it: VIADD, VIMNMX), from its
    encoding's low word: opcode bits 0-11, Rd bits 16-23, Ra 24-31, Rb 32-39 in the
    register-register form (opcode 0x2..); R255 is RZ."""
    fields = [16, 24] + ([32] if low >> 9 & 7 == 1 else [])
    regs = frozenset(r for r in (low >> f & 0xFF for f in fields) if r != 255)
    return Insn(f"?{low & 0xFFF:#05x}", "", f"0x{addr:04x}", line, frames=frames, regs=regs)


def parse_sass(text):
    """nvdisasm -hex -gi's listing -> {mangled kernel: ([Insn], {label: index})}. The internal
    functions that follow a kernel in its section ($__internal_*) are not part of it. -gi gives
    each instruction's source line and, for code inlined there, the chain of calls that brought it
    (one "//## File" line a level, the innermost first)."""
    functions, insns, labels, words = {}, [], {}, None
    line, frames, chain_open = "", (), False
    for text_line in text.splitlines():
        if m := SASS_LINE.match(text_line):
            insns.append(sass_insn(*m.groups(), line, frames))
            base, words, chain_open = int(m[1], 16), 0, False
        elif (m := re.match(r"^\s*/\* (0x[0-9a-f]+) \*/\s*$", text_line)) and words is not None:
            # An instruction's high word, then (low, high) pairs of the slots left blank.
            words += 1
            if words % 2 == 0:
                insns.append(undecoded_insn(base + 8 * words, int(m[1], 16), line, frames))
        elif m := re.match(r'\s*//## File "([^"]+)", line (\d+)'
                           r'(?: inlined at "([^"]+)", line (\d+))?', text_line):
            here = f"{os.path.basename(m[1])}:{m[2]}"
            called = (f"{os.path.basename(m[3])}:{m[4]}",) if m[3] else ()
            if not chain_open:  # a new location: its innermost level first
                line, frames, chain_open = here, (here, *called), True
            else:
                frames += (here, *called)
        elif m := re.match(r"^(\.L\w+):", text_line):
            labels[m[1]] = len(insns)
        elif m := re.match(r"^([^.\s/][^\s:]*):\s*$", text_line):  # a function begins
            insns, labels, words = [], {}, None
            if not m[1].startswith("$"):
                functions[m[1]] = (insns, labels)
    return functions
