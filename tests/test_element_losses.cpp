// The element losses (BCE with logits, sigmoid focal, MSE) through the public API on the CPU path:
// values worked out by hand, gradients against central finite differences for every option, the
// properties docs/SEMANTICS.md promises, the edge cases and deliberate differences, and the 16-bit
// and float32 paths against float64 on the same rounded inputs.
#include <gtest/gtest.h>

#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <iomanip>
#include <limits>
#include <random>
#include <sstream>
#include <string>
#include <vector>

#include "checks.hpp"
#include "fusedloss/fusedloss.hpp"

namespace {

namespace checks = fusedloss::checks;
using checks::buffer;
using checks::tolerance;

constexpr fusedloss_dtype f64 = FUSEDLOSS_FLOAT64;
constexpr fusedloss_dtype f32 = FUSEDLOSS_FLOAT32;
constexpr fusedloss_dtype f16 = FUSEDLOSS_FLOAT16;
constexpr fusedloss_dtype bf16 = FUSEDLOSS_BFLOAT16;
constexpr fusedloss_reduction none = FUSEDLOSS_REDUCTION_NONE;
constexpr fusedloss_reduction mean = FUSEDLOSS_REDUCTION_MEAN;
constexpr fusedloss_reduction sum = FUSEDLOSS_REDUCTION_SUM;
constexpr fusedloss_reduction reductions[] = {none, mean, sum};
constexpr double inf = std::numeric_limits<double>::infinity();
constexpr double nan = std::numeric_limits<double>::quiet_NaN();

const char* name_of(fusedloss_reduction r) { return fusedloss_reduction_string(r); }
const char* name_of(fusedloss_dtype d) { return fusedloss_dtype_string(d); }

enum class op { forward, backward, forward_backward };

const char* name_of(op o) {
  return o == op::forward ? "forward" : o == op::backward ? "backward" : "forward_backward";
}

constexpr op all_ops[] = {op::forward, op::backward, op::forward_backward};

fusedloss_dtype loss_dtype_of(fusedloss_dtype logits) { return logits == f64 ? f64 : f32; }

struct result {
  std::vector<double> loss;  // forward and forward_backward
  std::vector<double> grad;  // backward and forward_backward
};

// Runs one call of the loss configured in `p` (options set; sizes and buffers filled here) on x and
// y stored in the given dtypes. Outputs start poisoned (NaN), so an element the call fails to write
// reads back as NaN. `grad_loss` is backward's upstream gradient (default all 1), stored in the
// loss dtype.
template <class Params>
result run(Params p, op which, const std::vector<double>& x, fusedloss_dtype x_dtype,
           const std::vector<double>& y, fusedloss_dtype y_dtype,
           std::vector<double> grad_loss = {}) {
  const size_t m = x.size();
  const fusedloss_dtype l_dtype = loss_dtype_of(x_dtype);
  const size_t outputs = p.reduction == none ? m : 1;
  if (grad_loss.empty()) grad_loss.assign(outputs, 1.0);
  const buffer logits(x_dtype, x);
  const buffer targets(y_dtype, y);
  const buffer upstream(l_dtype, grad_loss);
  buffer loss = buffer::poisoned(l_dtype, outputs);
  buffer grad = buffer::poisoned(x_dtype, m);
  p.device = FUSEDLOSS_DEVICE_CPU;
  p.numel = static_cast<int64_t>(m);
  p.logits = logits.data();
  p.logits_dtype = x_dtype;
  p.targets = targets.data();
  p.targets_dtype = y_dtype;
  p.loss = which == op::backward ? nullptr : loss.data();
  p.grad_logits = which == op::forward ? nullptr : grad.data();
  p.grad_loss = which == op::backward ? upstream.data() : nullptr;
  switch (which) {
    case op::forward:
      fusedloss::forward(p);
      break;
    case op::backward:
      fusedloss::backward(p);
      break;
    case op::forward_backward:
      fusedloss::forward_backward(p);
      break;
  }
  result r;
  if (which != op::backward) r.loss = loss.values();
  if (which != op::forward) r.grad = grad.values();
  return r;
}

template <class Params>
result run64(const Params& p, op which, const std::vector<double>& x, const std::vector<double>& y,
             const std::vector<double>& grad_loss = {}) {
  return run(p, which, x, f64, y, f64, grad_loss);
}

std::string show(double v) {
  std::ostringstream s;
  s << std::setprecision(17) << v;
  return s.str();
}

void expect_all_accepted(const std::vector<double>& got, const std::vector<double>& want,
                         const tolerance& tol, const char* what) {
  ASSERT_EQ(got.size(), want.size()) << what;
  for (size_t i = 0; i < got.size(); ++i) {
    EXPECT_TRUE(tol.accepts(got[i], want[i]))
        << what << "[" << i << "]: got " << show(got[i]) << ", want " << show(want[i]);
  }
}

// Values worked out by hand are closed forms evaluated in double: a few ulps apart at most.
void expect_values(const std::vector<double>& got, const std::vector<double>& want,
                   const char* what) {
  expect_all_accepted(got, want, tolerance{1e-300, 4e-16}, what);
}

bool same_bits(double a, double b) { return std::memcmp(&a, &b, sizeof a) == 0; }

void expect_bitwise_equal(const std::vector<double>& got, const std::vector<double>& want,
                          const char* what) {
  ASSERT_EQ(got.size(), want.size()) << what;
  for (size_t i = 0; i < got.size(); ++i) {
    EXPECT_TRUE(same_bits(got[i], want[i]))
        << what << "[" << i << "]: " << show(got[i]) << " vs " << show(want[i]);
  }
}

std::vector<float> as_floats(const std::vector<double>& v) { return {v.begin(), v.end()}; }

std::vector<double> hard_targets(std::mt19937_64& rng, size_t count) {
  std::bernoulli_distribution coin(0.5);
  std::vector<double> y(count);
  for (auto& v : y) v = coin(rng) ? 1.0 : 0.0;
  return y;
}

// Targets in [0, 1], a third each 0, 1 and soft, so both focal forms run in one call.
std::vector<double> mixed_targets(std::mt19937_64& rng, size_t count) {
  std::uniform_int_distribution<int> kind(0, 2);
  std::uniform_real_distribution<double> soft(0.05, 0.95);
  std::vector<double> y(count);
  for (auto& v : y) {
    const int k = kind(rng);
    v = k == 2 ? soft(rng) : k;
  }
  return y;
}

double sigmoid(double x) { return 1.0 / (1.0 + std::exp(-x)); }

fusedloss::bce_params bce_params(fusedloss_reduction r = none) {
  auto p = fusedloss::make_bce_params();
  p.reduction = r;
  return p;
}

fusedloss::sigmoid_focal_params focal_params(double alpha, double gamma,
                                             fusedloss_reduction r = none) {
  auto p = fusedloss::make_sigmoid_focal_params();
  p.alpha = alpha;
  p.gamma = gamma;
  p.reduction = r;
  return p;
}

fusedloss::mse_params mse_params(fusedloss_reduction r = none) {
  auto p = fusedloss::make_mse_params();
  p.reduction = r;
  return p;
}

// Calls f(label, params) for each element loss with its options set (BCE with per-class weight and
// pos_weight over 4 classes, so the element count must be a multiple of 4).
template <class F>
void for_each_loss(F&& f) {
  static const std::vector<float> weight = {0.5f, 1.0f, 1.5f, 2.0f};
  static const std::vector<float> pos_weight = {2.0f, 0.75f, 1.0f, 3.0f};
  auto bce = bce_params();
  bce.num_classes = 4;
  bce.weight = weight.data();
  bce.weight_layout = FUSEDLOSS_WEIGHT_PER_CLASS;
  bce.pos_weight = pos_weight.data();
  f("bce", bce);
  f("sigmoid focal (alpha 0.25, gamma 2)", focal_params(0.25, 2.0));
  f("sigmoid focal (alpha -1, gamma 0.5)", focal_params(-1.0, 0.5));
  f("mse", mse_params());
}

// A fresh generator for each test; its seed is in every failure message, and setting
// FUSEDLOSS_TEST_SEED to it replays the draw.
class ElementLossRandom : public ::testing::Test {
 protected:
  static uint64_t fresh_seed() {
    if (const char* s = std::getenv("FUSEDLOSS_TEST_SEED")) return std::strtoull(s, nullptr, 10);
    std::random_device device;
    return (static_cast<uint64_t>(device()) << 32) ^ device();
  }
  const uint64_t seed = fresh_seed();
  std::mt19937_64 rng{seed};
  ::testing::ScopedTrace trace{__FILE__, __LINE__, "FUSEDLOSS_TEST_SEED=" + std::to_string(seed)};
};

// --- Values worked out by hand -------------------------------------------------------------------

TEST(ElementLossValues, BceByHand) {
  // x = 0, y = 1:    softplus(0) = log 2;              grad sigma(0) - 1 = -1/2.
  // x = 2, y = 0:    softplus(2) = log(1 + e^2);       grad sigma(2).
  // x = -1, y = 1:   softplus(1) = log(1 + e);         grad sigma(-1) - 1 = -e/(1 + e).
  // x = 0, y = 1/4:  (1/4 + 3/4) log 2 = log 2;        grad 1/2 - 1/4 = 1/4.
  const std::vector<double> x = {0, 2, -1, 0}, y = {1, 0, 1, 0.25};
  const double e = std::exp(1.0);
  const std::vector<double> loss = {std::log(2.0), std::log1p(e * e), std::log1p(e), std::log(2.0)};
  const std::vector<double> grad = {-0.5, sigmoid(2), -e / (1 + e), 0.25};
  const auto got = run64(bce_params(), op::forward_backward, x, y);
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
  const auto weighted = run64(p, op::forward_backward, x, y);
  expect_values(weighted.loss, weighted_loss, "weighted loss");
  expect_values(weighted.grad, weighted_grad, "weighted grad");

  // The same weights given per element give the same values.
  const std::vector<float> per_element = {2.0f, 0.5f, 2.0f, 0.5f};
  p.weight = per_element.data();
  p.weight_layout = FUSEDLOSS_WEIGHT_PER_ELEMENT;
  expect_values(run64(p, op::forward, x, y).loss, weighted_loss, "per-element weighted loss");

  // sum adds the four; mean divides by M = 4 (weights never enter the normaliser).
  const double total =
      6 * std::log(2.0) + std::log1p(e * e) / 2 + 6 * std::log1p(e) + std::log(2.0) / 2;
  p.reduction = sum;
  expect_values(run64(p, op::forward, x, y).loss, {total}, "sum");
  p.reduction = mean;
  expect_values(run64(p, op::forward, x, y).loss, {total / 4}, "mean");
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
  const auto hard = run64(focal_params(0.25, 2.0), op::forward_backward, {0, 2}, {1, 0});
  expect_values(hard.loss, {std::log(2.0) / 16, 0.75 * s2 * s2 * ce2}, "hard loss");
  expect_values(hard.grad,
                {(-0.5 - std::log(2.0)) / 16, 0.75 * s2 * s2 * (s2 + 2 * sigmoid(-2) * ce2)},
                "hard grad");

  // alpha -1 (off), gamma 1, soft target y = 1/4 at x = 0: p = 1/2, 1 - p_t = 1/2 (3/4) + 1/2 (1/4)
  // = 1/2, ce = log 2: loss log 2 / 2;
  // grad (1-p_t)(p - y) - gamma (2y - 1) p (1 - p) ce = 1/2 * 1/4 + 1/2 * 1/4 * log 2
  //   = (1 + log 2) / 8.
  const auto soft = run64(focal_params(-1.0, 1.0), op::forward_backward, {0}, {0.25});
  expect_values(soft.loss, {std::log(2.0) / 2}, "soft loss");
  expect_values(soft.grad, {(1 + std::log(2.0)) / 8}, "soft grad");

  // alpha 1.5 is computed as written: alpha_t = 1.5 for y = 1 and -0.5 for y = 0.
  // x = 0, gamma 0: loss alpha_t log 2, grad alpha_t (p - y) = 1.5 * -1/2 and -0.5 * 1/2.
  const auto big_alpha = run64(focal_params(1.5, 0.0), op::forward_backward, {0, 0}, {1, 0});
  expect_values(big_alpha.loss, {1.5 * std::log(2.0), -0.5 * std::log(2.0)}, "alpha 1.5 loss");
  expect_values(big_alpha.grad, {-0.75, -0.25}, "alpha 1.5 grad");
}

TEST(ElementLossValues, MseByHand) {
  // (1 - 0)^2 = 1, (-2 - 1)^2 = 9, (1/2 - 1/2)^2 = 0; gradients 2, -6, 0. Sum 10, mean 10/3.
  const std::vector<double> x = {1, -2, 0.5}, y = {0, 1, 0.5};
  expect_values(run64(mse_params(none), op::forward, x, y).loss, {1, 9, 0}, "none");
  expect_values(run64(mse_params(sum), op::forward, x, y).loss, {10}, "sum");
  expect_values(run64(mse_params(mean), op::forward, x, y).loss, {10.0 / 3}, "mean");
  // Upstream gradients: per element under none, one scalar under sum, the scalar / M under mean.
  expect_values(run64(mse_params(none), op::backward, x, y, {1, 0.5, 2}).grad, {2, -3, 0},
                "none backward");
  expect_values(run64(mse_params(sum), op::backward, x, y, {2}).grad, {4, -12, 0}, "sum backward");
  expect_values(run64(mse_params(mean), op::backward, x, y, {3}).grad, {2, -6, 0}, "mean backward");
}

// --- Gradients against central finite differences ------------------------------------------------

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
      return weighted_total(run64(p, op::forward, xs, y).loss, upstream);
    };
    return checks::finite_difference(total, x, fd_step);
  };

  const auto upstream = checks::uniform(rng, p.reduction == none ? x.size() : 1, -2.0, 2.0);
  expect_all_accepted(run64(p, op::backward, x, y, upstream).grad, fd_of(upstream), fd_tolerance,
                      "backward");

  const auto scale = as_floats(checks::uniform(rng, 2, -2.0, 2.0));
  p.grad_scale = scale[0];
  p.grad_scale_ptr = &scale[1];
  const double fused = static_cast<double>(scale[0]) * scale[1];
  const auto fb = run64(p, op::forward_backward, x, y);
  expect_all_accepted(fb.grad, fd_of({fused}), fd_tolerance, "forward_backward");
}

TEST_F(ElementLossRandom, BceGradientsMatchFiniteDifferences) {
  constexpr size_t m = 10;
  constexpr int64_t c = 5;  // two rows, so per-class vectors broadcast
  const auto x = checks::uniform(rng, m, -4.0, 4.0);
  const auto hard = hard_targets(rng, m);
  const auto soft = checks::uniform(rng, m, 0.0, 1.0);
  const auto per_element = as_floats(checks::uniform(rng, m, 0.5, 1.5));
  const auto per_class = as_floats(checks::uniform(rng, c, 0.5, 1.5));
  const auto pos_weight = as_floats(checks::uniform(rng, c, 0.5, 2.0));
  enum class weighting { absent, per_element, per_class };
  for (const auto weighted : {weighting::absent, weighting::per_element, weighting::per_class}) {
    for (const bool with_pos_weight : {false, true}) {
      for (const bool soft_targets : {false, true}) {
        for (const auto r : reductions) {
          SCOPED_TRACE(std::string("weight ") +
                       (weighted == weighting::absent        ? "absent"
                        : weighted == weighting::per_element ? "per element"
                                                             : "per class") +
                       ", pos_weight " + (with_pos_weight ? "given" : "absent") + ", " +
                       (soft_targets ? "soft" : "hard") + " targets, " + name_of(r));
          auto p = bce_params(r);
          p.num_classes = c;
          if (weighted == weighting::per_element) p.weight = per_element.data();
          if (weighted == weighting::per_class) {
            p.weight = per_class.data();
            p.weight_layout = FUSEDLOSS_WEIGHT_PER_CLASS;
          }
          if (with_pos_weight) p.pos_weight = pos_weight.data();
          expect_gradients_match_fd(p, x, soft_targets ? soft : hard, rng);
        }
      }
    }
  }
}

TEST_F(ElementLossRandom, SigmoidFocalGradientsMatchFiniteDifferences) {
  constexpr size_t m = 10;
  const auto x = checks::uniform(rng, m, -4.0, 4.0);
  const auto hard = hard_targets(rng, m);
  const auto soft = checks::uniform(rng, m, 0.05, 0.95);
  for (const double gamma : {0.0, 0.5, 1.0, 2.0, 3.5}) {
    for (const double alpha : {0.25, -1.0, 1.5}) {
      for (const bool soft_targets : {false, true}) {
        for (const auto r : reductions) {
          SCOPED_TRACE("gamma " + show(gamma) + ", alpha " + show(alpha) + ", " +
                       (soft_targets ? "soft" : "hard") + " targets, " + name_of(r));
          expect_gradients_match_fd(focal_params(alpha, gamma, r), x, soft_targets ? soft : hard,
                                    rng);
        }
      }
    }
  }
}

TEST_F(ElementLossRandom, SigmoidFocalGradientsMatchFiniteDifferencesAtSaturation) {
  // Saturated logits where torchvision's gamma-in-(0, 1) gradient is NaN: here finite and right.
  // One element per call, so a tiny loss is not differenced against its large neighbours.
  const std::vector<double> x = {100, -100, 100, -100, 30, -30, 100, -100};
  const std::vector<double> y = {1, 1, 0, 0, 1, 0, 0.3, 0.7};
  for (const double gamma : {0.25, 0.5, 0.9}) {
    for (size_t i = 0; i < x.size(); ++i) {
      SCOPED_TRACE("gamma " + show(gamma) + ", x " + show(x[i]) + ", y " + show(y[i]));
      expect_gradients_match_fd(focal_params(0.25, gamma, none), {x[i]}, {y[i]}, rng);
    }
  }
}

TEST_F(ElementLossRandom, MseGradientsMatchFiniteDifferences) {
  constexpr size_t m = 10;
  const auto x = checks::uniform(rng, m, -3.0, 3.0);
  const auto y = checks::uniform(rng, m, -3.0, 3.0);
  for (const auto r : reductions) {
    SCOPED_TRACE(name_of(r));
    expect_gradients_match_fd(mse_params(r), x, y, rng);
  }
}

// --- Properties ----------------------------------------------------------------------------------

TEST_F(ElementLossRandom, SigmoidFocalWithGammaZeroAndNoAlphaIsBceBitwise) {
  constexpr size_t m = 24;
  auto x = checks::uniform(rng, m, -8.0, 8.0);
  auto y = mixed_targets(rng, m);
  // Large and infinite logits too, the infinite ones where BCE's loss is 0 (not +inf, which would
  // leave nothing to compare under sum and mean).
  const std::vector<double> extra_x = {30, -30, 1e4, -1e4, -inf, inf};
  const std::vector<double> extra_y = {1, 0, 0, 1, 0, 1};
  x.insert(x.end(), extra_x.begin(), extra_x.end());
  y.insert(y.end(), extra_y.begin(), extra_y.end());
  for (const auto dtype : {f64, f32, f16, bf16}) {
    const auto xr = checks::round_to(dtype, x);
    for (const auto r : reductions) {
      const auto upstream =
          checks::round_to(f32, checks::uniform(rng, r == none ? xr.size() : 1, -2.0, 2.0));
      for (const auto o : all_ops) {
        SCOPED_TRACE(std::string(name_of(dtype)) + ", " + name_of(r) + ", " + name_of(o));
        const auto bce = run(bce_params(r), o, xr, dtype, y, f32, upstream);
        const auto focal = run(focal_params(-1.0, 0.0, r), o, xr, dtype, y, f32, upstream);
        expect_bitwise_equal(focal.loss, bce.loss, "loss");
        expect_bitwise_equal(focal.grad, bce.grad, "grad");
      }
    }
  }
}

TEST_F(ElementLossRandom, SigmoidFocalNeverExceedsBce) {
  constexpr size_t m = 64;
  const auto x = checks::uniform(rng, m, -10.0, 10.0);
  const auto y = mixed_targets(rng, m);
  const auto bce = run64(bce_params(), op::forward, x, y).loss;
  for (const double gamma : {0.0, 0.5, 1.0, 2.0, 3.5}) {
    const auto focal = run64(focal_params(-1.0, gamma), op::forward, x, y).loss;
    for (size_t i = 0; i < m; ++i) {
      EXPECT_LE(focal[i], bce[i]) << "gamma " << gamma << ", x " << x[i] << ", y " << y[i];
    }
  }
}

TEST_F(ElementLossRandom, SumIsMeanTimesCount) {
  constexpr size_t m = 36;
  const auto x = checks::uniform(rng, m, -5.0, 5.0);
  const auto y = mixed_targets(rng, m);
  const double g = checks::uniform(rng, 1, 0.5, 2.0)[0];
  for_each_loss([&](const char* label, auto p) {
    SCOPED_TRACE(label);
    p.reduction = sum;
    const auto total = run64(p, op::forward_backward, x, y);
    const auto total_backward = run64(p, op::backward, x, y, {g});
    p.reduction = mean;
    const auto average = run64(p, op::forward_backward, x, y);
    const auto average_backward = run64(p, op::backward, x, y, {g * m});
    const double eps = std::numeric_limits<double>::epsilon();
    EXPECT_NEAR(total.loss[0], average.loss[0] * m, 4 * eps * std::fabs(total.loss[0]));
    // The gradient of the sum is M times the mean's, and an upstream M times larger undoes /M.
    for (size_t i = 0; i < m; ++i) {
      EXPECT_NEAR(total.grad[i], average.grad[i] * m, 4 * eps * std::fabs(total.grad[i]));
      EXPECT_NEAR(total_backward.grad[i], average_backward.grad[i],
                  4 * eps * std::fabs(total_backward.grad[i]));
    }
  });
}

TEST_F(ElementLossRandom, ForwardBackwardIsForwardPlusBackward) {
  constexpr size_t m = 12;
  const auto x = checks::uniform(rng, m, -5.0, 5.0);
  const auto y = mixed_targets(rng, m);
  // Dyadic scales, so grad_scale * *grad_scale_ptr = -0.9375 exactly, in every loss dtype.
  const float scale = 1.5f, scale_in_memory = -0.625f;
  for_each_loss([&](const char* label, auto p) {
    for (const auto dtype : {f64, f32, bf16}) {
      const auto xr = checks::round_to(dtype, x);
      for (const auto r : reductions) {
        SCOPED_TRACE(std::string(label) + ", " + name_of(dtype) + ", " + name_of(r));
        p.reduction = r;
        const size_t outputs = r == none ? m : 1;
        const auto forward = run(p, op::forward, xr, dtype, y, dtype).loss;

        p.grad_scale = scale;
        p.grad_scale_ptr = nullptr;
        const auto fb = run(p, op::forward_backward, xr, dtype, y, dtype);
        expect_bitwise_equal(fb.loss, forward, "loss");
        expect_bitwise_equal(
            fb.grad,
            run(p, op::backward, xr, dtype, y, dtype, std::vector<double>(outputs, 1.5)).grad,
            "grad with grad_scale");

        p.grad_scale_ptr = &scale_in_memory;
        const auto scaled = run(p, op::forward_backward, xr, dtype, y, dtype);
        expect_bitwise_equal(scaled.loss, forward, "loss with grad_scale_ptr");
        const auto want =
            run(p, op::backward, xr, dtype, y, dtype, std::vector<double>(outputs, -0.9375)).grad;
        expect_bitwise_equal(scaled.grad, want, "grad with grad_scale_ptr");

        // The loss is optional in forward_backward; the gradient is the same without it.
        const buffer logits(dtype, xr), targets(dtype, y);
        buffer grad = buffer::poisoned(dtype, m);
        auto q = p;
        q.device = FUSEDLOSS_DEVICE_CPU;
        q.numel = m;
        q.logits = logits.data();
        q.logits_dtype = dtype;
        q.targets = targets.data();
        q.targets_dtype = dtype;
        q.loss = nullptr;
        q.grad_logits = grad.data();
        fusedloss::forward_backward(q);
        expect_bitwise_equal(grad.values(), want, "grad without loss");
      }
    }
  });
}

// --- Edge cases ----------------------------------------------------------------------------------

TEST(ElementLossEdges, EmptyInput) {
  // M = 0: none writes nothing, sum is 0, mean follows the empty-mean policy; no gradient exists,
  // so none is written. One-element buffers holding 42 show whether anything was written.
  const std::vector<double> sentinel = {42.0};
  for_each_loss([&](const char* label, auto p) {
    for (const auto r : reductions) {
      for (const auto policy : {FUSEDLOSS_EMPTY_MEAN_NAN, FUSEDLOSS_EMPTY_MEAN_ZERO}) {
        for (const auto o : all_ops) {
          SCOPED_TRACE(
              std::string(label) + ", " + name_of(r) + ", " + name_of(o) +
              (policy == FUSEDLOSS_EMPTY_MEAN_NAN ? ", empty mean NaN" : ", empty mean 0"));
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
          p.loss = o == op::backward ? nullptr : loss.data();
          p.grad_logits = o == op::forward ? nullptr : grad.data();
          p.grad_loss = o == op::backward ? upstream.data() : nullptr;
          if (o == op::forward) fusedloss::forward(p);
          if (o == op::backward) fusedloss::backward(p);
          if (o == op::forward_backward) fusedloss::forward_backward(p);
          EXPECT_EQ(grad[0], 42.0);
          if (o == op::backward || r == none) {
            EXPECT_EQ(loss[0], 42.0);
          } else if (r == sum || policy == FUSEDLOSS_EMPTY_MEAN_ZERO) {
            EXPECT_TRUE(same_bits(loss[0], 0.0)) << loss[0];
          } else {
            EXPECT_TRUE(std::isnan(loss[0])) << loss[0];
          }
        }
      }
    }
  });
}

TEST(ElementLossEdges, SingleElement) {
  // M = 1: every reduction gives the element's loss, and every upstream form the same gradient.
  // BCE at x = 0, y = 1: log 2, grad -1/2. Focal (0.25, 2) there: log 2 / 16, grad (-1/2 - log 2) /
  // 16 (see SigmoidFocalByHand). MSE at x = 3, y = 1: 4, grad 4.
  const double log2 = std::log(2.0);
  for (const auto r : reductions) {
    SCOPED_TRACE(name_of(r));
    for (const auto dtype : {f64, f32}) {
      const tolerance tol = checks::rounding_tolerance(dtype);
      const auto bce = run(bce_params(r), op::forward_backward, {0}, dtype, {1}, dtype);
      expect_all_accepted(bce.loss, {log2}, tol, "bce loss");
      expect_all_accepted(bce.grad, {-0.5}, tol, "bce grad");
      const auto focal = run(focal_params(0.25, 2.0, r), op::backward, {0}, dtype, {1}, dtype, {2});
      expect_all_accepted(focal.grad, {2 * (-0.5 - log2) / 16}, tol, "focal grad");
      const auto focal_loss = run(focal_params(0.25, 2.0, r), op::forward, {0}, dtype, {1}, dtype);
      expect_all_accepted(focal_loss.loss, {log2 / 16}, tol, "focal loss");
      const auto mse = run(mse_params(r), op::forward_backward, {3}, dtype, {1}, dtype);
      expect_all_accepted(mse.loss, {4}, tol, "mse loss");
      expect_all_accepted(mse.grad, {4}, tol, "mse grad");
    }
  }
}

TEST(ElementLossEdges, LargeLogits) {
  // |x| = 1e4: exp(-1e4) underflows to 0 in double, so every softplus and sigmoid is exact.
  // BCE: (1e4, 0): 1e4, grad 1; (-1e4, 0): 0, 0; (1e4, 1): 0, -sigma(-1e4) = -0; (-1e4, 1): 1e4,
  // -1. Focal (0.25, 2): alpha_t (1 - p_t)^2 ce with 1 - p_t = 1 where wrong and 0 where right:
  //   7500, grad 3/4; 0, 0; 0, 0; 2500, grad -1/4 (the gamma term has p_t = 0).
  // Focal (0.25, 0.5): the same (1^0.5 = 1, 0^0.5 = 0).
  // MSE against y: (1e4 - 0)^2 = 1e8, grad 2e4, and so on.
  const std::vector<double> x = {1e4, -1e4, 1e4, -1e4}, y = {0, 0, 1, 1};
  for (const auto dtype : {f64, f32, f16}) {
    SCOPED_TRACE(name_of(dtype));
    const tolerance tol = checks::rounding_tolerance(f32);
    const auto bce = run(bce_params(), op::forward_backward, x, dtype, y, dtype);
    expect_all_accepted(bce.loss, {1e4, 0, 0, 1e4}, tol, "bce loss");
    expect_all_accepted(bce.grad, {1, 0, 0, -1}, tol, "bce grad");
    for (const double gamma : {2.0, 0.5}) {
      const auto focal = run(focal_params(0.25, gamma), op::forward_backward, x, dtype, y, dtype);
      expect_all_accepted(focal.loss, {7500, 0, 0, 2500}, tol, "focal loss");
      expect_all_accepted(focal.grad, {0.75, 0, 0, -0.25}, tol, "focal grad");
    }
    const auto mse = run(mse_params(), op::forward, x, dtype, y, dtype);
    expect_all_accepted(mse.loss, {1e8, 1e8, (1e4 - 1) * (1e4 - 1), (1e4 + 1) * (1e4 + 1)}, tol,
                        "mse loss");
  }
}

TEST(ElementLossEdges, InfiniteLogits) {
  for (const auto dtype : {f64, f32, bf16}) {
    SCOPED_TRACE(name_of(dtype));
    // BCE. Wrong and infinitely sure: loss +inf, gradient +-1 (sigma saturates). Right and
    // infinitely sure: loss 0 and gradient 0 (deliberate difference 1: PyTorch gives NaN loss).
    // A soft target at +inf: 1/2 softplus(-inf) + 1/2 softplus(inf) = inf, grad 1/2 sigma(inf) =
    // 1/2.
    const std::vector<double> x = {inf, -inf, -inf, inf, inf}, y = {0, 1, 0, 1, 0.5};
    const auto bce = run(bce_params(), op::forward_backward, x, dtype, y, dtype);
    expect_values(bce.loss, {inf, inf, 0, 0, inf}, "bce loss");
    expect_values(bce.grad, {1, -1, 0, 0, 0.5}, "bce grad");
    // With weight 1/2 and pos_weight 2 (C = 1) the zero-coefficient terms still vanish; the rest
    // scale: grad w = 1/2, -w pw = -1, 0, 0, w/2 = 1/4.
    const std::vector<float> weight = {0.5f, 0.5f, 0.5f, 0.5f, 0.5f}, pos_weight = {2.0f};
    auto weighted = bce_params();
    weighted.num_classes = 1;
    weighted.weight = weight.data();
    weighted.pos_weight = pos_weight.data();
    const auto wbce = run(weighted, op::forward_backward, x, dtype, y, dtype);
    expect_values(wbce.loss, {inf, inf, 0, 0, inf}, "weighted bce loss");
    expect_values(wbce.grad, {0.5, -1, 0, 0, 0.25}, "weighted bce grad");
    // Exactly 0 whatever pos_weight: a tiny one must not leave 1 + (pw - 1) - pw = -pw behind.
    const std::vector<float> tiny_pos_weight = {1e-20f};
    auto tiny = bce_params();
    tiny.num_classes = 1;
    tiny.pos_weight = tiny_pos_weight.data();
    expect_bitwise_equal(run(tiny, op::backward, {inf, -inf}, dtype, {1, 0}, dtype).grad, {0, 0},
                         "bce grad with tiny pos_weight");
    // Under sum the two right-and-sure elements add 0, not NaN.
    const std::vector<double> right_x = {-inf, inf, 0}, right_y = {0, 1, 1};
    expect_all_accepted(run(bce_params(sum), op::forward, right_x, dtype, right_y, dtype).loss,
                        {std::log(2.0)}, checks::rounding_tolerance(loss_dtype_of(dtype)),
                        "bce sum of right-and-sure");

    // Sigmoid focal, hard targets. Right and sure: (1 - p_t)^gamma = 0 and ce = 0: loss 0, grad 0.
    // Wrong and sure: loss +inf; with gamma = 0 the gradient is alpha_t (p - y) = 3/4, -1/4; with
    // gamma > 0 SEMANTICS' formula in IEEE arithmetic has gamma p_t ce = 0 * inf: NaN.
    const std::vector<double> fx = {-inf, inf, inf, -inf}, fy = {0, 1, 0, 1};
    const auto focal0 = run(focal_params(0.25, 0.0), op::forward_backward, fx, dtype, fy, dtype);
    expect_values(focal0.loss, {0, 0, inf, inf}, "focal gamma 0 loss");
    expect_values(focal0.grad, {0, 0, 0.75, -0.25}, "focal gamma 0 grad");
    for (const double gamma : {0.5, 2.0}) {
      const auto focal = run(focal_params(0.25, gamma), op::forward_backward, fx, dtype, fy, dtype);
      expect_values(focal.loss, {0, 0, inf, inf}, "focal loss");
      expect_values(focal.grad, {0, 0, nan, nan}, "focal grad");
    }

    // MSE: (+-inf - 0)^2 = inf, grad +-inf.
    const auto mse = run(mse_params(), op::forward_backward, {inf, -inf}, dtype, {0, 0}, dtype);
    expect_values(mse.loss, {inf, inf}, "mse loss");
    expect_values(mse.grad, {inf, -inf}, "mse grad");
  }
}

TEST(ElementLossEdges, ZeroWeightSilencesAnInfiniteSoftplus) {
  // Deliberate difference 6: a term's coefficient includes the weight (w pw y and w (1 - y)), so
  // w = 0 gives loss 0 and gradient 0 even where its softplus is infinite (PyTorch: NaN loss):
  // wrong and infinitely sure (-inf, 1) and (inf, 0), and soft targets at both infinities. The
  // weighted neighbour keeps its value: w = 2, pw = 3, (1, 0): 2 softplus(1) = 2 log(1 + e), grad
  // 2 sigma(1); (-1, 1): 2 * 3 softplus(1), grad -6 sigma(1).
  const std::vector<double> x = {-inf, inf, -inf, inf, 1, -1}, y = {1, 0, 0.5, 0.5, 0, 1};
  const std::vector<float> weight = {0, 0, 0, 0, 2, 2}, pos_weight = {3};
  const double softplus1 = std::log1p(std::exp(1.0));
  const std::vector<double> loss = {0, 0, 0, 0, 2 * softplus1, 6 * softplus1};
  const std::vector<double> grad = {0, 0, 0, 0, 2 * sigmoid(1), -6 * sigmoid(1)};
  for (const auto dtype : {f64, f32, bf16}) {
    SCOPED_TRACE(name_of(dtype));
    const tolerance tol = checks::rounding_tolerance(dtype);
    auto p = bce_params();
    p.num_classes = 1;
    p.weight = weight.data();
    p.pos_weight = pos_weight.data();
    const auto per_element = run(p, op::forward_backward, x, dtype, y, dtype);
    expect_all_accepted(per_element.loss, loss, checks::rounding_tolerance(loss_dtype_of(dtype)),
                        "loss");
    expect_all_accepted(per_element.grad, grad, tol, "grad");
    expect_bitwise_equal(run(p, op::backward, x, dtype, y, dtype).grad,
                         {0, 0, 0, 0, per_element.grad[4], per_element.grad[5]}, "backward grad");

    // The same weights per class (C = 6, one row) give the same values; under sum the four
    // silenced elements add 0, not NaN.
    const std::vector<float> pos_weight_per_class(6, 3.0f);
    p.num_classes = 6;
    p.weight_layout = FUSEDLOSS_WEIGHT_PER_CLASS;
    p.pos_weight = pos_weight_per_class.data();
    expect_bitwise_equal(run(p, op::forward, x, dtype, y, dtype).loss, per_element.loss,
                         "per-class loss");
    p.reduction = sum;
    expect_all_accepted(run(p, op::forward, x, dtype, y, dtype).loss, {8 * softplus1},
                        checks::rounding_tolerance(loss_dtype_of(dtype)), "sum");
  }
}

TEST(ElementLossEdges, NanLogits) {
  // A NaN logit gives a NaN loss and gradient, whichever target (even where a zero coefficient
  // would silence an infinite softplus), and a NaN sum and mean; its neighbours are unaffected.
  const std::vector<double> x = {nan, nan, 0, 0}, y = {0, 1, 1, 0};
  for_each_loss([&](const char* label, auto p) {
    for (const auto dtype : {f64, f32, f16}) {
      SCOPED_TRACE(std::string(label) + ", " + name_of(dtype));
      p.reduction = none;
      const auto r = run(p, op::forward_backward, x, dtype, y, dtype);
      EXPECT_TRUE(std::isnan(r.loss[0]) && std::isnan(r.loss[1])) << r.loss[0] << " " << r.loss[1];
      EXPECT_TRUE(std::isnan(r.grad[0]) && std::isnan(r.grad[1])) << r.grad[0] << " " << r.grad[1];
      EXPECT_TRUE(std::isfinite(r.loss[2]) && std::isfinite(r.grad[2]));
      EXPECT_TRUE(std::isfinite(r.loss[3]) && std::isfinite(r.grad[3]));
      for (const auto reduced : {sum, mean}) {
        p.reduction = reduced;
        EXPECT_TRUE(std::isnan(run(p, op::forward, x, dtype, y, dtype).loss[0]))
            << name_of(reduced);
      }
    }
  });
}

TEST(ElementLossEdges, SigmoidFocalFiniteForSmallGamma) {
  // Deliberate difference 4: gamma in (0, 1) has (1 - p_t)^(gamma - 1), infinite where 1 - p_t
  // rounds to 0 (torchvision returns NaN there); the hard-target form has no negative power and
  // soft targets keep 1 - p_t between y and 1 - y.
  std::vector<double> x, y;
  for (const double magnitude : {100.0, 1e4, 1e30}) {
    for (const double sign : {1.0, -1.0}) {
      for (const double target : {0.0, 1.0, 0.3}) {
        x.push_back(sign * magnitude);
        y.push_back(target);
      }
    }
  }
  for (const double gamma : {0.1, 0.5, 0.9}) {
    for (const double alpha : {0.25, -1.0}) {
      SCOPED_TRACE("gamma " + show(gamma) + ", alpha " + show(alpha));
      const auto r = run64(focal_params(alpha, gamma), op::forward_backward, x, y);
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
  }
}

// --- Dtypes --------------------------------------------------------------------------------------

TEST_F(ElementLossRandom, ReducedPrecisionMatchesFloat64OnRoundedInputs) {
  // The CPU path computes in double whatever the storage, so a 16-bit or float32 call must equal
  // the float64 call on the same rounded inputs up to the one rounding of each output: the loss to
  // float32, the gradient to the logits' dtype.
  constexpr size_t m = 36;
  const auto x = checks::uniform(rng, m, -6.0, 6.0);
  const auto y = mixed_targets(rng, m);
  const tolerance loss_tolerance = checks::rounding_tolerance(f32);
  for_each_loss([&](const char* label, auto p) {
    for (const auto dtype : {f32, f16, bf16}) {
      const auto xr = checks::round_to(dtype, x);
      for (const auto y_dtype : {f32, dtype}) {
        const auto yr = checks::round_to(y_dtype, y);
        for (const auto r : reductions) {
          p.reduction = r;
          const auto upstream =
              checks::round_to(f32, checks::uniform(rng, r == none ? m : 1, -2.0, 2.0));
          for (const auto o : all_ops) {
            SCOPED_TRACE(std::string(label) + ", logits " + name_of(dtype) + ", targets " +
                         name_of(y_dtype) + ", " + name_of(r) + ", " + name_of(o));
            const auto got = run(p, o, xr, dtype, yr, y_dtype, upstream);
            const auto want = run64(p, o, xr, yr, upstream);
            expect_all_accepted(got.loss, want.loss, loss_tolerance, "loss");
            expect_all_accepted(got.grad, want.grad, checks::rounding_tolerance(dtype), "grad");
          }
        }
      }
    }
  });
}

}  // namespace
