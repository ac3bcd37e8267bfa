// Fused linear + cross-entropy on the CPU reference: its loss equals cross-entropy of the logits
// computed here, its three gradients equal central finite differences of that loss in float64,
// backward equals forward_backward scaled by the upstream, gradient accumulation adds, and bad
// input is refused with nothing written.
#include <gtest/gtest.h>

#include <cmath>
#include <cstdint>
#include <functional>
#include <random>
#include <string>
#include <vector>

#include "checks.hpp"
#include "fusedloss/fusedloss.hpp"
#include "loss_tests.hpp"

namespace {

namespace checks = fusedloss::checks;
using checks::buffer;

// A problem in float64: hidden states, weight, bias, targets and the options.
struct problem {
  int64_t n = 0, h = 0, v = 0;
  std::vector<double> input, linear_weight, linear_bias, targets;
  std::vector<float> weight;
  double label_smoothing = 0, z_loss = 0, softcap = 0;
  fusedloss_reduction reduction = FUSEDLOSS_REDUCTION_MEAN;
  float grad_scale = 1;
};

problem random_problem(std::mt19937_64& rng, int64_t n, int64_t h, int64_t v, bool bias) {
  problem pb;
  pb.n = n;
  pb.h = h;
  pb.v = v;
  pb.input = checks::uniform(rng, n * h, -1, 1);
  pb.linear_weight = checks::uniform(rng, v * h, -1, 1);
  if (bias) pb.linear_bias = checks::uniform(rng, v, -0.5, 0.5);
  pb.targets = checks::class_indices(rng, n, v);
  if (n > 2) pb.targets[1] = -100;
  return pb;
}

fusedloss::linear_cross_entropy_params params_of(const problem& pb) {
  auto p = fusedloss::make_linear_cross_entropy_params();
  p.batch = pb.n;
  p.hidden = pb.h;
  p.num_classes = pb.v;
  p.input_dtype = FUSEDLOSS_FLOAT64;
  p.grad_linear_dtype = FUSEDLOSS_FLOAT64;
  p.weight = pb.weight.empty() ? nullptr : pb.weight.data();
  p.label_smoothing = pb.label_smoothing;
  p.z_loss = pb.z_loss;
  p.softcap = pb.softcap;
  p.reduction = pb.reduction;
  p.grad_scale = pb.grad_scale;
  return p;
}

// Cross-entropy (the whole-row call) of the logits computed here: the loss's oracle.
std::vector<double> cross_entropy_of_product(const problem& pb) {
  std::vector<double> logits(pb.n * pb.v);
  for (int64_t r = 0; r < pb.n; ++r) {
    for (int64_t c = 0; c < pb.v; ++c) {
      double z = pb.linear_bias.empty() ? 0.0 : pb.linear_bias[c];
      for (int64_t k = 0; k < pb.h; ++k)
        z += pb.input[r * pb.h + k] * pb.linear_weight[c * pb.h + k];
      logits[r * pb.v + c] = z;
    }
  }
  auto q = fusedloss::make_cross_entropy_params();
  buffer x(FUSEDLOSS_FLOAT64, logits), t(FUSEDLOSS_INT64, pb.targets);
  buffer loss =
      buffer::poisoned(FUSEDLOSS_FLOAT64, pb.reduction == FUSEDLOSS_REDUCTION_NONE ? pb.n : 1);
  q.batch = pb.n;
  q.num_classes = pb.v;
  q.logits = x.data();
  q.logits_dtype = FUSEDLOSS_FLOAT64;
  q.targets = t.data();
  q.weight = pb.weight.empty() ? nullptr : pb.weight.data();
  q.label_smoothing = pb.label_smoothing;
  q.z_loss = pb.z_loss;
  q.softcap = pb.softcap;
  q.reduction = pb.reduction;
  q.loss = loss.data();
  fusedloss::forward(q);
  return loss.values();
}

struct outputs {
  std::vector<double> loss, grad_input, grad_weight, grad_bias;
};

// Runs `c` with every output given (poisoned, or holding `accumulated` for the weight's and
// bias's gradients).
outputs run(const problem& pb, fusedloss::call c, const std::vector<double>& upstream = {},
            double accumulated = std::nan("")) {
  auto p = params_of(pb);
  buffer input(FUSEDLOSS_FLOAT64, pb.input), w(FUSEDLOSS_FLOAT64, pb.linear_weight);
  buffer b(FUSEDLOSS_FLOAT64, pb.linear_bias), t(FUSEDLOSS_INT64, pb.targets);
  const int64_t count = pb.reduction == FUSEDLOSS_REDUCTION_NONE ? pb.n : 1;
  buffer loss = buffer::poisoned(FUSEDLOSS_FLOAT64, count);
  buffer gi = buffer::poisoned(FUSEDLOSS_FLOAT64, pb.n * pb.h);
  const bool accumulate = !std::isnan(accumulated);
  buffer gw = accumulate ? buffer(FUSEDLOSS_FLOAT64, std::vector<double>(pb.v * pb.h, accumulated))
                         : buffer::poisoned(FUSEDLOSS_FLOAT64, pb.v * pb.h);
  buffer gb = accumulate ? buffer(FUSEDLOSS_FLOAT64, std::vector<double>(pb.v, accumulated))
                         : buffer::poisoned(FUSEDLOSS_FLOAT64, pb.v);
  buffer up(FUSEDLOSS_FLOAT64, upstream);
  p.input = input.data();
  p.linear_weight = w.data();
  p.linear_bias = b.data();
  p.targets = t.data();
  p.loss = c == fusedloss::call::backward ? nullptr : loss.data();
  p.grad_input = gi.data();
  p.grad_linear_weight = gw.data();
  p.grad_linear_bias = pb.linear_bias.empty() ? nullptr : gb.data();
  p.accumulate_grad_linear = accumulate;
  p.grad_loss = up.data();
  fusedloss::run(p, c);
  return {loss.values(), gi.values(), gw.values(), gb.values()};
}

// The loss (summed over rows under none) as a function of one of the inputs, for differences.
double total_loss(problem pb) {
  double total = 0;
  for (double l : cross_entropy_of_product(pb)) total += l;
  return total;
}

void expect_close(const std::vector<double>& got, const std::vector<double>& want, double tol,
                  const char* what) {
  ASSERT_EQ(got.size(), want.size()) << what;
  for (size_t i = 0; i < got.size(); ++i) {
    EXPECT_NEAR(got[i], want[i], tol * (1 + std::abs(want[i]))) << what << "[" << i << "]";
  }
}

// Central differences of a float64 function of smooth inputs, h = 1e-5: truncation error about
// h^2 * |f'''| and cancellation about 1e-16 / h relative; 1e-7 bounds both here.
constexpr double kDifferenceTolerance = 1e-7;
// Cross-entropy of the same logits through another order of sums: float64 rounding only.
constexpr double kValueTolerance = 1e-12;

void check_gradients(problem pb) {
  const outputs got = run(pb, fusedloss::call::forward_backward);
  expect_close(got.loss, cross_entropy_of_product(pb), kValueTolerance, "loss");
  const auto differences = [&](std::vector<double> problem::*field) {
    return checks::finite_difference(
        [&](const std::vector<double>& x) {
          problem q = pb;
          q.*field = x;
          return total_loss(q) * pb.grad_scale;
        },
        pb.*field, 1e-5);
  };
  expect_close(got.grad_input, differences(&problem::input), kDifferenceTolerance, "grad_input");
  expect_close(got.grad_weight, differences(&problem::linear_weight), kDifferenceTolerance,
               "grad_linear_weight");
  if (!pb.linear_bias.empty()) {
    expect_close(got.grad_bias, differences(&problem::linear_bias), kDifferenceTolerance,
                 "grad_linear_bias");
  }
}

TEST(LinearCrossEntropy, GradientsAreFiniteDifferencesOnOddShapes) {
  SEEDED_RNG(rng);
  for (int64_t n : {1, 7}) {
    for (int64_t h : {1, 7, 33}) {
      for (int64_t v : {1, 7, 33}) {
        for (bool bias : {false, true}) {
          SCOPED_TRACE("N " + std::to_string(n) + " H " + std::to_string(h) + " V " +
                       std::to_string(v) + (bias ? " with bias" : ""));
          check_gradients(random_problem(rng, n, h, v, bias));
        }
      }
    }
  }
}

TEST(LinearCrossEntropy, EveryOptionAndReduction) {
  SEEDED_RNG(rng);
  for (int options = 0; options < 16; ++options) {
    for (fusedloss_reduction reduction :
         {FUSEDLOSS_REDUCTION_NONE, FUSEDLOSS_REDUCTION_MEAN, FUSEDLOSS_REDUCTION_SUM}) {
      SCOPED_TRACE("options " + std::to_string(options) + ", " +
                   fusedloss_reduction_string(reduction));
      problem pb = random_problem(rng, 5, 6, 9, options % 2 == 0);
      if (options & 1) {
        for (double w : checks::uniform(rng, 9, 0.25, 2)) pb.weight.push_back(float(w));
      }
      if (options & 2) pb.label_smoothing = 0.2;
      if (options & 4) pb.z_loss = 0.05;
      if (options & 8) pb.softcap = 2;
      pb.reduction = reduction;
      pb.grad_scale = 0.5f;
      check_gradients(pb);
    }
  }
}

TEST(LinearCrossEntropy, BackwardIsTheFusedGradientTimesTheUpstream) {
  SEEDED_RNG(rng);
  for (fusedloss_reduction reduction : {FUSEDLOSS_REDUCTION_NONE, FUSEDLOSS_REDUCTION_MEAN}) {
    problem pb = random_problem(rng, 6, 5, 8, true);
    pb.reduction = reduction;
    pb.label_smoothing = 0.1;
    const bool none = reduction == FUSEDLOSS_REDUCTION_NONE;
    const std::vector<double> upstream =
        none ? checks::uniform(rng, pb.n, 0.5, 2) : std::vector<double>{1.75};
    const outputs bw = run(pb, fusedloss::call::backward, upstream);
    // The same gradient as finite differences of the upstream-weighted loss.
    const auto weighted = [&](problem q) {
      const std::vector<double> l = cross_entropy_of_product(q);
      double s = 0;
      for (size_t i = 0; i < l.size(); ++i) s += l[i] * upstream[none ? i : 0];
      return s;
    };
    const std::vector<double> want = checks::finite_difference(
        [&](const std::vector<double>& x) {
          problem q = pb;
          q.linear_weight = x;
          return weighted(q);
        },
        pb.linear_weight, 1e-5);
    expect_close(bw.grad_weight, want, kDifferenceTolerance, "grad_linear_weight");
    for (double l : bw.loss) EXPECT_TRUE(std::isnan(l)) << "backward wrote the loss";
  }
}

TEST(LinearCrossEntropy, AccumulationAddsToTheWeightAndBiasGradients) {
  SEEDED_RNG(rng);
  const problem pb = random_problem(rng, 4, 3, 5, true);
  const outputs fresh = run(pb, fusedloss::call::forward_backward);
  const outputs added = run(pb, fusedloss::call::forward_backward, {}, 0.25);
  for (size_t i = 0; i < fresh.grad_weight.size(); ++i) {
    EXPECT_NEAR(added.grad_weight[i], fresh.grad_weight[i] + 0.25, 1e-15);
  }
  for (size_t i = 0; i < fresh.grad_bias.size(); ++i) {
    EXPECT_NEAR(added.grad_bias[i], fresh.grad_bias[i] + 0.25, 1e-15);
  }
  EXPECT_EQ(added.grad_input, fresh.grad_input);  // the input's gradient never accumulates
}

TEST(LinearCrossEntropy, SixteenBitInputsWithFloat32WeightGradient) {
  SEEDED_RNG(rng);
  const problem pb = random_problem(rng, 7, 16, 11, true);
  for (fusedloss_dtype dtype : {FUSEDLOSS_BFLOAT16, FUSEDLOSS_FLOAT16, FUSEDLOSS_FLOAT32}) {
    SCOPED_TRACE(fusedloss_dtype_string(dtype));
    // The inputs rounded to the dtype: the float64 run of the rounded values is the oracle.
    problem rounded = pb;
    rounded.input = checks::round_to(dtype, pb.input);
    rounded.linear_weight = checks::round_to(dtype, pb.linear_weight);
    rounded.linear_bias = checks::round_to(dtype, pb.linear_bias);
    const outputs oracle = run(rounded, fusedloss::call::forward_backward);
    auto p = params_of(rounded);
    buffer input(dtype, rounded.input), w(dtype, rounded.linear_weight);
    buffer b(dtype, rounded.linear_bias), t(FUSEDLOSS_INT64, rounded.targets);
    buffer loss = buffer::poisoned(FUSEDLOSS_FLOAT32, 1);
    buffer gi = buffer::poisoned(dtype, pb.n * pb.h);
    buffer gw = buffer::poisoned(FUSEDLOSS_FLOAT32, pb.v * pb.h);
    p.input_dtype = dtype;
    p.grad_linear_dtype = FUSEDLOSS_FLOAT32;
    p.input = input.data();
    p.linear_weight = w.data();
    p.linear_bias = b.data();
    p.targets = t.data();
    p.loss = loss.data();
    p.grad_input = gi.data();
    p.grad_linear_weight = gw.data();
    fusedloss::forward_backward(p);
    // Each output is the oracle's double rounded once to its dtype.
    const checks::tolerance f32 = checks::rounding_tolerance(FUSEDLOSS_FLOAT32);
    const checks::tolerance own = checks::rounding_tolerance(dtype);
    EXPECT_TRUE(f32.accepts(loss[0], oracle.loss[0]));
    for (size_t i = 0; i < oracle.grad_input.size(); ++i) {
      EXPECT_TRUE(own.accepts(gi[i], oracle.grad_input[i])) << i;
    }
    for (size_t i = 0; i < oracle.grad_weight.size(); ++i) {
      EXPECT_TRUE(f32.accepts(gw[i], oracle.grad_weight[i])) << i;
    }
  }
}

TEST(LinearCrossEntropy, InvalidTargetsAreReported) {
  SEEDED_RNG(rng);
  problem pb = random_problem(rng, 3, 2, 4, false);
  pb.targets[0] = 4;
  auto p = params_of(pb);
  buffer input(FUSEDLOSS_FLOAT64, pb.input), w(FUSEDLOSS_FLOAT64, pb.linear_weight);
  buffer t(FUSEDLOSS_INT64, pb.targets), loss = buffer::poisoned(FUSEDLOSS_FLOAT64, 1);
  int64_t counter = 0;
  p.input = input.data();
  p.linear_weight = w.data();
  p.targets = t.data();
  p.loss = loss.data();
  p.invalid_target_count = &counter;
  fusedloss_error e;
  EXPECT_EQ(fusedloss_linear_cross_entropy_forward(&p, nullptr, 0, nullptr, &e),
            FUSEDLOSS_INVALID_TARGET);
  EXPECT_EQ(counter, 1);
  EXPECT_TRUE(std::isfinite(loss[0]));
}

TEST(LinearCrossEntropy, BadInputIsRefusedWithNothingWritten) {
  buffer input(FUSEDLOSS_FLOAT32, std::vector<double>(6, 0.5));
  buffer w(FUSEDLOSS_FLOAT32, std::vector<double>(12, 0.25)), t(FUSEDLOSS_INT64, {0, 3});
  buffer loss = buffer::poisoned(FUSEDLOSS_FLOAT32, 1);
  buffer gi = buffer::poisoned(FUSEDLOSS_FLOAT32, 6);
  const auto good = [&] {
    auto p = fusedloss::make_linear_cross_entropy_params();
    p.batch = 2;
    p.hidden = 3;
    p.num_classes = 4;
    p.input = input.data();
    p.linear_weight = w.data();
    p.targets = t.data();
    p.loss = loss.data();
    p.grad_input = gi.data();
    return p;
  };
  struct bad {
    const char* argument;
    void (*spoil)(fusedloss::linear_cross_entropy_params&);
  };
  const bad cases[] = {
      {"hidden", [](auto& p) { p.hidden = 0; }},
      {"num_classes", [](auto& p) { p.num_classes = 0; }},
      {"num_classes", [](auto& p) { p.num_classes = int64_t{1} << 62; }},  // V * H overflows
      {"batch", [](auto& p) { p.batch = -2; }},
      {"input_row_stride", [](auto& p) { p.input_row_stride = 2; }},
      {"grad_input_row_stride", [](auto& p) { p.grad_input_row_stride = 1; }},
      {"input_dtype", [](auto& p) { p.input_dtype = FUSEDLOSS_INT64; }},
      {"grad_linear_dtype", [](auto& p) { p.grad_linear_dtype = FUSEDLOSS_FLOAT16; }},
      {"targets_dtype", [](auto& p) { p.targets_dtype = FUSEDLOSS_FLOAT32; }},
      {"input", [](auto& p) { p.input = nullptr; }},
      {"linear_weight", [](auto& p) { p.linear_weight = nullptr; }},
      {"grad_input", [](auto& p) { p.grad_input = const_cast<void*>(p.input); }},
      {"label_smoothing", [](auto& p) { p.label_smoothing = -0.5; }},
      {"reduction", [](auto& p) { p.reduction = static_cast<fusedloss_reduction>(9); }},
  };
  for (const bad& c : cases) {
    auto p = good();
    c.spoil(p);
    fusedloss_error e;
    EXPECT_EQ(fusedloss_linear_cross_entropy_forward_backward(&p, nullptr, 0, nullptr, &e),
              FUSEDLOSS_INVALID_ARGUMENT)
        << c.argument;
    EXPECT_STREQ(e.argument, c.argument);
    EXPECT_TRUE(std::isnan(loss[0])) << c.argument << ": loss written";
    for (double g : gi.values()) EXPECT_TRUE(std::isnan(g)) << c.argument << ": grad written";
  }
  auto p = good();
  fusedloss_error e;
  EXPECT_EQ(fusedloss_linear_cross_entropy_forward_backward(&p, nullptr, 0, nullptr, &e),
            FUSEDLOSS_SUCCESS)
      << e.message;
}

}  // namespace
