// The row-loss kernels (cross-entropy with class-index and probability targets, softmax focal)
// against the CPU reference on the same dtype-rounded inputs. Every tier (warp, block, cluster,
// two_pass, spatial) runs: through the public C API where the automatic choice reaches it, and
// forced through kernels::run_row_loss (a hand-built row_problem, like host/cuda_dispatch.cpp
// builds) at sizes where automatic would pick another tier. Outputs start poisoned (every byte
// 0xFF, a NaN), so a value a kernel fails to write fails the comparison, and padding columns (and,
// in place, the logits' padding) must keep their bytes.
//
// Tests whose names say Large, Huge or Vocab are the expensive ones (10^6-10^9 logits);
// scripts/gpu-check.sh leaves them out of its sanitizer runs.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <iomanip>
#include <limits>
#include <random>
#include <sstream>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "checks.hpp"
#include "fusedloss/fusedloss.hpp"
#include "gpu_support.hpp"
#include "row_losses.hpp"

namespace {

namespace checks = fusedloss::checks;
namespace kernels = fusedloss::kernels;
using checks::buffer;
using fusedloss::gpu_tests::device_buffer;
using fusedloss::gpu_tests::DtypeNames;
using fusedloss::gpu_tests::Dtypes;
using kernels::row_tier;

constexpr double kInf = std::numeric_limits<double>::infinity();
const double kNaN = std::numeric_limits<double>::quiet_NaN();
constexpr int64_t kCounterStart = 7;  // invalid_target_count before a call: calls add to it

// ------------------------------------------------------------------------------------------------
// Tolerances, derived once. The kernels compute in float32 (expf, logf, tanhf, powf, expm1f, each
// within a few float32 ulps); the reference in double from the same stored inputs, rounding once to
// the output dtype.
//
// t_r, the float32 error budget of row r. The kernels' LSE is max + logf(sum): the final addition
// alone is off by up to half a float32 ulp of |LSE| (2^-24 |LSE|), logf by an ulp of a value below
// ~20 (~1e-6), and the sum of exponentials by a relative error that one thread accumulates over the
// elements it folds in sequence (rounding errors of random sign, ~sqrt(n) 2^-24: ~1e-6 for the up
// to 1000 elements a thread folds in these tests). Every p_j = exp(x_j - LSE) inherits the LSE's
// absolute error as a relative one (plus the rounding of x_j - LSE, < 1e-6 where p_j matters), and
// a soft-capped logit s tanh(x/s) carries a few ulps of s. So
//     t_r = 8e-6 + 2^-22 (max(1, |LSE_r|) + softcap)
// bounds both the LSE's absolute error and the relative error of every p_j: a factor 4 over the
// half-ulp terms, ~5 over the accumulated ones. At |LSE| = 1e4 (the +-1e4 and shifted rows) it is
// 2.4e-3: float32 holds an LSE near 1e4 only to 2^-11 = 4.9e-4, which is float32's limit, not
// slack.
constexpr double kBudgetFloor = 8e-6;
double row_budget(double lse, double softcap) {
  const double magnitude = std::isfinite(lse) ? std::max(1.0, std::fabs(lse)) : 1.0;
  return kBudgetFloor + std::ldexp(magnitude + softcap, -22);
}
// K_r, the row's coefficient scale. Every gradient is (P p_j - A [j = y] - B c_j) cap'(x_j) with
// |P|, |A|, |B c_j| <= |g_r| W G (1 + 2 lambda |LSE_r|): g_r the row's upstream gradient (the
// mean's 1/D included; 0 for an ignored row or an empty mean, whose gradient is exactly 0), W =
// max(1, largest class weight / alpha), G = 1 + gamma for softmax focal (|alpha m^gamma (1 - gamma
// u r)| <= alpha (1 + gamma)), 1 otherwise. The true-class term P p_y - A cancels (a confident row
// has p_y - 1 ~ 1e-6 while p_y carries an absolute error of t_r), so the absolute error is K_r t_r,
// not a fraction of the largest gradient; the same holds for softmax focal's m^gamma at small m.
//
// Gradient (logits' dtype): |got - want| <= floor + K_r t_r + (ulp + t_r) |want|, ulp one unit in
// the last place of the dtype (2^-23, 2^-10, 2^-7: the float32 gradient and the exact one may round
// to neighbours) and floor float16's subnormal spacing 2^-24 (checks::rounding_tolerance gives
// both). Per-row loss and z-loss (float32): the LSE's absolute error enters additively (lse - x_y,
// lambda LSE^2 with slope 2 lambda LSE, softmax focal's lp with slope <= alpha (1 + gamma)), so
// atol = W G (1 + 2 lambda |LSE_r|) t_r; rtol covers float32's relative errors, the smoothing sum's
// accumulation included (its terms share one sign).
constexpr double kLossRtol = 8e-6;
// LSE (float32): atol t_r.
// Reduced loss and z-loss: every row loss is >= 0 (positive weights), so nothing cancels: the
// per-row bounds are summed and divided by the normaliser, and both sides' final rounding of a
// double sum to float32 adds 2^-23 relative.
const double kReducedRtol = kLossRtol + std::ldexp(1.0, -23);

// ------------------------------------------------------------------------------------------------
// One problem.

enum class loss_kind { cross_entropy, probability, softmax_focal };
// What the logits hold besides uniform values in [-6, 6).
enum class pattern {
  random,
  masked,         // -inf on ~25% of a row's non-target classes (every one on row 0)
  masked_target,  // -inf on the target of every other row
  non_finite,     // per row r % 4: -, a NaN at class 0, a +inf, every logit -inf (then ignored)
  nan_last,       // a NaN at class C - 1 of every row
  extreme,        // +-1e4 on a few classes of each row
  shifted,        // every logit + 1e4
};

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
const char* name(fusedloss::call c) {
  switch (c) {
    case fusedloss::call::forward:
      return "forward";
    case fusedloss::call::backward:
      return "backward";
    default:
      return "forward_backward";
  }
}
const char* name(pattern p) {
  const char* names[] = {"random",   "masked",  "masked_target", "non_finite",
                         "nan_last", "extreme", "shifted"};
  return names[static_cast<int>(p)];
}
const char* name(row_tier t) {
  const char* names[] = {"automatic", "warp", "block", "cluster", "two_pass", "spatial"};
  return names[static_cast<int>(t)];
}

struct row_case {
  loss_kind kind = loss_kind::cross_entropy;
  int64_t batch = 3;
  int64_t num_classes = 33;
  int64_t spatial = 1;
  int64_t row_padding = 0;    // row_stride = C*S + row_padding (0: the default stride, passed as 0)
  int64_t grad_padding = -1;  // grad_row_stride = C*S + grad_padding; -1: the logits' (passed as 0)
  fusedloss_dtype index_dtype = FUSEDLOSS_INT64;
  bool float32_targets = false;  // probability targets in float32 rather than the logits' dtype
  fusedloss_reduction reduction = FUSEDLOSS_REDUCTION_MEAN;
  fusedloss_empty_mean empty_mean = FUSEDLOSS_EMPTY_MEAN_NAN;
  fusedloss::call call = fusedloss::call::forward_backward;
  bool weight = false;       // cross-entropy's class weights, or softmax focal's alpha
  bool zero_weight = false;  // every weight 0 (the empty mean of a zero total weight)
  int64_t ignore_index = -100;
  double ignored = 0.0;  // fraction of rows whose target is ignore_index
  double invalid = 0.0;  // fraction of rows whose target is neither ignore_index nor a class
  double label_smoothing = 0.0;
  double z_loss = 0.0;
  bool z_loss_out = false;
  double softcap = 0.0;
  double gamma = 2.0;
  bool lse_out = true;     // forward calls write the LSE
  bool saved_lse = false;  // backward reads the forward's LSE (the reference's, on both sides)
  bool loss_out = true;    // forward_backward writes the loss
  float grad_scale = 1.0f;
  bool grad_scale_ptr = false;  // forward_backward also scales by *grad_scale_ptr = 1.5
  bool in_place = false;        // grad_logits == logits
  // Elements logits and gradient start past their 16-byte-aligned allocations: 1 misaligns
  // row 0 (a slice such as x[:, 1:]), and every row with it when the stride is whole vectors.
  int64_t lead = 0;
  pattern logits = pattern::random;
  row_tier tier = row_tier::automatic;  // forced: kernels::run_row_loss on a hand-built problem
  // Rows in [sparse_begin, sparse_end) are ignored and hold cheap logits: large grids at a
  // reference cost of a few rows.
  int64_t sparse_begin = 0;
  int64_t sparse_end = 0;

  std::string describe() const {
    std::ostringstream o;
    o << name(kind) << " N=" << batch << " C=" << num_classes << " S=" << spatial
      << " padding=" << row_padding << "/" << grad_padding << " lead=" << lead
      << " tier=" << name(tier) << " call=" << name(call)
      << " reduction=" << fusedloss_reduction_string(reduction)
      << " empty_mean=" << (empty_mean == FUSEDLOSS_EMPTY_MEAN_ZERO ? "zero" : "nan") << " targets="
      << (kind == loss_kind::probability ? (float32_targets ? "float32" : "logits'")
                                         : fusedloss_dtype_string(index_dtype))
      << " weight=" << weight << (zero_weight ? "(zero)" : "") << " ignore_index=" << ignore_index
      << " ignored=" << ignored << " invalid=" << invalid << " eps=" << label_smoothing
      << " z_loss=" << z_loss << (z_loss_out ? "(out)" : "") << " softcap=" << softcap
      << " gamma=" << gamma << " lse_out=" << lse_out << " saved_lse=" << saved_lse
      << " loss_out=" << loss_out << " scale=" << grad_scale << (grad_scale_ptr ? "*1.5" : "")
      << " in_place=" << in_place << " logits=" << name(logits) << " sparse=[" << sparse_begin
      << ", " << sparse_end << ")";
    return o.str();
  }
};

bool index_targets(const row_case& c) { return c.kind != loss_kind::probability; }
int64_t rows_of(const row_case& c) { return c.batch * c.spatial; }
int64_t stride_of(const row_case& c) { return c.num_classes * c.spatial + c.row_padding; }
int64_t grad_stride_of(const row_case& c) {
  return c.in_place || c.grad_padding < 0 ? stride_of(c)
                                          : c.num_classes * c.spatial + c.grad_padding;
}
size_t loss_count(const row_case& c) {
  return c.reduction == FUSEDLOSS_REDUCTION_NONE ? static_cast<size_t>(rows_of(c)) : 1;
}
// Element `cls` of row r = (n, s) in an array with sample stride `stride`.
size_t at(const row_case& c, int64_t r, int64_t stride, int64_t cls) {
  return static_cast<size_t>((r / c.spatial) * stride + cls * c.spatial + r % c.spatial);
}
fusedloss_dtype targets_dtype_of(const row_case& c, fusedloss_dtype dtype) {
  if (index_targets(c)) return c.index_dtype;
  return c.float32_targets ? FUSEDLOSS_FLOAT32 : dtype;
}
size_t element_bytes(fusedloss_dtype dtype) { return dtype == FUSEDLOSS_FLOAT32 ? 4 : 2; }
bool sparse_row(const row_case& c, int64_t r) { return r >= c.sparse_begin && r < c.sparse_end; }

// ------------------------------------------------------------------------------------------------
// Inputs, the same bytes for the reference and the GPU.

struct inputs {
  buffer logits, targets, weight, grad_loss, scale, saved_lse;
  std::vector<double> x;   // the logits as stored (rounded to the dtype), padding included
  std::vector<int64_t> y;  // class-index targets as stored
  int64_t invalid = 0;     // targets neither ignore_index nor in [0, C)
};

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

// Whether row r adds to the loss and the mean's normaliser (not ignored, not out of range).
bool counted(const row_case& c, const inputs& in, int64_t r) {
  if (!index_targets(c)) return true;
  const int64_t y = in.y[static_cast<size_t>(r)];
  return y != c.ignore_index && y >= 0 && y < c.num_classes;
}

// The tolerances' per-row quantities (see the top of the file).
struct row_bounds {
  std::vector<double> t;         // t_r
  std::vector<double> scale;     // W G (1 + 2 lambda |LSE_r|)
  std::vector<double> upstream;  // |g_r|; 0 where the gradient is exactly 0
  double normaliser = 0;         // the mean's D
};

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

// ------------------------------------------------------------------------------------------------
// Calls: the public API on either device, or (forced tiers) run_row_loss.

// Where a run's arrays live: host buffers for the reference, device copies for the GPU.
struct bound {
  const void* logits;
  const void* targets;
  const float* weight;
  const float* grad_loss;
  const float* scale;
  float* lse;
  float* loss;
  float* z;
  void* grad;
  int64_t* counter;
};

template <class P>
void fill_rows(P& p, const row_case& c, fusedloss_dtype dtype, fusedloss_device device,
               const bound& b) {
  p.device = device;
  p.batch = c.batch;
  p.num_classes = c.num_classes;
  p.spatial = c.spatial;
  p.row_stride = c.row_padding > 0 ? stride_of(c) : 0;
  p.grad_row_stride = c.in_place || c.grad_padding < 0 ? 0 : grad_stride_of(c);
  p.logits = b.logits;
  p.logits_dtype = dtype;
  p.targets = b.targets;
  p.targets_dtype = targets_dtype_of(c, dtype);
  p.ignore_index = c.ignore_index;
  p.reduction = c.reduction;
  p.empty_mean = c.empty_mean;
  // backward is given the loss too: it must leave it alone.
  p.loss = c.call == fusedloss::call::forward_backward && !c.loss_out ? nullptr : b.loss;
  p.lse = c.call == fusedloss::call::backward ? (c.saved_lse ? b.lse : nullptr)
                                              : (c.lse_out ? b.lse : nullptr);
  p.grad_logits = b.grad;
  p.grad_loss = b.grad_loss;
  p.grad_scale = c.grad_scale;
  p.grad_scale_ptr = c.grad_scale_ptr ? b.scale : nullptr;
  p.invalid_target_count = b.counter;
}

fusedloss_cross_entropy_params ce_params(const row_case& c, fusedloss_dtype dtype,
                                         fusedloss_device device, const bound& b) {
  fusedloss_cross_entropy_params p;
  fusedloss_cross_entropy_params_init(&p);
  fill_rows(p, c, dtype, device, b);
  p.weight = b.weight;
  p.label_smoothing = c.label_smoothing;
  p.z_loss = c.z_loss;
  p.softcap = c.softcap;
  p.z_loss_out = c.z_loss_out ? b.z : nullptr;
  return p;
}

fusedloss_softmax_focal_params focal_params(const row_case& c, fusedloss_dtype dtype,
                                            fusedloss_device device, const bound& b) {
  fusedloss_softmax_focal_params p;
  fusedloss_softmax_focal_params_init(&p);
  fill_rows(p, c, dtype, device, b);
  p.alpha = b.weight;
  p.gamma = c.gamma;
  return p;
}

template <class P>
using c_call = fusedloss_status (*)(const P*, void*, size_t, void*, fusedloss_error*);

template <class P>
fusedloss_status invoke(const P& p, fusedloss::call call, c_call<P> forward, c_call<P> backward,
                        c_call<P> forward_backward, void* workspace, size_t bytes,
                        cudaStream_t stream, fusedloss_error* err) {
  const c_call<P> fn = call == fusedloss::call::forward    ? forward
                       : call == fusedloss::call::backward ? backward
                                                           : forward_backward;
  return fn(&p, workspace, bytes, stream, err);
}

fusedloss_status call_api(const row_case& c, fusedloss_dtype dtype, fusedloss_device device,
                          const bound& b, void* workspace, size_t bytes, cudaStream_t stream,
                          fusedloss_error* err) {
  if (c.kind == loss_kind::softmax_focal) {
    return invoke(focal_params(c, dtype, device, b), c.call, fusedloss_softmax_focal_forward,
                  fusedloss_softmax_focal_backward, fusedloss_softmax_focal_forward_backward,
                  workspace, bytes, stream, err);
  }
  return invoke(ce_params(c, dtype, device, b), c.call, fusedloss_cross_entropy_forward,
                fusedloss_cross_entropy_backward, fusedloss_cross_entropy_forward_backward,
                workspace, bytes, stream, err);
}

// The row_problem host/cuda_dispatch.cpp would build for the case's call, with its forced tier.
kernels::row_problem make_problem(const row_case& c, fusedloss_dtype dtype, const bound& b) {
  kernels::row_problem p{};
  p.kind = c.kind == loss_kind::probability     ? kernels::row_loss::probability_cross_entropy
           : c.kind == loss_kind::softmax_focal ? kernels::row_loss::softmax_focal
                                                : kernels::row_loss::cross_entropy;
  p.batch = c.batch;
  p.num_classes = c.num_classes;
  p.spatial = c.spatial;
  p.row_stride = stride_of(c);
  p.grad_row_stride = grad_stride_of(c);
  p.logits = b.logits;
  p.logits_dtype = dtype;
  p.targets = b.targets;
  p.targets_dtype = targets_dtype_of(c, dtype);
  p.weight = b.weight;
  p.ignore_index = c.ignore_index;
  if (c.kind == loss_kind::softmax_focal) {
    p.gamma = static_cast<float>(c.gamma);
  } else {
    p.label_smoothing = static_cast<float>(c.label_smoothing);
    p.z_loss = static_cast<float>(c.z_loss);
    p.softcap = static_cast<float>(c.softcap);
  }
  p.reduction = c.reduction;
  p.empty_value = c.empty_mean == FUSEDLOSS_EMPTY_MEAN_ZERO ? 0.0f : NAN;
  const bool backward = c.call == fusedloss::call::backward;
  p.loss =
      backward || (c.call == fusedloss::call::forward_backward && !c.loss_out) ? nullptr : b.loss;
  p.lse = backward ? (c.saved_lse ? b.lse : nullptr) : (c.lse_out ? b.lse : nullptr);
  p.read_lse = backward && c.saved_lse;
  p.z_loss_out = !backward && c.z_loss_out && c.kind != loss_kind::softmax_focal ? b.z : nullptr;
  p.grad = c.call == fusedloss::call::forward ? nullptr : b.grad;
  p.grad_loss = backward ? b.grad_loss : nullptr;
  p.grad_scale = c.grad_scale;
  p.grad_scale_ptr = c.grad_scale_ptr ? b.scale : nullptr;
  p.invalid_target_count = backward ? nullptr : b.counter;
  p.tier = c.tier;
  return p;
}

::testing::AssertionResult gpu_workspace_bytes(const row_case& c, fusedloss_dtype dtype,
                                               const bound& b, size_t* bytes) {
  if (c.tier == row_tier::automatic) {
    fusedloss_error err{};
    fusedloss_status s;
    if (c.kind == loss_kind::softmax_focal) {
      const auto p = focal_params(c, dtype, FUSEDLOSS_DEVICE_CUDA, b);
      s = fusedloss_softmax_focal_workspace_size(&p, bytes, &err);
    } else {
      const auto p = ce_params(c, dtype, FUSEDLOSS_DEVICE_CUDA, b);
      s = fusedloss_cross_entropy_workspace_size(&p, bytes, &err);
    }
    if (s != FUSEDLOSS_SUCCESS) {
      return ::testing::AssertionFailure() << "workspace_size: " << err.message;
    }
    return ::testing::AssertionSuccess();
  }
  const cudaError_t e = kernels::row_workspace_bytes(make_problem(c, dtype, b), bytes);
  if (e != cudaSuccess) {
    return ::testing::AssertionFailure() << "row_workspace_bytes: " << cudaGetErrorName(e);
  }
  return ::testing::AssertionSuccess();
}

// Enqueues the case's call on `stream`: the public API, or run_row_loss for a forced tier (after
// checking that row_tier_for reports it).
::testing::AssertionResult launch(const row_case& c, fusedloss_dtype dtype, const bound& b,
                                  void* workspace, size_t bytes, cudaStream_t stream) {
  if (c.tier == row_tier::automatic) {
    fusedloss_error err{};
    const fusedloss_status s =
        call_api(c, dtype, FUSEDLOSS_DEVICE_CUDA, b, workspace, bytes, stream, &err);
    if (s != FUSEDLOSS_SUCCESS) {
      return ::testing::AssertionFailure()
             << fusedloss_status_string(s) << " from the CUDA call: " << err.message;
    }
    return ::testing::AssertionSuccess();
  }
  const kernels::row_problem p = make_problem(c, dtype, b);
  row_tier chosen = row_tier::automatic;
  cudaError_t e = kernels::row_tier_for(p, &chosen);
  if (e != cudaSuccess)
    return ::testing::AssertionFailure() << "row_tier_for: " << cudaGetErrorName(e);
  if (chosen != c.tier)
    return ::testing::AssertionFailure() << "row_tier_for says " << name(chosen);
  e = kernels::run_row_loss(p, workspace, bytes, stream);
  if (e != cudaSuccess)
    return ::testing::AssertionFailure() << "run_row_loss: " << cudaGetErrorName(e);
  return ::testing::AssertionSuccess();
}

// ------------------------------------------------------------------------------------------------
// Outputs.

struct outputs {
  buffer loss, lse, z, grad;
  int64_t counter = 0;
};

outputs poisoned_outputs(const row_case& c, fusedloss_dtype dtype) {
  return {buffer::poisoned(FUSEDLOSS_FLOAT32, loss_count(c)),
          buffer::poisoned(FUSEDLOSS_FLOAT32, static_cast<size_t>(rows_of(c))),
          buffer::poisoned(FUSEDLOSS_FLOAT32, loss_count(c)),
          buffer::poisoned(dtype, static_cast<size_t>(c.batch * grad_stride_of(c))), 0};
}

// The reference's outputs (not in place: the same values; the GPU's padding is checked apart).
outputs run_reference(const row_case& c, fusedloss_dtype dtype, const inputs& in) {
  outputs out = poisoned_outputs(c, dtype);
  if (c.call == fusedloss::call::backward && c.saved_lse) out.lse = in.saved_lse;
  int64_t counter = kCounterStart;
  const bound b{in.logits.data(),
                in.targets.data(),
                c.weight ? static_cast<const float*>(in.weight.data()) : nullptr,
                static_cast<const float*>(in.grad_loss.data()),
                static_cast<const float*>(in.scale.data()),
                static_cast<float*>(out.lse.data()),
                static_cast<float*>(out.loss.data()),
                static_cast<float*>(out.z.data()),
                out.grad.data(),
                &counter};
  fusedloss_error err{};
  const fusedloss_status s = call_api(c, dtype, FUSEDLOSS_DEVICE_CPU, b, nullptr, 0, nullptr, &err);
  EXPECT_EQ(s, in.invalid > 0 ? FUSEDLOSS_INVALID_TARGET : FUSEDLOSS_SUCCESS)
      << "the reference: " << err.message;
  out.counter = counter;
  return out;
}

// The reference forward's LSE, for a backward that reads it (on both sides).
buffer reference_lse(const row_case& c, fusedloss_dtype dtype, const inputs& in) {
  row_case forward = c;
  forward.call = fusedloss::call::forward;
  forward.lse_out = true;
  forward.in_place = false;
  return run_reference(forward, dtype, in).lse;
}

// Device copies of a case's inputs and its poisoned outputs.
struct device_arrays {
  size_t lead;  // bytes before the first logit and the first gradient element
  device_buffer logits, targets, weight, grad_loss, scale, lse, loss, z, grad, counter;

  device_arrays(const row_case& c, const inputs& in, fusedloss_dtype dtype)
      : lead(static_cast<size_t>(c.lead) * element_bytes(dtype)),
        logits(in.logits, lead),
        targets(in.targets),
        weight(in.weight),
        grad_loss(in.grad_loss),
        scale(in.scale),
        lse(static_cast<size_t>(rows_of(c)) * sizeof(float)),
        loss(loss_count(c) * sizeof(float)),
        z(loss_count(c) * sizeof(float)),
        grad(c.in_place
                 ? 0
                 : lead + static_cast<size_t>(c.batch * grad_stride_of(c)) * element_bytes(dtype)),
        counter(sizeof(int64_t)) {}

  // Poisons the outputs (in place: restores the logits), loads a saved LSE, sets the counter to
  // kCounterStart, and waits, so that work on any stream sees it.
  void poison(const row_case& c, const inputs& in) {
    for (const device_buffer* b : {&loss, &z, &grad, &lse}) {
      if (b->bytes() > 0) cudaMemset(b->data(), 0xFF, b->bytes());
    }
    if (c.call == fusedloss::call::backward && c.saved_lse && lse.bytes() > 0) {
      cudaMemcpy(lse.data(), in.saved_lse.data(), lse.bytes(), cudaMemcpyHostToDevice);
    }
    if (c.in_place && logits.bytes() > 0) {
      cudaMemcpy(logits.at(lead), in.logits.data(), logits.bytes() - lead, cudaMemcpyHostToDevice);
    }
    const int64_t start = kCounterStart;
    cudaMemcpy(counter.data(), &start, sizeof start, cudaMemcpyHostToDevice);
    cudaDeviceSynchronize();
  }

  bound bind(const row_case& c) const {
    return {logits.at(lead),
            targets.data(),
            c.weight ? static_cast<const float*>(weight.data()) : nullptr,
            static_cast<const float*>(grad_loss.data()),
            static_cast<const float*>(scale.data()),
            static_cast<float*>(lse.data()),
            static_cast<float*>(loss.data()),
            static_cast<float*>(z.data()),
            c.in_place ? logits.at(lead) : grad.at(lead),
            static_cast<int64_t*>(counter.data())};
  }

  // Everything the GPU wrote; the counter is read and cleared through the public API.
  outputs download(const row_case& c, fusedloss_dtype dtype, cudaStream_t stream) const {
    outputs out = poisoned_outputs(c, dtype);
    loss.download(out.loss);
    lse.download(out.lse);
    z.download(out.z);
    (c.in_place ? logits : grad).download(out.grad, lead);
    fusedloss_error err{};
    EXPECT_EQ(fusedloss_read_and_clear_counter(static_cast<int64_t*>(counter.data()),
                                               FUSEDLOSS_DEVICE_CUDA, stream, &out.counter, &err),
              FUSEDLOSS_SUCCESS)
        << err.message;
    int64_t again = -1;
    EXPECT_EQ(fusedloss_read_and_clear_counter(static_cast<int64_t*>(counter.data()),
                                               FUSEDLOSS_DEVICE_CUDA, stream, &again, &err),
              FUSEDLOSS_SUCCESS)
        << err.message;
    EXPECT_EQ(again, 0) << "fusedloss_read_and_clear_counter did not clear the counter";
    return out;
  }
};

// ------------------------------------------------------------------------------------------------
// Comparison.

// Reports values outside their tolerance: the first few in full, then how many in all.
class report {
 public:
  explicit report(std::string what) : what_(std::move(what)) {}
  report(const report&) = delete;
  report& operator=(const report&) = delete;
  ~report() {
    if (failures_ > kShown) ADD_FAILURE() << what_ << ": " << failures_ << " mismatches in all";
  }

  void value(size_t i, double got, double want, const checks::tolerance& t) {
    if (t.accepts(got, want) || ++failures_ > kShown) return;
    ADD_FAILURE() << std::setprecision(9) << what_ << "[" << i << "]: got " << got << ", want "
                  << want << " (atol " << t.atol << ", rtol " << t.rtol << ")";
  }
  void bytes(size_t i, const unsigned char* got, const unsigned char* want, size_t n) {
    if (std::memcmp(got, want, n) == 0 || ++failures_ > kShown) return;
    ADD_FAILURE() << what_ << "[" << i << "]: written, but must keep its bytes";
  }

 private:
  static constexpr int kShown = 5;
  std::string what_;
  int failures_ = 0;
};

void expect_matches(const row_case& c, fusedloss_dtype dtype, const inputs& in, const outputs& want,
                    const outputs& got) {
  const int64_t R = rows_of(c), C = c.num_classes;
  const row_bounds b = bounds_of(c, in);
  const bool backward = c.call == fusedloss::call::backward;

  {  // The loss and the z-loss term: unwritten (poisoned) on both sides in a backward.
    report loss("loss"), z("z_loss_out");
    if (c.reduction == FUSEDLOSS_REDUCTION_NONE) {
      for (int64_t r = 0; r < R; ++r) {
        const size_t i = static_cast<size_t>(r);
        const checks::tolerance t = counted(c, in, r)
                                        ? checks::tolerance{b.scale[i] * b.t[i], kLossRtol}
                                        : checks::tolerance{0, 0};  // exactly 0
        loss.value(i, got.loss[i], want.loss[i], t);
        z.value(i, got.z[i], want.z[i], t);
      }
    } else {
      double atol = 0;
      for (int64_t r = 0; r < R; ++r) {
        if (counted(c, in, r))
          atol += b.scale[static_cast<size_t>(r)] * b.t[static_cast<size_t>(r)];
      }
      const double normaliser = c.reduction == FUSEDLOSS_REDUCTION_MEAN ? b.normaliser : 1.0;
      const checks::tolerance t = normaliser != 0
                                      ? checks::tolerance{atol / normaliser, kReducedRtol}
                                      : checks::tolerance{0, 0};  // NaN or 0
      loss.value(0, got.loss[0], want.loss[0], t);
      z.value(0, got.z[0], want.z[0], t);
    }
  }

  {  // The LSE: written by forward calls, read (and left alone) by a backward given it.
    report lse("lse");
    const bool written = !backward && c.lse_out;
    for (int64_t r = 0; r < R; ++r) {
      const size_t i = static_cast<size_t>(r);
      lse.value(i, got.lse[i], want.lse[i],
                written ? checks::tolerance{b.t[i], 0} : checks::tolerance{0, 0});
    }
  }

  {  // The gradient, and every byte it must not write: padding, and all of it in a forward.
    const size_t element = element_bytes(dtype);
    const int64_t stride = stride_of(c), gstride = grad_stride_of(c);
    const size_t total = static_cast<size_t>(c.batch * gstride);
    std::vector<char> in_row(total, 0);
    const checks::tolerance dtype_tol = checks::rounding_tolerance(dtype);
    report grad("grad");
    for (int64_t r = 0; r < R; ++r) {
      const size_t ri = static_cast<size_t>(r);
      for (int64_t k = 0; k < C; ++k) {
        const size_t i = at(c, r, gstride, k);
        in_row[i] = 1;
        if (c.call == fusedloss::call::forward) continue;
        const double w = want.grad[i];
        checks::tolerance t{dtype_tol.atol + b.upstream[ri] * b.scale[ri] * b.t[ri],
                            dtype_tol.rtol + b.t[ri]};
        // Exactly 0: an ignored row or an empty mean, and a -inf logit whose exact gradient is 0
        // (p_j = 0 on both sides; no smoothing term).
        if (b.upstream[ri] == 0 ||
            (w == 0 && c.softcap == 0 && in.x[at(c, r, stride, k)] == -kInf)) {
          t = {0, 0};
        }
        grad.value(i, got.grad[i], w, t);
      }
    }
    report untouched("grad (must keep its bytes)");
    const std::vector<unsigned char> poison(element, 0xFF);
    const auto* got_bytes = static_cast<const unsigned char*>(got.grad.data());
    const auto* logit_bytes = static_cast<const unsigned char*>(in.logits.data());
    for (size_t i = 0; i < total; ++i) {
      if (in_row[i] && c.call != fusedloss::call::forward) continue;
      untouched.bytes(i, got_bytes + i * element,
                      c.in_place ? logit_bytes + i * element : poison.data(), element);
    }
  }

  const int64_t expected = kCounterStart + (backward ? 0 : in.invalid);
  EXPECT_EQ(want.counter, expected) << "the reference's invalid_target_count";
  EXPECT_EQ(got.counter, expected) << "invalid_target_count (start " << kCounterStart << ")";
}

// ------------------------------------------------------------------------------------------------
// Drivers.

struct device_facts {
  int major = 0;
  int sms = 0;
  int shared_optin = 0;  // dynamic shared memory a block may opt into
};

device_facts facts() {
  device_facts f;
  int device = 0;
  cudaGetDevice(&device);
  cudaDeviceGetAttribute(&f.major, cudaDevAttrComputeCapabilityMajor, device);
  cudaDeviceGetAttribute(&f.sms, cudaDevAttrMultiProcessorCount, device);
  cudaDeviceGetAttribute(&f.shared_optin, cudaDevAttrMaxSharedMemoryPerBlockOptin, device);
  return f;
}

bool clusters_available() { return facts().major >= 9; }

// Whether a forced tier can hold the case (run_row_loss refuses it otherwise).
// What a forced tier holds (make_plan's rules): the warp tier, a row of up to 32 lanes x 4 vectors
// when every row is whole 16-byte vectors on 16-byte boundaries, else 32 x 16 elements, and the
// backward from a saved LSE; block and cluster, no saved LSE (they stage what they fold).
bool tier_accepts(const row_case& c, fusedloss_dtype dtype) {
  if (c.tier == row_tier::automatic || c.tier == row_tier::spatial) return true;
  if (c.spatial != 1) return false;
  if (c.tier == row_tier::two_pass) return true;
  if (!index_targets(c)) return false;
  if (c.tier == row_tier::warp) {
    const auto vector = static_cast<int64_t>(16 / element_bytes(dtype));
    const bool whole = c.num_classes % vector == 0 && stride_of(c) % vector == 0 &&
                       grad_stride_of(c) % vector == 0 && c.lead % vector == 0;
    return c.num_classes <= (whole ? 32 * 4 * vector : 32 * 16);
  }
  return !(c.call == fusedloss::call::backward && c.saved_lse);
}

// A forced tier the GPU cannot run is refused before anything is launched.
void expect_refused(const kernels::row_problem& p, bool workspace_refused = true) {
  row_tier t = row_tier::automatic;
  EXPECT_EQ(kernels::row_tier_for(p, &t), cudaErrorInvalidValue) << "tier " << name(p.tier);
  size_t bytes = 0;
  if (workspace_refused) {
    EXPECT_EQ(kernels::row_workspace_bytes(p, &bytes), cudaErrorInvalidValue)
        << "tier " << name(p.tier);
  }
  EXPECT_EQ(kernels::run_row_loss(p, nullptr, 0, nullptr), cudaErrorInvalidValue)
      << "tier " << name(p.tier);
  EXPECT_EQ(cudaGetLastError(), cudaSuccess);
}

uint64_t fresh_seed() { return std::random_device{}(); }

// Runs the case on the reference and the GPU and compares every output.
void expect_matches_reference(const row_case& c, fusedloss_dtype dtype) {
  const uint64_t seed = fresh_seed();
  SCOPED_TRACE("seed " + std::to_string(seed) + ": " + c.describe());
  if (c.tier == row_tier::cluster && !clusters_available()) {  // before sm_90: refused
    expect_refused(make_problem(c, dtype, bound{}));
    return;
  }
  std::mt19937_64 rng(seed);
  inputs in = make_inputs(c, dtype, rng);
  if (c.call == fusedloss::call::backward && c.saved_lse)
    in.saved_lse = reference_lse(c, dtype, in);
  const outputs want = run_reference(c, dtype, in);

  device_arrays dev(c, in, dtype);
  dev.poison(c, in);
  const bound b = dev.bind(c);
  size_t bytes = 0;
  ASSERT_TRUE(gpu_workspace_bytes(c, dtype, b, &bytes));
  device_buffer workspace(bytes);
  ASSERT_TRUE(launch(c, dtype, b, workspace.data(), bytes, nullptr));
  FUSEDLOSS_CUDA_OK(cudaDeviceSynchronize());
  expect_matches(c, dtype, in, want, dev.download(c, dtype, nullptr));
}

// One layout per tier, at a size where that tier runs: warp (C = 33), block (C = 4097), cluster
// forced at C = 1000 (where warp would run; refused before sm_90), two_pass forced at C = 1000,
// (N, C, S) with S = 5 (two_pass over strided rows: too few positions for a thread each) and
// spatial forced there. Probability targets and a backward from the saved LSE run two_pass on the
// automatic layouts, and skip the forced on-chip ones, which cannot hold them.
struct layout {
  int64_t num_classes, batch, spatial;
  row_tier tier;
};
constexpr layout kLayouts[] = {{33, 5, 1, row_tier::automatic}, {4097, 3, 1, row_tier::automatic},
                               {1000, 3, 1, row_tier::cluster}, {1000, 4, 1, row_tier::two_pass},
                               {33, 3, 5, row_tier::automatic}, {33, 3, 5, row_tier::spatial}};

void on_every_layout(row_case c, fusedloss_dtype dtype) {
  for (const layout& l : kLayouts) {
    c.num_classes = l.num_classes;
    c.batch = l.batch;
    c.spatial = l.spatial;
    c.tier = l.tier;
    if (tier_accepts(c, dtype)) expect_matches_reference(c, dtype);
  }
}

constexpr fusedloss_reduction kReductions[] = {FUSEDLOSS_REDUCTION_NONE, FUSEDLOSS_REDUCTION_SUM,
                                               FUSEDLOSS_REDUCTION_MEAN};

std::vector<std::vector<unsigned char>> raw(const device_arrays& dev) {
  return {dev.loss.raw(), dev.lse.raw(), dev.z.raw(), dev.grad.raw(), dev.logits.raw()};
}

template <class Dtype>
class RowKernels : public ::testing::Test {
 protected:
  static constexpr fusedloss_dtype dtype = Dtype::value;
  void SetUp() override { FUSEDLOSS_REQUIRE_GPU_OR_SKIP(); }
};
TYPED_TEST_SUITE(RowKernels, Dtypes, DtypeNames);

// ------------------------------------------------------------------------------------------------
// Sizes.

// C from 1 to one past 4096 (the warp tier's edges, 1025 one past its 16-bit capacity, 4097 a
// block), N in {0, 1, 3, 4096} (4096 only up to C = 1000: the reference's cost), every reduction
// where N < 4096; ignored and out-of-range targets throughout, int32 and int64 in turn.
TYPED_TEST(RowKernels, EverySmallSize) {
  int variant = 0;
  for (int64_t C : {1, 2, 31, 32, 33, 512, 513, 1000, 1024, 1025, 4097}) {
    for (int64_t N : {0, 1, 3, 4096}) {
      if (N == 4096 && C > 1000) continue;
      for (fusedloss_reduction reduction : kReductions) {
        if (N == 4096 && reduction != kReductions[variant % 3]) continue;
        row_case c;
        c.num_classes = C;
        c.batch = N;
        c.reduction = reduction;
        c.ignored = 0.1;
        c.invalid = 0.05;
        c.index_dtype = variant % 2 == 0 ? FUSEDLOSS_INT64 : FUSEDLOSS_INT32;
        c.label_smoothing = variant % 3 == 1 ? 0.1 : 0.0;
        c.weight = variant % 4 == 2;
        ++variant;
        expect_matches_reference(c, TestFixture::dtype);
      }
    }
  }
}

// LLM vocabularies: block (30576, 32000, 50257), cluster on sm_90 or two_pass (128256, 256000).
TYPED_TEST(RowKernels, VocabSizes) {
  int variant = 0;
  for (int64_t C : {30576, 32000, 50257, 128256, 256000}) {
    for (int64_t N : {1, 3}) {
      row_case c;
      c.num_classes = C;
      c.batch = N;
      c.reduction = kReductions[variant % 3];
      c.ignored = N > 1 ? 0.2 : 0.0;
      c.label_smoothing = variant % 2 == 1 ? 0.1 : 0.0;
      c.weight = variant % 4 == 3;
      c.z_loss = variant % 4 == 2 ? 1e-4 : 0.0;
      c.z_loss_out = c.z_loss > 0;
      ++variant;
      expect_matches_reference(c, TestFixture::dtype);
    }
  }
}

// ------------------------------------------------------------------------------------------------
// Tiers.

kernels::row_problem sized_problem(fusedloss_dtype dtype, int64_t C, int64_t S = 1,
                                   loss_kind kind = loss_kind::cross_entropy, bool read_lse = false,
                                   row_tier tier = row_tier::automatic) {
  row_case c;
  c.kind = kind;
  c.batch = 4;
  c.num_classes = C;
  c.spatial = S;
  c.float32_targets = true;
  c.call = read_lse ? fusedloss::call::backward : fusedloss::call::forward_backward;
  c.saved_lse = read_lse;
  c.tier = tier;
  kernels::row_problem p = make_problem(c, dtype, bound{});
  // The plan asks whether a gradient is written (a row then waits between two passes) and where
  // rows start, never for values: a 16-byte-aligned stand-in for the gradient's buffer.
  p.grad = reinterpret_cast<void*>(uintptr_t{256});
  return p;
}

row_tier automatic_tier(const kernels::row_problem& p) {
  row_tier t = row_tier::automatic;
  EXPECT_EQ(kernels::row_tier_for(p, &t), cudaSuccess) << "C=" << p.num_classes;
  return t;
}

// What automatic picks at the sizes the tests use, so that each forced tier below runs where
// another would have been chosen (C = 1000: warp; C = 4097: block; S = 1: never spatial).
TYPED_TEST(RowKernels, AutomaticTierChoice) {
  const fusedloss_dtype dtype = TestFixture::dtype;
  const device_facts f = facts();
  const int64_t capacity = dtype == FUSEDLOSS_FLOAT32 ? 512 : 1024;  // 32 lanes x 4 x 16 bytes
  const auto es = static_cast<int64_t>(element_bytes(dtype));
  for (int64_t C : {int64_t{1}, int64_t{31}, int64_t{33}, int64_t{500}, capacity}) {
    EXPECT_EQ(automatic_tier(sized_problem(dtype, C)), row_tier::warp) << "C=" << C;
  }
  EXPECT_EQ(automatic_tier(sized_problem(dtype, capacity + 1)), row_tier::block);
  EXPECT_EQ(automatic_tier(sized_problem(dtype, 4097)), row_tier::block);
  if (32000 * es + 8192 <= f.shared_optin) {  // the row and the kernel's static shared memory
    EXPECT_EQ(automatic_tier(sized_problem(dtype, 32000)), row_tier::block);
    EXPECT_EQ(automatic_tier(sized_problem(dtype, 30576)), row_tier::block);
  }
  // 128256 and 256000 outgrow one block (227 KiB on sm_90) but not a cluster of 8.
  const row_tier large = f.major >= 9 ? row_tier::cluster : row_tier::two_pass;
  EXPECT_EQ(automatic_tier(sized_problem(dtype, 128256)), large);
  EXPECT_EQ(automatic_tier(sized_problem(dtype, 256000)), large);
  EXPECT_EQ(automatic_tier(sized_problem(dtype, int64_t{1} << 21)),
            row_tier::two_pass);  // > 8 blocks
  // A thread per row pays only over many positions and rows; few of either take a block a row.
  EXPECT_EQ(automatic_tier(sized_problem(dtype, 33, 5)), row_tier::two_pass);
  EXPECT_EQ(automatic_tier(sized_problem(dtype, 1000, 2)), row_tier::two_pass);
  {
    kernels::row_problem many = sized_problem(dtype, 33, 64);
    many.batch = int64_t{f.sms} * 256;  // make_plan's bar: a 256-thread block an SM
    EXPECT_EQ(automatic_tier(many), row_tier::spatial);
  }
  EXPECT_EQ(automatic_tier(sized_problem(dtype, 33, 1, loss_kind::probability)),
            row_tier::two_pass);
  EXPECT_EQ(automatic_tier(sized_problem(dtype, 1000, 1, loss_kind::probability)),
            row_tier::two_pass);
  // The backward from a saved LSE streams: in registers while the row fits, else two_pass.
  EXPECT_EQ(automatic_tier(sized_problem(dtype, 500, 1, loss_kind::cross_entropy, true)),
            row_tier::warp);
  EXPECT_EQ(automatic_tier(sized_problem(dtype, 4097, 1, loss_kind::cross_entropy, true)),
            row_tier::two_pass);
  EXPECT_EQ(automatic_tier(sized_problem(dtype, 4097, 1, loss_kind::softmax_focal, true)),
            row_tier::two_pass);
  EXPECT_EQ(automatic_tier(sized_problem(dtype, 500, 1, loss_kind::softmax_focal)), row_tier::warp);
}

// Each tier forced over its sizes (warp: 1 to 32 lanes a row, up to its capacity; cluster down
// to C = 1, where the second block's slice is empty), with the options rotating, against the
// reference. The forced-tier runs check that row_tier_for reports the forced tier.
TYPED_TEST(RowKernels, EveryTierForced) {
  const fusedloss_dtype dtype = TestFixture::dtype;
  const int64_t capacity = dtype == FUSEDLOSS_FLOAT32 ? 512 : 1024;
  const std::vector<std::pair<row_tier, std::vector<int64_t>>> tiers = {
      {row_tier::warp, {1, 2, 5, 31, 100, 257, 500, capacity}},
      {row_tier::block, {1, 3, 33, 1000, 4097}},
      {row_tier::cluster, {1, 3, 33, 1000, 4097}},
      {row_tier::two_pass, {1, 33, 1000, 4097}},
      {row_tier::spatial, {1, 33, 1000}}};
  constexpr int kOptionSets = 7;
  const auto options = [](row_case& c, int set) {
    switch (set) {
      case 0:  // plain, mean
        c.ignored = 0.1;
        c.invalid = 0.05;
        break;
      case 1:  // weights, smoothing, misaligned rows, separate gradient stride, scale
        c.weight = true;
        c.label_smoothing = 0.1;
        c.reduction = FUSEDLOSS_REDUCTION_SUM;
        c.row_padding = 3;
        c.grad_padding = 5;
        c.grad_scale = 0.75f;
        c.grad_scale_ptr = true;
        break;
      case 2:  // forward: LSE, z-loss term, soft-cap
        c.call = fusedloss::call::forward;
        c.reduction = FUSEDLOSS_REDUCTION_NONE;
        c.z_loss = 1e-3;
        c.z_loss_out = true;
        c.softcap = 5.0;
        break;
      case 3:  // backward, per-row upstream; from the saved LSE where the tier reads it
        c.call = fusedloss::call::backward;
        c.reduction = FUSEDLOSS_REDUCTION_NONE;
        c.weight = true;
        c.label_smoothing = 0.2;
        c.saved_lse =
            c.tier == row_tier::two_pass || c.tier == row_tier::spatial || c.tier == row_tier::warp;
        break;
      case 4:
        c.kind = loss_kind::softmax_focal;
        c.weight = true;
        c.reduction = FUSEDLOSS_REDUCTION_SUM;
        c.ignored = 0.2;
        c.index_dtype = FUSEDLOSS_INT32;
        break;
      case 5:
        c.kind = loss_kind::softmax_focal;
        c.gamma = 0.5;
        c.call = fusedloss::call::backward;
        c.saved_lse =
            c.tier == row_tier::two_pass || c.tier == row_tier::spatial || c.tier == row_tier::warp;
        break;
      default:
        c.kind = loss_kind::probability;
        c.label_smoothing = 0.2;
        c.weight = true;
        c.z_loss = 1e-3;
        c.z_loss_out = true;
        break;
    }
  };
  for (const auto& [tier, classes] : tiers) {
    for (int64_t C : classes) {
      for (int set = 0; set < kOptionSets; ++set) {
        row_case c;
        c.tier = tier;
        c.num_classes = C;
        c.batch = tier == row_tier::warp ? 67 : 9;  // the warp tier: a partly filled last warp
        options(c, set);
        if (tier_accepts(c, dtype)) expect_matches_reference(c, dtype);
      }
    }
  }
}

// A forced tier that cannot hold the problem is refused before anything runs, and writes nothing.
TYPED_TEST(RowKernels, ForcedTierRefusals) {
  const fusedloss_dtype dtype = TestFixture::dtype;
  const int64_t capacity = dtype == FUSEDLOSS_FLOAT32 ? 512 : 1024;
  expect_refused(
      sized_problem(dtype, capacity + 1, 1, loss_kind::cross_entropy, false, row_tier::warp));
  expect_refused(
      sized_problem(dtype, int64_t{1} << 21, 1, loss_kind::cross_entropy, false, row_tier::block));
  expect_refused(sized_problem(dtype, int64_t{1} << 24, 1, loss_kind::cross_entropy, false,
                               row_tier::cluster));
  for (row_tier tier : {row_tier::warp, row_tier::block, row_tier::cluster}) {
    expect_refused(sized_problem(dtype, 33, 1, loss_kind::probability, false, tier));
  }
  for (row_tier tier : {row_tier::block, row_tier::cluster}) {
    // The workspace query sizes the fused call, which the tier holds: only the call is refused.
    expect_refused(sized_problem(dtype, 33, 1, loss_kind::cross_entropy, true, tier), false);
  }
  for (row_tier tier : {row_tier::warp, row_tier::block, row_tier::cluster}) {
    expect_refused(sized_problem(dtype, 33, 2, loss_kind::cross_entropy, false, tier));
  }
  if (!clusters_available()) {
    expect_refused(sized_problem(dtype, 33, 1, loss_kind::cross_entropy, false, row_tier::cluster));
  }

  // With real buffers: nothing is written.
  row_case c;
  c.num_classes = capacity + 1;
  c.batch = 2;
  c.tier = row_tier::warp;
  c.invalid = 0.5;
  std::mt19937_64 rng(fresh_seed());
  const inputs in = make_inputs(c, dtype, rng);
  device_arrays dev(c, in, dtype);
  dev.poison(c, in);
  const auto before = raw(dev);
  EXPECT_EQ(kernels::run_row_loss(make_problem(c, dtype, dev.bind(c)), nullptr, 0, nullptr),
            cudaErrorInvalidValue);
  FUSEDLOSS_CUDA_OK(cudaDeviceSynchronize());
  EXPECT_EQ(raw(dev), before);
  EXPECT_EQ(dev.download(c, dtype, nullptr).counter, kCounterStart);
}

// More rows than each tier's grid holds, so that its loop over rows turns (and the rows it
// reaches second are checked): grids as row_losses.cu's make_plan sizes them. Rows in the middle
// are ignored with cheap logits, which keeps the reference's work to a few hundred rows.
TYPED_TEST(RowKernels, LargeGridStrideLoops) {
  const fusedloss_dtype dtype = TestFixture::dtype;
  const device_facts f = facts();
  const auto es = static_cast<int64_t>(element_bytes(dtype));
  std::vector<row_case> cases;
  {  // warp, one lane a row (C = 2): sms * 8 blocks of 8 warps of 32 rows; the mean's prepass
     // (sms * 2 blocks of 256 rows) turns too
    row_case c;
    c.num_classes = 2;
    c.batch = fusedloss::gpu_tests::scaled_size(int64_t{f.sms} * 8 * 8 * 32 + 37);
    c.tier = row_tier::warp;
    c.ignored = 0.1;
    c.invalid = 0.01;
    cases.push_back(c);
  }
  {  // warp, 32 lanes a row (C = 257): sms * 8 blocks of 8 rows
    row_case c;
    c.num_classes = 257;
    c.batch = fusedloss::gpu_tests::scaled_size(int64_t{f.sms} * 8 * 8 + 37);
    c.tier = row_tier::warp;
    c.reduction = FUSEDLOSS_REDUCTION_SUM;
    c.label_smoothing = 0.1;
    c.sparse_begin = 64;
    c.sparse_end = c.batch - 200;
    cases.push_back(c);
  }
  {  // block: a row over half the block's shared memory, one block an SM
    row_case c;
    c.num_classes = (f.shared_optin - 8192) / (2 * es) + 64;
    c.batch = f.sms + 37;
    c.tier = row_tier::block;
    c.lse_out = false;  // the reference then skips the ignored rows
    c.sparse_begin = 4;
    c.sparse_end = c.batch - 45;
    cases.push_back(c);
  }
  {  // cluster of 2 blocks (C = 4097): sms / 2 clusters
    row_case c;
    c.num_classes = 4097;
    c.batch = f.sms / 2 + 37;
    c.tier = row_tier::cluster;
    c.reduction = FUSEDLOSS_REDUCTION_SUM;
    cases.push_back(c);
  }
  {  // two_pass: sms * 4 blocks
    row_case c;
    c.num_classes = 33;
    c.batch = int64_t{f.sms} * 4 + 37;
    c.tier = row_tier::two_pass;
    c.weight = true;
    cases.push_back(c);
  }
  {  // spatial: sms * 8 blocks of 256 rows
    row_case c;
    c.num_classes = 2;
    c.batch = 2;
    c.spatial = fusedloss::gpu_tests::scaled_size(int64_t{f.sms} * 8 * 256 / 2 + 37);
    c.label_smoothing = 0.1;
    cases.push_back(c);
  }
  for (const row_case& c : cases) expect_matches_reference(c, dtype);
}

// ------------------------------------------------------------------------------------------------
// Options.

TYPED_TEST(RowKernels, EveryCrossEntropyOption) {
  int variant = 0;
  for (int set = 0; set < 8; ++set) {
    row_case c;
    c.reduction = kReductions[variant++ % 3];
    c.ignored = 0.1;
    switch (set) {
      case 0:
        c.weight = true;
        break;
      case 1:  // ignore_index a class
        c.ignore_index = 2;
        c.ignored = 0.3;
        break;
      case 2:
        c.label_smoothing = 0.1;
        break;
      case 3:
        c.label_smoothing = 1.0;
        break;  // smoothing alone
      case 4:
        c.weight = true;
        c.label_smoothing = 0.2;
        c.invalid = 0.1;
        break;
      case 5:
        c.z_loss = 1e-3;
        c.z_loss_out = true;
        break;
      case 6:
        c.softcap = 5.0;
        break;  // logits in [-6, 6): the cap bites, its slope stays >= 0.3
      default:
        c.softcap = 5.0;
        c.label_smoothing = 0.1;
        c.z_loss = 1e-2;
        c.z_loss_out = true;
        c.weight = true;
    }
    on_every_layout(c, TestFixture::dtype);
  }
}

TYPED_TEST(RowKernels, ProbabilityTargets) {
  int variant = 0;
  for (bool float32_targets : {false, true}) {
    for (int set = 0; set < 3; ++set) {
      row_case c;
      c.kind = loss_kind::probability;
      c.float32_targets = float32_targets;
      c.reduction = kReductions[variant++ % 3];
      c.label_smoothing = set == 0 ? 0.0 : 0.3;
      c.weight = set != 1;
      c.z_loss = set == 2 ? 1e-3 : 0.0;
      c.z_loss_out = set == 2;
      c.softcap = set == 1 ? 5.0 : 0.0;
      on_every_layout(c, TestFixture::dtype);
    }
  }
}

TYPED_TEST(RowKernels, SoftmaxFocal) {
  for (double gamma : {0.0, 0.5, 2.0}) {
    for (bool alpha : {false, true}) {
      for (fusedloss_reduction reduction : kReductions) {
        // mean with alpha: SoftmaxFocalMeanDividesByTheRowCount below
        if (alpha && reduction == FUSEDLOSS_REDUCTION_MEAN) continue;
        row_case c;
        c.kind = loss_kind::softmax_focal;
        c.gamma = gamma;
        c.weight = alpha;
        c.reduction = reduction;
        c.ignored = 0.2;
        c.ignore_index = 1;
        c.invalid = 0.05;
        on_every_layout(c, TestFixture::dtype);
      }
    }
  }
}

// gamma = 0 without alpha is cross-entropy without smoothing: bit for bit on the GPU.
TYPED_TEST(RowKernels, SoftmaxFocalGammaZeroIsCrossEntropy) {
  const fusedloss_dtype dtype = TestFixture::dtype;
  for (const layout& l : kLayouts) {
    for (fusedloss_reduction reduction : {FUSEDLOSS_REDUCTION_NONE, FUSEDLOSS_REDUCTION_MEAN}) {
      row_case ce;
      ce.num_classes = l.num_classes;
      ce.batch = l.batch;
      ce.spatial = l.spatial;
      ce.tier = l.tier;
      ce.reduction = reduction;
      ce.ignored = 0.2;
      if (ce.tier == row_tier::cluster && !clusters_available()) continue;
      row_case focal = ce;
      focal.kind = loss_kind::softmax_focal;
      focal.gamma = 0.0;
      const uint64_t seed = fresh_seed();
      SCOPED_TRACE("seed " + std::to_string(seed) + ": " + ce.describe());
      std::mt19937_64 rng(seed);
      const inputs in = make_inputs(ce, dtype, rng);
      std::vector<std::vector<unsigned char>> results;
      for (const row_case* c : {&ce, &focal}) {
        device_arrays dev(*c, in, dtype);
        dev.poison(*c, in);
        const bound b = dev.bind(*c);
        size_t bytes = 0;
        ASSERT_TRUE(gpu_workspace_bytes(*c, dtype, b, &bytes));
        device_buffer workspace(bytes);
        ASSERT_TRUE(launch(*c, dtype, b, workspace.data(), bytes, nullptr));
        FUSEDLOSS_CUDA_OK(cudaDeviceSynchronize());
        for (auto& r : raw(dev)) results.push_back(std::move(r));
      }
      const size_t half = results.size() / 2;
      for (size_t i = 0; i < half; ++i) EXPECT_EQ(results[i], results[half + i]) << "array " << i;
    }
  }
}

// Every call: forward with the LSE and the z-loss term; backward with a per-row and a scalar
// upstream, with and without the saved LSE; forward_backward with grad_scale and grad_scale_ptr,
// without the loss, without the LSE.
TYPED_TEST(RowKernels, EveryCall) {
  for (loss_kind kind : {loss_kind::cross_entropy, loss_kind::softmax_focal}) {
    for (int set = 0; set < 8; ++set) {
      row_case c;
      c.kind = kind;
      c.ignored = 0.1;
      c.weight = set % 2 == 1 && kind == loss_kind::cross_entropy;
      c.label_smoothing = kind == loss_kind::cross_entropy && set % 3 == 0 ? 0.1 : 0.0;
      switch (set) {
        case 0:
          c.call = fusedloss::call::forward;
          c.z_loss = kind == loss_kind::cross_entropy ? 1e-3 : 0.0;
          c.z_loss_out = kind == loss_kind::cross_entropy;
          break;
        case 1:
          c.call = fusedloss::call::backward;
          c.reduction = FUSEDLOSS_REDUCTION_NONE;
          break;
        case 2:
          c.call = fusedloss::call::backward;
          c.reduction = FUSEDLOSS_REDUCTION_SUM;
          c.saved_lse = true;
          break;
        case 3:
          c.call = fusedloss::call::backward;
          c.saved_lse = true;  // mean
          c.softcap = kind == loss_kind::cross_entropy ? 5.0 : 0.0;
          break;
        case 4:
          c.grad_scale = 0.75f;
          c.grad_scale_ptr = true;
          break;
        case 5:
          c.reduction = FUSEDLOSS_REDUCTION_NONE;
          c.grad_scale = 2.0f;  // scales every row alike
          break;
        case 6:
          c.loss_out = false;
          c.reduction = FUSEDLOSS_REDUCTION_SUM;
          break;
        default:
          c.lse_out = false;
          c.z_loss = kind == loss_kind::cross_entropy ? 1e-3 : 0.0;
          c.grad_scale_ptr = true;
      }
      on_every_layout(c, TestFixture::dtype);
    }
  }
}

// int32 and int64 targets; ignore_index -100, 0 (a class), and one int32 cannot hold (its rows
// then carry -100, out of range); out-of-range values beyond 32 bits.
TYPED_TEST(RowKernels, IndexDtypesAndIgnoreIndex) {
  for (fusedloss_dtype index_dtype : {FUSEDLOSS_INT32, FUSEDLOSS_INT64}) {
    for (int64_t ignore_index : {int64_t{-100}, int64_t{0}, int64_t{1} << 40}) {
      row_case c;
      c.index_dtype = index_dtype;
      c.ignore_index = ignore_index;
      c.ignored = 0.2;
      c.invalid = 0.2;
      c.reduction = ignore_index == 0 ? FUSEDLOSS_REDUCTION_NONE : FUSEDLOSS_REDUCTION_MEAN;
      on_every_layout(c, TestFixture::dtype);
    }
  }
}

// Invalid targets are counted by forward and forward_backward (not by backward), their rows
// treated as ignored; rows that are all ignored give zero loss and an exactly-zero gradient, even
// over NaN, +inf and all -inf logits.
TYPED_TEST(RowKernels, IgnoredRowsAndInvalidTargets) {
  for (fusedloss::call call :
       {fusedloss::call::forward, fusedloss::call::backward, fusedloss::call::forward_backward}) {
    row_case c;
    c.call = call;
    c.invalid = 0.4;
    c.reduction = FUSEDLOSS_REDUCTION_SUM;
    on_every_layout(c, TestFixture::dtype);
  }
  int variant = 0;
  for (fusedloss_reduction reduction : kReductions) {
    row_case c;
    c.ignored = 1.0;
    c.reduction = reduction;
    c.logits = variant % 2 == 0 ? pattern::non_finite : pattern::random;
    c.empty_mean = variant++ % 2 == 0 ? FUSEDLOSS_EMPTY_MEAN_ZERO : FUSEDLOSS_EMPTY_MEAN_NAN;
    on_every_layout(c, TestFixture::dtype);
    c.kind = loss_kind::softmax_focal;
    on_every_layout(c, TestFixture::dtype);
  }
}

// mean over nothing: no rows (N = 0, S = 0), every row ignored, zero total weight; NaN or 0 by
// the policy, a zero gradient under both.
TYPED_TEST(RowKernels, EmptyMeanPolicies) {
  const fusedloss_dtype dtype = TestFixture::dtype;
  for (fusedloss_empty_mean policy : {FUSEDLOSS_EMPTY_MEAN_NAN, FUSEDLOSS_EMPTY_MEAN_ZERO}) {
    for (loss_kind kind :
         {loss_kind::cross_entropy, loss_kind::probability, loss_kind::softmax_focal}) {
      for (int64_t N : {0, 3}) {
        row_case c;
        c.kind = kind;
        c.empty_mean = policy;
        c.batch = N;
        c.spatial = N == 0 ? 1 : 0;  // N = 3 with S = 0: no rows either
        c.z_loss = kind == loss_kind::cross_entropy ? 1e-3 : 0.0;
        c.z_loss_out = kind == loss_kind::cross_entropy;
        expect_matches_reference(c, dtype);
      }
      if (kind == loss_kind::probability) continue;  // never ignores a row
      row_case all_ignored;
      all_ignored.kind = kind;
      all_ignored.empty_mean = policy;
      all_ignored.ignored = 1.0;
      on_every_layout(all_ignored, dtype);
    }
    row_case zero_weight;
    zero_weight.empty_mean = policy;
    zero_weight.weight = true;
    zero_weight.zero_weight = true;
    on_every_layout(zero_weight, dtype);
  }
}

// -inf masks (finite loss and an exactly-zero gradient without smoothing; +inf loss and a finite
// gradient with it; undone by the soft-cap), a -inf target (+inf loss), NaN and +inf (NaN rows).
TYPED_TEST(RowKernels, MaskedAndNonFiniteLogits) {
  for (loss_kind kind :
       {loss_kind::cross_entropy, loss_kind::probability, loss_kind::softmax_focal}) {
    for (int set = 0; set < 4; ++set) {
      row_case c;
      c.kind = kind;
      c.reduction = FUSEDLOSS_REDUCTION_NONE;
      c.logits = set == 3 ? pattern::non_finite : pattern::masked;
      c.label_smoothing = kind != loss_kind::softmax_focal && set == 1 ? 0.1 : 0.0;
      c.softcap = kind != loss_kind::softmax_focal && set == 2 ? 5.0 : 0.0;
      c.weight = set == 1;
      c.gamma = set == 2 ? 0.5 : 2.0;
      on_every_layout(c, TestFixture::dtype);
    }
    if (kind == loss_kind::probability) continue;
    row_case target;
    target.kind = kind;
    target.reduction = FUSEDLOSS_REDUCTION_NONE;
    target.logits = pattern::masked_target;
    on_every_layout(target, TestFixture::dtype);
  }
  // A masked row under sum with smoothing: the sum is +inf.
  row_case sum;
  sum.logits = pattern::masked;
  sum.reduction = FUSEDLOSS_REDUCTION_SUM;
  sum.label_smoothing = 0.1;
  on_every_layout(sum, TestFixture::dtype);
}

// A NaN logit makes its whole row NaN (docs/SEMANTICS.md), also when it is the only logit, or the
// last, that a thread of the block folds, so that no finite logit follows it there: C = 1, and
// C = 33 with the NaN at class 32, which the two_pass, block and cluster tiers hand to a thread
// of its own. The warp and spatial tiers (one lane or thread folding class 32 after finite ones)
// run the same cases as a control.
TYPED_TEST(RowKernels, NanLogitAloneInAThreadsShare) {
  for (row_tier tier : {row_tier::two_pass, row_tier::block, row_tier::cluster, row_tier::warp,
                        row_tier::spatial}) {
    for (int64_t C : {1, 33}) {
      for (loss_kind kind : {loss_kind::cross_entropy, loss_kind::probability}) {
        row_case c;
        c.kind = kind;
        c.tier = tier;
        c.num_classes = C;
        c.batch = 2;
        c.logits = pattern::nan_last;
        c.reduction = FUSEDLOSS_REDUCTION_NONE;
        if (tier_accepts(c, TestFixture::dtype)) expect_matches_reference(c, TestFixture::dtype);
      }
    }
  }
}

// +-1e4 logits, and every logit shifted by 1e4. Each dtype against the reference on its own
// rounded inputs (bfloat16's spacing at 1e4 is 64, float16's 8: the shift changes the logits);
// the float32 LSE near 1e4 is known to 2^-11, which t_r allows for.
TYPED_TEST(RowKernels, ExtremeLogitsAndShift) {
  for (pattern logits : {pattern::extreme, pattern::shifted}) {
    for (loss_kind kind :
         {loss_kind::cross_entropy, loss_kind::probability, loss_kind::softmax_focal}) {
      for (int set = 0; set < 2; ++set) {
        row_case c;
        c.kind = kind;
        c.logits = logits;
        c.reduction = set == 0 ? FUSEDLOSS_REDUCTION_NONE : FUSEDLOSS_REDUCTION_SUM;
        c.label_smoothing = kind != loss_kind::softmax_focal && set == 1 ? 0.1 : 0.0;
        c.z_loss = kind != loss_kind::softmax_focal && set == 0 ? 1e-4 : 0.0;
        c.z_loss_out = c.z_loss > 0;
        c.gamma = set == 0 ? 0.5 : 2.0;
        c.ignored = 0.1;
        on_every_layout(c, TestFixture::dtype);
      }
    }
  }
}

// (N, C, S) with S > 1: classes S apart, targets (N, S); with padding between samples of the
// logits and of the gradient.
TYPED_TEST(RowKernels, SpatialLayout) {
  int variant = 0;
  for (int64_t S : {2, 7, 300}) {
    for (int64_t C : {1, 3, 33, 1000}) {
      row_case c;
      c.num_classes = C;
      c.spatial = S;
      c.batch = S * C > 30000 ? 1 : 3;
      c.kind = variant % 3 == 0   ? loss_kind::cross_entropy
               : variant % 3 == 1 ? loss_kind::probability
                                  : loss_kind::softmax_focal;
      c.reduction = kReductions[variant % 3 == 2 ? 1 : variant % 2];
      c.call = variant % 4 == 3 ? fusedloss::call::backward : fusedloss::call::forward_backward;
      c.saved_lse = variant % 8 == 3;
      c.label_smoothing = c.kind != loss_kind::softmax_focal ? 0.1 : 0.0;
      c.weight = variant % 2 == 0;
      c.ignored = 0.1;
      c.row_padding = variant % 2 == 0 ? 5 : 0;
      c.grad_padding = variant % 3 == 0 ? 3 : -1;
      ++variant;
      expect_matches_reference(c, TestFixture::dtype);
    }
  }
}

// Row strides > C (aligned and not), a separate gradient stride; the poisoned padding of the
// gradient stays untouched.
TYPED_TEST(RowKernels, StridesAndPadding) {
  int variant = 0;
  for (const auto& [row_padding, grad_padding] : std::vector<std::pair<int64_t, int64_t>>{
           {1, -1}, {8, -1}, {13, 0}, {1, 5}, {8, 8}, {0, 3}}) {
    row_case c;
    c.row_padding = row_padding;
    c.grad_padding = grad_padding;
    c.kind = variant++ % 2 == 0 ? loss_kind::cross_entropy : loss_kind::softmax_focal;
    c.label_smoothing = c.kind == loss_kind::cross_entropy ? 0.1 : 0.0;
    c.reduction = FUSEDLOSS_REDUCTION_NONE;
    on_every_layout(c, TestFixture::dtype);
  }
}

// grad_logits == logits (equal strides): the gradient replaces the logits, the padding between
// rows keeps them. Cross-entropy under none (each row's loss reads its target logit) and softmax
// focal (every gradient depends on the target logit), so a tier that reads a logit after another
// thread overwrote it shows.
TYPED_TEST(RowKernels, InPlaceGradient) {
  for (loss_kind kind : {loss_kind::cross_entropy, loss_kind::softmax_focal}) {
    for (fusedloss::call call : {fusedloss::call::forward_backward, fusedloss::call::backward}) {
      row_case c;
      c.kind = kind;
      c.in_place = true;
      c.row_padding = 3;
      c.call = call;
      c.saved_lse = call == fusedloss::call::backward;
      c.reduction =
          call == fusedloss::call::backward ? FUSEDLOSS_REDUCTION_SUM : FUSEDLOSS_REDUCTION_NONE;
      c.label_smoothing = kind == loss_kind::cross_entropy ? 0.1 : 0.0;
      c.ignored = 0.1;
      on_every_layout(c, TestFixture::dtype);
      c.saved_lse = false;  // backward recomputing the LSE, on every layout
      if (call == fusedloss::call::backward) on_every_layout(c, TestFixture::dtype);
    }
  }
}

// docs/SEMANTICS.md: softmax focal's mean divides by the count of non-ignored rows, alpha or not.
// In place on clusters of 4 and of 8 blocks (the last with slices near a block's shared-memory
// limit), soft-capped, on aligned and on misaligned rows (element-wise loops in every block).
TYPED_TEST(RowKernels, InPlaceGradientOnLargeClusters) {
  const fusedloss_dtype dtype = TestFixture::dtype;
  if (!clusters_available()) GTEST_SKIP() << "clusters need sm_90";
  const device_facts f = facts();
  const auto es = static_cast<int64_t>(element_bytes(dtype));
  const int64_t vector = 16 / es;
  const int64_t per_block = (f.shared_optin - 8192) / es / vector * vector;
  // A forced cluster doubles from 2 blocks until a slice fits: 4 for a row of 3 blocks' worth, 8
  // for one of 8 blocks' worth less a vector.
  for (int64_t C : {3 * per_block, 8 * per_block - vector}) {
    for (int64_t padding : {int64_t{0}, int64_t{3}}) {
      row_case c;
      c.tier = row_tier::cluster;
      c.num_classes = C;
      c.batch = 3;
      c.in_place = true;
      c.row_padding = padding;
      c.softcap = 5.0;
      c.label_smoothing = 0.1;
      c.reduction = FUSEDLOSS_REDUCTION_SUM;
      expect_matches_reference(c, dtype);
    }
  }
}

// Row 0 off a 16-byte boundary (logits and gradient one element into their allocations, as a
// slice x[:, 1:] is): with a stride of whole vectors every row is misaligned, with another some
// rows are. Every tier, in place and not.
TYPED_TEST(RowKernels, MisalignedFirstRow) {
  const fusedloss_dtype dtype = TestFixture::dtype;
  for (row_tier tier : {row_tier::automatic, row_tier::warp, row_tier::block, row_tier::cluster,
                        row_tier::two_pass}) {
    if (tier == row_tier::cluster && !clusters_available()) continue;
    for (int64_t C : {int64_t{64}, int64_t{500}, int64_t{1000}, int64_t{4097}}) {
      for (bool in_place : {false, true}) {
        row_case c;
        c.tier = tier;
        c.num_classes = C;
        c.batch = 5;
        c.lead = 1;
        c.in_place = in_place;
        c.label_smoothing = 0.1;
        c.ignored = 0.2;
        if (tier_accepts(c, dtype)) expect_matches_reference(c, dtype);
      }
    }
  }
}

// The largest row a block stages takes the block tier; one vector more does not.
TYPED_TEST(RowKernels, BlockTierEdge) {
  const fusedloss_dtype dtype = TestFixture::dtype;
  const device_facts f = facts();
  const auto es = static_cast<int64_t>(element_bytes(dtype));
  const int64_t vector = 16 / es;
  const int64_t largest = (f.shared_optin - 8192) / es / vector * vector;
  EXPECT_EQ(automatic_tier(sized_problem(dtype, largest)), row_tier::block);
  EXPECT_NE(automatic_tier(sized_problem(dtype, largest + vector)), row_tier::block);
  for (int64_t C : {largest, largest + vector}) {
    row_case c;
    c.num_classes = C;
    c.batch = 2;
    c.weight = true;
    c.label_smoothing = 0.1;
    expect_matches_reference(c, dtype);
  }
}

TYPED_TEST(RowKernels, SoftmaxFocalMeanDividesByTheRowCount) {
  row_case c;
  c.kind = loss_kind::softmax_focal;
  c.weight = true;  // alpha
  c.ignored = 0.2;
  on_every_layout(c, TestFixture::dtype);
}

// The z-loss term is a forward output of its own: forward_backward writes it without the loss.
TYPED_TEST(RowKernels, ZLossOutWithoutTheLoss) {
  for (fusedloss_reduction reduction : kReductions) {
    row_case c;
    c.z_loss = 1e-3;
    c.z_loss_out = true;
    c.loss_out = false;
    c.reduction = reduction;
    on_every_layout(c, TestFixture::dtype);
  }
}

// ------------------------------------------------------------------------------------------------
// Streams, graphs, determinism.

struct stream_holder {
  cudaStream_t stream = nullptr;
  ~stream_holder() {
    if (stream != nullptr) cudaStreamDestroy(stream);
  }
};
struct graph_holder {
  cudaGraph_t graph = nullptr;
  cudaGraphExec_t exec = nullptr;
  ~graph_holder() {
    if (exec != nullptr) cudaGraphExecDestroy(exec);
    if (graph != nullptr) cudaGraphDestroy(graph);
  }
};

// On a non-blocking stream, then captured in a graph and replayed twice: each run matches the
// reference, the counter (read on the stream) gets each run's count, and every run is bitwise the
// same.
void expect_stream_and_graph(const row_case& c, fusedloss_dtype dtype) {
  const uint64_t seed = fresh_seed();
  SCOPED_TRACE("seed " + std::to_string(seed) + ": " + c.describe());
  if (c.tier == row_tier::cluster && !clusters_available()) return;
  std::mt19937_64 rng(seed);
  inputs in = make_inputs(c, dtype, rng);
  if (c.call == fusedloss::call::backward && c.saved_lse)
    in.saved_lse = reference_lse(c, dtype, in);
  const outputs want = run_reference(c, dtype, in);
  device_arrays dev(c, in, dtype);
  const bound b = dev.bind(c);
  size_t bytes = 0;
  ASSERT_TRUE(gpu_workspace_bytes(c, dtype, b, &bytes));
  device_buffer workspace(bytes);
  stream_holder s;
  FUSEDLOSS_CUDA_OK(cudaStreamCreateWithFlags(&s.stream, cudaStreamNonBlocking));

  dev.poison(c, in);
  ASSERT_TRUE(launch(c, dtype, b, workspace.data(), bytes, s.stream));
  FUSEDLOSS_CUDA_OK(cudaStreamSynchronize(s.stream));
  expect_matches(c, dtype, in, want, dev.download(c, dtype, s.stream));
  const auto direct = raw(dev);

  graph_holder g;
  FUSEDLOSS_CUDA_OK(cudaStreamBeginCapture(s.stream, cudaStreamCaptureModeGlobal));
  const ::testing::AssertionResult captured =
      launch(c, dtype, b, workspace.data(), bytes, s.stream);
  FUSEDLOSS_CUDA_OK(cudaStreamEndCapture(s.stream, &g.graph));
  ASSERT_TRUE(captured);
  FUSEDLOSS_CUDA_OK(cudaGraphInstantiate(&g.exec, g.graph, 0));
  for (int replay = 0; replay < 2; ++replay) {
    dev.poison(c, in);
    FUSEDLOSS_CUDA_OK(cudaGraphLaunch(g.exec, s.stream));
    FUSEDLOSS_CUDA_OK(cudaStreamSynchronize(s.stream));
    expect_matches(c, dtype, in, want, dev.download(c, dtype, s.stream));
    EXPECT_EQ(raw(dev), direct) << "replay " << replay << " differs from the direct run";
  }
}

TYPED_TEST(RowKernels, NonDefaultStreamAndGraphReplay) {
  const fusedloss_dtype dtype = TestFixture::dtype;
  row_case base;  // mean (the prepass), weights, smoothing, invalid targets, a device scale
  base.ignored = 0.1;
  base.invalid = 0.05;
  base.weight = true;
  base.label_smoothing = 0.1;
  base.grad_scale_ptr = true;
  for (const layout& l : kLayouts) {
    row_case c = base;
    c.num_classes = l.num_classes;
    c.batch = l.batch * 20;
    c.spatial = l.spatial;
    c.tier = l.tier;
    expect_stream_and_graph(c, dtype);
  }
  row_case vocab = base;  // cluster (sm_90) or two_pass, through the public API
  vocab.num_classes = 131072;
  vocab.batch = 2;
  vocab.reduction = FUSEDLOSS_REDUCTION_SUM;
  expect_stream_and_graph(vocab, dtype);
  row_case saved = base;  // backward from the saved LSE
  saved.num_classes = 1000;
  saved.batch = 50;
  saved.call = fusedloss::call::backward;
  saved.saved_lse = true;
  expect_stream_and_graph(saved, dtype);
  row_case focal;
  focal.kind = loss_kind::softmax_focal;
  focal.num_classes = 4097;
  focal.batch = 20;
  focal.reduction = FUSEDLOSS_REDUCTION_NONE;
  expect_stream_and_graph(focal, dtype);
}

// A graph captured at one size replays correctly after calls of another size (a smaller row, and
// so less shared memory, in between): a launch's shared-memory limit must not follow the last call.
TYPED_TEST(RowKernels, GraphReplayAfterACallOfAnotherSize) {
  const fusedloss_dtype dtype = TestFixture::dtype;
  row_case large;  // block tier, the row staged: 64 KB of shared memory
  large.num_classes = 65536 / static_cast<int64_t>(element_bytes(dtype));
  large.batch = 5;
  large.reduction = FUSEDLOSS_REDUCTION_SUM;
  row_case small = large;  // block tier, 8 KB
  small.num_classes = 4097;
  const uint64_t seed = fresh_seed();
  SCOPED_TRACE("seed " + std::to_string(seed));
  std::mt19937_64 rng(seed);
  const inputs in = make_inputs(large, dtype, rng);
  const outputs want = run_reference(large, dtype, in);
  device_arrays dev(large, in, dtype);
  const bound b = dev.bind(large);
  size_t bytes = 0;
  ASSERT_TRUE(gpu_workspace_bytes(large, dtype, b, &bytes));
  device_buffer workspace(bytes);
  stream_holder s;
  FUSEDLOSS_CUDA_OK(cudaStreamCreateWithFlags(&s.stream, cudaStreamNonBlocking));
  graph_holder g;
  FUSEDLOSS_CUDA_OK(cudaStreamBeginCapture(s.stream, cudaStreamCaptureModeGlobal));
  const ::testing::AssertionResult captured =
      launch(large, dtype, b, workspace.data(), bytes, s.stream);
  FUSEDLOSS_CUDA_OK(cudaStreamEndCapture(s.stream, &g.graph));
  ASSERT_TRUE(captured);
  FUSEDLOSS_CUDA_OK(cudaGraphInstantiate(&g.exec, g.graph, 0));
  expect_matches_reference(small, dtype);
  dev.poison(large, in);
  FUSEDLOSS_CUDA_OK(cudaGraphLaunch(g.exec, s.stream));
  FUSEDLOSS_CUDA_OK(cudaStreamSynchronize(s.stream));
  expect_matches(large, dtype, in, want, dev.download(large, dtype, s.stream));
}

// Two host threads calling on one device with rows of different sizes (64 KB and 8 KB of shared
// memory a block), each call checked against the reference.
TYPED_TEST(RowKernels, TwoHostThreadsAlternatingSizes) {
  const fusedloss_dtype dtype = TestFixture::dtype;
  const auto run = [dtype](int64_t C) {
    for (int k = 0; k < 3; ++k) {
      row_case c;
      c.num_classes = C;
      c.batch = 7;
      c.label_smoothing = k == 1 ? 0.1 : 0.0;
      expect_matches_reference(c, dtype);
    }
  };
  std::thread other(run, 65536 / static_cast<int64_t>(element_bytes(dtype)));
  run(4097);
  other.join();
}

// A backward given the GPU forward's own LSE (not the reference's) matches the reference backward
// given the same LSE, on each tier the two calls take: the forward's LSE is good enough to
// differentiate through.
TYPED_TEST(RowKernels, BackwardFromTheGpuForwardsLse) {
  const fusedloss_dtype dtype = TestFixture::dtype;
  for (int64_t C : {int64_t{100}, int64_t{4097}, int64_t{32768}}) {
    row_case c;
    c.num_classes = C;
    c.batch = 9;
    c.weight = true;
    c.label_smoothing = 0.1;
    c.ignored = 0.2;
    const uint64_t seed = fresh_seed();
    SCOPED_TRACE("seed " + std::to_string(seed) + ": " + c.describe());
    std::mt19937_64 rng(seed);
    inputs in = make_inputs(c, dtype, rng);
    row_case forward = c;
    forward.call = fusedloss::call::forward;
    forward.lse_out = true;
    device_arrays fwd(forward, in, dtype);
    fwd.poison(forward, in);
    const bound fb = fwd.bind(forward);
    size_t bytes = 0;
    ASSERT_TRUE(gpu_workspace_bytes(forward, dtype, fb, &bytes));
    device_buffer workspace(bytes);
    ASSERT_TRUE(launch(forward, dtype, fb, workspace.data(), bytes, nullptr));
    FUSEDLOSS_CUDA_OK(cudaDeviceSynchronize());
    in.saved_lse = fwd.download(forward, dtype, nullptr).lse;

    row_case backward = c;
    backward.call = fusedloss::call::backward;
    backward.saved_lse = true;
    const outputs want = run_reference(backward, dtype, in);
    device_arrays dev(backward, in, dtype);
    dev.poison(backward, in);
    const bound b = dev.bind(backward);
    ASSERT_TRUE(gpu_workspace_bytes(backward, dtype, b, &bytes));
    device_buffer backward_workspace(bytes);
    ASSERT_TRUE(launch(backward, dtype, b, backward_workspace.data(), bytes, nullptr));
    FUSEDLOSS_CUDA_OK(cudaDeviceSynchronize());
    expect_matches(backward, dtype, in, want, dev.download(backward, dtype, nullptr));
  }
}

// Two runs of the same call give the same bits (no floating-point atomics), on every tier, with
// sums over many blocks' partials.
TYPED_TEST(RowKernels, LargeRunsAreBitwiseIdentical) {
  const fusedloss_dtype dtype = TestFixture::dtype;
  const auto make = [](int64_t C, int64_t N, int64_t S, row_tier tier,
                       fusedloss_reduction reduction) {
    row_case c;
    c.num_classes = C;
    c.batch = N;
    c.spatial = S;
    c.tier = tier;
    c.reduction = reduction;
    c.ignored = 0.1;
    c.invalid = 0.01;
    c.label_smoothing = 0.1;
    c.weight = true;
    c.z_loss = 1e-4;
    c.z_loss_out = true;
    return c;
  };
  const auto n = [](int64_t rows) { return fusedloss::gpu_tests::scaled_size(rows); };
  std::vector<row_case> cases = {
      make(500, n(4096), 1, row_tier::automatic, FUSEDLOSS_REDUCTION_SUM),  // warp
      make(32000, 64, 1, row_tier::automatic, FUSEDLOSS_REDUCTION_MEAN),    // block
      make(4097, 300, 1, row_tier::cluster, FUSEDLOSS_REDUCTION_SUM),
      make(33, n(4096), 1, row_tier::two_pass, FUSEDLOSS_REDUCTION_MEAN),
      make(33, 64, 300, row_tier::spatial, FUSEDLOSS_REDUCTION_SUM),
      make(500, 64, 1, row_tier::automatic, FUSEDLOSS_REDUCTION_NONE)};  // warp, per row
  cases.back().kind = loss_kind::softmax_focal;
  row_case probability = make(1000, 256, 1, row_tier::automatic, FUSEDLOSS_REDUCTION_MEAN);
  probability.kind = loss_kind::probability;
  cases.push_back(probability);
  for (const row_case& c : cases) {
    if (c.tier == row_tier::cluster && !clusters_available()) continue;
    const uint64_t seed = fresh_seed();
    SCOPED_TRACE("seed " + std::to_string(seed) + ": " + c.describe());
    std::mt19937_64 rng(seed);
    const inputs in = make_inputs(c, dtype, rng);
    device_arrays dev(c, in, dtype);
    const bound b = dev.bind(c);
    size_t bytes = 0;
    ASSERT_TRUE(gpu_workspace_bytes(c, dtype, b, &bytes));
    device_buffer workspace(bytes);
    std::vector<std::vector<unsigned char>> first;
    for (int run = 0; run < 2; ++run) {
      dev.poison(c, in);
      ASSERT_TRUE(launch(c, dtype, b, workspace.data(), bytes, nullptr));
      FUSEDLOSS_CUDA_OK(cudaDeviceSynchronize());
      if (run == 0) {
        first = raw(dev);
      } else {
        EXPECT_EQ(raw(dev), first) << "two runs differ";
      }
    }
  }
}

// ------------------------------------------------------------------------------------------------
// More than 2^32 logits.

// Logits (33000, 131072): 4.3e9 elements, 8.6 GB in bfloat16 (17.3 GB in float32), and as much
// gradient; row 32768 starts at element 2^32, row 16384 (bfloat16) or 8192 (float32) at byte 2^32.
// The rows repeat with a period of 61 rows (which divides neither 2^14 nor 2^15, so an offset that
// wraps at 32 bits lands on a row with other values): the reference runs on the 61 distinct rows,
// the GPU's every LSE and loss and sampled gradient rows on both sides of 2^32 are checked against
// it, and the sum against the per-row losses times their multiplicity, within the per-row bounds
// summed.
void expect_huge_batch(fusedloss_dtype dtype) {
  SCOPED_TRACE(fusedloss_dtype_string(dtype));
  const int64_t N = 33000, C = 131072, period = 61;
  const size_t logits_bytes = static_cast<size_t>(N * C) * element_bytes(dtype);
  const size_t needed = 2 * logits_bytes + (size_t{1} << 29);  // logits, gradient, 512 MiB more
  size_t free_bytes = 0, total_bytes = 0;
  FUSEDLOSS_CUDA_OK(cudaMemGetInfo(&free_bytes, &total_bytes));
  if (free_bytes < needed) {
    GTEST_SKIP() << "needs " << needed / (1 << 20)
                 << " MiB of free GPU memory (logits and gradient " << logits_bytes / (1 << 20)
                 << " MiB each), the GPU has " << free_bytes / (1 << 20)
                 << " MiB free: " << (needed - free_bytes) / (1 << 20) << " MiB short";
  }

  // The 61 distinct rows, on the reference: per-row loss, LSE and gradient (upstream 1).
  row_case u;
  u.batch = period;
  u.num_classes = C;
  u.reduction = FUSEDLOSS_REDUCTION_NONE;
  u.ignored = 0.1;
  u.invalid = 0.1;
  const uint64_t seed = fresh_seed();
  SCOPED_TRACE("seed " + std::to_string(seed));
  std::mt19937_64 rng(seed);
  const inputs in = make_inputs(u, dtype, rng);
  const outputs want = run_reference(u, dtype, in);
  const row_bounds b = bounds_of(u, in);

  // The device arrays: the 61 rows copied out by doubling, targets and expected counts repeated.
  device_buffer logits(logits_bytes), grad(logits_bytes);
  ASSERT_NE(logits.data(), nullptr);
  ASSERT_NE(grad.data(), nullptr);
  auto* base = static_cast<unsigned char*>(logits.data());
  const size_t row_bytes = static_cast<size_t>(C) * element_bytes(dtype);
  FUSEDLOSS_CUDA_OK(cudaMemcpy(base, in.logits.data(), period * row_bytes, cudaMemcpyHostToDevice));
  for (int64_t filled = period; filled < N;) {
    const int64_t n = std::min(filled, N - filled);
    FUSEDLOSS_CUDA_OK(
        cudaMemcpy(base + filled * row_bytes, base, n * row_bytes, cudaMemcpyDeviceToDevice));
    filled += n;
  }
  std::vector<double> y(N);
  std::vector<int64_t> multiplicity(period, 0);
  int64_t invalid = 0;
  for (int64_t r = 0; r < N; ++r) {
    y[r] = static_cast<double>(in.y[r % period]);
    ++multiplicity[r % period];
    if (!counted(u, in, r % period) && in.y[r % period] != u.ignore_index) ++invalid;
  }
  const device_buffer targets(buffer(FUSEDLOSS_INT64, y));
  device_buffer lse(N * sizeof(float)), loss(N * sizeof(float)), counter(sizeof(int64_t));
  FUSEDLOSS_CUDA_OK(cudaMemset(grad.data(), 0xFF, logits_bytes));
  FUSEDLOSS_CUDA_OK(cudaMemset(lse.data(), 0xFF, lse.bytes()));
  FUSEDLOSS_CUDA_OK(cudaMemset(counter.data(), 0, sizeof(int64_t)));

  fusedloss_cross_entropy_params p;
  fusedloss_cross_entropy_params_init(&p);
  p.device = FUSEDLOSS_DEVICE_CUDA;
  p.batch = N;
  p.num_classes = C;
  p.logits = logits.data();
  p.logits_dtype = dtype;
  p.targets = targets.data();
  p.targets_dtype = FUSEDLOSS_INT64;
  p.reduction = FUSEDLOSS_REDUCTION_SUM;
  p.loss = loss.data();
  p.lse = lse.data();
  p.grad_logits = grad.data();
  p.invalid_target_count = static_cast<int64_t*>(counter.data());
  fusedloss_error err{};
  size_t bytes = 0;
  ASSERT_EQ(fusedloss_cross_entropy_workspace_size(&p, &bytes, &err), FUSEDLOSS_SUCCESS)
      << err.message;
  device_buffer workspace(bytes);
  ASSERT_EQ(fusedloss_cross_entropy_forward_backward(&p, workspace.data(), bytes, nullptr, &err),
            FUSEDLOSS_SUCCESS)
      << err.message;
  FUSEDLOSS_CUDA_OK(cudaDeviceSynchronize());

  int64_t count = -1;
  ASSERT_EQ(fusedloss_read_and_clear_counter(static_cast<int64_t*>(counter.data()),
                                             FUSEDLOSS_DEVICE_CUDA, nullptr, &count, &err),
            FUSEDLOSS_SUCCESS);
  EXPECT_EQ(count, invalid);
  {
    buffer got_lse = buffer::poisoned(FUSEDLOSS_FLOAT32, N);
    lse.download(got_lse);
    report r("lse");
    for (int64_t i = 0; i < N; ++i) {
      r.value(i, got_lse[i], want.lse[i % period], {b.t[i % period], 0});
    }
  }
  {
    float got = 0;
    FUSEDLOSS_CUDA_OK(cudaMemcpy(&got, loss.data(), sizeof got, cudaMemcpyDeviceToHost));
    double sum = 0, atol = 0;
    for (int64_t k = 0; k < period; ++k) {
      sum += static_cast<double>(multiplicity[k]) * want.loss[k];
      if (counted(u, in, k)) atol += static_cast<double>(multiplicity[k]) * b.scale[k] * b.t[k];
    }
    report r("loss (sum)");
    r.value(0, got, sum, {atol, kReducedRtol});
  }
  {
    const checks::tolerance dt = checks::rounding_tolerance(dtype);
    for (int64_t row : {int64_t{0}, int64_t{1}, int64_t{2}, period, int64_t{8191}, int64_t{8192},
                        int64_t{16383}, int64_t{16384}, int64_t{32767}, int64_t{32768},
                        int64_t{32769}, int64_t{32768} + period, N - 1}) {
      buffer got = buffer::poisoned(dtype, C);
      FUSEDLOSS_CUDA_OK(cudaMemcpy(got.data(),
                                   static_cast<unsigned char*>(grad.data()) + row * row_bytes,
                                   row_bytes, cudaMemcpyDeviceToHost));
      const int64_t k = row % period;
      report r("grad row " + std::to_string(row));
      for (int64_t j = 0; j < C; ++j) {
        const checks::tolerance t =
            b.upstream[k] == 0 ? checks::tolerance{0, 0}
                               : checks::tolerance{dt.atol + b.upstream[k] * b.scale[k] * b.t[k],
                                                   dt.rtol + b.t[k]};
        r.value(j, got[j], want.grad[k * C + j], t);
      }
    }
  }

  // Every row's loss, from a forward under none.
  p.reduction = FUSEDLOSS_REDUCTION_NONE;
  p.grad_logits = nullptr;
  p.lse = nullptr;
  p.invalid_target_count = nullptr;
  ASSERT_EQ(fusedloss_cross_entropy_workspace_size(&p, &bytes, &err), FUSEDLOSS_SUCCESS)
      << err.message;
  device_buffer workspace_none(bytes);
  FUSEDLOSS_CUDA_OK(cudaMemset(loss.data(), 0xFF, loss.bytes()));
  ASSERT_EQ(fusedloss_cross_entropy_forward(&p, workspace_none.data(), bytes, nullptr, &err),
            FUSEDLOSS_SUCCESS)
      << err.message;
  FUSEDLOSS_CUDA_OK(cudaDeviceSynchronize());
  buffer got_loss = buffer::poisoned(FUSEDLOSS_FLOAT32, N);
  loss.download(got_loss);
  report r("loss (none)");
  for (int64_t i = 0; i < N; ++i) {
    const int64_t k = i % period;
    r.value(i, got_loss[i], want.loss[k],
            counted(u, in, k) ? checks::tolerance{b.scale[k] * b.t[k], kLossRtol}
                              : checks::tolerance{0, 0});
  }
}

TEST(RowKernelsHuge, LargeBatchTimesVocabAbove2To32) {
  FUSEDLOSS_REQUIRE_GPU_OR_SKIP();
  for (fusedloss_dtype dtype : {FUSEDLOSS_BFLOAT16, FUSEDLOSS_FLOAT32}) expect_huge_batch(dtype);
}

}  // namespace
