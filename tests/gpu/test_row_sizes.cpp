// The row-loss kernels through the public API at the sizes that decide a tier: the warp tier's
// edges, a block, LLM vocabularies.
#include <gtest/gtest.h>

#include <cstdint>

#include "row_kernels_harness.hpp"

namespace fusedloss::gpu_tests::row_kernels {
namespace {

// C from 1 to one past 4096 (the warp tier's edges, 1025 one past its 16-bit capacity, 4097 a
// block), N in {0, 1, 3, 4096} (4096 only up to C = 1000: the reference's cost), every reduction
// where N < 4096 and one a C in turn at 4096; ignored and out-of-range targets throughout, int32
// and int64 in turn.
TYPED_TEST(RowKernels, EverySmallSize) {
  int variant = 0;
  int size = 0;  // which C: picks the one reduction at N = 4096
  for (int64_t C : {1, 2, 31, 32, 33, 512, 513, 1000, 1024, 1025, 4097}) {
    const fusedloss_reduction at_4096 = kReductions[size++ % 3];
    for (int64_t N : {0, 1, 3, 4096}) {
      if (N == 4096 && C > 1000) continue;
      for (fusedloss_reduction reduction : kReductions) {
        if (N == 4096 && reduction != at_4096) continue;
        row_case c;
        c.num_classes = C;
        c.batch = N;
        c.reduction = reduction;
        c.ignored = 0.1;
        c.invalid = 0.05;
        c.index_dtype = variant % 2 == 0 ? FUSEDLOSS_INT64 : FUSEDLOSS_INT32;
        c.label_smoothing = variant % 3 == 1 ? 0.1 : 0.0;
        c.weight = variant % 4 == 2;
        ++variant;
        expect_matches_reference(c, TestFixture::dtype);
      }
    }
  }
}

// LLM vocabularies: block (30576, 32000, 50257), cluster on sm_90 or two_pass (128256, 256000).
TYPED_TEST(RowKernels, VocabSizes) {
  int variant = 0;
  for (int64_t C : {30576, 32000, 50257, 128256, 256000}) {
    for (int64_t N : {1, 3}) {
      row_case c;
      c.num_classes = C;
      c.batch = N;
      c.reduction = kReductions[variant % 3];
      c.ignored = N > 1 ? 0.2 : 0.0;
      c.label_smoothing = variant % 2 == 1 ? 0.1 : 0.0;
      c.weight = variant % 4 == 3;
      c.z_loss = variant % 4 == 2 ? 1e-4 : 0.0;
      c.z_loss_out = c.z_loss > 0;
      ++variant;
      expect_matches_reference(c, TestFixture::dtype);
    }
  }
}

}  // namespace
}  // namespace fusedloss::gpu_tests::row_kernels
