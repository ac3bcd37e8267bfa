// What the element-loss tests (BCE with logits, sigmoid focal, MSE, through the public API on the
// CPU path) share: one call with its outputs poisoned, the comparisons, the targets, each loss's
// params, the losses that the tests over every loss run, and a fresh seed for each test.
#pragma once

#include <gtest/gtest.h>

#include <cstdint>
#include <limits>
#include <ostream>
#include <random>
#include <string>
#include <vector>

#include "../loss_tests.hpp"
#include "checks.hpp"
#include "fusedloss/fusedloss.hpp"

namespace element_loss_tests {

namespace checks = fusedloss::checks;
namespace names = loss_tests;
using checks::buffer;
using checks::tolerance;
using fusedloss::call;

inline constexpr fusedloss_dtype f64 = FUSEDLOSS_FLOAT64;
inline constexpr fusedloss_dtype f32 = FUSEDLOSS_FLOAT32;
inline constexpr fusedloss_dtype f16 = FUSEDLOSS_FLOAT16;
inline constexpr fusedloss_dtype bf16 = FUSEDLOSS_BFLOAT16;
inline constexpr fusedloss_reduction none = FUSEDLOSS_REDUCTION_NONE;
inline constexpr fusedloss_reduction mean = FUSEDLOSS_REDUCTION_MEAN;
inline constexpr fusedloss_reduction sum = FUSEDLOSS_REDUCTION_SUM;
inline constexpr fusedloss_reduction reductions[] = {none, mean, sum};
inline constexpr call all_calls[] = {call::forward, call::backward, call::forward_backward};
inline constexpr double inf = std::numeric_limits<double>::infinity();
inline constexpr double nan = std::numeric_limits<double>::quiet_NaN();

inline const char* name_of(fusedloss_reduction r) { return fusedloss_reduction_string(r); }
inline const char* name_of(fusedloss_dtype d) { return fusedloss_dtype_string(d); }

struct result {
  std::vector<double> loss;  // forward and forward_backward
  std::vector<double> grad;  // backward and forward_backward
};

// Runs one call of the loss configured in `p` (options set; sizes and buffers filled here) on x and
// y stored in the given dtypes. Outputs start poisoned (NaN), so an element the call fails to write
// reads back as NaN. `grad_loss` is backward's upstream gradient (default all 1), stored in the
// loss dtype.
template <class Params>
result call_loss(Params p, call which, const std::vector<double>& x, fusedloss_dtype x_dtype,
                 const std::vector<double>& y, fusedloss_dtype y_dtype,
                 std::vector<double> grad_loss = {}) {
  const size_t m = x.size();
  const fusedloss_dtype l_dtype = checks::loss_dtype_of(x_dtype);
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
  p.loss = which == call::backward ? nullptr : loss.data();
  p.grad_logits = which == call::forward ? nullptr : grad.data();
  p.grad_loss = which == call::backward ? upstream.data() : nullptr;
  fusedloss::run(p, which);
  result r;
  if (which != call::backward) r.loss = loss.values();
  if (which != call::forward) r.grad = grad.values();
  return r;
}

template <class Params>
result call_loss64(const Params& p, call which, const std::vector<double>& x,
                   const std::vector<double>& y, const std::vector<double>& grad_loss = {}) {
  return call_loss(p, which, x, f64, y, f64, grad_loss);
}

std::string show(double v);

void expect_all_accepted(const std::vector<double>& got, const std::vector<double>& want,
                         const tolerance& tol, const char* what);

// Values worked out by hand are closed forms evaluated in double: a few ulps apart at most.
void expect_values(const std::vector<double>& got, const std::vector<double>& want,
                   const char* what);

bool same_bits(double a, double b);

void expect_bitwise_equal(const std::vector<double>& got, const std::vector<double>& want,
                          const char* what);

std::vector<float> as_floats(const std::vector<double>& v);

std::vector<double> hard_targets(std::mt19937_64& rng, size_t count);

// Targets in [0, 1], a third each 0, 1 and soft, so both focal forms run in one call.
std::vector<double> mixed_targets(std::mt19937_64& rng, size_t count);

double sigmoid(double x);

fusedloss::bce_params bce_params(fusedloss_reduction r = none);

fusedloss::sigmoid_focal_params focal_params(double alpha, double gamma,
                                             fusedloss_reduction r = none);

fusedloss::mse_params mse_params(fusedloss_reduction r = none);

// The losses that the tests over every element loss run, each with its options set (BCE with
// per-class weight and pos_weight over 4 classes, so the element count must be a multiple of 4).
enum class loss_config { bce, sigmoid_focal, sigmoid_focal_gamma_half, mse };
inline constexpr loss_config all_losses[] = {loss_config::bce, loss_config::sigmoid_focal,
                                             loss_config::sigmoid_focal_gamma_half,
                                             loss_config::mse};

// The loss as a name piece: bce, sigmoid_focal_alpha0p25_gamma2, sigmoid_focal_gamma0p5, mse.
const char* name_of(loss_config l);
void PrintTo(loss_config l, std::ostream* os);

// Calls f(params) with the params of loss `l`.
template <class F>
void with_params_of(loss_config l, F&& f) {
  static const std::vector<float> weight = {0.5f, 1.0f, 1.5f, 2.0f};
  static const std::vector<float> pos_weight = {2.0f, 0.75f, 1.0f, 3.0f};
  switch (l) {
    case loss_config::bce: {
      auto bce = bce_params();
      bce.num_classes = 4;
      bce.weight = weight.data();
      bce.weight_layout = FUSEDLOSS_WEIGHT_PER_CLASS;
      bce.pos_weight = pos_weight.data();
      f(bce);
      return;
    }
    case loss_config::sigmoid_focal:
      f(focal_params(0.25, 2.0));
      return;
    case loss_config::sigmoid_focal_gamma_half:
      f(focal_params(-1.0, 0.5));
      return;
    case loss_config::mse:
      f(mse_params());
      return;
  }
}

// A parameterised test with a fresh generator; its seed is in every failure message, and setting
// FUSEDLOSS_TEST_SEED to it replays the draw.
template <class Case>
class random_test : public ::testing::TestWithParam<Case> {
 protected:
  const uint64_t seed = loss_tests::fresh_seed();
  std::mt19937_64 rng{seed};
  ::testing::ScopedTrace trace{__FILE__, __LINE__, "FUSEDLOSS_TEST_SEED=" + std::to_string(seed)};
};

}  // namespace element_loss_tests
