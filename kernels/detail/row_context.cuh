// One row of the row-loss kernels (row_tiers.cu, the only file that includes this): its target,
// its coefficients under each compile-time feature, its finish into the loss, the LSE and the
// gradient coefficients, the gradient of one element, the row's outputs, and the block-wide
// pieces every tier shares. The algorithm: row_losses.cu.
#pragma once

#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include <cmath>
#include <cstdint>

#include "online_softmax.cuh"
#include "reduce.cuh"
#include "row_tiers.hpp"
#include "storage.cuh"
#include "vector_io.cuh"

// In an unnamed namespace, as the kernels that use it: one translation unit holds them all.
namespace fusedloss::kernels {
namespace {

using detail::fast_exp2;
using detail::fast_log2;
using detail::feature;
using detail::kBlockThreads;
using detail::kLog2e;
using detail::kPerVector;
using detail::row_summary;
using detail::row_workspace;
using detail::term;
using detail::warp_merge;

constexpr int kWarpsPerBlock = kBlockThreads / 32;
constexpr int kUnroll = 4;  // 16-byte logit loads in flight per thread in the streaming loops
constexpr int64_t kIgnored = -1;
constexpr int64_t kInvalid = -2;

template <feature F>
constexpr bool kHasCoefficients = !(F == feature::plain || F == feature::focal);
template <feature F>
constexpr bool kMayCap = F == feature::general || F == feature::probability;
// Logit vectors a streaming loop keeps in flight: fewer where a soft-cap's tanh or probability
// targets' loads beside them would push the loop into local memory.
template <feature F>
constexpr int kUnrollOf =
    F == feature::general || F == feature::probability ? kUnroll / 2 : kUnroll;
// Resident blocks a kernel is compiled for (at 256 threads: 4 is 64 registers a thread and 50%
// occupancy, 3 is 80, 2 is 128): the options' coefficients and tanh need more registers, and
// weighted smoothing keeps 4 vectors of logits with their 8 of weights in flight.
template <feature F>
constexpr int kMinBlocksOf = F == feature::plain || F == feature::focal ? 4
                             : F == feature::weighted_smoothing         ? 2
                                                                        : 3;

struct row_context {
  const row_problem& p;
  const double* normaliser;  // D on the device under mean (index targets), else null
  float weights_total;       // W, the sum of the class weights (C without them)
  bool capped;
  float inverse_cap;
  bool per_row_upstream;  // backward under none: one upstream value a row
  float upstream_scale;   // the upstream gradient of every row (the mean's 1 / D included), or
                          // the factor of each row's own value (1, or 1 / D)
  bool empty_mean;        // mean over zero rows or zero total weight
  float smoothing_share;  // eps / C, what label smoothing gives every class

  __device__ row_context(const row_problem& problem, const double* d, const double* w)
      : p(problem),
        normaliser(d),
        weights_total(w != nullptr ? static_cast<float>(*w)
                                   : static_cast<float>(problem.num_classes)),
        capped(problem.softcap > 0),
        inverse_cap(problem.softcap > 0 ? 1.0f / problem.softcap : 0.0f),
        per_row_upstream(problem.grad_loss != nullptr &&
                         problem.reduction == FUSEDLOSS_REDUCTION_NONE),
        smoothing_share(problem.num_classes > 0
                            ? problem.label_smoothing / static_cast<float>(problem.num_classes)
                            : 0.0f) {
    float g = 1.0f;
    if (p.grad_loss != nullptr) {
      if (!per_row_upstream) g = p.grad_loss[0];
    } else {
      g = p.grad_scale * (p.grad_scale_ptr != nullptr ? *p.grad_scale_ptr : 1.0f);
    }
    const double rows = static_cast<double>(p.batch * p.spatial);
    const double divisor = normaliser != nullptr ? *normaliser : rows;
    const bool mean = p.reduction == FUSEDLOSS_REDUCTION_MEAN;
    empty_mean = mean && divisor == 0;
    upstream_scale = !mean ? g : divisor != 0 ? static_cast<float>(g / divisor) : 0.0f;
  }

  __device__ int64_t rows() const { return p.batch * p.spatial; }

  // Element (c) of row r sits at base(r, stride) + c * S.
  __device__ int64_t base(int64_t r, int64_t stride) const {
    return (r / p.spatial) * stride + r % p.spatial;
  }

  __device__ float cap(float x) const { return capped ? p.softcap * tanhf(x * inverse_cap) : x; }

  // The row's class, kIgnored or kInvalid (probability targets, which feature F names at compile
  // time: 0, never ignored).
  template <feature F>
  __device__ int64_t target(int64_t r) const {
    if constexpr (F == feature::probability) return 0;
    const int64_t y = p.targets_dtype == FUSEDLOSS_INT32
                          ? static_cast<const int32_t*>(p.targets)[r]
                          : static_cast<const int64_t*>(p.targets)[r];
    if (y == p.ignore_index) return kIgnored;
    return y >= 0 && y < p.num_classes ? y : kInvalid;
  }

  __device__ float weight(int64_t c) const {
    return p.weight != nullptr ? __ldg(p.weight + c) : 1.0f;
  }

  __device__ float smooth(float q) const {
    return (1.0f - p.label_smoothing) * q + smoothing_share;
  }

  // Probability target q_c of row r, unsmoothed (rows of (N, C) without a division).
  __device__ float probability(int64_t r, int64_t c) const {
    return p.spatial == 1 ? probability_at(r * p.num_classes + c)
                          : probability_at((r / p.spatial) * p.num_classes * p.spatial +
                                           c * p.spatial + r % p.spatial);
  }
  __device__ float probability_at(int64_t i) const {
    switch (p.targets_dtype) {
      case FUSEDLOSS_FLOAT16:
        return __half2float(static_cast<const __half*>(p.targets)[i]);
      case FUSEDLOSS_BFLOAT16:
        return __bfloat162float(static_cast<const __nv_bfloat16*>(p.targets)[i]);
      default:
        return static_cast<const float*>(p.targets)[i];
    }
  }

  // Whether the summary carries coefficients at all (general: only with smoothing).
  __device__ bool smoothing() const { return p.label_smoothing > 0; }

  // The coefficient of class c of row r: the class weight under label smoothing (index targets),
  // w_c q'_c for probability targets.
  template <feature F>
  __device__ float coefficient(int64_t r, int64_t c) const {
    if constexpr (!kHasCoefficients<F>) {
      return 0.0f;
    } else if constexpr (F == feature::smoothing) {
      return 1.0f;
    } else if constexpr (F == feature::weighted_smoothing) {
      return __ldg(p.weight + c);
    } else if constexpr (F == feature::general) {
      return smoothing() ? weight(c) : 0.0f;
    } else {
      return weight(c) * smooth(probability(r, c));
    }
  }

  // The coefficients of the vector of N elements at class j0 of row r (S = 1; j0 a multiple of N,
  // so the weights, which the host keeps 16-byte aligned, load as whole vectors).
  template <feature F, int N>
  __device__ void coefficients(int64_t r, int j0, float (&c)[N]) const {
    if constexpr (F == feature::smoothing) {
#pragma unroll
      for (int k = 0; k < N; ++k) c[k] = 1.0f;
    } else if constexpr (F == feature::weighted_smoothing) {
      const float4* w = reinterpret_cast<const float4*>(p.weight + j0);
#pragma unroll
      for (int k = 0; k < N / 4; ++k) {
        const float4 v = __ldg(w + k);
        c[4 * k] = v.x;
        c[4 * k + 1] = v.y;
        c[4 * k + 2] = v.z;
        c[4 * k + 3] = v.w;
      }
    } else if constexpr (kHasCoefficients<F>) {
#pragma unroll
      for (int k = 0; k < N; ++k) c[k] = coefficient<F>(r, j0 + k);
    }
  }

  // The upstream gradient of row r, the mean's 1 / D included (under none there is no mean).
  __device__ float upstream(int64_t r) const {
    return per_row_upstream ? p.grad_loss[r] : upstream_scale;
  }
};

// A row's results: what it adds to the loss and the z-loss, and its gradient coefficients.
struct row_result {
  float lse;
  float loss;
  float z;
  float P, A, B;
  float log2_p;    // log2 |P|: P p_j = sign 2^((x_j - lse) log2 e + log2_p)
  float sign;      // of P
  int64_t y;       // the class whose gradient takes -A; -1 for none
  bool zero_grad;  // ignored row, or mean over nothing: the gradient is exactly 0
};

// The soft-capped logit where feature F may cap; the logit itself (no tanh compiled in) elsewhere.
template <feature F>
__device__ __forceinline__ float cap_of(const row_context& ctx, float x) {
  if constexpr (kMayCap<F>) {
    return ctx.cap(x);
  } else {
    return x;
  }
}

// Finishes a row from its summary (or its saved LSE, in which case `s` only carries the
// coefficients). `x_y` is the capped target logit (index targets). Only the losses feature F
// serves are compiled in.
template <feature F>
__device__ row_result finish(const row_context& ctx, int64_t r, int64_t y, const row_summary& s,
                             float x_y) {
  const row_problem& p = ctx.p;
  row_result out{};
  if (p.read_lse) {
    // cold: the LSE a backward is given
    out.lse = p.lse[r];
    // cold end
  } else {
    out.lse = s.lse();
  }
  out.y = -1;
  out.zero_grad = y < 0 || ctx.empty_mean;
  out.log2_p = -INFINITY;
  out.sign = 1.0f;
  if (y < 0) return out;  // ignored (or invalid, treated as ignored): loss 0, gradient 0

  const float lse = out.lse;
  const float up = p.grad == nullptr ? 0.0f : ctx.upstream(r);
  const float eps = kHasCoefficients<F> || F == feature::general ? p.label_smoothing : 0.0f;
  out.z = term(p.z_loss, lse * lse);
  const float z_grad = up * 2.0f * p.z_loss * lse;
  // -sum_c c_c lp_c over the row (the smoothing term, or the probability-target loss); +inf when
  // a -inf logit has a positive coefficient (its term in `weighted` is -inf).
  const float smoothing_sum = term(s.coefficients, s.log_sum()) - s.weighted;

  const row_loss kind = F == feature::probability ? row_loss::probability_cross_entropy
                        : F == feature::focal     ? row_loss::softmax_focal
                        : F == feature::general   ? p.kind
                                                  : row_loss::cross_entropy;
  switch (kind) {
    case row_loss::cross_entropy: {
      const float w_y = ctx.weight(y);
      const float nll = term(w_y, -(x_y - lse));
      out.loss = term(1.0f - eps, nll) +
                 (eps > 0 ? term(ctx.smoothing_share, smoothing_sum) : 0.0f) + out.z;
      const float a = up * (1.0f - eps) * w_y;
      const float b = up * ctx.smoothing_share;
      out.P = a + (eps > 0 ? b * ctx.weights_total : 0.0f) + z_grad;
      out.A = a;
      out.B = b;
      out.y = y;
      break;
    }
    case row_loss::probability_cross_entropy:
      out.loss = smoothing_sum + out.z;
      out.P = up * s.coefficients + z_grad;
      out.A = 0.0f;
      out.B = up;
      break;
    default: {
      // cold: softmax focal's finish
      const float lp = x_y - lse;
      const float u = expf(lp);
      const float m = -expm1f(lp);  // 1 - u without cancellation
      const float ratio = m == 0.0f ? -1.0f : lp / m;
      const float focus = p.gamma == 0.0f ? 1.0f : powf(m, p.gamma);
      const float alpha = ctx.weight(y);
      out.loss = term(alpha, -focus * lp);
      const float k = -alpha * focus * (1.0f - term(p.gamma * u, ratio));
      out.P = -up * k;
      out.A = -up * k;
      out.B = 0.0f;
      out.y = y;
      out.z = 0.0f;
      // cold end
    }
  }
  out.log2_p = fast_log2(fabsf(out.P));
  out.sign = out.P < 0 ? -1.0f : 1.0f;
  return out;
}

// Soft-caps a raw logit x where feature F may cap (x stays itself without a cap), returning the
// cap's slope there: 1 - tanh^2, or 1.
template <feature F>
__device__ __forceinline__ float capped_with_slope(const row_context& ctx, float& x) {
  if constexpr (kMayCap<F>) {
    if (ctx.capped) {
      const float t = tanhf(x * ctx.inverse_cap);
      x = ctx.p.softcap * t;
      return 1.0f - t * t;
    }
  }
  return 1.0f;
}

// The gradient of one element from its raw logit and coefficient, without the target's -A.
template <feature F>
__device__ __forceinline__ float gradient_of(const row_context& ctx, const row_result& res, float x,
                                             float c) {
  const float slope = capped_with_slope<F>(ctx, x);
  float g = fast_exp2(fmaf(x - res.lse, kLog2e, res.log2_p)) * res.sign;
  if constexpr (kHasCoefficients<F>) g = fmaf(-res.B, c, g);
  return g * slope;
}

// gradient_of from the element's exponential e = exp(x - ref) that the fold kept, given
// scale = P exp(ref - lse): one multiply where gradient_of spends a subtraction, a multiply-add,
// an exponential and a multiply. `raw` is the raw logit, for the soft-cap's slope.
template <feature F>
__device__ __forceinline__ float gradient_from_exp(const row_context& ctx, const row_result& res,
                                                   float scale, float e, float raw, float c) {
  const float slope = capped_with_slope<F>(ctx, raw);
  float g = e * scale;
  if constexpr (kHasCoefficients<F>) g = fmaf(-res.B, c, g);
  return g * slope;
}

// The target's gradient (P p_y - A - B c_y) cap'(x_y), from its raw logit, in float32. p_y on the
// special-function unit: its relative error of ~2^-22 is far inside the budget of this sum, where
// P p_y and A cancel.
template <feature F>
__device__ float target_gradient(const row_context& ctx, const row_result& res, int64_t r,
                                 float raw_x_y) {
  float x = raw_x_y;
  const float slope = capped_with_slope<F>(ctx, x);
  const float c = kHasCoefficients<F> ? ctx.coefficient<F>(r, res.y) : 0.0f;
  return (res.P * fast_exp2((x - res.lse) * kLog2e) - res.A - res.B * c) * slope;
}

// The per-row outputs and the block's running sums, written by one thread of the row.
__device__ void write_row_outputs(const row_context& ctx, int64_t r, int64_t y,
                                  const row_result& res, double& loss_sum, double& z_sum) {
  const row_problem& p = ctx.p;
  if (p.lse != nullptr && !p.read_lse) p.lse[r] = res.lse;
  if (y == kInvalid && p.invalid_target_count != nullptr) {
    // cold: the invalid-target counter
    atomicAdd(reinterpret_cast<unsigned long long*>(p.invalid_target_count), 1ull);
    // cold end
  }
  if (p.reduction == FUSEDLOSS_REDUCTION_NONE) {
    // cold: the per-row losses of reduction none
    if (p.loss != nullptr) p.loss[r] = res.loss;
    if (p.z_loss_out != nullptr) p.z_loss_out[r] = res.z;
    // cold end
  } else {
    loss_sum += res.loss;
    z_sum += res.z;
  }
}

// Writes the target's gradient over the value the loops left there, once every thread's store to
// the row is ordered before it (the caller's barrier).
template <class T, feature F>
__device__ void write_target_gradient(const row_context& ctx, const row_result& res, int64_t r,
                                      float raw_x_y, T* g_row) {
  if (res.zero_grad || res.y < 0) return;
  g_row[res.y * ctx.p.spatial] = detail::from_float<T>(target_gradient<F>(ctx, res, r, raw_x_y));
}

template <int kThreads>
__device__ void write_partials(const row_workspace& w, double loss_sum, double z_sum) {
  if (w.loss_partials == nullptr) return;
  detail::write_block_partial<kThreads>(loss_sum, w.loss_partials);
  __syncthreads();  // the block reduction's shared storage is reused
  detail::write_block_partial<kThreads>(z_sum, w.z_partials);
}

template <class T>
__device__ __forceinline__ bool aligned(const T* p) {
  return reinterpret_cast<uintptr_t>(p) % detail::kVectorBytes == 0;
}

// The block-wide summary, in every thread. `scratch` (kWarpsPerBlock summaries) is free again
// after the caller's next __syncthreads.
__device__ row_summary block_summary(row_summary s, row_summary* scratch) {
  s = warp_merge(s, 32);
  if (threadIdx.x % 32 == 0) scratch[threadIdx.x / 32] = s;
  __syncthreads();
  return warp_merge(scratch[threadIdx.x % kWarpsPerBlock], kWarpsPerBlock);
}

// The capped target logit of row r (index targets) and its raw value. Every tier reads it before
// the row's first barrier: in place, another thread may overwrite it with its gradient after that.
template <feature F, class T>
__device__ __forceinline__ float raw_target_logit(const row_context& ctx, const T* x_row,
                                                  int64_t y) {
  if constexpr (F == feature::probability) return 0.0f;
  return y >= 0 ? detail::to_float(x_row[y * ctx.p.spatial]) : 0.0f;
}

template <class T>
__device__ __forceinline__ uint4 load_vector(const T* p) {
  return *reinterpret_cast<const uint4*>(p);
}
template <class T>
__device__ __forceinline__ void store_vector(T* p, const uint4& v) {
  *reinterpret_cast<uint4*>(p) = v;
}
// A gradient vector: written once and not read again by the kernel, so streamed past the caches
// (and always one 16-byte store, which a plain store of a uint4 is not guaranteed to compile to).
template <class T>
__device__ __forceinline__ void store_gradient(T* p, const uint4& v) {
  __stcs(reinterpret_cast<uint4*>(p), v);
}

}  // namespace
}  // namespace fusedloss::kernels
