// Host side, shared by every kernel family's plan: what a plan reads of the current device, and the
// grid of a grid-stride kernel. One query and one sizing rule for all of them.
#pragma once

#include <cuda_runtime_api.h>

#include <algorithm>
#include <cstdint>

namespace fusedloss::kernels::detail {

/// What the plans read of the current device.
struct device_facts {
  int major = 0;       ///< compute capability, major number
  int sms = 0;         ///< streaming multiprocessors
  int max_shared = 0;  ///< bytes of dynamic shared memory a block may opt into
};

/// The current device's facts: three attribute queries, no synchronisation.
inline cudaError_t query_device(device_facts* f) {
  int device = 0;
  cudaError_t e = cudaGetDevice(&device);
  if (e == cudaSuccess)
    e = cudaDeviceGetAttribute(&f->major, cudaDevAttrComputeCapabilityMajor, device);
  if (e == cudaSuccess) e = cudaDeviceGetAttribute(&f->sms, cudaDevAttrMultiProcessorCount, device);
  if (e == cudaSuccess) {
    e = cudaDeviceGetAttribute(&f->max_shared, cudaDevAttrMaxSharedMemoryPerBlockOptin, device);
  }
  return e;
}

/// Blocks of a grid-stride kernel with `work` blocks' worth of work: all of it, at least one
/// block, at most one wave of `per_sm` resident blocks on each of `sms` SMs (a larger grid only
/// queues blocks behind the wave, and every block adds a partial to reduce).
inline int grid_of(int64_t work, int sms, int per_sm) {
  return static_cast<int>(std::clamp<int64_t>(work, 1, int64_t{sms} * per_sm));
}

}  // namespace fusedloss::kernels::detail
