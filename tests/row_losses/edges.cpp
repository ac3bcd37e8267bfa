// The row losses' edge cases and bad input: an empty batch, a single class, a zero normaliser,
// large, infinite and NaN logits, ignored rows under infinite logits, and targets out of range
// (ignored, counted and reported).
#include <cmath>
#include <cstdint>
#include <ostream>
#include <vector>

#include "support.hpp"

namespace row_loss_tests {
namespace {

const char* policy_name(bool zero_policy) {
  return zero_policy ? "emptymean_zero" : "emptymean_nan";
}

struct empty_batch_case {
  shape s;
  bool zero_policy;
  fusedloss_reduction reduction;
};

void PrintTo(const empty_batch_case& c, std::ostream* os) {
  *os << names::join(
      {name_of(c.s), policy_name(c.zero_policy), fusedloss_reduction_string(c.reduction)});
}

std::vector<empty_batch_case> empty_batch_cases() {
  std::vector<empty_batch_case> cases;
  for (const bool zero_policy : {false, true}) {
    for (const fusedloss_reduction reduction : kReductions) {
      for (const shape s : {shape{0, 3, 1, 0, 0}, shape{2, 3, 0, 0, 0}}) {
        cases.push_back({s, zero_policy, reduction});
      }
    }
  }
  return cases;
}

class EmptyBatch : public ::testing::TestWithParam<empty_batch_case> {};

TEST_P(EmptyBatch, FollowsTheEmptyMeanPolicy) {
  const auto [s, zero_policy, reduction] = GetParam();
  ce_params p = with_shape(fusedloss::make_cross_entropy_params(), s);
  p.logits_dtype = FUSEDLOSS_FLOAT64;
  p.targets_dtype = FUSEDLOSS_INT64;
  p.reduction = reduction;
  p.empty_mean = zero_policy ? FUSEDLOSS_EMPTY_MEAN_ZERO : FUSEDLOSS_EMPTY_MEAN_NAN;
  focal_params f = with_shape(fusedloss::make_softmax_focal_params(), s);
  f.logits_dtype = FUSEDLOSS_FLOAT64;
  f.targets_dtype = FUSEDLOSS_INT64;
  f.reduction = reduction;
  f.empty_mean = p.empty_mean;
  const std::vector<double> upstream(loss_count(p), 2.0);
  const std::vector<double> x(s.batch * s.classes * s.spatial, 1.0);
  for (const outputs& o :
       {call_loss(p, call::forward_backward, x), call_loss(f, call::forward_backward, x)}) {
    if (reduction == FUSEDLOSS_REDUCTION_NONE) {
      EXPECT_TRUE(o.loss.empty());
    } else if (reduction == FUSEDLOSS_REDUCTION_SUM || zero_policy) {
      expect_identical(o.loss, {0.0}, "loss");
    } else {
      EXPECT_TRUE(std::isnan(o.loss[0]));
    }
  }
  EXPECT_NO_THROW(call_loss(p, call::backward, x, upstream));
  EXPECT_NO_THROW(call_loss(f, call::backward, x, upstream));
}

INSTANTIATE_TEST_SUITE_P(RowLossEdges, EmptyBatch, ::testing::ValuesIn(empty_batch_cases()),
                         names::by_name{});

struct smoothing_case {
  double eps;
};

void PrintTo(const smoothing_case& c, std::ostream* os) {
  *os << "smoothing" << names::number(c.eps);
}

// C = 1: p = 1 and lp = 0 for any finite logit, so loss and gradient are exactly 0, smoothed or
// not.
class SingleClass : public ::testing::TestWithParam<smoothing_case> {};

TEST_P(SingleClass, IsExactlyZero) {
  const buffer targets(FUSEDLOSS_INT64, {0, 0, 0});
  ce_params p = fusedloss::make_cross_entropy_params();
  p.batch = 3;
  p.num_classes = 1;
  p.logits_dtype = FUSEDLOSS_FLOAT64;
  p.targets = targets.data();
  p.targets_dtype = FUSEDLOSS_INT64;
  p.reduction = FUSEDLOSS_REDUCTION_NONE;
  p.label_smoothing = GetParam().eps;
  const outputs o = call_loss(p, call::forward_backward, {-7.5, 0, 1e4});
  expect_identical(o.loss, {0, 0, 0}, "loss");
  expect_identical(o.grad, {0, 0, 0}, "grad");
  expect_identical(o.lse, {-7.5, 0, 1e4}, "lse");
}

INSTANTIATE_TEST_SUITE_P(RowLossEdges, SingleClass,
                         ::testing::Values(smoothing_case{0.0}, smoothing_case{0.5}),
                         names::by_name{});

struct zero_normaliser_case {
  bool zero_policy;
  fusedloss_reduction reduction;
  bool weighted;
};

void PrintTo(const zero_normaliser_case& c, std::ostream* os) {
  *os << names::join({policy_name(c.zero_policy), fusedloss_reduction_string(c.reduction),
                      c.weighted ? "zero_total_weight" : "all_rows_ignored"});
}

std::vector<zero_normaliser_case> zero_normaliser_cases() {
  std::vector<zero_normaliser_case> cases;
  for (const bool zero_policy : {false, true}) {
    for (const fusedloss_reduction reduction : kReductions) {
      for (const bool weighted : {false, true}) cases.push_back({zero_policy, reduction, weighted});
    }
  }
  return cases;
}

// Every row ignored, or all weight 0 on the targets' classes: mean is NaN or 0 per the policy, sum
// is 0 and the gradient exactly 0, even under a NaN or -inf row (deliberate differences 2 and 5).
class ZeroNormaliser : public ::testing::TestWithParam<zero_normaliser_case> {};

TEST_P(ZeroNormaliser, FollowsTheEmptyMeanPolicy) {
  const auto [zero_policy, reduction, weighted] = GetParam();
  const std::vector<double> x = {-kInf, -kInf, -kInf, kNaN, 1, 2, 0.5, -kInf, 3};
  const std::vector<float> weight = {0, 1, 0};
  const buffer all_ignored(FUSEDLOSS_INT64, {-100, -100, -100});
  const buffer zero_weight(FUSEDLOSS_INT32, {0, -100, 2});
  ce_params p = fusedloss::make_cross_entropy_params();
  p.batch = 3;
  p.num_classes = 3;
  p.logits_dtype = FUSEDLOSS_FLOAT64;
  p.targets = weighted ? zero_weight.data() : all_ignored.data();
  p.targets_dtype = weighted ? FUSEDLOSS_INT32 : FUSEDLOSS_INT64;
  p.weight = weighted ? weight.data() : nullptr;
  p.z_loss = 0.1;
  p.reduction = reduction;
  p.empty_mean = zero_policy ? FUSEDLOSS_EMPTY_MEAN_ZERO : FUSEDLOSS_EMPTY_MEAN_NAN;
  const std::vector<double> upstream(loss_count(p), 3.0);
  const outputs fb = call_loss(p, call::forward_backward, x);
  const outputs bw = call_loss(p, call::backward, x, upstream);
  const std::vector<double> zeros(9, 0.0);
  if (reduction == FUSEDLOSS_REDUCTION_MEAN) {
    for (const double v : {fb.loss[0], fb.z_loss[0]}) {
      if (zero_policy) {
        EXPECT_EQ(v, 0.0);
      } else {
        EXPECT_TRUE(std::isnan(v));
      }
    }
    expect_identical(fb.grad, zeros, "forward_backward grad");
    expect_identical(bw.grad, zeros, "backward grad");
  } else if (!weighted) {
    expect_identical(fb.loss, std::vector<double>(loss_count(p), 0.0), "loss");
    expect_identical(fb.grad, zeros, "forward_backward grad");
    expect_identical(bw.grad, zeros, "backward grad");
  }
}

INSTANTIATE_TEST_SUITE_P(RowLossEdges, ZeroNormaliser, ::testing::ValuesIn(zero_normaliser_cases()),
                         names::by_name{});

// [1e4, -1e4, 0]: exp underflows to exactly 0 away from the max, so the losses are 0, 2e4 and 1e4
// and the gradients are e_0 - e_y, exactly, in float64 and float16 (1e4 is a float16 value).
class LargeLogits : public ::testing::TestWithParam<fusedloss_dtype> {};

TEST_P(LargeLogits, AreExact) {
  const fusedloss_dtype dtype = GetParam();
  const buffer targets(FUSEDLOSS_INT64, {0, 1, 2});
  const std::vector<double> x = {1e4, -1e4, 0, 1e4, -1e4, 0, 1e4, -1e4, 0};
  const std::vector<double> grad = {0, 0, 0, 1, -1, 0, 1, 0, -1};
  ce_params p = fusedloss::make_cross_entropy_params();
  p.batch = 3;
  p.num_classes = 3;
  p.logits_dtype = dtype;
  p.targets = targets.data();
  p.targets_dtype = FUSEDLOSS_INT64;
  p.reduction = FUSEDLOSS_REDUCTION_NONE;
  outputs o = call_loss(p, call::forward_backward, x);
  expect_identical(o.loss, {0, 2e4, 1e4}, "cross-entropy loss");
  expect_identical(o.grad, grad, "cross-entropy grad");
  focal_params f = with_shape(fusedloss::make_softmax_focal_params(), {3, 3, 1, 0, 0});
  f.logits_dtype = dtype;
  f.targets = targets.data();
  f.targets_dtype = FUSEDLOSS_INT64;
  f.reduction = FUSEDLOSS_REDUCTION_NONE;
  for (const double gamma : {0.5, 2.0}) {
    SCOPED_TRACE("gamma " + names::number(gamma));
    f.gamma = gamma;
    o = call_loss(f, call::forward_backward, x);
    expect_identical(o.loss, {0, 2e4, 1e4}, "focal loss");
    expect_identical(o.grad, grad, "focal grad");
  }
}

INSTANTIATE_TEST_SUITE_P(RowLossEdges, LargeLogits,
                         ::testing::Values(FUSEDLOSS_FLOAT64, FUSEDLOSS_FLOAT16), names::by_name{});

TEST(RowLossEdges, InfinityAndNaN) {
  // Rows of C = 3 under none; each row's expectations per SEMANTICS "Bad input".
  const std::vector<double> x = {
      0,     -kInf, kLn3,  // 0: -inf on a non-target class: finite loss, gradient exactly 0 there
      -kInf, 0,     0,     // 1: -inf on the target: +inf loss, gradient e_y ... finite
      kNaN,  0,     0,     // 2: NaN: NaN everywhere
      kInf,  0,     0,     // 3: +inf: NaN everywhere
  };
  const buffer targets(FUSEDLOSS_INT64, {0, 0, 1, 1});
  ce_params p = fusedloss::make_cross_entropy_params();
  p.batch = 4;
  p.num_classes = 3;
  p.logits_dtype = FUSEDLOSS_FLOAT64;
  p.targets = targets.data();
  p.targets_dtype = FUSEDLOSS_INT64;
  p.reduction = FUSEDLOSS_REDUCTION_NONE;
  outputs o = call_loss(p, call::forward_backward, x);
  expect_close(o.loss, {kLn4, kInf, kNaN, kNaN}, kHand, "loss");
  expect_close(o.grad, {-0.75, 0, 0.75, -1, 0.5, 0.5, kNaN, kNaN, kNaN, kNaN, kNaN, kNaN}, kHand,
               "grad");

  // eps = 0.3 with weight [1, 2, 1]: the smoothing term makes row 0's loss +inf, and the masked
  // class gets -eps w_1 / C = -0.2; the gradient stays finite.
  const std::vector<float> weight = {1, 2, 1};
  p.weight = weight.data();
  p.label_smoothing = 0.3;
  p.batch = 1;
  o = call_loss(p, call::forward_backward, x);
  EXPECT_EQ(o.loss[0], kInf);
  EXPECT_DOUBLE_EQ(o.grad[1], -0.2);
  for (const double g : o.grad) EXPECT_TRUE(std::isfinite(g));
  // A zero weight on the masked class silences its -inf term: L = 0.7 ln 4 + 0.1 (ln 4 + ln(4/3)),
  // and that class's gradient is exactly 0.
  const std::vector<float> zero_on_mask = {1, 0, 1};
  p.weight = zero_on_mask.data();
  o = call_loss(p, call::forward_backward, x);
  expect_close(o.loss, {0.7 * kLn4 + 0.1 * (kLn4 + std::log(4.0 / 3.0))}, kHand, "zero weight");
  EXPECT_EQ(o.grad[1], 0.0);
  p.weight = nullptr;
  p.label_smoothing = 0;

  // Probability targets: a zero probability on the masked class silences it as well.
  const buffer q(FUSEDLOSS_FLOAT64, {0.5, 0, 0.5});
  ce_params soft = p;
  soft.targets = q.data();
  soft.targets_dtype = FUSEDLOSS_FLOAT64;
  o = call_loss(soft, call::forward_backward, x);
  expect_close(o.loss, {0.5 * kLn4 + 0.5 * std::log(4.0 / 3.0)}, kHand, "probabilities");
  expect_close(o.grad, {-0.25, 0, 0.25}, kHand, "probabilities grad");

  // The LSE of a row with a NaN is NaN wherever the NaN sits; an all -inf row's is -inf.
  p.batch = 3;
  o = call_loss(p, call::forward, {-kInf, kNaN, -kInf, -kInf, -kInf, -kInf, kNaN, 0, 1});
  EXPECT_TRUE(std::isnan(o.lse[0]));
  EXPECT_EQ(o.lse[1], -kInf);
  EXPECT_TRUE(std::isnan(o.lse[2]));
  for (const double l : o.loss) EXPECT_TRUE(std::isnan(l));

  // The soft-cap maps +-inf to +-s first: every row is finite except the NaN one, and the capped
  // classes get exactly 0 gradient (the cap is flat at infinity).
  p.batch = 4;
  p.softcap = 2;
  o = call_loss(p, call::forward_backward, x);
  EXPECT_TRUE(std::isfinite(o.loss[0]) && std::isfinite(o.loss[1]) && std::isfinite(o.loss[3]));
  EXPECT_TRUE(std::isnan(o.loss[2]));
  for (const int i : {1, 3, 9}) EXPECT_EQ(o.grad[i], 0.0) << i;
  for (const int i : {0, 2, 4, 5, 10, 11}) EXPECT_TRUE(std::isfinite(o.grad[i])) << i;
  // Row 3 capped is [2, 0, 0] with y = 1: L = log(e^2 + 2) - 0.
  EXPECT_NEAR(o.loss[3], std::log(std::exp(2.0) + 2), 1e-14);

  // Softmax focal follows the same rules.
  focal_params f = with_shape(fusedloss::make_softmax_focal_params(), {4, 3, 1, 0, 0});
  f.logits_dtype = FUSEDLOSS_FLOAT64;
  f.targets = targets.data();
  f.targets_dtype = FUSEDLOSS_INT64;
  f.reduction = FUSEDLOSS_REDUCTION_NONE;
  f.gamma = 0.5;
  o = call_loss(f, call::forward_backward, x);
  EXPECT_TRUE(std::isfinite(o.loss[0]));
  EXPECT_EQ(o.grad[1], 0.0);
  EXPECT_EQ(o.loss[1], kInf);
  for (int i = 0; i < 6; ++i) EXPECT_TRUE(std::isfinite(o.grad[i])) << i;
  EXPECT_TRUE(std::isnan(o.loss[2]) && std::isnan(o.loss[3]));
  for (int i = 6; i < 12; ++i) EXPECT_TRUE(std::isnan(o.grad[i])) << i;
}

// Deliberate difference 2: an ignored row's gradient is exactly 0 even when its logits are -inf
// (PyTorch gives NaN), and it changes nothing else.
class IgnoredRowsWithInfiniteLogits : public ::testing::TestWithParam<fusedloss_reduction> {};

TEST_P(IgnoredRowsWithInfiniteLogits, HaveZeroGradient) {
  const fusedloss_reduction reduction = GetParam();
  const buffer targets(FUSEDLOSS_INT64, {-100, 1, -100});
  const std::vector<double> x = {-kInf, -kInf, -kInf, 0, kLn3, -kInf, -kInf, kNaN, 0};
  ce_params p = fusedloss::make_cross_entropy_params();
  p.batch = 3;
  p.num_classes = 3;
  p.logits_dtype = FUSEDLOSS_FLOAT64;
  p.targets = targets.data();
  p.targets_dtype = FUSEDLOSS_INT64;
  p.reduction = reduction;
  p.label_smoothing = 0.1;
  const outputs o = call_loss(p, call::forward_backward, x);
  for (const int i : {0, 1, 2, 6, 7, 8}) EXPECT_EQ(o.grad[i], 0.0) << i;
  // Row 1 alone: [0, ln 3, -inf] with y = 1 and eps = 0.1 has +inf loss (the smoothing term).
  EXPECT_EQ(o.loss[reduction == FUSEDLOSS_REDUCTION_NONE ? 1 : 0], kInf);
  for (int i = 3; i < 6; ++i) EXPECT_TRUE(std::isfinite(o.grad[i])) << i;
  focal_params f = with_shape(fusedloss::make_softmax_focal_params(), {3, 3, 1, 0, 0});
  f.logits_dtype = FUSEDLOSS_FLOAT64;
  f.targets = targets.data();
  f.targets_dtype = FUSEDLOSS_INT64;
  f.reduction = reduction;
  const outputs of = call_loss(f, call::forward_backward, x);
  for (const int i : {0, 1, 2, 6, 7, 8}) EXPECT_EQ(of.grad[i], 0.0) << i;
  for (const double l : of.loss) EXPECT_TRUE(std::isfinite(l));
}

INSTANTIATE_TEST_SUITE_P(RowLossEdges, IgnoredRowsWithInfiniteLogits,
                         ::testing::ValuesIn(kReductions), names::by_name{});

// A target neither ignore_index nor in [0, C): the call completes, its row is ignored, the C call
// returns FUSEDLOSS_INVALID_TARGET (the C++ call throws it) and the count goes to the counter. The
// huge targets would crash any read of weight or logits at their index.
class OutOfRangeTargets : public ::testing::TestWithParam<dtype_reduction> {};

TEST_P(OutOfRangeTargets, AreIgnoredCountedAndReported) {
  SEEDED_RNG(rng);
  const auto [dtype, reduction] = GetParam();
  const int64_t huge64 = int64_t{1} << 60;
  const double huge = dtype == FUSEDLOSS_INT32 ? 2147483647.0 : static_cast<double>(huge64);
  const double very_negative =
      dtype == FUSEDLOSS_INT32 ? -2147483648.0 : -static_cast<double>(huge64);
  const buffer bad(dtype, {0, 3, 1, -1, huge, very_negative, 2});
  const buffer same_ignored(dtype, {0, -100, 1, -100, -100, -100, 2});
  const std::vector<float> weight = {1, 2, 3};
  const std::vector<double> x = checks::uniform(rng, 21, -2, 2);
  ce_params p = fusedloss::make_cross_entropy_params();
  p.batch = 7;
  p.num_classes = 3;
  p.logits_dtype = FUSEDLOSS_FLOAT64;
  p.targets_dtype = dtype;
  p.weight = weight.data();
  p.label_smoothing = 0.1;
  p.reduction = reduction;
  p.targets = same_ignored.data();
  const std::vector<double> upstream(loss_count(p), 1.25);
  const outputs want = call_loss(p, call::forward_backward, x);
  const outputs want_bw = call_loss(p, call::backward, x, upstream);

  // The C call: completes, reports, counts.
  p.targets = bad.data();
  int64_t counter = 5;
  p.invalid_target_count = &counter;
  buffer logits(FUSEDLOSS_FLOAT64, x);
  buffer loss = buffer::poisoned(FUSEDLOSS_FLOAT64, loss_count(p));
  buffer grad = buffer::poisoned(FUSEDLOSS_FLOAT64, 21);
  buffer grad_loss(FUSEDLOSS_FLOAT64, upstream);
  p.logits = logits.data();
  p.loss = loss.data();
  p.grad_logits = grad.data();
  p.grad_loss = grad_loss.data();
  fusedloss_error err;
  EXPECT_EQ(fusedloss_cross_entropy_forward_backward(&p, nullptr, 0, nullptr, &err),
            FUSEDLOSS_INVALID_TARGET);
  EXPECT_EQ(err.status, FUSEDLOSS_INVALID_TARGET);
  EXPECT_STREQ(err.argument, "targets");
  EXPECT_EQ(counter, 5 + 4);
  expect_identical(loss.values(), want.loss, "loss with the bad rows ignored");
  expect_identical(grad.values(), want.grad, "grad with the bad rows ignored");
  EXPECT_EQ(fusedloss_cross_entropy_backward(&p, nullptr, 0, nullptr, nullptr),
            FUSEDLOSS_INVALID_TARGET);
  expect_identical(grad.values(), want_bw.grad, "backward with the bad rows ignored");
  EXPECT_EQ(counter, 5 + 4) << "backward follows a forward and does not count again";

  // The C++ call throws the same status, after completing.
  p.invalid_target_count = nullptr;
  try {
    fusedloss::forward(p);
    ADD_FAILURE() << "no fusedloss::error thrown";
  } catch (const fusedloss::error& e) {
    EXPECT_EQ(e.status(), FUSEDLOSS_INVALID_TARGET);
  }
  expect_identical(loss.values(), want.loss, "C++ forward's loss");

  // Softmax focal alike.
  focal_params f = with_shape(fusedloss::make_softmax_focal_params(), {7, 3, 1, 0, 0});
  f.logits_dtype = FUSEDLOSS_FLOAT64;
  f.targets_dtype = dtype;
  f.alpha = weight.data();
  f.reduction = reduction;
  f.targets = same_ignored.data();
  const outputs want_focal = call_loss(f, call::forward_backward, x);
  f.targets = bad.data();
  f.logits = logits.data();
  f.loss = loss.data();
  f.grad_logits = grad.data();
  counter = 0;
  f.invalid_target_count = &counter;
  EXPECT_EQ(fusedloss_softmax_focal_forward_backward(&f, nullptr, 0, nullptr, nullptr),
            FUSEDLOSS_INVALID_TARGET);
  EXPECT_EQ(counter, 4);
  expect_identical(loss.values(), want_focal.loss, "focal loss with the bad rows ignored");
  expect_identical(grad.values(), want_focal.grad, "focal grad with the bad rows ignored");
}

INSTANTIATE_TEST_SUITE_P(RowLossEdges, OutOfRangeTargets,
                         ::testing::ValuesIn(with_every_reduction({FUSEDLOSS_INT32,
                                                                   FUSEDLOSS_INT64})),
                         names::by_name{});

}  // namespace
}  // namespace row_loss_tests
