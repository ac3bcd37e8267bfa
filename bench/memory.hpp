// Memory of the device the rows run on: CUDA device memory, or host memory in the CPU mode. The
// calls return the CUDA runtime's error codes in both modes, and name them with the CUDA helpers
// the benchmarks share with the tests and the tool (cuda_support.hpp).
#pragma once

#include <cuda_runtime_api.h>

#include <cstddef>

#include "cuda_support.hpp"

namespace fusedloss::bench {

using checks::cuda_error_text;
using checks::why_no_gpu;

/// cudaMemcpy, or a memcpy on the CPU.
cudaError_t copy_memory(void* to, const void* from, size_t bytes, cudaMemcpyKind kind);

/// cudaMemset, or a memset on the CPU.
cudaError_t fill_memory(void* to, int byte, size_t bytes);

/// cudaDeviceSynchronize: a copy from pageable memory may return before its DMA lands, and the
/// benchmarks' stream does not wait for the legacy default stream by itself. Nothing on the CPU.
cudaError_t wait_for_device();

/// Memory of the device the rows run on (host memory in the CPU mode), freed on destruction.
class device_buffer {
 public:
  device_buffer() = default;
  device_buffer(const device_buffer&) = delete;
  device_buffer& operator=(const device_buffer&) = delete;
  ~device_buffer() { reset(); }

  /// Replaces the buffer by `bytes` of new, uninitialised memory.
  cudaError_t allocate(size_t bytes);
  void reset();
  void* data() const { return data_; }
  size_t bytes() const { return bytes_; }

 private:
  void* data_ = nullptr;
  size_t bytes_ = 0;
  bool host_ = false;
};

}  // namespace fusedloss::bench
