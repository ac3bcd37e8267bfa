#include <cuda_runtime_api.h>

#include <cstring>

#include "cuda_status.hpp"
#include "device_memory.hpp"
#include "fusedloss/fusedloss.h"
#include "validate.hpp"

namespace fusedloss::host {

memory_location locate(const void* pointer) {
  cudaPointerAttributes attributes{};
  if (cudaPointerGetAttributes(&attributes, pointer) != cudaSuccess) {
    // No device or no driver: nothing can be classified. The error is not sticky; clear it so the
    // caller's next cudaGetLastError() does not see it.
    cudaGetLastError();
    return {memory_space::either};
  }
  switch (attributes.type) {
    case cudaMemoryTypeUnregistered:
      return {memory_space::host};
    case cudaMemoryTypeDevice: {
      int current = -1;
      if (cudaGetDevice(&current) != cudaSuccess) {
        cudaGetLastError();
        return {memory_space::either};
      }
      // Another device's memory works only where the caller enabled peer access, which a call
      // cannot see; a kernel reading it without peer access faults, so it is refused.
      const memory_space space =
          attributes.device == current ? memory_space::device : memory_space::other_device;
      return {space, attributes.device, current};
    }
    default:
      return {memory_space::either};
  }
}

fusedloss_status cuda_failure(fusedloss_error* err, cudaError_t e, const char* file, int line) {
  cudaGetLastError();  // a launch error is not sticky; leave none behind for the caller
  const char* slash = std::strrchr(file, '/');
  return report(err, FUSEDLOSS_CUDA_ERROR, nullptr, "%s: %s (%s:%d)", cudaGetErrorName(e),
                cudaGetErrorString(e), slash != nullptr ? slash + 1 : file, line);
}

fusedloss_status read_and_clear_device_counter(int64_t* counter, void* stream, int64_t* value,
                                               fusedloss_error* err) {
  const auto s = static_cast<cudaStream_t>(stream);
  cudaError_t e = cudaMemcpyAsync(value, counter, sizeof *counter, cudaMemcpyDeviceToHost, s);
  if (e == cudaSuccess) e = cudaMemsetAsync(counter, 0, sizeof *counter, s);
  if (e == cudaSuccess) e = cudaStreamSynchronize(s);
  return e == cudaSuccess ? succeed(err) : FUSEDLOSS_CUDA_FAILURE(err, e);
}

}  // namespace fusedloss::host

extern "C" int fusedloss_built_with_cuda(void) { return 1; }
