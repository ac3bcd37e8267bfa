// The row losses' properties docs/SEMANTICS.md promises: cross-entropy is shift invariant, softmax
// focal with gamma 0 is cross-entropy and never exceeds it, smoothed index targets equal the
// one-hot probabilities smoothed, and sum is mean times each loss's normaliser.
#include <cmath>
#include <ostream>
#include <random>
#include <vector>

#include "support.hpp"

namespace row_loss_tests {
namespace {

// Integer logits in [-8, 8] shifted by the largest amount the dtype still holds exactly
// (docs/DESIGN.md, decision 11): x - max is then exact, so the losses and gradients are bitwise
// unchanged.
struct shift_case {
  fusedloss_dtype dtype;
  bool probabilities;
  fusedloss_reduction reduction;
};

void PrintTo(const shift_case& c, std::ostream* os) {
  *os << names::join({fusedloss_dtype_string(c.dtype), c.probabilities ? "probabilities" : "index",
                      fusedloss_reduction_string(c.reduction)});
}

std::vector<shift_case> shift_cases() {
  std::vector<shift_case> cases;
  for (const fusedloss_dtype dtype : {FUSEDLOSS_FLOAT64, FUSEDLOSS_FLOAT32}) {
    for (const bool probabilities : {false, true}) {
      for (const fusedloss_reduction reduction : kReductions) {
        cases.push_back({dtype, probabilities, reduction});
      }
    }
  }
  return cases;
}

class CrossEntropy : public ::testing::TestWithParam<shift_case> {};

TEST_P(CrossEntropy, IsShiftInvariant) {
  SEEDED_RNG(rng);
  const shift_case& c = GetParam();
  std::uniform_int_distribution<int> integer(-8, 8);
  const double shift = c.dtype == FUSEDLOSS_FLOAT32 ? std::ldexp(1.0, 23) : std::ldexp(1.0, 52);
  ce_params p = fusedloss::make_cross_entropy_params();
  p.batch = 6;
  p.num_classes = 5;
  p.logits_dtype = c.dtype;
  p.label_smoothing = 0.1;
  p.reduction = c.reduction;
  const std::vector<float> weight = to_float(checks::uniform(rng, 5, 0.5, 2.0));
  p.weight = weight.data();
  const buffer targets = c.probabilities ? buffer(FUSEDLOSS_FLOAT32, random_probabilities(p, rng))
                                         : buffer(FUSEDLOSS_INT64, random_classes(p, true, rng));
  p.targets = targets.data();
  p.targets_dtype = targets.dtype();
  std::vector<double> x(30), shifted(30);
  for (size_t i = 0; i < x.size(); ++i) {
    x[i] = integer(rng);
    shifted[i] = x[i] + shift;
  }
  const outputs a = call_loss(p, call::forward_backward, x);
  const outputs b = call_loss(p, call::forward_backward, shifted);
  expect_identical(b.loss, a.loss, "loss");
  expect_identical(b.grad, a.grad, "grad");
}

INSTANTIATE_TEST_SUITE_P(RowLossProperties, CrossEntropy, ::testing::ValuesIn(shift_cases()),
                         names::by_name{});

class FocalWithGammaZero : public ::testing::TestWithParam<dtype_reduction> {};

TEST_P(FocalWithGammaZero, IsCrossEntropy) {
  SEEDED_RNG(rng);
  const auto [dtype, reduction] = GetParam();
  focal_params f = with_shape(fusedloss::make_softmax_focal_params(), kShapes[2]);
  f.logits_dtype = dtype;
  f.gamma = 0;
  f.reduction = reduction;
  const buffer targets(FUSEDLOSS_INT64, random_classes(f, true, rng));
  f.targets = targets.data();
  f.targets_dtype = FUSEDLOSS_INT64;
  ce_params c = with_shape(fusedloss::make_cross_entropy_params(), kShapes[2]);
  c.logits_dtype = dtype;
  c.reduction = reduction;
  c.ignore_index = f.ignore_index;
  c.targets = targets.data();
  c.targets_dtype = FUSEDLOSS_INT64;
  const std::vector<double> x = random_logits(f, rng, -5, 5);
  const std::vector<double> upstream = checks::uniform(rng, loss_count(f), 0.5, 2.0);
  const outputs of = call_loss(f, call::forward, x), oc = call_loss(c, call::forward, x);
  expect_identical(of.loss, oc.loss, "loss");
  expect_identical(of.lse, oc.lse, "lse");
  expect_identical(call_loss(f, call::backward, x, upstream).grad,
                   call_loss(c, call::backward, x, upstream).grad, "grad");
}

INSTANTIATE_TEST_SUITE_P(RowLossProperties, FocalWithGammaZero,
                         ::testing::ValuesIn(with_every_reduction(
                             {FUSEDLOSS_FLOAT64, FUSEDLOSS_FLOAT32, FUSEDLOSS_BFLOAT16})),
                         names::by_name{});

struct gamma_case {
  double gamma;
};

void PrintTo(const gamma_case& c, std::ostream* os) { *os << "gamma" << names::number(c.gamma); }

class Focal : public ::testing::TestWithParam<gamma_case> {};

TEST_P(Focal, IsAtMostCrossEntropy) {
  SEEDED_RNG(rng);
  focal_params f = with_shape(fusedloss::make_softmax_focal_params(), kShapes[0]);
  f.logits_dtype = FUSEDLOSS_FLOAT64;
  f.gamma = GetParam().gamma;
  f.reduction = FUSEDLOSS_REDUCTION_NONE;
  const buffer targets(FUSEDLOSS_INT32, random_classes(f, false, rng));
  f.targets = targets.data();
  f.targets_dtype = FUSEDLOSS_INT32;
  ce_params c = with_shape(fusedloss::make_cross_entropy_params(), kShapes[0]);
  c.logits_dtype = FUSEDLOSS_FLOAT64;
  c.reduction = FUSEDLOSS_REDUCTION_NONE;
  c.targets = targets.data();
  c.targets_dtype = FUSEDLOSS_INT32;
  const std::vector<double> x = random_logits(f, rng, -6, 6);
  const outputs of = call_loss(f, call::forward, x), oc = call_loss(c, call::forward, x);
  for (int64_t r = 0; r < rows_of(f); ++r) {
    EXPECT_LE(of.loss[r], oc.loss[r]) << "row " << r;
    EXPECT_GE(of.loss[r], 0.0) << "row " << r;
  }
}

INSTANTIATE_TEST_SUITE_P(RowLossProperties, Focal,
                         ::testing::Values(gamma_case{0.5}, gamma_case{1.0}, gamma_case{2.0},
                                           gamma_case{5.0}),
                         names::by_name{});

// Index targets with smoothing against the one-hot probability targets that the library smooths:
// the same sums in a different order, so equal to a few ulps of the largest term.
struct smoothing_case {
  bool weighted;
  fusedloss_reduction reduction;
};

void PrintTo(const smoothing_case& c, std::ostream* os) {
  *os << names::join({c.weighted ? "weight" : "", fusedloss_reduction_string(c.reduction)});
}

std::vector<smoothing_case> smoothing_cases() {
  std::vector<smoothing_case> cases;
  for (const bool weighted : {false, true}) {
    for (const fusedloss_reduction reduction : kReductions) {
      if (weighted && reduction == FUSEDLOSS_REDUCTION_MEAN) continue;  // normalisers differ
      cases.push_back({weighted, reduction});
    }
  }
  return cases;
}

class SmoothedIndexTargets : public ::testing::TestWithParam<smoothing_case> {};

TEST_P(SmoothedIndexTargets, EqualOneHotProbabilities) {
  SEEDED_RNG(rng);
  const checks::tolerance tol{1e-13, 1e-13};
  ce_params index = with_shape(fusedloss::make_cross_entropy_params(), kShapes[1]);
  index.logits_dtype = FUSEDLOSS_FLOAT64;
  index.label_smoothing = 0.3;
  index.reduction = GetParam().reduction;
  const std::vector<float> weight = to_float(checks::uniform(rng, index.num_classes, 0.5, 2));
  index.weight = GetParam().weighted ? weight.data() : nullptr;
  const std::vector<double> y = random_classes(index, false, rng);
  std::vector<double> one_hot(index.batch * index.num_classes * index.spatial, 0.0);
  for (int64_t r = 0; r < rows_of(index); ++r) {
    const int64_t n = r / index.spatial, s = r % index.spatial;
    one_hot[(n * index.num_classes + static_cast<int64_t>(y[r])) * index.spatial + s] = 1;
  }
  const buffer classes(FUSEDLOSS_INT64, y), probabilities(FUSEDLOSS_FLOAT64, one_hot);
  index.targets = classes.data();
  index.targets_dtype = FUSEDLOSS_INT64;
  ce_params soft = index;
  soft.targets = probabilities.data();
  soft.targets_dtype = FUSEDLOSS_FLOAT64;
  const std::vector<double> x = random_logits(index, rng, -4, 4);
  const outputs a = call_loss(index, call::forward_backward, x),
                b = call_loss(soft, call::forward_backward, x);
  expect_close(a.loss, b.loss, tol, "loss");
  expect_close(a.grad, b.grad, tol, "grad");
}

INSTANTIATE_TEST_SUITE_P(RowLossProperties, SmoothedIndexTargets,
                         ::testing::ValuesIn(smoothing_cases()), names::by_name{});

// sum == mean * normaliser for loss and gradient, with each loss's own normaliser.
TEST(RowLossProperties, SumIsMeanTimesNormaliser) {
  SEEDED_RNG(rng);
  const checks::tolerance tol{1e-14, 1e-14};
  const auto check = [&](auto p, const std::vector<double>& x, double normaliser) {
    p.reduction = FUSEDLOSS_REDUCTION_SUM;
    const outputs sum = call_loss(p, call::forward_backward, x);
    p.reduction = FUSEDLOSS_REDUCTION_MEAN;
    outputs mean = call_loss(p, call::forward_backward, x);
    for (double& g : mean.grad) g *= normaliser;
    expect_close({mean.loss[0] * normaliser}, sum.loss, tol, "loss");
    expect_close(mean.grad, sum.grad, tol, "grad");
  };
  ce_params p = with_shape(fusedloss::make_cross_entropy_params(), kShapes[0]);
  p.logits_dtype = FUSEDLOSS_FLOAT64;
  p.label_smoothing = 0.2;
  p.z_loss = 0.01;
  const std::vector<float> weight = to_float(checks::uniform(rng, p.num_classes, 0.5, 2));
  p.weight = weight.data();
  const std::vector<double> y = random_classes(p, true, rng);
  const buffer classes(FUSEDLOSS_INT64, y);
  p.targets = classes.data();
  p.targets_dtype = FUSEDLOSS_INT64;
  double weight_sum = 0, count = 0;
  for (const double c : y) {
    if (c == p.ignore_index) continue;
    weight_sum += weight[static_cast<size_t>(c)];
    count += 1;
  }
  const std::vector<double> x = random_logits(p, rng);
  {
    SCOPED_TRACE("index targets: sum of w[y] over non-ignored rows");
    check(p, x, weight_sum);
  }
  {
    SCOPED_TRACE("probability targets: N * S");
    const buffer q(FUSEDLOSS_FLOAT64, random_probabilities(p, rng));
    ce_params soft = p;
    soft.targets = q.data();
    soft.targets_dtype = FUSEDLOSS_FLOAT64;
    check(soft, x, static_cast<double>(rows_of(p)));
  }
  {
    SCOPED_TRACE("softmax focal: count of non-ignored rows");
    focal_params f = with_shape(fusedloss::make_softmax_focal_params(), kShapes[0]);
    f.logits_dtype = FUSEDLOSS_FLOAT64;
    f.alpha = weight.data();
    f.ignore_index = p.ignore_index;
    f.targets = classes.data();
    f.targets_dtype = FUSEDLOSS_INT64;
    check(f, x, count);
  }
}

}  // namespace
}  // namespace row_loss_tests
