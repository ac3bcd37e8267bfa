// Vocabulary-parallel cross-entropy's shard calls on the GPU at their edges: NaN and infinite
// logits, invalid targets, every row ignored, zero rows, and a workspace too small.
#include <cuda_runtime_api.h>
#include <gtest/gtest.h>

#include <cmath>
#include <cstdint>
#include <cstring>
#include <random>

#include "checks.hpp"
#include "fusedloss/fusedloss.h"
#include "vocab_parallel_harness.hpp"

namespace fusedloss::gpu_tests::vocab_parallel {
namespace {

// NaN, +inf and -inf logits: the NaN reaches every rank through the MAX all-reduce, an all -inf
// shard adds nothing (its zero sum stays zero when rescaled), a -inf target makes the loss +inf.
TYPED_TEST(VocabParallelKernels, NonFiniteLogits) {
  FUSEDLOSS_REQUIRE_GPU_OR_SKIP();
  uint64_t seed = 250;
  for (const int options : {0, 1, 2}) {
    vp_case c;
    c.widths = {11, 1, 25};
    c.reduction = FUSEDLOSS_REDUCTION_NONE;
    c.non_finite = true;
    c.z_loss_out = true;
    if (options == 1) {
      c.weight = true;
      c.label_smoothing = 0.1;
      c.z_loss = 1e-3;
    } else if (options == 2) {
      c.softcap = 5.0;
    }
    check_case(c, TypeParam::value, seed++);
  }
}

// Out-of-range targets: ignored like ignore_index, and counted by the vocab_start == 0 rank only.
TYPED_TEST(VocabParallelKernels, InvalidTargetsCountedOnce) {
  FUSEDLOSS_REQUIRE_GPU_OR_SKIP();
  uint64_t seed = 400;
  for (const fusedloss_dtype index : {FUSEDLOSS_INT32, FUSEDLOSS_INT64}) {
    for (const fusedloss_reduction reduction : kReductions) {
      vp_case c;
      c.batch = 24;
      c.widths = {10, 1, 7, 12};
      c.index_dtype = index;
      c.reduction = reduction;
      c.invalid = 0.3;
      c.ignored = 0.2;
      c.weight = true;
      c.label_smoothing = 0.1;
      check_case(c, TypeParam::value, seed++);
    }
  }
}

// Every row ignored: the mean is the empty-mean value (written, not left alone) and every gradient
// exactly 0; the sum is 0.
TYPED_TEST(VocabParallelKernels, EveryRowIgnored) {
  FUSEDLOSS_REQUIRE_GPU_OR_SKIP();
  uint64_t seed = 500;
  for (const fusedloss_reduction reduction : kReductions) {
    for (const auto policy : {FUSEDLOSS_EMPTY_MEAN_NAN, FUSEDLOSS_EMPTY_MEAN_ZERO}) {
      vp_case c;
      c.widths = {6, 9};
      c.reduction = reduction;
      c.empty_mean = policy;
      c.ignored = 1.0;
      c.z_loss = 1e-3;
      c.z_loss_out = true;
      SCOPED_TRACE(c.describe());
      check_case(c, TypeParam::value, seed);
      std::mt19937_64 rng(seed++);
      const inputs in = make_inputs(c, TypeParam::value, rng);
      const shard_run gpu = run_shards(c, in, TypeParam::value, true);
      ASSERT_TRUE(gpu.failure.empty()) << gpu.failure;
      for (int k = 0; k < c.ranks(); ++k) {
        const rank_outputs& o = gpu.ranks[static_cast<size_t>(k)];
        for (const double g : rows_of(c, o.grad, k)) ASSERT_EQ(g, 0.0) << "rank " << k;
        if (reduction == FUSEDLOSS_REDUCTION_NONE) continue;
        const bool nan =
            reduction == FUSEDLOSS_REDUCTION_MEAN && policy == FUSEDLOSS_EMPTY_MEAN_NAN;
        // A NaN the kernel wrote, not the poison's.
        float loss = 0, z = 0;
        std::memcpy(&loss, o.loss.data(), sizeof loss);
        std::memcpy(&z, o.z.data(), sizeof z);
        const buffer poison = buffer::poisoned(FUSEDLOSS_FLOAT32, 1);
        EXPECT_NE(std::memcmp(o.loss.data(), poison.data(), sizeof loss), 0);
        EXPECT_NE(std::memcmp(o.z.data(), poison.data(), sizeof z), 0);
        if (nan) {
          EXPECT_TRUE(std::isnan(loss) && std::isnan(z));
        } else {
          EXPECT_EQ(loss, 0.0f);
          EXPECT_EQ(z, 0.0f);
        }
      }
    }
  }
}

// Zero rows: every step succeeds and launches nothing that writes a row, and a reduced loss is
// still written (a sum of 0, a mean of the empty-mean value).
TYPED_TEST(VocabParallelKernels, ZeroRows) {
  FUSEDLOSS_REQUIRE_GPU_OR_SKIP();
  for (const fusedloss_reduction reduction : kReductions) {
    for (const auto policy : {FUSEDLOSS_EMPTY_MEAN_NAN, FUSEDLOSS_EMPTY_MEAN_ZERO}) {
      vp_case c;
      c.batch = 0;
      c.widths = {3, 4};
      c.reduction = reduction;
      c.empty_mean = policy;
      c.z_loss = 1e-3;
      c.z_loss_out = true;
      SCOPED_TRACE(c.describe());
      std::mt19937_64 rng(600);
      const inputs in = make_inputs(c, TypeParam::value, rng);
      const shard_run gpu = run_shards(c, in, TypeParam::value, true);
      ASSERT_TRUE(gpu.failure.empty()) << gpu.failure;
      const shard_run cpu = run_shards(c, in, TypeParam::value, false);
      ASSERT_TRUE(cpu.failure.empty()) << cpu.failure;
      if (reduction == FUSEDLOSS_REDUCTION_NONE) continue;
      for (size_t k = 0; k < gpu.ranks.size(); ++k) {
        for (const auto* pair : {&gpu.ranks[k].loss, &gpu.ranks[k].z}) {
          const buffer poison = buffer::poisoned(FUSEDLOSS_FLOAT32, 1);
          EXPECT_NE(std::memcmp(pair->data(), poison.data(), 4), 0) << "not written";
        }
        expect_close(gpu.ranks[k].loss.values(), cpu.ranks[k].loss.values(), {0, 0}, "loss");
        expect_close(gpu.ranks[k].z.values(), cpu.ranks[k].z.values(), {0, 0}, "z_loss");
      }
    }
  }
}

// A workspace smaller than the query says (or none) is refused by every step, nothing written.
TYPED_TEST(VocabParallelKernels, WorkspaceTooSmallIsRefused) {
  FUSEDLOSS_REQUIRE_GPU_OR_SKIP();
  const fusedloss_dtype dtype = TypeParam::value;
  const int64_t N = 8, C = 16;
  std::mt19937_64 rng(700);
  const buffer logits(dtype, checks::uniform(rng, N * C, -6.0, 6.0));
  const buffer targets(FUSEDLOSS_INT64, checks::class_indices(rng, N, C));
  const buffer summary = buffer::poisoned(FUSEDLOSS_FLOAT32, kFields * N);
  const buffer rows = buffer::poisoned(FUSEDLOSS_FLOAT32, N);
  const buffer grad = buffer::poisoned(dtype, N * C);
  device_buffer d_logits(logits), d_targets(targets), d_summary(summary), d_loss(rows), d_lse(rows),
      d_grad(grad);
  for (const fusedloss_reduction reduction : {FUSEDLOSS_REDUCTION_MEAN, FUSEDLOSS_REDUCTION_SUM}) {
    fusedloss_cross_entropy_shard_params p;
    fusedloss_cross_entropy_shard_params_init(&p);
    p.device = FUSEDLOSS_DEVICE_CUDA;
    p.batch = N;
    p.num_classes = C;
    p.vocab_start = 0;
    p.vocab_size = C;
    p.logits = d_logits.data();
    p.logits_dtype = dtype;
    p.targets = d_targets.data();
    p.targets_dtype = FUSEDLOSS_INT64;
    p.reduction = reduction;
    p.summary = d_summary.data();
    p.loss = d_loss.data();
    p.lse = d_lse.data();
    p.grad_logits = d_grad.data();
    size_t bytes = 0;
    ASSERT_EQ(fusedloss_cross_entropy_shard_workspace_size(&p, &bytes, nullptr), FUSEDLOSS_SUCCESS);
    ASSERT_GT(bytes, 8u);
    device_buffer workspace(bytes);
    for (const auto fn :
         {fusedloss_cross_entropy_shard_partial, fusedloss_cross_entropy_shard_rescale,
          fusedloss_cross_entropy_shard_finish}) {
      fusedloss_error err{};
      EXPECT_EQ(fn(&p, workspace.data(), bytes - 8, nullptr, &err), FUSEDLOSS_INVALID_ARGUMENT);
      EXPECT_EQ(fn(&p, nullptr, 0, nullptr, &err), FUSEDLOSS_INVALID_ARGUMENT);
    }
    FUSEDLOSS_CUDA_OK(cudaDeviceSynchronize());
    EXPECT_EQ(d_summary.raw(), device_buffer(summary).raw()) << "summary written";
    EXPECT_EQ(d_loss.raw(), device_buffer(rows).raw()) << "loss written";
    EXPECT_EQ(d_lse.raw(), device_buffer(rows).raw()) << "lse written";
    EXPECT_EQ(d_grad.raw(), device_buffer(grad).raw()) << "gradient written";
  }
}

}  // namespace
}  // namespace fusedloss::gpu_tests::vocab_parallel
