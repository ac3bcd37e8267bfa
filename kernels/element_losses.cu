// Element losses on the GPU: BCE with logits, sigmoid focal, MSE.
//
// Algorithm. One grid-stride pass over the M elements, the loss fixed at compile time. Each thread
// takes chunks of 16 / sizeof(T) elements (T the logits' type: 4 for float32, 8 for 16-bit), loads
// logits, targets and a per-element weight with 16-byte vector loads (two chunks' worth before it
// computes either, where the registers allow), computes each element's loss and d loss / dx in
// float32, and stores the gradient (and, under `none`, the per-element loss) with 16-byte stores.
// A lean copy of the loop serves the common call (no weights, one upstream value, an integer gamma);
// per-class vectors are indexed through a class cursor that the grid stride advances, not by a
// division an element. Elements before the logits' first 16-byte boundary and after the last
// whole chunk go through the same code one at a time; if the other arrays are not aligned at the
// same element the whole pass is element by element. Under `sum`/`mean` each thread adds its
// chunks' float32 sums into a double, reduced per block and then in a fixed-order one-block pass
// (detail/reduce.cuh): deterministic, no atomics.
//
// Bytes moved (fused forward+backward, the training call): logits and targets read once, the
// per-element weight read once when there is one, the gradient written once; per-class vectors
// (weight, pos_weight) are C floats that stay in L1/L2. Under `none` the loss is written once more
// (4 bytes an element); under `sum`/`mean` 8 bytes a block go to the workspace. The upstream
// gradient is a device scalar (or one value an element under `none`), read once per thread.
//
// Stability. softplus(t) = max(t, 0) + log1p(exp(-|t|)) and a two-sided sigmoid, from one
// exp(-|t|), never overflow; a loss term whose coefficient (the weight included) is exactly 0 is
// skipped, so an infinite softplus beside a zero target or a zero weight gives 0, not NaN. Focal loss forms 1 - p_t as sigma(x)(1 - y) + sigma(-x) y (no
// cancellation) and, for hard targets, the gradient form with no negative power of 1 - p_t, so it
// stays finite for gamma in (0, 1) at saturated logits.
#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include <algorithm>
#include <cmath>

#include "detail/online_softmax.cuh"
#include "detail/reduce.cuh"
#include "detail/storage.cuh"
#include "detail/vector_io.cuh"
#include "element_losses.hpp"

namespace fusedloss::kernels {
namespace {

using detail::load_chunk;
using detail::store_chunk;

constexpr int kThreads = 256;
constexpr int kBlocksPerSm = 4;  // 64 registers a thread: 1024 resident threads per SM

struct value_and_grad {
  float loss;
  float grad;
};

// log(1 + e) for e in [0, 1], branch-free: 2 atanh(s) with s = e / (2 + e) in [0, 1/3], whose odd
// series to s^15 leaves a relative error under 2e-9 before float32 rounding (1e-7 after: the
// division's 2 ulp dominate). Exact at e = 0, NaN for a NaN e.
__device__ __forceinline__ float log1p_unit(float e) {
  const float s = __fdividef(e, 2.0f + e);
  const float s2 = s * s;
  float series = 1.0f / 15.0f;
  series = fmaf(series, s2, 1.0f / 13.0f);
  series = fmaf(series, s2, 1.0f / 11.0f);
  series = fmaf(series, s2, 1.0f / 9.0f);
  series = fmaf(series, s2, 1.0f / 7.0f);
  series = fmaf(series, s2, 1.0f / 5.0f);
  series = fmaf(series, s2, 1.0f / 3.0f);
  series = fmaf(series, s2, 1.0f);
  return 2.0f * s * series;
}

// exp(-|t|) once, shared by the softplus of t and -t and by the two-sided sigmoids.
struct logistic {
  float softplus_pos;  // softplus(t)
  float softplus_neg;  // softplus(-t)
  float sigmoid_pos;   // sigma(t)
  float sigmoid_neg;   // sigma(-t) = 1 - sigma(t) without cancellation
};

__device__ __forceinline__ logistic logistic_of(float t) {
  const float e = detail::fast_exp2(-fabsf(t) * detail::kLog2e);
  const float tail = log1p_unit(e);  // log(1 + exp(-|t|)): never overflows
  const float inverse = __fdividef(1.0f, 1.0f + e);
  const bool positive = t >= 0.0f;
  return {fmaxf(t, 0.0f) + tail, fmaxf(-t, 0.0f) + tail, positive ? inverse : e * inverse,
          positive ? e * inverse : inverse};
}

// coefficient * softplus, where a zero coefficient silences the term even if softplus is infinite
// (a NaN logit still gives NaN).
__device__ __forceinline__ float scaled(float coefficient, float softplus) {
  return coefficient == 0.0f && !isnan(softplus) ? 0.0f : coefficient * softplus;
}

// The loss w [pw y softplus(-x) + (1 - y) softplus(x)], each coefficient the weight included
// (SEMANTICS.md), and the gradient w [sigma(x)(1 + (pw - 1) y) - pw y], regrouped so a confident
// positive does not cancel and both infinities with the matching target give exactly 0.
__device__ __forceinline__ value_and_grad bce(const logistic& l, float y, float w, float pw) {
  const float positive = pw * y;
  const float negative = 1.0f - y;
  const float loss = scaled(w * positive, l.softplus_neg) + scaled(w * negative, l.softplus_pos);
  const float grad = w * (negative * l.sigmoid_pos - positive * l.sigmoid_neg);
  return {loss, grad};
}

// Whether m^gamma (and m^(gamma - 1)) take integer_power: an integer gamma in [0, 15].
__device__ __forceinline__ bool integer_gamma(float gamma) {
  return gamma == floorf(gamma) && gamma >= 0.0f && gamma <= 15.0f;
}

// m^n for n in [0, 15] by squaring: four steps, no loop and no branch (0^0 = 1).
__device__ __forceinline__ float integer_power(float m, int n) {
  float result = 1.0f;
#pragma unroll
  for (int bit = 0; bit < 4; ++bit) {
    result = (n >> bit) & 1 ? result * m : result;
    m *= m;
  }
  return result;
}

// m^gamma: integer_power where kInteger (the caller checked integer_gamma), else powf.
template <bool kInteger>
__device__ __forceinline__ float power(float m, float gamma) {
  if constexpr (kInteger) {
    return integer_power(m, static_cast<int>(gamma));
  } else {
    return powf(m, gamma);
  }
}

template <bool kIntegerGamma>
__device__ __forceinline__ value_and_grad sigmoid_focal(float x, float y, float alpha, float gamma) {
  const logistic l = logistic_of(x);
  const value_and_grad ce = bce(l, y, 1.0f, 1.0f);  // ce.grad is p - y
  const float p = l.sigmoid_pos;
  const float q = l.sigmoid_neg;           // 1 - p without cancellation
  const float m = p * (1.0f - y) + q * y;  // 1 - p_t
  const float alpha_t = alpha >= 0.0f ? alpha * y + (1.0f - alpha) * (1.0f - y) : 1.0f;
  const float focus = power<kIntegerGamma>(m, gamma);
  const float loss = alpha_t * focus * ce.loss;
  if (gamma == 0.0f) return {loss, alpha_t * ce.grad};
  if (y == 0.0f || y == 1.0f) {
    // m^(gamma - 1) p (1 - p) = m^gamma p_t for hard targets: no negative power to overflow.
    const float p_t = y == 1.0f ? p : q;
    return {loss, alpha_t * focus * (ce.grad - (2.0f * y - 1.0f) * gamma * p_t * ce.loss)};
  }
  const float focus_grad =
      gamma * power<kIntegerGamma>(m, gamma - 1.0f) * (2.0f * y - 1.0f) * p * q * ce.loss;
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

// The inputs of N elements starting at element i, loaded before any is used.
template <int N>
struct element_inputs {
  float x[N], y[N], w[N], pw[N], g[N];
};

// Where a thread is in the per-class vectors: the class of its next element, advanced by the
// grid stride without a division per element.
struct class_cursor {
  int64_t classes;
  int64_t at;  // class of element i
  __device__ int64_t plus(int k) const {
    int64_t c = at + k;
    while (c >= classes) c -= classes;
    return c;
  }
  __device__ void advance(int64_t step) {  // step < classes
    at += step;
    if (at >= classes) at -= classes;
  }
};

// kLean: no weight, no pos_weight, one upstream value (the common call): nothing but the logits
// and targets is read.
template <int N, class T, class U, element_loss K, bool kLean>
__device__ __forceinline__ void load_inputs(const element_problem& p, int64_t i, float upstream,
                                            bool per_element_upstream, const class_cursor& cls,
                                            element_inputs<N>& in) {
  load_chunk(static_cast<const T*>(p.logits) + i, in.x);
  load_chunk(static_cast<const U*>(p.targets) + i, in.y);
#pragma unroll
  for (int k = 0; k < N; ++k) {
    in.w[k] = 1.0f;
    in.pw[k] = 1.0f;
    in.g[k] = upstream;
  }
  if constexpr (kLean) return;
  if constexpr (K == element_loss::bce) {
    if (p.weight != nullptr) {
      if (p.weight_per_class) {
#pragma unroll
        for (int k = 0; k < N; ++k) in.w[k] = __ldg(p.weight + cls.plus(k));
      } else {
        load_chunk(p.weight + i, in.w);
      }
    }
    if (p.pos_weight != nullptr) {
#pragma unroll
      for (int k = 0; k < N; ++k) in.pw[k] = __ldg(p.pos_weight + cls.plus(k));
    }
  }
  if (per_element_upstream) load_chunk(p.grad_loss + i, in.g);
}

// Computes and stores the N elements at i; returns their loss sum (float32 within the chunk,
// added to the thread's double sum by the caller).
// kLean (see load_inputs) also means an integer gamma for sigmoid focal.
template <int N, class T, element_loss K, bool kLean>
__device__ __forceinline__ float compute_and_store(const element_problem& p, int64_t i,
                                                   const element_inputs<N>& in) {
  float loss[N], grad[N];
#pragma unroll
  for (int k = 0; k < N; ++k) {
    value_and_grad v;
    if constexpr (K == element_loss::bce) {
      v = bce(logistic_of(in.x[k]), in.y[k], in.w[k], in.pw[k]);
    } else if constexpr (K == element_loss::sigmoid_focal) {
      v = sigmoid_focal<kLean>(in.x[k], in.y[k], p.alpha, p.gamma);
    } else {
      const float d = in.x[k] - in.y[k];
      v = {d * d, 2.0f * d};
    }
    loss[k] = v.loss;
    grad[k] = v.grad * in.g[k];
  }
  if (p.grad != nullptr) store_chunk(static_cast<T*>(p.grad) + i, grad);
  if (p.loss != nullptr && p.reduction == FUSEDLOSS_REDUCTION_NONE) store_chunk(p.loss + i, loss);
  return detail::tree_sum(loss);
}

// The whole chunks of one thread: kUnroll chunks' inputs loaded before any is computed (so that
// their loads are in flight together), then one at a time for the rest. Returns the loss sum.
template <class T, class U, element_loss K, bool kLean>
__device__ __forceinline__ double chunk_loop(const element_problem& p, int64_t head, int64_t chunks,
                                             float upstream, bool per_element_upstream,
                                             class_cursor cls, int64_t cls_step) {
  constexpr int N = detail::kVectorBytes / sizeof(T);
  // Float32, or a lean call: two chunks (4 loads or more in flight); a 16-bit chunk's eight
  // elements with their options, or with sigmoid focal's arithmetic, fill the registers alone.
  constexpr int kUnroll = sizeof(T) == 4 || (kLean && K != element_loss::sigmoid_focal) ? 2 : 1;
  const int64_t thread = static_cast<int64_t>(blockIdx.x) * kThreads + threadIdx.x;
  const int64_t stride = static_cast<int64_t>(gridDim.x) * kThreads;
  double sum = 0;
  int64_t c = thread;
  for (; c + (kUnroll - 1) * stride < chunks; c += kUnroll * stride) {
    element_inputs<N> in[kUnroll];
#pragma unroll
    for (int u = 0; u < kUnroll; ++u) {
      load_inputs<N, T, U, K, kLean>(p, head + (c + u * stride) * N, upstream, per_element_upstream,
                                     cls, in[u]);
      cls.advance(cls_step);
    }
#pragma unroll
    for (int u = 0; u < kUnroll; ++u) {
      sum += compute_and_store<N, T, K, kLean>(p, head + (c + u * stride) * N, in[u]);
    }
  }
  for (; c < chunks; c += stride) {
    element_inputs<N> in;
    load_inputs<N, T, U, K, kLean>(p, head + c * N, upstream, per_element_upstream, cls, in);
    cls.advance(cls_step);
    sum += compute_and_store<N, T, K, kLean>(p, head + c * N, in);
  }
  return sum;
}

template <class T, class U, element_loss K>
__global__ void __launch_bounds__(kThreads, kBlocksPerSm)
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
  const int64_t classes = p.num_classes > 0 ? p.num_classes : 1;
  class_cursor cls{classes, (head + thread * N) % classes};
  const int64_t cls_step = stride * N % classes;
  const bool lean = p.weight == nullptr && p.pos_weight == nullptr && !per_element_upstream &&
                    (K != element_loss::sigmoid_focal || integer_gamma(p.gamma));
  double sum = lean ? chunk_loop<T, U, K, true>(p, head, chunks, upstream, false, cls, cls_step)
                    : chunk_loop<T, U, K, false>(p, head, chunks, upstream, per_element_upstream,
                                                 cls, cls_step);
  // The scalar elements: the head and tail around the chunks, or everything off the vector path.
  const int64_t scalar_head = vector_path ? head : p.numel;
  const int64_t tail_begin = vector_path ? body_end : p.numel;
  const int64_t scalar_count = scalar_head + (p.numel - tail_begin);
  for (int64_t s = thread; s < scalar_count; s += stride) {
    const int64_t i = s < scalar_head ? s : tail_begin + (s - scalar_head);
    element_inputs<1> in;
    load_inputs<1, T, U, K, false>(p, i, upstream, per_element_upstream, {classes, i % classes},
                                   in);
    sum += compute_and_store<1, T, K, false>(p, i, in);
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
  switch (p.kind) {
    case element_loss::bce:
      element_loss_kernel<T, U, element_loss::bce><<<blocks, kThreads, 0, stream>>>(p, partials);
      break;
    case element_loss::sigmoid_focal:
      element_loss_kernel<T, U, element_loss::sigmoid_focal>
          <<<blocks, kThreads, 0, stream>>>(p, partials);
      break;
    default:
      element_loss_kernel<T, U, element_loss::mse><<<blocks, kThreads, 0, stream>>>(p, partials);
  }
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
