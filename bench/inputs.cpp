// The host values, their upload and the element rows' device inputs (inputs.hpp).
#include "inputs.hpp"

#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include <algorithm>
#include <cmath>
#include <cstring>

namespace fusedloss::bench {

void host_values::grow(int64_t n) {
  const size_t have = logits_.size();
  if (static_cast<size_t>(n) <= have) return;
  logits_.resize(static_cast<size_t>(n));
  targets_.resize(static_cast<size_t>(n));
  for (size_t i = have; i < logits_.size(); ++i) {
    float x = 8.0f * unit_value(1, i) - 4.0f;
    if (std::fabs(x) < 1.0f / 1024) x = 0.5f;
    logits_[i] = x;
    targets_[i] = 1.0f / 64 + (62.0f / 64) * unit_value(2, i);
  }
}

cudaError_t upload(const float* values, int64_t n, fusedloss_dtype dtype, void* device) {
  if (dtype == FUSEDLOSS_FLOAT32)
    return copy_memory(device, values, static_cast<size_t>(n) * sizeof(float),
                       cudaMemcpyHostToDevice);
  constexpr int64_t kSlice = int64_t{1} << 24;
  std::vector<uint16_t> staging(static_cast<size_t>(std::min(n, kSlice)));
  for (int64_t from = 0; from < n; from += kSlice) {
    const int64_t count = std::min(kSlice, n - from);
    for (int64_t i = 0; i < count; ++i) {
      const float v = values[from + i];
      if (dtype == FUSEDLOSS_BFLOAT16) {
        const __nv_bfloat16 b = __float2bfloat16_rn(v);
        std::memcpy(&staging[static_cast<size_t>(i)], &b, 2);
      } else {
        const __half h = __float2half_rn(v);
        std::memcpy(&staging[static_cast<size_t>(i)], &h, 2);
      }
    }
    const cudaError_t e = copy_memory(static_cast<uint16_t*>(device) + from, staging.data(),
                                      static_cast<size_t>(count) * 2, cudaMemcpyHostToDevice);
    if (e != cudaSuccess) return e;
  }
  return cudaSuccess;
}

cudaError_t upload_and_wait(const float* values, int64_t n, fusedloss_dtype dtype, void* device) {
  const cudaError_t e = upload(values, n, dtype, device);
  return e != cudaSuccess ? e : wait_for_device();
}

std::string device_inputs::prepare(fusedloss_dtype dtype, int64_t numel) {
  if (ready_ && dtype == dtype_ && numel == numel_) return {};
  release();
  const size_t bytes = static_cast<size_t>(numel) * dtype_bytes(dtype);
  host_values& host = host_values::get();
  cudaError_t e = logits_.allocate(bytes);
  if (e == cudaSuccess) e = targets_.allocate(bytes);
  if (e == cudaSuccess) e = grad_.allocate(bytes);
  if (e != cudaSuccess)
    return cuda_error_text(e, "allocating 3 x " + std::to_string(bytes) + " bytes");
  e = upload(host.logits(numel), numel, dtype, logits_.data());
  if (e == cudaSuccess) e = upload(host.targets(numel), numel, dtype, targets_.data());
  // The gradient is written by every fused call; start it non-zero all the same.
  if (e == cudaSuccess) e = fill_memory(grad_.data(), 0x3c, bytes);
  if (e == cudaSuccess) e = wait_for_device();
  if (e != cudaSuccess) return cuda_error_text(e, "uploading the inputs");
  dtype_ = dtype;
  numel_ = numel;
  ready_ = true;
  return {};
}

void device_inputs::release() {
  ready_ = false;
  logits_.reset();
  targets_.reset();
  grad_.reset();
}

}  // namespace fusedloss::bench
