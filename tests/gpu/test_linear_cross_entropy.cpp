// Fused linear + cross-entropy on CUDA against the CPU reference (the same C API, device CPU, on
// float64 copies of the very values the GPU reads): odd shapes, every option, the three
// reductions, bias or none, accumulation, both gradient dtypes, the three calls, and workspaces
// that split the rows into uneven chunks. Outputs start poisoned (every byte 0xFF, a NaN), so a
// value the call fails to write fails the comparison; grad_input's padding columns must keep it,
// as must every output a call does not write. A too-small workspace is refused with nothing
// written.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>
#include <random>
#include <sstream>
#include <string>
#include <vector>

#include "checks.hpp"
#include "fusedloss/fusedloss.hpp"
#include "gpu_support.hpp"

namespace {

namespace checks = fusedloss::checks;
using checks::buffer;
using fusedloss::call;
using fusedloss::gpu_tests::device_buffer;
using fusedloss::gpu_tests::DtypeNames;
using fusedloss::gpu_tests::Dtypes;

constexpr int64_t kCounterStart = 7;  // invalid_target_count before a call: calls add to it
constexpr float kScaleValue = 1.5f;   // *grad_scale_ptr

// ------------------------------------------------------------------------------------------------
// Tolerances, derived once per dtype from u, one ulp of the dtype (2^-23, 2^-10, 2^-7: twice the
// rounding bound, a factor 2 of margin), and its subnormal floor (checks::rounding_tolerance).
//
// The logits. The GEMM accumulates in float32 and rounds each logit once to the dtype, so logit
// z_{r,j} is off by at most t_z,r = u max_j |z_{r,j}| + (H + 2) 2^-24 M_r, M_r the largest
// sum_h |x_{r,h} w_{j,h}| + |b_j| of the row (float32's worst-case accumulation bound).
// t_r = t_z,r + 8e-6 + 2^-22 (max(1, |LSE_r|) + softcap) adds the row kernel's own float32 budget
// (tests/gpu/test_row_kernels.cpp derives it). Soft-capping is 1-Lipschitz, so capped logits and
// the LSE are off by at most t_r too.
//
// Per-row loss: (1 - eps) w_y (LSE - z_y) + eps/V sum_j w_j (LSE - z_j) + lambda LSE^2 moves by at
// most c_r 2 t_r with c_r = (1 - eps) w_y + eps/V W + lambda |LSE_r| (W the weights' total), plus
// float32's relative 8e-6; a factor 2 of margin. z-loss: 2 lambda |LSE| t_r the same way. LSE: t_r.
// Reduced values: the rows' bounds summed (over D under mean), plus 2^-22 relative a chunk for
// each chunk's float32 sum.
//
// dlogits. Each gradient is g_{r,j} = (P p_j - A [j = y] - B c_j) cap'(x_j) with P = up (a + b W +
// 2 lambda LSE), A = up a, B c_j = up b w_j (a = (1 - eps) w_y, b = eps / V, up the row's upstream,
// the mean's 1/D included). p_j carries a relative error of 2 t_r (z_j and the LSE), cap' one of
// 2 t_r / softcap, and the stored value one of u: so |error| <= e_r m_{r,j} with
// m_{r,j} = |up| ((a + b W + 2 lambda |LSE|) p_j + a [j = y] + b w_j) and e_r = 8 t_r (1 + 1/s) +
// 2u (a factor 2 of margin).
//
// The gradient GEMMs contract dlogits with W or X in float32: grad_input's error is at most
// sum_j (e_r + V 2^-24) m_{r,j} |w_{j,h}| plus its own rounding 2u |want|; grad_W's
// sum_r (e_r + N 2^-24) m_{r,j} |x_{r,h}|, and grad_b's with |x| = 1, plus the rounding of the
// running value once a chunk (chunks + 1) u_out (that sum + |initial value|), u_out the gradient
// dtype's ulp (float32's or the input dtype's: per-chunk accumulation in the input's dtype). Every
// bound adds the output dtype's subnormal floor.
constexpr double kUlp32 = 1.0 / (1 << 23);

// ------------------------------------------------------------------------------------------------
// One case.

struct lce_case {
  int64_t n = 7, h = 33, v = 1000;
  int64_t input_padding = 0;  // input_row_stride = H + input_padding (0: passed as 0)
  int64_t grad_padding = 0;   // grad_input_row_stride = H + grad_padding (0: passed as 0)
  bool bias = true;
  bool weight = false;
  bool zero_weight = false;  // every class weight 0: the empty mean of a zero total weight
  int64_t ignore_index = -100;
  double ignored = 0.2;  // fraction of rows whose target is ignore_index
  double invalid = 0.0;  // fraction of rows whose target is neither ignore_index nor a class
  fusedloss_dtype targets_dtype = FUSEDLOSS_INT64;
  double label_smoothing = 0, z_loss = 0, softcap = 0;
  fusedloss_reduction reduction = FUSEDLOSS_REDUCTION_MEAN;
  fusedloss_empty_mean empty_mean = FUSEDLOSS_EMPTY_MEAN_NAN;
  call c = call::forward_backward;
  bool lse_out = true, z_out = false;
  bool grad_input = true, grad_weight = true, grad_bias = true;
  bool grad_in_input_dtype = false;  // grad_linear_dtype: the input's, else float32
  bool accumulate = false;
  float grad_scale = 1.0f;
  bool grad_scale_ptr = false;
  int64_t chunk_rows = 0;  // rows a chunk of the workspace holds; 0: the default query's (all N)

  std::string describe(fusedloss_dtype dtype) const {
    const char* calls[] = {"forward", "backward", "forward_backward"};
    std::ostringstream o;
    o << fusedloss_dtype_string(dtype) << " N=" << n << " H=" << h << " V=" << v
      << " padding=" << input_padding << "/" << grad_padding << " bias=" << bias
      << " weight=" << weight << (zero_weight ? "(zero)" : "") << " ignore_index=" << ignore_index
      << " ignored=" << ignored << " invalid=" << invalid
      << " targets=" << fusedloss_dtype_string(targets_dtype) << " eps=" << label_smoothing
      << " z_loss=" << z_loss << " softcap=" << softcap
      << " reduction=" << fusedloss_reduction_string(reduction)
      << " empty_mean=" << (empty_mean == FUSEDLOSS_EMPTY_MEAN_ZERO ? "zero" : "nan")
      << " call=" << calls[static_cast<int>(c)] << " lse=" << lse_out << " z_out=" << z_out
      << " grads=" << grad_input << grad_weight << grad_bias
      << " grad_dtype=" << (grad_in_input_dtype ? "input" : "float32")
      << " accumulate=" << accumulate << " scale=" << grad_scale << (grad_scale_ptr ? "*1.5" : "")
      << " chunk_rows=" << chunk_rows;
    return o.str();
  }
};

// Shape helpers of a case.
int64_t input_stride(const lce_case& k) { return k.h + k.input_padding; }
int64_t grad_stride(const lce_case& k) { return k.h + k.grad_padding; }
bool none(const lce_case& k) { return k.reduction == FUSEDLOSS_REDUCTION_NONE; }
size_t loss_count(const lce_case& k) { return none(k) ? static_cast<size_t>(k.n) : 1; }
size_t element_bytes(fusedloss_dtype dtype) { return dtype == FUSEDLOSS_FLOAT32 ? 4 : 2; }
bool forward_outputs(const lce_case& k) { return k.c != call::backward; }
bool gradients(const lce_case& k) { return k.c != call::forward; }

// The inputs as stored in the dtype (the GPU's bytes) and as float64 values (the reference's).
struct inputs {
  buffer input, weight, bias, targets, class_weight, grad_loss, scale;
  buffer grad_weight_start, grad_bias_start;  // accumulate: what the gradients hold before
  std::vector<double> x, w, b;                // stored values; x with its padding (NaN)
  std::vector<int64_t> y;
  int64_t invalid = 0;
};

// Random inputs for case `k`, stored in `dtype`.
inputs make_inputs(const lce_case& k, fusedloss_dtype dtype, std::mt19937_64& rng) {
  inputs in;
  std::uniform_real_distribution<double> unit(0.0, 1.0);
  std::uniform_int_distribution<int64_t> any_class(0, k.v - 1);
  // Logits of magnitude ~1: W scaled by 2 / sqrt(H), so each softmax has a few dominant classes.
  const double scale = 2.0 / std::sqrt(static_cast<double>(k.h));
  std::vector<double> x(static_cast<size_t>(k.n * input_stride(k)),
                        std::numeric_limits<double>::quiet_NaN());
  for (int64_t r = 0; r < k.n; ++r) {
    for (int64_t c = 0; c < k.h; ++c) x[r * input_stride(k) + c] = 2 * unit(rng) - 1;
  }
  in.input = buffer(dtype, x);
  in.x = in.input.values();
  in.weight = buffer(dtype, checks::uniform(rng, k.v * k.h, -scale, scale));
  in.w = in.weight.values();
  if (k.bias) {
    in.bias = buffer(dtype, checks::uniform(rng, k.v, -0.5, 0.5));
    in.b = in.bias.values();
  }
  in.y.resize(k.n);
  std::vector<double> stored(k.n);
  for (int64_t r = 0; r < k.n; ++r) {
    const double u = unit(rng);
    int64_t y = any_class(rng);
    if (u < k.ignored) {
      y = k.ignore_index;
    } else if (u < k.ignored + k.invalid) {
      y = r % 2 == 0 ? k.v + r : -1 - r;
    }
    in.y[r] = y;
    stored[r] = static_cast<double>(y);
    if (y != k.ignore_index && (y < 0 || y >= k.v)) ++in.invalid;
  }
  in.targets = buffer(k.targets_dtype, stored);
  if (k.weight) {
    std::vector<double> cw = checks::uniform(rng, k.v, 0.5, 2.0);
    if (k.zero_weight) std::fill(cw.begin(), cw.end(), 0.0);
    in.class_weight = buffer(FUSEDLOSS_FLOAT32, cw);
  }
  in.grad_loss = buffer(FUSEDLOSS_FLOAT32, checks::uniform(rng, loss_count(k), -1.0, 1.0));
  in.scale = buffer(FUSEDLOSS_FLOAT32, {kScaleValue});
  const fusedloss_dtype gdtype = k.grad_in_input_dtype ? dtype : FUSEDLOSS_FLOAT32;
  in.grad_weight_start = buffer(gdtype, checks::uniform(rng, k.v * k.h, -1.0, 1.0));
  in.grad_bias_start = buffer(gdtype, checks::uniform(rng, k.v, -1.0, 1.0));
  return in;
}

// The outputs of one run, read back as values.
struct outputs {
  std::vector<double> loss, lse, z, grad_input, grad_weight, grad_bias;
  int64_t counter = 0;
};

// The params both devices share; the caller points them at its buffers.
fusedloss::linear_cross_entropy_params params_of(const lce_case& k) {
  auto p = fusedloss::make_linear_cross_entropy_params();
  p.batch = k.n;
  p.hidden = k.h;
  p.num_classes = k.v;
  p.input_row_stride = k.input_padding != 0 ? input_stride(k) : 0;
  p.grad_input_row_stride = k.grad_padding != 0 ? grad_stride(k) : 0;
  p.targets_dtype = k.targets_dtype;
  p.ignore_index = k.ignore_index;
  p.label_smoothing = k.label_smoothing;
  p.z_loss = k.z_loss;
  p.softcap = k.softcap;
  p.reduction = k.reduction;
  p.empty_mean = k.empty_mean;
  p.accumulate_grad_linear = k.accumulate ? 1 : 0;
  p.grad_scale = k.grad_scale;
  return p;
}

// Call `c` of the C API.
fusedloss_status call_api(const fusedloss::linear_cross_entropy_params& p, call c, void* ws,
                          size_t bytes, fusedloss_error* err) {
  switch (c) {
    case call::forward:
      return fusedloss_linear_cross_entropy_forward(&p, ws, bytes, nullptr, err);
    case call::backward:
      return fusedloss_linear_cross_entropy_backward(&p, ws, bytes, nullptr, err);
    default:
      return fusedloss_linear_cross_entropy_forward_backward(&p, ws, bytes, nullptr, err);
  }
}

// The CPU reference in float64 on the stored values.
outputs run_reference(const lce_case& k, const inputs& in) {
  auto p = params_of(k);
  p.device = FUSEDLOSS_DEVICE_CPU;
  p.input_dtype = FUSEDLOSS_FLOAT64;
  p.grad_linear_dtype = FUSEDLOSS_FLOAT64;
  buffer x(FUSEDLOSS_FLOAT64, in.x), w(FUSEDLOSS_FLOAT64, in.w), b(FUSEDLOSS_FLOAT64, in.b);
  buffer targets = in.targets, cw = in.class_weight, gl = in.grad_loss, scale = in.scale;
  buffer loss = buffer::poisoned(FUSEDLOSS_FLOAT64, loss_count(k));
  buffer lse = buffer::poisoned(FUSEDLOSS_FLOAT64, k.n);
  buffer z = buffer::poisoned(FUSEDLOSS_FLOAT64, loss_count(k));
  buffer gi = buffer::poisoned(FUSEDLOSS_FLOAT64, k.n * grad_stride(k));
  buffer gw(FUSEDLOSS_FLOAT64, in.grad_weight_start.values());
  buffer gb(FUSEDLOSS_FLOAT64, in.grad_bias_start.values());
  int64_t counter = kCounterStart;
  p.input = x.data();
  p.linear_weight = w.data();
  p.linear_bias = k.bias ? b.data() : nullptr;
  p.targets = targets.data();
  p.weight = k.weight ? static_cast<const float*>(cw.data()) : nullptr;
  p.loss = forward_outputs(k) ? loss.data() : nullptr;
  p.lse = forward_outputs(k) && k.lse_out ? lse.data() : nullptr;
  p.z_loss_out = forward_outputs(k) && k.z_out ? z.data() : nullptr;
  p.grad_input = gradients(k) && k.grad_input ? gi.data() : nullptr;
  p.grad_linear_weight = gradients(k) && k.grad_weight ? gw.data() : nullptr;
  p.grad_linear_bias = gradients(k) && k.grad_bias ? gb.data() : nullptr;
  p.grad_loss = k.c == call::backward ? gl.data() : nullptr;
  p.grad_scale_ptr = k.grad_scale_ptr ? static_cast<const float*>(scale.data()) : nullptr;
  p.invalid_target_count = &counter;
  fusedloss_error err{};
  const fusedloss_status s = call_api(p, k.c, nullptr, 0, &err);
  EXPECT_TRUE(s == FUSEDLOSS_SUCCESS || (s == FUSEDLOSS_INVALID_TARGET && in.invalid > 0))
      << err.message;
  outputs out;
  out.loss = loss.values();
  out.lse = lse.values();
  out.z = z.values();
  out.grad_input = gi.values();
  out.grad_weight = gw.values();
  out.grad_bias = gb.values();
  return out;
}

// The workspace bytes that hold a chunk of `rows` rows: the default query's (all N rows) less the
// rows it does not need. For that budget the query gives back the chunks' balanced size: as many
// chunks as `rows` needs, ceil(N / chunks) rows each.
size_t workspace_for(const fusedloss::linear_cross_entropy_params& p, int64_t rows,
                     size_t row_bytes) {
  fusedloss_error err{};
  size_t full = 0;
  EXPECT_EQ(fusedloss_linear_cross_entropy_workspace_size(&p, &full, &err), FUSEDLOSS_SUCCESS)
      << err.message;
  if (rows == 0 || rows >= p.batch) return full;
  const size_t bytes = full - static_cast<size_t>(p.batch - rows) * row_bytes;
  auto q = p;
  q.max_workspace_bytes = bytes;
  size_t got = 0;
  EXPECT_EQ(fusedloss_linear_cross_entropy_workspace_size(&q, &got, &err), FUSEDLOSS_SUCCESS)
      << err.message;
  const int64_t chunks = (p.batch + rows - 1) / rows;
  const int64_t balanced = (p.batch + chunks - 1) / chunks;
  const size_t want = full - static_cast<size_t>(p.batch - balanced) * row_bytes;
  EXPECT_EQ(got, want) << "a workspace of " << rows << " rows";
  q.max_workspace_bytes = bytes + row_bytes - 1;  // not yet one more row
  EXPECT_EQ(fusedloss_linear_cross_entropy_workspace_size(&q, &got, &err), FUSEDLOSS_SUCCESS);
  EXPECT_EQ(got, want);
  return bytes;
}

// The device buffers of one GPU run, poisoned outputs included.
struct device_run {
  device_buffer input, weight, bias, targets, class_weight, grad_loss, scale, counter;
  device_buffer loss, lse, z, grad_input, grad_weight, grad_bias;
  fusedloss::linear_cross_entropy_params p;
};

// Uploads the inputs, poisons the outputs and points the params at them.
void prepare(device_run& d, const lce_case& k, fusedloss_dtype dtype, const inputs& in) {
  const fusedloss_dtype gdtype = k.grad_in_input_dtype ? dtype : FUSEDLOSS_FLOAT32;
  d.input = device_buffer(in.input);
  d.weight = device_buffer(in.weight);
  d.bias = device_buffer(in.bias);
  d.targets = device_buffer(in.targets);
  d.class_weight = device_buffer(in.class_weight);
  d.grad_loss = device_buffer(in.grad_loss);
  d.scale = device_buffer(in.scale);
  d.counter = device_buffer(buffer(FUSEDLOSS_INT64, {static_cast<double>(kCounterStart)}));
  d.loss = device_buffer(buffer::poisoned(FUSEDLOSS_FLOAT32, loss_count(k)));
  d.lse = device_buffer(buffer::poisoned(FUSEDLOSS_FLOAT32, k.n));
  d.z = device_buffer(buffer::poisoned(FUSEDLOSS_FLOAT32, loss_count(k)));
  d.grad_input = device_buffer(buffer::poisoned(dtype, k.n * grad_stride(k)));
  d.grad_weight =
      device_buffer(k.accumulate ? in.grad_weight_start : buffer::poisoned(gdtype, k.v * k.h));
  d.grad_bias = device_buffer(k.accumulate ? in.grad_bias_start : buffer::poisoned(gdtype, k.v));
  auto& p = d.p;
  p = params_of(k);
  p.device = FUSEDLOSS_DEVICE_CUDA;
  p.input_dtype = dtype;
  p.grad_linear_dtype = gdtype;
  p.input = d.input.data();
  p.linear_weight = d.weight.data();
  p.linear_bias = k.bias ? d.bias.data() : nullptr;
  p.targets = d.targets.data();
  p.weight = k.weight ? static_cast<const float*>(d.class_weight.data()) : nullptr;
  // Every output buffer is given; a call must leave those it does not write as they are.
  p.loss = d.loss.data();
  p.lse = k.lse_out ? d.lse.data() : nullptr;
  p.z_loss_out = k.z_out ? d.z.data() : nullptr;
  p.grad_input = k.grad_input ? d.grad_input.data() : nullptr;
  p.grad_linear_weight = k.grad_weight ? d.grad_weight.data() : nullptr;
  p.grad_linear_bias = k.grad_bias ? d.grad_bias.data() : nullptr;
  // Given to every call (the refusal test runs backward on these params); only backward reads it.
  p.grad_loss = d.grad_loss.data();
  p.grad_scale_ptr = k.grad_scale_ptr ? static_cast<const float*>(d.scale.data()) : nullptr;
  p.invalid_target_count = static_cast<int64_t*>(d.counter.data());
}

// Downloads every output buffer, written or not.
outputs read_back(const device_run& d, const lce_case& k, fusedloss_dtype dtype) {
  const fusedloss_dtype gdtype = k.grad_in_input_dtype ? dtype : FUSEDLOSS_FLOAT32;
  buffer loss = buffer::poisoned(FUSEDLOSS_FLOAT32, loss_count(k));
  buffer lse = buffer::poisoned(FUSEDLOSS_FLOAT32, k.n);
  buffer z = buffer::poisoned(FUSEDLOSS_FLOAT32, loss_count(k));
  buffer gi = buffer::poisoned(dtype, k.n * grad_stride(k));
  buffer gw = buffer::poisoned(gdtype, k.v * k.h);
  buffer gb = buffer::poisoned(gdtype, k.v);
  buffer counter = buffer::poisoned(FUSEDLOSS_INT64, 1);
  d.loss.download(loss);
  d.lse.download(lse);
  d.z.download(z);
  d.grad_input.download(gi);
  d.grad_weight.download(gw);
  d.grad_bias.download(gb);
  d.counter.download(counter);
  outputs out;
  out.loss = loss.values();
  out.lse = lse.values();
  out.z = z.values();
  out.grad_input = gi.values();
  out.grad_weight = gw.values();
  out.grad_bias = gb.values();
  out.counter = static_cast<int64_t>(counter[0]);
  return out;
}

// What the tolerances need of the exact problem: logits, LSEs, upstreams and the m_{r,j}.
struct exact {
  std::vector<double> t;            // t_r
  std::vector<double> e;            // e_r
  std::vector<double> m;            // m_{r,j}, (N, V)
  std::vector<double> coefficient;  // c_r of the per-row loss
  std::vector<double> lse;
  double normaliser = 0;
};

// The exact logits' LSEs and the bounds' ingredients (see Tolerances).
exact exact_of(const lce_case& k, const inputs& in, fusedloss_dtype dtype) {
  const double u = checks::rounding_tolerance(dtype).rtol;
  const double eps = k.label_smoothing, lambda = k.z_loss, s = k.softcap;
  const auto cw = [&](int64_t j) { return k.weight ? in.class_weight[j] : 1.0; };
  double total_weight = 0;
  for (int64_t j = 0; j < k.v; ++j) total_weight += cw(j);
  const auto counted = [&](int64_t y) { return y != k.ignore_index && y >= 0 && y < k.v; };
  exact ex;
  for (int64_t r = 0; r < k.n; ++r) {
    if (counted(in.y[r])) ex.normaliser += cw(in.y[r]);
  }
  ex.t.resize(k.n);
  ex.e.resize(k.n);
  ex.coefficient.resize(k.n);
  ex.lse.resize(k.n);
  ex.m.assign(k.n * k.v, 0.0);
  std::vector<double> z(k.v);
  for (int64_t r = 0; r < k.n; ++r) {
    double z_max = 0, m_max = 0, cap_max = -std::numeric_limits<double>::infinity();
    for (int64_t j = 0; j < k.v; ++j) {
      double acc = k.bias ? in.b[j] : 0.0, magnitude = k.bias ? std::fabs(in.b[j]) : 0.0;
      for (int64_t c = 0; c < k.h; ++c) {
        const double product = in.x[r * input_stride(k) + c] * in.w[j * k.h + c];
        acc += product;
        magnitude += std::fabs(product);
      }
      z_max = std::max(z_max, std::fabs(acc));
      m_max = std::max(m_max, magnitude);
      z[j] = s > 0 ? s * std::tanh(acc / s) : acc;
      cap_max = std::max(cap_max, z[j]);
    }
    double sum = 0;
    for (int64_t j = 0; j < k.v; ++j) sum += std::exp(z[j] - cap_max);
    const double lse = cap_max + std::log(sum);
    ex.lse[r] = lse;
    ex.t[r] = u * z_max + static_cast<double>(k.h + 2) * std::ldexp(1.0, -24) * m_max + 8e-6 +
              std::ldexp(std::max(1.0, std::fabs(lse)) + s, -22);
    ex.e[r] = 8 * ex.t[r] * (1 + (s > 0 ? 1 / s : 0)) + 2 * u;
    const int64_t y = in.y[r];
    if (!counted(y)) continue;
    const double a = (1 - eps) * cw(y), b = eps / static_cast<double>(k.v);
    ex.coefficient[r] = a + b * total_weight + lambda * std::fabs(lse);
    double up = 0;
    const bool mean = k.reduction == FUSEDLOSS_REDUCTION_MEAN;
    if (k.c == call::backward) {
      up = none(k) ? in.grad_loss[r] : in.grad_loss[0];
    } else {
      up = k.grad_scale * (k.grad_scale_ptr ? kScaleValue : 1.0f);
    }
    if (mean) up = ex.normaliser != 0 ? up / ex.normaliser : 0;
    for (int64_t j = 0; j < k.v; ++j) {
      const double p = std::exp(z[j] - lse);
      ex.m[r * k.v + j] =
          std::fabs(up) * ((a + b * total_weight + 2 * lambda * std::fabs(lse)) * p +
                           (j == y ? a : 0.0) + b * cw(j));
    }
  }
  return ex;
}

// Compares one output element, naming it on a mismatch; returns whether it matched.
bool expect_near(double got, double want, double atol, const std::string& what) {
  const checks::tolerance tol{atol, 0.0};
  EXPECT_TRUE(tol.accepts(got, want))
      << what << ": got " << got << ", want " << want << " (atol " << atol << ")";
  return tol.accepts(got, want);
}

// Every output against the reference within its bound; unwritten outputs must stay poisoned.
void compare(const lce_case& k, fusedloss_dtype dtype, const inputs& in, const outputs& got,
             const outputs& want) {
  const exact ex = exact_of(k, in, dtype);
  const fusedloss_dtype gdtype = k.grad_in_input_dtype ? dtype : FUSEDLOSS_FLOAT32;
  const double u = checks::rounding_tolerance(dtype).rtol;
  const double floor = checks::rounding_tolerance(dtype).atol;
  const double u_out = checks::rounding_tolerance(gdtype).rtol;
  const double floor_out = checks::rounding_tolerance(gdtype).atol;
  const int64_t chunk = k.chunk_rows > 0 ? k.chunk_rows : std::max<int64_t>(k.n, 1);
  const double chunks = static_cast<double>((k.n + chunk - 1) / chunk);
  const bool mean = k.reduction == FUSEDLOSS_REDUCTION_MEAN;
  int failures = 0;
  const auto check = [&](double g, double w, double atol, const std::string& what) {
    if (failures < 10 && !expect_near(g, w, atol, what)) ++failures;
  };
  const auto poisoned = [&](double g, const std::string& what) {
    if (failures < 10 && !std::isnan(g)) {
      ADD_FAILURE() << what << " was written (" << g << "), the call must leave it";
      ++failures;
    }
  };

  if (forward_outputs(k)) {
    double loss_bound = 0, z_bound = 0, loss_sum = 0;
    for (int64_t r = 0; r < k.n; ++r) {
      const double loss_atol = 4 * ex.coefficient[r] * ex.t[r];
      const double z_atol = 4 * k.z_loss * std::fabs(ex.lse[r]) * ex.t[r];
      if (none(k)) {
        check(got.loss[r], want.loss[r], loss_atol + 8e-6 * std::fabs(want.loss[r]),
              "loss[" + std::to_string(r) + "]");
        if (k.z_out) {
          check(got.z[r], want.z[r], z_atol + kUlp32 * std::fabs(want.z[r]),
                "z_loss_out[" + std::to_string(r) + "]");
        }
      }
      loss_bound += 4 * ex.coefficient[r] * ex.t[r];
      z_bound += z_atol;
      loss_sum += ex.coefficient[r] * (std::fabs(ex.lse[r]) + 10);
    }
    if (!none(k)) {
      const double divisor = mean && ex.normaliser != 0 ? ex.normaliser : 1.0;
      const double relative = 8e-6 + (chunks + 1) * std::ldexp(1.0, -22);
      check(got.loss[0], want.loss[0],
            (loss_bound + relative * loss_sum) / divisor + relative * std::fabs(want.loss[0]),
            "loss");
      if (k.z_out) {
        check(got.z[0], want.z[0], z_bound / divisor + relative * std::fabs(want.z[0]),
              "z_loss_out");
      }
    }
    for (int64_t r = 0; r < k.n; ++r) {
      if (k.lse_out) {
        check(got.lse[r], want.lse[r], ex.t[r] + kUlp32 * std::fabs(want.lse[r]),
              "lse[" + std::to_string(r) + "]");
      } else {
        poisoned(got.lse[r], "lse[" + std::to_string(r) + "]");
      }
    }
    if (!k.z_out) poisoned(got.z[0], "z_loss_out");
    EXPECT_EQ(got.counter, kCounterStart + in.invalid);
  } else {
    for (size_t i = 0; i < got.loss.size(); ++i) poisoned(got.loss[i], "loss");
    for (int64_t r = 0; r < k.n; ++r) poisoned(got.lse[r], "lse");
    EXPECT_EQ(got.counter, kCounterStart) << "backward counts no invalid targets";
  }

  const bool grads = gradients(k);
  for (int64_t r = 0; r < k.n; ++r) {
    for (int64_t c = 0; c < grad_stride(k); ++c) {
      const int64_t i = r * grad_stride(k) + c;
      const std::string what = "grad_input[" + std::to_string(r) + "][" + std::to_string(c) + "]";
      if (!grads || !k.grad_input || c >= k.h) {
        poisoned(got.grad_input[i], what);
        continue;
      }
      double bound = 0;
      for (int64_t j = 0; j < k.v; ++j) bound += ex.m[r * k.v + j] * std::fabs(in.w[j * k.h + c]);
      bound *= ex.e[r] + static_cast<double>(k.v) * std::ldexp(1.0, -24);
      check(got.grad_input[i], want.grad_input[i],
            bound + 2 * u * std::fabs(want.grad_input[i]) + floor, what);
    }
  }
  const auto start = [&](const buffer& b, int64_t i) { return k.accumulate ? b[i] : 0.0; };
  for (int64_t j = 0; j < k.v; ++j) {
    if (grads && k.grad_bias) {
      double error = 0, magnitude = std::fabs(start(in.grad_bias_start, j));
      for (int64_t r = 0; r < k.n; ++r) {
        error += (ex.e[r] + static_cast<double>(k.n) * std::ldexp(1.0, -24)) * ex.m[r * k.v + j];
        magnitude += ex.m[r * k.v + j];
      }
      check(got.grad_bias[j], want.grad_bias[j],
            error + (chunks + 1) * u_out * magnitude + floor_out,
            "grad_linear_bias[" + std::to_string(j) + "]");
    } else if (!k.accumulate) {
      poisoned(got.grad_bias[j], "grad_linear_bias[" + std::to_string(j) + "]");
    }
    for (int64_t c = 0; c < k.h; ++c) {
      const int64_t i = j * k.h + c;
      const std::string what =
          "grad_linear_weight[" + std::to_string(j) + "][" + std::to_string(c) + "]";
      if (!grads || !k.grad_weight) {
        if (!k.accumulate) poisoned(got.grad_weight[i], what);
        continue;
      }
      double error = 0, magnitude = std::fabs(start(in.grad_weight_start, i));
      for (int64_t r = 0; r < k.n; ++r) {
        const double term = ex.m[r * k.v + j] * std::fabs(in.x[r * input_stride(k) + c]);
        error += (ex.e[r] + static_cast<double>(k.n) * std::ldexp(1.0, -24)) * term;
        magnitude += term;
      }
      check(got.grad_weight[i], want.grad_weight[i],
            error + (chunks + 1) * u_out * magnitude + floor_out, what);
    }
  }
}

template <class Dtype>
class LinearCrossEntropyKernels : public ::testing::Test {};
TYPED_TEST_SUITE(LinearCrossEntropyKernels, Dtypes, DtypeNames);

// Runs case `k` on both devices and compares; also runs the GPU twice and expects the same bits.
void run_case(const lce_case& k, fusedloss_dtype dtype) {
  SCOPED_TRACE(k.describe(dtype));
  std::mt19937_64 rng(static_cast<uint64_t>(k.n * 1000003 + k.h * 1009 + k.v) ^ dtype);
  const inputs in = make_inputs(k, dtype, rng);
  const outputs want = run_reference(k, in);

  device_run d;
  prepare(d, k, dtype, in);
  const size_t bytes =
      workspace_for(d.p, k.chunk_rows, static_cast<size_t>(k.v) * element_bytes(dtype));
  device_buffer workspace(bytes);
  fusedloss_error err{};
  ASSERT_EQ(call_api(d.p, k.c, workspace.data(), bytes, &err), FUSEDLOSS_SUCCESS) << err.message;
  FUSEDLOSS_CUDA_OK(cudaDeviceSynchronize());
  const outputs got = read_back(d, k, dtype);
  compare(k, dtype, in, got, want);

  // The same inputs again: bitwise the same outputs (fixed chunk order, no split-K, no atomics).
  device_run again;
  prepare(again, k, dtype, in);
  ASSERT_EQ(call_api(again.p, k.c, workspace.data(), bytes, &err), FUSEDLOSS_SUCCESS)
      << err.message;
  FUSEDLOSS_CUDA_OK(cudaDeviceSynchronize());
  const auto same = [](const device_buffer& a, const device_buffer& b) {
    return a.raw() == b.raw();
  };
  EXPECT_TRUE(same(d.loss, again.loss) && same(d.lse, again.lse) && same(d.z, again.z));
  EXPECT_TRUE(same(d.grad_input, again.grad_input));
  EXPECT_TRUE(same(d.grad_weight, again.grad_weight) && same(d.grad_bias, again.grad_bias));
}

TYPED_TEST(LinearCrossEntropyKernels, PlainMeanInUnevenChunks) {
  FUSEDLOSS_REQUIRE_GPU_OR_SKIP();
  lce_case k;  // N = 7, H = 33, V = 1000: chunks of 3, 3, 1
  k.chunk_rows = 3;
  run_case(k, TypeParam::value);
}

TYPED_TEST(LinearCrossEntropyKernels, EveryOptionUnderSum) {
  FUSEDLOSS_REQUIRE_GPU_OR_SKIP();
  lce_case k;
  k.n = 33;
  k.h = 7;
  k.v = 4097;
  k.input_padding = 5;
  k.grad_padding = 3;
  k.weight = true;
  k.ignore_index = 3;  // a class: its rows are ignored
  k.label_smoothing = 0.1;
  k.z_loss = 1e-3;
  k.z_out = true;
  k.softcap = 15;
  k.reduction = FUSEDLOSS_REDUCTION_SUM;
  k.grad_scale = 0.5f;
  k.grad_scale_ptr = true;
  k.grad_in_input_dtype = true;
  k.chunk_rows = 7;  // 7 * 4 + 5 (balanced: ceil(33 / 5) = 7)
  run_case(k, TypeParam::value);
}

TYPED_TEST(LinearCrossEntropyKernels, EveryOptionUnderMean) {
  FUSEDLOSS_REQUIRE_GPU_OR_SKIP();
  lce_case k;
  k.n = 33;
  k.h = 33;
  k.v = 1000;
  k.weight = true;
  k.invalid = 0.1;
  k.label_smoothing = 0.2;
  k.z_loss = 1e-2;
  k.z_out = true;
  k.softcap = 5;
  k.grad_scale = 2.0f;
  k.grad_scale_ptr = true;
  run_case(k, TypeParam::value);  // one chunk
}

TYPED_TEST(LinearCrossEntropyKernels, NoneBackwardAccumulatesWithoutBias) {
  FUSEDLOSS_REQUIRE_GPU_OR_SKIP();
  lce_case k;
  k.n = 1000;
  k.h = 33;
  k.v = 7;
  k.bias = false;
  k.reduction = FUSEDLOSS_REDUCTION_NONE;
  k.c = call::backward;
  k.grad_bias = false;
  k.accumulate = true;
  k.chunk_rows = 333;  // four chunks, balanced to 250 rows each
  run_case(k, TypeParam::value);
}

TYPED_TEST(LinearCrossEntropyKernels, NoneForwardBackwardGradInputAlone) {
  FUSEDLOSS_REQUIRE_GPU_OR_SKIP();
  lce_case k;
  k.n = 7;
  k.h = 1000;
  k.v = 33;
  k.reduction = FUSEDLOSS_REDUCTION_NONE;
  k.z_loss = 1e-3;
  k.z_out = true;
  k.grad_weight = false;
  k.grad_bias = false;
  k.grad_padding = 1;
  k.chunk_rows = 1;
  run_case(k, TypeParam::value);
}

TYPED_TEST(LinearCrossEntropyKernels, ForwardAloneWithInvalidTargets) {
  FUSEDLOSS_REQUIRE_GPU_OR_SKIP();
  lce_case k;
  k.n = 7;
  k.h = 4097;
  k.v = 33;
  k.c = call::forward;
  k.invalid = 0.3;
  k.targets_dtype = FUSEDLOSS_INT32;
  k.z_loss = 1e-3;
  k.z_out = true;
  k.chunk_rows = 3;
  run_case(k, TypeParam::value);
}

TYPED_TEST(LinearCrossEntropyKernels, MeanBackwardAccumulatesInTheInputDtype) {
  FUSEDLOSS_REQUIRE_GPU_OR_SKIP();
  lce_case k;
  k.n = 33;
  k.h = 1000;
  k.v = 33;
  k.weight = true;
  k.c = call::backward;
  k.accumulate = true;
  k.grad_in_input_dtype = true;
  k.chunk_rows = 7;
  run_case(k, TypeParam::value);
}

TYPED_TEST(LinearCrossEntropyKernels, SumBackwardFloat32Gradients) {
  FUSEDLOSS_REQUIRE_GPU_OR_SKIP();
  lce_case k;
  k.n = 1000;
  k.h = 7;
  k.v = 33;
  k.reduction = FUSEDLOSS_REDUCTION_SUM;
  k.c = call::backward;
  k.label_smoothing = 0.1;
  k.chunk_rows = 99;
  run_case(k, TypeParam::value);
}

TYPED_TEST(LinearCrossEntropyKernels, OneOfEverything) {
  FUSEDLOSS_REQUIRE_GPU_OR_SKIP();
  for (const fusedloss_reduction reduction :
       {FUSEDLOSS_REDUCTION_NONE, FUSEDLOSS_REDUCTION_MEAN, FUSEDLOSS_REDUCTION_SUM}) {
    lce_case k;
    k.n = 1;
    k.h = 1;
    k.v = 1;
    k.ignored = 0;
    k.reduction = reduction;
    run_case(k, TypeParam::value);
  }
}

TYPED_TEST(LinearCrossEntropyKernels, EmptyMeans) {
  FUSEDLOSS_REQUIRE_GPU_OR_SKIP();
  for (const fusedloss_empty_mean policy : {FUSEDLOSS_EMPTY_MEAN_NAN, FUSEDLOSS_EMPTY_MEAN_ZERO}) {
    lce_case every_row_ignored;
    every_row_ignored.ignored = 1.0;
    every_row_ignored.empty_mean = policy;
    every_row_ignored.z_out = true;
    every_row_ignored.chunk_rows = 3;
    run_case(every_row_ignored, TypeParam::value);

    lce_case zero_total_weight;
    zero_total_weight.weight = true;
    zero_total_weight.zero_weight = true;
    zero_total_weight.empty_mean = policy;
    run_case(zero_total_weight, TypeParam::value);

    lce_case no_rows;  // and the overwritten gradients of W and b are 0
    no_rows.n = 0;
    no_rows.empty_mean = policy;
    run_case(no_rows, TypeParam::value);
  }
}

TYPED_TEST(LinearCrossEntropyKernels, TooSmallWorkspacesAreRefusedWithNothingWritten) {
  FUSEDLOSS_REQUIRE_GPU_OR_SKIP();
  const fusedloss_dtype dtype = TypeParam::value;
  lce_case k;
  k.z_out = true;
  std::mt19937_64 rng(11);
  const inputs in = make_inputs(k, dtype, rng);
  device_run d;
  prepare(d, k, dtype, in);
  const size_t row_bytes = static_cast<size_t>(k.v) * element_bytes(dtype);
  const size_t one_row = workspace_for(d.p, 1, row_bytes);
  device_buffer workspace(one_row + 256);
  fusedloss_error err{};
  for (const call c : {call::forward, call::backward, call::forward_backward}) {
    EXPECT_EQ(call_api(d.p, c, workspace.data(), one_row - 1, &err), FUSEDLOSS_INVALID_ARGUMENT);
    EXPECT_STREQ(err.argument, "workspace");
    EXPECT_EQ(call_api(d.p, c, workspace.at(8), one_row, &err), FUSEDLOSS_INVALID_ARGUMENT);
    EXPECT_STREQ(err.argument, "workspace");
    EXPECT_EQ(call_api(d.p, c, nullptr, one_row, &err), FUSEDLOSS_INVALID_ARGUMENT);
  }
  auto q = d.p;
  q.max_workspace_bytes = one_row - 1;
  size_t bytes = 0;
  EXPECT_EQ(fusedloss_linear_cross_entropy_workspace_size(&q, &bytes, &err),
            FUSEDLOSS_INVALID_ARGUMENT);
  EXPECT_STREQ(err.argument, "max_workspace_bytes");
  FUSEDLOSS_CUDA_OK(cudaDeviceSynchronize());
  const outputs got = read_back(d, k, dtype);
  const auto untouched = [](const std::vector<double>& v) {
    return std::all_of(v.begin(), v.end(), [](double x) { return std::isnan(x); });
  };
  EXPECT_TRUE(untouched(got.loss) && untouched(got.lse) && untouched(got.z));
  EXPECT_TRUE(untouched(got.grad_input) && untouched(got.grad_weight) && untouched(got.grad_bias));
  EXPECT_EQ(got.counter, kCounterStart);
}

}  // namespace
