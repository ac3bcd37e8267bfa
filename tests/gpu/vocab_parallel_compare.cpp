// Vocabulary-parallel cross-entropy's GPU test harness (vocab_parallel_harness.hpp): the
// tolerances, the whole-row reference, and the comparison of every rank's outputs with the CPU
// path's and the whole rows'.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <random>
#include <sstream>
#include <string>
#include <vector>

#include "checks.hpp"
#include "fusedloss/fusedloss.h"
#include "vocab_parallel_harness.hpp"

namespace fusedloss::gpu_tests::vocab_parallel {
namespace {

// ------------------------------------------------------------------------------------------------
// Tolerances, stated once. Both paths store the summaries in float32; the GPU computes in float32
// (2^x and log2 on the special-function unit, within 2 ulp; tanhf), the references in double.
// Logits lie in [-6, 6), so |LSE| < 6 + log V < 15 and every row's LSE, and so the relative error
// of every probability p_j = exp(x_j - LSE), is within kBudget: float32 sums of up to a few
// thousand exponentials (~sqrt(n) 2^-24 each), log and the final addition, with a margin of ~5.
constexpr double kBudget = 2e-5;
// Loss and z-loss per row, in float32: the LSE's error enters with slope w_y (1 + 2 lambda |LSE|),
// the smoothing term relatively (its terms share a sign).
constexpr double kLossRtol = 2e-5;
// Summary fields: the maximum, reference and target logit are a stored logit (through tanhf
// under the soft-cap: a few ulp of s); the sums are float32 sums of up to a few thousand terms.
constexpr double kFieldRtol = 2e-5;
// Gradient (logits' dtype): every element is P p_j - A [j = y] - B w_j times the upstream and the
// cap's slope, with only p_j inexact, so its error is at most K kBudget p_j, K the largest
// |upstream| w (1 + 2 lambda |LSE|) (>= |P| times the upstream); the true-class term cancels, so
// that error is absolute, not relative to the element. Allowed: 2 K kBudget p_j (p_j from the
// whole-row LSE) + (ulp + kBudget) |want| + floor, ulp and floor from checks::rounding_tolerance
// (the two sides may round to neighbours).

// ------------------------------------------------------------------------------------------------
// The whole-row reference on the concatenated logits.

struct whole_rows {
  buffer loss, lse, z, grad;
  int64_t counter = 0;
};

whole_rows run_whole(const vp_case& c, const inputs& in, fusedloss_dtype dtype) {
  whole_rows out;
  const int64_t N = c.batch, V = c.vocab();
  buffer logits(dtype, in.x);
  buffer weight(FUSEDLOSS_FLOAT32, in.w);
  const buffer scale(FUSEDLOSS_FLOAT32, {1.5});
  buffer count(FUSEDLOSS_INT64, {static_cast<double>(kCounterStart)});
  out.loss = buffer::poisoned(FUSEDLOSS_FLOAT32, c.loss_count());
  out.lse = buffer::poisoned(FUSEDLOSS_FLOAT32, static_cast<size_t>(N));
  out.z = buffer::poisoned(FUSEDLOSS_FLOAT32, c.loss_count());
  out.grad = buffer::poisoned(dtype, static_cast<size_t>(N * V));
  fusedloss_cross_entropy_params p;
  fusedloss_cross_entropy_params_init(&p);
  p.device = FUSEDLOSS_DEVICE_CPU;
  p.batch = N;
  p.num_classes = V;
  p.logits = logits.data();
  p.logits_dtype = dtype;
  p.targets = in.targets.data();
  p.targets_dtype = c.index_dtype;
  p.weight = c.weight ? static_cast<const float*>(weight.data()) : nullptr;
  p.ignore_index = c.ignore_index;
  p.label_smoothing = c.label_smoothing;
  p.z_loss = c.z_loss;
  p.softcap = c.softcap;
  p.reduction = c.reduction;
  p.empty_mean = c.empty_mean;
  p.loss = out.loss.data();
  p.lse = out.lse.data();
  p.z_loss_out = out.z.data();
  p.grad_logits = out.grad.data();
  p.grad_scale = c.grad_scale;
  p.grad_scale_ptr = c.grad_scale_ptr ? static_cast<const float*>(scale.data()) : nullptr;
  p.invalid_target_count = static_cast<int64_t*>(count.data());
  fusedloss_error err{};
  const fusedloss_status s =
      fusedloss_cross_entropy_forward_backward(&p, nullptr, 0, nullptr, &err);
  EXPECT_TRUE(s == FUSEDLOSS_SUCCESS || s == FUSEDLOSS_INVALID_TARGET) << err.message;
  out.counter = static_cast<int64_t>(count[0]);
  return out;
}

// ------------------------------------------------------------------------------------------------
// Comparisons.

// 2 K kBudget p_j for every element of the whole rows (the gradient's allowance, see the top), p_j
// from the capped logit and the whole-row reference's LSE.
std::vector<double> gradient_allowance(const vp_case& c, const inputs& in, const buffer& lse,
                                       double k) {
  const int64_t V = c.vocab();
  std::vector<double> out(in.x.size());
  for (size_t i = 0; i < out.size(); ++i) {
    const double x = in.x[i];
    const double capped = c.softcap > 0 ? c.softcap * std::tanh(x / c.softcap) : x;
    const double p = std::exp(capped - lse[i / static_cast<size_t>(V)]);
    out[i] = 2.0 * k * kBudget * (std::isfinite(p) ? p : 1.0);
  }
  return out;
}

// The expected bounds' per-problem quantities.
struct bounds {
  double normaliser = 0;  // the mean's D
  double k = 0;           // the largest |upstream| w (1 + 2 lambda |LSE|) over rows with a gradient
  double row_loss_atol = 0;
  double reduced_atol = 0;
};

bounds bounds_of(const vp_case& c, const inputs& in) {
  bounds b;
  const int64_t V = c.vocab();
  double wmax = 1.0;
  for (double w : in.w) wmax = std::max(wmax, w);
  for (int64_t y : in.y) {
    if (y != c.ignore_index && y >= 0 && y < V) b.normaliser += in.w[static_cast<size_t>(y)];
  }
  const bool mean = c.reduction == FUSEDLOSS_REDUCTION_MEAN;
  double upstream = c.grad_scale * (c.grad_scale_ptr ? 1.5 : 1.0);
  if (mean) upstream = b.normaliser != 0 ? upstream / b.normaliser : 0.0;
  const double lse_max = 6.0 + std::log(static_cast<double>(V)) + 1.0;
  const double slope = wmax * (1.0 + 2.0 * c.z_loss * lse_max);
  b.k = std::fabs(upstream) * slope;
  b.row_loss_atol = slope * kBudget;
  const double rows = static_cast<double>(c.batch);
  b.reduced_atol = b.row_loss_atol * rows / (mean ? std::max(b.normaliser, 1e-30) : 1.0);
  return b;
}

// Rank k's slice of the whole rows' gradient.
std::vector<double> slice_of(const vp_case& c, const std::vector<double>& whole, int k) {
  std::vector<double> out;
  for (int64_t r = 0; r < c.batch; ++r) {
    for (int64_t j = 0; j < c.widths[static_cast<size_t>(k)]; ++j) {
      out.push_back(whole[static_cast<size_t>(r * c.vocab() + c.start(k) + j)]);
    }
  }
  return out;
}

// The padding bytes of rank k's gradient rows: poison, or in place the logits' own padding.
void expect_padding_kept(const vp_case& c, const buffer& got, const buffer& before, int k,
                         const std::string& what) {
  const size_t e = element_bytes(got.dtype());
  const auto* g = static_cast<const unsigned char*>(got.data());
  const auto* b = static_cast<const unsigned char*>(before.data());
  int changed = 0;
  for (int64_t r = 0; r < c.batch; ++r) {
    for (int64_t j = c.widths[static_cast<size_t>(k)]; j < c.stride(k); ++j) {
      const size_t at = static_cast<size_t>(r * c.stride(k) + j) * e;
      changed += std::memcmp(g + at, b + at, e) != 0;
    }
  }
  EXPECT_EQ(changed, 0) << what << ": padding elements written";
}

std::vector<double> field_of(const buffer& s, int f, int64_t batch) {
  const std::vector<double> v = s.values();
  return std::vector<double>(v.begin() + f * batch, v.begin() + (f + 1) * batch);
}

}  // namespace

void expect_close(const std::vector<double>& got, const std::vector<double>& want,
                  const checks::tolerance& tol, const std::string& what,
                  const std::vector<double>& extra_atol) {
  ASSERT_EQ(got.size(), want.size()) << what;
  ASSERT_TRUE(extra_atol.empty() || extra_atol.size() == got.size()) << what;
  int shown = 0, bad = 0;
  std::ostringstream o;
  for (size_t i = 0; i < got.size(); ++i) {
    const checks::tolerance t{tol.atol + (extra_atol.empty() ? 0.0 : extra_atol[i]), tol.rtol};
    if (t.accepts(got[i], want[i])) continue;
    ++bad;
    if (shown++ < 6) {
      o << "\n  [" << i << "] got " << got[i] << " want " << want[i] << " (atol " << t.atol << ")";
    }
  }
  EXPECT_EQ(bad, 0) << what << ": " << bad << " of " << got.size() << " differ (atol " << tol.atol
                    << " + per element, rtol " << tol.rtol << ")" << o.str();
}

std::vector<double> rows_of(const vp_case& c, const buffer& g, int k) {
  const std::vector<double> v = g.values();
  std::vector<double> out;
  for (int64_t r = 0; r < c.batch; ++r) {
    for (int64_t j = 0; j < c.widths[static_cast<size_t>(k)]; ++j) {
      out.push_back(v[static_cast<size_t>(r * c.stride(k) + j)]);
    }
  }
  return out;
}

void check_case(const vp_case& c, fusedloss_dtype dtype, uint64_t seed) {
  SCOPED_TRACE(c.describe() + " dtype=" + fusedloss_dtype_string(dtype));
  std::mt19937_64 rng(seed);
  const inputs in = make_inputs(c, dtype, rng);
  const shard_run gpu = run_shards(c, in, dtype, true);
  ASSERT_TRUE(gpu.failure.empty()) << gpu.failure;
  const shard_run cpu = run_shards(c, in, dtype, false);
  ASSERT_TRUE(cpu.failure.empty()) << cpu.failure;
  const whole_rows whole = run_whole(c, in, dtype);
  const bounds b = bounds_of(c, in);
  const int W = c.ranks();
  const int64_t N = c.batch;
  const checks::tolerance ulp = checks::rounding_tolerance(dtype);
  const checks::tolerance grad_tol{ulp.atol, ulp.rtol + kBudget};
  const bool none = c.reduction == FUSEDLOSS_REDUCTION_NONE;
  const checks::tolerance loss_tol{none ? b.row_loss_atol : b.reduced_atol, kLossRtol};
  const checks::tolerance lse_tol{kBudget, 1e-6};
  const std::vector<double> whole_grad = whole.grad.values();
  const std::vector<double> grad_allowance = gradient_allowance(c, in, whole.lse, b.k);

  for (int k = 0; k < W; ++k) {
    const std::string rank = "rank " + std::to_string(k);
    const rank_outputs& g = gpu.ranks[static_cast<size_t>(k)];
    const rank_outputs& r = cpu.ranks[static_cast<size_t>(k)];
    EXPECT_EQ(g.finish, FUSEDLOSS_SUCCESS) << rank;
    EXPECT_EQ(r.finish, in.invalid > 0 ? FUSEDLOSS_INVALID_TARGET : FUSEDLOSS_SUCCESS) << rank;
    // (a) the summaries of partial against the CPU path's, field by field.
    const double width = static_cast<double>(c.widths[static_cast<size_t>(k)]);
    for (int f = 0; f < kFields; ++f) {
      // WEIGHTED_SUM: a sum of terms of either sign up to 12 w in size.
      const double atol = f == FUSEDLOSS_SHARD_SUMMARY_WEIGHTED_SUM
                              ? kFieldRtol * 12.0 * width * 2.0
                              : kFieldRtol * (1.0 + c.softcap);
      expect_close(field_of(g.summary_partial, f, N), field_of(r.summary_partial, f, N),
                   {atol, kFieldRtol}, rank + " summary field " + std::to_string(f));
    }
    // The counter: only the rank whose slice starts at class 0 counts.
    EXPECT_EQ(g.counter, kCounterStart + (k == 0 ? in.invalid : 0)) << rank;
    EXPECT_EQ(r.counter, kCounterStart + (k == 0 ? in.invalid : 0)) << rank;

    // (a) and (b): the loss, LSE and z-loss (the same on every rank).
    if (c.loss_out) {
      expect_close(g.loss.values(), r.loss.values(), loss_tol, rank + " loss vs CPU shards");
      expect_close(g.loss.values(), whole.loss.values(), loss_tol, rank + " loss vs whole rows");
    } else {
      const buffer poison = buffer::poisoned(FUSEDLOSS_FLOAT32, g.loss.size());
      EXPECT_EQ(std::memcmp(g.loss.data(), poison.data(), poison.size_bytes()), 0)
          << rank << ": loss written though not given";
    }
    if (c.lse_out) {
      expect_close(g.lse.values(), r.lse.values(), lse_tol, rank + " lse vs CPU shards");
      expect_close(g.lse.values(), whole.lse.values(), lse_tol, rank + " lse vs whole rows");
    }
    if (c.z_loss_out) {
      expect_close(g.z.values(), r.z.values(), loss_tol, rank + " z_loss vs CPU shards");
      expect_close(g.z.values(), whole.z.values(), loss_tol, rank + " z_loss vs whole rows");
    }
    // The gradient of the shard.
    if (c.grad) {
      const std::vector<double> got = rows_of(c, g.grad, k);
      const std::vector<double> allowance = slice_of(c, grad_allowance, k);
      expect_close(got, rows_of(c, r.grad, k), grad_tol, rank + " grad vs CPU shards", allowance);
      expect_close(got, slice_of(c, whole_grad, k), grad_tol, rank + " grad vs whole rows",
                   allowance);
      const buffer before =
          c.in_place ? slice_logits(c, in, dtype, k) : buffer::poisoned(dtype, g.grad.size());
      expect_padding_kept(c, g.grad, before, k, rank);
    } else {
      const buffer poison = buffer::poisoned(dtype, g.grad.size());
      EXPECT_EQ(std::memcmp(g.grad.data(), poison.data(), poison.size_bytes()), 0)
          << rank << ": a loss-only finish wrote a gradient";
    }
  }
}

}  // namespace fusedloss::gpu_tests::vocab_parallel
