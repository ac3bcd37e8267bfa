// The row-loss kernels' test harness (row_kernels_harness.hpp): the names a case's description
// uses, its inputs (the same bytes for the reference and the GPU), and the per-row quantities of
// the tolerances.
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>
#include <random>
#include <vector>

#include "checks.hpp"
#include "row_kernels_harness.hpp"

namespace fusedloss::gpu_tests::row_kernels {

const char* name(loss_kind k) {
  switch (k) {
    case loss_kind::cross_entropy:
      return "cross_entropy";
    case loss_kind::probability:
      return "probability_cross_entropy";
    default:
      return "softmax_focal";
  }
}
const char* name(pattern p) {
  const char* names[] = {"random",   "masked",  "masked_target", "non_finite",
                         "nan_last", "extreme", "shifted"};
  return names[static_cast<int>(p)];
}

// ------------------------------------------------------------------------------------------------
// Inputs, the same bytes for the reference and the GPU.

inputs make_inputs(const row_case& c, fusedloss_dtype dtype, std::mt19937_64& rng) {
  const int64_t C = c.num_classes, S = c.spatial, R = rows_of(c), stride = stride_of(c);
  const bool index = index_targets(c);
  std::uniform_real_distribution<double> unit(0.0, 1.0), logit(-6.0, 6.0);
  std::uniform_int_distribution<int64_t> any_class(0, std::max<int64_t>(C - 1, 0));
  inputs in;

  // Class-index targets: ignore_index, an out-of-range value, or a class.
  const bool int32 = c.index_dtype == FUSEDLOSS_INT32;
  const bool storable = !int32 || (c.ignore_index >= std::numeric_limits<int32_t>::min() &&
                                   c.ignore_index <= std::numeric_limits<int32_t>::max());
  const int64_t ignored_value = storable ? c.ignore_index : -100;  // else: invalid, not ignored
  std::vector<int64_t> out_of_range = {C, C + 1000, -1, -7};
  if (int32) {
    out_of_range.push_back(std::numeric_limits<int32_t>::max());
    out_of_range.push_back(std::numeric_limits<int32_t>::min());
  } else {
    out_of_range.push_back((int64_t{1} << 33) + 1);  // a 32-bit truncation would make it class 1
    out_of_range.push_back(-(int64_t{1} << 62));
  }
  size_t next = 0;
  const auto invalid_value = [&] {
    int64_t v = out_of_range[next++ % out_of_range.size()];
    if (v == c.ignore_index) v = out_of_range[next++ % out_of_range.size()];
    return v;
  };
  if (index) {
    in.y.resize(static_cast<size_t>(R));
    for (int64_t r = 0; r < R; ++r) {
      int64_t& y = in.y[static_cast<size_t>(r)];
      if (sparse_row(c, r)) {
        y = ignored_value;
        continue;
      }
      const double u = unit(rng);
      y = u < c.ignored               ? ignored_value
          : u < c.ignored + c.invalid ? invalid_value()
                                      : any_class(rng);
    }
  }

  // Logits, padding NaN: a kernel that reads padding turns its row into NaN.
  std::vector<double> x(static_cast<size_t>(c.batch * stride), kNaN);
  for (int64_t r = 0; r < R; ++r) {
    const auto X = [&](int64_t k) -> double& { return x[at(c, r, stride, k)]; };
    if (sparse_row(c, r)) {
      for (int64_t k = 0; k < C; ++k) X(k) = 0.125 * static_cast<double>((r + k) % 16) - 1.0;
      continue;
    }
    for (int64_t k = 0; k < C; ++k) X(k) = logit(rng);
    // The target, or (probability targets) a class the mask spares.
    const int64_t kept = index ? in.y[static_cast<size_t>(r)] : any_class(rng);
    const bool a_class = kept >= 0 && kept < C;
    switch (c.logits) {
      case pattern::random:
        break;
      case pattern::masked:
        for (int64_t k = 0; k < C; ++k) {
          if (k != kept && (r == 0 || unit(rng) < 0.25)) X(k) = -kInf;
        }
        break;
      case pattern::masked_target:
        if (a_class && r % 2 == 0) X(kept) = -kInf;
        break;
      case pattern::non_finite:
        if (r % 4 == 1) {
          X(0) =
              kNaN;  // folded first by its thread, before finite logits (NanLogitAlone...: after)
        } else if (r % 4 == 2) {
          X(any_class(rng)) = kInf;
        } else if (r % 4 == 3 && index) {  // ignored rows get an exactly-zero gradient anyway
          for (int64_t k = 0; k < C; ++k) X(k) = -kInf;
          in.y[static_cast<size_t>(r)] = ignored_value;
        }
        break;
      case pattern::nan_last:
        X(C - 1) = kNaN;
        break;
      case pattern::extreme: {
        const int64_t a = any_class(rng), b = any_class(rng), d = any_class(rng);
        if (r % 3 == 0) {
          X(a) = 1e4;
        } else if (r % 3 == 1) {
          X(a) = 1e4;
          X(b) = 1e4;
          X(d) = -1e4;
        } else {
          X(a_class ? kept : a) = -1e4;
          X(b) = 1e4;
        }
        break;
      }
      case pattern::shifted:
        for (int64_t k = 0; k < C; ++k) X(k) += 1e4;
        break;
    }
  }
  in.logits = buffer(dtype, x);
  in.x = in.logits.values();

  if (index) {
    std::vector<double> stored(static_cast<size_t>(R));
    for (int64_t r = 0; r < R; ++r) {
      const int64_t y = in.y[static_cast<size_t>(r)];
      stored[static_cast<size_t>(r)] = static_cast<double>(y);
      if (y != c.ignore_index && (y < 0 || y >= C)) ++in.invalid;
    }
    in.targets = buffer(c.index_dtype, stored);
  } else {
    // Probabilities laid out as the logits, (N, C, S) contiguous; 0 where the logit is -inf.
    std::vector<double> q(static_cast<size_t>(R * C));
    for (int64_t r = 0; r < R; ++r) {
      const int64_t n = r / S, s = r % S;
      const auto Q = [&](int64_t k) -> double& {
        return q[static_cast<size_t>((n * C + k) * S + s)];
      };
      double sum = 0;
      for (int64_t k = 0; k < C; ++k) {
        Q(k) = in.x[at(c, r, stride, k)] == -kInf ? 0.0 : unit(rng);
        sum += Q(k);
      }
      for (int64_t k = 0; k < C && sum > 0; ++k) Q(k) /= sum;
    }
    in.targets = buffer(targets_dtype_of(c, dtype), q);
  }
  in.weight = buffer(FUSEDLOSS_FLOAT32,
                     c.zero_weight ? std::vector<double>(static_cast<size_t>(C), 0.0)
                                   : checks::uniform(rng, static_cast<size_t>(C), 0.5, 2.0));
  in.grad_loss = buffer(FUSEDLOSS_FLOAT32, checks::uniform(rng, loss_count(c), 0.5, 2.0));
  in.scale = buffer(FUSEDLOSS_FLOAT32, {1.5});
  return in;
}

bool counted(const row_case& c, const inputs& in, int64_t r) {
  if (!index_targets(c)) return true;
  const int64_t y = in.y[static_cast<size_t>(r)];
  return y != c.ignore_index && y >= 0 && y < c.num_classes;
}

namespace {

double host_lse(const row_case& c, const inputs& in, int64_t r) {
  const auto capped = [&](double v) {
    return c.softcap > 0 ? c.softcap * std::tanh(v / c.softcap) : v;
  };
  double m = -kInf;
  for (int64_t k = 0; k < c.num_classes; ++k) {
    const double v = capped(in.x[at(c, r, stride_of(c), k)]);
    if (std::isnan(v)) return kNaN;
    m = std::max(m, v);
  }
  if (!std::isfinite(m)) return m;
  double sum = 0;
  for (int64_t k = 0; k < c.num_classes; ++k) {
    sum += std::exp(capped(in.x[at(c, r, stride_of(c), k)]) - m);
  }
  return m + std::log(sum);
}

}  // namespace

row_bounds bounds_of(const row_case& c, const inputs& in) {
  const int64_t R = rows_of(c);
  const std::vector<double> w = in.weight.values();
  double largest_weight = 1.0;
  if (c.weight) {
    for (double v : w) largest_weight = std::max(largest_weight, std::fabs(v));
  }
  const double G = c.kind == loss_kind::softmax_focal ? 1.0 + c.gamma : 1.0;
  const double lambda = c.kind == loss_kind::softmax_focal ? 0.0 : c.z_loss;
  const double softcap = c.kind == loss_kind::softmax_focal ? 0.0 : c.softcap;

  row_bounds b;
  for (int64_t r = 0; r < R; ++r) {
    if (!counted(c, in, r)) continue;
    const int64_t y = index_targets(c) ? in.y[static_cast<size_t>(r)] : 0;
    b.normaliser +=
        c.kind == loss_kind::cross_entropy && c.weight ? w[static_cast<size_t>(y)] : 1.0;
  }
  const bool none = c.reduction == FUSEDLOSS_REDUCTION_NONE;
  const bool mean = c.reduction == FUSEDLOSS_REDUCTION_MEAN;
  const std::vector<double> grad_loss = in.grad_loss.values();
  b.t.resize(static_cast<size_t>(R));
  b.scale.resize(static_cast<size_t>(R));
  b.upstream.resize(static_cast<size_t>(R));
  for (int64_t r = 0; r < R; ++r) {
    const size_t i = static_cast<size_t>(r);
    const double lse = host_lse(c, in, r);
    const double magnitude = std::isfinite(lse) ? std::fabs(lse) : 0.0;
    b.t[i] = row_budget(lse, softcap);
    b.scale[i] = largest_weight * G * (1.0 + 2.0 * lambda * magnitude);
    double g = c.call == fusedloss::call::backward ? grad_loss[none ? i : 0]
                                                   : c.grad_scale * (c.grad_scale_ptr ? 1.5 : 1.0);
    if (mean) g = b.normaliser != 0 ? g / b.normaliser : 0.0;
    b.upstream[i] = counted(c, in, r) ? std::fabs(g) : 0.0;
  }
  return b;
}

}  // namespace fusedloss::gpu_tests::row_kernels
