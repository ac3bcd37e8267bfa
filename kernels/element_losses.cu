// Element losses on the GPU: BCE with logits, sigmoid focal, MSE.
//
// Algorithm. One grid-stride pass over the M elements. Each thread takes chunks of 16 / sizeof(T)
// elements (T the logits' type: 4 for float32, 8 for 16-bit), loads logits, targets and a
// per-element weight with 16-byte vector loads, computes each element's loss and d loss / dx in
// float32, and stores the gradient (and, under `none`, the per-element loss) with 16-byte stores.
// Elements before the logits' first 16-byte boundary and after the last whole chunk go through the
// same code one at a time; if the other arrays are not aligned at the same element the whole pass
// is element by element. Under `sum`/`mean` each thread keeps a double partial sum, reduced per
// block and then in a fixed-order one-block pass (detail/reduce.cuh): deterministic, no atomics.
//
// Bytes moved (fused forward+backward, the training call): logits and targets read once, the
// per-element weight read once when there is one, the gradient written once; per-class vectors
// (weight, pos_weight) are C floats that stay in L1/L2. Under `none` the loss is written once more
// (4 bytes an element); under `sum`/`mean` 8 bytes a block go to the workspace. The upstream
// gradient is a device scalar (or one value an element under `none`), read once per thread.
//
// Stability. softplus(t) = max(t, 0) + log1p(exp(-|t|)) and a two-sided sigmoid never overflow;
// a loss term whose coefficient is exactly 0 is skipped, so an infinite softplus beside a zero
// target gives 0, not NaN. Focal loss forms 1 - p_t as sigma(x)(1 - y) + sigma(-x) y (no
// cancellation) and, for hard targets, the gradient form with no negative power of 1 - p_t, so it
// stays finite for gamma in (0, 1) at saturated logits.
#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include <algorithm>
#include <cmath>

#include "detail/reduce.cuh"
#include "detail/storage.cuh"
#include "detail/vector_io.cuh"
#include "element_losses.hpp"

namespace fusedloss::kernels {
namespace {

using detail::load_chunk;
using detail::store_chunk;

constexpr int kThreads = 256;
constexpr int kBlocksPerSm = 8;  // 2048 resident threads per SM on sm_80 and sm_90

__device__ __forceinline__ float softplus(float t) {
  return fmaxf(t, 0.0f) + log1pf(expf(-fabsf(t)));
}

__device__ __forceinline__ float sigmoid(float t) {
  const float e = expf(-fabsf(t));
  return t >= 0.0f ? 1.0f / (1.0f + e) : e / (1.0f + e);
}

struct value_and_grad {
  float loss;
  float grad;
};

// coefficient * softplus(t), where a zero coefficient silences the term even if softplus is
// infinite (a NaN logit still gives NaN).
__device__ __forceinline__ float scaled_softplus(float coefficient, float t) {
  const float s = softplus(t);
  return coefficient == 0.0f && !isnan(s) ? 0.0f : coefficient * s;
}

// The gradient w * [sigma(x)(1 + (pw - 1) y) - pw y], regrouped so a confident positive does not
// cancel and both infinities with the matching target give exactly 0.
__device__ __forceinline__ value_and_grad bce(float x, float y, float w, float pw) {
  const float positive = pw * y;
  const float negative = 1.0f - y;
  const float loss = w * (scaled_softplus(positive, -x) + scaled_softplus(negative, x));
  const float grad = w * (negative * sigmoid(x) - positive * sigmoid(-x));
  return {loss, grad};
}

__device__ __forceinline__ value_and_grad sigmoid_focal(float x, float y, float alpha, float gamma) {
  const value_and_grad ce = bce(x, y, 1.0f, 1.0f);  // ce.grad is p - y
  const float p = sigmoid(x);
  const float q = sigmoid(-x);             // 1 - p without cancellation
  const float m = p * (1.0f - y) + q * y;  // 1 - p_t
  const float alpha_t = alpha >= 0.0f ? alpha * y + (1.0f - alpha) * (1.0f - y) : 1.0f;
  const float focus = gamma == 0.0f ? 1.0f : powf(m, gamma);
  const float loss = alpha_t * focus * ce.loss;
  if (gamma == 0.0f) return {loss, alpha_t * ce.grad};
  if (y == 0.0f || y == 1.0f) {
    // m^(gamma - 1) p (1 - p) = m^gamma p_t for hard targets: no negative power to overflow.
    const float p_t = y == 1.0f ? p : q;
    return {loss, alpha_t * focus * (ce.grad - (2.0f * y - 1.0f) * gamma * p_t * ce.loss)};
  }
  const float focus_grad = gamma * powf(m, gamma - 1.0f) * (2.0f * y - 1.0f) * p * q * ce.loss;
  return {loss, alpha_t * (focus * ce.grad - focus_grad)};
}

// The upstream gradient every element's d loss / dx is multiplied by (mean's 1/M included), when
// it is one value; per-element upstream values (backward under `none`) are read beside the data.
__device__ __forceinline__ float scalar_upstream(const element_problem& p) {
  float g = p.grad_loss != nullptr
                ? *p.grad_loss
                : p.grad_scale * (p.grad_scale_ptr != nullptr ? *p.grad_scale_ptr : 1.0f);
  if (p.reduction == FUSEDLOSS_REDUCTION_MEAN)
    g = static_cast<float>(g / static_cast<double>(p.numel));
  return g;
}

// Processes the N elements starting at i (vectorised when N > 1) and returns their loss sum.
template <int N, class T, class U>
__device__ __forceinline__ double process(const element_problem& p, int64_t i, float upstream,
                                          bool per_element_upstream) {
  float x[N], y[N], w[N], pw[N], g[N], loss[N], grad[N];
  load_chunk(static_cast<const T*>(p.logits) + i, x);
  load_chunk(static_cast<const U*>(p.targets) + i, y);
#pragma unroll
  for (int k = 0; k < N; ++k) {
    w[k] = 1.0f;
    pw[k] = 1.0f;
    g[k] = upstream;
  }
  if (p.weight != nullptr) {
    if (p.weight_per_class) {
#pragma unroll
      for (int k = 0; k < N; ++k) w[k] = __ldg(p.weight + (i + k) % p.num_classes);
    } else {
      load_chunk(p.weight + i, w);
    }
  }
  if (p.pos_weight != nullptr) {
#pragma unroll
    for (int k = 0; k < N; ++k) pw[k] = __ldg(p.pos_weight + (i + k) % p.num_classes);
  }
  if (per_element_upstream) load_chunk(p.grad_loss + i, g);

  double sum = 0;
#pragma unroll
  for (int k = 0; k < N; ++k) {
    value_and_grad v;
    switch (p.kind) {
      case element_loss::bce:
        v = bce(x[k], y[k], w[k], pw[k]);
        break;
      case element_loss::sigmoid_focal:
        v = sigmoid_focal(x[k], y[k], p.alpha, p.gamma);
        break;
      default: {
        const float d = x[k] - y[k];
        v = {d * d, 2.0f * d};
      }
    }
    loss[k] = v.loss;
    grad[k] = v.grad * g[k];
    sum += v.loss;
  }
  if (p.grad != nullptr) store_chunk(static_cast<T*>(p.grad) + i, grad);
  if (p.loss != nullptr && p.reduction == FUSEDLOSS_REDUCTION_NONE) store_chunk(p.loss + i, loss);
  return sum;
}

template <class T, class U>
__global__ void __launch_bounds__(kThreads)
    element_loss_kernel(element_problem p, double* partials) {
  constexpr int N = detail::kVectorBytes / sizeof(T);
  const bool per_element_upstream =
      p.grad_loss != nullptr && p.reduction == FUSEDLOSS_REDUCTION_NONE;
  const float upstream = p.grad != nullptr && !per_element_upstream ? scalar_upstream(p) : 1.0f;

  const int64_t aligned_from = detail::head_elements(static_cast<const T*>(p.logits));
  const int64_t head = aligned_from < p.numel ? aligned_from : p.numel;
  const bool vector_path =
      detail::aligned_at(static_cast<const U*>(p.targets), head) &&
      detail::aligned_at(static_cast<T*>(p.grad), head) &&
      (p.reduction != FUSEDLOSS_REDUCTION_NONE || detail::aligned_at(p.loss, head)) &&
      (p.weight == nullptr || p.weight_per_class || detail::aligned_at(p.weight, head)) &&
      (!per_element_upstream || detail::aligned_at(p.grad_loss, head));
  const int64_t chunks = vector_path ? (p.numel - head) / N : 0;
  const int64_t body_end = head + chunks * N;

  const int64_t thread = static_cast<int64_t>(blockIdx.x) * kThreads + threadIdx.x;
  const int64_t stride = static_cast<int64_t>(gridDim.x) * kThreads;
  double sum = 0;
  for (int64_t c = thread; c < chunks; c += stride) {
    sum += process<N, T, U>(p, head + c * N, upstream, per_element_upstream);
  }
  // The scalar elements: the head and tail around the chunks, or everything off the vector path.
  const int64_t scalar_head = vector_path ? head : p.numel;
  const int64_t tail_begin = vector_path ? body_end : p.numel;
  const int64_t scalar_count = scalar_head + (p.numel - tail_begin);
  for (int64_t s = thread; s < scalar_count; s += stride) {
    const int64_t i = s < scalar_head ? s : tail_begin + (s - scalar_head);
    sum += process<1, T, U>(p, i, upstream, per_element_upstream);
  }
  if (partials != nullptr) detail::write_block_partial<kThreads>(sum, partials);
}

cudaError_t grid_size(int64_t numel, int max_blocks, int* blocks) {
  int device = 0, sms = 0;
  cudaError_t e = cudaGetDevice(&device);
  if (e == cudaSuccess) e = cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, device);
  if (e != cudaSuccess) return e;
  // Enough 4-element chunks for every thread, at most a full wave of resident blocks.
  const int64_t wanted = std::max<int64_t>(1, (numel / 4 + kThreads - 1) / kThreads);
  int64_t cap = static_cast<int64_t>(sms) * kBlocksPerSm;
  if (max_blocks > 0) cap = std::min<int64_t>(cap, max_blocks);
  *blocks = static_cast<int>(std::min(wanted, cap));
  return cudaSuccess;
}

template <class T, class U>
void launch(const element_problem& p, int blocks, double* partials, cudaStream_t stream) {
  element_loss_kernel<T, U><<<blocks, kThreads, 0, stream>>>(p, partials);
}

}  // namespace

cudaError_t element_workspace_bytes(int64_t numel, int max_blocks, size_t* bytes) {
  int blocks = 0;
  const cudaError_t e = grid_size(numel, max_blocks, &blocks);
  if (e == cudaSuccess) *bytes = static_cast<size_t>(blocks) * sizeof(double);
  return e;
}

cudaError_t run_element_loss(const element_problem& p, void* workspace, cudaStream_t stream) {
  int blocks = 0;
  cudaError_t e = grid_size(p.numel, p.max_blocks, &blocks);
  if (e != cudaSuccess) return e;
  const bool reduce = p.loss != nullptr && p.reduction != FUSEDLOSS_REDUCTION_NONE;
  double* partials = reduce ? static_cast<double*>(workspace) : nullptr;

  if (p.numel > 0) {
    const bool wide_targets = p.targets_dtype != p.logits_dtype;  // float32 beside 16-bit logits
    switch (p.logits_dtype) {
      case FUSEDLOSS_FLOAT16:
        wide_targets ? launch<__half, float>(p, blocks, partials, stream)
                     : launch<__half, __half>(p, blocks, partials, stream);
        break;
      case FUSEDLOSS_BFLOAT16:
        wide_targets ? launch<__nv_bfloat16, float>(p, blocks, partials, stream)
                     : launch<__nv_bfloat16, __nv_bfloat16>(p, blocks, partials, stream);
        break;
      default:
        launch<float, float>(p, blocks, partials, stream);
    }
    if ((e = cudaGetLastError()) != cudaSuccess) return e;
  }
  if (reduce) {
    const detail::final_sum f{partials,
                              p.numel > 0 ? blocks : 0,
                              p.reduction == FUSEDLOSS_REDUCTION_MEAN,
                              static_cast<double>(p.numel),
                              nullptr,
                              p.empty_value};
    detail::final_sum_kernel<<<1, detail::kFinalThreads, 0, stream>>>(f, p.loss);
    e = cudaGetLastError();
  }
  return e;
}

}  // namespace fusedloss::kernels
