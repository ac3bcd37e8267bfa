// The element losses (BCE with logits, sigmoid focal, MSE) in double, straight from
// docs/SEMANTICS.md. Each loss is a per-element function giving (loss, dloss/dx); one driver
// applies the reduction and the upstream gradient for all three, so those rules live in one place.
#include <cmath>
#include <cstdint>

#include "dtype.hpp"
#include "reference/reference.hpp"

namespace fusedloss::reference {
namespace {

struct element_value {
  double loss;
  double grad;  // dloss/dx
};

double sigmoid(double x) {
  // Each branch exponentiates a non-positive number, so nothing overflows.
  if (x >= 0) return 1.0 / (1.0 + std::exp(-x));
  const double e = std::exp(x);
  return e / (1.0 + e);
}

double softplus(double t) { return (t > 0 ? t : 0.0) + std::log1p(std::exp(-std::fabs(t))); }

// A zero coefficient silences its term even where softplus is infinite (deliberate differences 1
// and 6); NaN logits stay NaN.
double scaled_softplus(double coefficient, double t) {
  const double s = softplus(t);
  return coefficient == 0 && !std::isnan(s) ? 0.0 : coefficient * s;
}

// BCE with logits; with w = pw = 1 this is also the focal loss's ce, so that gamma = 0 reproduces
// BCE bitwise. Each term's coefficient includes the weight (w*pw*y and w*(1-y)), so that w = 0
// silences an infinite softplus too. The gradient is SEMANTICS' w*[s(x)(1 + (pw-1)y) - pw*y]
// regrouped per term as w*(1-y)*s(x) - w*pw*y*s(-x): no cancellation for confident positives, and
// exactly 0 at the infinities where the loss is 0.
element_value bce_element(double x, double y, double w, double pw) {
  const double positive = w * pw * y;
  const double negative = w * (1.0 - y);
  const double loss = scaled_softplus(positive, -x) + scaled_softplus(negative, x);
  const double grad = negative * sigmoid(x) - positive * sigmoid(-x);
  return {loss, grad};
}

element_value focal_element(double x, double y, double alpha, double gamma) {
  const element_value ce = bce_element(x, y, 1.0, 1.0);  // ce.grad is p - y
  const double p = sigmoid(x);
  const double q = sigmoid(-x);            // 1 - p without the rounding of a subtraction
  const double m = p * (1.0 - y) + q * y;  // 1 - p_t
  const double alpha_t = alpha < 0 ? 1.0 : alpha * y + (1.0 - alpha) * (1.0 - y);
  const double focus = std::pow(m, gamma);  // pow(m, 0) is 1 for every m, NaN included
  const double loss = alpha_t * focus * ce.loss;
  // As BCE: no gamma term, whose 0 * inf would turn an infinite logit's gradient into NaN.
  if (gamma == 0) return {loss, alpha_t * focus * ce.grad};
  if (y == 0 || y == 1) {
    // Hard targets: m^(gamma-1) * p * (1-p) = m^gamma * p_t, so no negative power can overflow.
    const double p_t = p * y + q * (1.0 - y);
    return {loss, alpha_t * focus * (ce.grad - (2.0 * y - 1.0) * gamma * p_t * ce.loss)};
  }
  // For soft y in (0, 1), m lies between y and 1 - y, so the negative power stays finite.
  const double focus_grad = gamma * std::pow(m, gamma - 1.0) * (2.0 * y - 1.0) * p * q * ce.loss;
  return {loss, alpha_t * (focus * ce.grad - focus_grad)};
}

// Applies the reduction and the upstream gradient of `c` to element(i, x_i, y_i) for every i.
template <class Params, class Element>
void run(const Params& p, call c, const Element& element) {
  const int64_t m = p.numel;
  const fusedloss_dtype loss_dtype = host::loss_dtype(p.logits_dtype);
  const bool none = p.reduction == FUSEDLOSS_REDUCTION_NONE;
  const bool mean = p.reduction == FUSEDLOSS_REDUCTION_MEAN;
  const bool write_loss = c == call::forward || (c == call::forward_backward && p.loss != nullptr);
  const bool write_grad = c != call::forward;
  // backward under none reads one upstream value per element; every other case has one scalar.
  const bool per_element_upstream = c == call::backward && none;

  double upstream = 1.0;
  if (c == call::forward_backward) {
    upstream = fused_grad_scale(p);
  } else if (c == call::backward && !none) {
    upstream = host::load(p.grad_loss, loss_dtype, 0);
  }
  if (mean && m > 0) upstream /= static_cast<double>(m);

  double sum = 0.0;
  for (int64_t i = 0; i < m; ++i) {
    const element_value v = element(i, host::load(p.logits, p.logits_dtype, i),
                                    host::load(p.targets, p.targets_dtype, i));
    if (write_loss) {
      if (none) {
        host::store(p.loss, loss_dtype, i, v.loss);
      } else {
        sum += v.loss;
      }
    }
    if (write_grad) {
      const double g = per_element_upstream ? host::load(p.grad_loss, loss_dtype, i) : upstream;
      host::store(p.grad_logits, p.logits_dtype, i, g * v.grad);
    }
  }

  if (write_loss && !none) {
    double reduced = sum;
    if (mean) {
      const double empty = p.empty_mean == FUSEDLOSS_EMPTY_MEAN_ZERO ? 0.0 : NAN;
      reduced = m > 0 ? sum / static_cast<double>(m) : empty;
    }
    host::store(p.loss, loss_dtype, 0, reduced);
  }
}

}  // namespace

void bce(const fusedloss_bce_params& p, call c) {
  run(p, c, [&p](int64_t i, double x, double y) {
    // num_classes is only meaningful (and only validated) when a per-class vector is given.
    double w = 1.0;
    if (p.weight != nullptr) {
      w = p.weight[p.weight_layout == FUSEDLOSS_WEIGHT_PER_CLASS ? i % p.num_classes : i];
    }
    const double pw = p.pos_weight != nullptr ? p.pos_weight[i % p.num_classes] : 1.0;
    return bce_element(x, y, w, pw);
  });
}

void sigmoid_focal(const fusedloss_sigmoid_focal_params& p, call c) {
  run(p, c, [&p](int64_t, double x, double y) { return focal_element(x, y, p.alpha, p.gamma); });
}

void mse(const fusedloss_mse_params& p, call c) {
  run(p, c, [](int64_t, double x, double y) {
    const double d = x - y;
    return element_value{d * d, 2.0 * d};
  });
}

}  // namespace fusedloss::reference
