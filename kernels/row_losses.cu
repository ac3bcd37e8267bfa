// Row losses on the GPU: cross-entropy with class-index or probability targets (label smoothing,
// class weights, ignore_index, z-loss, soft-cap) and softmax focal loss.
// This file is their host side: the plan (tier, feature, grid, shared memory) that the workspace
// query and the launch share, the workspace's layout and the order of a call's launches. The
// kernels, and their launches where each template is instantiated, are in row_tiers.cu.
//
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
#include <algorithm>
#include <climits>

#include "detail/device.hpp"
#include "detail/row_tiers.hpp"
#include "detail/vector_io.cuh"
#include "row_losses.hpp"

namespace fusedloss::kernels {
namespace {

using detail::device_facts;
using detail::feature;
using detail::kBlockThreads;
using detail::kMaxCluster;
using detail::kMostBlocksPerSm;
using detail::kPrepassThreads;
using detail::kSpatialThreads;
using detail::kStaticSharedReserve;
using detail::kWarpScalarsPerLane;
using detail::kWarpThreads;
using detail::kWarpVectorsPerLane;
using detail::plan;
using detail::query_device;
using detail::row_workspace;

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
  if (p.kind == row_loss::softmax_focal) return feature::focal;
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
        detail::row_cluster_capacity(p.logits_dtype, features, cluster, row_bytes(slice),
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
    e = detail::launch_row_normaliser(p, pl.prepass_blocks, base + l.prepass, base + l.normaliser,
                                      stream);
    if (e != cudaSuccess) return e;
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
    e = detail::launch_weights_total(p.weight, p.num_classes, base + l.weights_total, stream);
    if (e != cudaSuccess) return e;
    weights_total = base + l.weights_total;
  }
  const row_workspace w{normaliser, weights_total, reduced ? base + l.loss : nullptr,
                        reduced ? base + l.z : nullptr};
  if (rows > 0) {
    e = detail::launch_row_tier(p, pl, w, stream);
    if (e != cudaSuccess) return e;
  }
  if (reduced) {
    e = detail::launch_row_final_sums(p, w, rows > 0 ? pl.blocks : 0, normaliser, stream);
  }
  return e;
}

}  // namespace fusedloss::kernels
