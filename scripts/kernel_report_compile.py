"""The kernel report's compiling: running a tool (its failure is a ReportError, exit 2), nvcc's
one run per source (cubin, PTX, ptxas -v's log), the resources ptxas reports per kernel, and the
tools' versions for the report."""
import dataclasses
import os
import re
import subprocess
import tempfile

NVCC_FLAGS = ["-O3", "-std=c++17", "-arch=sm_90", "-lineinfo"]


class ReportError(Exception):
    """A tool or the manifest failed, so there is no report (exit 2)."""


def run(cmd):
    p = subprocess.run(cmd, capture_output=True, text=True)
    if p.returncode != 0:
        raise ReportError(f"{' '.join(cmd)} failed ({p.returncode}):\n{p.stdout}{p.stderr}")
    return p.stdout + p.stderr


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


def version(tool):
    m = re.search(r"release (\S+), (V\S+)", run([tool, "--version"]))
    return f"{os.path.basename(tool)} {m[1]} ({m[2]})" if m else os.path.basename(tool)
