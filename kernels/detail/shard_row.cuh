// A row of a vocabulary-parallel shard, on the device (shard_kernels.cu, the only file that
// includes this): its summary fields, its target, the soft-cap, the coefficients label smoothing
// gives its classes, the block-wide summary, and finish's view of the row: its values from the
// whole-row summary and its gradient coefficients. The algorithm: vocab_parallel.cu.
#pragma once

#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include <cmath>
#include <cstdint>

#include "fusedloss/vocab_parallel.h"
#include "online_softmax.cuh"
#include "vector_io.cuh"
#include "vocab_parallel.hpp"

// In an unnamed namespace, as the kernels that use it: one translation unit holds them all.
namespace fusedloss::kernels {
namespace {

using detail::fast_exp2;
using detail::kLog2e;
using detail::kPerVector;
using detail::row_summary;
using detail::term;
using detail::warp_merge;

constexpr int kBlockThreads = 256;  // partial and the gradient: a block per row
constexpr int kWarpsPerBlock = kBlockThreads / 32;
constexpr int kUnroll = 4;  // 16-byte logit loads in flight per thread
// Resident blocks the partial and gradient kernels are compiled for (4: 64 registers a thread, 50%
// occupancy; 3: 80, still 48 KB of loads in flight an SM, 4.5 times what Little's law asks). The
// partial's plain loops fit in 64; tanh, and the gradient's 32 results held until its 4 stores,
// need more. Left to itself ptxas picks fewer registers and spills a row's constants.
constexpr int kPartialMinBlocks(bool capped) { return capped ? 3 : 4; }
constexpr int kGradientMinBlocks = 3;
constexpr int64_t kIgnored = -1;
constexpr int64_t kInvalid = -2;

// Field f of row r of the summary.
__device__ __forceinline__ float* field(const shard_problem& p, int f, int64_t r) {
  return p.summary + static_cast<int64_t>(f) * p.batch + r;
}

// Row r's global class, kIgnored or kInvalid.
__device__ __forceinline__ int64_t target_of(const shard_problem& p, int64_t r) {
  const int64_t y = p.targets_dtype == FUSEDLOSS_INT32 ? static_cast<const int32_t*>(p.targets)[r]
                                                       : static_cast<const int64_t*>(p.targets)[r];
  if (y == p.ignore_index) return kIgnored;
  return y >= 0 && y < p.vocab_size ? y : kInvalid;
}

// The class of this shard that a global target is, or -1 when another rank holds it (or none).
__device__ __forceinline__ int local_class(const shard_problem& p, int64_t y) {
  const int64_t local = y - p.vocab_start;
  return y >= 0 && local >= 0 && local < p.num_classes ? static_cast<int>(local) : -1;
}

__device__ __forceinline__ float weight_of(const shard_problem& p, int c) {
  return p.weight != nullptr ? __ldg(p.weight + c) : 1.0f;
}

// The soft-cap where kCapped (softcap > 0: the launch chose this instantiation), else nothing.
template <bool kCapped>
struct capper {
  float s, inverse;
  __device__ explicit capper(float softcap)
      : s(softcap), inverse(kCapped ? 1.0f / softcap : 0.0f) {}
  __device__ __forceinline__ float operator()(float x) const {
    if constexpr (kCapped) {
      return s * tanhf(x * inverse);
    } else {
      return x;
    }
  }
  // The capped value, and d(capped)/d(raw) in `slope`.
  __device__ __forceinline__ float with_slope(float x, float& slope) const {
    if constexpr (kCapped) {
      const float t = tanhf(x * inverse);  // +-inf -> +-1: the cap maps them to +-s
      slope = 1.0f - t * t;
      return s * t;
    } else {
      slope = 1.0f;
      return x;
    }
  }
};

// The coefficients label smoothing gives the classes, which fix what the loops load and add: none
// (no smoothing), ones (smoothing without class weights: never 0, so no zero guard) or the class
// weights.
enum class coefficient_kind { none, ones, weights };

// Logit vectors a streaming loop keeps in flight: fewer beside class weights, whose two vectors
// for each of the logits' would push the loop into local memory.
template <coefficient_kind K>
constexpr int kUnrollOf = K == coefficient_kind::weights ? kUnroll / 2 : kUnroll;

__device__ __forceinline__ coefficient_kind coefficient_kind_of(const shard_problem& p) {
  if (!(p.label_smoothing > 0)) return coefficient_kind::none;
  return p.weight != nullptr ? coefficient_kind::weights : coefficient_kind::ones;
}

template <coefficient_kind K>
__device__ __forceinline__ float coefficient_of(const shard_problem& p, int c) {
  if constexpr (K == coefficient_kind::none) {
    return 0.0f;
  } else if constexpr (K == coefficient_kind::ones) {
    return 1.0f;
  } else {
    return __ldg(p.weight + c);
  }
}

// The coefficients of the N classes from `c0` on; `vector`: weight + c0 is 16-byte aligned and N a
// multiple of 4.
template <coefficient_kind K, int N>
__device__ __forceinline__ void coefficients_at(const shard_problem& p, int c0, bool vector,
                                                float (&c)[N]) {
  if constexpr (K != coefficient_kind::weights) {
#pragma unroll
    for (int k = 0; k < N; ++k) c[k] = coefficient_of<K>(p, c0 + k);
  } else if (vector) {
    const float4* w = reinterpret_cast<const float4*>(p.weight + c0);
#pragma unroll
    for (int k = 0; k < N / 4; ++k) {
      const float4 v = __ldg(w + k);
      c[4 * k] = v.x;
      c[4 * k + 1] = v.y;
      c[4 * k + 2] = v.z;
      c[4 * k + 3] = v.w;
    }
  } else {
#pragma unroll
    for (int k = 0; k < N; ++k) c[k] = __ldg(p.weight + c0 + k);
  }
}

// The block-wide summary in every thread, merged in a fixed order (the same bits every run), and
// in thread 0 whether any thread saw a NaN (`nan`; the flag rides on the summary's own barrier).
// `scratch` and `nans` are free again after the caller's next __syncthreads.
__device__ row_summary block_summary(row_summary s, bool& nan, row_summary* scratch, bool* nans) {
  s = warp_merge(s, 32);
  nan = __any_sync(0xffffffffu, nan);
  if (threadIdx.x % 32 == 0) {
    scratch[threadIdx.x / 32] = s;
    nans[threadIdx.x / 32] = nan;
  }
  __syncthreads();
  if (threadIdx.x == 0) {
    for (int w = 0; w < kWarpsPerBlock; ++w) nan = nan || nans[w];
  }
  return warp_merge(scratch[threadIdx.x % kWarpsPerBlock], kWarpsPerBlock);
}

// ------------------------------------------------------------------------------------------------
// finish's view of a row

// A row's values from its whole-row summary.
struct row_values {
  float ref;      // what SUM_EXP and WEIGHTED_SUM are relative to
  float log_sum;  // log SUM_EXP
  float lse;
};

__device__ __forceinline__ row_values values_of(const shard_problem& p, int64_t r) {
  const float max = *field(p, FUSEDLOSS_SHARD_SUMMARY_MAX, r);
  row_values v;
  v.ref = max == -INFINITY ? 0.0f : max;
  v.log_sum = logf(*field(p, FUSEDLOSS_SHARD_SUMMARY_SUM_EXP, r));
  v.lse = v.ref + v.log_sum;  // -inf for a row of -inf logits
  return v;
}

// A row's gradient coefficients: dL/dx_j = (P p_j - A [j = y] - B w_j) cap'(x_j), the upstream
// scale included.
struct gradient_row {
  float ref, log_sum;
  float P, A, B;
  int local;  // the target's class in this shard, or -1
  bool zero;  // ignored or invalid row, or a mean over nothing: exactly 0
};

// The upstream gradient of every row, the mean's 1 / D included (0 for a mean over nothing).
// Computed once a kernel, ahead of the row loop: the division's slow path is a call, and values
// live across a call are spilled.
__device__ __forceinline__ float upstream_of(const shard_problem& p, const double* normaliser) {
  const float upstream = p.grad_scale * (p.grad_scale_ptr != nullptr ? *p.grad_scale_ptr : 1.0f);
  if (normaliser == nullptr) return upstream;
  const double d = *normaliser;
  return d != 0 ? static_cast<float>(upstream / d) : 0.0f;
}

// Row r's coefficients. `smooth_scale` (eps / V) comes from the host, so that no division is left
// in the kernel; the mean's emptiness is read again a row rather than held in a register the
// whole kernel.
__device__ __forceinline__ gradient_row gradient_row_of(const shard_problem& p, int64_t r,
                                                        float upstream, const double* normaliser,
                                                        float smooth_scale) {
  gradient_row g{};
  const int64_t y = target_of(p, r);
  g.zero = y < 0 || (normaliser != nullptr && *normaliser == 0);
  if (g.zero) return g;
  const row_values v = values_of(p, r);
  const float eps = p.label_smoothing;
  const float a = upstream * (1.0f - eps) * *field(p, FUSEDLOSS_SHARD_SUMMARY_TARGET_WEIGHT, r);
  const float b = upstream * smooth_scale;
  g.ref = v.ref;
  g.log_sum = v.log_sum;
  g.A = a;
  g.B = b;
  g.P = a + term(b, *field(p, FUSEDLOSS_SHARD_SUMMARY_WEIGHT_SUM, r)) +
        term(upstream * p.z_loss, 2.0f * v.lse);
  g.local = local_class(p, y);
  return g;
}

// The gradient of one element from its raw logit and coefficient w, the target's -A included
// only where `target`.
template <bool kCapped>
__device__ __forceinline__ float gradient_of(const gradient_row& g, const capper<kCapped>& cap,
                                             float raw, float w, bool target) {
  float slope;
  const float x = cap.with_slope(raw, slope);
  const float pj = fast_exp2(((x - g.ref) - g.log_sum) * kLog2e);
  float d = g.P * pj - term(g.B, w);
  if (target) d -= g.A;
  return d * slope;
}

}  // namespace
}  // namespace fusedloss::kernels
