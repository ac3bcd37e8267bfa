// Vocabulary-parallel cross-entropy's shard calls on the GPU. W ranks (W in 1..4, uneven slices,
// some one class wide) are simulated in one process: each rank's partial runs on the GPU, the
// summaries' MAX and SUM all-reduces run on the host (in float32, in rank order, as a collective
// would), and rescale and finish run on the GPU again. The results are compared with
//   (a) the same steps on the CPU path (the double-precision reference, host buffers), and
//   (b) the whole-row reference fusedloss_cross_entropy_forward_backward on the concatenated
//       logits: loss, LSE, z-loss and the concatenated gradient.
// Outputs start poisoned (every byte 0xFF, a NaN), so a value a kernel fails to write fails the
// comparison, and padding columns (in place: the logits' own padding) must keep their bytes.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <numeric>
#include <random>
#include <sstream>
#include <string>
#include <vector>

#include "checks.hpp"
#include "fusedloss/fusedloss.h"
#include "gpu_support.hpp"

namespace {

namespace checks = fusedloss::checks;
using checks::buffer;
using fusedloss::gpu_tests::device_buffer;
using fusedloss::gpu_tests::DtypeNames;
using fusedloss::gpu_tests::Dtypes;

const double kNaN = std::numeric_limits<double>::quiet_NaN();
constexpr int64_t kCounterStart = 7;  // invalid_target_count before finish: finish adds to it
constexpr int kFields = FUSEDLOSS_SHARD_SUMMARY_FIELDS;

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
// One problem.

struct vp_case {
  int64_t batch = 12;
  std::vector<int64_t> widths = {9, 1, 14, 13};  // the ranks' slices, in vocabulary order
  int64_t row_padding = 0;                       // row_stride = width + row_padding (0: default)
  int64_t lead = 0;        // elements the logits start past their aligned allocation (GPU)
  int64_t grad_lead = -1;  // the gradient's; -1: lead
  fusedloss_dtype index_dtype = FUSEDLOSS_INT64;
  fusedloss_reduction reduction = FUSEDLOSS_REDUCTION_MEAN;
  fusedloss_empty_mean empty_mean = FUSEDLOSS_EMPTY_MEAN_NAN;
  bool weight = false;
  int64_t ignore_index = -100;
  double ignored = 0.0;  // fraction of rows whose target is ignore_index
  double invalid = 0.0;  // fraction of rows whose target is out of [0, V) and not ignore_index
  double label_smoothing = 0.0;
  double z_loss = 0.0;
  bool z_loss_out = false;
  double softcap = 0.0;
  bool lse_out = true;
  bool loss_out = true;
  bool grad = true;  // finish writes the gradient (else: loss only)
  float grad_scale = 1.0f;
  bool grad_scale_ptr = false;  // also times *grad_scale_ptr = 1.5
  bool in_place = false;        // grad_logits == logits
  // Row 1: a NaN in the last rank's slice; row 2: a +inf in rank 0's; row 3: every logit of the
  // last rank's slice -inf; row 4: -inf on a third of its classes, the target's too.
  bool non_finite = false;

  int64_t vocab() const { return std::accumulate(widths.begin(), widths.end(), int64_t{0}); }
  int ranks() const { return static_cast<int>(widths.size()); }
  int64_t start(int k) const {
    return std::accumulate(widths.begin(), widths.begin() + k, int64_t{0});
  }
  int64_t stride(int k) const { return widths[static_cast<size_t>(k)] + row_padding; }
  size_t loss_count() const {
    return reduction == FUSEDLOSS_REDUCTION_NONE ? static_cast<size_t>(batch) : 1;
  }
  std::string describe() const {
    std::ostringstream o;
    o << "N=" << batch << " widths={";
    for (size_t k = 0; k < widths.size(); ++k) o << (k ? "," : "") << widths[k];
    o << "} padding=" << row_padding << " lead=" << lead << "/" << grad_lead
      << " targets=" << fusedloss_dtype_string(index_dtype)
      << " reduction=" << fusedloss_reduction_string(reduction)
      << " empty_mean=" << (empty_mean == FUSEDLOSS_EMPTY_MEAN_ZERO ? "zero" : "nan")
      << " weight=" << weight << " ignore_index=" << ignore_index << " ignored=" << ignored
      << " invalid=" << invalid << " eps=" << label_smoothing << " z_loss=" << z_loss
      << (z_loss_out ? "(out)" : "") << " softcap=" << softcap << " lse_out=" << lse_out
      << " loss_out=" << loss_out << " grad=" << grad << " scale=" << grad_scale
      << (grad_scale_ptr ? "*1.5" : "") << " in_place=" << in_place << " non_finite=" << non_finite;
    return o.str();
  }
};

size_t element_bytes(fusedloss_dtype dtype) { return dtype == FUSEDLOSS_FLOAT32 ? 4 : 2; }

// The whole problem's inputs, rounded to their dtypes once; the ranks' slices are cut from them.
struct inputs {
  std::vector<double> x;  // (N, V), as stored
  std::vector<int64_t> y;
  std::vector<double> w;  // V class weights (1 without weight)
  buffer targets;
  int64_t invalid = 0;
};

inputs make_inputs(const vp_case& c, fusedloss_dtype dtype, std::mt19937_64& rng) {
  const int64_t N = c.batch, V = c.vocab();
  std::uniform_real_distribution<double> unit(0.0, 1.0), logit(-6.0, 6.0);
  inputs in;
  in.x = checks::round_to(dtype, checks::uniform(rng, static_cast<size_t>(N * V), -6.0, 6.0));
  in.w = c.weight ? checks::round_to(FUSEDLOSS_FLOAT32,
                                     checks::uniform(rng, static_cast<size_t>(V), 0.5, 2.0))
                  : std::vector<double>(static_cast<size_t>(V), 1.0);
  const std::vector<int64_t> out_of_range = {V, V + 1000, -1, -7, int64_t{1} << 33};
  in.y.resize(static_cast<size_t>(N));
  for (int64_t r = 0; r < N; ++r) {
    // Row r's target lies in rank r % W's slice, so every rank owns some.
    const int k = static_cast<int>(r % c.ranks());
    std::uniform_int_distribution<int64_t> in_slice(c.start(k), c.start(k) + c.widths[k] - 1);
    const double u = unit(rng);
    int64_t y = in_slice(rng);
    if (u < c.ignored) {
      y = c.ignore_index;
    } else if (u < c.ignored + c.invalid) {
      const bool int32 = c.index_dtype == FUSEDLOSS_INT32;
      y = out_of_range[static_cast<size_t>(in.invalid) % (int32 ? 4 : out_of_range.size())];
      ++in.invalid;
    }
    in.y[static_cast<size_t>(r)] = y;
  }
  if (c.non_finite) {
    const auto X = [&](int64_t r, int64_t cls) -> double& {
      return in.x[static_cast<size_t>(r * V + cls)];
    };
    const int last = c.ranks() - 1;
    const double inf = std::numeric_limits<double>::infinity();
    if (N > 1) X(1, c.start(last)) = kNaN;
    if (N > 2) X(2, c.widths[0] - 1) = inf;
    for (int64_t j = 0; N > 3 && j < c.widths[static_cast<size_t>(last)]; ++j) {
      X(3, c.start(last) + j) = -inf;
    }
    for (int64_t j = 0; N > 4 && j < V; ++j) {
      if (j % 3 == 0 || j == in.y[4]) X(4, j) = -inf;
    }
  }
  std::vector<double> stored(in.y.begin(), in.y.end());
  in.targets = buffer(c.index_dtype, stored);
  return in;
}

// Rank k's slice of the logits (padding NaN: a kernel that reads it turns its row NaN) and of the
// weights.
buffer slice_logits(const vp_case& c, const inputs& in, fusedloss_dtype dtype, int k) {
  const int64_t V = c.vocab(), s = c.stride(k), w = c.widths[static_cast<size_t>(k)];
  std::vector<double> v(static_cast<size_t>(c.batch * s), kNaN);
  for (int64_t r = 0; r < c.batch; ++r) {
    for (int64_t j = 0; j < w; ++j) {
      v[static_cast<size_t>(r * s + j)] = in.x[static_cast<size_t>(r * V + c.start(k) + j)];
    }
  }
  return buffer(dtype, v);
}
buffer slice_weights(const vp_case& c, const inputs& in, int k) {
  const auto b = in.w.begin() + c.start(k);
  return buffer(FUSEDLOSS_FLOAT32, std::vector<double>(b, b + c.widths[static_cast<size_t>(k)]));
}

// ------------------------------------------------------------------------------------------------
// The shard calls of every rank on one device, with the all-reduces on the host.

struct rank_outputs {
  buffer summary_partial;  // after partial, before any all-reduce
  buffer loss, lse, z, grad;
  int64_t counter = 0;
  fusedloss_status finish = FUSEDLOSS_SUCCESS;
};

// The all-reduces of the summaries (float32 values, rank order). MAX propagates a NaN.
void all_reduce_max(std::vector<buffer>& s, int64_t batch) {
  for (int64_t r = 0; r < batch; ++r) {
    float m = -std::numeric_limits<float>::infinity();
    for (const buffer& b : s) {
      const float v = static_cast<const float*>(b.data())[r];
      m = std::isnan(m) || std::isnan(v) ? NAN : std::max(m, v);
    }
    for (buffer& b : s) static_cast<float*>(b.data())[r] = m;
  }
}
void all_reduce_sum(std::vector<buffer>& s, int64_t batch) {
  const int64_t first = FUSEDLOSS_SHARD_SUMMARY_SUM_EXP * batch;
  for (int64_t i = first; i < kFields * batch; ++i) {
    float total = 0.0f;
    for (const buffer& b : s) total += static_cast<const float*>(b.data())[i];
    for (buffer& b : s) static_cast<float*>(b.data())[i] = total;
  }
}

struct shard_run {
  std::vector<rank_outputs> ranks;
  std::string failure;  // a refused call, or empty
};

shard_run run_shards(const vp_case& c, const inputs& in, fusedloss_dtype dtype, bool gpu) {
  const int W = c.ranks();
  const int64_t N = c.batch;
  const size_t e = element_bytes(dtype);
  const fusedloss_device device = gpu ? FUSEDLOSS_DEVICE_CUDA : FUSEDLOSS_DEVICE_CPU;
  shard_run out;
  out.ranks.resize(static_cast<size_t>(W));

  // Host arrays per rank, and their device copies on the GPU path.
  std::vector<buffer> logits(W), weight(W), summary(W), loss(W), lse(W), z(W), grad(W), count(W);
  const buffer scale(FUSEDLOSS_FLOAT32, {1.5});
  for (int k = 0; k < W; ++k) {
    logits[k] = slice_logits(c, in, dtype, k);
    weight[k] = slice_weights(c, in, k);
    summary[k] = buffer::poisoned(FUSEDLOSS_FLOAT32, static_cast<size_t>(kFields * N));
    loss[k] = buffer::poisoned(FUSEDLOSS_FLOAT32, c.loss_count());
    lse[k] = buffer::poisoned(FUSEDLOSS_FLOAT32, static_cast<size_t>(N));
    z[k] = buffer::poisoned(FUSEDLOSS_FLOAT32, c.loss_count());
    grad[k] = buffer::poisoned(dtype, static_cast<size_t>(N * c.stride(k)));
    count[k] = buffer(FUSEDLOSS_INT64, {static_cast<double>(kCounterStart)});
  }
  const size_t lead = static_cast<size_t>(c.lead) * e;
  const size_t grad_lead = static_cast<size_t>(c.grad_lead < 0 ? c.lead : c.grad_lead) * e;
  std::vector<device_buffer> d_logits, d_weight, d_summary, d_loss, d_lse, d_z, d_grad, d_count,
      d_workspace;
  device_buffer d_targets, d_scale;
  if (gpu) {
    d_targets = device_buffer(in.targets);
    d_scale = device_buffer(scale);
    for (int k = 0; k < W; ++k) {
      d_logits.emplace_back(logits[k], lead);
      d_weight.emplace_back(weight[k]);
      d_summary.emplace_back(summary[k]);
      d_loss.emplace_back(loss[k]);
      d_lse.emplace_back(lse[k]);
      d_z.emplace_back(z[k]);
      d_grad.emplace_back(grad[k], grad_lead);
      d_count.emplace_back(count[k]);
    }
  }
  std::vector<fusedloss_cross_entropy_shard_params> params(static_cast<size_t>(W));
  for (int k = 0; k < W; ++k) {
    fusedloss_cross_entropy_shard_params& p = params[static_cast<size_t>(k)];
    fusedloss_cross_entropy_shard_params_init(&p);
    const auto at = [&](buffer& h, std::vector<device_buffer>& d, size_t offset = 0) -> void* {
      return gpu ? d[static_cast<size_t>(k)].at(offset) : h.data();
    };
    p.device = device;
    p.batch = N;
    p.num_classes = c.widths[static_cast<size_t>(k)];
    p.vocab_start = c.start(k);
    p.vocab_size = c.vocab();
    p.row_stride = c.row_padding > 0 ? c.stride(k) : 0;
    p.logits = at(logits[k], d_logits, gpu ? lead : 0);
    p.logits_dtype = dtype;
    p.targets = gpu ? d_targets.data() : in.targets.data();
    p.targets_dtype = c.index_dtype;
    p.weight = c.weight ? static_cast<const float*>(at(weight[k], d_weight)) : nullptr;
    p.ignore_index = c.ignore_index;
    p.label_smoothing = c.label_smoothing;
    p.z_loss = c.z_loss;
    p.softcap = c.softcap;
    p.reduction = c.reduction;
    p.empty_mean = c.empty_mean;
    p.summary = at(summary[k], d_summary);
    p.loss = c.loss_out ? at(loss[k], d_loss) : nullptr;
    p.lse = c.lse_out ? at(lse[k], d_lse) : nullptr;
    p.z_loss_out = c.z_loss_out ? at(z[k], d_z) : nullptr;
    p.grad_logits = !c.grad      ? nullptr
                    : c.in_place ? const_cast<void*>(p.logits)
                                 : at(grad[k], d_grad, gpu ? grad_lead : 0);
    p.grad_scale = c.grad_scale;
    p.grad_scale_ptr =
        c.grad_scale_ptr ? static_cast<const float*>(gpu ? d_scale.data() : scale.data()) : nullptr;
    p.invalid_target_count = static_cast<int64_t*>(at(count[k], d_count));
    size_t bytes = 0;
    fusedloss_error err{};
    if (fusedloss_cross_entropy_shard_workspace_size(&p, &bytes, &err) != FUSEDLOSS_SUCCESS) {
      out.failure = std::string("workspace_size: ") + err.message;
      return out;
    }
    if (!gpu && bytes != 0) out.failure = "the CPU path asks for a workspace";
    if (gpu) d_workspace.emplace_back(bytes);
  }
  using step_fn = fusedloss_status (*)(const fusedloss_cross_entropy_shard_params*, void*, size_t,
                                       void*, fusedloss_error*);
  const auto step = [&](step_fn fn, const char* name, int k) {
    fusedloss_error err{};
    void* ws = gpu ? d_workspace[static_cast<size_t>(k)].data() : nullptr;
    const size_t bytes = gpu ? d_workspace[static_cast<size_t>(k)].bytes() : 0;
    const fusedloss_status s = fn(&params[static_cast<size_t>(k)], ws, bytes, nullptr, &err);
    if (s != FUSEDLOSS_SUCCESS && !(s == FUSEDLOSS_INVALID_TARGET && !gpu)) {
      out.failure = std::string(name) + ": " + err.message;
    }
    return s;
  };
  const auto download_summaries = [&] {
    if (!gpu) return;
    for (int k = 0; k < W; ++k) d_summary[k].download(summary[k]);
  };
  const auto upload_summaries = [&] {
    if (!gpu) return;
    for (int k = 0; k < W; ++k) {
      cudaMemcpy(d_summary[k].data(), summary[k].data(), summary[k].size_bytes(),
                 cudaMemcpyHostToDevice);
    }
  };

  for (int k = 0; k < W; ++k) step(fusedloss_cross_entropy_shard_partial, "partial", k);
  download_summaries();
  for (int k = 0; k < W; ++k) out.ranks[k].summary_partial = summary[k];
  all_reduce_max(summary, N);
  upload_summaries();
  for (int k = 0; k < W; ++k) step(fusedloss_cross_entropy_shard_rescale, "rescale", k);
  download_summaries();
  all_reduce_sum(summary, N);
  upload_summaries();
  for (int k = 0; k < W; ++k) {
    out.ranks[k].finish = step(fusedloss_cross_entropy_shard_finish, "finish", k);
  }
  if (gpu && cudaDeviceSynchronize() != cudaSuccess) out.failure = "a kernel failed";
  for (int k = 0; k < W; ++k) {
    rank_outputs& o = out.ranks[k];
    if (gpu) {
      d_loss[k].download(loss[k]);
      d_lse[k].download(lse[k]);
      d_z[k].download(z[k]);
      if (c.in_place) {
        d_logits[k].download(grad[k], lead);
      } else {
        d_grad[k].download(grad[k], grad_lead);
      }
      d_count[k].download(count[k]);
    } else if (c.in_place) {
      grad[k] = logits[k];
    }
    o.loss = loss[k];
    o.lse = lse[k];
    o.z = z[k];
    o.grad = grad[k];
    o.counter = static_cast<int64_t>(count[k][0]);
  }
  return out;
}

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

// Expects got ~ want element by element, naming the first few mismatches; `extra_atol`, when
// given, adds an absolute allowance per element.
void expect_close(const std::vector<double>& got, const std::vector<double>& want,
                  const checks::tolerance& tol, const std::string& what,
                  const std::vector<double>& extra_atol = {}) {
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

// Rank k's gradient rows (without padding), then the whole rows' gradient as the ranks' slices.
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

// Runs the case on both paths and the whole-row reference, and compares everything.
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

template <class Dtype>
class VocabParallelKernels : public ::testing::Test {};
TYPED_TEST_SUITE(VocabParallelKernels, Dtypes, DtypeNames);

const std::vector<std::vector<int64_t>> kSlicings = {{37}, {20, 17}, {1, 18, 18}, {9, 1, 14, 13}};
const fusedloss_reduction kReductions[] = {FUSEDLOSS_REDUCTION_NONE, FUSEDLOSS_REDUCTION_MEAN,
                                           FUSEDLOSS_REDUCTION_SUM};

}  // namespace

// One to four ranks, uneven slices (one a single class wide), every reduction, no options.
TYPED_TEST(VocabParallelKernels, EveryRankCountAndReduction) {
  FUSEDLOSS_REQUIRE_GPU_OR_SKIP();
  uint64_t seed = 1;
  for (const auto& widths : kSlicings) {
    for (const fusedloss_reduction reduction : kReductions) {
      vp_case c;
      c.widths = widths;
      c.reduction = reduction;
      check_case(c, TypeParam::value, seed++);
    }
  }
}

// Each option alone, then all of them together (class weights, an ignore_index that is a class,
// label smoothing, z-loss with its output, soft-cap, int32 targets, both grad scales).
TYPED_TEST(VocabParallelKernels, EveryOption) {
  FUSEDLOSS_REQUIRE_GPU_OR_SKIP();
  uint64_t seed = 100;
  std::vector<vp_case> cases;
  vp_case c;
  c.widths = {11, 1, 25};
  cases.push_back(c);
  cases.back().weight = true;
  cases.push_back(c);
  cases.back().label_smoothing = 0.1;
  cases.push_back(c);
  cases.back().label_smoothing = 0.2;
  cases.back().weight = true;
  cases.push_back(c);
  cases.back().z_loss = 1e-3;
  cases.back().z_loss_out = true;
  cases.push_back(c);
  cases.back().softcap = 4.0;
  cases.push_back(c);
  cases.back().ignored = 0.3;
  cases.back().ignore_index = 12;  // a class: its rows are ignored, not counted
  cases.push_back(c);
  cases.back().grad_scale = 0.5f;
  cases.back().grad_scale_ptr = true;
  for (const auto& widths : {std::vector<int64_t>{20, 17}, std::vector<int64_t>{9, 1, 14, 13}}) {
    for (const fusedloss_reduction reduction : kReductions) {
      vp_case all;
      all.widths = widths;
      all.batch = 16;
      all.reduction = reduction;
      all.weight = true;
      all.ignore_index = 3;
      all.ignored = 0.25;
      all.index_dtype = FUSEDLOSS_INT32;
      all.label_smoothing = 0.1;
      all.z_loss = 1e-3;
      all.z_loss_out = true;
      all.softcap = 5.0;
      all.grad_scale = 0.5f;
      all.grad_scale_ptr = true;
      cases.push_back(all);
    }
  }
  for (const vp_case& k : cases) check_case(k, TypeParam::value, seed++);
}

// A row stride past the slice (padding untouched), misaligned starts (the first elements one by
// one, the gradient's alignment different from the logits'), and the gradient in place.
TYPED_TEST(VocabParallelKernels, StridesAlignmentAndInPlace) {
  FUSEDLOSS_REQUIRE_GPU_OR_SKIP();
  uint64_t seed = 200;
  for (const bool in_place : {false, true}) {
    for (const int64_t lead : {0, 1}) {
      vp_case c;
      c.widths = {40, 1, 23, 64};
      c.row_padding = 3;
      c.lead = lead;
      c.in_place = in_place;
      c.label_smoothing = 0.1;
      c.weight = true;
      c.softcap = 6.0;
      check_case(c, TypeParam::value, seed++);
    }
  }
  vp_case c;
  c.widths = {24, 48};
  c.row_padding = 8;  // whole vectors a row, so that the vector paths run
  c.lead = 1;
  c.grad_lead = 0;  // the gradient's boundary falls elsewhere: one by one
  c.label_smoothing = 0.1;
  c.weight = true;
  check_case(c, TypeParam::value, seed++);
  c.lead = 0;
  c.grad_lead = -1;
  c.z_loss = 1e-2;
  c.z_loss_out = true;
  check_case(c, TypeParam::value, seed++);
}

// NaN, +inf and -inf logits: the NaN reaches every rank through the MAX all-reduce, an all -inf
// shard adds nothing (its zero sum stays zero when rescaled), a -inf target makes the loss +inf.
TYPED_TEST(VocabParallelKernels, NonFiniteLogits) {
  FUSEDLOSS_REQUIRE_GPU_OR_SKIP();
  uint64_t seed = 250;
  for (const int options : {0, 1, 2}) {
    vp_case c;
    c.widths = {11, 1, 25};
    c.reduction = FUSEDLOSS_REDUCTION_NONE;
    c.non_finite = true;
    c.z_loss_out = true;
    if (options == 1) {
      c.weight = true;
      c.label_smoothing = 0.1;
      c.z_loss = 1e-3;
    } else if (options == 2) {
      c.softcap = 5.0;
    }
    check_case(c, TypeParam::value, seed++);
  }
}

// finish without grad_logits: the losses alone, nothing else written.
TYPED_TEST(VocabParallelKernels, LossOnlyFinish) {
  FUSEDLOSS_REQUIRE_GPU_OR_SKIP();
  uint64_t seed = 300;
  for (const fusedloss_reduction reduction : kReductions) {
    vp_case c;
    c.widths = {5, 30, 2};
    c.reduction = reduction;
    c.grad = false;
    c.label_smoothing = 0.05;
    c.z_loss = 1e-3;
    c.z_loss_out = true;
    check_case(c, TypeParam::value, seed++);
  }
}

// Out-of-range targets: ignored like ignore_index, and counted by the vocab_start == 0 rank only.
TYPED_TEST(VocabParallelKernels, InvalidTargetsCountedOnce) {
  FUSEDLOSS_REQUIRE_GPU_OR_SKIP();
  uint64_t seed = 400;
  for (const fusedloss_dtype index : {FUSEDLOSS_INT32, FUSEDLOSS_INT64}) {
    for (const fusedloss_reduction reduction : kReductions) {
      vp_case c;
      c.batch = 24;
      c.widths = {10, 1, 7, 12};
      c.index_dtype = index;
      c.reduction = reduction;
      c.invalid = 0.3;
      c.ignored = 0.2;
      c.weight = true;
      c.label_smoothing = 0.1;
      check_case(c, TypeParam::value, seed++);
    }
  }
}

// Every row ignored: the mean is the empty-mean value (written, not left alone) and every gradient
// exactly 0; the sum is 0.
TYPED_TEST(VocabParallelKernels, EveryRowIgnored) {
  FUSEDLOSS_REQUIRE_GPU_OR_SKIP();
  uint64_t seed = 500;
  for (const fusedloss_reduction reduction : kReductions) {
    for (const auto policy : {FUSEDLOSS_EMPTY_MEAN_NAN, FUSEDLOSS_EMPTY_MEAN_ZERO}) {
      vp_case c;
      c.widths = {6, 9};
      c.reduction = reduction;
      c.empty_mean = policy;
      c.ignored = 1.0;
      c.z_loss = 1e-3;
      c.z_loss_out = true;
      SCOPED_TRACE(c.describe());
      check_case(c, TypeParam::value, seed);
      std::mt19937_64 rng(seed++);
      const inputs in = make_inputs(c, TypeParam::value, rng);
      const shard_run gpu = run_shards(c, in, TypeParam::value, true);
      ASSERT_TRUE(gpu.failure.empty()) << gpu.failure;
      for (int k = 0; k < c.ranks(); ++k) {
        const rank_outputs& o = gpu.ranks[static_cast<size_t>(k)];
        for (const double g : rows_of(c, o.grad, k)) ASSERT_EQ(g, 0.0) << "rank " << k;
        if (reduction == FUSEDLOSS_REDUCTION_NONE) continue;
        const bool nan =
            reduction == FUSEDLOSS_REDUCTION_MEAN && policy == FUSEDLOSS_EMPTY_MEAN_NAN;
        // A NaN the kernel wrote, not the poison's.
        float loss = 0, z = 0;
        std::memcpy(&loss, o.loss.data(), sizeof loss);
        std::memcpy(&z, o.z.data(), sizeof z);
        const buffer poison = buffer::poisoned(FUSEDLOSS_FLOAT32, 1);
        EXPECT_NE(std::memcmp(o.loss.data(), poison.data(), sizeof loss), 0);
        EXPECT_NE(std::memcmp(o.z.data(), poison.data(), sizeof z), 0);
        if (nan) {
          EXPECT_TRUE(std::isnan(loss) && std::isnan(z));
        } else {
          EXPECT_EQ(loss, 0.0f);
          EXPECT_EQ(z, 0.0f);
        }
      }
    }
  }
}

// Zero rows: every step succeeds and launches nothing that writes a row, and a reduced loss is
// still written (a sum of 0, a mean of the empty-mean value).
TYPED_TEST(VocabParallelKernels, ZeroRows) {
  FUSEDLOSS_REQUIRE_GPU_OR_SKIP();
  for (const fusedloss_reduction reduction : kReductions) {
    for (const auto policy : {FUSEDLOSS_EMPTY_MEAN_NAN, FUSEDLOSS_EMPTY_MEAN_ZERO}) {
      vp_case c;
      c.batch = 0;
      c.widths = {3, 4};
      c.reduction = reduction;
      c.empty_mean = policy;
      c.z_loss = 1e-3;
      c.z_loss_out = true;
      SCOPED_TRACE(c.describe());
      std::mt19937_64 rng(600);
      const inputs in = make_inputs(c, TypeParam::value, rng);
      const shard_run gpu = run_shards(c, in, TypeParam::value, true);
      ASSERT_TRUE(gpu.failure.empty()) << gpu.failure;
      const shard_run cpu = run_shards(c, in, TypeParam::value, false);
      ASSERT_TRUE(cpu.failure.empty()) << cpu.failure;
      if (reduction == FUSEDLOSS_REDUCTION_NONE) continue;
      for (size_t k = 0; k < gpu.ranks.size(); ++k) {
        for (const auto* pair : {&gpu.ranks[k].loss, &gpu.ranks[k].z}) {
          const buffer poison = buffer::poisoned(FUSEDLOSS_FLOAT32, 1);
          EXPECT_NE(std::memcmp(pair->data(), poison.data(), 4), 0) << "not written";
        }
        expect_close(gpu.ranks[k].loss.values(), cpu.ranks[k].loss.values(), {0, 0}, "loss");
        expect_close(gpu.ranks[k].z.values(), cpu.ranks[k].z.values(), {0, 0}, "z_loss");
      }
    }
  }
}

// A workspace smaller than the query says (or none) is refused by every step, nothing written.
TYPED_TEST(VocabParallelKernels, WorkspaceTooSmallIsRefused) {
  FUSEDLOSS_REQUIRE_GPU_OR_SKIP();
  const fusedloss_dtype dtype = TypeParam::value;
  const int64_t N = 8, C = 16;
  std::mt19937_64 rng(700);
  const buffer logits(dtype, checks::uniform(rng, N * C, -6.0, 6.0));
  const buffer targets(FUSEDLOSS_INT64, checks::class_indices(rng, N, C));
  const buffer summary = buffer::poisoned(FUSEDLOSS_FLOAT32, kFields * N);
  const buffer rows = buffer::poisoned(FUSEDLOSS_FLOAT32, N);
  const buffer grad = buffer::poisoned(dtype, N * C);
  device_buffer d_logits(logits), d_targets(targets), d_summary(summary), d_loss(rows), d_lse(rows),
      d_grad(grad);
  for (const fusedloss_reduction reduction : {FUSEDLOSS_REDUCTION_MEAN, FUSEDLOSS_REDUCTION_SUM}) {
    fusedloss_cross_entropy_shard_params p;
    fusedloss_cross_entropy_shard_params_init(&p);
    p.device = FUSEDLOSS_DEVICE_CUDA;
    p.batch = N;
    p.num_classes = C;
    p.vocab_start = 0;
    p.vocab_size = C;
    p.logits = d_logits.data();
    p.logits_dtype = dtype;
    p.targets = d_targets.data();
    p.targets_dtype = FUSEDLOSS_INT64;
    p.reduction = reduction;
    p.summary = d_summary.data();
    p.loss = d_loss.data();
    p.lse = d_lse.data();
    p.grad_logits = d_grad.data();
    size_t bytes = 0;
    ASSERT_EQ(fusedloss_cross_entropy_shard_workspace_size(&p, &bytes, nullptr), FUSEDLOSS_SUCCESS);
    ASSERT_GT(bytes, 8u);
    device_buffer workspace(bytes);
    for (const auto fn :
         {fusedloss_cross_entropy_shard_partial, fusedloss_cross_entropy_shard_rescale,
          fusedloss_cross_entropy_shard_finish}) {
      fusedloss_error err{};
      EXPECT_EQ(fn(&p, workspace.data(), bytes - 8, nullptr, &err), FUSEDLOSS_INVALID_ARGUMENT);
      EXPECT_EQ(fn(&p, nullptr, 0, nullptr, &err), FUSEDLOSS_INVALID_ARGUMENT);
    }
    FUSEDLOSS_CUDA_OK(cudaDeviceSynchronize());
    EXPECT_EQ(d_summary.raw(), device_buffer(summary).raw()) << "summary written";
    EXPECT_EQ(d_loss.raw(), device_buffer(rows).raw()) << "loss written";
    EXPECT_EQ(d_lse.raw(), device_buffer(rows).raw()) << "lse written";
    EXPECT_EQ(d_grad.raw(), device_buffer(grad).raw()) << "gradient written";
  }
}

// A vocabulary of ~5000 over three uneven ranks (the widest slice 16-byte rows of float32, so
// its vectors run four in flight; the others misaligned), with and without the options.
TYPED_TEST(VocabParallelKernels, LargeVocabulary) {
  FUSEDLOSS_REQUIRE_GPU_OR_SKIP();
  uint64_t seed = 800;
  for (const bool options : {false, true}) {
    vp_case c;
    c.batch = 4;
    c.widths = {4104, 601, 303};
    if (options) {
      c.weight = true;
      c.label_smoothing = 0.1;
      c.z_loss = 1e-3;
      c.z_loss_out = true;
      c.softcap = 8.0;
      c.reduction = FUSEDLOSS_REDUCTION_SUM;
    }
    check_case(c, TypeParam::value, seed++);
  }
}

// Shards wide enough for every streaming loop in 16-bit dtypes too (LargeVocabulary's 4104 classes
// are 513 vectors there): 17003 classes run the 4-vector loops (which need more than 768 vectors a
// row past the head) twice and the class weights' 2-vector loops four times, 8997 them once and
// twice, both then the one-vector remainder. Odd widths (the second shard starts at an odd class)
// give the rows different heads (0, 5, 2 and 0, 3, 6 elements in 16 bits), so the weights' loads
// are vectors on the first row and one by one on the others. Three rows: no options, label
// smoothing alone, label smoothing with class weights and the soft-cap.
TYPED_TEST(VocabParallelKernels, WideShardsReachEveryLoop) {
  FUSEDLOSS_REQUIRE_GPU_OR_SKIP();
  uint64_t seed = 900;
  for (const int options : {0, 1, 2}) {
    vp_case c;
    c.batch = 3;
    c.widths = {17003, 8997};
    if (options == 0) {
      c.reduction = FUSEDLOSS_REDUCTION_NONE;
    } else if (options == 1) {
      c.label_smoothing = 0.1;
    } else {
      c.label_smoothing = 0.2;
      c.weight = true;
      c.softcap = 8.0;
      c.reduction = FUSEDLOSS_REDUCTION_SUM;
    }
    check_case(c, TypeParam::value, seed++);
  }
}
