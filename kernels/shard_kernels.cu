// The kernels of the vocabulary-parallel shard calls and their launches: partial's fold of the
// shard, rescale's move to the global maximum, and finish's normaliser prepass, rows (LSE and loss
// terms), final sums and gradient; each kernel template instantiated here alone. The algorithm:
// vocab_parallel.cu.
#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include <cmath>

#include "detail/online_softmax.cuh"
#include "detail/reduce.cuh"
#include "detail/shard_kernels.hpp"
#include "detail/shard_row.cuh"
#include "detail/storage.cuh"
#include "detail/vector_io.cuh"
#include "fusedloss/vocab_parallel.h"
#include "vocab_parallel.hpp"

namespace fusedloss::kernels {
namespace {

using detail::finish_workspace;
using detail::kRowThreads;

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
      *field(p, FUSEDLOSS_SHARD_SUMMARY_SUM_EXP, r) = s.natural_sum();
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
// Launches

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

namespace detail {

void launch_shard_partial(const shard_problem& p, int blocks, cudaStream_t stream) {
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
}

void launch_shard_rescale(const shard_problem& p, int blocks, cudaStream_t stream) {
  shard_rescale_kernel<<<blocks, kRowThreads, 0, stream>>>(p);
}

void launch_shard_normaliser(const shard_problem& p, int blocks, double* partials,
                             double* normaliser, cudaStream_t stream) {
  shard_normaliser_kernel<<<blocks, kRowThreads, 0, stream>>>(p, partials);
  total_kernel<<<1, kFinalThreads, 0, stream>>>(partials, blocks, normaliser);
}

void launch_shard_rows(const shard_problem& p, int blocks, const finish_workspace& w,
                       cudaStream_t stream) {
  shard_rows_kernel<<<blocks, kRowThreads, 0, stream>>>(p, w);
}

void launch_shard_final_sums(const shard_problem& p, const double* loss_partials,
                             const double* z_partials, int64_t partials, const double* normaliser,
                             cudaStream_t stream) {
  const bool mean = p.reduction == FUSEDLOSS_REDUCTION_MEAN;
  final_sum f_sum{loss_partials, partials, mean, 0.0, normaliser, p.empty_value};
  if (p.loss != nullptr) {
    final_sum_kernel<<<1, kFinalThreads, 0, stream>>>(f_sum, p.loss);
  }
  if (p.z_loss_out != nullptr) {
    f_sum.partials = z_partials;
    final_sum_kernel<<<1, kFinalThreads, 0, stream>>>(f_sum, p.z_loss_out);
  }
}

void launch_shard_gradient(const shard_problem& p, const double* normaliser, int blocks,
                           cudaStream_t stream) {
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

}  // namespace detail
}  // namespace fusedloss::kernels
