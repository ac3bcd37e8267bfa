// The row kernels on many rows: more than each tier's grid holds, so that its loop over rows turns,
// and two runs bitwise identical with sums over many blocks' partials. Slow tests (the
// fusedloss_gpu_slow_tests executable).
#include <gtest/gtest.h>

#include <cstdint>
#include <random>
#include <string>
#include <vector>

#include "row_kernels_harness.hpp"

namespace fusedloss::gpu_tests::row_kernels {
namespace {

// More rows than each tier's grid holds, so that its loop over rows turns (and the rows it
// reaches second are checked): grids as row_losses.cu's make_plan sizes them. Rows in the middle
// are ignored with cheap logits, which keeps the reference's work to a few hundred rows.
TYPED_TEST(RowKernels, LargeGridStrideLoops) {
  const fusedloss_dtype dtype = TestFixture::dtype;
  const device_facts f = facts();
  const auto es = static_cast<int64_t>(element_bytes(dtype));
  std::vector<row_case> cases;
  {  // warp, one lane a row (C = 2): sms * 8 blocks of 8 warps of 32 rows; the mean's prepass
     // (sms * 2 blocks of 256 rows) turns too
    row_case c;
    c.num_classes = 2;
    c.batch = fusedloss::gpu_tests::scaled_size(int64_t{f.sms} * 8 * 8 * 32 + 37);
    c.tier = row_tier::warp;
    c.ignored = 0.1;
    c.invalid = 0.01;
    cases.push_back(c);
  }
  {  // warp, 32 lanes a row (C = 257): sms * 8 blocks of 8 rows
    row_case c;
    c.num_classes = 257;
    c.batch = fusedloss::gpu_tests::scaled_size(int64_t{f.sms} * 8 * 8 + 37);
    c.tier = row_tier::warp;
    c.reduction = FUSEDLOSS_REDUCTION_SUM;
    c.label_smoothing = 0.1;
    c.sparse_begin = 64;
    c.sparse_end = c.batch - 200;
    cases.push_back(c);
  }
  {  // block: a row over half the block's shared memory, one block an SM
    row_case c;
    c.num_classes = (f.shared_optin - 8192) / (2 * es) + 64;
    c.batch = f.sms + 37;
    c.tier = row_tier::block;
    c.lse_out = false;  // the reference then skips the ignored rows
    c.sparse_begin = 4;
    c.sparse_end = c.batch - 45;
    cases.push_back(c);
  }
  {  // cluster of 2 blocks (C = 4097): sms / 2 clusters
    row_case c;
    c.num_classes = 4097;
    c.batch = f.sms / 2 + 37;
    c.tier = row_tier::cluster;
    c.reduction = FUSEDLOSS_REDUCTION_SUM;
    cases.push_back(c);
  }
  {  // two_pass: sms * 4 blocks
    row_case c;
    c.num_classes = 33;
    c.batch = int64_t{f.sms} * 4 + 37;
    c.tier = row_tier::two_pass;
    c.weight = true;
    cases.push_back(c);
  }
  {  // spatial: sms * 8 blocks of 256 rows
    row_case c;
    c.num_classes = 2;
    c.batch = 2;
    c.spatial = fusedloss::gpu_tests::scaled_size(int64_t{f.sms} * 8 * 256 / 2 + 37);
    c.label_smoothing = 0.1;
    cases.push_back(c);
  }
  for (const row_case& c : cases) expect_matches_reference(c, dtype);
}

// Two runs of the same call give the same bits (no floating-point atomics), on every tier, with
// sums over many blocks' partials.
TYPED_TEST(RowKernels, LargeRunsAreBitwiseIdentical) {
  const fusedloss_dtype dtype = TestFixture::dtype;
  const auto make = [](int64_t C, int64_t N, int64_t S, row_tier tier,
                       fusedloss_reduction reduction) {
    row_case c;
    c.num_classes = C;
    c.batch = N;
    c.spatial = S;
    c.tier = tier;
    c.reduction = reduction;
    c.ignored = 0.1;
    c.invalid = 0.01;
    c.label_smoothing = 0.1;
    c.weight = true;
    c.z_loss = 1e-4;
    c.z_loss_out = true;
    return c;
  };
  const auto n = [](int64_t rows) { return fusedloss::gpu_tests::scaled_size(rows); };
  std::vector<row_case> cases = {
      make(500, n(4096), 1, row_tier::automatic, FUSEDLOSS_REDUCTION_SUM),  // warp
      make(32000, 64, 1, row_tier::automatic, FUSEDLOSS_REDUCTION_MEAN),    // block
      make(4097, 300, 1, row_tier::cluster, FUSEDLOSS_REDUCTION_SUM),
      make(33, n(4096), 1, row_tier::two_pass, FUSEDLOSS_REDUCTION_MEAN),
      make(33, 64, 300, row_tier::spatial, FUSEDLOSS_REDUCTION_SUM),
      make(500, 64, 1, row_tier::automatic, FUSEDLOSS_REDUCTION_NONE)};  // warp, per row
  cases.back().kind = loss_kind::softmax_focal;
  row_case probability = make(1000, 256, 1, row_tier::automatic, FUSEDLOSS_REDUCTION_MEAN);
  probability.kind = loss_kind::probability;
  cases.push_back(probability);
  for (const row_case& c : cases) {
    if (c.tier == row_tier::cluster && !clusters_available()) continue;
    const uint64_t seed = fresh_seed();
    SCOPED_TRACE("seed " + std::to_string(seed) + ": " + c.describe());
    std::mt19937_64 rng(seed);
    const inputs in = make_inputs(c, dtype, rng);
    device_arrays dev(c, in, dtype);
    const bound b = dev.bind(c);
    size_t bytes = 0;
    ASSERT_TRUE(gpu_workspace_bytes(c, dtype, b, &bytes));
    device_buffer workspace(bytes);
    std::vector<std::vector<unsigned char>> first;
    for (int run = 0; run < 2; ++run) {
      dev.poison(c, in);
      ASSERT_TRUE(launch(c, dtype, b, workspace.data(), bytes, nullptr));
      FUSEDLOSS_CUDA_OK(cudaDeviceSynchronize());
      if (run == 0) {
        first = raw(dev);
      } else {
        EXPECT_EQ(raw(dev), first) << "two runs differ";
      }
    }
  }
}

}  // namespace
}  // namespace fusedloss::gpu_tests::row_kernels
