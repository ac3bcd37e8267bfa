// What the tests, the tool and the benchmarks ask of the CUDA runtime about the runtime itself:
// whether a GPU is there, and an error in words. Header-only, for code that includes the CUDA
// runtime; the library's own (a status, not a string) is host/cuda_status.hpp.
#pragma once

#include <cuda_runtime_api.h>

#include <string>

namespace fusedloss::checks {

/// "what: cudaErrorX (text)", clearing the runtime's last error so that the next call does not
/// see it.
inline std::string cuda_error_text(cudaError_t e, const std::string& what) {
  cudaGetLastError();
  return what + ": " + cudaGetErrorName(e) + " (" + cudaGetErrorString(e) + ")";
}

/// Empty when a CUDA device is usable, else why not.
inline std::string why_no_gpu() {
  int count = 0;
  const cudaError_t e = cudaGetDeviceCount(&count);
  if (e != cudaSuccess) return cuda_error_text(e, "no usable CUDA device");
  return count == 0 ? "no CUDA device present" : "";
}

}  // namespace fusedloss::checks
