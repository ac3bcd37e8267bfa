// What the row-loss tests (cross-entropy with class-index and probability targets, softmax focal,
// through the public API on the CPU reference) share: the seed in the trace, the layout of a params
// struct, one call with every output poisoned, the comparisons, the shapes, the random problems and
// the cases over a dtype and a reduction.
#pragma once

#include <gtest/gtest.h>

#include <cmath>
#include <cstdint>
#include <initializer_list>
#include <limits>
#include <ostream>
#include <random>
#include <string>
#include <type_traits>
#include <vector>

#include "../loss_tests.hpp"
#include "checks.hpp"
#include "fusedloss/fusedloss.hpp"

namespace row_loss_tests {

namespace checks = fusedloss::checks;
namespace names = loss_tests;
using checks::buffer;
using ce_params = fusedloss::cross_entropy_params;
using focal_params = fusedloss::softmax_focal_params;
using fusedloss::call;

inline constexpr double kInf = std::numeric_limits<double>::infinity();
inline const double kNaN = std::nan("");
inline const double kLn3 = std::log(3.0);
inline const double kLn4 = std::log(4.0);

inline constexpr fusedloss_reduction kReductions[] = {
    FUSEDLOSS_REDUCTION_NONE, FUSEDLOSS_REDUCTION_SUM, FUSEDLOSS_REDUCTION_MEAN};
inline constexpr fusedloss_dtype kIndexDtypes[] = {FUSEDLOSS_INT32, FUSEDLOSS_INT64};

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
  return checks::loss_dtype_of(p.logits_dtype);
}

struct outputs {
  std::vector<double> loss, lse, z_loss, grad;
};

// Runs call `c` on `p` with logits `x` (stored in p.logits_dtype) and returns every output.
// Outputs start poisoned (NaN), so what the call does not write reads back NaN. backward reads
// `upstream` as grad_loss and, when `saved_lse` is given, reads it as the LSE.
template <class P>
outputs call_loss(P p, call c, const std::vector<double>& x,
                  const std::vector<double>& upstream = {},
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
  p.loss = c == call::backward ? nullptr : loss.data();
  p.lse = c == call::backward && saved_lse.empty() ? nullptr : lse.data();
  if constexpr (std::is_same_v<P, ce_params>) {
    p.z_loss_out = c == call::backward ? nullptr : z_loss.data();
  }
  p.grad_logits = c == call::forward ? nullptr : grad.data();
  p.grad_loss = grad_loss.data();
  fusedloss::run(p, c);
  return {loss.values(), lse.values(), z_loss.values(), grad.values()};
}

// Bitwise-equal sequences, NaN matching NaN (the poisoned padding).
void expect_identical(const std::vector<double>& got, const std::vector<double>& want,
                      const char* what);

void expect_close(const std::vector<double>& got, const std::vector<double>& want,
                  const checks::tolerance& tol, const char* what);

// Hand-computed values are exact reals; the reference's double rounding stays within a few ulps.
inline const checks::tolerance kHand{1e-15, 1e-14};

double dot(const std::vector<double>& a, const std::vector<double>& b);

std::vector<float> to_float(const std::vector<double>& v);

// ---- Random problems ----------------------------------------------------------------------------

struct shape {
  int64_t batch, classes, spatial, row_stride, grad_row_stride;
};
inline const shape kShapes[] = {
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

// A case of a parameterised test over a dtype and a reduction.
struct dtype_reduction {
  fusedloss_dtype dtype;
  fusedloss_reduction reduction;
};
void PrintTo(const dtype_reduction& c, std::ostream* os);

// Every reduction for each of `dtypes`, in that order.
std::vector<dtype_reduction> with_every_reduction(std::initializer_list<fusedloss_dtype> dtypes);

// The shape as a name piece, e.g. n5_c4_s1_stride6_grad5 (a stride of 0, the default, left off).
std::string name_of(const shape& s);

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
std::vector<double> random_probabilities(const ce_params& p, std::mt19937_64& rng);

}  // namespace row_loss_tests
