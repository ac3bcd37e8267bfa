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

constexpr float kLn2 = 0.6931471805599453f;

/// 2^x on the special-function unit: one instruction, within 2 ulp; 2^-inf = 0, subnormal results
/// flush to 0 (they are below every tolerance of a probability).
__device__ __forceinline__ float fast_exp2(float x) {
  float y;
  asm("ex2.approx.ftz.f32 %0, %1;" : "=f"(y) : "f"(x));
  return y;
}

/// log2 x on the special-function unit: an absolute error of at most 2^-22.6 (where x is normal;
/// a subnormal x flushes to 0 and gives -inf), a relative error of ~2e-7 in the 2^(...) it feeds.
__device__ __forceinline__ float fast_log2(float x) {
  float y;
  asm("lg2.approx.ftz.f32 %0, %1;" : "=f"(y) : "f"(x));
  return y;
}

// Plain data (no constructor), so that it can live in __shared__ memory; start from none().
//
// The sum is kept in base 2, relative to scaled_ref() = ref() log2 e rounded to float32, so that
// an element's exponential is one multiply-add and one 2^x: 2^(x log2 e - scaled_ref()), which is
// exp(x - ref()) 2^residual() with residual() = ref() log2 e - scaled_ref() (|residual| <= half
// an ulp of scaled_ref), the same factor for every element. log_sum() takes it back out exactly,
// and a quotient of two terms (the kept exponentials over the sum) never sees it.
struct row_summary {
  float max;           // of the logits seen; a NaN is left to `sum`, which it makes NaN
  float sum;           // sum of 2^(x log2 e - scaled_ref())
  float weighted;      // sum of c * (x - ref()) over the elements seen, c their coefficients
  float coefficients;  // sum of c

  /// The summary of no element.
  static __device__ __forceinline__ row_summary none() { return {-INFINITY, 0.0f, 0.0f, 0.0f}; }

  /// What `sum` and `weighted` are relative to: the maximum, or 0 while every logit is -inf (so
  /// that -inf - ref is -inf, never -inf - -inf).
  __device__ __forceinline__ float ref() const { return max == -INFINITY ? 0.0f : max; }

  /// ref() log2 e, rounded once (never contracted into a neighbouring multiply-add, so every use
  /// sees the same value).
  __device__ __forceinline__ float scaled_ref() const { return __fmul_rn(ref(), kLog2e); }

  /// ref() log2 e - scaled_ref(), exactly (the rounding error of a product is an FMA away).
  __device__ __forceinline__ float residual() const { return fmaf(ref(), kLog2e, -scaled_ref()); }

  /// log sum_c exp(x_c - ref()), the row's LSE less its reference: 4 instructions where logf
  /// takes ~27, within ~1.1e-7 of it (the sum is about 1 at least, from the maximum itself, unless
  /// it is 0 or NaN).
  __device__ __forceinline__ float log_sum() const { return (fast_log2(sum) - residual()) * kLn2; }

  /// sum_c exp(x_c - ref()), for a reader outside the kernels.
  __device__ __forceinline__ float natural_sum() const { return sum * fast_exp2(-residual()); }

  /// log sum exp of the row: -inf for a row of -inf logits, NaN with a NaN or +inf logit.
  __device__ __forceinline__ float lse() const { return max + log_sum(); }

  /// The exponential of one element relative to the reference, as `sum` holds them.
  __device__ __forceinline__ float exp_of(float x) const {
    return fast_exp2(fmaf(x, kLog2e, -scaled_ref()));
  }

  /// Moves the reference to `to` (>= ref() unless the reference was the 0 of an all -inf summary).
  __device__ __forceinline__ void rebase(float to) {
    const float shift = ref() - to;
    if (shift != 0.0f) {
      // A zero sum stays zero even when 2^shift overflows (an all -inf summary meeting a negative
      // maximum); a NaN stays NaN. The factor is exact between the two base-2 references.
      if (sum != 0.0f) sum *= fast_exp2(scaled_ref() - __fmul_rn(to, kLog2e));
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
/// maximum, leaving each one's term of the sum in e_k. With kCoefficients the weighted sum takes
/// c_k (x_k - ref); with kZeroGuard a coefficient of exactly 0 adds exactly 0 even beside a -inf
/// logit (0 * -inf would be NaN). A caller that knows no coefficient is 0 leaves the guard's two
/// instructions an element out.
template <int N, bool kCoefficients, bool kZeroGuard = true>
__device__ __forceinline__ void accumulate(const float (&x)[N], const float (&c)[N], row_summary& s,
                                           float (&e)[N]) {
  const float ref = s.ref();
#pragma unroll
  for (int k = 0; k < N; ++k) e[k] = s.exp_of(x[k]);
  float terms[N];  // tree_sum adds in place
#pragma unroll
  for (int k = 0; k < N; ++k) terms[k] = e[k];
  s.sum += tree_sum(terms);
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

/// accumulate, for a caller that needs no exponential back.
template <int N, bool kCoefficients, bool kZeroGuard = true>
__device__ __forceinline__ void accumulate(const float (&x)[N], const float (&c)[N],
                                           row_summary& s) {
  float e[N];
  accumulate<N, kCoefficients, kZeroGuard>(x, c, s, e);
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
