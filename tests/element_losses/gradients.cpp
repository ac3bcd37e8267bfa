// The element losses' gradients against central finite differences of their forward, for every
// option, target kind and reduction, one test each: backward with a random upstream, and
// forward_backward with a random gradient scale.
#include <ostream>
#include <vector>

#include "support.hpp"

namespace element_loss_tests {
namespace {

// The scalar whose gradient backward computes: the upstream-weighted total of the loss outputs
// (one upstream value per output, or one for all).
double weighted_total(const std::vector<double>& loss, const std::vector<double>& upstream) {
  double total = 0;
  for (size_t j = 0; j < loss.size(); ++j)
    total += upstream[upstream.size() == 1 ? 0 : j] * loss[j];
  return total;
}

// The central difference is off by h^2 f'''/6 (below 1e-11: h = 1e-6, and the losses' third
// derivatives are O(1) for the logits drawn here; none of these losses has a kink) plus the
// rounding of the two forward totals, about ulp(total) / 2h <= 1.4e-14 / 2e-6 = 7e-9 for the
// largest totals drawn here (|total| < 128). 1e-7 absolute plus 1e-6 relative leaves a tenfold
// margin (the suite fails at 1e-9) without hiding a wrong term (those are O(1e-2) or more).
constexpr double fd_step = 1e-6;
constexpr tolerance fd_tolerance{1e-7, 1e-6};

// Checks backward (random upstream, per element under none) and forward_backward (random grad_scale
// times *grad_scale_ptr) of `p` in float64 against central differences of its forward.
template <class Params>
void expect_gradients_match_fd(Params p, const std::vector<double>& x, const std::vector<double>& y,
                               std::mt19937_64& rng) {
  const auto fd_of = [&](const std::vector<double>& upstream) {
    const auto total = [&](const std::vector<double>& xs) {
      return weighted_total(call_loss64(p, call::forward, xs, y).loss, upstream);
    };
    return checks::finite_difference(total, x, fd_step);
  };

  const auto upstream = checks::uniform(rng, p.reduction == none ? x.size() : 1, -2.0, 2.0);
  expect_all_accepted(call_loss64(p, call::backward, x, y, upstream).grad, fd_of(upstream),
                      fd_tolerance, "backward");

  const auto scale = as_floats(checks::uniform(rng, 2, -2.0, 2.0));
  p.grad_scale = scale[0];
  p.grad_scale_ptr = &scale[1];
  const double fused = static_cast<double>(scale[0]) * scale[1];
  const auto fb = call_loss64(p, call::forward_backward, x, y);
  expect_all_accepted(fb.grad, fd_of({fused}), fd_tolerance, "forward_backward");
}

// ---- BCE ----------------------------------------------------------------------------------------

enum class weighting { absent, per_element, per_class };

struct bce_case {
  weighting weighted;
  bool with_pos_weight, soft_targets;
  fusedloss_reduction reduction;
};

void PrintTo(const bce_case& c, std::ostream* os) {
  *os << names::join({c.weighted == weighting::absent        ? ""
                      : c.weighted == weighting::per_element ? "weight_per_element"
                                                             : "weight_per_class",
                      c.with_pos_weight ? "pos_weight" : "", c.soft_targets ? "soft" : "hard",
                      name_of(c.reduction)});
}

std::vector<bce_case> bce_cases() {
  std::vector<bce_case> cases;
  for (const auto weighted : {weighting::absent, weighting::per_element, weighting::per_class}) {
    for (const bool with_pos_weight : {false, true}) {
      for (const bool soft_targets : {false, true}) {
        for (const auto r : reductions) {
          cases.push_back({weighted, with_pos_weight, soft_targets, r});
        }
      }
    }
  }
  return cases;
}

class BceGradients : public random_test<bce_case> {};

TEST_P(BceGradients, MatchFiniteDifferences) {
  const bce_case& param = GetParam();
  constexpr size_t m = 10;
  constexpr int64_t c = 5;  // two rows, so per-class vectors broadcast
  const auto x = checks::uniform(rng, m, -4.0, 4.0);
  const auto hard = hard_targets(rng, m);
  const auto soft = checks::uniform(rng, m, 0.0, 1.0);
  const auto per_element = as_floats(checks::uniform(rng, m, 0.5, 1.5));
  const auto per_class = as_floats(checks::uniform(rng, c, 0.5, 1.5));
  const auto pos_weight = as_floats(checks::uniform(rng, c, 0.5, 2.0));
  auto p = bce_params(param.reduction);
  p.num_classes = c;
  if (param.weighted == weighting::per_element) p.weight = per_element.data();
  if (param.weighted == weighting::per_class) {
    p.weight = per_class.data();
    p.weight_layout = FUSEDLOSS_WEIGHT_PER_CLASS;
  }
  if (param.with_pos_weight) p.pos_weight = pos_weight.data();
  expect_gradients_match_fd(p, x, param.soft_targets ? soft : hard, rng);
}

INSTANTIATE_TEST_SUITE_P(ElementLossRandom, BceGradients, ::testing::ValuesIn(bce_cases()),
                         names::by_name{});

// ---- Sigmoid focal ------------------------------------------------------------------------------

struct focal_case {
  double gamma, alpha;
  bool soft_targets;
  fusedloss_reduction reduction;
};

void PrintTo(const focal_case& c, std::ostream* os) {
  *os << names::join({"gamma" + names::number(c.gamma),
                      c.alpha < 0 ? "" : "alpha" + names::number(c.alpha),
                      c.soft_targets ? "soft" : "hard", name_of(c.reduction)});
}

std::vector<focal_case> focal_cases() {
  std::vector<focal_case> cases;
  for (const double gamma : {0.0, 0.5, 1.0, 2.0, 3.5}) {
    for (const double alpha : {0.25, -1.0, 1.5}) {
      for (const bool soft_targets : {false, true}) {
        for (const auto r : reductions) cases.push_back({gamma, alpha, soft_targets, r});
      }
    }
  }
  return cases;
}

class SigmoidFocalGradients : public random_test<focal_case> {};

TEST_P(SigmoidFocalGradients, MatchFiniteDifferences) {
  const focal_case& c = GetParam();
  constexpr size_t m = 10;
  const auto x = checks::uniform(rng, m, -4.0, 4.0);
  const auto hard = hard_targets(rng, m);
  const auto soft = checks::uniform(rng, m, 0.05, 0.95);
  expect_gradients_match_fd(focal_params(c.alpha, c.gamma, c.reduction), x,
                            c.soft_targets ? soft : hard, rng);
}

INSTANTIATE_TEST_SUITE_P(ElementLossRandom, SigmoidFocalGradients,
                         ::testing::ValuesIn(focal_cases()), names::by_name{});

// Saturated logits where torchvision's gamma-in-(0, 1) gradient is NaN: here finite and right.
// One element per call, so a tiny loss is not differenced against its large neighbours.
struct saturated_case {
  double gamma, x, y;
};

void PrintTo(const saturated_case& c, std::ostream* os) {
  *os << names::join(
      {"gamma" + names::number(c.gamma), "x" + names::number(c.x), "y" + names::number(c.y)});
}

std::vector<saturated_case> saturated_cases() {
  const std::vector<double> x = {100, -100, 100, -100, 30, -30, 100, -100};
  const std::vector<double> y = {1, 1, 0, 0, 1, 0, 0.3, 0.7};
  std::vector<saturated_case> cases;
  for (const double gamma : {0.25, 0.5, 0.9}) {
    for (size_t i = 0; i < x.size(); ++i) cases.push_back({gamma, x[i], y[i]});
  }
  return cases;
}

class SigmoidFocalGradientsAtSaturation : public random_test<saturated_case> {};

TEST_P(SigmoidFocalGradientsAtSaturation, MatchFiniteDifferences) {
  const saturated_case& c = GetParam();
  expect_gradients_match_fd(focal_params(0.25, c.gamma, none), {c.x}, {c.y}, rng);
}

INSTANTIATE_TEST_SUITE_P(ElementLossRandom, SigmoidFocalGradientsAtSaturation,
                         ::testing::ValuesIn(saturated_cases()), names::by_name{});

// ---- MSE ----------------------------------------------------------------------------------------

class MseGradients : public random_test<fusedloss_reduction> {};

TEST_P(MseGradients, MatchFiniteDifferences) {
  constexpr size_t m = 10;
  const auto x = checks::uniform(rng, m, -3.0, 3.0);
  const auto y = checks::uniform(rng, m, -3.0, 3.0);
  expect_gradients_match_fd(mse_params(GetParam()), x, y, rng);
}

INSTANTIATE_TEST_SUITE_P(ElementLossRandom, MseGradients, ::testing::ValuesIn(reductions),
                         names::by_name{});

}  // namespace
}  // namespace element_loss_tests
