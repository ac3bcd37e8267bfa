// Fused linear + cross-entropy's GPU test harness (linear_cross_entropy_harness.hpp): the bounds
// every output is compared within, derived below, and the driver that runs a case on both devices.
#include <cuda_runtime_api.h>
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>
#include <random>
#include <string>
#include <vector>

#include "checks.hpp"
#include "fusedloss/fusedloss.hpp"
#include "gpu_support.hpp"
#include "linear_cross_entropy_harness.hpp"

namespace fusedloss::gpu_tests::linear_cross_entropy {
namespace {

// ------------------------------------------------------------------------------------------------
// Tolerances, derived once per dtype from u, one ulp of the dtype (2^-23, 2^-10, 2^-7: twice the
// rounding bound, a factor 2 of margin), and its subnormal floor (checks::rounding_tolerance).
//
// The logits. The GEMM accumulates in float32 and rounds each logit once to the dtype, so logit
// z_{r,j} is off by at most t_z,r = u max_j |z_{r,j}| + (H + 2) 2^-24 M_r, M_r the largest
// sum_h |x_{r,h} w_{j,h}| + |b_j| of the row (float32's worst-case accumulation bound).
// t_r = t_z,r + 8e-6 + 2^-22 (max(1, |LSE_r|) + softcap) adds the row kernel's own float32 budget
// (tests/gpu/row_kernels_harness.hpp derives it). Soft-capping is 1-Lipschitz, so capped logits and
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

}  // namespace

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

}  // namespace fusedloss::gpu_tests::linear_cross_entropy
