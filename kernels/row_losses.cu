// Row losses on the GPU: cross-entropy with class-index or probability targets (label smoothing,
// class weights, ignore_index, z-loss, soft-cap) and softmax focal loss.
//
// Algorithm. Each row goes through the same three steps: fold its (soft-capped) logits into an
// online log-sum-exp summary (detail/online_softmax.cuh), finish the summary into the row's loss,
// LSE and three gradient coefficients, then write every element's gradient
//     dL/dx_j = (P * p_j - A * [j = y] - B * c_j) * cap'(x_j),   p_j = exp(cap(x_j) - LSE),
// where c_j is the class weight (label smoothing) or w_j q'_j (probability targets). The tiers
// differ only in where the row waits between the first and the last step:
//   - warp (S = 1, C up to 1024 float32 / 2048 16-bit values): a warp, or a power-of-two part of
//     one, per row; the row waits in registers. One read of the logits, one write of the gradient.
//   - block (S = 1, the row fits in one block's shared memory): a block per row, the row staged in
//     shared memory. One read, one write.
//   - cluster (sm_90, S = 1, the row fits in up to 8 blocks' shared memory): a thread-block cluster
//     per row, each block holding a slice; the blocks exchange their summaries through distributed
//     shared memory and merge them in rank order. One read, one write.
//   - two_pass (anything else, probability targets, and backward from a saved LSE): a block per
//     row folds the row from memory, then reads it again to write the gradient (one extra read; a
//     backward given the LSE skips the first pass and reads the logits once).
//   - spatial ((N, C, S) with S > 1): a thread per row, consecutive threads on consecutive
//     positions so that each class's loads coalesce; two passes like two_pass.
// Loads and stores are 16 bytes wide wherever a row is 16-byte aligned, element-wise otherwise.
//
// Reductions. `mean` of index targets divides by D = sum of weight[y] over counted rows, which
// depends on the targets alone: a prepass reduces it on the device (no host read, so the call
// can be captured in a graph) before any gradient is written. Row losses and z-loss terms are
// summed per block in double and then in a fixed-order final pass (detail/reduce.cuh): no
// floating-point atomics. Out-of-range targets are counted with an integer atomic, which is exact.
//
// Stability. The summary keeps sum exp(x - max) with max the running maximum, and the weighted
// logit sum relative to the same max, so shifting a row changes nothing; a -inf logit adds nothing
// to the sum and makes a term with a non-zero coefficient +inf without ever forming 0 * inf; the
// softmax focal gradient uses m = -expm1(lp_y) and r = lp_y / m (SEMANTICS.md), finite for every
// gamma >= 0; all arithmetic is float32, the true-class term P p_y - A included.
#include <cooperative_groups.h>
#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include <algorithm>
#include <cmath>
#include <cub/block/block_reduce.cuh>

#include "detail/online_softmax.cuh"
#include "detail/reduce.cuh"
#include "detail/storage.cuh"
#include "detail/vector_io.cuh"
#include "row_losses.hpp"

namespace fusedloss::kernels {
namespace {

using detail::row_summary;

constexpr int kWarpThreads = 256;       // warp tier: 8 warps a block
constexpr int kWarpVectorsPerLane = 8;  // warp tier: a lane holds 8 vectors of its row
constexpr int kBlockThreads = 512;      // block, cluster and two_pass tiers
constexpr int kSpatialThreads = 256;
constexpr int kPrepassThreads = 256;
constexpr int kMaxCluster = 8;  // the portable cluster size
constexpr int64_t kIgnored = -1;
constexpr int64_t kInvalid = -2;

// ------------------------------------------------------------------------------------------------
// One row: its target, its summary's coefficients, its finish and its gradient.

struct row_context {
  const row_problem& p;
  const double* normaliser;  // D on the device under mean (index targets), else null

  __device__ bool index_targets() const { return p.kind != row_loss::probability_cross_entropy; }
  __device__ bool mean() const { return p.reduction == FUSEDLOSS_REDUCTION_MEAN; }
  __device__ int64_t rows() const { return p.batch * p.spatial; }

  // Element (c) of row r sits at base(r, stride) + c * S.
  __device__ int64_t base(int64_t r, int64_t stride) const {
    return (r / p.spatial) * stride + r % p.spatial;
  }

  __device__ float cap(float x) const {
    return p.softcap > 0 ? p.softcap * tanhf(x / p.softcap) : x;
  }

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

  // Probability target q'_c of row r, smoothed.
  __device__ float smoothed_probability(int64_t r, int64_t c) const {
    const int64_t i = (r / p.spatial) * p.num_classes * p.spatial + c * p.spatial + r % p.spatial;
    float q;
    switch (p.targets_dtype) {
      case FUSEDLOSS_FLOAT16:
        q = __half2float(static_cast<const __half*>(p.targets)[i]);
        break;
      case FUSEDLOSS_BFLOAT16:
        q = __bfloat162float(static_cast<const __nv_bfloat16*>(p.targets)[i]);
        break;
      default:
        q = static_cast<const float*>(p.targets)[i];
    }
    return (1.0f - p.label_smoothing) * q + p.label_smoothing / static_cast<float>(p.num_classes);
  }

  // The coefficient class c of row r carries into the summary's weighted sum: the class weight
  // when label smoothing needs sum_c w_c lp_c, w_c q'_c for probability targets, else nothing.
  __device__ float coefficient(int64_t r, int64_t c) const {
    switch (p.kind) {
      case row_loss::cross_entropy:
        return p.label_smoothing > 0 ? weight(c) : 0.0f;
      case row_loss::probability_cross_entropy:
        return weight(c) * smoothed_probability(r, c);
      default:
        return 0.0f;
    }
  }
  __device__ bool needs_coefficients() const {
    return p.kind == row_loss::probability_cross_entropy ||
           (p.kind == row_loss::cross_entropy && p.label_smoothing > 0);
  }

  // The upstream gradient of row r, the mean's 1 / D included.
  __device__ float upstream(int64_t r) const {
    float g;
    if (p.grad_loss != nullptr) {
      g = p.reduction == FUSEDLOSS_REDUCTION_NONE ? p.grad_loss[r] : p.grad_loss[0];
    } else {
      g = p.grad_scale * (p.grad_scale_ptr != nullptr ? *p.grad_scale_ptr : 1.0f);
    }
    if (!mean()) return g;
    const double d = normaliser != nullptr ? *normaliser : static_cast<double>(rows());
    return d != 0 ? static_cast<float>(g / d) : 0.0f;
  }
  __device__ bool empty_mean() const {
    return mean() && (normaliser != nullptr ? *normaliser == 0 : rows() == 0);
  }
};

// A row's results: what it adds to the loss and the z-loss, and its gradient coefficients.
struct row_result {
  float lse;
  float loss;
  float z;
  float P, A, B;
  int64_t y;       // the class whose gradient takes -A; -1 for none
  bool zero_grad;  // ignored row, or mean over nothing: the gradient is exactly 0
};

// A term whose coefficient is exactly 0 contributes exactly 0, even if its factor is infinite.
__device__ __forceinline__ float term(float coefficient, float factor) {
  return coefficient == 0.0f ? 0.0f : coefficient * factor;
}

// Finishes a row from its summary (or its saved LSE, in which case `s` only carries the
// coefficients). `x_y` is the capped target logit (index targets).
__device__ row_result finish(const row_context& ctx, int64_t r, int64_t y, const row_summary& s,
                             float x_y) {
  const row_problem& p = ctx.p;
  row_result out{};
  out.lse = p.read_lse ? p.lse[r] : s.lse();
  out.y = -1;
  out.zero_grad = y < 0 || ctx.empty_mean();
  if (y < 0) return out;  // ignored (or invalid, treated as ignored): loss 0, gradient 0

  const float lse = out.lse;
  const float up = p.grad == nullptr ? 0.0f : ctx.upstream(r);
  const float eps = p.label_smoothing;
  const float C = static_cast<float>(p.num_classes);
  out.z = term(p.z_loss, lse * lse);
  const float z_grad = up * 2.0f * p.z_loss * lse;
  // -sum_c c_c lp_c over the row (the smoothing term, or the probability-target loss); +inf when
  // a -inf logit has a non-zero coefficient.
  const float smoothing_sum = s.masked ? INFINITY : term(s.coefficients, logf(s.sum)) - s.weighted;

  switch (p.kind) {
    case row_loss::cross_entropy: {
      const float w_y = ctx.weight(y);
      const float nll = term(w_y, -(x_y - lse));
      out.loss = term(1.0f - eps, nll) + term(eps / C, smoothing_sum) + out.z;
      const float a = up * (1.0f - eps) * w_y;
      const float b = up * eps / C;
      out.P = a + b * s.all_coefficients + z_grad;  // all_coefficients: sum of w over all classes
      out.A = a;
      out.B = b;
      out.y = y;
      break;
    }
    case row_loss::probability_cross_entropy:
      out.loss = smoothing_sum + out.z;
      out.P = up * s.all_coefficients + z_grad;
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
  return out;
}

// Element j's gradient from its raw logit.
__device__ __forceinline__ float gradient(const row_context& ctx, const row_result& res, int64_t r,
                                          int64_t j, float x) {
  if (res.zero_grad) return 0.0f;
  float slope = 1.0f;
  if (ctx.p.softcap > 0) {
    const float t = tanhf(x / ctx.p.softcap);
    x = ctx.p.softcap * t;
    slope = 1.0f - t * t;
  }
  float g = res.P * expf(x - res.lse);
  if (j == res.y) g -= res.A;
  if (res.B != 0.0f) g -= res.B * ctx.coefficient(r, j);
  return g * slope;
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

// What a kernel needs besides the problem: the mean's normaliser and where block sums go.
struct row_workspace {
  const double* normaliser;
  double* loss_partials;  // gridDim.x each, or null
  double* z_partials;
};

template <int kThreads>
__device__ void write_partials(const row_workspace& w, double loss_sum, double z_sum) {
  if (w.loss_partials == nullptr) return;
  detail::write_block_partial<kThreads>(loss_sum, w.loss_partials);
  __syncthreads();  // the block reduction's shared storage is reused
  detail::write_block_partial<kThreads>(z_sum, w.z_partials);
}

// Loads N values of a contiguous row from element c0 on (fewer at the row's end, C): one or more
// 16-byte loads when the row is aligned and the chunk whole, element by element otherwise.
template <int N, class T>
__device__ __forceinline__ void load_row_chunk(const T* row, int64_t c0, int64_t C, bool vector,
                                               float (&out)[N]) {
  if (vector && c0 + N <= C) {
    detail::load_chunk(row + c0, out);
    return;
  }
#pragma unroll
  for (int k = 0; k < N; ++k) out[k] = c0 + k < C ? detail::to_float(row[c0 + k]) : 0.0f;
}

template <int N, class T>
__device__ __forceinline__ void store_row_chunk(T* row, int64_t c0, int64_t C, bool vector,
                                                const float (&in)[N]) {
  if (vector && c0 + N <= C) {
    detail::store_chunk(row + c0, in);
    return;
  }
#pragma unroll
  for (int k = 0; k < N; ++k) {
    if (c0 + k < C) row[c0 + k] = detail::from_float<T>(in[k]);
  }
}

template <class T>
__device__ __forceinline__ bool aligned(const T* p) {
  return reinterpret_cast<uintptr_t>(p) % detail::kVectorBytes == 0;
}

struct merge_summaries {
  __device__ row_summary operator()(row_summary a, const row_summary& b) const {
    a.merge(b);
    return a;
  }
};

// The block-wide summary, in every thread.
template <int kThreads>
__device__ row_summary block_summary(const row_summary& mine) {
  using reduce = cub::BlockReduce<row_summary, kThreads>;
  __shared__ typename reduce::TempStorage storage;
  __shared__ row_summary total;
  const row_summary t = reduce(storage).Reduce(mine, merge_summaries{});
  if (threadIdx.x == 0) total = t;
  __syncthreads();
  const row_summary out = total;
  __syncthreads();  // `total` and `storage` are reused by the next row
  return out;
}

// ------------------------------------------------------------------------------------------------
// Tiers

// The capped target logit of row r (index targets). Every tier reads it before the row's first
// barrier or shuffle: in place, another thread may overwrite it with its gradient after that.
template <class T>
__device__ __forceinline__ float target_logit(const row_context& ctx, const T* x_row, int64_t y) {
  return y >= 0 && ctx.index_targets() ? ctx.cap(detail::to_float(x_row[y * ctx.p.spatial])) : 0.0f;
}

// warp: `lanes` lanes (a power of two) per row, 32 / lanes rows per warp; the row waits in
// registers. Every lane of a warp runs the same iterations so the shuffles see the whole warp.
template <class T>
__global__ void __launch_bounds__(kWarpThreads)
    row_warp_kernel(row_problem p, row_workspace w, int lanes) {
  constexpr int V = detail::kVectorBytes / sizeof(T);
  const row_context ctx{p, w.normaliser};
  const int lane = threadIdx.x % 32;
  const int group = lane / lanes;
  const int l = lane % lanes;
  const int rows_per_warp = 32 / lanes;
  const int64_t warp = (static_cast<int64_t>(blockIdx.x) * kWarpThreads + threadIdx.x) / 32;
  const int64_t warps = static_cast<int64_t>(gridDim.x) * (kWarpThreads / 32);
  const int64_t C = p.num_classes;
  double loss_sum = 0, z_sum = 0;

  for (int64_t first = warp * rows_per_warp; first < ctx.rows(); first += warps * rows_per_warp) {
    const int64_t r = first + group;
    const bool active = r < ctx.rows();
    const T* x_row = static_cast<const T*>(p.logits) + (active ? r : 0) * p.row_stride;
    const bool vector = aligned(x_row);
    const int64_t y = active ? ctx.target(r) : kIgnored;
    const float x_y = target_logit(ctx, x_row, y);

    float x[kWarpVectorsPerLane][V];
    row_summary s = row_summary::none();
#pragma unroll
    for (int k = 0; k < kWarpVectorsPerLane; ++k) {
      const int64_t c0 = (static_cast<int64_t>(k) * lanes + l) * V;
      if (!active || c0 >= C) continue;
      load_row_chunk(x_row, c0, C, vector, x[k]);
#pragma unroll
      for (int v = 0; v < V; ++v) {
        if (c0 + v < C) s.add(ctx.cap(x[k][v]), ctx.coefficient(r, c0 + v));
      }
    }
    for (int offset = lanes / 2; offset > 0; offset /= 2) {
      row_summary o;
      o.max = __shfl_xor_sync(0xffffffffu, s.max, offset);
      o.sum = __shfl_xor_sync(0xffffffffu, s.sum, offset);
      o.weighted = __shfl_xor_sync(0xffffffffu, s.weighted, offset);
      o.coefficients = __shfl_xor_sync(0xffffffffu, s.coefficients, offset);
      o.all_coefficients = __shfl_xor_sync(0xffffffffu, s.all_coefficients, offset);
      o.masked = __shfl_xor_sync(0xffffffffu, s.masked, offset);
      s.merge(o);
    }
    if (!active) continue;
    const row_result res = finish(ctx, r, y, s, x_y);
    if (l == 0) write_row_outputs(ctx, r, y, res, loss_sum, z_sum);
    if (p.grad == nullptr) continue;
    T* g_row = static_cast<T*>(p.grad) + r * p.grad_row_stride;
    const bool g_vector = aligned(g_row);
#pragma unroll
    for (int k = 0; k < kWarpVectorsPerLane; ++k) {
      const int64_t c0 = (static_cast<int64_t>(k) * lanes + l) * V;
      if (c0 >= C) continue;
      float g[V];
#pragma unroll
      for (int v = 0; v < V; ++v) g[v] = gradient(ctx, res, r, c0 + v, x[k][v]);
      store_row_chunk(g_row, c0, C, g_vector, g);
    }
  }
  write_partials<kWarpThreads>(w, loss_sum, z_sum);
}

// Folds the row slice [begin, end) of row r into `s`, staging it in `stage` (shared memory, the
// slice's first element at stage[0]) when that is given.
template <class T>
__device__ void fold_slice(const row_context& ctx, int64_t r, const T* x_row, int64_t begin,
                           int64_t end, T* stage, row_summary& s) {
  constexpr int V = detail::kVectorBytes / sizeof(T);
  const bool vector = aligned(x_row + begin);
  for (int64_t c0 = begin + static_cast<int64_t>(threadIdx.x) * V; c0 < end;
       c0 += static_cast<int64_t>(blockDim.x) * V) {
    float x[V];
    load_row_chunk(x_row, c0, end, vector, x);
    if (stage != nullptr) store_row_chunk(stage, c0 - begin, end - begin, true, x);
#pragma unroll
    for (int v = 0; v < V; ++v) {
      if (c0 + v < end) s.add(ctx.cap(x[v]), ctx.coefficient(r, c0 + v));
    }
  }
}

// Writes the gradient of the row slice [begin, end), reading the logits from `source` (shared
// memory holding the slice from its first element, or the row in global memory).
template <class T>
__device__ void write_slice_gradient(const row_context& ctx, const row_result& res, int64_t r,
                                     const T* source, bool staged, int64_t begin, int64_t end,
                                     T* g_row) {
  constexpr int V = detail::kVectorBytes / sizeof(T);
  const int64_t offset = staged ? begin : 0;  // the stage holds the slice from its first element
  const bool x_vector = staged || aligned(source + begin);
  const bool g_vector = aligned(g_row + begin);
  for (int64_t c0 = begin + static_cast<int64_t>(threadIdx.x) * V; c0 < end;
       c0 += static_cast<int64_t>(blockDim.x) * V) {
    float x[V], g[V];
    load_row_chunk(source, c0 - offset, end - offset, x_vector, x);
#pragma unroll
    for (int v = 0; v < V; ++v) g[v] = gradient(ctx, res, r, c0 + v, x[v]);
    store_row_chunk(g_row, c0, end, g_vector, g);
  }
}

// block and two_pass: a block per row. With `staged` (block) the row waits in dynamic shared
// memory between the fold and the gradient; without (two_pass) the gradient reads it from memory
// again, and a backward given the saved LSE folds only the coefficients it needs (no logits).
template <class T>
__global__ void __launch_bounds__(kBlockThreads)
    row_block_kernel(row_problem p, row_workspace w, bool staged) {
  extern __shared__ uint4 shared_raw[];
  T* stage = staged ? reinterpret_cast<T*>(shared_raw) : nullptr;
  const row_context ctx{p, w.normaliser};
  double loss_sum = 0, z_sum = 0;
  for (int64_t r = blockIdx.x; r < ctx.rows(); r += gridDim.x) {
    const T* x_row = static_cast<const T*>(p.logits) + r * p.row_stride;
    const int64_t y = ctx.target(r);
    const float x_y = target_logit(ctx, x_row, y);
    row_summary s = row_summary::none();
    if (!p.read_lse) {
      fold_slice(ctx, r, x_row, 0, p.num_classes, stage, s);
    } else if (ctx.needs_coefficients()) {
      for (int64_t c = threadIdx.x; c < p.num_classes; c += blockDim.x) {
        s.all_coefficients += ctx.coefficient(r, c);
      }
    }
    s = block_summary<kBlockThreads>(s);  // its barriers also publish the staged row
    const row_result res = finish(ctx, r, y, s, x_y);
    if (threadIdx.x == 0) write_row_outputs(ctx, r, y, res, loss_sum, z_sum);
    if (p.grad != nullptr) {
      write_slice_gradient(ctx, res, r, staged ? stage : x_row, staged, 0, p.num_classes,
                           static_cast<T*>(p.grad) + r * p.grad_row_stride);
    }
    if (staged) __syncthreads();  // the next row overwrites the stage
  }
  write_partials<kBlockThreads>(w, loss_sum, z_sum);
}

// cluster (sm_90): `cluster` blocks per row, each staging a slice of `slice` elements (a multiple
// of the vector width); the blocks' summaries are merged in rank order through distributed shared
// memory, so every block finishes the row with the same bits.
template <class T>
__global__ void __launch_bounds__(kBlockThreads)
    row_cluster_kernel(row_problem p, row_workspace w, int64_t slice) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  namespace cg = cooperative_groups;
  cg::cluster_group cluster = cg::this_cluster();
  extern __shared__ uint4 shared_raw[];
  T* stage = reinterpret_cast<T*>(shared_raw);
  __shared__ row_summary mine;
  const row_context ctx{p, w.normaliser};
  const unsigned rank = cluster.block_rank();
  const unsigned blocks = cluster.num_blocks();
  const int64_t clusters = gridDim.x / blocks;
  double loss_sum = 0, z_sum = 0;
  for (int64_t r = blockIdx.x / blocks; r < ctx.rows(); r += clusters) {
    const T* x_row = static_cast<const T*>(p.logits) + r * p.row_stride;
    const int64_t y = ctx.target(r);
    const float x_y = target_logit(ctx, x_row, y);
    const int64_t start = static_cast<int64_t>(rank) * slice;
    const int64_t begin = start < p.num_classes ? start : p.num_classes;
    const int64_t end = begin + slice < p.num_classes ? begin + slice : p.num_classes;
    row_summary s = row_summary::none();
    fold_slice(ctx, r, x_row, begin, end, stage, s);
    s = block_summary<kBlockThreads>(s);
    if (threadIdx.x == 0) mine = s;
    cluster.sync();  // every block's summary is visible to the others
    row_summary total = *cluster.map_shared_rank(&mine, 0);
    for (unsigned b = 1; b < blocks; ++b) total.merge(*cluster.map_shared_rank(&mine, b));
    const row_result res = finish(ctx, r, y, total, x_y);
    if (rank == 0 && threadIdx.x == 0) write_row_outputs(ctx, r, y, res, loss_sum, z_sum);
    if (p.grad != nullptr) {
      write_slice_gradient(ctx, res, r, stage, true, begin, end,
                           static_cast<T*>(p.grad) + r * p.grad_row_stride);
    }
    cluster.sync();  // no block moves on while another still reads its summary or stage
  }
  write_partials<kBlockThreads>(w, loss_sum, z_sum);
#else
  __trap();  // launched only on sm_90 and later (run_row_loss checks)
#endif
}

// spatial: a thread per row (n, s); class c of the row is S elements after class c - 1, so the
// threads of a warp, on consecutive s, read consecutive addresses.
template <class T>
__global__ void __launch_bounds__(kSpatialThreads)
    row_spatial_kernel(row_problem p, row_workspace w) {
  const row_context ctx{p, w.normaliser};
  const int64_t S = p.spatial;
  double loss_sum = 0, z_sum = 0;
  for (int64_t r = static_cast<int64_t>(blockIdx.x) * kSpatialThreads + threadIdx.x; r < ctx.rows();
       r += static_cast<int64_t>(gridDim.x) * kSpatialThreads) {
    const T* x_row = static_cast<const T*>(p.logits) + ctx.base(r, p.row_stride);
    const int64_t y = ctx.target(r);
    const float x_y = target_logit(ctx, x_row, y);
    row_summary s = row_summary::none();
    for (int64_t c = 0; c < p.num_classes; ++c) {
      const float c_coefficient = ctx.coefficient(r, c);
      if (!p.read_lse) {
        s.add(ctx.cap(detail::to_float(x_row[c * S])), c_coefficient);
      } else {
        s.all_coefficients += c_coefficient;
      }
    }
    const row_result res = finish(ctx, r, y, s, x_y);
    write_row_outputs(ctx, r, y, res, loss_sum, z_sum);
    if (p.grad == nullptr) continue;
    T* g_row = static_cast<T*>(p.grad) + ctx.base(r, p.grad_row_stride);
    for (int64_t c = 0; c < p.num_classes; ++c) {
      g_row[c * S] =
          detail::from_float<T>(gradient(ctx, res, r, c, detail::to_float(x_row[c * S])));
    }
  }
  write_partials<kSpatialThreads>(w, loss_sum, z_sum);
}

// The mean's normaliser D for index targets: each block sums its counted rows' share.
__global__ void __launch_bounds__(kPrepassThreads)
    normaliser_kernel(row_problem p, double* partials) {
  const row_context ctx{p, nullptr};
  double d = 0;
  for (int64_t r = static_cast<int64_t>(blockIdx.x) * kPrepassThreads + threadIdx.x; r < ctx.rows();
       r += static_cast<int64_t>(gridDim.x) * kPrepassThreads) {
    const int64_t y = ctx.target(r);
    // Cross-entropy divides by the targets' total weight, softmax focal by their count.
    if (y >= 0) d += p.kind == row_loss::cross_entropy ? ctx.weight(y) : 1.0f;
  }
  detail::write_block_partial<kPrepassThreads>(d, partials);
}

// ------------------------------------------------------------------------------------------------
// Host side: the plan (tier, grid, shared memory) that the workspace query and the launch share.

struct device_facts {
  int major;
  int sms;
  int max_shared;  // dynamic shared memory a block may opt into
};

cudaError_t query_device(device_facts* f) {
  int device = 0;
  cudaError_t e = cudaGetDevice(&device);
  if (e == cudaSuccess)
    e = cudaDeviceGetAttribute(&f->major, cudaDevAttrComputeCapabilityMajor, device);
  if (e == cudaSuccess) e = cudaDeviceGetAttribute(&f->sms, cudaDevAttrMultiProcessorCount, device);
  if (e == cudaSuccess) {
    e = cudaDeviceGetAttribute(&f->max_shared, cudaDevAttrMaxSharedMemoryPerBlockOptin, device);
  }
  return e;
}

size_t element_size(fusedloss_dtype dtype) { return dtype == FUSEDLOSS_FLOAT32 ? 4 : 2; }

struct plan {
  row_tier tier;
  int blocks;
  int lanes = 32;     // warp tier
  int cluster = 1;    // cluster tier
  int64_t slice = 0;  // cluster tier: elements per block
  size_t shared = 0;  // dynamic shared memory per block
  int prepass_blocks = 0;
};

// Static shared memory of the block kernels (cub storage, summaries) stays under this.
constexpr size_t kStaticSharedReserve = 8 * 1024;

cudaError_t make_plan(const row_problem& p, plan* out) {
  device_facts f{};
  if (const cudaError_t e = query_device(&f); e != cudaSuccess) return e;
  const int64_t rows = p.batch * p.spatial;
  const int64_t C = p.num_classes;
  const size_t bytes = element_size(p.logits_dtype);
  const int64_t vector = detail::kVectorBytes / static_cast<int64_t>(bytes);
  const int64_t warp_capacity = 32 * kWarpVectorsPerLane * vector;
  const size_t block_budget = static_cast<size_t>(f.max_shared) - kStaticSharedReserve;
  const auto row_bytes = [&](int64_t elements) {
    return static_cast<size_t>((elements + vector - 1) / vector * vector) * bytes;
  };
  const bool rows_contiguous = p.spatial == 1;
  const bool index_targets = p.kind != row_loss::probability_cross_entropy;
  const bool on_chip = rows_contiguous && index_targets && !p.read_lse;
  const bool fits_block = row_bytes(C) <= block_budget;
  // A forced cluster splits the row over two blocks at least, so the exchange is exercised.
  int cluster = p.tier == row_tier::cluster ? 2 : 1;
  while (cluster < kMaxCluster && row_bytes((C + cluster - 1) / cluster) > block_budget)
    cluster *= 2;
  const bool fits_cluster = f.major >= 9 && row_bytes((C + cluster - 1) / cluster) <= block_budget;

  row_tier tier = p.tier;
  if (tier == row_tier::automatic) {
    if (!rows_contiguous) {
      tier = row_tier::spatial;
    } else if (on_chip && C <= warp_capacity) {
      tier = row_tier::warp;
    } else if (on_chip && fits_block) {
      tier = row_tier::block;
    } else if (on_chip && fits_cluster && cluster > 1) {
      tier = row_tier::cluster;
    } else {
      tier = row_tier::two_pass;
    }
  }
  const bool allowed = tier == row_tier::spatial ||
                       (rows_contiguous && tier == row_tier::two_pass) ||
                       (on_chip && tier == row_tier::warp && C <= warp_capacity) ||
                       (on_chip && tier == row_tier::block && fits_block) ||
                       (on_chip && tier == row_tier::cluster && fits_cluster);
  if (!allowed) return cudaErrorInvalidValue;

  plan pl{};
  pl.tier = tier;
  const int64_t sms = f.sms;
  const auto cap = [&](int64_t wanted, int64_t limit) {
    return static_cast<int>(std::max<int64_t>(1, std::min(wanted, limit)));
  };
  switch (tier) {
    case row_tier::warp: {
      int64_t lanes = 1;
      while (lanes < 32 && lanes * kWarpVectorsPerLane * vector < C) lanes *= 2;
      // Fewer vectors per lane than it could hold, but not below one vector each.
      while (lanes < 32 && lanes * vector < C && lanes * 2 * vector <= C) lanes *= 2;
      pl.lanes = static_cast<int>(lanes);
      const int64_t rows_per_block = (kWarpThreads / 32) * (32 / lanes);
      pl.blocks = cap((rows + rows_per_block - 1) / rows_per_block, sms * 8);
      break;
    }
    case row_tier::block:
      pl.shared = row_bytes(C);
      pl.blocks =
          cap(rows, sms * std::max<int64_t>(1, static_cast<int64_t>(block_budget / pl.shared)));
      break;
    case row_tier::cluster:
      pl.cluster = cluster;
      pl.slice = (C + cluster - 1) / cluster;
      pl.slice = (pl.slice + vector - 1) / vector * vector;
      pl.shared = row_bytes(pl.slice);
      pl.blocks = cap(rows, std::max<int64_t>(1, sms / cluster)) * cluster;
      break;
    case row_tier::spatial:
      pl.blocks = cap((rows + kSpatialThreads - 1) / kSpatialThreads, sms * 8);
      break;
    default:
      pl.blocks = cap(rows, sms * 4);
  }
  if (index_targets && p.reduction == FUSEDLOSS_REDUCTION_MEAN) {
    pl.prepass_blocks = cap((rows + kPrepassThreads - 1) / kPrepassThreads, sms * 2);
  }
  *out = pl;
  return cudaSuccess;
}

// Workspace layout: [prepass partials][D][loss partials][z-loss partials], in doubles.
struct layout {
  size_t prepass, normaliser, loss, z, total;
};

// The loss partials are reserved whether or not this call writes the loss, so one workspace size
// serves the three calls.
layout layout_of(const row_problem& p, const plan& pl) {
  const bool reduced = p.reduction != FUSEDLOSS_REDUCTION_NONE;
  layout l{};
  l.prepass = 0;
  l.normaliser = static_cast<size_t>(pl.prepass_blocks);
  l.loss = l.normaliser + (pl.prepass_blocks > 0 ? 1 : 0);
  l.z = l.loss + (reduced ? pl.blocks : 0);
  l.total = l.z + (reduced ? pl.blocks : 0);
  return l;
}

template <class T>
cudaError_t launch_tier(const row_problem& p, const plan& pl, const row_workspace& w,
                        cudaStream_t stream) {
  switch (pl.tier) {
    case row_tier::warp:
      row_warp_kernel<T><<<pl.blocks, kWarpThreads, 0, stream>>>(p, w, pl.lanes);
      break;
    case row_tier::block: {
      const cudaError_t e =
          cudaFuncSetAttribute(row_block_kernel<T>, cudaFuncAttributeMaxDynamicSharedMemorySize,
                               static_cast<int>(pl.shared));
      if (e != cudaSuccess) return e;
      row_block_kernel<T><<<pl.blocks, kBlockThreads, pl.shared, stream>>>(p, w, true);
      break;
    }
    case row_tier::cluster: {
      cudaError_t e =
          cudaFuncSetAttribute(row_cluster_kernel<T>, cudaFuncAttributeMaxDynamicSharedMemorySize,
                               static_cast<int>(pl.shared));
      if (e != cudaSuccess) return e;
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
      e = cudaLaunchKernelEx(&config, row_cluster_kernel<T>, p, w, pl.slice);
      if (e != cudaSuccess) return e;
      break;
    }
    case row_tier::spatial:
      row_spatial_kernel<T><<<pl.blocks, kSpatialThreads, 0, stream>>>(p, w);
      break;
    default:
      row_block_kernel<T><<<pl.blocks, kBlockThreads, 0, stream>>>(p, w, false);
  }
  return cudaGetLastError();
}

}  // namespace

cudaError_t row_tier_for(const row_problem& p, row_tier* tier) {
  plan pl{};
  const cudaError_t e = make_plan(p, &pl);
  if (e == cudaSuccess) *tier = pl.tier;
  return e;
}

cudaError_t row_workspace_bytes(const row_problem& p, size_t* bytes) {
  // A backward from a saved LSE may take another tier, with another grid: size for both.
  size_t most = 0;
  for (const bool read_lse : {false, true}) {
    row_problem q = p;
    q.read_lse = read_lse;
    plan pl{};
    const cudaError_t e = make_plan(q, &pl);
    if (e == cudaSuccess) {
      most = std::max(most, layout_of(q, pl).total * sizeof(double));
    } else if (!read_lse) {
      return e;
    }
  }
  *bytes = most;
  return cudaSuccess;
}

cudaError_t run_row_loss(const row_problem& p, void* workspace, cudaStream_t stream) {
  plan pl{};
  cudaError_t e = make_plan(p, &pl);
  if (e != cudaSuccess) return e;
  const layout l = layout_of(p, pl);
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
  const row_workspace w{normaliser, reduced ? base + l.loss : nullptr,
                        reduced ? base + l.z : nullptr};
  if (rows > 0) {
    switch (p.logits_dtype) {
      case FUSEDLOSS_FLOAT16:
        e = launch_tier<__half>(p, pl, w, stream);
        break;
      case FUSEDLOSS_BFLOAT16:
        e = launch_tier<__nv_bfloat16>(p, pl, w, stream);
        break;
      default:
        e = launch_tier<float>(p, pl, w, stream);
    }
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
