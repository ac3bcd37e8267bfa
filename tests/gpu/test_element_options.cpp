// The element-loss kernels' options (BCE's weights, pos_weight and targets, sigmoid focal's alpha
// and gamma), every call with its gradient scales, and infinite and NaN logits.
#include <gtest/gtest.h>

#include <cmath>
#include <cstdint>
#include <random>
#include <vector>

#include "checks.hpp"
#include "element_kernels_harness.hpp"

namespace fusedloss::gpu_tests::element_kernels {
namespace {

TYPED_TEST(ElementKernels, EveryBceOption) {
  for (int layout = 0; layout < 3; ++layout) {  // no weight, per element, per class
    for (bool pos_weight : {false, true}) {
      for (bool hard : {false, true}) {
        for (bool float32_targets : {false, true}) {
          element_case c;
          c.numel = 7 * 613;
          c.num_classes = 7;
          c.weight = layout > 0;
          c.weight_per_class = layout == 2;
          c.pos_weight = pos_weight;
          c.hard_targets = hard;
          c.float32_targets = float32_targets;
          c.reduction = hard ? FUSEDLOSS_REDUCTION_SUM : FUSEDLOSS_REDUCTION_NONE;
          expect_matches_reference(c, TestFixture::dtype);
        }
      }
    }
  }
}

TYPED_TEST(ElementKernels, EverySigmoidFocalOption) {
  // 2: its own loop; 0, 1, 3, 15: the integer loop; 0.5, 3.5, 16: powf.
  for (double gamma : {0.0, 0.5, 1.0, 2.0, 3.0, 3.5, 15.0, 16.0}) {
    for (double alpha : {0.25, -1.0, 1.5}) {
      for (bool hard : {false, true}) {
        element_case c;
        c.kind = loss_kind::sigmoid_focal;
        c.gamma = gamma;
        c.alpha = alpha;
        c.hard_targets = hard;
        c.reduction = FUSEDLOSS_REDUCTION_NONE;
        expect_matches_reference(c, TestFixture::dtype);
      }
    }
  }
  // Saturated logits with gamma in (0, 1): finite on both sides (torchvision gives NaN).
  element_case saturated;
  saturated.kind = loss_kind::sigmoid_focal;
  saturated.gamma = 0.5;
  saturated.hard_targets = true;
  saturated.logit_range = 100.0;
  saturated.reduction = FUSEDLOSS_REDUCTION_NONE;
  expect_matches_reference(saturated, TestFixture::dtype);
}

TYPED_TEST(ElementKernels, EveryCall) {
  for (loss_kind kind : kKinds) {
    for (fusedloss_reduction reduction : kReductions) {
      for (fusedloss::call call : {fusedloss::call::forward, fusedloss::call::backward}) {
        element_case c;
        c.kind = kind;
        c.reduction = reduction;
        c.call = call;
        expect_matches_reference(c, TestFixture::dtype);
      }
      element_case scaled;  // the fused call's gradient scale, host and device parts
      scaled.kind = kind;
      scaled.reduction = reduction;
      scaled.grad_scale = 0.75f;
      scaled.grad_scale_ptr = true;
      expect_matches_reference(scaled, TestFixture::dtype);
    }
  }
}

TYPED_TEST(ElementKernels, InfinitiesAndNaN) {
  const fusedloss_dtype dtype = TestFixture::dtype;
  // BCE's rule: x = -inf with y = 0 and x = +inf with y = 1 give loss 0, gradient 0.
  const std::vector<double> x = {-INFINITY, INFINITY, INFINITY, -INFINITY, NAN, 1e4, -1e4, 0.0};
  const std::vector<double> y = {0, 1, 0, 1, 1, 0, 1, 0.5};
  for (loss_kind kind : kKinds) {
    for (double gamma : {0.5, 0.0, 2.0, 3.0}) {  // sigmoid focal's three loops
      if (kind != loss_kind::sigmoid_focal && gamma != 0.5) continue;
      element_case c;
      c.kind = kind;
      c.gamma = gamma;
      expect_matches_reference_on(c, dtype, x, y);
    }
  }
}

}  // namespace
}  // namespace fusedloss::gpu_tests::element_kernels
