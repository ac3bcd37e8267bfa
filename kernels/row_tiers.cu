// The row-loss kernels and their launches: the tiers (warp, block, cluster, two_pass, spatial),
// the prepass kernels (the mean's normaliser, the class weights' total) and the final sums, each
// kernel template instantiated here alone, over the logits' types and the features the launch
// dispatches to. The algorithm and what each tier is for: row_losses.cu; the plan that picks one:
// row_losses.cu's make_plan.
#include <cooperative_groups.h>
#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include "detail/reduce.cuh"
#include "detail/row_context.cuh"
#include "detail/row_streaming.cuh"
#include "detail/row_tiers.hpp"

namespace fusedloss::kernels {
namespace {

using detail::kPrepassThreads;
using detail::kSpatialThreads;
using detail::kWarpScalarsPerLane;
using detail::kWarpThreads;
using detail::kWarpVectorsPerLane;
using detail::plan;

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
  constexpr bool kSkipsSlots = kHasCoefficients<F> || kMayCap<F>;
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

  // Each element's exponential waits in shared memory between the passes, so that the gradient
  // spends a multiply on it instead of an exponential; in registers, beside the row, they would
  // spill. Each thread reads back only what it wrote, 16-byte vectors where a slot holds whole
  // ones, a warp's vector 512 contiguous bytes (no bank conflict).
  constexpr int kPack = kSlotElements % 4 == 0 ? 4 : 1;
  using packed = std::conditional_t<kPack == 4, float4, float>;
  __shared__ packed exps[kSlots * kSlotElements / kPack][kWarpThreads];
  const auto keep = [&](int k, const float(&v)[kSlotElements]) {
    if constexpr (kPack == 4) {
#pragma unroll
      for (int q = 0; q < kSlotElements / 4; ++q) {
        exps[k * (kSlotElements / 4) + q][threadIdx.x] =
            make_float4(v[4 * q], v[4 * q + 1], v[4 * q + 2], v[4 * q + 3]);
      }
    } else {
      exps[k][threadIdx.x] = v[0];
    }
  };
  const auto kept = [&](int k, float(&v)[kSlotElements]) {
    if constexpr (kPack == 4) {
#pragma unroll
      for (int q = 0; q < kSlotElements / 4; ++q) {
        const float4 f = exps[k * (kSlotElements / 4) + q][threadIdx.x];
        v[4 * q] = f.x;
        v[4 * q + 1] = f.y;
        v[4 * q + 2] = f.z;
        v[4 * q + 3] = f.w;
      }
    } else {
      v[0] = exps[k][threadIdx.x];
    }
  };

  for (int64_t first = warp * rows_per_warp; first < ctx.rows(); first += warps * rows_per_warp) {
    const int64_t r = first + group;
    const bool active = r < ctx.rows();
    const T* x_row = static_cast<const T*>(p.logits) + (active ? r : 0) * p.row_stride;
    const int64_t y = active ? ctx.target<F>(r) : kIgnored;
    const float raw_x_y = raw_target_logit<F>(ctx, x_row, y);

    // Slot k of this lane is slot k * lanes + l of the row. A slot past the row (or of a row past
    // the last) is the row's last slot again: without options, what it adds to the sum is dropped
    // (a select a slot, not a branch) and its gradient store writes the same value as the slot's
    // own; the options' loops, whose registers a slot's coefficients and tanh fill, skip it.
    const slot* x_slots = reinterpret_cast<const slot*>(x_row);
    int at[kSlots];
    bool valid[kSlots];
    slot raw[kSlots];
#pragma unroll
    for (int k = 0; k < kSlots; ++k) {
      valid[k] = active && k * lanes + l < whole;
      at[k] = min(k * lanes + l, whole - 1);
      raw[k] = x_slots[at[k]];
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
    const auto coefficients = [&](int k, float(&c)[kSlotElements]) {
      if constexpr (kHasCoefficients<F>) {
        if constexpr (kVector) {
          ctx.coefficients<F>(r, at[k] * V, c);
        } else {
          c[0] = ctx.coefficient<F>(r, at[k]);
        }
      }
    };

    // Pass 1: the row's maximum (a copy of a logit changes no maximum); pass 2: each element's
    // exponential relative to it, kept in shared memory for the gradient, and the row's sums. A
    // backward given the LSE takes the exponentials relative to the LSE instead (a non-finite
    // one leaves the reference at 0, and the scale below carries it).
    row_summary s = row_summary::none();
    if (!p.read_lse) {
      float m;
      if constexpr (kVector && !kMayCap<F>) {
        m = detail::vectors_max<T>(raw);  // in pairs of the logits' own type, all slots at once
      } else {
        m = -INFINITY;
#pragma unroll
        for (int k = 0; k < kSlots; ++k) {
          float x[kSlotElements];
          values(k, x);
#pragma unroll
          for (int v = 0; v < kSlotElements; ++v) m = fmaxf(m, x[v]);
        }
      }
      // Unrolled over every width a group can have, a step past the group's width taking its own
      // value (a select, not a branch: a branch around each shuffle costs more than the step).
#pragma unroll
      for (int offset = 16; offset > 0; offset /= 2) {
        const float o = __shfl_xor_sync(0xffffffffu, m, offset);
        m = fmaxf(m, offset < lanes ? o : m);
      }
      s.max = m;
    } else {
      // cold: the reference of a backward given the LSE
      const float lse = active ? p.lse[r] : 0.0f;
      s.max = isfinite(lse) ? lse : -INFINITY;
      // cold end
    }
#pragma unroll
    for (int k = 0; k < kSlots; ++k) {
      if constexpr (kSkipsSlots) {
        if (!valid[k]) continue;
      }
      float x[kSlotElements], c[kSlotElements], e[kSlotElements];
      values(k, x);
      coefficients(k, c);
      const float sum = s.sum;
      detail::accumulate<kSlotElements, kHasCoefficients<F>>(x, c, s, e);
      if (!valid[k]) s.sum = sum;
      keep(k, e);
    }
    // Every lane of a group folded relative to the same reference: the merge only adds (a step
    // past the group's width adds 0).
#pragma unroll
    for (int offset = 16; offset > 0; offset /= 2) {
      const bool inside = offset < lanes;
      const float sum = __shfl_xor_sync(0xffffffffu, s.sum, offset);
      s.sum += inside ? sum : 0.0f;
      if constexpr (kHasCoefficients<F>) {
        const float weighted = __shfl_xor_sync(0xffffffffu, s.weighted, offset);
        const float coefficients = __shfl_xor_sync(0xffffffffu, s.coefficients, offset);
        s.weighted += inside ? weighted : 0.0f;
        s.coefficients += inside ? coefficients : 0.0f;
      }
    }
    __syncwarp();  // in place: every lane has read the target logit before any gradient store
    if (!active) continue;
    const row_result res = finish<F>(ctx, r, y, s, cap_of<F>(ctx, raw_x_y));
    if (l == 0) write_row_outputs(ctx, r, y, res, loss_sum, z_sum);
    if (p.grad == nullptr) continue;
    T* g_row = static_cast<T*>(p.grad) + r * p.grad_row_stride;
    // The region holds the test too: ptxas moves part of it into the region's blocks.
    // cold: an ignored row's zero gradient
    if (res.zero_grad) {
      if constexpr (kVector) {
#pragma unroll
        for (int k = 0; k < kSlots; ++k) store_gradient(g_row + at[k] * V, make_uint4(0, 0, 0, 0));
      } else {
        for (int j = l; j < C; j += lanes) g_row[j] = detail::from_float<T>(0.0f);
      }
      continue;
      // cold end
    }
    // What turns a kept term into P p_j: P / sum after a fold (a term over the sum is p_j); given
    // the LSE, P exp(ref - lse) less the base-2 rounding of the reference that each term carries
    // (P itself for a finite LSE).
    const float scale = !p.read_lse
                            ? __fdividef(res.P, s.sum)
                            : res.P * fast_exp2((s.ref() - res.lse) * kLog2e - s.residual());
#pragma unroll
    for (int k = 0; k < kSlots; ++k) {
      if constexpr (kSkipsSlots) {
        if (!valid[k]) continue;
      }
      float x[kSlotElements], c[kSlotElements], e[kSlotElements], g[kSlotElements];
      if constexpr (kVector) {
        detail::unpack<T>(raw[k], x);
      } else {
        x[0] = detail::to_float(raw[k]);
      }
      coefficients(k, c);
      kept(k, e);
#pragma unroll
      for (int v = 0; v < kSlotElements; ++v) {
        g[v] = gradient_from_exp<F>(ctx, res, scale, e[v], x[v], c[v]);
      }
      if constexpr (kVector) {
        store_gradient(g_row + at[k] * V, detail::pack<T>(g));
      } else {
        g_row[at[k]] = detail::from_float<T>(g[0]);
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
  int64_t y = blockIdx.x < ctx.rows() ? ctx.target<F>(blockIdx.x) : 0;
  for (int64_t r = blockIdx.x; r < ctx.rows(); r += gridDim.x) {
    const int64_t next = r + gridDim.x;
    const int64_t y_next = next < ctx.rows() ? ctx.target<F>(next) : 0;  // in flight over this row
    const T* x_row = static_cast<const T*>(p.logits) + ctx.base(r, p.row_stride);
    const float raw_x_y = raw_target_logit<F>(ctx, x_row, y);
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
  int64_t y = first < ctx.rows() ? ctx.target<F>(first) : 0;
  for (int64_t r = first; r < ctx.rows(); r += clusters, parity ^= 1) {
    const int64_t next = r + clusters;
    const int64_t y_next = next < ctx.rows() ? ctx.target<F>(next) : 0;
    const T* x_row = static_cast<const T*>(p.logits) + r * p.row_stride;
    const float raw_x_y = raw_target_logit<F>(ctx, x_row, y);
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
    const int64_t y = ctx.target<F>(r);
    const float raw_x_y = raw_target_logit<F>(ctx, x_row, y);
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
    const int64_t y = ctx.target<feature::plain>(r);  // index targets, whatever the feature
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
// Launches: the dispatch over the logits' type and the feature, where every kernel template is
// instantiated.

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
      case feature::focal:
        return Fn<T, feature::focal>::run(args...);
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

namespace detail {

cudaError_t row_cluster_capacity(fusedloss_dtype dtype, feature f, int cluster, size_t shared,
                                 int budget, int* active) {
  return for_types<cluster_capacity>(dtype, f, cluster, shared, budget, active);
}

cudaError_t launch_row_normaliser(const row_problem& p, int blocks, double* partials,
                                  double* normaliser, cudaStream_t stream) {
  normaliser_kernel<<<blocks, kPrepassThreads, 0, stream>>>(p, partials);
  total_kernel<<<1, kFinalThreads, 0, stream>>>(partials, blocks, normaliser);
  return cudaGetLastError();
}

cudaError_t launch_weights_total(const float* weight, int64_t count, double* out,
                                 cudaStream_t stream) {
  weights_total_kernel<<<1, kFinalThreads, 0, stream>>>(weight, count, out);
  return cudaGetLastError();
}

cudaError_t launch_row_tier(const row_problem& p, const plan& pl, const row_workspace& w,
                            cudaStream_t stream) {
  if (pl.tier == row_tier::block) {
    const cudaError_t e = for_types<block_shared_limit>(
        p.logits_dtype, pl.features, pl.facts.max_shared - static_cast<int>(kStaticSharedReserve));
    if (e != cudaSuccess) return e;
  }
  return for_types<launch_tier>(p.logits_dtype, pl.features, p, pl, w, stream);
}

cudaError_t launch_row_final_sums(const row_problem& p, const row_workspace& w, int64_t partials,
                                  const double* normaliser, cudaStream_t stream) {
  const bool mean = p.reduction == FUSEDLOSS_REDUCTION_MEAN;
  const int64_t rows = p.batch * p.spatial;
  final_sum f{w.loss_partials,           partials,   mean,
              static_cast<double>(rows), normaliser, p.empty_value};
  if (p.loss != nullptr) final_sum_kernel<<<1, kFinalThreads, 0, stream>>>(f, p.loss);
  if (p.z_loss_out != nullptr) {
    f.partials = w.z_partials;
    final_sum_kernel<<<1, kFinalThreads, 0, stream>>>(f, p.z_loss_out);
  }
  return cudaGetLastError();
}

}  // namespace detail
}  // namespace fusedloss::kernels
