// `fusedloss validate`: verdicts, and the validator's judging and printing of the table.
#include "table.hpp"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <filesystem>

namespace fusedloss::validate {

double max_abs(const std::vector<double>& values) {
  double m = 0;
  for (double x : values) {
    if (std::isfinite(x)) m = std::max(m, std::fabs(x));
  }
  return m;
}

verdict worse(const verdict& a, const verdict& b) {
  if (a.pass != b.pass) return a.pass ? b : a;
  return b.excess > a.excess ? b : a;
}

std::string default_golden_dir() {
  std::error_code ec;
  const std::filesystem::path exe = std::filesystem::read_symlink("/proc/self/exe", ec);
  if (!ec) {
    const std::filesystem::path installed =
        exe.parent_path().parent_path() / FUSEDLOSS_INSTALLED_GOLDEN_DIR;
    if (std::filesystem::is_directory(installed, ec)) return installed.string();
  }
  return FUSEDLOSS_GOLDEN_DIR;
}

verdict validator::judge(const std::vector<double>& got, const std::vector<double>& want,
                         tolerance tol, const std::vector<double>& bounds) const {
  tol = {tol.atol * s_.tolerance_scale, tol.rtol * s_.tolerance_scale};
  const auto bound = [&](size_t i) {
    return i < bounds.size() ? bounds[i] * s_.tolerance_scale : 0.0;
  };
  const tolerance widest{tol.atol + max_abs(bounds) * s_.tolerance_scale, tol.rtol};
  verdict v{checks::max_abs_error(got, want), widest, got.size() == want.size(), 0, ""};
  if (!v.pass)
    v.note = "got " + std::to_string(got.size()) + " values, want " + std::to_string(want.size());
  for (size_t i = 0; i < std::min(got.size(), want.size()); ++i) {
    const tolerance own{tol.atol + bound(i), tol.rtol};
    const bool same = got[i] == want[i] || (std::isnan(got[i]) && std::isnan(want[i]));
    if (!own.accepts(got[i], want[i])) {
      if (v.pass) v.note = format("element %zu: got %.17g, want %.17g", i, got[i], want[i]);
      v.pass = false;
      v.excess = INFINITY;
    } else if (!same) {
      v.excess = std::max(v.excess,
                          std::fabs(got[i] - want[i]) / (own.atol + own.rtol * std::fabs(want[i])));
    }
  }
  return v;
}

outputs validator::under_test(outputs o) const {
  for (std::vector<double>* values : {&o.loss, &o.grad, &o.lse}) {
    for (double& x : *values) x *= 1 + s_.perturb;
  }
  return o;
}

void validator::fail(const label& l, const std::string& why) {
  print(l, nullptr, "FAIL (" + why + ")");
  ++failed_;
}

void validator::header() const {
  row("check", "loss", "options", "shape", "dtype", "max error", "tolerance", "result");
}

int validator::finish(double seconds) const {
  std::printf("validate (%.1f s): %d passed, %d failed\n", seconds, passed_, failed_);
  return failed_ > 0 ? 1 : 0;
}

void validator::row(const std::string& check, const std::string& loss, const std::string& options,
                    const std::string& shape, const std::string& dtype, const std::string& error,
                    const std::string& tol, const std::string& result) {
  std::printf("%-10s  %-13s  %-62s  %-7s  %-8s  %-9s  %-23s  %s\n", check.c_str(), loss.c_str(),
              options.c_str(), shape.c_str(), dtype.c_str(), error.c_str(), tol.c_str(),
              result.c_str());
}

void validator::print(const label& l, const verdict* v, const std::string& result) const {
  std::string error = "-", tol = "-";
  if (v != nullptr) {
    error = format("%.2e", v->max_error);
    tol = v->tol.rtol == 0 ? format("abs %.1e", v->tol.atol)
                           : format("abs %.1e rel %.1e", v->tol.atol, v->tol.rtol);
  }
  row(l.check, l.loss, l.options, l.shape, l.dtype, error, tol, result);
}

}  // namespace fusedloss::validate
