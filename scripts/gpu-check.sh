#!/usr/bin/env bash
# scripts/gpu-check.sh: the one command a developer with a GPU runs.
#
# The suite is CTest's: the gpu_check install component (cmake/FusedlossGpuCheck.cmake) holds the
# test and benchmark binaries, the libraries they need and a CTest file of labelled tests
# (tests/gpu-check/CTestTestfile.cmake.in). This script builds and installs it, runs a stage of it
# with CTest, and writes docs/gpu-report.md from CTest's JUnit output and the tests' result files
# (scripts/gpu_report.py).
#
# Usage (from anywhere; it works in the repository root):
#   scripts/gpu-check.sh --package DIR
#       On a machine WITHOUT a GPU that has GoogleTest and Google Benchmark: builds the `default`
#       preset (sm_90) and installs the library, the tool and the gpu_check component into DIR,
#       with DIR/BUILD_INFO.json. DIR is what a GPU machine with neither library carries.
#   scripts/gpu-check.sh --prebuilt DIR --stage STAGE --results RESULTS
#       On the GPU machine: runs STAGE of DIR's suite, its result files in RESULTS (made if
#       missing), then writes RESULTS/gpu-report.md and docs/gpu-report.md from every stage in
#       RESULTS of the same build.
#   scripts/gpu-check.sh --stage STAGE --results RESULTS
#       On a GPU machine that has both libraries: packages into build/gpu-check-package, then runs.
#   scripts/gpu-check.sh --merge RESULTS [RESULTS...]
#       Anywhere: docs/gpu-report.md from the stages of several RESULTS folders (one build's).
#
# STAGE: tests (CTest labels cpu, gpu, slow, python, bench: every test, validate on the GPU, the
# headline benchmark rows with the forced tiers, PyTorch eager and torch.compile beside the
# library; 7 minutes) or sanitize (label sanitize: memcheck, racecheck, initcheck and synccheck,
# one CTest test each; 4 minutes). Run them as two calls back to back. GPU_CHECK_BUDGET (seconds,
# default 420 for tests and 240 for sanitize) sets CTest's stop time, so that the report is
# written inside the call. Exit status: 0 when the stage passed, 1 when it failed, 2 on a usage
# error, 3 when RESULTS holds stages of different builds.
set -euo pipefail

repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$repo"

# die MESSAGE [STATUS]
die() {
  echo "gpu-check: $1" >&2
  exit "${2:-1}"
}
usage() { sed -n '2,/^set -euo/p' "${BASH_SOURCE[0]}" | sed -e '$d' -e 's/^# \{0,1\}//'; }

mode=build dir="" stage="" results="" merge_dirs=()
while (($#)); do
  case $1 in
    --package | --prebuilt | --stage | --results)
      (($# >= 2)) || die "$1 needs a value" 2
      case $1 in
        --package | --prebuilt) mode=${1#--} dir=$2 ;;
        --stage) stage=$2 ;;
        --results) results=$2 ;;
      esac
      shift 2
      ;;
    --merge)
      mode=merge
      shift
      while (($#)) && [[ $1 != --* ]]; do merge_dirs+=("$1") && shift; done
      ((${#merge_dirs[@]})) || die "--merge needs at least one folder" 2
      ;;
    -h | --help) usage && exit 0 ;;
    *) die "unknown argument '$1' (see --help)" 2 ;;
  esac
done

report() { python3 scripts/gpu_report.py report --out docs/gpu-report.md "$@"; }

# The CUDA toolkit's library folders (NCCL's and cuBLASLt's, which the package leaves out).
toolkit_libraries() {
  local root
  root=$(dirname "$(dirname "$(command -v nvcc || echo /usr/local/cuda/bin/nvcc)")")
  echo "$root/lib64:$root/lib"
}

# Builds the default preset with the tests, the tool and the benchmarks, and installs the library,
# the tool and the gpu_check component into $1.
package() {
  local out=$1 build=$repo/build/default
  [[ -n $out && $(realpath -m "$out") != "$repo" && $(realpath -m "$out") != / ]] ||
    die "refusing to package into '$out'"
  [[ ! -e $out || -f $out/BUILD_INFO.json || -z $(ls -A "$out") ]] ||
    die "$out exists and is not a package (no BUILD_INFO.json): refusing to replace it"
  cmake --preset default -DFUSEDLOSS_BUILD_TESTS=ON -DFUSEDLOSS_BUILD_TOOLS=ON \
    -DFUSEDLOSS_BUILD_BENCH=ON >build/gpu-check-configure.log 2>&1 ||
    die "configuring failed: $(tail -n 30 build/gpu-check-configure.log)"
  grep -q 'gpu_check' "$build/cmake_install.cmake" ||
    die "no gpu_check component (GoogleTest or Google Benchmark missing?): see build/gpu-check-configure.log"
  cmake --build --preset default --parallel "${GPU_CHECK_JOBS:-2}"
  rm -rf "$out"
  cmake --install "$build" --prefix "$out" >/dev/null
  cmake --install "$build" --prefix "$out" --component gpu_check >/dev/null
  # What only a build against the library needs stays behind.
  rm -rf "$out/include" "$out/lib/cmake" "$out"/lib/*.a
  # Debug information (file:line in the sanitizers' host backtraces) stays unless the folder would
  # pass 48 MiB (it travels beside a working tree); then the binaries keep only their symbols.
  if (($(du -sm "$out" | cut -f1) > 48)); then
    find "$out" -type f \( -perm -u+x -o -name '*.so*' \) -exec objcopy --strip-debug {} \;
  fi
  python3 scripts/gpu_report.py build-info --build-dir "$build" --out "$out/BUILD_INFO.json"
  echo "gpu-check: packaged into $out ($(du -sh "$out" | cut -f1))"
}

if [[ $mode == prebuilt || $mode == build ]]; then
  case $stage in
    tests) labels='^(cpu|gpu|slow|python|bench)$' budget=${GPU_CHECK_BUDGET:-420} ;;
    sanitize) labels='^sanitize$' budget=${GPU_CHECK_BUDGET:-240} ;;
    *) die "--stage must be tests or sanitize (see --help)" 2 ;;
  esac
  [[ -n $results ]] || die "--results names the folder for the stage's results" 2
fi

case $mode in
  package)
    package "$dir"
    exit 0
    ;;
  merge)
    rc=0
    report "${merge_dirs[@]}" || rc=$?
    exit "$rc"
    ;;
  build)
    dir=build/gpu-check-package
    package "$dir"
    ;;
esac

suite=$(realpath "$dir")/share/fusedloss/gpu-check
[[ -f $suite/CTestTestfile.cmake ]] || die "$dir holds no gpu_check suite (make it with --package)"
mkdir -p "$results"
results=$(realpath "$results")
rm -f "$results/stage-$stage.json" "$results/junit-$stage.xml"

prefix=$(realpath "$dir")
toolkit=$(toolkit_libraries)
export LD_LIBRARY_PATH=$prefix/lib:$prefix/libexec/fusedloss/lib:$toolkit${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}
export FUSEDLOSS_SOURCE_DIR=$repo FUSEDLOSS_CHECK_RESULTS=$results
# The multi-GPU tests need a second GPU.
if (($(nvidia-smi -L 2>/dev/null | grep -c '^GPU') < 2)); then
  export FUSEDLOSS_GPU_TEST_FILTER='-MemorySpaceMultiGpu.*'
fi
chmod -R u+x "$prefix/libexec/fusedloss" "$prefix/bin" 2>/dev/null || true # a copy may drop modes

# CTest stops what still runs 30 s before the budget ends, which leaves the report its time.
stop=$(date -d "@$(($(date +%s) + budget - 30))" +%H:%M:%S)
echo "gpu-check: stage $stage (labels $labels) until $stop; results in $results"
ctest --test-dir "$suite" -L "$labels" --stop-time "$stop" --output-on-failure \
  --output-junit "$results/junit-$stage.xml" || true
stage_rc=0
python3 scripts/gpu_report.py stage --results "$results" --stage "$stage" \
  --build-info "$prefix/BUILD_INFO.json" || stage_rc=$?
report_rc=0
report "$results" || report_rc=$?
cp docs/gpu-report.md "$results/gpu-report.md"
((report_rc == 3)) && exit 3
exit $((stage_rc || report_rc))
