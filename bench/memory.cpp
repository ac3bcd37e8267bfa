// The rows' memory in either mode (memory.hpp).
#include "memory.hpp"

#include <cstdlib>
#include <cstring>

#include "mode.hpp"

namespace fusedloss::bench {

cudaError_t copy_memory(void* to, const void* from, size_t bytes, cudaMemcpyKind kind) {
  if (!on_cpu()) return cudaMemcpy(to, from, bytes, kind);
  if (bytes > 0) std::memcpy(to, from, bytes);
  return cudaSuccess;
}

cudaError_t fill_memory(void* to, int byte, size_t bytes) {
  if (!on_cpu()) return cudaMemset(to, byte, bytes);
  if (bytes > 0) std::memset(to, byte, bytes);
  return cudaSuccess;
}

cudaError_t wait_for_device() { return on_cpu() ? cudaSuccess : cudaDeviceSynchronize(); }

cudaError_t device_buffer::allocate(size_t bytes) {
  reset();
  if (bytes == 0) return cudaSuccess;
  host_ = on_cpu();
  data_ = host_ ? std::malloc(bytes) : nullptr;
  cudaError_t e = host_ ? cudaSuccess : cudaMalloc(&data_, bytes);
  if (e == cudaSuccess && data_ == nullptr) e = cudaErrorMemoryAllocation;
  if (e != cudaSuccess) {
    data_ = nullptr;
    if (!host_) cudaGetLastError();
    return e;
  }
  bytes_ = bytes;
  return cudaSuccess;
}

void device_buffer::reset() {
  if (data_ != nullptr && host_) std::free(data_);
  if (data_ != nullptr && !host_) cudaFree(data_);
  data_ = nullptr;
  bytes_ = 0;
}

}  // namespace fusedloss::bench
