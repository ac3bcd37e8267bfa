// `fusedloss validate`: the shard checks and linear + cross-entropy's gpu check, with
// cross-entropy's sensitivity to an error in its logits and LSE that their tolerances build on.
#include "cross_entropy_checks.hpp"

#include <algorithm>
#include <cmath>
#include <optional>

#include "call_checks.hpp"

namespace fusedloss::validate {

namespace {

tolerance plus(tolerance t, double atol) { return {t.atol + atol, t.rtol}; }

// How far cross-entropy's outputs can move when every (soft-capped) logit and every row's LSE is
// off by at most t, t << 1, to first order. Row loss a (LSE - z_y) + b sum_c w_c (LSE - z_c) +
// lambda LSE^2, with a = (1 - eps) w_y, b = eps / V and W the weights' total (a + b W <= w_max),
// moves by at most 2 t (a + b W + lambda |LSE|) <= k t, k = 2 (w_max + lambda Lambda), Lambda >=
// |LSE|; loss() allows twice that. The row's gradient up cap' (a (p - onehot) + b (p W - w) +
// 2 lambda LSE p) sums to at most |up| k in absolute value over the row's classes; each p_c =
// exp(z_c - LSE) moves by at most 2t relative (3t allows for e^2t), cap' = 1 - tanh^2(z / s) by
// 2t / s relative and the LSE factor by t, so over the row's classes the gradient moves by at most
// |up| gradient() = 4 |up| k t (1 + 1 / s).
struct ce_sensitivity {
  double k, cap;
  double loss(double t) const { return 2 * k * t; }
  double gradient(double t) const { return 4 * k * t * cap; }
};

ce_sensitivity sensitivity(const inputs& in, double z_loss, double softcap, double lse_bound) {
  const double w_max = in.weight.size() != 0 ? max_abs(in.weight.values()) : 1.0;
  return {2 * (w_max + z_loss * lse_bound), softcap > 0 ? 1 + 1 / softcap : 1.0};
}

// The mean's normaliser: the class weights (1 without) of the rows not ignored (every other
// target of the sweep is a class).
double normaliser_of(const inputs& in, int64_t ignore_index) {
  double d = 0;
  for (const double y : in.targets.values()) {
    if (int64_t(y) != ignore_index) d += in.weight.size() != 0 ? in.weight[size_t(y)] : 1.0;
  }
  return d;
}

// How many rows' losses one loss value adds up: one (none), all (sum), all over D (mean).
double rows_per_loss(fusedloss_reduction r, int64_t rows, double normaliser) {
  if (r == FUSEDLOSS_REDUCTION_NONE) return 1;
  return r == FUSEDLOSS_REDUCTION_SUM ? double(rows) : normaliser > 0 ? rows / normaliser : 0.0;
}

// Each row's upstream gradient, the mean's 1 / D included: backward's grad_loss (the reduced
// loss's for every row) or forward_backward's grad scale times *grad_scale_ptr.
std::vector<double> row_upstreams(call kind, const upstream& up, int64_t rows,
                                  fusedloss_reduction r, double normaliser) {
  std::vector<double> out(rows);
  for (int64_t i = 0; i < rows; ++i) {
    if (kind == call::forward_backward) {
      out[i] = double(up.grad_scale) * up.grad_scale_in_memory;
    } else {
      out[i] = up.grad_loss[r == FUSEDLOSS_REDUCTION_NONE ? i : 0];
    }
    if (r == FUSEDLOSS_REDUCTION_MEAN) out[i] = normaliser > 0 ? out[i] / normaliser : 0.0;
  }
  return out;
}

// The shard path's loss, LSE and gradient against `want`, every logit and LSE off by at most t,
// on top of `rounding` of each output's dtype: the CPU's one rounding on each side, or a device's
// (device_tolerance over the row's V terms, and all rows' for a reduced loss).
verdict judge_shards(const validator& v, const shard_problem& sp, fusedloss_dtype dtype,
                     const outputs& got, const outputs& want, double t, const upstream& up,
                     bool device) {
  const int64_t n = sp.base.batch, vocab = sp.base.num_classes;
  const fusedloss_dtype loss_dtype = loss_dtype_of(dtype);
  const auto rounding = [&](fusedloss_dtype out, const std::vector<double>& values, size_t terms) {
    return device ? device_tolerance(out, values, terms) : checks::rounding_tolerance(out);
  };
  const double d = normaliser_of(sp.in, sp.base.ignore_index);
  const ce_sensitivity s = sensitivity(sp.in, sp.base.z_loss, sp.base.softcap,
                                       max_abs(sp.logits) + std::log(double(vocab)));
  const double rows = rows_per_loss(sp.base.reduction, n, d);
  const size_t loss_terms = vocab * (sp.base.reduction == FUSEDLOSS_REDUCTION_NONE ? 1 : n);
  const double up_max = max_abs(row_upstreams(call::forward_backward, up, 1, sp.base.reduction, d));
  return worse(worse(v.judge(got.loss, want.loss,
                             plus(rounding(loss_dtype, want.loss, loss_terms), rows * s.loss(t))),
                     v.judge(got.lse, want.lse, plus(rounding(loss_dtype, want.lse, vocab), t))),
               v.judge(got.grad, want.grad,
                       plus(rounding(dtype, want.grad, vocab), up_max * s.gradient(t))));
}

}  // namespace

// The shard path on the CPU against the whole rows' call, in float64 or float32 logits. Both
// compute in double; the shard path also stores every summary in the loss dtype (unit roundoff u:
// 2^-53 or 2^-24) up to five times (partial, rescale, and each addition of the SUM all-reduce over
// at most four ranks), its reference logit and the target's once, and both sum the V exponentials
// in their own orders. So the LSE's log-sum is off by at most (V + 5) u, a capped logit by s u, the
// smoothing term's weighted sum by 5 u (<= 2 Lambda W) relative: t = u (V + 8 + Lambda + 2 s)
// bounds them all. Each output is then rounded once on each side (rounding_tolerance).
verdict shard_check(const validator& v, const shard_problem& sp, fusedloss_dtype dtype,
                    rng_t& rng) {
  const upstream up = fused_upstream(rng, 1).fused;
  host_buffers m;
  const outputs want = whole_rows(sp, m, dtype, up);
  const outputs got = v.under_test(shards(sp, m, dtype, up));
  const double u = std::ldexp(1.0, dtype == FUSEDLOSS_FLOAT64 ? -53 : -24);
  const double lse_bound = max_abs(sp.logits) + std::log(double(sp.base.num_classes));
  const double t = u * (double(sp.base.num_classes) + 8 + lse_bound + 2 * sp.base.softcap);
  return judge_shards(v, sp, dtype, got, want, t, up, false);
}

// The shard path on CUDA against the CPU's, both given the same stored logits and both with their
// summaries in float32 and all-reduced here alike. The device computes in float32, the reference
// in double: each row's LSE and capped logits within (V + 32) 2^-24 (1 + Lambda + s), the budget of
// device_tolerance (V float32 exponentials summed, each within a few ulps, the soft-cap's tanhf;
// the summaries' rescale and log one more ulp each), on top of device_tolerance itself.
verdict shard_gpu_check(const validator& v, const checks::device_memory& api,
                        const shard_problem& sp, fusedloss_dtype dtype, rng_t& rng) {
  const upstream up = fused_upstream(rng, 1).fused;
  host_buffers host;
  device_buffers device(api);
  const outputs want = shards(sp, host, dtype, up);
  const outputs got = v.under_test(shards(sp, device, dtype, up));
  const double lse_bound =
      max_abs(checks::round_to(dtype, sp.logits)) + std::log(double(sp.base.num_classes));
  const double t =
      (double(sp.base.num_classes) + 32) * std::ldexp(1.0, -24) * (1 + lse_bound + sp.base.softcap);
  return judge_shards(v, sp, dtype, got, want, t, up, true);
}

namespace {

// Linear + cross-entropy on CUDA against the CPU reference on the same stored values (u_in: one
// ulp of the input dtype; u = 2^-24), bounded per row r as tests/gpu/test_linear_cross_entropy.cpp
// derives it. The GEMM accumulates each logit over H in float32, the bias added in its epilogue:
// within (H + 2) u M_r of exact, M_r the row's largest sum_h |x_h w_h| + |b| (float32's worst-case
// dot product); the chunk buffer stores it in the input dtype, within half an ulp: u_in Z_r with a
// factor 2 of margin, Z_r the row's largest |logit|. The row kernel's float32 adds (V + 32) u (1 +
// |LSE_r| + s) to its LSE and capped logits, as in shard_gpu_check. So t_r = u_in Z_r + (H + 2) u
// M_r + (V + 32) u (1 + |LSE_r| + s) bounds every error of row r that ce_sensitivity takes; the
// loss is bounded with the largest t_r.
//
// Per element, the row's gradient g_c = up cap'_c h_c has |g_c| <= m_c = |up| ((a + b W +
// 2 lambda |LSE|) p_c + a [c = y] + b w_c) (ce_sensitivity's a, b, W), and moves by at most e_r m_c
// with e_r = 8 t_r (1 + 1 / s) + 2 u_in: p_c and the LSE's term by 4 t_r relative, cap' by 2 t_r /
// s, a factor 2 of margin, and the in-place store of g in the input dtype. Then grad_input = g W
// sums V products in float32 (V u of sum_c m_c |w_c|), grad_weight = g^T x and grad_bias, g's
// column sums, sum N rows in float32 and round the running float32 value once a chunk (at most N
// chunks): (2 N + 1) u of sum_r m_r |x_r|. On top, device_tolerance's rounding of each output dtype
// (both sides round once). Each run, with the default workspace and with one that splits the rows
// into chunks (split_budget), must be within these bounds; the row reports the worse.
struct linear_bounds {
  double t = 0;                    // the largest t_r
  ce_sensitivity s{};              // with Lambda the largest |LSE_r| bound
  std::vector<double> e, m, x, w;  // e_r; m_{r,c} per unit |up|, (N, V); |x|, |w| as stored
};

linear_bounds linear_bounds_of(const linear_problem& lp, fusedloss_dtype dtype) {
  const int64_t n = lp.base.batch, h = lp.base.hidden, v = lp.base.num_classes;
  const bool bias = lp.in.linear_bias.size() != 0;
  const std::vector<double> stored = checks::round_to(dtype, lp.pr.logits);
  const std::vector<double> z = lp.product(stored);
  const double u = std::ldexp(1.0, -24), u_in = checks::rounding_tolerance(dtype).rtol;
  const double cap = lp.base.softcap, eps = lp.base.label_smoothing, lambda = lp.base.z_loss;
  const std::vector<double> cw = lp.in.weight.values(), y = lp.in.targets.values();
  const auto weight = [&](int64_t c) { return cw.empty() ? 1.0 : cw[c]; };
  double total_weight = 0, lse_bound = 0;
  for (int64_t c = 0; c < v; ++c) total_weight += weight(c);
  linear_bounds b;
  b.e.resize(n);
  b.m.assign(n * v, 0.0);
  for (int64_t i = 0; i < (n + v) * h; ++i) (i < n * h ? b.x : b.w).push_back(std::fabs(stored[i]));
  for (int64_t r = 0; r < n; ++r) {
    double m_r = 0, z_r = 0, top = -INFINITY, sum = 0;
    std::vector<double> capped(v);
    for (int64_t c = 0; c < v; ++c) {
      double magnitude = bias ? std::fabs(stored[(n + v) * h + c]) : 0.0;
      for (int64_t k = 0; k < h; ++k) magnitude += b.x[r * h + k] * b.w[c * h + k];
      m_r = std::max(m_r, magnitude);
      z_r = std::max(z_r, std::fabs(z[r * v + c]));
      capped[c] = cap > 0 ? cap * std::tanh(z[r * v + c] / cap) : z[r * v + c];
      top = std::max(top, capped[c]);
    }
    for (int64_t c = 0; c < v; ++c) sum += std::exp(capped[c] - top);
    const double lse = top + std::log(sum);
    lse_bound = std::max(lse_bound, std::fabs(lse));
    const double t =
        u_in * z_r + double(h + 2) * u * m_r + (double(v) + 32) * u * (1 + std::fabs(lse) + cap);
    b.t = std::max(b.t, t);
    b.e[r] = 8 * t * (cap > 0 ? 1 + 1 / cap : 1.0) + 2 * u_in;
    const int64_t target = int64_t(y[r]);
    if (target == lp.base.ignore_index) continue;  // a zero gradient on both sides
    const double a = (1 - eps) * weight(target), bw = eps / double(v);
    for (int64_t c = 0; c < v; ++c) {
      b.m[r * v + c] =
          (a + bw * total_weight + 2 * lambda * std::fabs(lse)) * std::exp(capped[c] - lse) +
          (c == target ? a : 0.0) + bw * weight(c);
    }
  }
  b.s = sensitivity(lp.in, lambda, cap, lse_bound);
  return b;
}

// `values[first, first + count)`, or all of them when they are too few (so that judge reports the
// count).
std::vector<double> slice(const std::vector<double>& values, size_t first, size_t count) {
  if (first + count > values.size()) return values;
  return {values.begin() + first, values.begin() + first + count};
}

verdict judge_linear_gradient(const validator& v, const linear_problem& lp, fusedloss_dtype dtype,
                              const linear_bounds& b, const outputs& got, const outputs& want,
                              call kind, const upstream& up) {
  const size_t n = lp.base.batch, h = lp.base.hidden, c = lp.base.num_classes;
  const double u = std::ldexp(1.0, -24);
  const std::vector<double> ups = row_upstreams(kind, up, lp.base.batch, lp.base.reduction,
                                                normaliser_of(lp.in, lp.base.ignore_index));
  std::vector<double> input(n * h), weight(c * h), bias(c);
  for (size_t r = 0; r < n; ++r) {
    for (size_t j = 0; j < c; ++j) {
      const double m = std::fabs(ups[r]) * b.m[r * c + j];
      const double by_class = (b.e[r] + double(c) * u) * m;
      const double by_row = (b.e[r] + (2.0 * n + 1) * u) * m;
      for (size_t k = 0; k < h; ++k) {
        input[r * h + k] += by_class * b.w[j * h + k];
        weight[j * h + k] += by_row * b.x[r * h + k];
      }
      bias[j] += by_row;
    }
  }
  const auto judge = [&](size_t first, const std::vector<double>& bounds, fusedloss_dtype out) {
    const std::vector<double> w = slice(want.grad, first, bounds.size());
    const std::vector<double> g =
        got.grad.size() == want.grad.size() ? slice(got.grad, first, bounds.size()) : got.grad;
    return v.judge(g, w, device_tolerance(out, w, 0), bounds);
  };
  verdict r = worse(judge(0, input, dtype), judge(n * h, weight, FUSEDLOSS_FLOAT32));
  if (lp.in.linear_bias.size() != 0) r = worse(r, judge((n + c) * h, bias, FUSEDLOSS_FLOAT32));
  return r;
}

}  // namespace

verdict linear_gpu_check(const validator& v, const checks::device_memory& api,
                         const linear_problem& lp, fusedloss_dtype dtype, rng_t& rng) {
  const problem& pr = lp.pr;
  const upstream up{upstream_values(rng, pr.loss_count())};
  const fused_upstream split(rng, pr.loss_count());
  const auto run = [&](memory& m, call kind, const upstream& u, bool chunks) {
    return run_linear(lp.base, lp.in, m, kind, dtype, pr.logits, u, chunks);
  };
  host_buffers host;
  const outputs want_f = run(host, call::forward, up, false);
  const outputs want_b = run(host, call::backward, up, false);
  const outputs want_fb = run(host, call::backward, split.separate, false);
  const linear_bounds b = linear_bounds_of(lp, dtype);
  const int64_t n = lp.base.batch;
  const double rows = rows_per_loss(pr.reduction, n, normaliser_of(lp.in, lp.base.ignore_index));
  const size_t loss_terms = pr.terms * (pr.loss_count() == 1 ? pr.losses : 1);
  const tolerance loss_tol =
      plus(device_tolerance(FUSEDLOSS_FLOAT32, want_f.loss, loss_terms), rows * b.s.loss(b.t));
  std::optional<verdict> worst;
  for (const bool chunks : {false, true}) {
    device_buffers device(api);
    const outputs f = v.under_test(run(device, call::forward, up, chunks));
    const outputs bw = v.under_test(run(device, call::backward, up, chunks));
    const outputs fb = v.under_test(run(device, call::forward_backward, split.fused, chunks));
    const verdict this_one = worse(
        worse(v.judge(f.loss, want_f.loss, loss_tol), v.judge(fb.loss, want_f.loss, loss_tol)),
        worse(judge_linear_gradient(v, lp, dtype, b, bw, want_b, call::backward, up),
              judge_linear_gradient(v, lp, dtype, b, fb, want_fb, call::forward_backward,
                                    split.fused)));
    worst = worst ? worse(*worst, this_one) : this_one;
  }
  return *worst;
}

}  // namespace fusedloss::validate
