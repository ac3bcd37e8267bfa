// Row losses on the GPU: cross-entropy with class-index or probability targets (label smoothing,
// class weights, ignore_index, z-loss, soft-cap) and softmax focal loss.
//
// Algorithm. Each row goes through the same three steps: fold its (soft-capped) logits into a
// log-sum-exp summary (detail/online_softmax.cuh: a chunk's maximum, then one 2^x per element
// relative to it), finish the summary into the row's loss, LSE and gradient coefficients, then
// write every element's gradient
//     dL/dx_j = (P p_j - A [j = y] - B c_j) cap'(x_j),   p_j = exp(cap(x_j) - LSE),
// with c_j the class weight (label smoothing) or w_j q'_j (probability targets). The hot loops
// compute P p_j - B c_j for every element, as sign(P) 2^((x_j - LSE) log2 e + log2 |P|) - B c_j;
// the target's -A is written afterwards by one thread from the target logit read at the row's
// start, so no loop compares an index. Which options a loop pays for is fixed at compile time
// (`feature`): a row without options runs none of their instructions.
//
// Tiers differ in where the row waits between the fold and the gradient:
//   - warp (S = 1, C up to 512 float32 / 1024 16-bit values in whole 16-byte vectors, else up to
//     512): a power-of-two part of a warp per row, the row in registers (4 vectors or 16 elements
//     a lane, all loads in flight at once). One read of the logits, one write of the gradient.
//     Also the forward alone and the backward from a saved LSE at these sizes.
//   - block (S = 1, the row fits in one block's shared memory): a block per row, the row staged in
//     shared memory as it is read. One read, one write.
//   - cluster (sm_90, S = 1, the row fits in up to 8 blocks' shared memory): a thread-block cluster
//     per row, each block holding a slice; the blocks exchange their summaries through distributed
//     shared memory and merge them in rank order. The smallest cluster at which two blocks fit an
//     SM, so that one row's reads overlap another's writes; as many clusters as the device keeps
//     resident (cudaOccupancyMaxActiveClusters). One read, one write.
//   - two_pass (anything else: probability targets, rows too large, (N, C, S) layouts with few
//     positions, the forward alone and the backward from a saved LSE): a block per row folds the
//     row from memory, then reads it again for the gradient (the forward alone and a backward
//     given the LSE read it once).
//   - spatial ((N, C, S) with many positions): a thread per row, consecutive threads on
//     consecutive positions so that each class's loads coalesce; two passes like two_pass.
// The streaming loops keep 4 16-byte logit loads in flight per thread (2 for soft-capped rows and
// probability targets, whose tanh and target loads fill the registers); rows that are not 16-byte
// aligned take an element-by-element loop.
//
// Reductions. `mean` of index targets divides by D = sum of weight[y] over counted rows, which
// depends on the targets alone: a prepass reduces it on the device (no host read, so the call
// can be captured in a graph) before any gradient is written; label smoothing with class weights
// takes their total W from the same prepass, so a backward given the LSE uses the bits the fused
// call uses. Row losses and z-loss terms are summed per block in double and then in a fixed-order
// final pass (detail/reduce.cuh): no floating-point atomics. Out-of-range targets are counted with
// an integer atomic, which is exact.
//
// Stability. The summary keeps sum exp(x - max) and the weighted logit sum relative to the same
// max, so shifting a row changes nothing; a -inf logit adds nothing to the sum and makes a term
// with a non-zero coefficient +inf without ever forming 0 * inf; the softmax focal gradient uses
// m = -expm1(lp_y) and r = lp_y / m (docs/SEMANTICS.md), finite for every gamma >= 0; all
// arithmetic is float32, the true-class term P p_y - A included.
#include <cooperative_groups.h>
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
#include "row_losses.hpp"

namespace fusedloss::kernels {
namespace {

using detail::fast_exp2;
using detail::kLog2e;
using detail::kPerVector;
using detail::row_summary;
using detail::term;
using detail::warp_merge;

constexpr int kWarpThreads = 256;        // warp tier: 8 warps a block
constexpr int kWarpVectorsPerLane = 4;   // warp tier: a lane holds 4 vectors of its row
constexpr int kWarpScalarsPerLane = 16;  // warp tier, unaligned rows: 16 elements a lane
constexpr int kBlockThreads = 256;       // block, cluster and two_pass tiers
constexpr int kWarpsPerBlock = kBlockThreads / 32;
constexpr int kUnroll = 4;  // 16-byte logit loads in flight per thread in the streaming loops
constexpr int kSpatialThreads = 256;
constexpr int kPrepassThreads = 256;
constexpr int kMaxCluster = 8;                          // the portable cluster size
constexpr int kMostBlocksPerSm = 2048 / kBlockThreads;  // no tier's grid exceeds sms times this
constexpr int64_t kIgnored = -1;
constexpr int64_t kInvalid = -2;

// What the hot loops compute per element, fixed at compile time (docs/DESIGN.md, decision 7).
enum class feature {
  plain,               // index targets (cross-entropy or softmax focal), no smoothing, no soft-cap
  smoothing,           // cross-entropy with label smoothing, no class weights, no soft-cap
  weighted_smoothing,  // cross-entropy with label smoothing and class weights, no soft-cap
  general,             // index targets with soft-cap, smoothing and weights as they come
  probability,         // probability targets, soft-cap and weights as they come
};

template <feature F>
constexpr bool kHasCoefficients = F != feature::plain;
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
constexpr int kMinBlocksOf = F == feature::plain                ? 4
                             : F == feature::weighted_smoothing ? 2
                                                                : 3;

// ------------------------------------------------------------------------------------------------
// One row: its target, its coefficients, its finish and its gradient.

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

  __device__ bool index_targets() const { return p.kind != row_loss::probability_cross_entropy; }
  __device__ int64_t rows() const { return p.batch * p.spatial; }

  // Element (c) of row r sits at base(r, stride) + c * S.
  __device__ int64_t base(int64_t r, int64_t stride) const {
    return (r / p.spatial) * stride + r % p.spatial;
  }

  __device__ float cap(float x) const { return capped ? p.softcap * tanhf(x * inverse_cap) : x; }

  // The row's class, kIgnored or kInvalid (probability targets: 0, never ignored).
  __device__ int64_t target(int64_t r) const {
    if (!index_targets()) return 0;
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
    if constexpr (F == feature::plain) {
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
    } else if constexpr (F != feature::plain) {
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

// log2 x on the special-function unit (absolute error ~2^-22: a relative error of ~2e-7 in the
// 2^(... + log2 |P|) it feeds).
__device__ __forceinline__ float fast_log2(float x) {
  float y;
  asm("lg2.approx.ftz.f32 %0, %1;" : "=f"(y) : "f"(x));
  return y;
}

// Finishes a row from its summary (or its saved LSE, in which case `s` only carries the
// coefficients). `x_y` is the capped target logit (index targets). Only the losses feature F
// serves are compiled in.
template <feature F>
__device__ row_result finish(const row_context& ctx, int64_t r, int64_t y, const row_summary& s,
                             float x_y) {
  const row_problem& p = ctx.p;
  row_result out{};
  out.lse = p.read_lse ? p.lse[r] : s.lse();
  out.y = -1;
  out.zero_grad = y < 0 || ctx.empty_mean;
  out.log2_p = -INFINITY;
  out.sign = 1.0f;
  if (y < 0) return out;  // ignored (or invalid, treated as ignored): loss 0, gradient 0

  const float lse = out.lse;
  const float up = p.grad == nullptr ? 0.0f : ctx.upstream(r);
  const float eps = p.label_smoothing;
  out.z = term(p.z_loss, lse * lse);
  const float z_grad = up * 2.0f * p.z_loss * lse;
  // -sum_c c_c lp_c over the row (the smoothing term, or the probability-target loss); +inf when
  // a -inf logit has a positive coefficient (its term in `weighted` is -inf).
  const float smoothing_sum = term(s.coefficients, logf(s.sum)) - s.weighted;

  const row_loss kind = F == feature::probability ? row_loss::probability_cross_entropy
                        : F == feature::smoothing || F == feature::weighted_smoothing
                            ? row_loss::cross_entropy
                            : p.kind;
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
    default: {  // softmax focal
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
    }
  }
  out.log2_p = fast_log2(fabsf(out.P));
  out.sign = out.P < 0 ? -1.0f : 1.0f;
  return out;
}

// The gradient of one element from its raw logit and coefficient, without the target's -A.
template <feature F>
__device__ __forceinline__ float gradient_of(const row_context& ctx, const row_result& res, float x,
                                             float c) {
  float slope = 1.0f;
  if constexpr (kMayCap<F>) {
    if (ctx.capped) {
      const float t = tanhf(x * ctx.inverse_cap);
      x = ctx.p.softcap * t;
      slope = 1.0f - t * t;
    }
  }
  float g = fast_exp2(fmaf(x - res.lse, kLog2e, res.log2_p)) * res.sign;
  if constexpr (kHasCoefficients<F>) g = fmaf(-res.B, c, g);
  return g * slope;
}

// The target's gradient (P p_y - A - B c_y) cap'(x_y), from its raw logit, in float32.
template <feature F>
__device__ float target_gradient(const row_context& ctx, const row_result& res, int64_t r,
                                 float raw_x_y) {
  float x = raw_x_y, slope = 1.0f;
  if constexpr (kMayCap<F>) {
    if (ctx.capped) {
      const float t = tanhf(x * ctx.inverse_cap);
      x = ctx.p.softcap * t;
      slope = 1.0f - t * t;
    }
  }
  const float c = kHasCoefficients<F> ? ctx.coefficient<F>(r, res.y) : 0.0f;
  return (res.P * expf(x - res.lse) - res.A - res.B * c) * slope;
}

// The per-row outputs and the block's running sums, written by one thread of the row.
__device__ void write_row_outputs(const row_context& ctx, int64_t r, int64_t y,
                                  const row_result& res, double& loss_sum, double& z_sum) {
  const row_problem& p = ctx.p;
  if (p.lse != nullptr && !p.read_lse) p.lse[r] = res.lse;
  if (y == kInvalid && p.invalid_target_count != nullptr) {
    atomicAdd(reinterpret_cast<unsigned long long*>(p.invalid_target_count), 1ull);
  }
  if (p.reduction == FUSEDLOSS_REDUCTION_NONE) {
    if (p.loss != nullptr) p.loss[r] = res.loss;
    if (p.z_loss_out != nullptr) p.z_loss_out[r] = res.z;
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

// What a kernel needs besides the problem: the prepass results and where block sums go.
struct row_workspace {
  const double* normaliser;     // D, or null
  const double* weights_total;  // W, or null (C)
  double* loss_partials;        // gridDim.x each, or null
  double* z_partials;
};

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
template <class T>
__device__ __forceinline__ float raw_target_logit(const row_context& ctx, const T* x_row,
                                                  int64_t y) {
  return y >= 0 && ctx.index_targets() ? detail::to_float(x_row[y * ctx.p.spatial]) : 0.0f;
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

// ------------------------------------------------------------------------------------------------
// Streaming loops of the block, cluster and two_pass tiers: the threads of a block over the
// classes [begin, end) of one row (element j at x[j * step]).

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

// ------------------------------------------------------------------------------------------------
// Tiers

// warp: `lanes` lanes (a power of two) per row, 32 / lanes rows per warp; the row waits in
// registers, as kWarpVectorsPerLane 16-byte vectors a lane (kVector: rows 16-byte aligned and made
// of whole vectors) or kWarpScalarsPerLane elements a lane. Every lane of a warp runs the same
// iterations so the shuffles see the whole warp.
template <class T, feature F, bool kVector>
__global__ void __launch_bounds__(kWarpThreads, kMinBlocksOf<F>)
    row_warp_kernel(row_problem p, row_workspace w, int lanes) {
  constexpr int V = kPerVector<T>;
  constexpr int kSlots = kVector ? kWarpVectorsPerLane : kWarpScalarsPerLane;
  constexpr int kSlotElements = kVector ? V : 1;
  using slot = std::conditional_t<kVector, uint4, T>;
  const row_context ctx(p, w.normaliser, w.weights_total);
  const int lane = threadIdx.x % 32;
  const int group = lane / lanes;
  const int l = lane % lanes;
  const int rows_per_warp = 32 / lanes;
  const int64_t warp = (static_cast<int64_t>(blockIdx.x) * kWarpThreads + threadIdx.x) / 32;
  const int64_t warps = static_cast<int64_t>(gridDim.x) * (kWarpThreads / 32);
  const int C = static_cast<int>(p.num_classes);
  const int whole = C / kSlotElements;  // slots of the row
  double loss_sum = 0, z_sum = 0;

  for (int64_t first = warp * rows_per_warp; first < ctx.rows(); first += warps * rows_per_warp) {
    const int64_t r = first + group;
    const bool active = r < ctx.rows();
    const T* x_row = static_cast<const T*>(p.logits) + (active ? r : 0) * p.row_stride;
    const int64_t y = active ? ctx.target(r) : kIgnored;
    const float raw_x_y = raw_target_logit(ctx, x_row, y);

    slot raw[kSlots];
#pragma unroll
    for (int k = 0; k < kSlots; ++k) {
      const int i = k * lanes + l;
      if (active && i < whole) {
        if constexpr (kVector) {
          raw[k] = load_vector(x_row + i * V);
        } else {
          raw[k] = x_row[i];
        }
      }
    }
    const auto values = [&](int k, float(&x)[kSlotElements]) {
      if constexpr (kVector) {
        detail::unpack<T>(raw[k], x);
      } else {
        x[0] = detail::to_float(raw[k]);
      }
      if constexpr (kMayCap<F>) {
#pragma unroll
        for (int e = 0; e < kSlotElements; ++e) x[e] = ctx.cap(x[e]);
      }
    };

    // Pass 1: the row's maximum; pass 2: its sum and weighted sum relative to it.
    row_summary s = row_summary::none();
    if (!p.read_lse) {
      float m = -INFINITY;
#pragma unroll
      for (int k = 0; k < kSlots; ++k) {
        if (!active || k * lanes + l >= whole) continue;
        if constexpr (kVector && !kMayCap<F>) {
          const uint4 one[1] = {raw[k]};
          m = fmaxf(m, detail::vectors_max<T>(one));
        } else {
          float x[kSlotElements];
          values(k, x);
#pragma unroll
          for (int e = 0; e < kSlotElements; ++e) m = fmaxf(m, x[e]);
        }
      }
      // Unrolled over every width a group can have, each step taken when it is inside the
      // group: a loop over `lanes` would cost its branch and counter per step.
#pragma unroll
      for (int offset = 16; offset > 0; offset /= 2) {
        if (offset < lanes) m = fmaxf(m, __shfl_xor_sync(0xffffffffu, m, offset));
      }
      s.max = m;
#pragma unroll
      for (int k = 0; k < kSlots; ++k) {
        const int i = k * lanes + l;
        if (!active || i >= whole) continue;
        float x[kSlotElements], c[kSlotElements];
        values(k, x);
        if constexpr (kHasCoefficients<F>) {
          if constexpr (kVector) {
            ctx.coefficients<F>(r, i * V, c);
          } else {
            c[0] = ctx.coefficient<F>(r, i);
          }
        }
        detail::accumulate<kSlotElements, kHasCoefficients<F>>(x, c, s);
      }
      // Every lane of a group folded relative to the same maximum: the merge only adds.
#pragma unroll
      for (int offset = 16; offset > 0; offset /= 2) {
        if (offset >= lanes) continue;
        s.sum += __shfl_xor_sync(0xffffffffu, s.sum, offset);
        if constexpr (kHasCoefficients<F>) {
          s.weighted += __shfl_xor_sync(0xffffffffu, s.weighted, offset);
          s.coefficients += __shfl_xor_sync(0xffffffffu, s.coefficients, offset);
        }
      }
    }
    __syncwarp();  // in place: every lane has read the target logit before any gradient store
    if (!active) continue;
    const row_result res = finish<F>(ctx, r, y, s, cap_of<F>(ctx, raw_x_y));
    if (l == 0) write_row_outputs(ctx, r, y, res, loss_sum, z_sum);
    if (p.grad == nullptr) continue;
    T* g_row = static_cast<T*>(p.grad) + r * p.grad_row_stride;
    if (res.zero_grad) {
      for (int j = l; j < C; j += lanes) g_row[j] = detail::from_float<T>(0.0f);
      continue;
    }
#pragma unroll
    for (int k = 0; k < kSlots; ++k) {
      const int i = k * lanes + l;
      if (i >= whole) continue;
      float x[kSlotElements], c[kSlotElements], g[kSlotElements];
      if constexpr (kVector) {
        detail::unpack<T>(raw[k], x);
        if constexpr (kHasCoefficients<F>) ctx.coefficients<F>(r, i * V, c);
      } else {
        x[0] = detail::to_float(raw[k]);
        c[0] = ctx.coefficient<F>(r, i);
      }
#pragma unroll
      for (int e = 0; e < kSlotElements; ++e) g[e] = gradient_of<F>(ctx, res, x[e], c[e]);
      if constexpr (kVector) {
        store_gradient(g_row + i * V, detail::pack<T>(g));
      } else {
        g_row[i] = detail::from_float<T>(g[0]);
      }
    }
    __syncwarp(0xffffffffu >> (32 - lanes) << (group * lanes));
    if (l == 0) write_target_gradient<T, F>(ctx, res, r, raw_x_y, g_row);
  }
  write_partials<kWarpThreads>(w, loss_sum, z_sum);
}

// block and two_pass: a block per row (element j of row r at base(r) + j * S). With `staged`
// (block) the row waits in dynamic shared memory between the fold and the gradient; without
// (two_pass) the gradient reads it from memory again, and a backward given the saved LSE folds
// only the coefficients it needs (no logits).
template <class T, feature F>
__global__ void __launch_bounds__(kBlockThreads, kMinBlocksOf<F>)
    row_block_kernel(row_problem p, row_workspace w, bool staged) {
  extern __shared__ uint4 shared_raw[];
  __shared__ row_summary scratch[kWarpsPerBlock];
  T* stage = staged ? reinterpret_cast<T*>(shared_raw) : nullptr;
  const row_context ctx(p, w.normaliser, w.weights_total);
  const int C = static_cast<int>(p.num_classes);
  const int step = static_cast<int>(p.spatial);
  const bool zero_guard = any_zero_weight<F>(ctx, 0, C);
  double loss_sum = 0, z_sum = 0;
  int64_t y = blockIdx.x < ctx.rows() ? ctx.target(blockIdx.x) : 0;
  for (int64_t r = blockIdx.x; r < ctx.rows(); r += gridDim.x) {
    const int64_t next = r + gridDim.x;
    const int64_t y_next = next < ctx.rows() ? ctx.target(next) : 0;  // in flight over this row
    const T* x_row = static_cast<const T*>(p.logits) + ctx.base(r, p.row_stride);
    const float raw_x_y = raw_target_logit(ctx, x_row, y);
    row_summary s = row_summary::none();
    if (!p.read_lse) {
      fold_row<T, F>(ctx, r, x_row, 0, C, step, stage, zero_guard, s);
    } else if constexpr (F == feature::probability) {
      sum_coefficients<F>(ctx, r, 0, C, s);
    }
    s = block_summary(s, scratch);  // its barrier also publishes the staged row
    const row_result res = finish<F>(ctx, r, y, s, cap_of<F>(ctx, raw_x_y));
    if (threadIdx.x == 0) write_row_outputs(ctx, r, y, res, loss_sum, z_sum);
    T* g_row = static_cast<T*>(p.grad) + ctx.base(r, p.grad_row_stride);
    if (p.grad != nullptr) {
      gradient_range<T, F>(ctx, res, r, staged ? stage : x_row, staged, 0, C, step, g_row);
    }
    __syncthreads();  // the row's gradient is written; the next row overwrites stage and scratch
    if (p.grad != nullptr && threadIdx.x == 0) {
      write_target_gradient<T, F>(ctx, res, r, raw_x_y, g_row);
    }
    y = y_next;
  }
  write_partials<kBlockThreads>(w, loss_sum, z_sum);
}

#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
// Cluster barriers: the first publishes each block's summary (release, acquire), the last keeps
// a block's shared memory alive until no other block reads it.
__device__ __forceinline__ void cluster_arrive_release() {
  asm volatile("barrier.cluster.arrive.release.aligned;\n" ::: "memory");
}
__device__ __forceinline__ void cluster_wait_acquire() {
  asm volatile("barrier.cluster.wait.acquire.aligned;\n" ::: "memory");
}
#endif

// cluster (sm_90): `cluster` blocks per row, each staging a slice of `slice` classes (a multiple
// of the vector width); the blocks' summaries are merged in rank order through distributed shared
// memory, so every block finishes the row with the same bits. The summaries alternate between two
// slots, so one cluster barrier a row suffices: a block writes a slot again only after every
// block has passed the next row's barrier, that is, has finished reading it.
template <class T, feature F>
__global__ void __launch_bounds__(kBlockThreads, kMinBlocksOf<F>)
    row_cluster_kernel(row_problem p, row_workspace w, int slice) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  namespace cg = cooperative_groups;
  cg::cluster_group cluster = cg::this_cluster();
  extern __shared__ uint4 shared_raw[];
  T* stage = reinterpret_cast<T*>(shared_raw);
  __shared__ row_summary scratch[kWarpsPerBlock];
  __shared__ row_summary mine[2];
  const row_context ctx(p, w.normaliser, w.weights_total);
  const unsigned rank = cluster.block_rank();
  const int blocks = static_cast<int>(cluster.num_blocks());
  const int64_t clusters = gridDim.x / blocks;
  const int C = static_cast<int>(p.num_classes);
  const int begin = min(static_cast<int>(rank) * slice, C);
  const int end = min(begin + slice, C);
  const bool zero_guard = any_zero_weight<F>(ctx, begin, end);
  double loss_sum = 0, z_sum = 0;
  int parity = 0;
  const int64_t first = blockIdx.x / blocks;
  int64_t y = first < ctx.rows() ? ctx.target(first) : 0;
  for (int64_t r = first; r < ctx.rows(); r += clusters, parity ^= 1) {
    const int64_t next = r + clusters;
    const int64_t y_next = next < ctx.rows() ? ctx.target(next) : 0;
    const T* x_row = static_cast<const T*>(p.logits) + r * p.row_stride;
    const float raw_x_y = raw_target_logit(ctx, x_row, y);
    row_summary s = row_summary::none();
    fold_row<T, F>(ctx, r, x_row, begin, end, 1, stage, zero_guard, s);
    s = block_summary(s, scratch);
    if (threadIdx.x == 0) mine[parity] = s;
    cluster_arrive_release();
    cluster_wait_acquire();
    const int lane = threadIdx.x % 32;
    row_summary total = *cluster.map_shared_rank(&mine[parity], lane % blocks);
    total = warp_merge(total, blocks);
    const row_result res = finish<F>(ctx, r, y, total, cap_of<F>(ctx, raw_x_y));
    if (rank == 0 && threadIdx.x == 0) write_row_outputs(ctx, r, y, res, loss_sum, z_sum);
    T* g_row = static_cast<T*>(p.grad) + r * p.grad_row_stride;
    if (p.grad != nullptr) gradient_range<T, F>(ctx, res, r, stage, true, begin, end, 1, g_row);
    __syncthreads();  // the slice's gradient is written; the next row overwrites stage and scratch
    if (p.grad != nullptr && threadIdx.x == 0 && res.y >= begin && res.y < end) {
      write_target_gradient<T, F>(ctx, res, r, raw_x_y, g_row);
    }
    y = y_next;
  }
  write_partials<kBlockThreads>(w, loss_sum, z_sum);
  cluster.sync();  // no block leaves while another may still read its summaries
#else
  __trap();  // launched only where the loaded kernel is sm_90 code (make_plan checks)
#endif
}

// spatial: a thread per row (n, s); class c of the row is S elements after class c - 1, so the
// threads of a warp, on consecutive s, read consecutive addresses. F: general (index targets) or
// probability.
template <class T, feature F>
__global__ void __launch_bounds__(kSpatialThreads)
    row_spatial_kernel(row_problem p, row_workspace w) {
  const row_context ctx(p, w.normaliser, w.weights_total);
  const int64_t S = p.spatial;
  double loss_sum = 0, z_sum = 0;
  for (int64_t r = static_cast<int64_t>(blockIdx.x) * kSpatialThreads + threadIdx.x; r < ctx.rows();
       r += static_cast<int64_t>(gridDim.x) * kSpatialThreads) {
    const T* x_row = static_cast<const T*>(p.logits) + ctx.base(r, p.row_stride);
    const int64_t y = ctx.target(r);
    const float raw_x_y = raw_target_logit(ctx, x_row, y);
    // Probability targets of the row: q_c at targets_row + c * S (no division per class).
    const int64_t targets_row = (r / S) * p.num_classes * S + r % S;
    const auto coefficient = [&](int64_t c) {
      if constexpr (F == feature::probability) {
        return ctx.weight(c) * ctx.smooth(ctx.probability_at(targets_row + c * S));
      } else {
        return ctx.coefficient<F>(r, c);
      }
    };
    row_summary s = row_summary::none();
    if (!p.read_lse) {
      for (int64_t c = 0; c < p.num_classes; ++c) {
        const float x[1] = {ctx.cap(detail::to_float(x_row[c * S]))};
        const float k[1] = {coefficient(c)};
        detail::fold_chunk<1, kHasCoefficients<F>>(x, k, x[0], s);
      }
    } else if constexpr (F == feature::probability) {  // P needs the coefficients' sum
      for (int64_t c = 0; c < p.num_classes; ++c) s.coefficients += coefficient(c);
    }
    const row_result res = finish<F>(ctx, r, y, s, cap_of<F>(ctx, raw_x_y));
    write_row_outputs(ctx, r, y, res, loss_sum, z_sum);
    if (p.grad == nullptr) continue;
    T* g_row = static_cast<T*>(p.grad) + ctx.base(r, p.grad_row_stride);
    for (int64_t c = 0; c < p.num_classes; ++c) {
      const float g =
          res.zero_grad ? 0.0f
                        : gradient_of<F>(ctx, res, detail::to_float(x_row[c * S]), coefficient(c));
      g_row[c * S] = detail::from_float<T>(g);
    }
    write_target_gradient<T, F>(ctx, res, r, raw_x_y, g_row);  // this thread wrote the row
  }
  write_partials<kSpatialThreads>(w, loss_sum, z_sum);
}

// The mean's normaliser D for index targets: each block sums its counted rows' share.
__global__ void __launch_bounds__(kPrepassThreads)
    normaliser_kernel(row_problem p, double* partials) {
  const row_context ctx(p, nullptr, nullptr);
  double d = 0;
  for (int64_t r = static_cast<int64_t>(blockIdx.x) * kPrepassThreads + threadIdx.x; r < ctx.rows();
       r += static_cast<int64_t>(gridDim.x) * kPrepassThreads) {
    const int64_t y = ctx.target(r);
    // Cross-entropy divides by the targets' total weight, softmax focal by their count.
    if (y >= 0) d += p.kind == row_loss::cross_entropy ? ctx.weight(y) : 1.0f;
  }
  detail::write_block_partial<kPrepassThreads>(d, partials);
}

// W, the class weights' total (label smoothing with weights), in a fixed order.
__global__ void __launch_bounds__(detail::kFinalThreads)
    weights_total_kernel(const float* weight, int64_t count, double* out) {
  double total = 0;
  for (int64_t c = threadIdx.x; c < count; c += detail::kFinalThreads) total += weight[c];
  using reduce = cub::BlockReduce<double, detail::kFinalThreads>;
  __shared__ typename reduce::TempStorage storage;
  total = reduce(storage).Sum(total);
  if (threadIdx.x == 0) *out = total;
}

// ------------------------------------------------------------------------------------------------
// Host side: the plan (tier, feature, grid, shared memory) that the workspace query and the
// launch share.

using detail::device_facts;
using detail::query_device;

size_t element_size(fusedloss_dtype dtype) { return dtype == FUSEDLOSS_FLOAT32 ? 4 : 2; }

// Blocks of the mean's normaliser prepass (index targets under mean), else 0.
int prepass_blocks_of(const row_problem& p, int sms) {
  if (p.kind == row_loss::probability_cross_entropy || p.reduction != FUSEDLOSS_REDUCTION_MEAN) {
    return 0;
  }
  const int64_t rows = p.batch * p.spatial;
  return detail::grid_of((rows + kPrepassThreads - 1) / kPrepassThreads, sms, 2);
}

feature feature_of(const row_problem& p) {
  if (p.kind == row_loss::probability_cross_entropy) return feature::probability;
  if (p.softcap > 0) return feature::general;
  if (p.kind == row_loss::cross_entropy && p.label_smoothing > 0) {
    return p.weight != nullptr ? feature::weighted_smoothing : feature::smoothing;
  }
  return feature::plain;
}

// Whether every row of the logits and of the gradient starts on a 16-byte boundary.
bool rows_aligned(const row_problem& p) {
  const auto bytes = static_cast<int64_t>(element_size(p.logits_dtype));
  const auto on_boundary = [&](const void* base, int64_t stride) {
    return reinterpret_cast<uintptr_t>(base) % detail::kVectorBytes == 0 &&
           stride * bytes % detail::kVectorBytes == 0;
  };
  return on_boundary(p.logits, p.row_stride) &&
         (p.grad == nullptr || on_boundary(p.grad, p.grad_row_stride));
}

struct plan {
  device_facts facts;  // of the current device, queried once a plan
  row_tier tier;
  feature features;
  bool vector = true;  // warp tier: rows 16-byte aligned
  int blocks;
  int lanes = 32;     // warp tier
  int cluster = 1;    // cluster tier
  int slice = 0;      // cluster tier: classes per block
  size_t shared = 0;  // dynamic shared memory per block
  int prepass_blocks = 0;
  bool weights_total = false;  // the prepass sums the class weights
};

// Static shared memory of the block kernels (cub storage, summaries) stays under this.
constexpr size_t kStaticSharedReserve = 8 * 1024;

// The cluster kernel of (T, F) as the driver loaded it: sm_90 machine code, or none (a build
// without sm_90 code JIT-compiles the PTX, whose cluster kernel is the __trap() stub).
template <class T, feature F>
bool cluster_code_loaded() {
  cudaFuncAttributes a{};
  if (cudaFuncGetAttributes(&a, row_cluster_kernel<T, F>) != cudaSuccess) {
    cudaGetLastError();
    return false;
  }
  return a.binaryVersion >= 90;
}

// Dispatches a function template over (T, F) at run time.
template <template <class, feature> class Fn, class... Args>
auto for_types(fusedloss_dtype dtype, feature f, Args&&... args) {
  const auto by_feature = [&](auto tag) {
    using T = decltype(tag);
    switch (f) {
      case feature::plain:
        return Fn<T, feature::plain>::run(args...);
      case feature::smoothing:
        return Fn<T, feature::smoothing>::run(args...);
      case feature::weighted_smoothing:
        return Fn<T, feature::weighted_smoothing>::run(args...);
      case feature::general:
        return Fn<T, feature::general>::run(args...);
      default:
        return Fn<T, feature::probability>::run(args...);
    }
  };
  switch (dtype) {
    case FUSEDLOSS_FLOAT16:
      return by_feature(__half{});
    case FUSEDLOSS_BFLOAT16:
      return by_feature(__nv_bfloat16{});
    default:
      return by_feature(float{});
  }
}

// How many clusters of `cluster` blocks of `shared` dynamic bytes the device keeps resident at
// once (0: none, or no sm_90 code). Raises the kernel's shared-memory limit to `budget` first,
// the same value on every call (see block_shared_limit), which the launch then relies on.
template <class T, feature F>
struct cluster_capacity {
  static cudaError_t run(int cluster, size_t shared, int budget, int* active) {
    *active = 0;
    if constexpr (F == feature::probability) {
      return cudaSuccess;  // probability targets never take the cluster tier
    } else {
      if (!cluster_code_loaded<T, F>()) return cudaSuccess;
      cudaError_t e = cudaFuncSetAttribute(row_cluster_kernel<T, F>,
                                           cudaFuncAttributeMaxDynamicSharedMemorySize, budget);
      if (e != cudaSuccess) return e;
      cudaLaunchConfig_t config{};
      config.gridDim = dim3(cluster);
      config.blockDim = dim3(kBlockThreads);
      config.dynamicSmemBytes = shared;
      cudaLaunchAttribute attribute{};
      attribute.id = cudaLaunchAttributeClusterDimension;
      attribute.val.clusterDim.x = cluster;
      attribute.val.clusterDim.y = 1;
      attribute.val.clusterDim.z = 1;
      config.attrs = &attribute;
      config.numAttrs = 1;
      e = cudaOccupancyMaxActiveClusters(active, row_cluster_kernel<T, F>, &config);
      if (e != cudaSuccess) {  // e.g. a block too large for the device: no cluster
        cudaGetLastError();
        *active = 0;
      }
      return cudaSuccess;
    }
  }
};

// Raises the block kernel's dynamic shared memory limit to the device's whole budget, the same
// value on every call, so that concurrent calls of different sizes never undo each other's setting
// (cluster_capacity does the same for the cluster kernel while the plan is made).
template <class T, feature F>
struct block_shared_limit {
  static cudaError_t run(int budget) {
    return cudaFuncSetAttribute(row_block_kernel<T, F>, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                budget);
  }
};

cudaError_t make_plan(const row_problem& p, plan* out) {
  device_facts f{};
  if (const cudaError_t e = query_device(&f); e != cudaSuccess) return e;
  if (p.num_classes > INT_MAX / 2) return cudaErrorInvalidValue;  // classes index as int
  const int64_t rows = p.batch * p.spatial;
  const int64_t C = p.num_classes;
  const size_t bytes = element_size(p.logits_dtype);
  const int64_t vector = detail::kVectorBytes / static_cast<int64_t>(bytes);
  // The warp tier's vector path holds whole 16-byte vectors of 16-byte-aligned rows.
  const bool aligned_rows = rows_aligned(p) && C % vector == 0;
  const int64_t warp_capacity =
      32 * (aligned_rows ? kWarpVectorsPerLane * vector : kWarpScalarsPerLane);
  const size_t block_budget = static_cast<size_t>(f.max_shared) - kStaticSharedReserve;
  const auto row_bytes = [&](int64_t elements) {
    return static_cast<size_t>((elements + vector - 1) / vector * vector) * bytes;
  };
  const feature features = feature_of(p);
  const bool rows_contiguous = p.spatial == 1;
  const bool index_targets = p.kind != row_loss::probability_cross_entropy;
  const bool fused = p.grad != nullptr && !p.read_lse;  // a row waits between two passes
  const bool in_registers = rows_contiguous && index_targets && C <= warp_capacity;
  const bool on_chip = rows_contiguous && index_targets && !p.read_lse;
  const bool fits_block = row_bytes(C) <= block_budget;
  // A forced cluster splits the row over two blocks at least, so the exchange is exercised; an
  // automatic one takes the smallest size at which two blocks fit on an SM, so that one row's
  // reads overlap another's writes.
  const bool forced_cluster = p.tier == row_tier::cluster;
  int cluster = forced_cluster ? 2 : 1;
  const size_t cluster_budget = forced_cluster ? block_budget : block_budget / 2;
  while (cluster < kMaxCluster && row_bytes((C + cluster - 1) / cluster) > cluster_budget)
    cluster *= 2;
  int slice = static_cast<int>((C + cluster - 1) / cluster);
  slice = static_cast<int>((slice + vector - 1) / vector * vector);
  int active_clusters = 0;
  if (on_chip && row_bytes(slice) <= block_budget && (cluster > 1) && f.major >= 9) {
    const cudaError_t e =
        for_types<cluster_capacity>(p.logits_dtype, features, cluster, row_bytes(slice),
                                    static_cast<int>(block_budget), &active_clusters);
    if (e != cudaSuccess) return e;
  }
  const bool fits_cluster = active_clusters > 0;
  // A thread per row coalesces only over many positions, and fills the device only with many rows.
  const bool spatial_pays =
      !rows_contiguous && p.spatial >= 32 && rows >= static_cast<int64_t>(f.sms) * kSpatialThreads;

  row_tier tier = p.tier;
  if (tier == row_tier::automatic) {
    if (!rows_contiguous) {
      tier = spatial_pays ? row_tier::spatial : row_tier::two_pass;
    } else if (in_registers) {
      tier = row_tier::warp;
    } else if (on_chip && fused && fits_block) {
      tier = row_tier::block;
    } else if (on_chip && fused && fits_cluster) {
      tier = row_tier::cluster;
    } else {
      tier = row_tier::two_pass;
    }
  }
  const bool allowed = tier == row_tier::spatial || tier == row_tier::two_pass ||
                       (in_registers && tier == row_tier::warp) ||
                       (on_chip && tier == row_tier::block && fits_block) ||
                       (on_chip && tier == row_tier::cluster && fits_cluster);
  if (!allowed) return cudaErrorInvalidValue;

  plan pl{};
  pl.facts = f;
  pl.tier = tier;
  pl.features = features;
  pl.vector = aligned_rows;
  const int64_t sms = f.sms;
  const auto cap = [&](int64_t wanted, int64_t limit) {
    return static_cast<int>(std::max<int64_t>(1, std::min(wanted, limit)));
  };
  switch (tier) {
    case row_tier::warp: {
      const int64_t slot = aligned_rows ? vector : 1;
      const int64_t slots = aligned_rows ? kWarpVectorsPerLane : kWarpScalarsPerLane;
      int64_t lanes = 1;
      // As few lanes as hold the row: the row's fixed work (shuffles, finish) is shared by the
      // most elements a lane.
      while (lanes < 32 && lanes * slots * slot < C) lanes *= 2;
      pl.lanes = static_cast<int>(lanes);
      const int64_t rows_per_block = (kWarpThreads / 32) * (32 / lanes);
      pl.blocks = cap((rows + rows_per_block - 1) / rows_per_block, sms * 4);
      break;
    }
    case row_tier::block:
      pl.shared = row_bytes(C);
      pl.blocks = cap(rows, sms * std::clamp<int64_t>(
                                      static_cast<int64_t>((block_budget + kStaticSharedReserve) /
                                                           (pl.shared + kStaticSharedReserve)),
                                      1, 2048 / kBlockThreads));
      break;
    case row_tier::cluster:
      pl.cluster = cluster;
      pl.slice = slice;
      pl.shared = row_bytes(slice);
      pl.blocks = cap(rows, active_clusters) * cluster;
      break;
    case row_tier::spatial:
      pl.blocks = cap((rows + kSpatialThreads - 1) / kSpatialThreads, sms * 8);
      break;
    default:
      pl.blocks = cap(rows, sms * kMostBlocksPerSm);
  }
  pl.prepass_blocks = prepass_blocks_of(p, f.sms);
  pl.weights_total = features == feature::weighted_smoothing ||
                     (features == feature::general && p.label_smoothing > 0 && p.weight != nullptr);
  *out = pl;
  return cudaSuccess;
}

// Workspace layout, in doubles: [prepass partials][D][W][loss partials][z-loss partials], then
// the class weights as floats, 16-byte aligned, for the weighted loops' vector loads when the
// caller's are not aligned. Every size depends on the problem's shape and options alone (the
// partials are reserved for the largest grid of any tier), so one workspace serves the three calls
// and any pointers.
struct layout {
  size_t prepass, normaliser, weights_total, loss, z, weights, total;
};

layout layout_of(const row_problem& p, int sms) {
  const bool reduced = p.reduction != FUSEDLOSS_REDUCTION_NONE;
  const size_t partials = static_cast<size_t>(sms) * kMostBlocksPerSm;
  layout l{};
  l.prepass = 0;
  l.normaliser = static_cast<size_t>(prepass_blocks_of(p, sms));
  l.weights_total = l.normaliser + 1;
  l.loss = l.weights_total + 1;
  l.z = l.loss + (reduced ? partials : 0);
  l.weights = l.z + (reduced ? partials : 0);
  l.weights += l.weights % 2;  // 16 bytes
  const size_t weight_doubles = feature_of(p) == feature::weighted_smoothing
                                    ? (static_cast<size_t>(p.num_classes) + 1) / 2
                                    : 0;
  l.total = l.weights + weight_doubles;
  return l;
}

template <class T, feature F>
struct launch_tier {
  static cudaError_t run(const row_problem& p, const plan& pl, const row_workspace& w,
                         cudaStream_t stream) {
    switch (pl.tier) {
      case row_tier::warp:
        if constexpr (F != feature::probability) {
          if (pl.vector) {
            row_warp_kernel<T, F, true><<<pl.blocks, kWarpThreads, 0, stream>>>(p, w, pl.lanes);
          } else {
            row_warp_kernel<T, feature::general, false>
                <<<pl.blocks, kWarpThreads, 0, stream>>>(p, w, pl.lanes);
          }
        }
        break;
      case row_tier::block:
        row_block_kernel<T, F><<<pl.blocks, kBlockThreads, pl.shared, stream>>>(p, w, true);
        break;
      case row_tier::cluster:
        if constexpr (F != feature::probability) {
          cudaLaunchConfig_t config{};
          config.gridDim = dim3(pl.blocks);
          config.blockDim = dim3(kBlockThreads);
          config.dynamicSmemBytes = pl.shared;
          config.stream = stream;
          cudaLaunchAttribute attribute{};
          attribute.id = cudaLaunchAttributeClusterDimension;
          attribute.val.clusterDim.x = pl.cluster;
          attribute.val.clusterDim.y = 1;
          attribute.val.clusterDim.z = 1;
          config.attrs = &attribute;
          config.numAttrs = 1;
          const cudaError_t e =
              cudaLaunchKernelEx(&config, row_cluster_kernel<T, F>, p, w, pl.slice);
          if (e != cudaSuccess) return e;
        }
        break;
      case row_tier::spatial:
        row_spatial_kernel<T, F == feature::probability ? F : feature::general>
            <<<pl.blocks, kSpatialThreads, 0, stream>>>(p, w);
        break;
      default:
        row_block_kernel<T, F><<<pl.blocks, kBlockThreads, 0, stream>>>(p, w, false);
    }
    return cudaGetLastError();
  }
};

}  // namespace

cudaError_t row_tier_for(const row_problem& p, row_tier* tier) {
  plan pl{};
  const cudaError_t e = make_plan(p, &pl);
  if (e == cudaSuccess) *tier = pl.tier;
  return e;
}

cudaError_t row_workspace_bytes(const row_problem& p, size_t* bytes) {
  // Sized for the fused call (a forced tier may refuse the others, which then fail alone).
  row_problem q = p;
  q.read_lse = false;
  plan pl{};
  const cudaError_t e = make_plan(q, &pl);
  if (e == cudaSuccess) *bytes = layout_of(p, pl.facts.sms).total * sizeof(double);
  return e;
}

cudaError_t run_row_loss(const row_problem& problem, void* workspace, size_t workspace_bytes,
                         cudaStream_t stream) {
  plan pl{};
  cudaError_t e = make_plan(problem, &pl);
  if (e != cudaSuccess) return e;
  row_problem p = problem;
  const layout l = layout_of(p, pl.facts.sms);
  const size_t needed = l.total * sizeof(double);
  if (workspace_bytes < needed || (needed > 0 && workspace == nullptr))
    return cudaErrorInvalidValue;
  auto* base = static_cast<double*>(workspace);
  const int64_t rows = p.batch * p.spatial;
  // forward_backward may ask for the z-loss term without the loss.
  const bool reduced =
      (p.loss != nullptr || p.z_loss_out != nullptr) && p.reduction != FUSEDLOSS_REDUCTION_NONE;
  const double* normaliser = nullptr;
  if (pl.prepass_blocks > 0) {
    normaliser_kernel<<<pl.prepass_blocks, kPrepassThreads, 0, stream>>>(p, base + l.prepass);
    detail::total_kernel<<<1, detail::kFinalThreads, 0, stream>>>(
        base + l.prepass, pl.prepass_blocks, base + l.normaliser);
    if ((e = cudaGetLastError()) != cudaSuccess) return e;
    normaliser = base + l.normaliser;
  }
  if (pl.features == feature::weighted_smoothing &&
      reinterpret_cast<uintptr_t>(p.weight) % detail::kVectorBytes != 0) {
    auto* copy = reinterpret_cast<float*>(base + l.weights);
    e = cudaMemcpyAsync(copy, p.weight, static_cast<size_t>(p.num_classes) * sizeof(float),
                        cudaMemcpyDeviceToDevice, stream);
    if (e != cudaSuccess) return e;
    p.weight = copy;
  }
  const double* weights_total = nullptr;
  if (pl.weights_total) {
    weights_total_kernel<<<1, detail::kFinalThreads, 0, stream>>>(p.weight, p.num_classes,
                                                                  base + l.weights_total);
    if ((e = cudaGetLastError()) != cudaSuccess) return e;
    weights_total = base + l.weights_total;
  }
  const row_workspace w{normaliser, weights_total, reduced ? base + l.loss : nullptr,
                        reduced ? base + l.z : nullptr};
  if (rows > 0) {
    if (pl.tier == row_tier::block) {
      e = for_types<block_shared_limit>(
          p.logits_dtype, pl.features,
          pl.facts.max_shared - static_cast<int>(kStaticSharedReserve));
      if (e != cudaSuccess) return e;
    }
    e = for_types<launch_tier>(p.logits_dtype, pl.features, p, pl, w, stream);
    if (e != cudaSuccess) return e;
  }
  if (reduced) {
    const bool mean = p.reduction == FUSEDLOSS_REDUCTION_MEAN;
    const int64_t partials = rows > 0 ? pl.blocks : 0;
    detail::final_sum f{w.loss_partials,           partials,   mean,
                        static_cast<double>(rows), normaliser, p.empty_value};
    if (p.loss != nullptr)
      detail::final_sum_kernel<<<1, detail::kFinalThreads, 0, stream>>>(f, p.loss);
    if (p.z_loss_out != nullptr) {
      f.partials = w.z_partials;
      detail::final_sum_kernel<<<1, detail::kFinalThreads, 0, stream>>>(f, p.z_loss_out);
    }
    e = cudaGetLastError();
  }
  return e;
}

}  // namespace fusedloss::kernels
