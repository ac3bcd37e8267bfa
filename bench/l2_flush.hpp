// The benchmarks' L2 flush kernel (l2_flush.cu), declared for host code compiled without nvcc.
#pragma once

#include <cuda_runtime_api.h>

#include <cstddef>
#include <cstdint>

namespace fusedloss::bench {

/// Reads `bytes` of `buffer` (16-byte aligned, all zeros) on `stream` with `blocks` blocks of 256
/// threads, taking at least `min_ns` nanoseconds. `sink` is an int of device memory that is never
/// written in practice. Returns the launch's error.
cudaError_t launch_l2_flush(const void* buffer, size_t bytes, uint64_t min_ns, int* sink,
                            int blocks, cudaStream_t stream);

}  // namespace fusedloss::bench
