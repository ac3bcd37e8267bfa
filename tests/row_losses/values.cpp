// The row losses' values worked out by hand: cross-entropy with class-index and probability
// targets (weights, label smoothing, a saved LSE), softmax focal, the z-loss and the soft-cap.
#include <cmath>
#include <vector>

#include "support.hpp"

namespace row_loss_tests {
namespace {

// Two rows of logits [0, ln 3]: LSE = ln 4, p = [1/4, 3/4], lp = [-ln 4, -ln(4/3)].
ce_params two_by_two(const buffer& targets) {
  ce_params p = fusedloss::make_cross_entropy_params();
  p.batch = 2;
  p.num_classes = 2;
  p.logits_dtype = FUSEDLOSS_FLOAT64;
  p.targets = targets.data();
  p.targets_dtype = targets.dtype();
  return p;
}
const std::vector<double> kTwoRows = {0, kLn3, 0, kLn3};

TEST(RowLossValues, IndexCrossEntropy) {
  const buffer targets(FUSEDLOSS_INT64, {0, 1});
  ce_params p = two_by_two(targets);
  p.reduction = FUSEDLOSS_REDUCTION_NONE;
  // Row 0 (y = 0): -lp_0 = ln 4, gradient p - e_0 = [-3/4, 3/4]. Row 1 (y = 1): ln(4/3), [1/4,
  // -1/4].
  outputs o = call_loss(p, call::forward_backward, kTwoRows);
  expect_close(o.loss, {kLn4, std::log(4.0 / 3.0)}, kHand, "loss");
  expect_close(o.lse, {kLn4, kLn4}, kHand, "lse");
  expect_close(o.grad, {-0.75, 0.75, 0.25, -0.25}, kHand, "grad");

  // weight [2, 1]: mean = (2 ln 4 + ln(4/3)) / (2 + 1); its gradient is w_y (p - e_y) / 3.
  const std::vector<float> weight = {2, 1};
  p.weight = weight.data();
  p.reduction = FUSEDLOSS_REDUCTION_MEAN;
  o = call_loss(p, call::forward_backward, kTwoRows);
  expect_close(o.loss, {(2 * kLn4 + std::log(4.0 / 3.0)) / 3}, kHand, "weighted mean");
  expect_close(o.grad, {-0.5, 0.5, 0.25 / 3, -0.25 / 3}, kHand, "weighted mean grad");

  // eps = 0.1, C = 2: L_0 = 0.9 ln 4 + 0.05 (ln 4 + ln(4/3)); the gradient is p - q' with
  // q' = [0.95, 0.05] for row 0 and [0.05, 0.95] for row 1.
  p.weight = nullptr;
  p.label_smoothing = 0.1;
  p.reduction = FUSEDLOSS_REDUCTION_NONE;
  o = call_loss(p, call::forward_backward, kTwoRows);
  const double smooth = 0.05 * (kLn4 + std::log(4.0 / 3.0));
  expect_close(o.loss, {0.9 * kLn4 + smooth, 0.9 * std::log(4.0 / 3.0) + smooth}, kHand,
               "smoothed");
  expect_close(o.grad, {-0.7, 0.7, 0.2, -0.2}, kHand, "smoothed grad");

  // backward reads a given LSE instead of recomputing it: with LSE = ln 8 in place of ln 4, p reads
  // [1/8, 3/8], so row 0's gradient is [1/8 - 1, 3/8].
  p.label_smoothing = 0;
  o = call_loss(p, call::backward, kTwoRows, {1, 1}, {std::log(8.0), kLn4});
  expect_close(o.grad, {-0.875, 0.375, 0.25, -0.25}, kHand, "grad from a saved lse");

  // C = 3, x = [1, 2, 3], y = 2: L = log(e + e^2 + e^3) - 3 = log(1 + e^-1 + e^-2).
  const buffer three(FUSEDLOSS_INT32, {2});
  ce_params q = fusedloss::make_cross_entropy_params();
  q.batch = 1;
  q.num_classes = 3;
  q.logits_dtype = FUSEDLOSS_FLOAT64;
  q.targets = three.data();
  q.targets_dtype = FUSEDLOSS_INT32;
  q.reduction = FUSEDLOSS_REDUCTION_SUM;
  o = call_loss(q, call::forward, {1, 2, 3});
  expect_close(o.loss, {std::log1p(std::exp(-1.0) + std::exp(-2.0))}, kHand, "C = 3");
}

TEST(RowLossValues, ProbabilityCrossEntropy) {
  const buffer targets(FUSEDLOSS_FLOAT64, {0.5, 0.5, 0.5, 0.5});
  ce_params p = two_by_two(targets);
  p.reduction = FUSEDLOSS_REDUCTION_NONE;
  // q = [1/2, 1/2]: L = (ln 4 + ln(4/3)) / 2 = ln(16/3) / 2; gradient p - q = [-1/4, 1/4].
  outputs o = call_loss(p, call::forward_backward, kTwoRows);
  expect_close(o.loss, {0.5 * std::log(16.0 / 3.0), 0.5 * std::log(16.0 / 3.0)}, kHand, "loss");
  expect_close(o.grad, {-0.25, 0.25, -0.25, 0.25}, kHand, "grad");

  // weight [2, 1]: L = 2 (1/2) ln 4 + (1/2) ln(4/3); gradient p sum_c w_c q_c - w q
  // = [1/4 * 3/2 - 1, 3/4 * 3/2 - 1/2] = [-5/8, 5/8]; mean divides by the 2 rows, not by weights.
  const std::vector<float> weight = {2, 1};
  p.weight = weight.data();
  p.reduction = FUSEDLOSS_REDUCTION_MEAN;
  o = call_loss(p, call::forward_backward, kTwoRows);
  expect_close(o.loss, {kLn4 + 0.5 * std::log(4.0 / 3.0)}, kHand, "weighted mean");
  expect_close(o.grad, {-0.3125, 0.3125, -0.3125, 0.3125}, kHand, "weighted mean grad");

  // q = [1, 0] and eps = 0.2 smooth to q' = [0.9, 0.1]: L = 0.9 ln 4 + 0.1 ln(4/3), gradient p -
  // q'.
  const buffer one_hot(FUSEDLOSS_FLOAT64, {1, 0});
  ce_params q = two_by_two(one_hot);
  q.batch = 1;
  q.label_smoothing = 0.2;
  q.reduction = FUSEDLOSS_REDUCTION_SUM;
  o = call_loss(q, call::forward_backward, kTwoRows);
  expect_close(o.loss, {0.9 * kLn4 + 0.1 * std::log(4.0 / 3.0)}, kHand, "smoothed");
  expect_close(o.grad, {-0.65, 0.65}, kHand, "smoothed grad");
}

TEST(RowLossValues, SoftmaxFocal) {
  // x = [0, ln 3], y = 1: u = 3/4, lp = ln(3/4), m = 1/4. gamma = 2: L = -(1/4)^2 ln(3/4).
  // Gradient -m^2 (1 - 2 u lp / m) (e_1 - p) = -(1/16)(1 - 6 ln(3/4)) [-1/4, 1/4].
  // With alpha = [1, 1/2], both halve.
  const buffer targets(FUSEDLOSS_INT64, {1});
  focal_params p = fusedloss::make_softmax_focal_params();
  p.batch = 1;
  p.num_classes = 2;
  p.logits_dtype = FUSEDLOSS_FLOAT64;
  p.targets = targets.data();
  p.targets_dtype = FUSEDLOSS_INT64;
  p.gamma = 2;
  p.reduction = FUSEDLOSS_REDUCTION_SUM;
  const double loss = -std::log(0.75) / 16;
  const double g = (1 - 6 * std::log(0.75)) / 64;
  outputs o = call_loss(p, call::forward_backward, {0, kLn3});
  expect_close(o.loss, {loss}, kHand, "loss");
  expect_close(o.grad, {g, -g}, kHand, "grad");
  const std::vector<float> alpha = {1, 0.5};
  p.alpha = alpha.data();
  o = call_loss(p, call::forward_backward, {0, kLn3});
  expect_close(o.loss, {loss / 2}, kHand, "alpha loss");
  expect_close(o.grad, {g / 2, -g / 2}, kHand, "alpha grad");

  // A confident row: lp_y = 0 exactly (m = 0, r = -1 in the limit), so loss and gradient are 0.
  o = call_loss(p, call::forward_backward, {-800, 0});
  EXPECT_EQ(o.loss[0], 0.0);
  EXPECT_EQ(o.grad[0], 0.0);
  EXPECT_EQ(o.grad[1], 0.0);
}

// x = [0, ln 3], lambda = 0.1: row 0 (y = 0) adds 0.1 (ln 4)^2 and 0.2 ln 4 p to the gradient;
// row 1 is ignored and adds nothing, so mean divides both the loss and the z-loss by 1.
class ZLoss : public ::testing::TestWithParam<fusedloss_reduction> {};

TEST_P(ZLoss, ByHand) {
  const fusedloss_reduction reduction = GetParam();
  const buffer targets(FUSEDLOSS_INT64, {0, -100});
  ce_params p = two_by_two(targets);
  p.z_loss = 0.1;
  const double z = 0.1 * kLn4 * kLn4;
  p.reduction = reduction;
  const outputs o = call_loss(p, call::forward_backward, kTwoRows);
  if (reduction == FUSEDLOSS_REDUCTION_NONE) {
    expect_close(o.loss, {kLn4 + z, 0}, kHand, "loss");
    expect_close(o.z_loss, {z, 0}, kHand, "z-loss");
  } else {
    expect_close(o.loss, {kLn4 + z}, kHand, "loss");
    expect_close(o.z_loss, {z}, kHand, "z-loss");
  }
  expect_close(o.grad, {-0.75 + 0.2 * kLn4 * 0.25, 0.75 + 0.2 * kLn4 * 0.75, 0, 0}, kHand, "grad");
  expect_close(o.lse, {kLn4, kLn4}, kHand, "lse, the ignored row's too");
}

INSTANTIATE_TEST_SUITE_P(RowLossValues, ZLoss, ::testing::ValuesIn(kReductions), names::by_name{});

TEST(RowLossValues, SoftCap) {
  // s = ln 3 maps [0, +inf] to [0, ln 3]: loss ln 4 (y = 0), gradient [-3/4, 0] (the cap is flat
  // at infinity). s = 2 and x_1 = 2 atanh(ln 3 / 2) give the same capped row; the gradient of x_1
  // is 3/4 (1 - (ln 3 / 2)^2).
  const buffer targets(FUSEDLOSS_INT64, {0, 0});
  ce_params p = two_by_two(targets);
  p.reduction = FUSEDLOSS_REDUCTION_NONE;
  p.softcap = kLn3;
  p.batch = 1;
  outputs o = call_loss(p, call::forward_backward, {0, kInf});
  expect_close(o.loss, {kLn4}, kHand, "loss");
  expect_close(o.lse, {kLn4}, kHand, "lse after the cap");
  expect_close(o.grad, {-0.75, 0}, kHand, "grad");
  p.softcap = 2;
  o = call_loss(p, call::forward_backward, {0, 2 * std::atanh(kLn3 / 2)});
  expect_close(o.loss, {kLn4}, kHand, "loss");
  expect_close(o.grad, {-0.75, 0.75 * (1 - kLn3 * kLn3 / 4)}, kHand, "grad");
}

}  // namespace
}  // namespace row_loss_tests
