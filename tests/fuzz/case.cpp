// The choices the families share, out of line: dtypes, the logits and where their gradient goes,
// a focal loss's gamma, ignore_index and class indices, row strides.
#include "case.hpp"

#include <algorithm>
#include <cmath>
#include <cstdint>

namespace fuzz {

int dtype_choice(source& s, bool may_spoil) {
  static const int good[] = {FUSEDLOSS_FLOAT32, FUSEDLOSS_FLOAT16, FUSEDLOSS_BFLOAT16,
                             FUSEDLOSS_FLOAT64};
  static const int bad[] = {FUSEDLOSS_INT32, FUSEDLOSS_INT64, 6, -1, 1 << 20};
  return may_spoil && s.spoil() ? s.from(bad) : s.from(good);
}

bool generate_logits(source& s, values& v, fuzz_case& f, buffers& b, int64_t extent) {
  b.logits.allocate(!s.spoil(), f.logits_dtype, extent);
  f.rule(!(f.count > 0 && !b.logits.given), "logits");
  for (int64_t i = 0; i < b.logits.count; ++i) b.logits.set(i, v.logit());
  const bool grads = f.call != fusedloss::call::forward;
  b.in_place = b.logits.given && s.choose(8) == 0;
  const bool grad_given = !b.in_place && (grads ? !s.spoil() : s.choose(4) == 0);
  f.rule(!(grads && f.count > 0 && !grad_given && !b.in_place), "grad_logits");
  return grad_given;
}

double gamma_choice(source& s, fuzz_case& f) {
  static const double good[] = {2.0, 0.0, 0.5, 1.0, 3.0, 0.25};
  static const double bad[] = {-0.5, -kInf, kInf, kNaN};
  const double g = s.spoil() ? s.from(bad) : s.from(good);
  f.rule(std::isfinite(g) && g >= 0, "gamma");
  return g;
}

int64_t ignore_index_choice(source& s) {
  static const int64_t ignore_indices[] = {-100, -100, -100, 0, -1, 3, kInt64Min, 1LL << 40};
  return s.from(ignore_indices);
}

int64_t class_index(source& s, const fuzz_case& f, int64_t c) {
  static const int64_t out_of_range[] = {-1, -100, -101, kInt64Min, kInt64Max, 1LL << 33};
  const int kind = s.choose(8);
  int64_t y = c > 0 ? s.up_to(c - 1) : 0;
  if (kind == 0) y = f.ignore_index;
  if (kind == 1) y = s.choose(2) == 0 ? c : s.from(out_of_range);
  return y;
}

int64_t saturated(__int128 v) {
  return static_cast<int64_t>(std::clamp<__int128>(v, kInt64Min, kInt64Max));
}

int64_t stride_choice(source& s, int64_t width) {
  if (s.spoil()) {
    static const int64_t bad[] = {-1, -64, kBig, kInt64Max};
    return s.choose(2) == 0 ? saturated(__int128{width} - 1) : s.from(bad);
  }
  return s.choose(2) == 0 ? 0 : saturated(__int128{width} + s.choose(4));
}

}  // namespace fuzz
