// The element losses' values worked out by hand: BCE with logits (weights per class and per
// element, pos_weight, soft targets, every reduction), sigmoid focal (hard and soft targets, alpha
// off and above 1) and MSE with its upstream gradients.
#include <cmath>
#include <vector>

#include "support.hpp"

namespace element_loss_tests {
namespace {

TEST(ElementLossValues, BceByHand) {
  // x = 0, y = 1:    softplus(0) = log 2;              grad sigma(0) - 1 = -1/2.
  // x = 2, y = 0:    softplus(2) = log(1 + e^2);       grad sigma(2).
  // x = -1, y = 1:   softplus(1) = log(1 + e);         grad sigma(-1) - 1 = -e/(1 + e).
  // x = 0, y = 1/4:  (1/4 + 3/4) log 2 = log 2;        grad 1/2 - 1/4 = 1/4.
  const std::vector<double> x = {0, 2, -1, 0}, y = {1, 0, 1, 0.25};
  const double e = std::exp(1.0);
  const std::vector<double> loss = {std::log(2.0), std::log1p(e * e), std::log1p(e), std::log(2.0)};
  const std::vector<double> grad = {-0.5, sigmoid(2), -e / (1 + e), 0.25};
  const auto got = call_loss64(bce_params(), call::forward_backward, x, y);
  expect_values(got.loss, loss, "loss");
  expect_values(got.grad, grad, "grad");

  // Per-class weight {2, 1/2} and pos_weight {3, 1}; element i is class i % 2.
  // i = 0 (w 2, pw 3):   2 * 3 log 2 = 6 log 2;        grad 2 [1/2 (1 + 2) - 3] = -3.
  // i = 1 (w 1/2, pw 1): log(1 + e^2) / 2;             grad sigma(2) / 2.
  // i = 2 (w 2, pw 3):   6 log(1 + e);                 grad 2 [3 sigma(-1) - 3] = -6e / (1 + e).
  // i = 3 (w 1/2, pw 1): log 2 / 2;                    grad 1/4 / 2 = 1/8.
  const std::vector<float> weight = {2.0f, 0.5f}, pos_weight = {3.0f, 1.0f};
  auto p = bce_params();
  p.num_classes = 2;
  p.weight = weight.data();
  p.weight_layout = FUSEDLOSS_WEIGHT_PER_CLASS;
  p.pos_weight = pos_weight.data();
  const std::vector<double> weighted_loss = {6 * std::log(2.0), std::log1p(e * e) / 2,
                                             6 * std::log1p(e), std::log(2.0) / 2};
  const std::vector<double> weighted_grad = {-3, sigmoid(2) / 2, -6 * e / (1 + e), 0.125};
  const auto weighted = call_loss64(p, call::forward_backward, x, y);
  expect_values(weighted.loss, weighted_loss, "weighted loss");
  expect_values(weighted.grad, weighted_grad, "weighted grad");

  // The same weights given per element give the same values.
  const std::vector<float> per_element = {2.0f, 0.5f, 2.0f, 0.5f};
  p.weight = per_element.data();
  p.weight_layout = FUSEDLOSS_WEIGHT_PER_ELEMENT;
  expect_values(call_loss64(p, call::forward, x, y).loss, weighted_loss,
                "per-element weighted loss");

  // sum adds the four; mean divides by M = 4 (weights never enter the normaliser).
  const double total =
      6 * std::log(2.0) + std::log1p(e * e) / 2 + 6 * std::log1p(e) + std::log(2.0) / 2;
  p.reduction = sum;
  expect_values(call_loss64(p, call::forward, x, y).loss, {total}, "sum");
  p.reduction = mean;
  expect_values(call_loss64(p, call::forward, x, y).loss, {total / 4}, "mean");
}

TEST(ElementLossValues, SigmoidFocalByHand) {
  // alpha 0.25, gamma 2, hard targets.
  // x = 0, y = 1: p = p_t = 1/2, 1 - p_t = 1/2, alpha_t = 1/4, ce = log 2:
  //   loss 1/4 * 1/4 * log 2 = log 2 / 16;
  //   grad alpha_t (1-p_t)^2 [(p - y) - (2y - 1) gamma p_t ce] = 1/16 [-1/2 - log 2].
  // x = 2, y = 0: alpha_t = 3/4, 1 - p_t = sigma(2), p_t = sigma(-2), ce = log(1 + e^2):
  //   loss 3/4 sigma(2)^2 log(1 + e^2); grad 3/4 sigma(2)^2 [sigma(2) + 2 sigma(-2) log(1 + e^2)].
  const double e = std::exp(1.0);
  const double s2 = sigmoid(2), ce2 = std::log1p(e * e);
  const auto hard = call_loss64(focal_params(0.25, 2.0), call::forward_backward, {0, 2}, {1, 0});
  expect_values(hard.loss, {std::log(2.0) / 16, 0.75 * s2 * s2 * ce2}, "hard loss");
  expect_values(hard.grad,
                {(-0.5 - std::log(2.0)) / 16, 0.75 * s2 * s2 * (s2 + 2 * sigmoid(-2) * ce2)},
                "hard grad");

  // alpha -1 (off), gamma 1, soft target y = 1/4 at x = 0: p = 1/2, 1 - p_t = 1/2 (3/4) + 1/2 (1/4)
  // = 1/2, ce = log 2: loss log 2 / 2;
  // grad (1-p_t)(p - y) - gamma (2y - 1) p (1 - p) ce = 1/2 * 1/4 + 1/2 * 1/4 * log 2
  //   = (1 + log 2) / 8.
  const auto soft = call_loss64(focal_params(-1.0, 1.0), call::forward_backward, {0}, {0.25});
  expect_values(soft.loss, {std::log(2.0) / 2}, "soft loss");
  expect_values(soft.grad, {(1 + std::log(2.0)) / 8}, "soft grad");

  // alpha 1.5 is computed as written: alpha_t = 1.5 for y = 1 and -0.5 for y = 0.
  // x = 0, gamma 0: loss alpha_t log 2, grad alpha_t (p - y) = 1.5 * -1/2 and -0.5 * 1/2.
  const auto big_alpha =
      call_loss64(focal_params(1.5, 0.0), call::forward_backward, {0, 0}, {1, 0});
  expect_values(big_alpha.loss, {1.5 * std::log(2.0), -0.5 * std::log(2.0)}, "alpha 1.5 loss");
  expect_values(big_alpha.grad, {-0.75, -0.25}, "alpha 1.5 grad");
}

TEST(ElementLossValues, MseByHand) {
  // (1 - 0)^2 = 1, (-2 - 1)^2 = 9, (1/2 - 1/2)^2 = 0; gradients 2, -6, 0. Sum 10, mean 10/3.
  const std::vector<double> x = {1, -2, 0.5}, y = {0, 1, 0.5};
  expect_values(call_loss64(mse_params(none), call::forward, x, y).loss, {1, 9, 0}, "none");
  expect_values(call_loss64(mse_params(sum), call::forward, x, y).loss, {10}, "sum");
  expect_values(call_loss64(mse_params(mean), call::forward, x, y).loss, {10.0 / 3}, "mean");
  // Upstream gradients: per element under none, one scalar under sum, the scalar / M under mean.
  expect_values(call_loss64(mse_params(none), call::backward, x, y, {1, 0.5, 2}).grad, {2, -3, 0},
                "none backward");
  expect_values(call_loss64(mse_params(sum), call::backward, x, y, {2}).grad, {4, -12, 0},
                "sum backward");
  expect_values(call_loss64(mse_params(mean), call::backward, x, y, {3}).grad, {2, -6, 0},
                "mean backward");
}

}  // namespace
}  // namespace element_loss_tests
