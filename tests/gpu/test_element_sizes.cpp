// The element-loss kernels at the sizes around their chunks (0, 1, 7, 4095, 4097, 2^20 + 3), the
// mean over nothing, misaligned starts, the element-by-element path and the gradient in place.
#include <gtest/gtest.h>

#include <cstdint>

#include "element_kernels_harness.hpp"

namespace fusedloss::gpu_tests::element_kernels {
namespace {

TYPED_TEST(ElementKernels, SizesThatBreakKernels) {
  for (int64_t numel : {int64_t{0}, int64_t{1}, int64_t{7}, int64_t{4095}, int64_t{4097},
                        fusedloss::gpu_tests::scaled_size((int64_t{1} << 20) + 3)}) {
    for (loss_kind kind : kKinds) {
      for (fusedloss_reduction reduction : kReductions) {
        element_case c;
        c.kind = kind;
        c.numel = numel;
        c.reduction = reduction;
        expect_matches_reference(c, TestFixture::dtype);
      }
    }
  }
}

TYPED_TEST(ElementKernels, EmptyMeanPolicies) {
  for (loss_kind kind : kKinds) {
    for (auto policy : {FUSEDLOSS_EMPTY_MEAN_NAN, FUSEDLOSS_EMPTY_MEAN_ZERO}) {
      element_case c;
      c.kind = kind;
      c.numel = 0;
      c.empty_mean = policy;
      expect_matches_reference(c, TestFixture::dtype);
    }
  }
}

TYPED_TEST(ElementKernels, MisalignedStarts) {
  for (loss_kind kind : kKinds) {
    for (fusedloss_reduction reduction : kReductions) {
      for (bool float32_targets : {false, true}) {
        element_case c;
        c.kind = kind;
        c.reduction = reduction;
        c.offset = 1;
        c.float32_targets = float32_targets;
        c.weight = kind == loss_kind::bce;
        expect_matches_reference(c, TestFixture::dtype);
      }
    }
  }
}

// Off the vector path (the gradient misaligned against the logits: every element one at a time)
// and in place (the gradient over the logits), for every loss.
TYPED_TEST(ElementKernels, ScalarPathAndInPlace) {
  for (loss_kind kind : kKinds) {
    for (int mode = 0; mode < 2; ++mode) {
      element_case c;
      c.kind = kind;
      c.numel = 4097;
      c.reduction = FUSEDLOSS_REDUCTION_SUM;
      c.weight = kind == loss_kind::bce;
      c.grad_shifted = mode == 0;
      c.in_place = mode == 1;
      expect_matches_reference(c, TestFixture::dtype);
    }
  }
}

}  // namespace
}  // namespace fusedloss::gpu_tests::element_kernels
