// What the row losses' plan (row_losses.cu) and their kernels (row_tiers.cu) share: the tiers'
// block sizes, the compile-time features, the plan itself and the workspace a kernel is given; and
// the launches row_tiers.cu defines, so that the plan's file holds no device code.
#pragma once

#include <cuda_runtime_api.h>

#include <cstddef>
#include <cstdint>

#include "device.hpp"
#include "row_losses.hpp"

namespace fusedloss::kernels::detail {

constexpr int kWarpThreads = 256;        // warp tier: 8 warps a block
constexpr int kWarpVectorsPerLane = 4;   // warp tier: a lane holds 4 vectors of its row
constexpr int kWarpScalarsPerLane = 16;  // warp tier, unaligned rows: 16 elements a lane
constexpr int kBlockThreads = 256;       // block, cluster and two_pass tiers
constexpr int kSpatialThreads = 256;
constexpr int kPrepassThreads = 256;
constexpr int kMaxCluster = 8;                          // the portable cluster size
constexpr int kMostBlocksPerSm = 2048 / kBlockThreads;  // no tier's grid exceeds sms times this

// What the hot loops compute per element, fixed at compile time (docs/DESIGN.md, decision 7).
enum class feature {
  plain,               // cross-entropy with index targets, no smoothing, no soft-cap
  focal,               // softmax focal, no soft-cap
  smoothing,           // cross-entropy with label smoothing, no class weights, no soft-cap
  weighted_smoothing,  // cross-entropy with label smoothing and class weights, no soft-cap
  general,             // index targets with soft-cap, smoothing and weights as they come
  probability,         // probability targets, soft-cap and weights as they come
};

// What a kernel needs besides the problem: the prepass results and where block sums go.
struct row_workspace {
  const double* normaliser;     // D, or null
  const double* weights_total;  // W, or null (C)
  double* loss_partials;        // gridDim.x each, or null
  double* z_partials;
};

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

// How many clusters of `cluster` blocks of `shared` dynamic bytes the device keeps resident at
// once for the logits' type and feature `f` (0: none, or no sm_90 code). Raises the cluster
// kernel's shared-memory limit to `budget` first, the same value on every call, which the launch
// then relies on.
cudaError_t row_cluster_capacity(fusedloss_dtype dtype, feature f, int cluster, size_t shared,
                                 int budget, int* active);

// The mean's normaliser D of index targets: `blocks` partials into `partials`, their total into
// `*normaliser`.
cudaError_t launch_row_normaliser(const row_problem& p, int blocks, double* partials,
                                  double* normaliser, cudaStream_t stream);

// W, the total of `count` class weights, into `*out`.
cudaError_t launch_weights_total(const float* weight, int64_t count, double* out,
                                 cudaStream_t stream);

// The plan's tier kernel (the block tier's shared-memory limit raised first).
cudaError_t launch_row_tier(const row_problem& p, const plan& pl, const row_workspace& w,
                            cudaStream_t stream);

// The reduced loss and z-loss from the tier's `partials` block sums each (mean: divided by D when
// `normaliser` is given, else by the rows).
cudaError_t launch_row_final_sums(const row_problem& p, const row_workspace& w, int64_t partials,
                                  const double* normaliser, cudaStream_t stream);

}  // namespace fusedloss::kernels::detail
