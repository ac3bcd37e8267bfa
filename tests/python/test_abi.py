"""The ctypes mirror against the C header and the library: every struct's size (through the init
calls' struct_size, and through the compiler), every field's offset, every enum value; and the
library's discovery, with its messages when it is missing."""

import ctypes
import os
import re
import shutil
import subprocess
import sys

import pytest

import fusedloss
from conftest import REPO
from fusedloss import _abi

C_NAMES = {
    "bce": "fusedloss_bce_params",
    "sigmoid_focal": "fusedloss_sigmoid_focal_params",
    "mse": "fusedloss_mse_params",
    "cross_entropy": "fusedloss_cross_entropy_params",
    "softmax_focal": "fusedloss_softmax_focal_params",
    "linear_cross_entropy": "fusedloss_linear_cross_entropy_params",
    "cross_entropy_shard": "fusedloss_cross_entropy_shard_params",
}
ENUMS = {
    "FUSEDLOSS_SUCCESS": _abi.SUCCESS,
    "FUSEDLOSS_INVALID_ARGUMENT": _abi.INVALID_ARGUMENT,
    "FUSEDLOSS_INVALID_TARGET": _abi.INVALID_TARGET,
    "FUSEDLOSS_NOT_IMPLEMENTED": _abi.NOT_IMPLEMENTED,
    "FUSEDLOSS_CUDA_ERROR": _abi.CUDA_ERROR,
    "FUSEDLOSS_DEVICE_CPU": _abi.DEVICE_CPU,
    "FUSEDLOSS_DEVICE_CUDA": _abi.DEVICE_CUDA,
    "FUSEDLOSS_FLOAT32": _abi.FLOAT32,
    "FUSEDLOSS_FLOAT16": _abi.FLOAT16,
    "FUSEDLOSS_BFLOAT16": _abi.BFLOAT16,
    "FUSEDLOSS_FLOAT64": _abi.FLOAT64,
    "FUSEDLOSS_INT32": _abi.INT32,
    "FUSEDLOSS_INT64": _abi.INT64,
    "FUSEDLOSS_REDUCTION_NONE": _abi.REDUCTIONS["none"],
    "FUSEDLOSS_REDUCTION_MEAN": _abi.REDUCTIONS["mean"],
    "FUSEDLOSS_REDUCTION_SUM": _abi.REDUCTIONS["sum"],
    "FUSEDLOSS_EMPTY_MEAN_NAN": _abi.EMPTY_MEAN["nan"],
    "FUSEDLOSS_EMPTY_MEAN_ZERO": _abi.EMPTY_MEAN["zero"],
    "FUSEDLOSS_WEIGHT_PER_ELEMENT": _abi.WEIGHT_PER_ELEMENT,
    "FUSEDLOSS_WEIGHT_PER_CLASS": _abi.WEIGHT_PER_CLASS,
    "FUSEDLOSS_SHARD_SUMMARY_MAX": _abi.SUMMARY_MAX,
    "FUSEDLOSS_SHARD_SUMMARY_REFERENCE": _abi.SUMMARY_REFERENCE,
    "FUSEDLOSS_SHARD_SUMMARY_SUM_EXP": _abi.SUMMARY_SUM_EXP,
    "FUSEDLOSS_SHARD_SUMMARY_FIELDS": _abi.SUMMARY_FIELDS,
}


@pytest.mark.parametrize("name", _abi.STRUCTS)
def test_struct_size_matches_the_init_calls(name):
    """What the library's init call writes into struct_size is sizeof the C struct."""
    lib = _abi.load()
    assert lib.params(name).struct_size == ctypes.sizeof(_abi.STRUCTS[name])


@pytest.mark.parametrize("name", _abi.PARAMS)
def test_init_calls_fill_pytorchs_defaults(name):
    p = _abi.load().params(name)
    assert p.device == _abi.DEVICE_CPU
    assert p.reduction == _abi.REDUCTIONS["none" if name == "sigmoid_focal" else "mean"]
    assert p.grad_scale == 1.0 and p.empty_mean == _abi.EMPTY_MEAN["nan"]
    if name in ("cross_entropy", "softmax_focal"):
        assert p.ignore_index == -100 and p.spatial == 1
    if name in ("sigmoid_focal",):
        assert (p.alpha, p.gamma) == (0.25, 2.0)


def compiled_layout(tmp_path):
    """sizeof of every mirrored struct, offsetof and sizeof of each of its fields, and every enum
    value, as the C compiler sees include/fusedloss/fusedloss.h."""
    compiler = shutil.which(os.environ.get("CC", "cc")) or shutil.which("gcc")
    if compiler is None:
        pytest.skip("no C compiler to read the header's layout with")
    lines = ["#include <stddef.h>", "#include <stdio.h>", '#include "fusedloss/fusedloss.h"',
             "int main(void) {"]

    def show(key, expression):
        lines.append(f'  printf("{key} %zu\\n", (size_t)({expression}));')

    structs = dict(C_NAMES, error="fusedloss_error")
    mirrors = dict(_abi.STRUCTS, error=_abi.Error)
    for name, c_name in structs.items():
        show(f"{name}.sizeof", f"sizeof({c_name})")
        for field, _ in mirrors[name]._fields_:
            show(f"{name}.{field}", f"offsetof({c_name}, {field})")
            show(f"{name}.{field}.sizeof", f"sizeof((({c_name}*)0)->{field})")
    for enum in ENUMS:
        show(enum, enum)
    lines += ["  return 0;", "}"]
    source, binary = tmp_path / "layout.c", tmp_path / "layout"
    source.write_text("\n".join(lines) + "\n")
    subprocess.run([compiler, "-std=c99", "-I", str(REPO / "include"), str(source), "-o",
                    str(binary)], check=True, capture_output=True)
    output = subprocess.run([str(binary)], check=True, capture_output=True, text=True).stdout
    return {key: int(value) for key, value in (line.split() for line in output.splitlines())}


def test_every_field_offset_and_enum_matches_the_header(tmp_path):
    layout = compiled_layout(tmp_path)
    mirrors = dict(_abi.STRUCTS, error=_abi.Error)
    for name, mirror in mirrors.items():
        assert ctypes.sizeof(mirror) == layout[f"{name}.sizeof"], name
        for field, _ in mirror._fields_:
            where = f"{name}.{field}"
            assert getattr(mirror, field).offset == layout[where], where
            assert getattr(mirror, field).size == layout[f"{where}.sizeof"], where
    for enum, value in ENUMS.items():
        assert value == layout[enum], enum


def import_in_subprocess(tmp_path, environment):
    """Imports a copy of the package that has no build tree beside it, in a fresh interpreter."""
    shutil.copytree(REPO / "python" / "fusedloss", tmp_path / "repo" / "python" / "fusedloss")
    env = {k: v for k, v in os.environ.items() if k != "FUSEDLOSS_LIBRARY"}
    env.update(environment, PYTHONPATH=str(tmp_path / "repo" / "python"))
    return subprocess.run([sys.executable, "-c", "import fusedloss"], env=env,
                          capture_output=True, text=True)


def test_a_missing_library_fails_the_import_naming_where_it_looked(tmp_path):
    result = import_in_subprocess(tmp_path, {})
    assert result.returncode != 0
    assert "LibraryNotFoundError" in result.stderr
    assert "$FUSEDLOSS_LIBRARY is not set" in result.stderr
    for where in ("python/fusedloss/libfusedloss.so", "build/default/libfusedloss.so",
                  "build/release/libfusedloss.so"):
        assert str(tmp_path / "repo" / where) in result.stderr


def test_the_packages_own_library_comes_before_the_build_trees(tmp_path):
    """`pip install .` ships libfusedloss.so inside the package: that copy is found, unset
    $FUSEDLOSS_LIBRARY, with no build tree beside it."""
    package = tmp_path / "repo" / "python" / "fusedloss"
    shutil.copytree(REPO / "python" / "fusedloss", package)
    shutil.copy2(fusedloss.library_path, package / "libfusedloss.so")
    env = {k: v for k, v in os.environ.items() if k != "FUSEDLOSS_LIBRARY"}
    env["PYTHONPATH"] = str(package.parent)
    result = subprocess.run(
        [sys.executable, "-c", "import fusedloss; print(fusedloss.library_path)"],
        env=env, capture_output=True, text=True, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == str(package / "libfusedloss.so")


def test_fusedloss_library_is_used_and_checked(tmp_path):
    missing = tmp_path / "nowhere" / "libfusedloss.so"
    result = import_in_subprocess(tmp_path, {"FUSEDLOSS_LIBRARY": str(missing)})
    assert result.returncode != 0 and f"$FUSEDLOSS_LIBRARY is '{missing}'" in result.stderr
    (tmp_path / "not-a-library.so").write_text("text")
    shutil.rmtree(tmp_path / "repo")
    result = import_in_subprocess(tmp_path,
                                  {"FUSEDLOSS_LIBRARY": str(tmp_path / "not-a-library.so")})
    assert result.returncode != 0 and "cannot load" in result.stderr
    shutil.rmtree(tmp_path / "repo")
    result = import_in_subprocess(tmp_path, {"FUSEDLOSS_LIBRARY": str(fusedloss.library_path)})
    assert result.returncode == 0, result.stderr


def test_the_version_has_one_place():
    """include/fusedloss/version.h is the version's one place: the library reports it, the
    package takes it from the library."""
    header = (REPO / "include" / "fusedloss" / "version.h").read_text()
    declared = ".".join(re.search(rf"#define FUSEDLOSS_VERSION_{part} ([0-9]+)", header).group(1)
                        for part in ("MAJOR", "MINOR", "PATCH"))
    assert fusedloss.__version__ == declared
