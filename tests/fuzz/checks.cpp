// The checks of one call's result, out of line (checks.hpp says what each checks).
#include "checks.hpp"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>
#include <string>
#include <vector>

namespace fuzz {

void check_workspace_untouched(const fuzz_case& f, const std::vector<unsigned char>& workspace) {
  f.require(std::all_of(workspace.begin(), workspace.end(),
                        [](unsigned char x) { return x == kWorkspaceFill; }),
            "the workspace was written");
}

void check_error(const fuzz_case& f, fusedloss_status status, const fusedloss_error& err) {
  if (!f.use_err) return;
  int filled;  // read as an int: a status the call never wrote need not be an enumerator
  std::memcpy(&filled, &err.status, sizeof filled);
  f.require(filled == status, "err.status differs from the returned status");
  if (status == FUSEDLOSS_SUCCESS) {
    f.require(err.argument == nullptr && err.message[0] == '\0', "success left an error behind");
    return;
  }
  f.require(err.argument != nullptr, "a refusal names no argument");
  f.require(std::memchr(err.message, '\0', sizeof err.message) != nullptr, "unterminated message");
  f.require(std::strstr(err.message, err.argument) != nullptr,
            std::string("the message does not name ") + err.argument + ": " + err.message);
}

int64_t row_class(const fuzz_case& f, const block& targets, int64_t r) {
  const int64_t y = targets.index(r);
  if (y == f.ignore_index) return -1;
  return y >= 0 && y < f.classes ? y : -2;
}

int64_t invalid_targets(const fuzz_case& f, const block& targets) {
  if (!f.rows || !f.index_targets) return 0;
  int64_t invalid = 0;
  for (int64_t r = 0; r < f.count; ++r) invalid += row_class(f, targets, r) == -2;
  return invalid;
}

double normaliser(const fuzz_case& f, const buffers& b) {
  if (!f.rows || !f.index_targets) return static_cast<double>(f.count);
  double d = 0;
  for (int64_t r = 0; r < f.count; ++r) {
    const int64_t y = row_class(f, b.targets, r);
    if (y >= 0) d += f.ce_weights ? b.weight.value(y) : 1.0;
  }
  return d;
}

writes expected_writes(const fuzz_case& f, fusedloss::call c, const buffers& b) {
  writes w;
  w.loss.assign(b.loss.count, 0);
  w.z_loss.assign(b.z_loss.count, 0);
  w.lse.assign(b.lse_is_input ? 0 : b.lse.count, 0);
  const block& grad = b.grad_view();
  w.grad.assign(grad.count, 0);
  if (c != fusedloss::call::backward) {
    std::fill_n(w.loss.begin(), std::min(f.loss_values(), b.loss.count), 1);
    std::fill_n(w.z_loss.begin(), std::min(f.loss_values(), b.z_loss.count), 1);
    std::fill(w.lse.begin(), w.lse.end(), 1);
  }
  if (c != fusedloss::call::forward && grad.given) {
    // Element i, or class k of row r = (n, s) at n * grad_stride + k * S + s.
    for (int64_t r = 0; r < f.count; ++r) {
      if (!f.rows) {
        w.grad[r] = 1;
        continue;
      }
      const int64_t base = (r / f.spatial) * f.grad_stride + r % f.spatial;
      for (int64_t k = 0; k < f.classes; ++k) w.grad[base + k * f.spatial] = 1;
    }
  }
  return w;
}

void check_outputs(const fuzz_case& f, fusedloss::call c, const buffers& before,
                   const buffers& after, unsigned char poison) {
  const writes w = expected_writes(f, c, after);
  const auto check = [&](const block& got, const std::vector<char>& written, const char* what,
                         const block* padding_from) {
    for (int64_t i = 0; i < static_cast<int64_t>(written.size()); ++i) {
      const bool ok = written[i] ? !got.poisoned(i, poison)
                      : padding_from != nullptr
                          ? std::memcmp(got.at(i), padding_from->at(i), got.width()) == 0
                          : got.poisoned(i, poison);
      if (!ok) {
        f.fail_with(std::string(what) + "[" + std::to_string(i) + "] " +
                    (written[i] ? "was not written" : "was written, but is not the call's"));
      }
    }
  };
  check(after.loss, w.loss, "loss", nullptr);
  check(after.z_loss, w.z_loss, "z_loss_out", nullptr);
  check(after.lse, w.lse, "lse", nullptr);
  check(after.grad_view(), w.grad, "grad_logits", after.in_place ? &before.logits : nullptr);

  const auto was = before.named(), is = after.named();
  for (size_t k = 0; k < was.size(); ++k) {
    const block* b = is[k].second;
    const bool output = b == &after.loss || b == &after.z_loss || b == &after.grad ||
                        b == &after.counter || (b == &after.lse && !after.lse_is_input) ||
                        (b == &after.logits && after.in_place && c != fusedloss::call::forward);
    f.require(output || was[k].second->bytes == b->bytes,
              std::string("input ") + is[k].first + " changed");
  }
  if (after.counter.given) {
    const int64_t added = c != fusedloss::call::backward ? invalid_targets(f, after.targets) : 0;
    f.require(after.counter.index(0) == before.counter.index(0) + added,
              "invalid_target_count is " + std::to_string(after.counter.index(0)) + ", not " +
                  std::to_string(before.counter.index(0)) + " + " + std::to_string(added));
  }
}

void check_same_bits(const fuzz_case& f, const buffers& first, const buffers& second) {
  const auto a = first.named(), b = second.named();
  for (size_t k = 0; k < a.size(); ++k) {
    const block& x = *a[k].second;
    const block& y = *b[k].second;
    const bool poisoned = &x == &first.loss || &x == &first.z_loss || &x == &first.grad ||
                          (&x == &first.lse && !first.lse_is_input);
    if (!poisoned) {
      f.require(x.bytes == y.bytes, std::string("a second run differs in ") + a[k].first);
      continue;
    }
    for (int64_t i = 0; i < x.count; ++i) {
      const bool same = x.poisoned(i, kPoison) ? y.poisoned(i, kOtherPoison)
                                               : std::memcmp(x.at(i), y.at(i), x.width()) == 0;
      if (!same) {
        f.fail_with(std::string("a second run on fresh buffers differs at ") + a[k].first + "[" +
                    std::to_string(i) + "]");
      }
    }
  }
}

bool all_finite(const block& b, const std::vector<char>& written) {
  for (int64_t i = 0; i < static_cast<int64_t>(written.size()); ++i) {
    if (written[i] && !std::isfinite(b.value(i))) return false;
  }
  return true;
}

bool empty_mean_value(const fuzz_case& f, double v) {
  return f.empty_mean == FUSEDLOSS_EMPTY_MEAN_NAN ? std::isnan(v) : v == 0 && !std::signbit(v);
}

void check_finite(const fuzz_case& f, fusedloss::call c, const buffers& b) {
  const writes w = expected_writes(f, c, b);
  if (f.reduction == FUSEDLOSS_REDUCTION_MEAN && normaliser(f, b) == 0) {
    for (const block* out : {&b.loss, &b.z_loss}) {
      if (out->given && c != fusedloss::call::backward && !empty_mean_value(f, out->value(0))) {
        f.fail_with("an empty mean is " + std::to_string(out->value(0)));
      }
    }
  } else {
    f.require(all_finite(b.loss, w.loss), "moderate inputs gave a non-finite loss");
    f.require(all_finite(b.z_loss, w.z_loss), "moderate inputs gave a non-finite z-loss");
  }
  f.require(all_finite(b.lse, w.lse), "moderate inputs gave a non-finite LSE");
  f.require(all_finite(b.grad_view(), w.grad), "moderate inputs gave a non-finite gradient");
}

bool close(const fuzz_case& f, double got, double want, double magnitude, double absolute) {
  const double rtol = f.loss_dtype() == FUSEDLOSS_FLOAT64 ? 1e-13 : std::ldexp(1.0, -21);
  return std::fabs(got - want) <= rtol * magnitude + absolute;
}

double subnormal_spacing(const fuzz_case& f) {
  return f.loss_dtype() == FUSEDLOSS_FLOAT64 ? std::numeric_limits<double>::denorm_min()
                                             : std::numeric_limits<float>::denorm_min();
}

std::vector<double> written_values(const block& b, const std::vector<char>& written) {
  std::vector<double> out;
  for (int64_t i = 0; i < static_cast<int64_t>(written.size()); ++i) {
    if (written[i]) out.push_back(b.value(i));
  }
  return out;
}

void expect_close(const fuzz_case& f, const std::vector<double>& a, const std::vector<double>& b,
                  double tol, const char* what) {
  f.require(a.size() == b.size(), std::string(what) + ": the two paths wrote different counts");
  for (size_t i = 0; i < a.size(); ++i) {
    if (std::isfinite(a[i]) && std::isfinite(b[i]) && !(std::fabs(a[i] - b[i]) <= tol)) {
      f.fail_with(std::string(what) + "[" + std::to_string(i) + "]: " + std::to_string(a[i]) +
                  " against " + std::to_string(b[i]));
    }
  }
}

}  // namespace fuzz
