// Row losses (cross-entropy with class-index or probability targets, softmax focal): the (N, C, S)
// layout and strides, the row buffers and targets, each loss's options, and their bindings.
#include <algorithm>
#include <cstdint>

#include "case.hpp"

namespace fuzz {

template <class P>
void bind_rows(P& p, buffers& b) {
  bind_shared(p, b);
  p.lse = b.lse.data();
  p.invalid_target_count = static_cast<int64_t*>(b.counter.data());
}
void bind(fusedloss_cross_entropy_params& p, buffers& b) {
  bind_rows(p, b);
  p.weight = static_cast<const float*>(b.weight.data());
  p.z_loss_out = b.z_loss.data();
}
void bind(fusedloss_softmax_focal_params& p, buffers& b) {
  bind_rows(p, b);
  p.alpha = static_cast<const float*>(b.weight.data());
}

// The (N, C, S) layout and strides, the row buffers and the class-index or probability targets.
// Returns false for an accepted problem too large to allocate (the input is skipped).
template <class P>
bool generate_rows(source& s, values& v, fuzz_case& f, P& p, buffers& b, bool probability_ok) {
  static const int64_t classes[] = {1, 2, 3, 4, 5, 8, 10, 17, 32, 64, 100, 257, 600, 1000};
  static const int64_t spatials[] = {1, 1, 1, 1, 1, 2, 3, 5, 0};
  int64_t c = s.from(classes), sp = s.from(spatials);
  int64_t n = s.up_to(std::min<int64_t>(24, kCap / std::max<int64_t>(c * sp, 1)));
  if (s.spoil()) {
    // Sizes the contract refuses: negative, zero classes (with rows), or a product that
    // overflows int64 (C * S, N * S, C * S again).
    const int64_t spoiled[][3] = {{-1, c, sp},
                                  {n, s.choose(2) == 0 ? -1 : 0, sp},
                                  {n, c, -1},
                                  {n, std::max<int64_t>(c, 2), kBig},
                                  {std::max<int64_t>(n, 2), 1, kBig},
                                  {n, kBig, 2}};
    const int k = s.choose(6);
    n = spoiled[k][0], c = spoiled[k][1], sp = spoiled[k][2];
  }
  p.batch = n, p.num_classes = c, p.spatial = sp;
  f.rule(n >= 0, "batch");
  f.rule(c >= 0, "num_classes");
  f.rule(sp >= 0, "spatial");
  const bool sizes_ok =
      n >= 0 && c >= 0 && sp >= 0 && fits(__int128{c} * sp) && fits(__int128{n} * sp);
  f.rule(sizes_ok, "spatial");
  const __int128 row_elements = sizes_ok ? __int128{c} * sp : 0;
  const __int128 rows = sizes_ok ? __int128{n} * sp : 0;
  f.rule(c > 0 || rows == 0, "num_classes");

  // Strides: 0 (contiguous), padded, or too short, negative or overflowing.
  const auto stride_choice = [&]() -> int64_t {
    if (s.spoil()) {
      static const int64_t bad[] = {-1, -64, kBig, kInt64Max};
      return s.choose(2) == 0 ? static_cast<int64_t>(row_elements) - 1 : s.from(bad);
    }
    return s.choose(2) == 0 ? 0 : static_cast<int64_t>(row_elements) + s.choose(4);
  };
  p.row_stride = stride_choice();
  p.grad_row_stride = stride_choice();
  const bool in_place_equal = s.choose(4) != 0;  // in place, mostly with the logits' stride
  const auto stride_ok = [&](int64_t st) { return st == 0 || st >= row_elements; };
  f.rule(stride_ok(p.row_stride), "row_stride");
  const int64_t stride = p.row_stride != 0 ? p.row_stride : static_cast<int64_t>(row_elements);
  const auto overflows = [&](int64_t st) { return n > 0 && !fits(__int128{n} * st); };
  f.rule(!overflows(stride), "row_stride");

  f.rows = true;
  f.batch = std::max<int64_t>(n, 0), f.classes = std::max<int64_t>(c, 0);
  f.spatial = std::max<int64_t>(sp, 0);
  f.count = static_cast<int64_t>(std::min<__int128>(rows, kCap + 1));
  generate_shared(s, v, f, p, b);

  // The logits (and the gradient, which may alias them) span (N - 1) * stride + C * S elements.
  const auto extent = [&](int64_t st) -> __int128 {
    return rows > 0 ? __int128{n - 1} * st + row_elements : 0;
  };
  const bool grad_given = generate_logits(
      s, v, f, b, static_cast<int64_t>(std::min<__int128>(extent(stride), kCap + 1)));
  if (b.in_place && in_place_equal) p.grad_row_stride = p.row_stride;
  const int64_t grad_stride = p.grad_row_stride != 0 ? p.grad_row_stride : stride;
  f.rule(stride_ok(p.grad_row_stride), "grad_row_stride");
  f.rule(!overflows(grad_stride), "grad_row_stride");
  f.rule(!(b.in_place && grad_stride != stride), "grad_row_stride");
  f.grad_stride = grad_stride;
  b.grad.allocate(grad_given, f.logits_dtype,
                  static_cast<int64_t>(std::min<__int128>(extent(grad_stride), kCap + 1)));

  // Targets: class indices (valid, ignore_index, out of range), or probabilities.
  int targets_dtype = s.choose(2) == 0 ? FUSEDLOSS_INT64 : FUSEDLOSS_INT32;
  if (probability_ok && s.choose(3) == 0) {
    targets_dtype = s.choose(2) == 0 ? FUSEDLOSS_FLOAT32 : f.logits_dtype;
  }
  if (s.spoil()) targets_dtype = s.choose(2) == 0 ? dtype_choice(s, true) : 9;
  store_raw(p.targets_dtype, targets_dtype);
  f.index_targets = integer(targets_dtype);
  const bool probability =
      probability_ok && (targets_dtype == FUSEDLOSS_FLOAT32 ||
                         (targets_dtype == f.logits_dtype && floating(targets_dtype)));
  f.rule(f.index_targets || probability, "targets_dtype");
  f.ignore_index = ignore_index_choice(s);
  p.ignore_index = f.ignore_index;
  const __int128 target_count = probability ? rows * c : rows;
  b.targets.allocate(!s.spoil(), known_dtype(targets_dtype) ? targets_dtype : FUSEDLOSS_INT64,
                     static_cast<int64_t>(std::min<__int128>(target_count, kCap + 1)));
  f.rule(!(rows > 0 && !b.targets.given), "targets");
  // Targets of any other dtype belong to a call that must refuse them: they stay zero.
  const int64_t filled = f.index_targets || probability ? b.targets.count : 0;
  for (int64_t i = 0; i < filled; ++i) {
    if (probability) {
      b.targets.set(i, v.unit());
      continue;
    }
    b.targets.set_index(i, class_index(s, f, c));
  }

  // Per-row outputs and inputs: the LSE (backward's input when given), the counter.
  const int ldt = f.loss_dtype();
  b.lse_is_input = f.call == fusedloss::call::backward;
  b.lse.allocate(s.choose(2) == 0 && !(f.moderate && b.lse_is_input), ldt, f.count);
  if (b.lse_is_input) {
    for (int64_t i = 0; i < b.lse.count; ++i) b.lse.set(i, v.logit());
  }
  b.counter.allocate(s.choose(2) == 0, FUSEDLOSS_INT64, 1);
  if (b.counter.given) b.counter.set_index(0, s.choose(4));
  b.weight.allocate(s.choose(2) == 0, FUSEDLOSS_FLOAT32, f.classes);
  for (int64_t i = 0; i < b.weight.count; ++i) b.weight.set(i, v.weight());

  // An accepted problem must fit the buffers as allocated.
  const bool too_big = rows > kCap || extent(stride) > kCap || extent(grad_stride) > kCap ||
                       target_count > kCap || c > kCap;
  return !(f.valid && too_big);
}

bool generate(source& s, values& v, fuzz_case& f, fusedloss_cross_entropy_params& p, buffers& b) {
  if (!generate_rows(s, v, f, p, b, /*probability_ok=*/true)) return false;
  f.ce_weights = f.index_targets && b.weight.given;
  cross_entropy_options(s, f, p);
  b.z_loss.allocate(s.choose(2) == 0, f.loss_dtype(), f.loss_values());
  return true;
}

bool generate(source& s, values& v, fuzz_case& f, fusedloss_softmax_focal_params& p, buffers& b) {
  if (!generate_rows(s, v, f, p, b, /*probability_ok=*/false)) return false;
  p.gamma = gamma_choice(s, f);
  // (1 - u)^gamma for gamma in (0, 1) has an unbounded derivative at confident rows.
  f.smooth_in_lse = p.gamma == 0 || p.gamma >= 1;
  return true;
}

}  // namespace fuzz
