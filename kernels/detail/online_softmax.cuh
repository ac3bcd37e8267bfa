// The log-sum-exp of a row, with the weighted logit sum that label smoothing and probability
// targets need, as a mergeable summary. A thread folds its elements in a chunk at a time (the
// chunk's maximum first, then one exponential per element relative to it, so the running sum is
// rescaled once per chunk, not once per element); threads, warps and a cluster's blocks then merge
// their summaries. The merge is commutative bit for bit (IEEE + and max are), so a butterfly gives
// every lane the same result, and a fixed order of chunks and merges gives the same bits on every
// run.
#pragma once

#include <cmath>

namespace fusedloss::kernels::detail {

constexpr float kLog2e = 1.4426950408889634f;

/// 2^x on the special-function unit: one instruction, within 2 ulp; 2^-inf = 0, subnormal results
/// flush to 0 (they are below every tolerance of a probability).
__device__ __forceinline__ float fast_exp2(float x) {
  float y;
  asm("ex2.approx.ftz.f32 %0, %1;" : "=f"(y) : "f"(x));
  return y;
}

// Plain data (no constructor), so that it can live in __shared__ memory; start from none().
struct row_summary {
  float max;           // of the logits seen; a NaN is left to `sum`, which it makes NaN
  float sum;           // sum of exp(x - ref())
  float weighted;      // sum of c * (x - ref()) over the elements seen, c their coefficients
  float coefficients;  // sum of c

  /// The summary of no element.
  static __device__ __forceinline__ row_summary none() { return {-INFINITY, 0.0f, 0.0f, 0.0f}; }

  /// What `sum` and `weighted` are relative to: the maximum, or 0 while every logit is -inf (so
  /// that -inf - ref is -inf, never -inf - -inf).
  __device__ __forceinline__ float ref() const { return max == -INFINITY ? 0.0f : max; }

  /// log sum exp of the row: -inf for a row of -inf logits, NaN with a NaN or +inf logit.
  __device__ __forceinline__ float lse() const { return max + logf(sum); }

  /// Moves the reference to `to` (>= ref() unless the reference was the 0 of an all -inf summary).
  __device__ __forceinline__ void rebase(float to) {
    const float shift = ref() - to;
    if (shift != 0.0f) {
      // A zero sum stays zero even when 2^shift overflows (an all -inf summary meeting a negative
      // maximum); a NaN stays NaN.
      if (sum != 0.0f) sum *= fast_exp2(shift * kLog2e);
      if (coefficients != 0.0f) weighted += shift * coefficients;
    }
  }

  /// Folds in another summary; the result does not depend on the order of the two.
  __device__ __forceinline__ void merge(row_summary o) {
    const float m = fmaxf(max, o.max);
    const float to = m == -INFINITY ? 0.0f : m;
    rebase(to);
    o.rebase(to);
    max = m;
    sum += o.sum;
    weighted += o.weighted;
    coefficients += o.coefficients;
  }
};

/// A term whose coefficient is exactly 0 contributes exactly 0, even if its factor is infinite.
__device__ __forceinline__ float term(float coefficient, float factor) {
  return coefficient == 0.0f ? 0.0f : coefficient * factor;
}

/// Lane `lane ^ offset`'s summary.
__device__ __forceinline__ row_summary shuffle_xor(const row_summary& s, int offset) {
  return {__shfl_xor_sync(0xffffffffu, s.max, offset), __shfl_xor_sync(0xffffffffu, s.sum, offset),
          __shfl_xor_sync(0xffffffffu, s.weighted, offset),
          __shfl_xor_sync(0xffffffffu, s.coefficients, offset)};
}

/// Merges the summaries of each group of `width` consecutive lanes (a power of two), every lane
/// of a group ending with the group's result.
__device__ __forceinline__ row_summary warp_merge(row_summary s, int width) {
  for (int offset = width / 2; offset > 0; offset /= 2) s.merge(shuffle_xor(s, offset));
  return s;
}

/// The sum of N values as a balanced tree (independent adds, and a fixed order).
template <int N>
__device__ __forceinline__ float tree_sum(float (&v)[N]) {
#pragma unroll
  for (int width = 1; width < N; width *= 2) {
#pragma unroll
    for (int k = 0; k + width < N; k += 2 * width) v[k] += v[k + width];
  }
  return v[0];
}

/// Adds N logits (already soft-capped) to `s`, relative to s.ref(), which must be at least their
/// maximum. With kCoefficients the weighted sum takes c_k (x_k - ref); with kZeroGuard a
/// coefficient of exactly 0 adds exactly 0 even beside a -inf logit (0 * -inf would be NaN). A
/// caller that knows no coefficient is 0 leaves the guard's two instructions an element out.
template <int N, bool kCoefficients, bool kZeroGuard = true>
__device__ __forceinline__ void accumulate(const float (&x)[N], const float (&c)[N],
                                           row_summary& s) {
  const float ref = s.ref();
  float e[N];
#pragma unroll
  for (int k = 0; k < N; ++k) e[k] = fast_exp2((x[k] - ref) * kLog2e);
  s.sum += tree_sum(e);
  if constexpr (kCoefficients) {
    float wd[N], cc[N];
#pragma unroll
    for (int k = 0; k < N; ++k) {
      wd[k] = kZeroGuard && c[k] == 0.0f ? 0.0f : c[k] * (x[k] - ref);
      cc[k] = c[k];
    }
    s.weighted += tree_sum(wd);
    s.coefficients += tree_sum(cc);
  }
}

/// Folds N logits (already soft-capped) into `s`, given their maximum `chunk_max` (NaNs ignored):
/// the running sums move to the new maximum once, then the chunk is added relative to it.
template <int N, bool kCoefficients>
__device__ __forceinline__ void fold_chunk(const float (&x)[N], const float (&c)[N],
                                           float chunk_max, row_summary& s) {
  const float m = fmaxf(s.max, chunk_max);
  s.rebase(m == -INFINITY ? 0.0f : m);
  s.max = m;
  accumulate<N, kCoefficients>(x, c, s);
}

}  // namespace fusedloss::kernels::detail
