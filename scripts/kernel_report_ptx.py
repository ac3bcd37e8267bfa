"""The kernel report's PTX: the fallback when no disassembler is found, read into the same
instructions as SASS, and each kernel's __launch_bounds__ (.maxntid)."""
import os
import re

from kernel_report_loops import Insn


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
