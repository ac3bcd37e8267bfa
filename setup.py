"""Builds the shared library with CMake into the package, for ``pip install .``.

The library is configured Release, without tests, tools or benchmarks; CUDA follows CMake's
default (on when the toolkit is found, for sm_80 and sm_90). ``$FUSEDLOSS_CMAKE_ARGS`` adds CMake
arguments, e.g. ``-DFUSEDLOSS_WITH_CUDA=OFF`` for the CPU reference alone or
``-DCMAKE_CUDA_ARCHITECTURES=90``. The version is include/fusedloss/version.h's.
"""

import os
import re
import shlex
import shutil
import subprocess
from pathlib import Path

from setuptools import Distribution, setup
from setuptools.command.build_py import build_py

ROOT = Path(__file__).resolve().parent


def version():
    """major.minor.patch from include/fusedloss/version.h, the version's one place."""
    text = (ROOT / "include" / "fusedloss" / "version.h").read_text()
    return ".".join(re.search(rf"#define FUSEDLOSS_VERSION_{part} ([0-9]+)", text).group(1)
                    for part in ("MAJOR", "MINOR", "PATCH"))


class build_with_library(build_py):
    """build_py, then libfusedloss.so built by CMake and copied into the built package."""

    def run(self):
        super().run()
        build = Path(self.get_finalized_command("build").build_temp) / "cmake"
        configure = ["cmake", "-S", str(ROOT), "-B", str(build), "-DCMAKE_BUILD_TYPE=Release",
                     "-DFUSEDLOSS_BUILD_TESTS=OFF", "-DFUSEDLOSS_BUILD_TOOLS=OFF",
                     "-DFUSEDLOSS_BUILD_BENCH=OFF"]
        if shutil.which("ninja"):
            configure += ["-G", "Ninja"]
        configure += shlex.split(os.environ.get("FUSEDLOSS_CMAKE_ARGS", ""))
        subprocess.run(configure, check=True)
        subprocess.run(["cmake", "--build", str(build), "--target", "fusedloss_shared"],
                       check=True)
        target = Path(self.build_lib) / "fusedloss"
        target.mkdir(parents=True, exist_ok=True)
        shutil.copy2(build / "libfusedloss.so", target / "libfusedloss.so")


class BinaryDistribution(Distribution):
    """A wheel for one platform: the package carries a shared library."""

    def has_ext_modules(self):
        return True


setup(version=version(), cmdclass={"build_py": build_with_library},
      distclass=BinaryDistribution)
