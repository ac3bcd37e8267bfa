// `fusedloss validate`: the fd, fused, product, gpu and golden checks, and the tolerances they
// judge by.
#include "call_checks.hpp"

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <limits>
#include <optional>
#include <string>

namespace fusedloss::validate {

namespace {

constexpr double kEps = std::numeric_limits<double>::epsilon();

// Central differences with h = 2^-20 (about 1e-6; a power of two, so that inputs on on_grid's grid
// stay on a grid when moved by it) have two errors. Truncation, h^2/6 |f'''|, stays below 1e-12:
// every loss here is smooth with O(1) third derivatives on logits in [-3, 3] (weights, upstream
// gradients and the soft-cap's 1/s^2 are O(1) too; linear + cross-entropy's, through logits linear
// in each input with O(1) slopes, add up over at most 33 rows, as S below does). Rounding: f is a
// double-precision sum of terms of total magnitude S; each of f(x +- h) is off by a few eps*S, and
// their difference is divided by 2h, so about eps*S/h (2e-10 for S = 1). Over many seeds the
// largest error seen is 2 eps*S/h; the tolerance allows 32, and --perturb 1e-3 still fails every
// check whose gradient is not all 0.
constexpr double kFdStep = 0x1p-20;
tolerance fd_tolerance(double magnitude) {
  return {1e-12 + 32 * kEps * std::max(magnitude, 1.0) / kFdStep, 0};
}

// forward_backward against forward and backward: the same double-precision formulas, possibly
// evaluated in another order, so they agree to a few ulps of the largest value compared.
tolerance same_formula_tolerance(const std::vector<double>& want) {
  const double rtol = checks::rounding_tolerance(FUSEDLOSS_FLOAT64).rtol;
  return {rtol * max_abs(want), rtol};
}

std::string golden_shape(const checks::golden_case& c) {
  if (!c.has("batch")) return c.scalar("numel", "-");
  const std::string s = c.scalar("spatial", "1");
  return c.scalar("batch") + "x" + c.scalar("num_classes") + (s == "1" ? "" : "x" + s);
}

}  // namespace

std::vector<double> upstream_values(rng_t& rng, size_t count) {
  std::vector<double> g = checks::uniform(rng, count, 0.5, 2);
  for (double& x : g) x *= rng() % 4 == 0 ? -1 : 1;
  return checks::round_to(FUSEDLOSS_FLOAT32, g);
}

verdict fd_check(const validator& v, const problem& pr, rng_t& rng) {
  const upstream up{upstream_values(rng, pr.loss_count())};
  // The forward is the oracle here: scaling loss and gradient together is invisible to finite
  // differences, so only the gradient is the backend under test.
  const auto f = [&](const std::vector<double>& x) {
    host_buffers m;
    const std::vector<double> loss = pr.run(m, call::forward, FUSEDLOSS_FLOAT64, x, up).loss;
    double sum = 0;
    for (size_t i = 0; i < loss.size(); ++i) sum += up.grad_loss[i] * loss[i];
    return sum;
  };
  host_buffers m;
  const std::vector<double> loss = pr.run(m, call::forward, FUSEDLOSS_FLOAT64, pr.logits, up).loss;
  double magnitude = 0;
  for (size_t i = 0; i < loss.size(); ++i) magnitude += std::fabs(up.grad_loss[i] * loss[i]);

  const outputs got = v.under_test(pr.run(m, call::backward, FUSEDLOSS_FLOAT64, pr.logits, up));
  std::vector<double> want = checks::finite_difference(f, pr.logits, kFdStep);
  for (size_t i = 0; i < want.size(); ++i) {
    if (pr.padding[i]) want[i] = NAN;  // never written, so still poisoned
  }
  return v.judge(got.grad, want, fd_tolerance(magnitude));
}

verdict fused_check(const validator& v, const problem& pr, rng_t& rng) {
  const fused_upstream up(rng, pr.loss_count());
  host_buffers m;
  const auto run = [&](call kind, const upstream& u) {
    return v.under_test(pr.run(m, kind, FUSEDLOSS_FLOAT64, pr.logits, u));
  };
  const outputs fb = run(call::forward_backward, up.fused);
  const outputs f = run(call::forward, up.separate);
  const outputs b = run(call::backward, up.separate);
  return worse(v.judge(fb.loss, f.loss, same_formula_tolerance(f.loss)),
               v.judge(fb.grad, b.grad, same_formula_tolerance(b.grad)));
}

verdict product_check(const validator& v, const linear_problem& lp) {
  host_buffers m;
  const upstream unused{};
  const std::vector<double> want =
      lp.whole.run(m, call::forward, FUSEDLOSS_FLOAT64, lp.product(lp.pr.logits), unused).loss;
  const outputs got =
      v.under_test(lp.pr.run(m, call::forward, FUSEDLOSS_FLOAT64, lp.pr.logits, unused));
  return v.judge(got.loss, want, same_formula_tolerance(want));
}

tolerance device_tolerance(fusedloss_dtype out, const std::vector<double>& want, size_t terms) {
  const tolerance r = checks::rounding_tolerance(out);
  const double u = std::ldexp(1.0, -24);
  return {r.atol + double(terms) * u * max_abs(want), r.rtol + 32 * u};
}

verdict gpu_check(const validator& v, const checks::device_memory& api, const problem& pr,
                  fusedloss_dtype dtype, rng_t& rng) {
  const upstream up{upstream_values(rng, pr.loss_count())};
  const fused_upstream split(rng, pr.loss_count());
  host_buffers host;
  device_buffers device(api);
  const auto run = [&](memory& m, call kind, const upstream& u) {
    return pr.run(m, kind, dtype, pr.logits, u);
  };
  const outputs want_f = run(host, call::forward, up);
  const outputs want_b = run(host, call::backward, up);
  const outputs want_fb = run(host, call::backward, split.separate);
  const outputs f = v.under_test(run(device, call::forward, up));
  const outputs b = v.under_test(run(device, call::backward, up));
  const outputs fb = v.under_test(run(device, call::forward_backward, split.fused));
  // A loss value sums `terms` logits' contributions; a reduction sums all of those.
  const size_t loss_terms = pr.terms * (pr.loss_count() == 1 ? pr.losses : 1);
  const tolerance loss_tol = device_tolerance(FUSEDLOSS_FLOAT32, want_f.loss, loss_terms);
  return worse(
      worse(v.judge(f.loss, want_f.loss, loss_tol), v.judge(fb.loss, want_f.loss, loss_tol)),
      worse(v.judge(b.grad, want_b.grad, device_tolerance(dtype, want_b.grad, pr.terms)),
            v.judge(fb.grad, want_fb.grad, device_tolerance(dtype, want_fb.grad, pr.terms))));
}

void golden_checks(validator& v) {
  namespace fs = std::filesystem;
  const std::string& dir = v.options().golden_dir;
  std::vector<fs::path> files;
  std::error_code ec;
  for (const auto& entry : fs::directory_iterator(dir, ec)) {
    if (entry.path().extension() == ".golden") files.push_back(entry.path());
  }
  std::sort(files.begin(), files.end());
  if (files.empty()) {
    v.fail({"golden", "-", dir, "-", "-"}, ec ? ec.message() : "no *.golden files");
    return;
  }
  for (const fs::path& file : files) {
    std::vector<checks::golden_case> cases;
    try {
      cases = checks::read_golden_file(file.string());
    } catch (const std::exception& e) {
      v.fail({"golden", "-", file.filename().string(), "-", "-"}, e.what());
      continue;
    }
    for (checks::golden_case& c : cases) {
      for (auto& [key, values] : c.arrays) {
        if (key.rfind("expect_", 0) != 0) continue;
        for (double& x : values) x /= 1 + v.options().perturb;
      }
      v.check({"golden", c.loss, c.name, golden_shape(c), c.scalar("logits_dtype", "-")}, [&] {
        std::optional<verdict> worst;
        for (const checks::golden_result& r : checks::run_golden_case(c, FUSEDLOSS_DEVICE_CPU)) {
          const verdict this_one{r.max_error, r.tol, r.pass, r.pass ? r.max_error : INFINITY,
                                 r.call + " " + r.output + ": " + r.detail};
          worst = worst ? worse(*worst, this_one) : this_one;
        }
        return worst.value_or(verdict{});
      });
    }
  }
}

}  // namespace fusedloss::validate
