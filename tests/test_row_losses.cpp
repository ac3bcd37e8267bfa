// The row losses (cross-entropy with class-index and probability targets, softmax focal) through
// the public API on the CPU reference: hand-computed values, central finite differences of every
// backward over every option combination, the properties docs/SEMANTICS.md promises, and its edge
// cases.
#include <gtest/gtest.h>

#include <cmath>
#include <cstdint>
#include <limits>
#include <random>
#include <sstream>
#include <string>
#include <type_traits>
#include <vector>

#include "checks.hpp"
#include "fusedloss/fusedloss.hpp"

namespace {

namespace checks = fusedloss::checks;
using checks::buffer;
using ce_params = fusedloss::cross_entropy_params;
using focal_params = fusedloss::softmax_focal_params;

constexpr double kInf = std::numeric_limits<double>::infinity();
const double kNaN = std::nan("");
const double kLn3 = std::log(3.0);
const double kLn4 = std::log(4.0);

constexpr fusedloss_reduction kReductions[] = {FUSEDLOSS_REDUCTION_NONE, FUSEDLOSS_REDUCTION_SUM,
                                               FUSEDLOSS_REDUCTION_MEAN};
constexpr fusedloss_dtype kIndexDtypes[] = {FUSEDLOSS_INT32, FUSEDLOSS_INT64};

// Every random test draws its seed from std::random_device and names it in any failure.
#define SEEDED_RNG(rng)                               \
  const unsigned rng##_seed = std::random_device{}(); \
  SCOPED_TRACE("seed " + std::to_string(rng##_seed)); \
  std::mt19937_64 rng(rng##_seed)

// ---- Layout of a params struct (either row loss) ------------------------------------------------

template <class P>
int64_t rows_of(const P& p) {
  return p.batch * p.spatial;
}
template <class P>
int64_t stride_of(const P& p) {
  return p.row_stride != 0 ? p.row_stride : p.num_classes * p.spatial;
}
template <class P>
int64_t grad_stride_of(const P& p) {
  return p.grad_row_stride != 0 ? p.grad_row_stride : stride_of(p);
}
template <class P>
int64_t loss_count(const P& p) {
  return p.reduction == FUSEDLOSS_REDUCTION_NONE ? rows_of(p) : 1;
}
template <class P>
fusedloss_dtype loss_dtype_of(const P& p) {
  return p.logits_dtype == FUSEDLOSS_FLOAT64 ? FUSEDLOSS_FLOAT64 : FUSEDLOSS_FLOAT32;
}

enum class op { forward, backward, forward_backward };

struct outputs {
  std::vector<double> loss, lse, z_loss, grad;
};

// Runs `o` on `p` with logits `x` (stored in p.logits_dtype) and returns every output. Outputs
// start poisoned (NaN), so what the call does not write reads back NaN. backward reads `upstream`
// as grad_loss and, when `saved_lse` is given, reads it as the LSE.
template <class P>
outputs run(P p, op o, const std::vector<double>& x, const std::vector<double>& upstream = {},
            const std::vector<double>& saved_lse = {}) {
  const fusedloss_dtype loss_dtype = loss_dtype_of(p);
  buffer logits(p.logits_dtype, x);
  buffer loss = buffer::poisoned(loss_dtype, loss_count(p));
  buffer lse =
      saved_lse.empty() ? buffer::poisoned(loss_dtype, rows_of(p)) : buffer(loss_dtype, saved_lse);
  buffer z_loss = buffer::poisoned(loss_dtype, loss_count(p));
  buffer grad = buffer::poisoned(p.logits_dtype, p.batch * grad_stride_of(p));
  buffer grad_loss(loss_dtype, upstream);
  p.logits = logits.data();
  p.loss = o == op::backward ? nullptr : loss.data();
  p.lse = o == op::backward && saved_lse.empty() ? nullptr : lse.data();
  if constexpr (std::is_same_v<P, ce_params>) {
    p.z_loss_out = o == op::backward ? nullptr : z_loss.data();
  }
  p.grad_logits = o == op::forward ? nullptr : grad.data();
  p.grad_loss = grad_loss.data();
  switch (o) {
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
  return {loss.values(), lse.values(), z_loss.values(), grad.values()};
}

// Bitwise-equal sequences, NaN matching NaN (the poisoned padding).
void expect_identical(const std::vector<double>& got, const std::vector<double>& want,
                      const char* what) {
  ASSERT_EQ(got.size(), want.size()) << what;
  EXPECT_EQ(checks::max_abs_error(got, want), 0.0) << what;
}

void expect_close(const std::vector<double>& got, const std::vector<double>& want,
                  const checks::tolerance& tol, const char* what) {
  ASSERT_EQ(got.size(), want.size()) << what;
  for (size_t i = 0; i < got.size(); ++i) {
    EXPECT_TRUE(tol.accepts(got[i], want[i]))
        << what << "[" << i << "]: got " << got[i] << ", want " << want[i];
  }
}

// Hand-computed values are exact reals; the reference's double rounding stays within a few ulps.
const checks::tolerance kHand{1e-15, 1e-14};

double dot(const std::vector<double>& a, const std::vector<double>& b) {
  double s = 0;
  for (size_t i = 0; i < a.size(); ++i) s += a[i] * b[i];
  return s;
}

std::vector<float> to_float(const std::vector<double>& v) { return {v.begin(), v.end()}; }

// ---- Random problems
// -----------------------------------------------------------------------------

struct shape {
  int64_t batch, classes, spatial, row_stride, grad_row_stride;
};
const shape kShapes[] = {
    {5, 4, 1, 6, 5},  // (N, C) with a row stride > C and a different gradient stride
    {2, 3, 3, 0, 0},  // (N, C, S), contiguous
    {2, 3, 2, 8, 0},  // (N, C, S) with padding after each sample
};

template <class P>
P with_shape(P p, const shape& s) {
  p.batch = s.batch;
  p.num_classes = s.classes;
  p.spatial = s.spatial;
  p.row_stride = s.row_stride;
  p.grad_row_stride = s.grad_row_stride;
  return p;
}

std::string describe(const shape& s) {
  std::ostringstream o;
  o << "N=" << s.batch << " C=" << s.classes << " S=" << s.spatial << " stride=" << s.row_stride
    << " grad_stride=" << s.grad_row_stride;
  return o.str();
}

// Logits in [lo, hi), NaN in the padding columns: no call may read them.
template <class P>
std::vector<double> random_logits(const P& p, std::mt19937_64& rng, double lo = -2, double hi = 2) {
  const int64_t stride = stride_of(p);
  std::vector<double> x = checks::uniform(rng, p.batch * stride, lo, hi);
  for (size_t i = 0; i < x.size(); ++i) {
    if (static_cast<int64_t>(i) % stride >= p.num_classes * p.spatial) x[i] = kNaN;
  }
  return x;
}

// Class indices; with `ignore`, ignore_index is the last class (a valid class value, as PyTorch
// allows), row 0 is ignored and row 1 is not, so a mean never divides by 0.
template <class P>
std::vector<double> random_classes(P& p, bool ignore, std::mt19937_64& rng) {
  std::vector<double> y = checks::class_indices(rng, rows_of(p), p.num_classes);
  p.ignore_index = ignore ? p.num_classes - 1 : -100;
  if (ignore) {
    y[0] = static_cast<double>(p.num_classes - 1);
    y[1] = 0;
  }
  return y;
}

// Probability targets (N, C, S), each row (n, s) normalised.
std::vector<double> random_probabilities(const ce_params& p, std::mt19937_64& rng) {
  const int64_t C = p.num_classes, S = p.spatial;
  std::vector<double> q = checks::uniform(rng, p.batch * C * S, 0, 1);
  for (int64_t n = 0; n < p.batch; ++n) {
    for (int64_t s = 0; s < S; ++s) {
      double sum = 0;
      for (int64_t c = 0; c < C; ++c) sum += q[(n * C + c) * S + s];
      for (int64_t c = 0; c < C; ++c) q[(n * C + c) * S + s] /= sum;
    }
  }
  return q;
}

// ---- Finite differences
// ----------------------------------------------------------------------------

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
    return dot(upstream, run(p, op::forward, xs).loss);
  };
  const std::vector<double> fd = checks::finite_difference(f, x, kStep);
  const outputs bw = run(p, op::backward, x, upstream);
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
  const outputs fw = run(p, op::forward, x);
  expect_close(run(p, op::backward, x, upstream, fw.lse).grad, bw.grad, {1e-14, 1e-13},
               "backward with the saved lse");

  P scaled = p;
  scaled.grad_scale = static_cast<float>(checks::uniform(rng, 1, 0.5, 2.0)[0]);
  const float scale_in_memory = 0.75f;
  scaled.grad_scale_ptr = &scale_in_memory;
  const std::vector<double> uniform_upstream(
      loss_count(p), static_cast<double>(scaled.grad_scale) * scale_in_memory);
  const outputs fb = run(scaled, op::forward_backward, x);
  expect_identical(fb.grad, run(p, op::backward, x, uniform_upstream).grad,
                   "forward_backward against backward with the same upstream");
  expect_identical(fb.loss, fw.loss, "forward_backward's loss");
  expect_identical(fb.lse, fw.lse, "forward_backward's lse");
  expect_identical(fb.z_loss, fw.z_loss, "forward_backward's z-loss");
}

TEST(RowLossGradient, IndexCrossEntropyMatchesFiniteDifferences) {
  SEEDED_RNG(rng);
  for (const shape& s : kShapes) {
    for (const bool weighted : {false, true}) {
      for (const bool ignore : {false, true}) {
        for (const double eps : {0.0, 0.1, 1.0}) {
          for (const double z_loss : {0.0, 0.05}) {
            for (const double softcap : {0.0, 3.0}) {
              for (const fusedloss_dtype targets_dtype : kIndexDtypes) {
                for (const fusedloss_reduction reduction : kReductions) {
                  std::ostringstream trace;
                  trace << describe(s) << " weighted=" << weighted << " ignore=" << ignore
                        << " eps=" << eps << " z_loss=" << z_loss << " softcap=" << softcap
                        << " targets=" << targets_dtype << " reduction=" << reduction;
                  SCOPED_TRACE(trace.str());
                  ce_params p = with_shape(fusedloss::make_cross_entropy_params(), s);
                  p.logits_dtype = FUSEDLOSS_FLOAT64;
                  const buffer targets(targets_dtype, random_classes(p, ignore, rng));
                  p.targets = targets.data();
                  p.targets_dtype = targets_dtype;
                  const std::vector<float> weight =
                      to_float(checks::uniform(rng, s.classes, 0.5, 2.0));
                  p.weight = weighted ? weight.data() : nullptr;
                  p.label_smoothing = eps;
                  p.z_loss = z_loss;
                  p.softcap = softcap;
                  p.reduction = reduction;
                  expect_gradient_matches_fd(p, random_logits(p, rng), rng);
                }
              }
            }
          }
        }
      }
    }
  }
}

TEST(RowLossGradient, ProbabilityCrossEntropyMatchesFiniteDifferences) {
  SEEDED_RNG(rng);
  for (const shape& s : kShapes) {
    for (const bool weighted : {false, true}) {
      for (const double eps : {0.0, 0.1, 1.0}) {
        for (const double z_loss : {0.0, 0.05}) {
          for (const double softcap : {0.0, 3.0}) {
            for (const fusedloss_dtype targets_dtype : {FUSEDLOSS_FLOAT32, FUSEDLOSS_FLOAT64}) {
              for (const fusedloss_reduction reduction : kReductions) {
                std::ostringstream trace;
                trace << describe(s) << " weighted=" << weighted << " eps=" << eps
                      << " z_loss=" << z_loss << " softcap=" << softcap
                      << " targets=" << targets_dtype << " reduction=" << reduction;
                SCOPED_TRACE(trace.str());
                ce_params p = with_shape(fusedloss::make_cross_entropy_params(), s);
                p.logits_dtype = FUSEDLOSS_FLOAT64;
                const buffer targets(targets_dtype, random_probabilities(p, rng));
                p.targets = targets.data();
                p.targets_dtype = targets_dtype;
                const std::vector<float> weight =
                    to_float(checks::uniform(rng, s.classes, 0.5, 2.0));
                p.weight = weighted ? weight.data() : nullptr;
                p.label_smoothing = eps;
                p.z_loss = z_loss;
                p.softcap = softcap;
                p.reduction = reduction;
                expect_gradient_matches_fd(p, random_logits(p, rng), rng);
              }
            }
          }
        }
      }
    }
  }
}

TEST(RowLossGradient, SoftmaxFocalMatchesFiniteDifferences) {
  SEEDED_RNG(rng);
  for (const shape& s : kShapes) {
    for (const double gamma : {0.0, 0.5, 1.0, 2.0}) {
      for (const bool with_alpha : {false, true}) {
        for (const bool ignore : {false, true}) {
          for (const fusedloss_dtype targets_dtype : kIndexDtypes) {
            for (const fusedloss_reduction reduction : kReductions) {
              std::ostringstream trace;
              trace << describe(s) << " gamma=" << gamma << " alpha=" << with_alpha
                    << " ignore=" << ignore << " targets=" << targets_dtype
                    << " reduction=" << reduction;
              SCOPED_TRACE(trace.str());
              focal_params p = with_shape(fusedloss::make_softmax_focal_params(), s);
              p.logits_dtype = FUSEDLOSS_FLOAT64;
              const buffer targets(targets_dtype, random_classes(p, ignore, rng));
              p.targets = targets.data();
              p.targets_dtype = targets_dtype;
              const std::vector<float> alpha = to_float(checks::uniform(rng, s.classes, 0.2, 1.0));
              p.alpha = with_alpha ? alpha.data() : nullptr;
              p.gamma = gamma;
              p.reduction = reduction;
              expect_gradient_matches_fd(p, random_logits(p, rng), rng);
            }
          }
        }
      }
    }
  }
}

// ---- Hand-computed values
// ------------------------------------------------------------------------

// Two rows of logits [0, ln 3]: LSE = ln 4, p = [1/4, 3/4], lp = [-ln 4, -ln(4/3)].
ce_params two_by_two(const buffer& targets) {
  ce_params p = fusedloss::make_cross_entropy_params();
  p.batch = 2;
  p.num_classes = 2;
  p.logits_dtype = FUSEDLOSS_FLOAT64;
  p.targets = targets.data();
  p.targets_dtype = targets.dtype();
  return p;
}
const std::vector<double> kTwoRows = {0, kLn3, 0, kLn3};

TEST(RowLossValues, IndexCrossEntropy) {
  const buffer targets(FUSEDLOSS_INT64, {0, 1});
  ce_params p = two_by_two(targets);
  p.reduction = FUSEDLOSS_REDUCTION_NONE;
  // Row 0 (y = 0): -lp_0 = ln 4, gradient p - e_0 = [-3/4, 3/4]. Row 1 (y = 1): ln(4/3), [1/4,
  // -1/4].
  outputs o = run(p, op::forward_backward, kTwoRows);
  expect_close(o.loss, {kLn4, std::log(4.0 / 3.0)}, kHand, "loss");
  expect_close(o.lse, {kLn4, kLn4}, kHand, "lse");
  expect_close(o.grad, {-0.75, 0.75, 0.25, -0.25}, kHand, "grad");

  // weight [2, 1]: mean = (2 ln 4 + ln(4/3)) / (2 + 1); its gradient is w_y (p - e_y) / 3.
  const std::vector<float> weight = {2, 1};
  p.weight = weight.data();
  p.reduction = FUSEDLOSS_REDUCTION_MEAN;
  o = run(p, op::forward_backward, kTwoRows);
  expect_close(o.loss, {(2 * kLn4 + std::log(4.0 / 3.0)) / 3}, kHand, "weighted mean");
  expect_close(o.grad, {-0.5, 0.5, 0.25 / 3, -0.25 / 3}, kHand, "weighted mean grad");

  // eps = 0.1, C = 2: L_0 = 0.9 ln 4 + 0.05 (ln 4 + ln(4/3)); the gradient is p - q' with
  // q' = [0.95, 0.05] for row 0 and [0.05, 0.95] for row 1.
  p.weight = nullptr;
  p.label_smoothing = 0.1;
  p.reduction = FUSEDLOSS_REDUCTION_NONE;
  o = run(p, op::forward_backward, kTwoRows);
  const double smooth = 0.05 * (kLn4 + std::log(4.0 / 3.0));
  expect_close(o.loss, {0.9 * kLn4 + smooth, 0.9 * std::log(4.0 / 3.0) + smooth}, kHand,
               "smoothed");
  expect_close(o.grad, {-0.7, 0.7, 0.2, -0.2}, kHand, "smoothed grad");

  // backward reads a given LSE instead of recomputing it: with LSE = ln 8 in place of ln 4, p reads
  // [1/8, 3/8], so row 0's gradient is [1/8 - 1, 3/8].
  p.label_smoothing = 0;
  o = run(p, op::backward, kTwoRows, {1, 1}, {std::log(8.0), kLn4});
  expect_close(o.grad, {-0.875, 0.375, 0.25, -0.25}, kHand, "grad from a saved lse");

  // C = 3, x = [1, 2, 3], y = 2: L = log(e + e^2 + e^3) - 3 = log(1 + e^-1 + e^-2).
  const buffer three(FUSEDLOSS_INT32, {2});
  ce_params q = fusedloss::make_cross_entropy_params();
  q.batch = 1;
  q.num_classes = 3;
  q.logits_dtype = FUSEDLOSS_FLOAT64;
  q.targets = three.data();
  q.targets_dtype = FUSEDLOSS_INT32;
  q.reduction = FUSEDLOSS_REDUCTION_SUM;
  o = run(q, op::forward, {1, 2, 3});
  expect_close(o.loss, {std::log1p(std::exp(-1.0) + std::exp(-2.0))}, kHand, "C = 3");
}

TEST(RowLossValues, ProbabilityCrossEntropy) {
  const buffer targets(FUSEDLOSS_FLOAT64, {0.5, 0.5, 0.5, 0.5});
  ce_params p = two_by_two(targets);
  p.reduction = FUSEDLOSS_REDUCTION_NONE;
  // q = [1/2, 1/2]: L = (ln 4 + ln(4/3)) / 2 = ln(16/3) / 2; gradient p - q = [-1/4, 1/4].
  outputs o = run(p, op::forward_backward, kTwoRows);
  expect_close(o.loss, {0.5 * std::log(16.0 / 3.0), 0.5 * std::log(16.0 / 3.0)}, kHand, "loss");
  expect_close(o.grad, {-0.25, 0.25, -0.25, 0.25}, kHand, "grad");

  // weight [2, 1]: L = 2 (1/2) ln 4 + (1/2) ln(4/3); gradient p sum_c w_c q_c - w q
  // = [1/4 * 3/2 - 1, 3/4 * 3/2 - 1/2] = [-5/8, 5/8]; mean divides by the 2 rows, not by weights.
  const std::vector<float> weight = {2, 1};
  p.weight = weight.data();
  p.reduction = FUSEDLOSS_REDUCTION_MEAN;
  o = run(p, op::forward_backward, kTwoRows);
  expect_close(o.loss, {kLn4 + 0.5 * std::log(4.0 / 3.0)}, kHand, "weighted mean");
  expect_close(o.grad, {-0.3125, 0.3125, -0.3125, 0.3125}, kHand, "weighted mean grad");

  // q = [1, 0] and eps = 0.2 smooth to q' = [0.9, 0.1]: L = 0.9 ln 4 + 0.1 ln(4/3), gradient p -
  // q'.
  const buffer one_hot(FUSEDLOSS_FLOAT64, {1, 0});
  ce_params q = two_by_two(one_hot);
  q.batch = 1;
  q.label_smoothing = 0.2;
  q.reduction = FUSEDLOSS_REDUCTION_SUM;
  o = run(q, op::forward_backward, kTwoRows);
  expect_close(o.loss, {0.9 * kLn4 + 0.1 * std::log(4.0 / 3.0)}, kHand, "smoothed");
  expect_close(o.grad, {-0.65, 0.65}, kHand, "smoothed grad");
}

TEST(RowLossValues, SoftmaxFocal) {
  // x = [0, ln 3], y = 1: u = 3/4, lp = ln(3/4), m = 1/4. gamma = 2: L = -(1/4)^2 ln(3/4).
  // Gradient -m^2 (1 - 2 u lp / m) (e_1 - p) = -(1/16)(1 - 6 ln(3/4)) [-1/4, 1/4].
  // With alpha = [1, 1/2], both halve.
  const buffer targets(FUSEDLOSS_INT64, {1});
  focal_params p = fusedloss::make_softmax_focal_params();
  p.batch = 1;
  p.num_classes = 2;
  p.logits_dtype = FUSEDLOSS_FLOAT64;
  p.targets = targets.data();
  p.targets_dtype = FUSEDLOSS_INT64;
  p.gamma = 2;
  p.reduction = FUSEDLOSS_REDUCTION_SUM;
  const double loss = -std::log(0.75) / 16;
  const double g = (1 - 6 * std::log(0.75)) / 64;
  outputs o = run(p, op::forward_backward, {0, kLn3});
  expect_close(o.loss, {loss}, kHand, "loss");
  expect_close(o.grad, {g, -g}, kHand, "grad");
  const std::vector<float> alpha = {1, 0.5};
  p.alpha = alpha.data();
  o = run(p, op::forward_backward, {0, kLn3});
  expect_close(o.loss, {loss / 2}, kHand, "alpha loss");
  expect_close(o.grad, {g / 2, -g / 2}, kHand, "alpha grad");

  // A confident row: lp_y = 0 exactly (m = 0, r = -1 in the limit), so loss and gradient are 0.
  o = run(p, op::forward_backward, {-800, 0});
  EXPECT_EQ(o.loss[0], 0.0);
  EXPECT_EQ(o.grad[0], 0.0);
  EXPECT_EQ(o.grad[1], 0.0);
}

TEST(RowLossValues, ZLoss) {
  // x = [0, ln 3], lambda = 0.1: row 0 (y = 0) adds 0.1 (ln 4)^2 and 0.2 ln 4 p to the gradient;
  // row 1 is ignored and adds nothing, so mean divides both the loss and the z-loss by 1.
  const buffer targets(FUSEDLOSS_INT64, {0, -100});
  ce_params p = two_by_two(targets);
  p.z_loss = 0.1;
  const double z = 0.1 * kLn4 * kLn4;
  for (const fusedloss_reduction reduction : kReductions) {
    SCOPED_TRACE(reduction);
    p.reduction = reduction;
    const outputs o = run(p, op::forward_backward, kTwoRows);
    if (reduction == FUSEDLOSS_REDUCTION_NONE) {
      expect_close(o.loss, {kLn4 + z, 0}, kHand, "loss");
      expect_close(o.z_loss, {z, 0}, kHand, "z-loss");
    } else {
      expect_close(o.loss, {kLn4 + z}, kHand, "loss");
      expect_close(o.z_loss, {z}, kHand, "z-loss");
    }
    expect_close(o.grad, {-0.75 + 0.2 * kLn4 * 0.25, 0.75 + 0.2 * kLn4 * 0.75, 0, 0}, kHand,
                 "grad");
    expect_close(o.lse, {kLn4, kLn4}, kHand, "lse, the ignored row's too");
  }
}

TEST(RowLossValues, SoftCap) {
  // s = ln 3 maps [0, +inf] to [0, ln 3]: loss ln 4 (y = 0), gradient [-3/4, 0] (the cap is flat
  // at infinity). s = 2 and x_1 = 2 atanh(ln 3 / 2) give the same capped row; the gradient of x_1
  // is 3/4 (1 - (ln 3 / 2)^2).
  const buffer targets(FUSEDLOSS_INT64, {0, 0});
  ce_params p = two_by_two(targets);
  p.reduction = FUSEDLOSS_REDUCTION_NONE;
  p.softcap = kLn3;
  p.batch = 1;
  outputs o = run(p, op::forward_backward, {0, kInf});
  expect_close(o.loss, {kLn4}, kHand, "loss");
  expect_close(o.lse, {kLn4}, kHand, "lse after the cap");
  expect_close(o.grad, {-0.75, 0}, kHand, "grad");
  p.softcap = 2;
  o = run(p, op::forward_backward, {0, 2 * std::atanh(kLn3 / 2)});
  expect_close(o.loss, {kLn4}, kHand, "loss");
  expect_close(o.grad, {-0.75, 0.75 * (1 - kLn3 * kLn3 / 4)}, kHand, "grad");
}

// ---- Properties
// ------------------------------------------------------------------------------------

// Integer logits in [-8, 8] shifted by the largest amount the dtype still holds exactly
// (docs/DESIGN.md, decision 11): x - max is then exact, so the losses and gradients are bitwise
// unchanged.
TEST(RowLossProperties, CrossEntropyIsShiftInvariant) {
  SEEDED_RNG(rng);
  std::uniform_int_distribution<int> integer(-8, 8);
  for (const fusedloss_dtype dtype : {FUSEDLOSS_FLOAT64, FUSEDLOSS_FLOAT32}) {
    const double shift = dtype == FUSEDLOSS_FLOAT32 ? std::ldexp(1.0, 23) : std::ldexp(1.0, 52);
    for (const bool probabilities : {false, true}) {
      for (const fusedloss_reduction reduction : kReductions) {
        SCOPED_TRACE(std::to_string(dtype) + " probabilities=" + std::to_string(probabilities) +
                     " reduction=" + std::to_string(reduction));
        ce_params p = fusedloss::make_cross_entropy_params();
        p.batch = 6;
        p.num_classes = 5;
        p.logits_dtype = dtype;
        p.label_smoothing = 0.1;
        p.reduction = reduction;
        const std::vector<float> weight = to_float(checks::uniform(rng, 5, 0.5, 2.0));
        p.weight = weight.data();
        const buffer targets = probabilities
                                   ? buffer(FUSEDLOSS_FLOAT32, random_probabilities(p, rng))
                                   : buffer(FUSEDLOSS_INT64, random_classes(p, true, rng));
        p.targets = targets.data();
        p.targets_dtype = targets.dtype();
        std::vector<double> x(30), shifted(30);
        for (size_t i = 0; i < x.size(); ++i) {
          x[i] = integer(rng);
          shifted[i] = x[i] + shift;
        }
        const outputs a = run(p, op::forward_backward, x);
        const outputs b = run(p, op::forward_backward, shifted);
        expect_identical(b.loss, a.loss, "loss");
        expect_identical(b.grad, a.grad, "grad");
      }
    }
  }
}

TEST(RowLossProperties, FocalWithGammaZeroIsCrossEntropy) {
  SEEDED_RNG(rng);
  for (const fusedloss_dtype dtype : {FUSEDLOSS_FLOAT64, FUSEDLOSS_FLOAT32, FUSEDLOSS_BFLOAT16}) {
    for (const fusedloss_reduction reduction : kReductions) {
      SCOPED_TRACE(std::to_string(dtype) + " reduction=" + std::to_string(reduction));
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
      const outputs of = run(f, op::forward, x), oc = run(c, op::forward, x);
      expect_identical(of.loss, oc.loss, "loss");
      expect_identical(of.lse, oc.lse, "lse");
      expect_identical(run(f, op::backward, x, upstream).grad,
                       run(c, op::backward, x, upstream).grad, "grad");
    }
  }
}

TEST(RowLossProperties, FocalIsAtMostCrossEntropy) {
  SEEDED_RNG(rng);
  for (const double gamma : {0.5, 1.0, 2.0, 5.0}) {
    SCOPED_TRACE(gamma);
    focal_params f = with_shape(fusedloss::make_softmax_focal_params(), kShapes[0]);
    f.logits_dtype = FUSEDLOSS_FLOAT64;
    f.gamma = gamma;
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
    const outputs of = run(f, op::forward, x), oc = run(c, op::forward, x);
    for (int64_t r = 0; r < rows_of(f); ++r) {
      EXPECT_LE(of.loss[r], oc.loss[r]) << "row " << r;
      EXPECT_GE(of.loss[r], 0.0) << "row " << r;
    }
  }
}

// Index targets with smoothing against the one-hot probability targets that the library smooths:
// the same sums in a different order, so equal to a few ulps of the largest term.
TEST(RowLossProperties, SmoothedIndexTargetsEqualOneHotProbabilities) {
  SEEDED_RNG(rng);
  const checks::tolerance tol{1e-13, 1e-13};
  for (const bool weighted : {false, true}) {
    for (const fusedloss_reduction reduction : kReductions) {
      if (weighted && reduction == FUSEDLOSS_REDUCTION_MEAN) continue;  // normalisers differ
      SCOPED_TRACE("weighted=" + std::to_string(weighted) +
                   " reduction=" + std::to_string(reduction));
      ce_params index = with_shape(fusedloss::make_cross_entropy_params(), kShapes[1]);
      index.logits_dtype = FUSEDLOSS_FLOAT64;
      index.label_smoothing = 0.3;
      index.reduction = reduction;
      const std::vector<float> weight = to_float(checks::uniform(rng, index.num_classes, 0.5, 2));
      index.weight = weighted ? weight.data() : nullptr;
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
      const outputs a = run(index, op::forward_backward, x), b = run(soft, op::forward_backward, x);
      expect_close(a.loss, b.loss, tol, "loss");
      expect_close(a.grad, b.grad, tol, "grad");
    }
  }
}

// sum == mean * normaliser for loss and gradient, with each loss's own normaliser.
TEST(RowLossProperties, SumIsMeanTimesNormaliser) {
  SEEDED_RNG(rng);
  const checks::tolerance tol{1e-14, 1e-14};
  const auto check = [&](auto p, const std::vector<double>& x, double normaliser) {
    p.reduction = FUSEDLOSS_REDUCTION_SUM;
    const outputs sum = run(p, op::forward_backward, x);
    p.reduction = FUSEDLOSS_REDUCTION_MEAN;
    outputs mean = run(p, op::forward_backward, x);
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

// ---- Edge cases
// ------------------------------------------------------------------------------------

TEST(RowLossEdges, EmptyBatch) {
  for (const bool zero_policy : {false, true}) {
    for (const fusedloss_reduction reduction : kReductions) {
      for (const shape s : {shape{0, 3, 1, 0, 0}, shape{2, 3, 0, 0, 0}}) {
        SCOPED_TRACE(describe(s) + " zero_policy=" + std::to_string(zero_policy) +
                     " reduction=" + std::to_string(reduction));
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
             {run(p, op::forward_backward, x), run(f, op::forward_backward, x)}) {
          if (reduction == FUSEDLOSS_REDUCTION_NONE) {
            EXPECT_TRUE(o.loss.empty());
          } else if (reduction == FUSEDLOSS_REDUCTION_SUM || zero_policy) {
            expect_identical(o.loss, {0.0}, "loss");
          } else {
            EXPECT_TRUE(std::isnan(o.loss[0]));
          }
        }
        EXPECT_NO_THROW(run(p, op::backward, x, upstream));
        EXPECT_NO_THROW(run(f, op::backward, x, upstream));
      }
    }
  }
}

TEST(RowLossEdges, SingleClass) {
  // C = 1: p = 1 and lp = 0 for any finite logit, so loss and gradient are exactly 0, smoothed or
  // not.
  const buffer targets(FUSEDLOSS_INT64, {0, 0, 0});
  ce_params p = fusedloss::make_cross_entropy_params();
  p.batch = 3;
  p.num_classes = 1;
  p.logits_dtype = FUSEDLOSS_FLOAT64;
  p.targets = targets.data();
  p.targets_dtype = FUSEDLOSS_INT64;
  p.reduction = FUSEDLOSS_REDUCTION_NONE;
  for (const double eps : {0.0, 0.5}) {
    p.label_smoothing = eps;
    const outputs o = run(p, op::forward_backward, {-7.5, 0, 1e4});
    expect_identical(o.loss, {0, 0, 0}, "loss");
    expect_identical(o.grad, {0, 0, 0}, "grad");
    expect_identical(o.lse, {-7.5, 0, 1e4}, "lse");
  }
}

// Every row ignored, or all weight 0 on the targets' classes: mean is NaN or 0 per the policy, sum
// is 0 and the gradient exactly 0, even under a NaN or -inf row (deliberate differences 2 and 5).
TEST(RowLossEdges, ZeroNormaliser) {
  const std::vector<double> x = {-kInf, -kInf, -kInf, kNaN, 1, 2, 0.5, -kInf, 3};
  const std::vector<float> weight = {0, 1, 0};
  const buffer all_ignored(FUSEDLOSS_INT64, {-100, -100, -100});
  const buffer zero_weight(FUSEDLOSS_INT32, {0, -100, 2});
  for (const bool zero_policy : {false, true}) {
    for (const fusedloss_reduction reduction : kReductions) {
      for (const bool weighted : {false, true}) {
        SCOPED_TRACE("zero_policy=" + std::to_string(zero_policy) +
                     " reduction=" + std::to_string(reduction) +
                     (weighted ? " zero total weight" : " all rows ignored"));
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
        const outputs fb = run(p, op::forward_backward, x);
        const outputs bw = run(p, op::backward, x, upstream);
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
    }
  }
}

TEST(RowLossEdges, LargeLogits) {
  // [1e4, -1e4, 0]: exp underflows to exactly 0 away from the max, so the losses are 0, 2e4 and 1e4
  // and the gradients are e_0 - e_y, exactly, in float64 and float16 (1e4 is a float16 value).
  for (const fusedloss_dtype dtype : {FUSEDLOSS_FLOAT64, FUSEDLOSS_FLOAT16}) {
    SCOPED_TRACE(dtype);
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
    outputs o = run(p, op::forward_backward, x);
    expect_identical(o.loss, {0, 2e4, 1e4}, "cross-entropy loss");
    expect_identical(o.grad, grad, "cross-entropy grad");
    focal_params f = with_shape(fusedloss::make_softmax_focal_params(), {3, 3, 1, 0, 0});
    f.logits_dtype = dtype;
    f.targets = targets.data();
    f.targets_dtype = FUSEDLOSS_INT64;
    f.reduction = FUSEDLOSS_REDUCTION_NONE;
    for (const double gamma : {0.5, 2.0}) {
      f.gamma = gamma;
      o = run(f, op::forward_backward, x);
      expect_identical(o.loss, {0, 2e4, 1e4}, "focal loss");
      expect_identical(o.grad, grad, "focal grad");
    }
  }
}

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
  outputs o = run(p, op::forward_backward, x);
  expect_close(o.loss, {kLn4, kInf, kNaN, kNaN}, kHand, "loss");
  expect_close(o.grad, {-0.75, 0, 0.75, -1, 0.5, 0.5, kNaN, kNaN, kNaN, kNaN, kNaN, kNaN}, kHand,
               "grad");

  // eps = 0.3 with weight [1, 2, 1]: the smoothing term makes row 0's loss +inf, and the masked
  // class gets -eps w_1 / C = -0.2; the gradient stays finite.
  const std::vector<float> weight = {1, 2, 1};
  p.weight = weight.data();
  p.label_smoothing = 0.3;
  p.batch = 1;
  o = run(p, op::forward_backward, x);
  EXPECT_EQ(o.loss[0], kInf);
  EXPECT_DOUBLE_EQ(o.grad[1], -0.2);
  for (const double g : o.grad) EXPECT_TRUE(std::isfinite(g));
  // A zero weight on the masked class silences its -inf term: L = 0.7 ln 4 + 0.1 (ln 4 + ln(4/3)),
  // and that class's gradient is exactly 0.
  const std::vector<float> zero_on_mask = {1, 0, 1};
  p.weight = zero_on_mask.data();
  o = run(p, op::forward_backward, x);
  expect_close(o.loss, {0.7 * kLn4 + 0.1 * (kLn4 + std::log(4.0 / 3.0))}, kHand, "zero weight");
  EXPECT_EQ(o.grad[1], 0.0);
  p.weight = nullptr;
  p.label_smoothing = 0;

  // Probability targets: a zero probability on the masked class silences it as well.
  const buffer q(FUSEDLOSS_FLOAT64, {0.5, 0, 0.5});
  ce_params soft = p;
  soft.targets = q.data();
  soft.targets_dtype = FUSEDLOSS_FLOAT64;
  o = run(soft, op::forward_backward, x);
  expect_close(o.loss, {0.5 * kLn4 + 0.5 * std::log(4.0 / 3.0)}, kHand, "probabilities");
  expect_close(o.grad, {-0.25, 0, 0.25}, kHand, "probabilities grad");

  // The LSE of a row with a NaN is NaN wherever the NaN sits; an all -inf row's is -inf.
  p.batch = 3;
  o = run(p, op::forward, {-kInf, kNaN, -kInf, -kInf, -kInf, -kInf, kNaN, 0, 1});
  EXPECT_TRUE(std::isnan(o.lse[0]));
  EXPECT_EQ(o.lse[1], -kInf);
  EXPECT_TRUE(std::isnan(o.lse[2]));
  for (const double l : o.loss) EXPECT_TRUE(std::isnan(l));

  // The soft-cap maps +-inf to +-s first: every row is finite except the NaN one, and the capped
  // classes get exactly 0 gradient (the cap is flat at infinity).
  p.batch = 4;
  p.softcap = 2;
  o = run(p, op::forward_backward, x);
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
  o = run(f, op::forward_backward, x);
  EXPECT_TRUE(std::isfinite(o.loss[0]));
  EXPECT_EQ(o.grad[1], 0.0);
  EXPECT_EQ(o.loss[1], kInf);
  for (int i = 0; i < 6; ++i) EXPECT_TRUE(std::isfinite(o.grad[i])) << i;
  EXPECT_TRUE(std::isnan(o.loss[2]) && std::isnan(o.loss[3]));
  for (int i = 6; i < 12; ++i) EXPECT_TRUE(std::isnan(o.grad[i])) << i;
}

// Deliberate difference 2: an ignored row's gradient is exactly 0 even when its logits are -inf
// (PyTorch gives NaN), and it changes nothing else.
TEST(RowLossEdges, IgnoredRowsWithInfiniteLogits) {
  const buffer targets(FUSEDLOSS_INT64, {-100, 1, -100});
  const std::vector<double> x = {-kInf, -kInf, -kInf, 0, kLn3, -kInf, -kInf, kNaN, 0};
  for (const fusedloss_reduction reduction : kReductions) {
    SCOPED_TRACE(reduction);
    ce_params p = fusedloss::make_cross_entropy_params();
    p.batch = 3;
    p.num_classes = 3;
    p.logits_dtype = FUSEDLOSS_FLOAT64;
    p.targets = targets.data();
    p.targets_dtype = FUSEDLOSS_INT64;
    p.reduction = reduction;
    p.label_smoothing = 0.1;
    const outputs o = run(p, op::forward_backward, x);
    for (const int i : {0, 1, 2, 6, 7, 8}) EXPECT_EQ(o.grad[i], 0.0) << i;
    // Row 1 alone: [0, ln 3, -inf] with y = 1 and eps = 0.1 has +inf loss (the smoothing term).
    EXPECT_EQ(o.loss[reduction == FUSEDLOSS_REDUCTION_NONE ? 1 : 0], kInf);
    for (int i = 3; i < 6; ++i) EXPECT_TRUE(std::isfinite(o.grad[i])) << i;
    focal_params f = with_shape(fusedloss::make_softmax_focal_params(), {3, 3, 1, 0, 0});
    f.logits_dtype = FUSEDLOSS_FLOAT64;
    f.targets = targets.data();
    f.targets_dtype = FUSEDLOSS_INT64;
    f.reduction = reduction;
    const outputs of = run(f, op::forward_backward, x);
    for (const int i : {0, 1, 2, 6, 7, 8}) EXPECT_EQ(of.grad[i], 0.0) << i;
    for (const double l : of.loss) EXPECT_TRUE(std::isfinite(l));
  }
}

// A target neither ignore_index nor in [0, C): the call completes, its row is ignored, the C call
// returns FUSEDLOSS_INVALID_TARGET (the C++ call throws it) and the count goes to the counter. The
// huge targets would crash any read of weight or logits at their index.
TEST(RowLossEdges, OutOfRangeTargets) {
  SEEDED_RNG(rng);
  const int64_t huge64 = int64_t{1} << 60;
  for (const fusedloss_dtype dtype : kIndexDtypes) {
    SCOPED_TRACE(dtype);
    const double huge = dtype == FUSEDLOSS_INT32 ? 2147483647.0 : static_cast<double>(huge64);
    const double very_negative =
        dtype == FUSEDLOSS_INT32 ? -2147483648.0 : -static_cast<double>(huge64);
    const buffer bad(dtype, {0, 3, 1, -1, huge, very_negative, 2});
    const buffer same_ignored(dtype, {0, -100, 1, -100, -100, -100, 2});
    const std::vector<float> weight = {1, 2, 3};
    const std::vector<double> x = checks::uniform(rng, 21, -2, 2);
    for (const fusedloss_reduction reduction : kReductions) {
      SCOPED_TRACE(reduction);
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
      const outputs want = run(p, op::forward_backward, x);
      const outputs want_bw = run(p, op::backward, x, upstream);

      // The C call: completes, reports, counts.
      p.targets = bad.data();
      int64_t counter = 5;
      p.invalid_target_count = &counter;
      buffer logits(FUSEDLOSS_FLOAT64, x),
          loss = buffer::poisoned(FUSEDLOSS_FLOAT64, loss_count(p)),
          grad = buffer::poisoned(FUSEDLOSS_FLOAT64, 21), grad_loss(FUSEDLOSS_FLOAT64, upstream);
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
      const outputs want_focal = run(f, op::forward_backward, x);
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
  }
}

// grad_logits == logits: the gradient overwrites the logits in place and matches the out-of-place
// one; the padding columns keep their values.
TEST(RowLossEdges, InPlaceGradient) {
  SEEDED_RNG(rng);
  for (const fusedloss_dtype dtype : {FUSEDLOSS_FLOAT64, FUSEDLOSS_BFLOAT16}) {
    for (const op o : {op::backward, op::forward_backward}) {
      SCOPED_TRACE(std::to_string(dtype) + (o == op::backward ? " backward" : " forward_backward"));
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
      const outputs want = run(p, o, x, upstream);
      buffer logits(dtype, x);
      buffer grad_loss(loss_dtype_of(p), upstream);
      buffer loss = buffer::poisoned(loss_dtype_of(p), 1);
      p.logits = logits.data();
      p.grad_logits = logits.data();
      p.grad_loss = grad_loss.data();
      p.loss = o == op::backward ? nullptr : loss.data();
      if (o == op::backward) {
        fusedloss::backward(p);
      } else {
        fusedloss::forward_backward(p);
      }
      const std::vector<double> got = logits.values();
      for (size_t i = 0; i < got.size(); ++i) {
        if (std::isnan(want.grad[i])) {
          EXPECT_EQ(got[i], 42.0) << "padding " << i;
        } else {
          EXPECT_EQ(got[i], want.grad[i]) << i;
        }
      }
    }
  }
}

// float32, float16 and bfloat16 logits against the float64 call on the same rounded inputs: one
// rounding of the double result apart, to the loss dtype (float32) and to the gradient's dtype.
TEST(RowLossEdges, LowPrecisionLogitsMatchFloat64) {
  SEEDED_RNG(rng);
  const checks::tolerance loss_tol = checks::rounding_tolerance(FUSEDLOSS_FLOAT32);
  const auto compare = [&](auto p, const std::vector<double>& x, fusedloss_dtype dtype) {
    const std::vector<double> upstream =
        checks::round_to(FUSEDLOSS_FLOAT32, checks::uniform(rng, loss_count(p), 0.5, 2.0));
    const std::vector<double> rounded = checks::round_to(dtype, x);
    auto wide = p;
    wide.logits_dtype = FUSEDLOSS_FLOAT64;
    p.logits_dtype = dtype;
    const outputs want = run(wide, op::forward_backward, rounded);
    const outputs got = run(p, op::forward_backward, rounded);
    expect_close(got.loss, want.loss, loss_tol, "loss");
    expect_close(got.lse, want.lse, loss_tol, "lse");
    if constexpr (std::is_same_v<decltype(p), ce_params>) {
      expect_close(got.z_loss, want.z_loss, loss_tol, "z-loss");
    }
    expect_close(got.grad, want.grad, checks::rounding_tolerance(dtype), "forward_backward grad");
    expect_close(run(p, op::backward, rounded, upstream).grad,
                 run(wide, op::backward, rounded, upstream).grad, checks::rounding_tolerance(dtype),
                 "backward grad");
  };
  for (const fusedloss_dtype dtype : {FUSEDLOSS_FLOAT32, FUSEDLOSS_FLOAT16, FUSEDLOSS_BFLOAT16}) {
    for (const fusedloss_reduction reduction : kReductions) {
      SCOPED_TRACE(std::to_string(dtype) + " reduction=" + std::to_string(reduction));
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
        SCOPED_TRACE("probability targets " + std::to_string(targets_dtype));
        const buffer q(targets_dtype, random_probabilities(p, rng));
        // Both calls read the same rounded probabilities, as float64 in the wide call when needed.
        const buffer q_wide(
            targets_dtype == FUSEDLOSS_FLOAT32 ? FUSEDLOSS_FLOAT32 : FUSEDLOSS_FLOAT64, q.values());
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
          const outputs want = run(soft, op::forward_backward, rounded);
          const outputs got = run(narrow, op::forward_backward, rounded);
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
  }
}

}  // namespace
