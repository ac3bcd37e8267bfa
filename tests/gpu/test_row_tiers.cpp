// The row kernels' tiers (warp, block, cluster, two_pass, spatial): which one the automatic choice
// picks at the tests' sizes, each forced over its sizes against the reference, and the refusals
// of a forced tier that cannot hold the problem.
#include <gtest/gtest.h>

#include <cstdint>
#include <random>
#include <utility>
#include <vector>

#include "row_kernels_harness.hpp"
#include "row_losses.hpp"

namespace fusedloss::gpu_tests::row_kernels {
namespace {

kernels::row_problem sized_problem(fusedloss_dtype dtype, int64_t C, int64_t S = 1,
                                   loss_kind kind = loss_kind::cross_entropy, bool read_lse = false,
                                   row_tier tier = row_tier::automatic) {
  row_case c;
  c.kind = kind;
  c.batch = 4;
  c.num_classes = C;
  c.spatial = S;
  c.float32_targets = true;
  c.call = read_lse ? fusedloss::call::backward : fusedloss::call::forward_backward;
  c.saved_lse = read_lse;
  c.tier = tier;
  kernels::row_problem p = make_problem(c, dtype, bound{});
  // The plan asks whether a gradient is written (a row then waits between two passes) and where
  // rows start, never for values: a 16-byte-aligned stand-in for the gradient's buffer.
  p.grad = reinterpret_cast<void*>(uintptr_t{256});
  return p;
}

row_tier automatic_tier(const kernels::row_problem& p) {
  row_tier t = row_tier::automatic;
  EXPECT_EQ(kernels::row_tier_for(p, &t), cudaSuccess) << "C=" << p.num_classes;
  return t;
}

// What automatic picks at the sizes the tests use, so that each forced tier below runs where
// another would have been chosen (C = 1000: warp; C = 4097: block; S = 1: never spatial).
TYPED_TEST(RowKernels, AutomaticTierChoice) {
  const fusedloss_dtype dtype = TestFixture::dtype;
  const device_facts f = facts();
  const int64_t capacity = dtype == FUSEDLOSS_FLOAT32 ? 512 : 1024;  // 32 lanes x 4 x 16 bytes
  const auto es = static_cast<int64_t>(element_bytes(dtype));
  for (int64_t C : {int64_t{1}, int64_t{31}, int64_t{33}, int64_t{500}, capacity}) {
    EXPECT_EQ(automatic_tier(sized_problem(dtype, C)), row_tier::warp) << "C=" << C;
  }
  EXPECT_EQ(automatic_tier(sized_problem(dtype, capacity + 1)), row_tier::block);
  EXPECT_EQ(automatic_tier(sized_problem(dtype, 4097)), row_tier::block);
  if (32000 * es + 8192 <= f.shared_optin) {  // the row and the kernel's static shared memory
    EXPECT_EQ(automatic_tier(sized_problem(dtype, 32000)), row_tier::block);
    EXPECT_EQ(automatic_tier(sized_problem(dtype, 30576)), row_tier::block);
  }
  // 128256 and 256000 outgrow one block (227 KiB on sm_90) but not a cluster of 8.
  const row_tier large = f.major >= 9 ? row_tier::cluster : row_tier::two_pass;
  EXPECT_EQ(automatic_tier(sized_problem(dtype, 128256)), large);
  EXPECT_EQ(automatic_tier(sized_problem(dtype, 256000)), large);
  EXPECT_EQ(automatic_tier(sized_problem(dtype, int64_t{1} << 21)),
            row_tier::two_pass);  // > 8 blocks
  // A thread per row pays only over many positions and rows; few of either take a block a row.
  EXPECT_EQ(automatic_tier(sized_problem(dtype, 33, 5)), row_tier::two_pass);
  EXPECT_EQ(automatic_tier(sized_problem(dtype, 1000, 2)), row_tier::two_pass);
  {
    kernels::row_problem many = sized_problem(dtype, 33, 64);
    many.batch = int64_t{f.sms} * 256;  // make_plan's bar: a 256-thread block an SM
    EXPECT_EQ(automatic_tier(many), row_tier::spatial);
  }
  EXPECT_EQ(automatic_tier(sized_problem(dtype, 33, 1, loss_kind::probability)),
            row_tier::two_pass);
  EXPECT_EQ(automatic_tier(sized_problem(dtype, 1000, 1, loss_kind::probability)),
            row_tier::two_pass);
  // The backward from a saved LSE streams: in registers while the row fits, else two_pass.
  EXPECT_EQ(automatic_tier(sized_problem(dtype, 500, 1, loss_kind::cross_entropy, true)),
            row_tier::warp);
  EXPECT_EQ(automatic_tier(sized_problem(dtype, 4097, 1, loss_kind::cross_entropy, true)),
            row_tier::two_pass);
  EXPECT_EQ(automatic_tier(sized_problem(dtype, 4097, 1, loss_kind::softmax_focal, true)),
            row_tier::two_pass);
  EXPECT_EQ(automatic_tier(sized_problem(dtype, 500, 1, loss_kind::softmax_focal)), row_tier::warp);
}

// Each tier forced over its sizes (warp: 1 to 32 lanes a row, up to its capacity; cluster down
// to C = 1, where the second block's slice is empty), with the options rotating, against the
// reference. The forced-tier runs check that row_tier_for reports the forced tier.
TYPED_TEST(RowKernels, EveryTierForced) {
  const fusedloss_dtype dtype = TestFixture::dtype;
  const int64_t capacity = dtype == FUSEDLOSS_FLOAT32 ? 512 : 1024;
  const std::vector<std::pair<row_tier, std::vector<int64_t>>> tiers = {
      {row_tier::warp, {1, 2, 5, 31, 100, 257, 500, capacity}},
      {row_tier::block, {1, 3, 33, 1000, 4097}},
      {row_tier::cluster, {1, 3, 33, 1000, 4097}},
      {row_tier::two_pass, {1, 33, 1000, 4097}},
      {row_tier::spatial, {1, 33, 1000}}};
  constexpr int kOptionSets = 7;
  const auto options = [](row_case& c, int set) {
    switch (set) {
      case 0:  // plain, mean
        c.ignored = 0.1;
        c.invalid = 0.05;
        break;
      case 1:  // weights, smoothing, misaligned rows, separate gradient stride, scale
        c.weight = true;
        c.label_smoothing = 0.1;
        c.reduction = FUSEDLOSS_REDUCTION_SUM;
        c.row_padding = 3;
        c.grad_padding = 5;
        c.grad_scale = 0.75f;
        c.grad_scale_ptr = true;
        break;
      case 2:  // forward: LSE, z-loss term, soft-cap
        c.call = fusedloss::call::forward;
        c.reduction = FUSEDLOSS_REDUCTION_NONE;
        c.z_loss = 1e-3;
        c.z_loss_out = true;
        c.softcap = 5.0;
        break;
      case 3:  // backward, per-row upstream; from the saved LSE where the tier reads it
        c.call = fusedloss::call::backward;
        c.reduction = FUSEDLOSS_REDUCTION_NONE;
        c.weight = true;
        c.label_smoothing = 0.2;
        c.saved_lse =
            c.tier == row_tier::two_pass || c.tier == row_tier::spatial || c.tier == row_tier::warp;
        break;
      case 4:
        c.kind = loss_kind::softmax_focal;
        c.weight = true;
        c.reduction = FUSEDLOSS_REDUCTION_SUM;
        c.ignored = 0.2;
        c.index_dtype = FUSEDLOSS_INT32;
        break;
      case 5:
        c.kind = loss_kind::softmax_focal;
        c.gamma = 0.5;
        c.call = fusedloss::call::backward;
        c.saved_lse =
            c.tier == row_tier::two_pass || c.tier == row_tier::spatial || c.tier == row_tier::warp;
        break;
      default:
        c.kind = loss_kind::probability;
        c.label_smoothing = 0.2;
        c.weight = true;
        c.z_loss = 1e-3;
        c.z_loss_out = true;
        break;
    }
  };
  for (const auto& [tier, classes] : tiers) {
    for (int64_t C : classes) {
      for (int set = 0; set < kOptionSets; ++set) {
        row_case c;
        c.tier = tier;
        c.num_classes = C;
        c.batch = tier == row_tier::warp ? 67 : 9;  // the warp tier: a partly filled last warp
        options(c, set);
        if (tier_accepts(c, dtype)) expect_matches_reference(c, dtype);
      }
    }
  }
}

// A forced tier that cannot hold the problem is refused before anything runs, and writes nothing.
TYPED_TEST(RowKernels, ForcedTierRefusals) {
  const fusedloss_dtype dtype = TestFixture::dtype;
  const int64_t capacity = dtype == FUSEDLOSS_FLOAT32 ? 512 : 1024;
  expect_refused(
      sized_problem(dtype, capacity + 1, 1, loss_kind::cross_entropy, false, row_tier::warp));
  expect_refused(
      sized_problem(dtype, int64_t{1} << 21, 1, loss_kind::cross_entropy, false, row_tier::block));
  expect_refused(sized_problem(dtype, int64_t{1} << 24, 1, loss_kind::cross_entropy, false,
                               row_tier::cluster));
  for (row_tier tier : {row_tier::warp, row_tier::block, row_tier::cluster}) {
    expect_refused(sized_problem(dtype, 33, 1, loss_kind::probability, false, tier));
  }
  for (row_tier tier : {row_tier::block, row_tier::cluster}) {
    // The workspace query sizes the fused call, which the tier holds: only the call is refused.
    expect_refused(sized_problem(dtype, 33, 1, loss_kind::cross_entropy, true, tier), false);
  }
  for (row_tier tier : {row_tier::warp, row_tier::block, row_tier::cluster}) {
    expect_refused(sized_problem(dtype, 33, 2, loss_kind::cross_entropy, false, tier));
  }
  if (!clusters_available()) {
    expect_refused(sized_problem(dtype, 33, 1, loss_kind::cross_entropy, false, row_tier::cluster));
  }

  // With real buffers: nothing is written.
  row_case c;
  c.num_classes = capacity + 1;
  c.batch = 2;
  c.tier = row_tier::warp;
  c.invalid = 0.5;
  std::mt19937_64 rng(fresh_seed());
  const inputs in = make_inputs(c, dtype, rng);
  device_arrays dev(c, in, dtype);
  dev.poison(c, in);
  const auto before = raw(dev);
  EXPECT_EQ(kernels::run_row_loss(make_problem(c, dtype, dev.bind(c)), nullptr, 0, nullptr),
            cudaErrorInvalidValue);
  FUSEDLOSS_CUDA_OK(cudaDeviceSynchronize());
  EXPECT_EQ(raw(dev), before);
  EXPECT_EQ(dev.download(c, dtype, nullptr).counter, kCounterStart);
}

// The largest row a block stages takes the block tier; one vector more does not.
TYPED_TEST(RowKernels, BlockTierEdge) {
  const fusedloss_dtype dtype = TestFixture::dtype;
  const device_facts f = facts();
  const auto es = static_cast<int64_t>(element_bytes(dtype));
  const int64_t vector = 16 / es;
  const int64_t largest = (f.shared_optin - 8192) / es / vector * vector;
  EXPECT_EQ(automatic_tier(sized_problem(dtype, largest)), row_tier::block);
  EXPECT_NE(automatic_tier(sized_problem(dtype, largest + vector)), row_tier::block);
  for (int64_t C : {largest, largest + vector}) {
    row_case c;
    c.num_classes = C;
    c.batch = 2;
    c.weight = true;
    c.label_smoothing = 0.1;
    expect_matches_reference(c, dtype);
  }
}

}  // namespace
}  // namespace fusedloss::gpu_tests::row_kernels
