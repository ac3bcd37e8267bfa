// The row losses' backward against central finite differences of their forward, over every option
// combination, shape, targets dtype and reduction: one test for each; and, on the same inputs, a
// backward given the saved LSE and forward_backward with a gradient scale against that backward.
#include <cmath>
#include <ostream>
#include <vector>

#include "support.hpp"

namespace row_loss_tests {
namespace {

// Central differences in float64 with h = 1e-5 on logits in [-2, 2). Truncation is h^2 |f'''| / 6:
// f''' is O(1) for these logits, and for the focal loss at most of order (1 - u)^(gamma - 2) with
// 1 - u >= 0.03 here, so <= 1e-8. Cancellation is about 2^-52 |f| / h <= 1e-9 for |f| <= 50. A
// bound of 1e-7 + 1e-6 |g| sits above both and far below any wrong term (>= 1e-3 for these inputs).
constexpr double kStep = 1e-5;
const checks::tolerance kFd{1e-7, 1e-6};

// backward against central differences of f(x) = sum_i upstream_i * loss_i(x), with a non-unit
// upstream; then a backward given the saved LSE, and forward_backward with a scale, against it.
template <class P>
void expect_gradient_matches_fd(const P& p, const std::vector<double>& x, std::mt19937_64& rng) {
  const std::vector<double> upstream = checks::uniform(rng, loss_count(p), 0.5, 2.0);
  const auto f = [&](const std::vector<double>& xs) {
    return dot(upstream, call_loss(p, call::forward, xs).loss);
  };
  const std::vector<double> fd = checks::finite_difference(f, x, kStep);
  const outputs bw = call_loss(p, call::backward, x, upstream);
  const int64_t stride = stride_of(p), grad_stride = grad_stride_of(p);
  const int64_t row_elements = p.num_classes * p.spatial;
  for (int64_t n = 0; n < p.batch; ++n) {
    for (int64_t k = 0; k < grad_stride; ++k) {
      const double g = bw.grad[n * grad_stride + k];
      if (k >= row_elements) {
        EXPECT_TRUE(std::isnan(g)) << "padding column written at sample " << n << ", column " << k;
      } else {
        const double want = fd[n * stride + k];
        EXPECT_TRUE(kFd.accepts(g, want))
            << "sample " << n << ", element " << k << ": backward " << g << ", fd " << want;
      }
    }
  }

  // The saved LSE is max + log(sum) rounded once, where the recomputed lp subtract max and
  // log(sum) separately: the two gradients differ by about an ulp of the LSE (<= 8 here) times p.
  const outputs fw = call_loss(p, call::forward, x);
  expect_close(call_loss(p, call::backward, x, upstream, fw.lse).grad, bw.grad, {1e-14, 1e-13},
               "backward with the saved lse");

  P scaled = p;
  scaled.grad_scale = static_cast<float>(checks::uniform(rng, 1, 0.5, 2.0)[0]);
  const float scale_in_memory = 0.75f;
  scaled.grad_scale_ptr = &scale_in_memory;
  const std::vector<double> uniform_upstream(
      loss_count(p), static_cast<double>(scaled.grad_scale) * scale_in_memory);
  const outputs fb = call_loss(scaled, call::forward_backward, x);
  expect_identical(fb.grad, call_loss(p, call::backward, x, uniform_upstream).grad,
                   "forward_backward against backward with the same upstream");
  expect_identical(fb.loss, fw.loss, "forward_backward's loss");
  expect_identical(fb.lse, fw.lse, "forward_backward's lse");
  expect_identical(fb.z_loss, fw.z_loss, "forward_backward's z-loss");
}

// Cross-entropy's options besides the targets: class weights, label smoothing, z-loss, soft-cap.
struct ce_options {
  bool weighted;
  double eps, z_loss, softcap;
};

ce_params with_options(ce_params p, const ce_options& o, const std::vector<float>& weight) {
  p.weight = o.weighted ? weight.data() : nullptr;
  p.label_smoothing = o.eps;
  p.z_loss = o.z_loss;
  p.softcap = o.softcap;
  return p;
}

std::vector<ce_options> every_ce_options() {
  std::vector<ce_options> all;
  for (const bool weighted : {false, true}) {
    for (const double eps : {0.0, 0.1, 1.0}) {
      for (const double z_loss : {0.0, 0.05}) {
        for (const double softcap : {0.0, 3.0}) all.push_back({weighted, eps, z_loss, softcap});
      }
    }
  }
  return all;
}

// ---- Cross-entropy, class-index targets ---------------------------------------------------------

struct index_case {
  shape s;
  bool ignore;
  ce_options options;
  fusedloss_dtype targets_dtype;
  fusedloss_reduction reduction;
};

void PrintTo(const index_case& c, std::ostream* os) {
  *os << names::join(
      {name_of(c.s), c.options.weighted ? "weight" : "", c.ignore ? "ignore" : "",
       names::option("smoothing", c.options.eps), names::option("zloss", c.options.z_loss),
       names::option("softcap", c.options.softcap), fusedloss_dtype_string(c.targets_dtype),
       fusedloss_reduction_string(c.reduction)});
}

std::vector<index_case> index_cases() {
  std::vector<index_case> cases;
  for (const shape& s : kShapes) {
    for (const ce_options& o : every_ce_options()) {
      for (const bool ignore : {false, true}) {
        for (const fusedloss_dtype targets_dtype : kIndexDtypes) {
          for (const fusedloss_reduction reduction : kReductions) {
            cases.push_back({s, ignore, o, targets_dtype, reduction});
          }
        }
      }
    }
  }
  return cases;
}

class IndexCrossEntropy : public ::testing::TestWithParam<index_case> {};

TEST_P(IndexCrossEntropy, MatchesFiniteDifferences) {
  SEEDED_RNG(rng);
  const index_case& c = GetParam();
  ce_params p = with_shape(fusedloss::make_cross_entropy_params(), c.s);
  p.logits_dtype = FUSEDLOSS_FLOAT64;
  const buffer targets(c.targets_dtype, random_classes(p, c.ignore, rng));
  p.targets = targets.data();
  p.targets_dtype = c.targets_dtype;
  const std::vector<float> weight = to_float(checks::uniform(rng, c.s.classes, 0.5, 2.0));
  p = with_options(p, c.options, weight);
  p.reduction = c.reduction;
  expect_gradient_matches_fd(p, random_logits(p, rng), rng);
}

INSTANTIATE_TEST_SUITE_P(RowLossGradient, IndexCrossEntropy, ::testing::ValuesIn(index_cases()),
                         names::by_name{});

// ---- Cross-entropy, probability targets ---------------------------------------------------------

struct probability_case {
  shape s;
  ce_options options;
  fusedloss_dtype targets_dtype;
  fusedloss_reduction reduction;
};

void PrintTo(const probability_case& c, std::ostream* os) {
  *os << names::join(
      {name_of(c.s), c.options.weighted ? "weight" : "", names::option("smoothing", c.options.eps),
       names::option("zloss", c.options.z_loss), names::option("softcap", c.options.softcap),
       fusedloss_dtype_string(c.targets_dtype), fusedloss_reduction_string(c.reduction)});
}

std::vector<probability_case> probability_cases() {
  std::vector<probability_case> cases;
  for (const shape& s : kShapes) {
    for (const ce_options& o : every_ce_options()) {
      for (const fusedloss_dtype targets_dtype : {FUSEDLOSS_FLOAT32, FUSEDLOSS_FLOAT64}) {
        for (const fusedloss_reduction reduction : kReductions) {
          cases.push_back({s, o, targets_dtype, reduction});
        }
      }
    }
  }
  return cases;
}

class ProbabilityCrossEntropy : public ::testing::TestWithParam<probability_case> {};

TEST_P(ProbabilityCrossEntropy, MatchesFiniteDifferences) {
  SEEDED_RNG(rng);
  const probability_case& c = GetParam();
  ce_params p = with_shape(fusedloss::make_cross_entropy_params(), c.s);
  p.logits_dtype = FUSEDLOSS_FLOAT64;
  const buffer targets(c.targets_dtype, random_probabilities(p, rng));
  p.targets = targets.data();
  p.targets_dtype = c.targets_dtype;
  const std::vector<float> weight = to_float(checks::uniform(rng, c.s.classes, 0.5, 2.0));
  p = with_options(p, c.options, weight);
  p.reduction = c.reduction;
  expect_gradient_matches_fd(p, random_logits(p, rng), rng);
}

INSTANTIATE_TEST_SUITE_P(RowLossGradient, ProbabilityCrossEntropy,
                         ::testing::ValuesIn(probability_cases()), names::by_name{});

// ---- Softmax focal ------------------------------------------------------------------------------

struct focal_case {
  shape s;
  double gamma;
  bool with_alpha, ignore;
  fusedloss_dtype targets_dtype;
  fusedloss_reduction reduction;
};

void PrintTo(const focal_case& c, std::ostream* os) {
  *os << names::join({name_of(c.s), "gamma" + names::number(c.gamma), c.with_alpha ? "alpha" : "",
                      c.ignore ? "ignore" : "", fusedloss_dtype_string(c.targets_dtype),
                      fusedloss_reduction_string(c.reduction)});
}

std::vector<focal_case> focal_cases() {
  std::vector<focal_case> cases;
  for (const shape& s : kShapes) {
    for (const double gamma : {0.0, 0.5, 1.0, 2.0}) {
      for (const bool with_alpha : {false, true}) {
        for (const bool ignore : {false, true}) {
          for (const fusedloss_dtype targets_dtype : kIndexDtypes) {
            for (const fusedloss_reduction reduction : kReductions) {
              cases.push_back({s, gamma, with_alpha, ignore, targets_dtype, reduction});
            }
          }
        }
      }
    }
  }
  return cases;
}

class SoftmaxFocal : public ::testing::TestWithParam<focal_case> {};

TEST_P(SoftmaxFocal, MatchesFiniteDifferences) {
  SEEDED_RNG(rng);
  const focal_case& c = GetParam();
  focal_params p = with_shape(fusedloss::make_softmax_focal_params(), c.s);
  p.logits_dtype = FUSEDLOSS_FLOAT64;
  const buffer targets(c.targets_dtype, random_classes(p, c.ignore, rng));
  p.targets = targets.data();
  p.targets_dtype = c.targets_dtype;
  const std::vector<float> alpha = to_float(checks::uniform(rng, c.s.classes, 0.2, 1.0));
  p.alpha = c.with_alpha ? alpha.data() : nullptr;
  p.gamma = c.gamma;
  p.reduction = c.reduction;
  expect_gradient_matches_fd(p, random_logits(p, rng), rng);
}

INSTANTIATE_TEST_SUITE_P(RowLossGradient, SoftmaxFocal, ::testing::ValuesIn(focal_cases()),
                         names::by_name{});

}  // namespace
}  // namespace row_loss_tests
