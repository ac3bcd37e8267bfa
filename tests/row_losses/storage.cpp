// How the row losses store what they read and write: the gradient in place of the logits, and
// float32, float16 and bfloat16 logits against float64 on the same rounded inputs.
#include <cmath>
#include <ostream>
#include <string>
#include <type_traits>
#include <vector>

#include "support.hpp"

namespace row_loss_tests {
namespace {

struct in_place_case {
  fusedloss_dtype dtype;
  call c;
};

void PrintTo(const in_place_case& c, std::ostream* os) {
  *os << names::join({fusedloss_dtype_string(c.dtype), fusedloss::name(c.c)});
}

std::vector<in_place_case> in_place_cases() {
  std::vector<in_place_case> cases;
  for (const fusedloss_dtype dtype : {FUSEDLOSS_FLOAT64, FUSEDLOSS_BFLOAT16}) {
    for (const call c : {call::backward, call::forward_backward}) cases.push_back({dtype, c});
  }
  return cases;
}

// grad_logits == logits: the gradient overwrites the logits in place and matches the out-of-place
// one; the padding columns keep their values.
class InPlaceGradient : public ::testing::TestWithParam<in_place_case> {};

TEST_P(InPlaceGradient, MatchesOutOfPlace) {
  SEEDED_RNG(rng);
  const auto [dtype, o] = GetParam();
  ce_params p = with_shape(fusedloss::make_cross_entropy_params(), kShapes[2]);
  p.grad_row_stride = 0;
  p.logits_dtype = dtype;
  p.label_smoothing = 0.1;
  p.softcap = 3;
  p.z_loss = 0.01;
  const buffer targets(FUSEDLOSS_INT64, random_classes(p, true, rng));
  p.targets = targets.data();
  p.targets_dtype = FUSEDLOSS_INT64;
  std::vector<double> x = random_logits(p, rng);
  for (size_t i = 0; i < x.size(); ++i) {
    if (std::isnan(x[i])) x[i] = 42;  // padding
  }
  const std::vector<double> upstream = {1.5};
  const outputs want = call_loss(p, o, x, upstream);
  buffer logits(dtype, x);
  buffer grad_loss(loss_dtype_of(p), upstream);
  buffer loss = buffer::poisoned(loss_dtype_of(p), 1);
  p.logits = logits.data();
  p.grad_logits = logits.data();
  p.grad_loss = grad_loss.data();
  p.loss = o == call::backward ? nullptr : loss.data();
  fusedloss::run(p, o);
  const std::vector<double> got = logits.values();
  for (size_t i = 0; i < got.size(); ++i) {
    if (std::isnan(want.grad[i])) {
      EXPECT_EQ(got[i], 42.0) << "padding " << i;
    } else {
      EXPECT_EQ(got[i], want.grad[i]) << i;
    }
  }
}

INSTANTIATE_TEST_SUITE_P(RowLossEdges, InPlaceGradient, ::testing::ValuesIn(in_place_cases()),
                         names::by_name{});

// float32, float16 and bfloat16 logits against the float64 call on the same rounded inputs: one
// rounding of the double result apart, to the loss dtype (float32) and to the gradient's dtype.
class LowPrecisionLogits : public ::testing::TestWithParam<dtype_reduction> {};

TEST_P(LowPrecisionLogits, MatchFloat64) {
  SEEDED_RNG(rng);
  const checks::tolerance loss_tol = checks::rounding_tolerance(FUSEDLOSS_FLOAT32);
  const auto compare = [&](auto p, const std::vector<double>& x, fusedloss_dtype dtype) {
    const std::vector<double> upstream =
        checks::round_to(FUSEDLOSS_FLOAT32, checks::uniform(rng, loss_count(p), 0.5, 2.0));
    const std::vector<double> rounded = checks::round_to(dtype, x);
    auto wide = p;
    wide.logits_dtype = FUSEDLOSS_FLOAT64;
    p.logits_dtype = dtype;
    const outputs want = call_loss(wide, call::forward_backward, rounded);
    const outputs got = call_loss(p, call::forward_backward, rounded);
    expect_close(got.loss, want.loss, loss_tol, "loss");
    expect_close(got.lse, want.lse, loss_tol, "lse");
    if constexpr (std::is_same_v<decltype(p), ce_params>) {
      expect_close(got.z_loss, want.z_loss, loss_tol, "z-loss");
    }
    expect_close(got.grad, want.grad, checks::rounding_tolerance(dtype), "forward_backward grad");
    expect_close(call_loss(p, call::backward, rounded, upstream).grad,
                 call_loss(wide, call::backward, rounded, upstream).grad,
                 checks::rounding_tolerance(dtype), "backward grad");
  };
  const auto [dtype, reduction] = GetParam();
  ce_params p = with_shape(fusedloss::make_cross_entropy_params(), kShapes[2]);
  p.reduction = reduction;
  p.label_smoothing = 0.1;
  p.z_loss = 0.01;
  p.softcap = 5;
  const std::vector<float> weight = to_float(checks::uniform(rng, p.num_classes, 0.5, 2));
  p.weight = weight.data();
  const buffer classes(FUSEDLOSS_INT32, random_classes(p, true, rng));
  p.targets = classes.data();
  p.targets_dtype = FUSEDLOSS_INT32;
  const std::vector<double> x = random_logits(p, rng, -8, 8);
  {
    SCOPED_TRACE("index targets");
    compare(p, x, dtype);
  }
  for (const fusedloss_dtype targets_dtype : {FUSEDLOSS_FLOAT32, dtype}) {
    SCOPED_TRACE(std::string("probability targets ") + fusedloss_dtype_string(targets_dtype));
    const buffer q(targets_dtype, random_probabilities(p, rng));
    // Both calls read the same rounded probabilities, as float64 in the wide call when needed.
    const buffer q_wide(targets_dtype == FUSEDLOSS_FLOAT32 ? FUSEDLOSS_FLOAT32 : FUSEDLOSS_FLOAT64,
                        q.values());
    ce_params soft = p;
    soft.targets = q_wide.data();
    soft.targets_dtype = q_wide.dtype();
    if (targets_dtype == FUSEDLOSS_FLOAT32) {
      compare(soft, x, dtype);
    } else {
      // The narrow call must read targets in its own dtype; compare by hand.
      const std::vector<double> rounded = checks::round_to(dtype, x);
      ce_params narrow = soft;
      narrow.logits_dtype = dtype;
      narrow.targets = q.data();
      narrow.targets_dtype = dtype;
      soft.logits_dtype = FUSEDLOSS_FLOAT64;
      const outputs want = call_loss(soft, call::forward_backward, rounded);
      const outputs got = call_loss(narrow, call::forward_backward, rounded);
      expect_close(got.loss, want.loss, loss_tol, "loss");
      expect_close(got.grad, want.grad, checks::rounding_tolerance(dtype), "grad");
    }
  }
  {
    SCOPED_TRACE("softmax focal");
    focal_params f = with_shape(fusedloss::make_softmax_focal_params(), kShapes[2]);
    f.reduction = reduction;
    f.gamma = 2;
    f.alpha = weight.data();
    f.ignore_index = p.ignore_index;
    f.targets = classes.data();
    f.targets_dtype = FUSEDLOSS_INT32;
    compare(f, x, dtype);
  }
}

INSTANTIATE_TEST_SUITE_P(RowLossEdges, LowPrecisionLogits,
                         ::testing::ValuesIn(with_every_reduction(
                             {FUSEDLOSS_FLOAT32, FUSEDLOSS_FLOAT16, FUSEDLOSS_BFLOAT16})),
                         names::by_name{});

}  // namespace
}  // namespace row_loss_tests
