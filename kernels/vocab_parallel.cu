// The shard calls of vocabulary-parallel cross-entropy on the GPU (fusedloss/vocab_parallel.h);
// host/reference/vocab_parallel.cpp defines what each field and output is, in double.
//
// partial: a block per row folds the shard's (soft-capped) logits into a row_summary
//   (detail/online_softmax.cuh) with the streaming loop of the row kernels, merges it over the
//   block and writes the row's 7 summary fields. One read of the shard.
// rescale: a thread per row moves SUM_EXP and WEIGHTED_SUM from this rank's reference to the
//   global maximum, as row_summary::rebase moves a summary.
// finish: a prepass reduces the mean's normaliser D from the summed TARGET_WEIGHT field (it is
//   needed before any gradient and comes from the summaries alone, so no host read and the call
//   stays graph-capturable); a thread per row writes the LSE and the loss terms, summed per block
//   in double and then in a fixed order (detail/reduce.cuh: no floating-point atomics); a block
//   per row writes the shard's gradient, reading the shard once more.
//
// The partial and gradient kernels are templated on the logits' type and on whether the soft-cap
// is on (chosen at launch), so that a row without it runs no tanh; which coefficients label
// smoothing adds (none, ones or class weights) picks one of three copies of their loops with a
// uniform branch, not more instantiations. The other kernels are not templated: their options are
// run-time flags.
#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include <algorithm>
#include <climits>
#include <cmath>

#include "detail/device.hpp"
#include "detail/online_softmax.cuh"
#include "detail/reduce.cuh"
#include "detail/storage.cuh"
#include "detail/vector_io.cuh"
#include "fusedloss/vocab_parallel.h"
#include "vocab_parallel.hpp"

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
constexpr int kRowThreads = 256;  // the prepass and finish's rows: a thread per row
constexpr int kUnroll = 4;        // 16-byte logit loads in flight per thread
constexpr int kBlocksPerSm = 8;   // no grid exceeds sms times this
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
// partial

// Folds one element (class j, raw value v) into `s`.
template <bool kCapped, coefficient_kind K>
__device__ __forceinline__ void fold_one(const shard_problem& p, const capper<kCapped>& cap,
                                         float v, int j, row_summary& s) {
  const float xs[1] = {cap(v)};
  const float cs[1] = {coefficient_of<K>(p, j)};
  detail::fold_chunk<1, K != coefficient_kind::none>(xs, cs, xs[0], s);
}

// Folds N vectors (raw; vector u at class j0 + u * kBlockThreads * V) into `s`: their maximum in
// the logits' own type first (s tanh(x / s) is increasing, so the cap of the maximum is the
// maximum of the capped), one rebase of the running sums, then the exponentials.
template <class T, bool kCapped, coefficient_kind K, int N>
__device__ __forceinline__ void fold_vectors(const shard_problem& p, const capper<kCapped>& cap,
                                             const uint4 (&raw)[N], int j0, bool weights_vector,
                                             row_summary& s) {
  constexpr int V = kPerVector<T>;
  const float m = fmaxf(s.max, cap(detail::vectors_max<T>(raw)));
  s.rebase(m == -INFINITY ? 0.0f : m);
  s.max = m;
#pragma unroll
  for (int u = 0; u < N; ++u) {
    float x[V], c[V];
    detail::unpack<T>(raw[u], x);
#pragma unroll
    for (int k = 0; k < V; ++k) x[k] = cap(x[k]);
    coefficients_at<K>(p, j0 + u * kBlockThreads * V, weights_vector, c);
    // Only class weights can be 0.
    detail::accumulate<V, K != coefficient_kind::none, K == coefficient_kind::weights>(x, c, s);
  }
}

// This thread's share of classes [0, C) of the row at x: the elements before x's first 16-byte
// boundary and after the last whole vector one by one, the rest as vectors.
template <class T, bool kCapped, coefficient_kind K>
__device__ void fold_row(const shard_problem& p, const capper<kCapped>& cap, const T* x, int C,
                         row_summary& s) {
  constexpr int V = kPerVector<T>;
  const int64_t lead = detail::head_elements(x);
  const int head = lead < C ? static_cast<int>(lead) : C;
  const int vectors = (C - head) / V;
  const int tail = head + vectors * V;
  const bool weights_vector = detail::aligned_at(p.weight, head);
  for (int j = threadIdx.x; j < head; j += kBlockThreads) {
    fold_one<kCapped, K>(p, cap, detail::to_float(x[j]), j, s);
  }
  const T* body = x + head;
  constexpr int U = kUnrollOf<K>;
  int v = threadIdx.x;
  for (; v + (U - 1) * kBlockThreads < vectors; v += U * kBlockThreads) {
    uint4 raw[U];
#pragma unroll
    for (int u = 0; u < U; ++u)
      raw[u] = reinterpret_cast<const uint4*>(body)[v + u * kBlockThreads];
    fold_vectors<T, kCapped, K>(p, cap, raw, head + v * V, weights_vector, s);
  }
  for (; v < vectors; v += kBlockThreads) {
    const uint4 raw[1] = {reinterpret_cast<const uint4*>(body)[v]};
    fold_vectors<T, kCapped, K>(p, cap, raw, head + v * V, weights_vector, s);
  }
  for (int j = tail + static_cast<int>(threadIdx.x); j < C; j += kBlockThreads) {
    fold_one<kCapped, K>(p, cap, detail::to_float(x[j]), j, s);
  }
}

// Whether this thread's share of the row (as fold_row shares it) holds a NaN. Asked only where
// the share's sum is NaN, which every NaN logit makes it (as does a +inf one, without a soft-cap):
// the loops carry no flag, and the row is read again only in this rare case.
template <class T>
__device__ bool share_has_nan(const T* x, int C) {
  constexpr int V = kPerVector<T>;
  const int64_t lead = detail::head_elements(x);
  const int head = lead < C ? static_cast<int>(lead) : C;
  const int tail = head + (C - head) / V * V;
  bool nan = false;
  const auto check = [&](int j) {
    const float v = detail::to_float(x[j]);
    nan = nan || v != v;
  };
  for (int j = threadIdx.x; j < head; j += kBlockThreads) check(j);
  for (int j = head + static_cast<int>(threadIdx.x) * V; j < tail; j += kBlockThreads * V) {
    for (int k = 0; k < V; ++k) check(j + k);
  }
  for (int j = tail + static_cast<int>(threadIdx.x); j < C; j += kBlockThreads) check(j);
  return nan;
}

template <class T, bool kCapped>
__global__ void __launch_bounds__(kBlockThreads, kPartialMinBlocks(kCapped))
    shard_partial_kernel(shard_problem p) {
  __shared__ row_summary scratch[kWarpsPerBlock];
  __shared__ bool nans[kWarpsPerBlock];
  const capper<kCapped> cap(p.softcap);
  const coefficient_kind kind = coefficient_kind_of(p);
  const bool smoothing = kind != coefficient_kind::none;
  const int C = static_cast<int>(p.num_classes);
  for (int64_t r = blockIdx.x; r < p.batch; r += gridDim.x) {
    const T* x = static_cast<const T*>(p.logits) + r * p.row_stride;
    row_summary s = row_summary::none();
    switch (kind) {
      case coefficient_kind::none:
        fold_row<T, kCapped, coefficient_kind::none>(p, cap, x, C, s);
        break;
      case coefficient_kind::ones:
        fold_row<T, kCapped, coefficient_kind::ones>(p, cap, x, C, s);
        break;
      default:
        fold_row<T, kCapped, coefficient_kind::weights>(p, cap, x, C, s);
    }
    // The reference's maximum is NaN once a NaN logit is seen, where row_summary's leaves the
    // NaN to the sum; the MAX all-reduce then carries it to every rank.
    bool nan = s.sum != s.sum && share_has_nan(x, C);
    s = block_summary(s, nan, scratch, nans);
    if (threadIdx.x == 0) {
      const int local = local_class(p, target_of(p, r));
      const float max = nan ? NAN : s.max;
      *field(p, FUSEDLOSS_SHARD_SUMMARY_MAX, r) = max;
      *field(p, FUSEDLOSS_SHARD_SUMMARY_REFERENCE, r) = nan ? NAN : s.ref();
      *field(p, FUSEDLOSS_SHARD_SUMMARY_SUM_EXP, r) = s.sum;
      *field(p, FUSEDLOSS_SHARD_SUMMARY_WEIGHTED_SUM, r) = smoothing ? s.weighted : 0.0f;
      *field(p, FUSEDLOSS_SHARD_SUMMARY_WEIGHT_SUM, r) = smoothing ? s.coefficients : 0.0f;
      *field(p, FUSEDLOSS_SHARD_SUMMARY_TARGET_LOGIT, r) =
          local >= 0 ? cap(detail::to_float(x[local])) : 0.0f;
      *field(p, FUSEDLOSS_SHARD_SUMMARY_TARGET_WEIGHT, r) = local >= 0 ? weight_of(p, local) : 0.0f;
    }
    __syncthreads();  // the next row reuses scratch and nans
  }
}

// ------------------------------------------------------------------------------------------------
// rescale

__global__ void __launch_bounds__(kRowThreads) shard_rescale_kernel(shard_problem p) {
  for (int64_t r = static_cast<int64_t>(blockIdx.x) * kRowThreads + threadIdx.x; r < p.batch;
       r += static_cast<int64_t>(gridDim.x) * kRowThreads) {
    const float max = *field(p, FUSEDLOSS_SHARD_SUMMARY_MAX, r);
    const float shift =
        *field(p, FUSEDLOSS_SHARD_SUMMARY_REFERENCE, r) - (max == -INFINITY ? 0.0f : max);
    if (shift == 0.0f) continue;  // this rank holds the maximum: nothing to move (nor write)
    // A zero sum stays zero however far below the maximum this shard lies (an all -inf shard,
    // whose 2^shift may overflow); a NaN stays NaN.
    float* sum = field(p, FUSEDLOSS_SHARD_SUMMARY_SUM_EXP, r);
    if (*sum != 0.0f) *sum *= fast_exp2(shift * kLog2e);
    const float coefficients = *field(p, FUSEDLOSS_SHARD_SUMMARY_WEIGHT_SUM, r);
    if (coefficients != 0.0f)
      *field(p, FUSEDLOSS_SHARD_SUMMARY_WEIGHTED_SUM, r) += shift * coefficients;
  }
}

// ------------------------------------------------------------------------------------------------
// finish

// What finish needs besides the problem: D and where the block sums go.
struct finish_workspace {
  const double* normaliser;  // D under mean, else null
  double* loss_partials;     // a slot per rows-kernel block under sum and mean, else null
  double* z_partials;
};

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

// The mean's normaliser: each block sums its counted rows' target weights.
__global__ void __launch_bounds__(kRowThreads)
    shard_normaliser_kernel(shard_problem p, double* partials) {
  double d = 0;
  for (int64_t r = static_cast<int64_t>(blockIdx.x) * kRowThreads + threadIdx.x; r < p.batch;
       r += static_cast<int64_t>(gridDim.x) * kRowThreads) {
    if (target_of(p, r) >= 0) d += *field(p, FUSEDLOSS_SHARD_SUMMARY_TARGET_WEIGHT, r);
  }
  detail::write_block_partial<kRowThreads>(d, partials);
}

// The per-row outputs (LSE; loss and z-loss under none) and the block sums of the others.
__global__ void __launch_bounds__(kRowThreads)
    shard_rows_kernel(shard_problem p, finish_workspace w) {
  const float eps = p.label_smoothing;
  const float smooth_scale = eps / static_cast<float>(p.vocab_size);
  const bool none = p.reduction == FUSEDLOSS_REDUCTION_NONE;
  double loss_sum = 0, z_sum = 0;
  for (int64_t r = static_cast<int64_t>(blockIdx.x) * kRowThreads + threadIdx.x; r < p.batch;
       r += static_cast<int64_t>(gridDim.x) * kRowThreads) {
    const int64_t y = target_of(p, r);
    const row_values v = values_of(p, r);
    if (p.lse != nullptr) p.lse[r] = v.lse;
    float loss = 0.0f, z = 0.0f;
    if (y >= 0) {
      const float w_y = *field(p, FUSEDLOSS_SHARD_SUMMARY_TARGET_WEIGHT, r);
      const float x_y = *field(p, FUSEDLOSS_SHARD_SUMMARY_TARGET_LOGIT, r);
      // Relative to ref, so that a large shift of the row costs no precision: lse - x_y.
      const float nll = term(w_y, v.log_sum - (x_y - v.ref));
      // -sum_c w_c lp_c over the whole row, lp_c = (x_c - ref) - log_sum.
      const float smooth = term(*field(p, FUSEDLOSS_SHARD_SUMMARY_WEIGHT_SUM, r), v.log_sum) -
                           *field(p, FUSEDLOSS_SHARD_SUMMARY_WEIGHTED_SUM, r);
      z = term(p.z_loss, v.lse * v.lse);
      loss = term(1.0f - eps, nll) + term(smooth_scale, smooth) + z;
    } else if (y == kInvalid && p.invalid_target_count != nullptr) {
      atomicAdd(reinterpret_cast<unsigned long long*>(p.invalid_target_count), 1ull);
    }
    if (none) {
      if (p.loss != nullptr) p.loss[r] = loss;
      if (p.z_loss_out != nullptr) p.z_loss_out[r] = z;
    }
    loss_sum += loss;
    z_sum += z;
  }
  if (w.loss_partials == nullptr) return;
  detail::write_block_partial<kRowThreads>(loss_sum, w.loss_partials);
  __syncthreads();  // the block reduction's shared storage is reused
  detail::write_block_partial<kRowThreads>(z_sum, w.z_partials);
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

// Writes the gradient of N vectors (raw; vector u at class j0 + u * kBlockThreads * V) without the
// target's -A.
template <class T, bool kCapped, coefficient_kind K, int N>
__device__ __forceinline__ void gradient_vectors(const shard_problem& p, const gradient_row& g,
                                                 const capper<kCapped>& cap, const uint4 (&raw)[N],
                                                 int j0, bool weights_vector, T* out) {
  constexpr int V = kPerVector<T>;
#pragma unroll
  for (int u = 0; u < N; ++u) {
    float xs[V], ws[V], d[V];
    detail::unpack<T>(raw[u], xs);
    coefficients_at<K>(p, j0 + u * kBlockThreads * V, weights_vector, ws);
#pragma unroll
    for (int k = 0; k < V; ++k) d[k] = gradient_of(g, cap, xs[k], ws[k], false);
    // Written once and not read again: streamed past the caches.
    __stcs(reinterpret_cast<uint4*>(out + j0 + u * kBlockThreads * V), detail::pack<T>(d));
  }
}

// This thread's share of the gradient of classes [0, C) of a row (as fold_row shares the row). No
// loop compares a class with the target: the thread whose share holds it computes the target's
// gradient, -A included, before writing anything (in place, no other thread writes that element)
// and writes it over the loops' value at the end.
template <class T, bool kCapped, coefficient_kind K>
__device__ void gradient_row_of_shard(const shard_problem& p, const gradient_row& g,
                                      const capper<kCapped>& cap, const T* x, T* out, int C) {
  constexpr int V = kPerVector<T>;
  const int64_t lead = detail::head_elements(x);
  const int head = lead < C ? static_cast<int>(lead) : C;
  const bool vector = detail::aligned_at(out, head);
  const int vectors = vector ? (C - head) / V : 0;
  const int tail = head + vectors * V;
  const bool weights_vector = detail::aligned_at(p.weight, head);
  const int y = g.local;
  const int owner = y < head ? y : y < tail ? (y - head) / V : y - tail;
  const bool mine = y >= 0 && owner % kBlockThreads == static_cast<int>(threadIdx.x);
  const float d_y =
      mine ? gradient_of(g, cap, detail::to_float(x[y]), coefficient_of<K>(p, y), true) : 0.0f;
  const auto scalar = [&](int j) {
    out[j] = detail::from_float<T>(
        gradient_of(g, cap, detail::to_float(x[j]), coefficient_of<K>(p, j), false));
  };
  for (int j = threadIdx.x; j < head; j += kBlockThreads) scalar(j);
  const uint4* body = reinterpret_cast<const uint4*>(x + head);
  constexpr int U = kUnrollOf<K>;
  int v = threadIdx.x;
  for (; v + (U - 1) * kBlockThreads < vectors; v += U * kBlockThreads) {
    uint4 raw[U];
#pragma unroll
    for (int u = 0; u < U; ++u) raw[u] = body[v + u * kBlockThreads];
    gradient_vectors<T, kCapped, K>(p, g, cap, raw, head + v * V, weights_vector, out);
  }
  for (; v < vectors; v += kBlockThreads) {
    const uint4 raw[1] = {body[v]};
    gradient_vectors<T, kCapped, K>(p, g, cap, raw, head + v * V, weights_vector, out);
  }
  for (int j = tail + static_cast<int>(threadIdx.x); j < C; j += kBlockThreads) scalar(j);
  if (mine) out[y] = detail::from_float<T>(d_y);
}

// A block per row writes the shard's gradient. Each thread writes the elements it reads, so the
// gradient may overwrite the logits (in place) without a barrier.
template <class T, bool kCapped>
__global__ void __launch_bounds__(kBlockThreads, kGradientMinBlocks)
    shard_gradient_kernel(shard_problem p, const double* normaliser, float smooth_scale) {
  const capper<kCapped> cap(p.softcap);
  const coefficient_kind kind = coefficient_kind_of(p);
  const float upstream = upstream_of(p, normaliser);
  const int C = static_cast<int>(p.num_classes);
  for (int64_t r = blockIdx.x; r < p.batch; r += gridDim.x) {
    const gradient_row g = gradient_row_of(p, r, upstream, normaliser, smooth_scale);
    const T* x = static_cast<const T*>(p.logits) + r * p.row_stride;
    T* out = static_cast<T*>(p.grad) + r * p.grad_row_stride;
    if (g.zero) {  // the logits are not read
      for (int j = threadIdx.x; j < C; j += kBlockThreads) out[j] = detail::from_float<T>(0.0f);
      continue;
    }
    switch (kind) {
      case coefficient_kind::none:
        gradient_row_of_shard<T, kCapped, coefficient_kind::none>(p, g, cap, x, out, C);
        break;
      case coefficient_kind::ones:
        gradient_row_of_shard<T, kCapped, coefficient_kind::ones>(p, g, cap, x, out, C);
        break;
      default:
        gradient_row_of_shard<T, kCapped, coefficient_kind::weights>(p, g, cap, x, out, C);
    }
  }
}

// ------------------------------------------------------------------------------------------------
// Host side

using detail::device_facts;
using detail::query_device;

int grid_of(int64_t work, int sms) { return detail::grid_of(work, sms, kBlocksPerSm); }
int row_blocks_of(int64_t batch, int sms) {
  return grid_of((batch + kRowThreads - 1) / kRowThreads, sms);
}

// Workspace layout, in doubles: [prepass partials][D] under mean, then [loss partials][z-loss
// partials] under sum and mean. It depends on the shape and the reduction alone, so one workspace
// serves the three steps and any output pointers.
struct layout {
  size_t prepass, normaliser, loss, z, total;
};

layout layout_of(const shard_problem& p, int sms) {
  const bool mean = p.reduction == FUSEDLOSS_REDUCTION_MEAN;
  const bool reduced = p.reduction != FUSEDLOSS_REDUCTION_NONE;
  const size_t blocks = static_cast<size_t>(row_blocks_of(p.batch, sms));
  layout l{};
  l.prepass = 0;
  l.normaliser = mean ? blocks : 0;
  l.loss = l.normaliser + (mean ? 1 : 0);
  l.z = l.loss + (reduced ? blocks : 0);
  l.total = l.z + (reduced ? blocks : 0);
  return l;
}

// The layout of `p` on the current device, after the checks every step makes.
cudaError_t prepare(const shard_problem& p, void* workspace, size_t workspace_bytes,
                    device_facts* f, layout* l) {
  if (p.num_classes < 1 || p.num_classes > INT_MAX / 2 || p.batch < 0) {
    return cudaErrorInvalidValue;  // classes index as int
  }
  if (const cudaError_t e = query_device(f); e != cudaSuccess) return e;
  *l = layout_of(p, f->sms);
  const size_t needed = l->total * sizeof(double);
  if (workspace_bytes < needed || (needed > 0 && workspace == nullptr)) {
    return cudaErrorInvalidValue;
  }
  return cudaSuccess;
}

// The instantiations of the soft-cap's presence: chosen here, once a launch.
template <class T>
void launch_partial(const shard_problem& p, int blocks, cudaStream_t stream) {
  if (p.softcap > 0) {
    shard_partial_kernel<T, true><<<blocks, kBlockThreads, 0, stream>>>(p);
  } else {
    shard_partial_kernel<T, false><<<blocks, kBlockThreads, 0, stream>>>(p);
  }
}

template <class T>
void launch_gradient(const shard_problem& p, const double* normaliser, int blocks,
                     cudaStream_t stream) {
  // The same IEEE division as the device's (and shard_rows_kernel's) eps / V.
  const float smooth_scale = p.label_smoothing / static_cast<float>(p.vocab_size);
  if (p.softcap > 0) {
    shard_gradient_kernel<T, true>
        <<<blocks, kBlockThreads, 0, stream>>>(p, normaliser, smooth_scale);
  } else {
    shard_gradient_kernel<T, false>
        <<<blocks, kBlockThreads, 0, stream>>>(p, normaliser, smooth_scale);
  }
}

}  // namespace

cudaError_t shard_workspace_bytes(const shard_problem& problem, size_t* bytes) {
  device_facts f{};
  if (const cudaError_t e = query_device(&f); e != cudaSuccess) return e;
  *bytes = layout_of(problem, f.sms).total * sizeof(double);
  return cudaSuccess;
}

cudaError_t run_shard_partial(const shard_problem& p, void* workspace, size_t workspace_bytes,
                              cudaStream_t stream) {
  device_facts f{};
  layout l{};
  if (const cudaError_t e = prepare(p, workspace, workspace_bytes, &f, &l); e != cudaSuccess) {
    return e;
  }
  if (p.batch == 0) return cudaSuccess;
  const int blocks = grid_of(p.batch, f.sms);
  switch (p.logits_dtype) {
    case FUSEDLOSS_FLOAT16:
      launch_partial<__half>(p, blocks, stream);
      break;
    case FUSEDLOSS_BFLOAT16:
      launch_partial<__nv_bfloat16>(p, blocks, stream);
      break;
    default:
      launch_partial<float>(p, blocks, stream);
  }
  return cudaGetLastError();
}

cudaError_t run_shard_rescale(const shard_problem& p, void* workspace, size_t workspace_bytes,
                              cudaStream_t stream) {
  device_facts f{};
  layout l{};
  if (const cudaError_t e = prepare(p, workspace, workspace_bytes, &f, &l); e != cudaSuccess) {
    return e;
  }
  if (p.batch == 0) return cudaSuccess;
  shard_rescale_kernel<<<row_blocks_of(p.batch, f.sms), kRowThreads, 0, stream>>>(p);
  return cudaGetLastError();
}

cudaError_t run_shard_finish(const shard_problem& p, void* workspace, size_t workspace_bytes,
                             cudaStream_t stream) {
  device_facts f{};
  layout l{};
  if (const cudaError_t e = prepare(p, workspace, workspace_bytes, &f, &l); e != cudaSuccess) {
    return e;
  }
  auto* base = static_cast<double*>(workspace);
  const bool mean = p.reduction == FUSEDLOSS_REDUCTION_MEAN;
  const bool reduced =
      p.reduction != FUSEDLOSS_REDUCTION_NONE && (p.loss != nullptr || p.z_loss_out != nullptr);
  const int row_blocks = row_blocks_of(p.batch, f.sms);
  const double* normaliser = nullptr;
  if (mean && p.batch > 0) {
    shard_normaliser_kernel<<<row_blocks, kRowThreads, 0, stream>>>(p, base + l.prepass);
    detail::total_kernel<<<1, detail::kFinalThreads, 0, stream>>>(base + l.prepass, row_blocks,
                                                                  base + l.normaliser);
    normaliser = base + l.normaliser;
  }
  if (p.batch > 0) {
    const finish_workspace w{normaliser, reduced ? base + l.loss : nullptr,
                             reduced ? base + l.z : nullptr};
    shard_rows_kernel<<<row_blocks, kRowThreads, 0, stream>>>(p, w);
  }
  if (reduced) {
    // Zero rows still have a sum (0) and a mean (the empty-mean value): written, from no partial.
    const int64_t partials = p.batch > 0 ? row_blocks : 0;
    detail::final_sum f_sum{base + l.loss, partials, mean, 0.0, normaliser, p.empty_value};
    if (p.loss != nullptr) {
      detail::final_sum_kernel<<<1, detail::kFinalThreads, 0, stream>>>(f_sum, p.loss);
    }
    if (p.z_loss_out != nullptr) {
      f_sum.partials = base + l.z;
      detail::final_sum_kernel<<<1, detail::kFinalThreads, 0, stream>>>(f_sum, p.z_loss_out);
    }
  }
  if (p.grad != nullptr && p.batch > 0) {
    const int blocks = grid_of(p.batch, f.sms);
    switch (p.logits_dtype) {
      case FUSEDLOSS_FLOAT16:
        launch_gradient<__half>(p, normaliser, blocks, stream);
        break;
      case FUSEDLOSS_BFLOAT16:
        launch_gradient<__nv_bfloat16>(p, normaliser, blocks, stream);
        break;
      default:
        launch_gradient<float>(p, normaliser, blocks, stream);
    }
  }
  return cudaGetLastError();
}

}  // namespace fusedloss::kernels
