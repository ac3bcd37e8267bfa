// The shard calls of vocabulary-parallel cross-entropy (fusedloss/vocab_parallel.h) in double.
// Each rank summarises its slice of every row; after the caller's all-reduces the summaries are
// those of the whole rows, and the loss and the shard's gradient follow from them and the slice.
// Only the summaries themselves are rounded, to the loss dtype the collectives carry.
#include <cmath>
#include <cstdint>

#include "dtype.hpp"
#include "reference/reference.hpp"

namespace fusedloss::reference {
namespace {

using shard_params = fusedloss_cross_entropy_shard_params;

// A term whose coefficient is exactly 0 contributes exactly 0, even where its factor is infinite.
double term(double coefficient, double factor) {
  return coefficient == 0 ? 0.0 : coefficient * factor;
}

// Field `f` of row `r` of the summary.
struct summary {
  const shard_params& p;
  fusedloss_dtype dtype = host::loss_dtype(p.logits_dtype);

  double get(fusedloss_shard_summary_field f, int64_t r) const {
    return host::load(p.summary, dtype, f * p.batch + r);
  }
  void set(fusedloss_shard_summary_field f, int64_t r, double v) const {
    host::store(p.summary, dtype, f * p.batch + r, v);
  }
};

// What sums are relative to: the maximum, or 0 while every logit is -inf (so that -inf - ref is
// -inf, never -inf - -inf, which is NaN).
double reference_of(double max) { return max == -INFINITY ? 0.0 : max; }

// Logit c of row r of the shard after the soft-cap, and d(capped)/d(raw) when `dcap` is given.
double capped(const shard_params& p, int64_t r, int64_t c, double* dcap = nullptr) {
  const double v = host::load(p.logits, p.logits_dtype, r * p.row_stride + c);
  if (p.softcap <= 0) {
    if (dcap != nullptr) *dcap = 1.0;
    return v;
  }
  const double t = std::tanh(v / p.softcap);  // +-inf -> +-1, so the cap maps them to +-s
  if (dcap != nullptr) *dcap = 1.0 - t * t;
  return p.softcap * t;
}

double class_weight(const shard_params& p, int64_t local) {
  return p.weight != nullptr ? static_cast<double>(p.weight[local]) : 1.0;
}

// A row's target: its global class, or one of these.
constexpr int64_t kIgnored = -1;
constexpr int64_t kInvalid = -2;

int64_t target_of(const shard_params& p, int64_t r) {
  const int64_t y = host::load_index(p.targets, p.targets_dtype, r);
  if (y == p.ignore_index) return kIgnored;
  return y >= 0 && y < p.vocab_size ? y : kInvalid;
}

}  // namespace

void cross_entropy_shard_partial(const shard_params& p) {
  const summary s{p};
  const bool smoothing = p.label_smoothing > 0;
  for (int64_t r = 0; r < p.batch; ++r) {
    // A NaN sticks in the max, as in the whole-row reference, and turns the sums NaN.
    double max = -INFINITY;
    for (int64_t c = 0; c < p.num_classes; ++c) {
      const double v = capped(p, r, c);
      if (!std::isnan(max) && (std::isnan(v) || v > max)) max = v;
    }
    const double ref = reference_of(max);
    double sum_exp = 0, weighted = 0, weight_sum = 0;
    for (int64_t c = 0; c < p.num_classes; ++c) {
      const double x = capped(p, r, c) - ref;
      sum_exp += std::exp(x);
      if (smoothing) {
        weighted += term(class_weight(p, c), x);
        weight_sum += class_weight(p, c);
      }
    }
    const int64_t y = target_of(p, r);
    const int64_t local = y - p.vocab_start;
    const bool owned = y >= 0 && local < p.num_classes && local >= 0;
    s.set(FUSEDLOSS_SHARD_SUMMARY_MAX, r, max);
    s.set(FUSEDLOSS_SHARD_SUMMARY_REFERENCE, r, ref);
    s.set(FUSEDLOSS_SHARD_SUMMARY_SUM_EXP, r, sum_exp);
    s.set(FUSEDLOSS_SHARD_SUMMARY_WEIGHTED_SUM, r, weighted);
    s.set(FUSEDLOSS_SHARD_SUMMARY_WEIGHT_SUM, r, weight_sum);
    s.set(FUSEDLOSS_SHARD_SUMMARY_TARGET_LOGIT, r, owned ? capped(p, r, local) : 0.0);
    s.set(FUSEDLOSS_SHARD_SUMMARY_TARGET_WEIGHT, r, owned ? class_weight(p, local) : 0.0);
  }
}

void cross_entropy_shard_rescale(const shard_params& p) {
  const summary s{p};
  for (int64_t r = 0; r < p.batch; ++r) {
    const double shift = s.get(FUSEDLOSS_SHARD_SUMMARY_REFERENCE, r) -
                         reference_of(s.get(FUSEDLOSS_SHARD_SUMMARY_MAX, r));
    if (shift == 0) continue;
    // A zero sum stays zero however far this shard lies below the maximum (an all -inf shard);
    // a NaN stays NaN.
    const double sum_exp = s.get(FUSEDLOSS_SHARD_SUMMARY_SUM_EXP, r);
    if (sum_exp != 0) s.set(FUSEDLOSS_SHARD_SUMMARY_SUM_EXP, r, sum_exp * std::exp(shift));
    const double weight_sum = s.get(FUSEDLOSS_SHARD_SUMMARY_WEIGHT_SUM, r);
    if (weight_sum != 0) {
      s.set(FUSEDLOSS_SHARD_SUMMARY_WEIGHTED_SUM, r,
            s.get(FUSEDLOSS_SHARD_SUMMARY_WEIGHTED_SUM, r) + shift * weight_sum);
    }
  }
}

int64_t cross_entropy_shard_finish(const shard_params& p) {
  const summary s{p};
  const fusedloss_dtype loss_dtype = s.dtype;
  const double eps = p.label_smoothing;
  const double smooth_scale = eps / static_cast<double>(p.vocab_size);
  const double lambda = p.z_loss;

  // The normaliser is needed before the first gradient, so the targets are read once ahead.
  int64_t invalid = 0;
  double normaliser = 0;
  for (int64_t r = 0; r < p.batch; ++r) {
    const int64_t y = target_of(p, r);
    if (y == kInvalid) ++invalid;
    if (y >= 0) normaliser += s.get(FUSEDLOSS_SHARD_SUMMARY_TARGET_WEIGHT, r);
  }
  const bool mean = p.reduction == FUSEDLOSS_REDUCTION_MEAN;
  const bool none = p.reduction == FUSEDLOSS_REDUCTION_NONE;
  const bool zero_gradient = mean && normaliser == 0;
  double upstream = fused_grad_scale(p);
  if (mean && !zero_gradient) upstream /= normaliser;

  double loss_sum = 0, z_sum = 0;
  for (int64_t r = 0; r < p.batch; ++r) {
    const int64_t y = target_of(p, r);
    const double ref = reference_of(s.get(FUSEDLOSS_SHARD_SUMMARY_MAX, r));
    const double log_sum = std::log(s.get(FUSEDLOSS_SHARD_SUMMARY_SUM_EXP, r));
    const double lse = ref + log_sum;  // -inf for a row of -inf logits
    if (p.lse != nullptr) host::store(p.lse, loss_dtype, r, lse);
    double loss = 0, z = 0;
    if (y >= 0) {
      const double w_y = s.get(FUSEDLOSS_SHARD_SUMMARY_TARGET_WEIGHT, r);
      const double x_y = s.get(FUSEDLOSS_SHARD_SUMMARY_TARGET_LOGIT, r);
      const double nll = term(w_y, log_sum - (x_y - ref));
      // -sum_c w_c lp_c with lp_c = (x_c - ref) - log_sum.
      const double smooth = term(s.get(FUSEDLOSS_SHARD_SUMMARY_WEIGHT_SUM, r), log_sum) -
                            s.get(FUSEDLOSS_SHARD_SUMMARY_WEIGHTED_SUM, r);
      z = term(lambda, lse * lse);
      loss = term(1.0 - eps, nll) + term(smooth_scale, smooth) + z;
    }
    if (none) {
      if (p.loss != nullptr) host::store(p.loss, loss_dtype, r, loss);
      if (p.z_loss_out != nullptr) host::store(p.z_loss_out, loss_dtype, r, z);
    }
    loss_sum += loss;
    z_sum += z;
    if (p.grad_logits == nullptr) continue;
    const bool grad = y >= 0 && !zero_gradient;
    const double w_y = grad ? s.get(FUSEDLOSS_SHARD_SUMMARY_TARGET_WEIGHT, r) : 0.0;
    const double weight_sum = grad ? s.get(FUSEDLOSS_SHARD_SUMMARY_WEIGHT_SUM, r) : 0.0;
    for (int64_t j = 0; j < p.num_classes; ++j) {
      // Ignored rows get exactly 0 whatever their logits, which are not read.
      double d = 0;
      if (grad) {
        double dcap = 1;
        const double pj = std::exp(capped(p, r, j, &dcap) - ref - log_sum);
        const double onehot = p.vocab_start + j == y ? 1.0 : 0.0;
        d = (1.0 - eps) * w_y * (pj - onehot) +
            smooth_scale * (pj * weight_sum - class_weight(p, j)) + 2.0 * lambda * lse * pj;
        d *= upstream * dcap;
      }
      host::store(p.grad_logits, p.logits_dtype, r * p.grad_row_stride + j, d);
    }
  }
  if (!none) {
    const double empty = p.empty_mean == FUSEDLOSS_EMPTY_MEAN_ZERO ? 0.0 : NAN;
    const auto reduced = [&](double sum) {
      if (!mean) return sum;
      return normaliser != 0 ? sum / normaliser : empty;
    };
    if (p.loss != nullptr) host::store(p.loss, loss_dtype, 0, reduced(loss_sum));
    if (p.z_loss_out != nullptr) host::store(p.z_loss_out, loss_dtype, 0, reduced(z_sum));
  }
  // One rank counts, so that the ranks' counters add up to each invalid target once.
  if (p.invalid_target_count != nullptr && p.vocab_start == 0) *p.invalid_target_count += invalid;
  return invalid;
}

}  // namespace fusedloss::reference
