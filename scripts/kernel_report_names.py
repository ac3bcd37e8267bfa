"""The kernel report's kernel names: c++filt's demangling, shortened to what the manifest's name
rules match, with enum template arguments read as their enumerators."""
import re
import subprocess


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
