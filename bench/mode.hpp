// The mode the rows run in: the CUDA device, or the CPU reference (main picks it before anything
// else: FUSEDLOSS_BENCH_DEVICE=cpu, or no usable CUDA device), and what the mode changes in a row:
// the device of its params, the size it runs, its label, its MinTime and the copy's size.
//
// The CPU mode runs the same rows through the same calls on FUSEDLOSS_DEVICE_CPU, the
// double-precision reference: buffers are host memory, each case's N is halved until
// N * C <= kCpuMaxElements (its label says the size run), each repeat is timed with
// std::chrono::steady_clock (no L2 flush), every row has MinTime kCpuMinTime, and the `copy` row
// is a memcpy of kCpuCopyBytes (the largest row's one float32 array: cache-resident, as the rows'
// data is). It checks that every row builds and runs; its times are the reference's, not the
// kernels'.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>

#include "fusedloss/fusedloss.h"

namespace fusedloss::bench {

/// The copy row's buffer size: as large as the largest element benchmark's one array (2^28 f32).
constexpr size_t kCopyBytes = size_t{1} << 30;

/// The CPU mode's bound on a case's elements, its MinTime per row, and its copy row's size.
constexpr int64_t kCpuMaxElements = int64_t{1} << 18;
constexpr double kCpuMinTime = 0.01;
constexpr size_t kCpuCopyBytes = size_t{kCpuMaxElements} * sizeof(float);

/// Whether the rows run on the CPU reference (set by main before anything else; never changed).
inline bool& on_cpu() {
  static bool cpu = false;
  return cpu;
}

inline fusedloss_device run_device() {
  return on_cpu() ? FUSEDLOSS_DEVICE_CPU : FUSEDLOSS_DEVICE_CUDA;
}

inline size_t copy_bytes() { return on_cpu() ? kCpuCopyBytes : kCopyBytes; }

/// N of an (N, C) case as run: as given on the GPU; on the CPU halved until N * C <=
/// kCpuMaxElements (or N is 1).
int64_t run_batch(int64_t batch, int64_t classes);

/// A label's size: `full` on the GPU; on the CPU also the size run (N x C, or N when C is 1).
std::string size_label(const std::string& full, int64_t batch, int64_t classes);

}  // namespace fusedloss::bench
