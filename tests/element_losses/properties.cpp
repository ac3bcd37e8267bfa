// The element losses' properties docs/SEMANTICS.md promises: sigmoid focal with gamma 0 and no
// alpha is BCE bitwise and never exceeds it, sum is mean times the element count, and
// forward_backward is forward plus backward with the scaled upstream.
#include <cmath>
#include <limits>
#include <ostream>
#include <vector>

#include "support.hpp"

namespace element_loss_tests {
namespace {

struct gamma_zero_case {
  fusedloss_dtype dtype;
  fusedloss_reduction reduction;
  call c;
};

void PrintTo(const gamma_zero_case& c, std::ostream* os) {
  *os << names::join({name_of(c.dtype), name_of(c.reduction), fusedloss::name(c.c)});
}

std::vector<gamma_zero_case> gamma_zero_cases() {
  std::vector<gamma_zero_case> cases;
  for (const auto dtype : {f64, f32, f16, bf16}) {
    for (const auto r : reductions) {
      for (const auto o : all_calls) cases.push_back({dtype, r, o});
    }
  }
  return cases;
}

class SigmoidFocalWithGammaZeroAndNoAlpha : public random_test<gamma_zero_case> {};

TEST_P(SigmoidFocalWithGammaZeroAndNoAlpha, IsBceBitwise) {
  const auto [dtype, r, o] = GetParam();
  constexpr size_t m = 24;
  auto x = checks::uniform(rng, m, -8.0, 8.0);
  auto y = mixed_targets(rng, m);
  // Large and infinite logits too, the infinite ones where BCE's loss is 0 (not +inf, which would
  // leave nothing to compare under sum and mean).
  const std::vector<double> extra_x = {30, -30, 1e4, -1e4, -inf, inf};
  const std::vector<double> extra_y = {1, 0, 0, 1, 0, 1};
  x.insert(x.end(), extra_x.begin(), extra_x.end());
  y.insert(y.end(), extra_y.begin(), extra_y.end());
  const auto xr = checks::round_to(dtype, x);
  const auto upstream =
      checks::round_to(f32, checks::uniform(rng, r == none ? xr.size() : 1, -2.0, 2.0));
  const auto bce = call_loss(bce_params(r), o, xr, dtype, y, f32, upstream);
  const auto focal = call_loss(focal_params(-1.0, 0.0, r), o, xr, dtype, y, f32, upstream);
  expect_bitwise_equal(focal.loss, bce.loss, "loss");
  expect_bitwise_equal(focal.grad, bce.grad, "grad");
}

INSTANTIATE_TEST_SUITE_P(ElementLossRandom, SigmoidFocalWithGammaZeroAndNoAlpha,
                         ::testing::ValuesIn(gamma_zero_cases()), names::by_name{});

struct gamma_case {
  double gamma;
};

void PrintTo(const gamma_case& c, std::ostream* os) { *os << "gamma" << names::number(c.gamma); }

class SigmoidFocal : public random_test<gamma_case> {};

TEST_P(SigmoidFocal, NeverExceedsBce) {
  const double gamma = GetParam().gamma;
  constexpr size_t m = 64;
  const auto x = checks::uniform(rng, m, -10.0, 10.0);
  const auto y = mixed_targets(rng, m);
  const auto bce = call_loss64(bce_params(), call::forward, x, y).loss;
  const auto focal = call_loss64(focal_params(-1.0, gamma), call::forward, x, y).loss;
  for (size_t i = 0; i < m; ++i) {
    EXPECT_LE(focal[i], bce[i]) << "gamma " << gamma << ", x " << x[i] << ", y " << y[i];
  }
}

INSTANTIATE_TEST_SUITE_P(ElementLossRandom, SigmoidFocal,
                         ::testing::Values(gamma_case{0.0}, gamma_case{0.5}, gamma_case{1.0},
                                           gamma_case{2.0}, gamma_case{3.5}),
                         names::by_name{});

class Reductions : public random_test<loss_config> {};

TEST_P(Reductions, SumIsMeanTimesCount) {
  constexpr size_t m = 36;
  const auto x = checks::uniform(rng, m, -5.0, 5.0);
  const auto y = mixed_targets(rng, m);
  const double g = checks::uniform(rng, 1, 0.5, 2.0)[0];
  with_params_of(GetParam(), [&](auto p) {
    p.reduction = sum;
    const auto total = call_loss64(p, call::forward_backward, x, y);
    const auto total_backward = call_loss64(p, call::backward, x, y, {g});
    p.reduction = mean;
    const auto average = call_loss64(p, call::forward_backward, x, y);
    const auto average_backward = call_loss64(p, call::backward, x, y, {g * m});
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

INSTANTIATE_TEST_SUITE_P(ElementLossRandom, Reductions, ::testing::ValuesIn(all_losses),
                         names::by_name{});

struct forward_backward_case {
  loss_config loss;
  fusedloss_dtype dtype;
  fusedloss_reduction reduction;
};

void PrintTo(const forward_backward_case& c, std::ostream* os) {
  *os << names::join({name_of(c.loss), name_of(c.dtype), name_of(c.reduction)});
}

std::vector<forward_backward_case> forward_backward_cases() {
  std::vector<forward_backward_case> cases;
  for (const loss_config loss : all_losses) {
    for (const auto dtype : {f64, f32, bf16}) {
      for (const auto r : reductions) cases.push_back({loss, dtype, r});
    }
  }
  return cases;
}

class ForwardBackward : public random_test<forward_backward_case> {};

TEST_P(ForwardBackward, IsForwardPlusBackward) {
  const forward_backward_case& c = GetParam();
  const fusedloss_dtype dtype = c.dtype;
  const fusedloss_reduction r = c.reduction;
  constexpr size_t m = 12;
  const auto x = checks::uniform(rng, m, -5.0, 5.0);
  const auto y = mixed_targets(rng, m);
  // Dyadic scales, so grad_scale * *grad_scale_ptr = -0.9375 exactly, in every loss dtype.
  const float scale = 1.5f, scale_in_memory = -0.625f;
  with_params_of(c.loss, [&](auto p) {
    const auto xr = checks::round_to(dtype, x);
    p.reduction = r;
    const size_t outputs = r == none ? m : 1;
    const auto forward = call_loss(p, call::forward, xr, dtype, y, dtype).loss;

    p.grad_scale = scale;
    p.grad_scale_ptr = nullptr;
    const auto fb = call_loss(p, call::forward_backward, xr, dtype, y, dtype);
    expect_bitwise_equal(fb.loss, forward, "loss");
    expect_bitwise_equal(
        fb.grad,
        call_loss(p, call::backward, xr, dtype, y, dtype, std::vector<double>(outputs, 1.5)).grad,
        "grad with grad_scale");

    p.grad_scale_ptr = &scale_in_memory;
    const auto scaled = call_loss(p, call::forward_backward, xr, dtype, y, dtype);
    expect_bitwise_equal(scaled.loss, forward, "loss with grad_scale_ptr");
    const auto want =
        call_loss(p, call::backward, xr, dtype, y, dtype, std::vector<double>(outputs, -0.9375))
            .grad;
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
  });
}

INSTANTIATE_TEST_SUITE_P(ElementLossRandom, ForwardBackward,
                         ::testing::ValuesIn(forward_backward_cases()), names::by_name{});

}  // namespace
}  // namespace element_loss_tests
