// `fusedloss validate`: the CUDA runtime's memory calls behind the GPU checks, the one place that
// names the runtime (compiled in with FUSEDLOSS_VALIDATE_CUDA).
#include "memory.hpp"

#include <stdexcept>

#ifdef FUSEDLOSS_VALIDATE_CUDA
#include <cuda_runtime.h>

#include "cuda_support.hpp"
#endif

namespace fusedloss::validate {

std::optional<checks::device_memory> gpu_memory(std::string& why_not) {
  if (!fusedloss_built_with_cuda()) {
    why_not = "fusedloss was built without CUDA";
    return std::nullopt;
  }
#ifdef FUSEDLOSS_VALIDATE_CUDA
  if (why_not = checks::why_no_gpu(); !why_not.empty()) return std::nullopt;
  const auto check = [](cudaError_t e, const char* what) {
    if (e != cudaSuccess) throw std::runtime_error(checks::cuda_error_text(e, what));
  };
  return checks::device_memory{
      [check](size_t bytes) {
        void* p = nullptr;
        check(cudaMalloc(&p, bytes), "cudaMalloc");
        return p;
      },
      [check](void* dst, const void* src, size_t bytes) {
        check(cudaMemcpy(dst, src, bytes, cudaMemcpyHostToDevice), "cudaMemcpy");
      },
      [check](void* dst, const void* src, size_t bytes) {
        check(cudaMemcpy(dst, src, bytes, cudaMemcpyDeviceToHost), "cudaMemcpy");
      },
      [](void* p) { cudaFree(p); }};
#else
  why_not = "this tool was built without the CUDA runtime (FUSEDLOSS_VALIDATE_CUDA)";
  return std::nullopt;
#endif
}

}  // namespace fusedloss::validate
