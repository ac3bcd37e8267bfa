// The element losses' edge cases and deliberate differences: no elements, one element, large,
// infinite and NaN logits, a zero weight under an infinite softplus, and sigmoid focal with gamma
// in (0, 1) at saturation.
#include <cmath>
#include <ostream>
#include <string>
#include <vector>

#include "support.hpp"

namespace element_loss_tests {
namespace {

struct empty_case {
  loss_config loss;
  fusedloss_reduction reduction;
  fusedloss_empty_mean policy;
  call c;
};

void PrintTo(const empty_case& c, std::ostream* os) {
  *os << names::join({name_of(c.loss), name_of(c.reduction),
                      c.policy == FUSEDLOSS_EMPTY_MEAN_NAN ? "emptymean_nan" : "emptymean_zero",
                      fusedloss::name(c.c)});
}

std::vector<empty_case> empty_cases() {
  std::vector<empty_case> cases;
  for (const loss_config loss : all_losses) {
    for (const auto r : reductions) {
      for (const auto policy : {FUSEDLOSS_EMPTY_MEAN_NAN, FUSEDLOSS_EMPTY_MEAN_ZERO}) {
        for (const auto o : all_calls) cases.push_back({loss, r, policy, o});
      }
    }
  }
  return cases;
}

// M = 0: none writes nothing, sum is 0, mean follows the empty-mean policy; no gradient exists,
// so none is written. One-element buffers holding 42 show whether anything was written.
class EmptyInput : public ::testing::TestWithParam<empty_case> {};

TEST_P(EmptyInput, WritesOnlyTheReducedLoss) {
  const empty_case& c = GetParam();
  const fusedloss_reduction r = c.reduction;
  const fusedloss_empty_mean policy = c.policy;
  const call o = c.c;
  const std::vector<double> sentinel = {42.0};
  with_params_of(c.loss, [&](auto p) {
    const buffer logits(f32, sentinel), targets(f32, sentinel), upstream(f32, sentinel);
    buffer loss(f32, sentinel), grad(f32, sentinel);
    p.device = FUSEDLOSS_DEVICE_CPU;
    p.numel = 0;
    p.logits = logits.data();
    p.logits_dtype = f32;
    p.targets = targets.data();
    p.targets_dtype = f32;
    p.reduction = r;
    p.empty_mean = policy;
    p.loss = o == call::backward ? nullptr : loss.data();
    p.grad_logits = o == call::forward ? nullptr : grad.data();
    p.grad_loss = o == call::backward ? upstream.data() : nullptr;
    fusedloss::run(p, o);
    EXPECT_EQ(grad[0], 42.0);
    if (o == call::backward || r == none) {
      EXPECT_EQ(loss[0], 42.0);
    } else if (r == sum || policy == FUSEDLOSS_EMPTY_MEAN_ZERO) {
      EXPECT_TRUE(same_bits(loss[0], 0.0)) << loss[0];
    } else {
      EXPECT_TRUE(std::isnan(loss[0])) << loss[0];
    }
  });
}

INSTANTIATE_TEST_SUITE_P(ElementLossEdges, EmptyInput, ::testing::ValuesIn(empty_cases()),
                         names::by_name{});

struct single_element_case {
  fusedloss_reduction reduction;
  fusedloss_dtype dtype;
};

void PrintTo(const single_element_case& c, std::ostream* os) {
  *os << names::join({name_of(c.reduction), name_of(c.dtype)});
}

std::vector<single_element_case> single_element_cases() {
  std::vector<single_element_case> cases;
  for (const auto r : reductions) {
    for (const auto dtype : {f64, f32}) cases.push_back({r, dtype});
  }
  return cases;
}

// M = 1: every reduction gives the element's loss, and every upstream form the same gradient.
// BCE at x = 0, y = 1: log 2, grad -1/2. Focal (0.25, 2) there: log 2 / 16, grad (-1/2 - log 2) /
// 16 (see SigmoidFocalByHand). MSE at x = 3, y = 1: 4, grad 4.
class SingleElement : public ::testing::TestWithParam<single_element_case> {};

TEST_P(SingleElement, IsItsOwnReduction) {
  const auto [r, dtype] = GetParam();
  const double log2 = std::log(2.0);
  const tolerance tol = checks::rounding_tolerance(dtype);
  const auto bce = call_loss(bce_params(r), call::forward_backward, {0}, dtype, {1}, dtype);
  expect_all_accepted(bce.loss, {log2}, tol, "bce loss");
  expect_all_accepted(bce.grad, {-0.5}, tol, "bce grad");
  const auto focal =
      call_loss(focal_params(0.25, 2.0, r), call::backward, {0}, dtype, {1}, dtype, {2});
  expect_all_accepted(focal.grad, {2 * (-0.5 - log2) / 16}, tol, "focal grad");
  const auto focal_loss =
      call_loss(focal_params(0.25, 2.0, r), call::forward, {0}, dtype, {1}, dtype);
  expect_all_accepted(focal_loss.loss, {log2 / 16}, tol, "focal loss");
  const auto mse = call_loss(mse_params(r), call::forward_backward, {3}, dtype, {1}, dtype);
  expect_all_accepted(mse.loss, {4}, tol, "mse loss");
  expect_all_accepted(mse.grad, {4}, tol, "mse grad");
}

INSTANTIATE_TEST_SUITE_P(ElementLossEdges, SingleElement,
                         ::testing::ValuesIn(single_element_cases()), names::by_name{});

// |x| = 1e4: exp(-1e4) underflows to 0 in double, so every softplus and sigmoid is exact.
// BCE: (1e4, 0): 1e4, grad 1; (-1e4, 0): 0, 0; (1e4, 1): 0, -sigma(-1e4) = -0; (-1e4, 1): 1e4,
// -1. Focal (0.25, 2): alpha_t (1 - p_t)^2 ce with 1 - p_t = 1 where wrong and 0 where right:
//   7500, grad 3/4; 0, 0; 0, 0; 2500, grad -1/4 (the gamma term has p_t = 0).
// Focal (0.25, 0.5): the same (1^0.5 = 1, 0^0.5 = 0).
// MSE against y: (1e4 - 0)^2 = 1e8, grad 2e4, and so on.
class LargeElementLogits : public ::testing::TestWithParam<fusedloss_dtype> {};

TEST_P(LargeElementLogits, AreExact) {
  const fusedloss_dtype dtype = GetParam();
  const std::vector<double> x = {1e4, -1e4, 1e4, -1e4}, y = {0, 0, 1, 1};
  const tolerance tol = checks::rounding_tolerance(f32);
  const auto bce = call_loss(bce_params(), call::forward_backward, x, dtype, y, dtype);
  expect_all_accepted(bce.loss, {1e4, 0, 0, 1e4}, tol, "bce loss");
  expect_all_accepted(bce.grad, {1, 0, 0, -1}, tol, "bce grad");
  for (const double gamma : {2.0, 0.5}) {
    SCOPED_TRACE("gamma " + show(gamma));
    const auto focal =
        call_loss(focal_params(0.25, gamma), call::forward_backward, x, dtype, y, dtype);
    expect_all_accepted(focal.loss, {7500, 0, 0, 2500}, tol, "focal loss");
    expect_all_accepted(focal.grad, {0.75, 0, 0, -0.25}, tol, "focal grad");
  }
  const auto mse = call_loss(mse_params(), call::forward, x, dtype, y, dtype);
  expect_all_accepted(mse.loss, {1e8, 1e8, (1e4 - 1) * (1e4 - 1), (1e4 + 1) * (1e4 + 1)}, tol,
                      "mse loss");
}

INSTANTIATE_TEST_SUITE_P(ElementLossEdges, LargeElementLogits, ::testing::Values(f64, f32, f16),
                         names::by_name{});

class InfiniteLogits : public ::testing::TestWithParam<fusedloss_dtype> {};

TEST_P(InfiniteLogits, FollowTheSemantics) {
  const fusedloss_dtype dtype = GetParam();
  // BCE. Wrong and infinitely sure: loss +inf, gradient +-1 (sigma saturates). Right and
  // infinitely sure: loss 0 and gradient 0 (deliberate difference 1: PyTorch gives NaN loss).
  // A soft target at +inf: 1/2 softplus(-inf) + 1/2 softplus(inf) = inf, grad 1/2 sigma(inf) =
  // 1/2.
  const std::vector<double> x = {inf, -inf, -inf, inf, inf}, y = {0, 1, 0, 1, 0.5};
  const auto bce = call_loss(bce_params(), call::forward_backward, x, dtype, y, dtype);
  expect_values(bce.loss, {inf, inf, 0, 0, inf}, "bce loss");
  expect_values(bce.grad, {1, -1, 0, 0, 0.5}, "bce grad");
  // With weight 1/2 and pos_weight 2 (C = 1) the zero-coefficient terms still vanish; the rest
  // scale: grad w = 1/2, -w pw = -1, 0, 0, w/2 = 1/4.
  const std::vector<float> weight = {0.5f, 0.5f, 0.5f, 0.5f, 0.5f}, pos_weight = {2.0f};
  auto weighted = bce_params();
  weighted.num_classes = 1;
  weighted.weight = weight.data();
  weighted.pos_weight = pos_weight.data();
  const auto wbce = call_loss(weighted, call::forward_backward, x, dtype, y, dtype);
  expect_values(wbce.loss, {inf, inf, 0, 0, inf}, "weighted bce loss");
  expect_values(wbce.grad, {0.5, -1, 0, 0, 0.25}, "weighted bce grad");
  // Exactly 0 whatever pos_weight: a tiny one must not leave 1 + (pw - 1) - pw = -pw behind.
  const std::vector<float> tiny_pos_weight = {1e-20f};
  auto tiny = bce_params();
  tiny.num_classes = 1;
  tiny.pos_weight = tiny_pos_weight.data();
  expect_bitwise_equal(call_loss(tiny, call::backward, {inf, -inf}, dtype, {1, 0}, dtype).grad,
                       {0, 0}, "bce grad with tiny pos_weight");
  // Under sum the two right-and-sure elements add 0, not NaN.
  const std::vector<double> right_x = {-inf, inf, 0}, right_y = {0, 1, 1};
  expect_all_accepted(
      call_loss(bce_params(sum), call::forward, right_x, dtype, right_y, dtype).loss,
      {std::log(2.0)}, checks::rounding_tolerance(checks::loss_dtype_of(dtype)),
      "bce sum of right-and-sure");

  // Sigmoid focal, hard targets. Right and sure: (1 - p_t)^gamma = 0 and ce = 0: loss 0, grad 0.
  // Wrong and sure: loss +inf; with gamma = 0 the gradient is alpha_t (p - y) = 3/4, -1/4; with
  // gamma > 0 SEMANTICS' formula in IEEE arithmetic has gamma p_t ce = 0 * inf: NaN.
  const std::vector<double> fx = {-inf, inf, inf, -inf}, fy = {0, 1, 0, 1};
  const auto focal0 =
      call_loss(focal_params(0.25, 0.0), call::forward_backward, fx, dtype, fy, dtype);
  expect_values(focal0.loss, {0, 0, inf, inf}, "focal gamma 0 loss");
  expect_values(focal0.grad, {0, 0, 0.75, -0.25}, "focal gamma 0 grad");
  for (const double gamma : {0.5, 2.0}) {
    SCOPED_TRACE("gamma " + show(gamma));
    const auto focal =
        call_loss(focal_params(0.25, gamma), call::forward_backward, fx, dtype, fy, dtype);
    expect_values(focal.loss, {0, 0, inf, inf}, "focal loss");
    expect_values(focal.grad, {0, 0, nan, nan}, "focal grad");
  }

  // MSE: (+-inf - 0)^2 = inf, grad +-inf.
  const auto mse =
      call_loss(mse_params(), call::forward_backward, {inf, -inf}, dtype, {0, 0}, dtype);
  expect_values(mse.loss, {inf, inf}, "mse loss");
  expect_values(mse.grad, {inf, -inf}, "mse grad");
}

INSTANTIATE_TEST_SUITE_P(ElementLossEdges, InfiniteLogits, ::testing::Values(f64, f32, bf16),
                         names::by_name{});

// Deliberate difference 6: a term's coefficient includes the weight (w pw y and w (1 - y)), so
// w = 0 gives loss 0 and gradient 0 even where its softplus is infinite (PyTorch: NaN loss):
// wrong and infinitely sure (-inf, 1) and (inf, 0), and soft targets at both infinities. The
// weighted neighbour keeps its value: w = 2, pw = 3, (1, 0): 2 softplus(1) = 2 log(1 + e), grad
// 2 sigma(1); (-1, 1): 2 * 3 softplus(1), grad -6 sigma(1).
class ZeroWeight : public ::testing::TestWithParam<fusedloss_dtype> {};

TEST_P(ZeroWeight, SilencesAnInfiniteSoftplus) {
  const fusedloss_dtype dtype = GetParam();
  const std::vector<double> x = {-inf, inf, -inf, inf, 1, -1}, y = {1, 0, 0.5, 0.5, 0, 1};
  const std::vector<float> weight = {0, 0, 0, 0, 2, 2}, pos_weight = {3};
  const double softplus1 = std::log1p(std::exp(1.0));
  const std::vector<double> loss = {0, 0, 0, 0, 2 * softplus1, 6 * softplus1};
  const std::vector<double> grad = {0, 0, 0, 0, 2 * sigmoid(1), -6 * sigmoid(1)};
  const tolerance tol = checks::rounding_tolerance(dtype);
  auto p = bce_params();
  p.num_classes = 1;
  p.weight = weight.data();
  p.pos_weight = pos_weight.data();
  const auto per_element = call_loss(p, call::forward_backward, x, dtype, y, dtype);
  expect_all_accepted(per_element.loss, loss,
                      checks::rounding_tolerance(checks::loss_dtype_of(dtype)), "loss");
  expect_all_accepted(per_element.grad, grad, tol, "grad");
  expect_bitwise_equal(call_loss(p, call::backward, x, dtype, y, dtype).grad,
                       {0, 0, 0, 0, per_element.grad[4], per_element.grad[5]}, "backward grad");

  // The same weights per class (C = 6, one row) give the same values; under sum the four
  // silenced elements add 0, not NaN.
  const std::vector<float> pos_weight_per_class(6, 3.0f);
  p.num_classes = 6;
  p.weight_layout = FUSEDLOSS_WEIGHT_PER_CLASS;
  p.pos_weight = pos_weight_per_class.data();
  expect_bitwise_equal(call_loss(p, call::forward, x, dtype, y, dtype).loss, per_element.loss,
                       "per-class loss");
  p.reduction = sum;
  expect_all_accepted(call_loss(p, call::forward, x, dtype, y, dtype).loss, {8 * softplus1},
                      checks::rounding_tolerance(checks::loss_dtype_of(dtype)), "sum");
}

INSTANTIATE_TEST_SUITE_P(ElementLossEdges, ZeroWeight, ::testing::Values(f64, f32, bf16),
                         names::by_name{});

struct nan_case {
  loss_config loss;
  fusedloss_dtype dtype;
};

void PrintTo(const nan_case& c, std::ostream* os) {
  *os << names::join({name_of(c.loss), name_of(c.dtype)});
}

std::vector<nan_case> nan_cases() {
  std::vector<nan_case> cases;
  for (const loss_config loss : all_losses) {
    for (const auto dtype : {f64, f32, f16}) cases.push_back({loss, dtype});
  }
  return cases;
}

// A NaN logit gives a NaN loss and gradient, whichever target (even where a zero coefficient
// would silence an infinite softplus), and a NaN sum and mean; its neighbours are unaffected.
class NanLogits : public ::testing::TestWithParam<nan_case> {};

TEST_P(NanLogits, GiveNanLossAndGradient) {
  const fusedloss_dtype dtype = GetParam().dtype;
  const std::vector<double> x = {nan, nan, 0, 0}, y = {0, 1, 1, 0};
  with_params_of(GetParam().loss, [&](auto p) {
    p.reduction = none;
    const auto r = call_loss(p, call::forward_backward, x, dtype, y, dtype);
    EXPECT_TRUE(std::isnan(r.loss[0]) && std::isnan(r.loss[1])) << r.loss[0] << " " << r.loss[1];
    EXPECT_TRUE(std::isnan(r.grad[0]) && std::isnan(r.grad[1])) << r.grad[0] << " " << r.grad[1];
    EXPECT_TRUE(std::isfinite(r.loss[2]) && std::isfinite(r.grad[2]));
    EXPECT_TRUE(std::isfinite(r.loss[3]) && std::isfinite(r.grad[3]));
    for (const auto reduced : {sum, mean}) {
      p.reduction = reduced;
      EXPECT_TRUE(std::isnan(call_loss(p, call::forward, x, dtype, y, dtype).loss[0]))
          << name_of(reduced);
    }
  });
}

INSTANTIATE_TEST_SUITE_P(ElementLossEdges, NanLogits, ::testing::ValuesIn(nan_cases()),
                         names::by_name{});

struct small_gamma_case {
  double gamma, alpha;
};

void PrintTo(const small_gamma_case& c, std::ostream* os) {
  *os << names::join(
      {"gamma" + names::number(c.gamma), c.alpha < 0 ? "" : "alpha" + names::number(c.alpha)});
}

std::vector<small_gamma_case> small_gamma_cases() {
  std::vector<small_gamma_case> cases;
  for (const double gamma : {0.1, 0.5, 0.9}) {
    for (const double alpha : {0.25, -1.0}) cases.push_back({gamma, alpha});
  }
  return cases;
}

// Deliberate difference 4: gamma in (0, 1) has (1 - p_t)^(gamma - 1), infinite where 1 - p_t
// rounds to 0 (torchvision returns NaN there); the hard-target form has no negative power and
// soft targets keep 1 - p_t between y and 1 - y.
class SigmoidFocalWithSmallGamma : public ::testing::TestWithParam<small_gamma_case> {};

TEST_P(SigmoidFocalWithSmallGamma, IsFinite) {
  const auto [gamma, alpha] = GetParam();
  std::vector<double> x, y;
  for (const double magnitude : {100.0, 1e4, 1e30}) {
    for (const double sign : {1.0, -1.0}) {
      for (const double target : {0.0, 1.0, 0.3}) {
        x.push_back(sign * magnitude);
        y.push_back(target);
      }
    }
  }
  const auto r = call_loss64(focal_params(alpha, gamma), call::forward_backward, x, y);
  for (size_t i = 0; i < x.size(); ++i) {
    EXPECT_TRUE(std::isfinite(r.loss[i]) && std::isfinite(r.grad[i]))
        << "x " << x[i] << ", y " << y[i] << ": loss " << r.loss[i] << ", grad " << r.grad[i];
  }
  // With hard targets the gradient keeps its sign, pointing toward the target.
  for (size_t i = 0; i < x.size(); ++i) {
    if (y[i] == 0) {
      EXPECT_GE(r.grad[i], 0.0) << "x " << x[i];
    } else if (y[i] == 1) {
      EXPECT_LE(r.grad[i], 0.0) << "x " << x[i];
    }
  }
}

INSTANTIATE_TEST_SUITE_P(ElementLossEdges, SigmoidFocalWithSmallGamma,
                         ::testing::ValuesIn(small_gamma_cases()), names::by_name{});

}  // namespace
}  // namespace element_loss_tests
