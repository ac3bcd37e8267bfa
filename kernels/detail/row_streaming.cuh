// The streaming loops of the row kernels' block, cluster and two_pass tiers (row_tiers.cu, the
// only file that includes this): the threads of a block over the classes [begin, end) of one row
// (element j at x[j * step]), folding them into a summary, staged in shared memory on the way when
// asked, and writing their gradient.
#pragma once

#include <cstdint>

#include "row_context.cuh"

namespace fusedloss::kernels {
namespace {

// Folds N whole vectors (raw, from class j0 on with a stride of kBlockThreads vectors) into `s`:
// their maximum first (in the logits' own type), one rebase of the running sums, then each
// vector's exponentials relative to it. kZeroGuard: some coefficient may be exactly 0.
template <class T, feature F, bool kZeroGuard, int N>
__device__ __forceinline__ void fold_vectors(const row_context& ctx, int64_t r,
                                             const uint4 (&raw)[N], int j0, row_summary& s) {
  constexpr int V = kPerVector<T>;
  float chunk_max = detail::vectors_max<T>(raw);
  if constexpr (kMayCap<F>) chunk_max = ctx.cap(chunk_max);  // s tanh(x / s) is increasing
  const float m = fmaxf(s.max, chunk_max);
  s.rebase(m == -INFINITY ? 0.0f : m);
  s.max = m;
#pragma unroll
  for (int v = 0; v < N; ++v) {
    float x[V], c[V];
    detail::unpack<T>(raw[v], x);
    if constexpr (kMayCap<F>) {
#pragma unroll
      for (int k = 0; k < V; ++k) x[k] = ctx.cap(x[k]);
    }
    if constexpr (kHasCoefficients<F>) ctx.coefficients<F>(r, j0 + v * kBlockThreads * V, c);
    detail::accumulate<V, kHasCoefficients<F>, kZeroGuard>(x, c, s);
  }
}

// Folds classes [begin, end) of row r into `s`, staging them in `stage` (shared memory, class
// `begin` at stage[0]) when that is given.
template <class T, feature F, bool kZeroGuard>
__device__ void fold_range(const row_context& ctx, int64_t r, const T* x, int begin, int end,
                           int step, T* stage, row_summary& s) {
  constexpr int V = kPerVector<T>;
  if (step == 1 && aligned(x + begin)) {
    const int vectors = (end - begin) / V;
    int v = threadIdx.x;
    constexpr int U = kUnrollOf<F>;
    for (; v + (U - 1) * kBlockThreads < vectors; v += U * kBlockThreads) {
      uint4 raw[U];
#pragma unroll
      for (int u = 0; u < U; ++u) raw[u] = load_vector(x + begin + (v + u * kBlockThreads) * V);
      if (stage != nullptr) {
#pragma unroll
        for (int u = 0; u < U; ++u) store_vector(stage + (v + u * kBlockThreads) * V, raw[u]);
      }
      fold_vectors<T, F, kZeroGuard, U>(ctx, r, raw, begin + v * V, s);
    }
    for (; v < vectors; v += kBlockThreads) {
      uint4 raw[1] = {load_vector(x + begin + v * V)};
      if (stage != nullptr) store_vector(stage + v * V, raw[0]);
      fold_vectors<T, F, kZeroGuard, 1>(ctx, r, raw, begin + v * V, s);
    }
    begin += vectors * V;  // the scalar tail below
    if (stage != nullptr) stage += vectors * V;
  }
  for (int j = begin + static_cast<int>(threadIdx.x); j < end; j += kBlockThreads) {
    const T raw = x[static_cast<int64_t>(j) * step];
    if (stage != nullptr) stage[j - begin] = raw;
    const float xs[1] = {cap_of<F>(ctx, detail::to_float(raw))};
    const float cs[1] = {ctx.coefficient<F>(r, j)};
    detail::fold_chunk<1, kHasCoefficients<F>>(xs, cs, xs[0], s);
  }
}

// Whether some class weight of [begin, end) is exactly 0, for the whole block (one pass over the
// weights a kernel, from L2): only then do the weighted loops pay for the zero guard.
template <feature F>
__device__ bool any_zero_weight(const row_context& ctx, int begin, int end) {
  if constexpr (F != feature::weighted_smoothing) {
    return F != feature::smoothing;  // smoothing's coefficients are 1; the others guard always
  } else {
    bool zero = false;
    for (int j = begin + static_cast<int>(threadIdx.x); j < end; j += kBlockThreads) {
      zero = zero || __ldg(ctx.p.weight + j) == 0.0f;
    }
    return __syncthreads_or(zero);
  }
}

// fold_range with the zero guard chosen at run time (`guard`, block-uniform).
template <class T, feature F>
__device__ __forceinline__ void fold_row(const row_context& ctx, int64_t r, const T* x, int begin,
                                         int end, int step, T* stage, bool guard, row_summary& s) {
  if (!guard) {
    fold_range<T, F, false>(ctx, r, x, begin, end, step, stage, s);
  } else {
    fold_range<T, F, true>(ctx, r, x, begin, end, step, stage, s);
  }
}

// The coefficients' sum alone (a backward given the LSE of probability targets).
template <feature F>
__device__ void sum_coefficients(const row_context& ctx, int64_t r, int begin, int end,
                                 row_summary& s) {
  for (int j = begin + static_cast<int>(threadIdx.x); j < end; j += kBlockThreads) {
    s.coefficients += ctx.coefficient<F>(r, j);
  }
}

// Writes the gradient of N whole vectors (raw logits) at class j0 of the row, stride kBlockThreads.
template <class T, feature F, int N>
__device__ __forceinline__ void gradient_vectors(const row_context& ctx, const row_result& res,
                                                 int64_t r, const uint4 (&raw)[N], int j0, T* g) {
  constexpr int V = kPerVector<T>;
#pragma unroll
  for (int v = 0; v < N; ++v) {
    float x[V], c[V], out[V];
    detail::unpack<T>(raw[v], x);
    if constexpr (kHasCoefficients<F>) ctx.coefficients<F>(r, j0 + v * kBlockThreads * V, c);
#pragma unroll
    for (int k = 0; k < V; ++k) out[k] = gradient_of<F>(ctx, res, x[k], c[k]);
    store_gradient(g + v * kBlockThreads * V, detail::pack<T>(out));
  }
}

// Writes the gradient of classes [begin, end) of row r (the target's left for
// write_target_gradient), reading the logits from `source` (shared memory holding the slice from
// class `begin` on, or the row in global memory, element j at source[j * step]).
template <class T, feature F>
__device__ void gradient_range(const row_context& ctx, const row_result& res, int64_t r,
                               const T* source, bool staged, int begin, int end, int step,
                               T* g_row) {
  constexpr int V = kPerVector<T>;
  const int offset = staged ? begin : 0;  // the stage holds the slice from its first class
  if (res.zero_grad) {
    for (int j = begin + static_cast<int>(threadIdx.x); j < end; j += kBlockThreads) {
      g_row[static_cast<int64_t>(j) * step] = detail::from_float<T>(0.0f);
    }
    return;
  }
  if (step == 1 && aligned(g_row + begin) && (staged || aligned(source + begin))) {
    const int vectors = (end - begin) / V;
    int v = threadIdx.x;
    constexpr int U = kUnrollOf<F>;
    for (; v + (U - 1) * kBlockThreads < vectors; v += U * kBlockThreads) {
      uint4 raw[U];
#pragma unroll
      for (int u = 0; u < U; ++u) {
        raw[u] = load_vector(source + begin - offset + (v + u * kBlockThreads) * V);
      }
      gradient_vectors<T, F, U>(ctx, res, r, raw, begin + v * V, g_row + begin + v * V);
    }
    for (; v < vectors; v += kBlockThreads) {
      const uint4 raw[1] = {load_vector(source + begin - offset + v * V)};
      gradient_vectors<T, F, 1>(ctx, res, r, raw, begin + v * V, g_row + begin + v * V);
    }
    begin += vectors * V;
  }
  for (int j = begin + static_cast<int>(threadIdx.x); j < end; j += kBlockThreads) {
    const float x = detail::to_float(source[static_cast<int64_t>(j - offset) * step]);
    g_row[static_cast<int64_t>(j) * step] =
        detail::from_float<T>(gradient_of<F>(ctx, res, x, ctx.coefficient<F>(r, j)));
  }
}

}  // namespace
}  // namespace fusedloss::kernels
