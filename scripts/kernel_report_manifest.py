"""The kernel report's manifest (kernels/hot_kernels.json, defined in kernel_report.py's
docstring), its checks, and the verdict of every budgeted case against its kernels."""
import dataclasses
import json
import os
import re

from kernel_report_compile import Kernel, ReportError
from kernel_report_loops import find_loops, select_loop
from kernel_report_occupancy import H200, occupancy

# The manifest's keys: required, then optional.
KERNEL_KEYS = ({"name", "threads", "budget", "phases"},
               {"case", "dynamic_shared", "min_loads_in_flight", "min_occupancy", "open"})
PHASE_KEYS = ({"name", "select", "elements"}, {"min_loads_in_flight", "cold"})
RULE_KEYS = (set(), {"loops", "having", "index"})
HAVING = {"ldg128", "lds128", "ld128", "load128", "stg128", "sts128", "mufu"}


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


def cold_regions(paths):
    """The sources' cold regions: {name: (file name, first line, last line)}, the lines between a
    `// cold: NAME` comment and the next `// cold end`."""
    regions = {}
    for path in paths:
        with open(path) as f:
            lines = f.read().splitlines()
        begun = None
        for n, text in enumerate(lines, 1):
            if m := re.match(r"\s*// cold: (.+?)\s*$", text):
                if begun:
                    raise ReportError(f"{path}:{n}: cold region {m[1]!r} inside {begun[0]!r}")
                begun = (m[1], n + 1)
            elif re.match(r"\s*// cold end\s*$", text):
                if not begun:
                    raise ReportError(f"{path}:{n}: 'cold end' without a region")
                if begun[0] in regions:
                    raise ReportError(f"{path}: cold region {begun[0]!r} defined twice")
                regions[begun[0]] = (os.path.basename(path), begun[1], n - 1)
                begun = None
        if begun:
            raise ReportError(f"{path}: cold region {begun[0]!r} has no end")
    return regions


@dataclasses.dataclass
class Case:
    kernel: Kernel
    spec: dict
    phases: list   # [(phase spec, Loop or None)]
    occupancy: tuple
    failures: list
    open_misses: list = dataclasses.field(default_factory=list)  # reported, not failed ("open")
    cold: dict = dataclasses.field(default_factory=dict)  # phase name: instructions skipped

    def counted(self, p, loop):
        """A phase's instructions on the case's path: its loop's, less its cold blocks'."""
        return loop.instructions - self.cold.get(p["name"], 0)

    @property
    def per_element(self):
        v = [self.counted(p, l) / p["elements"] if l else None for p, l in self.phases]
        return sum(v) if v and None not in v else None

    def min_in_flight(self, p):
        return p.get("min_loads_in_flight", self.spec.get("min_loads_in_flight", 0))


def evaluate(kernels, manifest, mode, regions):
    """Every manifest case against its kernels; returns the cases and the stale entries.
    `regions`: the sources' cold regions (cold_regions)."""
    for spec in manifest["kernels"]:
        for p in spec["phases"]:
            for name in p.get("cold", []):
                if name not in regions:
                    raise ReportError(f"manifest: phase {p['name']!r} of {spec['name']!r} names "
                                      f"cold region {name!r}, which no source marks")
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
                        continue
                    for name in p.get("cold", []):
                        blocks = l.cold_blocks({name: regions[name]})
                        if not blocks:
                            fails.append(f"phase {p['name']!r}: cold region {name!r} is no "
                                         "block of its loop")
                        case.cold[p["name"]] = case.cold.get(p["name"], 0) + sum(map(len, blocks))
                    if l.in_flight < case.min_in_flight(p):
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
