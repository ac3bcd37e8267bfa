// Element losses (BCE with logits, sigmoid focal, MSE): their generators, the sizes and targets
// they share, the per-element or per-class weights and the focal options, and their bindings.
#include <algorithm>
#include <cmath>
#include <cstdint>

#include "case.hpp"

namespace fuzz {

void bind(fusedloss_bce_params& p, buffers& b) {
  bind_shared(p, b);
  p.weight = static_cast<const float*>(b.weight.data());
  p.pos_weight = static_cast<const float*>(b.pos_weight.data());
}
void bind(fusedloss_sigmoid_focal_params& p, buffers& b) { bind_shared(p, b); }
void bind(fusedloss_mse_params& p, buffers& b) { bind_shared(p, b); }

template <class P>
void generate_elements(source& s, values& v, fuzz_case& f, P& p, buffers& b) {
  int64_t m = s.choose(4) == 0 ? s.up_to(kCap) : s.up_to(64);
  if (s.spoil()) m = s.choose(2) == 0 ? -1 : kInt64Min;
  p.numel = m;
  f.rule(m >= 0, "numel");
  f.count = std::max<int64_t>(m, 0);
  generate_shared(s, v, f, p, b);
  b.grad.allocate(generate_logits(s, v, f, b, f.count), f.logits_dtype, f.count);

  int targets_dtype = s.choose(2) == 0 ? FUSEDLOSS_FLOAT32 : f.logits_dtype;
  if (s.spoil()) targets_dtype = dtype_choice(s, true);
  store_raw(p.targets_dtype, targets_dtype);
  f.rule(targets_dtype == FUSEDLOSS_FLOAT32 || targets_dtype == f.logits_dtype, "targets_dtype");
  b.targets.allocate(!s.spoil(), targets_dtype, f.count);
  f.rule(!(f.count > 0 && !b.targets.given), "targets");
  for (int64_t i = 0; i < b.targets.count; ++i) b.targets.set(i, v.target01());
}

bool generate(source& s, values& v, fuzz_case& f, fusedloss_bce_params& p, buffers& b) {
  generate_elements(s, v, f, p, b);
  // C: a divisor of M mostly, else anything (it only matters with a per-class vector).
  int64_t c = 1;
  for (int64_t d = 1 + s.up_to(16); d >= 1; --d) {
    if (f.count % d == 0) {
      c = d;
      break;
    }
  }
  if (s.spoil()) {
    static const int64_t odd[] = {0, -1, 3, 7, kBig};
    c = s.from(odd);
  }
  p.num_classes = c;
  int layout = s.choose(2);
  if (s.spoil()) layout = 2;
  store_raw(p.weight_layout, layout);
  f.rule(layout == 0 || layout == 1, "weight_layout");
  const bool weight = s.choose(2) == 0, pos_weight = s.choose(2) == 0;
  const bool per_class = pos_weight || (weight && layout == FUSEDLOSS_WEIGHT_PER_CLASS);
  f.rule(!per_class || (c > 0 && f.count % c == 0), "num_classes");
  if (per_class && c > kCap && f.valid) return false;  // accepted, but too big to allocate
  b.weight.allocate(weight, FUSEDLOSS_FLOAT32, layout == FUSEDLOSS_WEIGHT_PER_CLASS ? c : f.count);
  b.pos_weight.allocate(pos_weight, FUSEDLOSS_FLOAT32, c);
  for (int64_t i = 0; i < b.weight.count; ++i) b.weight.set(i, v.weight());
  for (int64_t i = 0; i < b.pos_weight.count; ++i) b.pos_weight.set(i, v.weight());
  return true;
}

double alpha_choice(source& s, bool moderate) {
  static const double good[] = {0.25, -1.0, 0.75, 0.0, 1.0, 1.5};
  static const double bad[] = {kNaN, kInf, -kInf};
  static const double huge[] = {1e300, -1e300};
  if (!s.spoil()) return s.from(good);
  return moderate || s.choose(2) == 0 ? s.from(bad) : s.from(huge);
}

bool generate(source& s, values& v, fuzz_case& f, fusedloss_sigmoid_focal_params& p, buffers& b) {
  generate_elements(s, v, f, p, b);
  p.alpha = alpha_choice(s, f.moderate);
  f.rule(std::isfinite(p.alpha), "alpha");
  p.gamma = gamma_choice(s, f);
  return true;
}

bool generate(source& s, values& v, fuzz_case& f, fusedloss_mse_params& p, buffers& b) {
  generate_elements(s, v, f, p, b);
  return true;
}

}  // namespace fuzz
