// The online log-sum-exp of a row, with the weighted logit sum that label smoothing and probability
// targets need, as a mergeable summary: each thread folds in its elements, then threads, warps,
// blocks or a cluster's blocks merge their summaries in a fixed order. The merge is commutative
// bit for bit (IEEE + and * are), so a butterfly gives every lane the same result.
#pragma once

#include <cmath>

namespace fusedloss::kernels::detail {

// Plain data (no constructor), so that it can live in __shared__ memory; start from none().
struct row_summary {
  float max;               // of the logits seen (a NaN is left to `sum`, which it makes NaN)
  float sum;               // sum of exp(x - max)
  float weighted;          // sum of c * (x - max) over finite x with coefficient c
  float coefficients;      // sum of c over finite x
  float all_coefficients;  // sum of c over every x, infinite ones included
  bool masked;             // a -inf logit with a non-zero coefficient (its term is +inf)

  /// The summary of no element.
  static __device__ __forceinline__ row_summary none() {
    return {-INFINITY, 0.0f, 0.0f, 0.0f, 0.0f, false};
  }

  // Folds in logit x with coefficient c (c = 0: x only enters the log-sum-exp).
  __device__ __forceinline__ void add(float x, float c) {
    all_coefficients += c;
    if (x == -INFINITY) {
      masked = masked || c != 0.0f;  // exp(-inf) adds nothing to `sum`
      return;
    }
    if (x == INFINITY) {  // x - lse is inf - inf: the row's results are NaN
      sum = NAN;
      max = INFINITY;
      return;
    }
    if (x > max) {  // never true for NaN
      if (max != -INFINITY) {
        const float shift = max - x;
        sum *= expf(shift);
        weighted += shift * coefficients;
      }
      max = x;
    }
    sum += expf(x - max);  // a NaN x makes sum NaN, and with it the row's results
    weighted += c * (x - max);
    coefficients += c;
  }

  // Folds in another summary; the result does not depend on the order of the two.
  __device__ __forceinline__ void merge(const row_summary& o) {
    const float m = fmaxf(max, o.max);
    sum = rescale(sum, max, m) + rescale(o.sum, o.max, m);
    weighted = (weighted + shift(max, m) * coefficients) + (o.weighted + shift(o.max, m) * o.coefficients);
    coefficients += o.coefficients;
    all_coefficients += o.all_coefficients;
    masked = masked || o.masked;
    max = m;
  }

  /// log sum exp of the row.
  __device__ __forceinline__ float lse() const { return max + logf(sum); }

 private:
  // `value` was accumulated relative to `from`; express it relative to `to` >= from. A summary
  // with no finite logit (max -inf) contributes 0 rather than NaN, unless a NaN logit made its
  // value NaN: that must reach the row's result.
  static __device__ __forceinline__ float rescale(float value, float from, float to) {
    return from == -INFINITY && !isnan(value) ? 0.0f : value * expf(from - to);
  }
  static __device__ __forceinline__ float shift(float from, float to) {
    return from == -INFINITY ? 0.0f : from - to;
  }
};

}  // namespace fusedloss::kernels::detail
