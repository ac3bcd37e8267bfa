// The row losses (cross-entropy with index or probability targets, softmax focal) in double,
// straight from docs/SEMANTICS.md. One driver owns what the losses share: the layout, loading a row
// with its soft-cap and LSE, ignored and out-of-range targets, the reduction with its normaliser,
// and the upstream gradient; each loss is a function of one loaded row giving its loss and dL/dx.
#include <cmath>
#include <cstdint>
#include <vector>

#include "dtype.hpp"
#include "reference/reference.hpp"

namespace fusedloss::reference {
namespace {

// A term whose coefficient is exactly 0 contributes exactly 0, even where its factor is infinite
// (a -inf mask under a zero weight or a zero smoothing must not turn into 0 * inf = NaN).
double term(double coefficient, double factor) {
  return coefficient == 0 ? 0.0 : coefficient * factor;
}

// One row's logits after the soft-cap, kept as x - max so that lp = (x - max) - log(sum) never adds
// the max back: integer logits shifted by any exactly representable amount give bitwise the same
// losses. The row is copied out before any gradient is written, because grad_logits may alias
// logits.
struct row {
  std::vector<double> shifted;  // capped logits minus `pivot`
  std::vector<double> dcap;     // d(capped)/d(raw), empty when the soft-cap is off
  double pivot = 0;             // the row's max, or the saved LSE
  double log_sum = 0;           // log sum exp(shifted); 0 with a saved LSE
  double lse() const { return pivot + log_sum; }
  double lp(int64_t c) const { return shifted[c] - log_sum; }
};

struct row_value {
  double loss;    // the z-loss included
  double z_loss;  // the z-loss alone
};

// Class-index classification of a row's target; probability targets are never ignored.
constexpr int64_t kIgnored = -1;
constexpr int64_t kInvalid = -2;

// Where row r = (n, s) of a row loss's params keeps its values, and how a row is loaded.
template <class Params>
struct rows {
  const Params& p;

  int64_t offset(int64_t r, int64_t stride, int64_t c) const {
    return (r / p.spatial) * stride + c * p.spatial + r % p.spatial;
  }

  // Two passes for the LSE (max, then the sum of exponentials), as the header's traffic note says.
  // A NaN sticks in the max and +inf makes x - max NaN, so either turns the whole row into NaN.
  void load(int64_t r, double softcap, const void* saved_lse, fusedloss_dtype lse_dtype,
            row& out) const {
    const int64_t C = p.num_classes;
    out.shifted.resize(C);
    out.dcap.resize(softcap > 0 ? C : 0);
    double max = -INFINITY;
    for (int64_t c = 0; c < C; ++c) {
      double v = host::load(p.logits, p.logits_dtype, offset(r, p.row_stride, c));
      if (softcap > 0) {
        const double t = std::tanh(v / softcap);  // +-inf -> +-1, so the cap maps them to +-s
        v = softcap * t;
        out.dcap[c] = 1.0 - t * t;
      }
      out.shifted[c] = v;
      if (!std::isnan(max) && (std::isnan(v) || v > max)) max = v;
    }
    out.pivot = saved_lse != nullptr ? host::load(saved_lse, lse_dtype, r) : max;
    double sum = 0;
    for (int64_t c = 0; c < C; ++c) {
      out.shifted[c] -= out.pivot;
      sum += std::exp(out.shifted[c]);
    }
    // An all -inf row has LSE -inf, as torch.logsumexp (its lp stay NaN: -inf - -inf).
    out.log_sum = saved_lse != nullptr || max == -INFINITY ? 0.0 : std::log(sum);
  }
};

// A loss or z-loss output: stored per row under none, summed otherwise.
struct reduced_output {
  void* out;
  fusedloss_dtype dtype;
  fusedloss_reduction reduction;
  double sum = 0;

  void add(int64_t r, double v) {
    if (out == nullptr) return;
    if (reduction == FUSEDLOSS_REDUCTION_NONE) {
      host::store(out, dtype, r, v);
    } else {
      sum += v;
    }
  }
  void finish(double normaliser, fusedloss_empty_mean empty_mean) const {
    if (out == nullptr || reduction == FUSEDLOSS_REDUCTION_NONE) return;
    double v = sum;
    if (reduction == FUSEDLOSS_REDUCTION_MEAN) {
      const double empty = empty_mean == FUSEDLOSS_EMPTY_MEAN_ZERO ? 0.0 : NAN;
      v = normaliser != 0 ? sum / normaliser : empty;
    }
    host::store(out, dtype, 0, v);
  }
};

// Runs call `c` of a row loss. `target(r)` gives a row's class, kIgnored or kInvalid (probability
// targets give 0); `weight(y)` is what a non-ignored row of class y adds to the mean's normaliser;
// `value(r, y, row, dx)` gives the row's loss and, when dx is non-null, fills dx with the gradient
// with respect to the capped logits.
template <class Params, class Target, class Weight, class Value>
int64_t run(const Params& p, call c, double softcap, void* z_loss_out, const Target& target,
            const Weight& weight, const Value& value) {
  const rows<Params> rs{p};
  const int64_t count = p.batch * p.spatial;
  const fusedloss_dtype loss_dtype = host::loss_dtype(p.logits_dtype);
  const bool forward = c != call::backward;
  const bool backward = c != call::forward;

  // The normaliser is needed before the first gradient, so the targets are read once ahead.
  int64_t invalid = 0;
  double normaliser = 0;
  for (int64_t r = 0; r < count; ++r) {
    const int64_t y = target(r);
    if (y == kInvalid) ++invalid;
    if (y >= 0) normaliser += weight(y);
  }

  // The upstream gradient: per row under backward's none, one scalar otherwise; the mean's 1/D goes
  // into it, and a zero normaliser gives a zero gradient under both empty-mean policies.
  const bool none = p.reduction == FUSEDLOSS_REDUCTION_NONE;
  const bool mean = p.reduction == FUSEDLOSS_REDUCTION_MEAN;
  const bool per_row_upstream = c == call::backward && none;
  double upstream = 0;
  if (c == call::forward_backward) {
    upstream = fused_grad_scale(p);
  } else if (c == call::backward && !none) {
    upstream = host::load(p.grad_loss, loss_dtype, 0);
  }
  const bool zero_gradient = mean && normaliser == 0;
  if (mean && !zero_gradient) upstream /= normaliser;

  reduced_output loss{forward ? p.loss : nullptr, loss_dtype, p.reduction};
  reduced_output z_loss{forward ? z_loss_out : nullptr, loss_dtype, p.reduction};
  void* lse_out = forward ? p.lse : nullptr;
  const void* lse_in = c == call::backward ? p.lse : nullptr;
  row x;
  std::vector<double> dx(p.num_classes);
  for (int64_t r = 0; r < count; ++r) {
    const int64_t y = target(r);
    const bool ignored = y < 0;
    if (!ignored || lse_out != nullptr) rs.load(r, softcap, lse_in, loss_dtype, x);
    if (lse_out != nullptr) host::store(lse_out, loss_dtype, r, x.lse());
    const bool grad = backward && !ignored && !zero_gradient;
    const row_value v = ignored ? row_value{0, 0} : value(r, y, x, grad ? dx.data() : nullptr);
    loss.add(r, v.loss);
    z_loss.add(r, v.z_loss);
    if (!backward) continue;
    const double g = per_row_upstream ? host::load(p.grad_loss, loss_dtype, r) : upstream;
    for (int64_t j = 0; j < p.num_classes; ++j) {
      // Ignored rows get exactly 0 whatever their logits (deliberate difference 2).
      double d = 0;
      if (grad) d = g * dx[j] * (x.dcap.empty() ? 1.0 : x.dcap[j]);
      host::store(p.grad_logits, p.logits_dtype, rs.offset(r, p.grad_row_stride, j), d);
    }
  }
  loss.finish(normaliser, p.empty_mean);
  z_loss.finish(normaliser, p.empty_mean);
  // The loss-computing calls count; a backward that follows its forward would count twice.
  if (forward && p.invalid_target_count != nullptr) *p.invalid_target_count += invalid;
  return invalid;
}

// Probability targets ignore no row and weigh each as 1 in the mean; so does softmax focal's mean.
int64_t no_ignore(int64_t) { return 0; }
double unit_weight(int64_t) { return 1.0; }

// The class of row r of an index-target buffer, or kIgnored / kInvalid.
template <class Params>
int64_t class_index(const Params& p, int64_t r) {
  const int64_t y = host::load_index(p.targets, p.targets_dtype, r);
  if (y == p.ignore_index) return kIgnored;
  return y >= 0 && y < p.num_classes ? y : kInvalid;
}

}  // namespace

int64_t cross_entropy(const fusedloss_cross_entropy_params& p, call c) {
  const int64_t C = p.num_classes;
  const double eps = p.label_smoothing;
  const double lambda = p.z_loss;
  auto w = [&p](int64_t cls) {
    return p.weight != nullptr ? static_cast<double>(p.weight[cls]) : 1.0;
  };

  if (host::is_floating(p.targets_dtype)) {
    std::vector<double> qw(C);  // w_c * q'_c of the current row
    const auto value = [&](int64_t r, int64_t, const row& x, double* dx) {
      const int64_t n = r / p.spatial, s = r % p.spatial;
      double loss = 0, qw_sum = 0;
      for (int64_t cls = 0; cls < C; ++cls) {
        const double q = host::load(p.targets, p.targets_dtype, (n * C + cls) * p.spatial + s);
        qw[cls] = w(cls) * ((1.0 - eps) * q + eps / C);
        qw_sum += qw[cls];
        loss -= term(qw[cls], x.lp(cls));
      }
      const double z = term(lambda, x.lse() * x.lse());
      if (dx != nullptr) {
        for (int64_t j = 0; j < C; ++j) {
          const double pj = std::exp(x.lp(j));
          dx[j] = pj * qw_sum - qw[j] + 2.0 * lambda * x.lse() * pj;
        }
      }
      return row_value{loss + z, z};
    };
    return run(p, c, p.softcap, p.z_loss_out, no_ignore, unit_weight, value);
  }

  double w_sum = 0;
  for (int64_t cls = 0; cls < C; ++cls) w_sum += w(cls);
  const auto value = [&](int64_t, int64_t y, const row& x, double* dx) {
    double smooth = 0;
    for (int64_t cls = 0; cls < C; ++cls) smooth -= term(w(cls), x.lp(cls));
    const double nll = term(w(y), -x.lp(y));
    const double z = term(lambda, x.lse() * x.lse());
    if (dx != nullptr) {
      for (int64_t j = 0; j < C; ++j) {
        const double pj = std::exp(x.lp(j));
        dx[j] = (1.0 - eps) * w(y) * (pj - (j == y ? 1.0 : 0.0)) + eps / C * (pj * w_sum - w(j)) +
                2.0 * lambda * x.lse() * pj;
      }
    }
    return row_value{term(1.0 - eps, nll) + term(eps / C, smooth) + z, z};
  };
  return run(
      p, c, p.softcap, p.z_loss_out, [&p](int64_t r) { return class_index(p, r); }, w, value);
}

int64_t softmax_focal(const fusedloss_softmax_focal_params& p, call c) {
  const int64_t C = p.num_classes;
  const double gamma = p.gamma;
  const auto value = [&](int64_t, int64_t y, const row& x, double* dx) {
    const double a = p.alpha != nullptr ? static_cast<double>(p.alpha[y]) : 1.0;
    const double lp_y = x.lp(y);
    const double u = std::exp(lp_y);
    const double m = -std::expm1(lp_y);       // 1 - u without cancellation for confident rows
    const double focus = std::pow(m, gamma);  // pow(0, 0) is 1
    if (dx != nullptr) {
      // r = lp/m tends to -1 as m -> 0; u = 0 (target at -inf) silences r = -inf.
      const double ratio = m == 0 ? -1.0 : lp_y / m;
      const double factor = -a * focus * (1.0 - term(gamma * u, ratio));
      for (int64_t j = 0; j < C; ++j) {
        dx[j] = factor * ((j == y ? 1.0 : 0.0) - std::exp(x.lp(j)));
      }
    }
    return row_value{term(a * focus, -lp_y), 0};
  };
  return run(
      p, c, 0.0, nullptr, [&p](int64_t r) { return class_index(p, r); }, unit_weight, value);
}

}  // namespace fusedloss::reference
