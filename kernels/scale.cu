// Scaling a gradient in place by a device scalar: what a framework's backward does with the
// upstream gradient of a loss whose gradient the fused call already wrote.
//
// Algorithm. Every thread first reads the scale (one value, cached); when it is exactly 1 the
// kernel exits, so the common unscaled backward costs a launch and one read. Otherwise one
// grid-stride pass multiplies the data in float32 with 16-byte loads and stores (element by
// element when the buffer is not 16-byte aligned) and rounds once to the data's dtype.
//
// Bytes moved: the scale (2 to 4 bytes) read once per thread; when it is not 1, the data read once
// and written once.
#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include <algorithm>

#include "detail/device.hpp"
#include "detail/storage.cuh"
#include "detail/vector_io.cuh"
#include "scale.hpp"

namespace fusedloss::kernels {
namespace {

constexpr int kThreads = 256;
constexpr int kBlocksPerSm = 8;

__device__ __forceinline__ float load_scale(const void* scale, fusedloss_dtype dtype) {
  switch (dtype) {
    case FUSEDLOSS_FLOAT16:
      return __half2float(*static_cast<const __half*>(scale));
    case FUSEDLOSS_BFLOAT16:
      return __bfloat162float(*static_cast<const __nv_bfloat16*>(scale));
    default:
      return *static_cast<const float*>(scale);
  }
}

template <class T>
__global__ void __launch_bounds__(kThreads)
    scale_kernel(T* data, int64_t numel, const void* scale, fusedloss_dtype scale_dtype) {
  const float s = load_scale(scale, scale_dtype);
  if (s == 1.0f) return;
  constexpr int N = detail::kVectorBytes / sizeof(T);
  const int64_t thread = static_cast<int64_t>(blockIdx.x) * kThreads + threadIdx.x;
  const int64_t stride = static_cast<int64_t>(gridDim.x) * kThreads;
  const bool vector = detail::aligned_at(data, 0);
  const int64_t chunks = vector ? numel / N : 0;
  for (int64_t c = thread; c < chunks; c += stride) {
    float v[N];
    detail::load_chunk(data + c * N, v);
#pragma unroll
    for (int k = 0; k < N; ++k) v[k] *= s;
    detail::store_chunk(data + c * N, v);
  }
  for (int64_t i = chunks * N + thread; i < numel; i += stride) {
    data[i] = detail::from_float<T>(detail::to_float(data[i]) * s);
  }
}

}  // namespace

cudaError_t scale_in_place(void* data, fusedloss_dtype dtype, int64_t numel, const void* scale,
                           fusedloss_dtype scale_dtype, cudaStream_t stream) {
  if (numel == 0) return cudaSuccess;
  detail::device_facts f;
  if (const cudaError_t e = detail::query_device(&f); e != cudaSuccess) return e;
  const int blocks = detail::grid_of((numel / 4 + kThreads - 1) / kThreads, f.sms, kBlocksPerSm);
  switch (dtype) {
    case FUSEDLOSS_FLOAT16:
      scale_kernel<<<blocks, kThreads, 0, stream>>>(static_cast<__half*>(data), numel, scale,
                                                    scale_dtype);
      break;
    case FUSEDLOSS_BFLOAT16:
      scale_kernel<<<blocks, kThreads, 0, stream>>>(static_cast<__nv_bfloat16*>(data), numel, scale,
                                                    scale_dtype);
      break;
    default:
      scale_kernel<<<blocks, kThreads, 0, stream>>>(static_cast<float*>(data), numel, scale,
                                                    scale_dtype);
  }
  return cudaGetLastError();
}

}  // namespace fusedloss::kernels
