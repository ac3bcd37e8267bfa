// Fused linear + cross-entropy over buffers by role: its buffers and binding, its generator (sizes
// and strides of the hidden states, the dtypes of the weight's gradients, accumulation), and its
// relations: forward_backward against forward and backward, accumulating against overwriting, and
// in float64 the loss, LSE and gradients against cross-entropy of the product x·Wᵀ + b formed here.
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <optional>
#include <string>
#include <vector>

#include "case.hpp"
#include "checks.hpp"
#include "fusedloss/fusedloss.hpp"
#include "roles.hpp"

namespace fuzz {

// Every buffer a linear + cross-entropy call may touch, by role.
struct linear_buffers {
  block input, linear_weight, linear_bias, targets, weight, grad_loss, grad_scale, counter;
  block loss, lse, z_loss, grad_input, grad_weight, grad_bias;
  bool alias = false;  // grad_input is the input itself, which the contract refuses

  std::vector<slot> slots(const fuzz_case& f, fusedloss::call c) const {
    const bool fw = f.valid && c != fusedloss::call::backward;
    const bool bw = f.valid && c != fusedloss::call::forward;
    // Accumulated gradients are read, so they hold values, not poison.
    const role linear = f.accumulate ? role::updated : role::output;
    return {{"input", &input, role::input, {}},
            {"linear_weight", &linear_weight, role::input, {}},
            {"linear_bias", &linear_bias, role::input, {}},
            {"targets", &targets, role::input, {}},
            {"weight", &weight, role::input, {}},
            {"grad_loss", &grad_loss, role::input, {}},
            {"grad_scale_ptr", &grad_scale, role::input, {}},
            {"invalid_target_count", &counter, role::updated, first_of(counter, 1)},
            {"loss", &loss, role::output, first_of(loss, fw ? f.loss_values() : 0)},
            {"lse", &lse, role::output, first_of(lse, fw ? f.count : 0)},
            {"z_loss_out", &z_loss, role::output, first_of(z_loss, fw ? f.loss_values() : 0)},
            {"grad_input", &grad_input, role::output,
             rows_of(grad_input, bw ? f.count : 0, f.hidden, f.grad_input_stride)},
            {"grad_linear_weight", &grad_weight, linear, first_of(grad_weight, bw ? kCap : 0)},
            {"grad_linear_bias", &grad_bias, linear, first_of(grad_bias, bw ? kCap : 0)}};
  }
};

void bind(fusedloss_linear_cross_entropy_params& p, linear_buffers& b) {
  p.input = b.input.data();
  p.linear_weight = b.linear_weight.data();
  p.linear_bias = b.linear_bias.data();
  p.targets = b.targets.data();
  p.weight = static_cast<const float*>(b.weight.data());
  p.loss = b.loss.data();
  p.lse = b.lse.data();
  p.z_loss_out = b.z_loss.data();
  p.grad_input = b.alias ? b.input.data() : b.grad_input.data();
  p.grad_linear_weight = b.grad_weight.data();
  p.grad_linear_bias = b.grad_bias.data();
  p.grad_loss = b.grad_loss.data();
  p.grad_scale_ptr = static_cast<const float*>(b.grad_scale.data());
  p.invalid_target_count = static_cast<int64_t*>(b.counter.data());
}

bool generate(source& s, values& v, fuzz_case& f, fusedloss_linear_cross_entropy_params& p,
              linear_buffers& b) {
  static const int64_t vocabs[] = {1, 2, 3, 5, 8, 17, 32, 100, 257};
  static const int64_t hiddens[] = {1, 2, 3, 4, 8, 16, 33};
  int64_t classes = s.from(vocabs);
  int64_t hidden = std::min<int64_t>(s.from(hiddens), kCap / classes);
  // The reference's products cost N * V * H each, and a case runs several calls; the (N, V)
  // logits check_product forms must fit a block.
  int64_t n = s.up_to(std::min({int64_t{16}, 32768 / (classes * hidden), kCap / classes}));
  if (s.spoil()) {
    // Sizes the contract refuses: negative, zero, or V * H overflowing int64.
    const int64_t spoiled[][3] = {{-1, classes, hidden},
                                  {n, s.choose(2) == 0 ? 0 : -1, hidden},
                                  {n, classes, s.choose(2) == 0 ? 0 : -1},
                                  {n, kBig, 4},
                                  {n, 3, kBig},
                                  {n, kInt64Max, kInt64Max}};
    const int k = s.choose(6);
    n = spoiled[k][0], classes = spoiled[k][1], hidden = spoiled[k][2];
  }
  p.batch = n, p.num_classes = classes, p.hidden = hidden;
  f.rule(n >= 0, "batch");
  f.rule(hidden >= 1, "hidden");
  f.rule(classes >= 1, "num_classes");
  const bool sizes_ok = n >= 0 && hidden >= 1 && classes >= 1;
  f.rule(!sizes_ok || fits(__int128{classes} * hidden), "num_classes");
  const __int128 matrix = sizes_ok ? __int128{classes} * hidden : 0;

  p.input_row_stride = stride_choice(s, hidden);
  p.grad_input_row_stride = stride_choice(s, hidden);
  const auto stride_ok = [&](int64_t st) { return st == 0 || st >= hidden; };
  f.rule(stride_ok(p.input_row_stride), "input_row_stride");
  f.rule(stride_ok(p.grad_input_row_stride), "grad_input_row_stride");
  const int64_t in_stride = p.input_row_stride != 0 ? p.input_row_stride : hidden;
  const int64_t grad_stride = p.grad_input_row_stride != 0 ? p.grad_input_row_stride : hidden;
  f.rule(!(n > 0 && !fits(__int128{n} * in_stride)), "input_row_stride");
  f.rule(!(n > 0 && !fits(__int128{n} * grad_stride)), "grad_input_row_stride");

  f.rows = f.index_targets = true;
  f.batch = std::max<int64_t>(n, 0), f.classes = std::max<int64_t>(classes, 0);
  f.hidden = std::max<int64_t>(hidden, 0);
  f.count = std::min<int64_t>(f.batch, kCap + 1);
  f.input_stride = in_stride, f.grad_input_stride = grad_stride;
  generate_header(s, f, p);
  generate_logits_dtype(s, f, p.input_dtype, "input_dtype");
  int linear_dtype = s.choose(2) == 0 ? FUSEDLOSS_FLOAT32 : f.logits_dtype;
  if (s.spoil()) {
    static const int odd[] = {
        FUSEDLOSS_FLOAT16, FUSEDLOSS_BFLOAT16, FUSEDLOSS_FLOAT64, FUSEDLOSS_INT32, 6, -1};
    linear_dtype = s.from(odd);
  }
  store_raw(p.grad_linear_dtype, linear_dtype);
  f.rule(linear_dtype == FUSEDLOSS_FLOAT32 || linear_dtype == f.logits_dtype, "grad_linear_dtype");
  generate_reduction(s, f, p);
  generate_grad_scale(s, v, f, p, b.grad_scale);

  // Moderate hidden states and weights below 1 keep |z| <= H + 1, so that the z-loss's LSE^2 and
  // the gradients' sums over rows and classes stay well inside float32.
  const auto extent = [&](int64_t st) -> __int128 {
    return n > 0 && sizes_ok ? __int128{n - 1} * st + hidden : 0;
  };
  const auto capped = [](__int128 e) {
    return static_cast<int64_t>(std::min<__int128>(e, kCap + 1));
  };
  const int dt = f.logits_dtype;
  b.input.allocate(!s.spoil(), dt, capped(extent(in_stride)));
  f.rule(!(n > 0 && !b.input.given), "input");
  for (int64_t i = 0; i < b.input.count; ++i) b.input.set(i, v.logit() / 16);
  b.linear_weight.allocate(!s.spoil(), dt, capped(matrix));
  f.rule(!(n > 0 && !b.linear_weight.given), "linear_weight");
  for (int64_t i = 0; i < b.linear_weight.count; ++i) b.linear_weight.set(i, v.logit() / 16);
  b.linear_bias.allocate(s.choose(2) == 0, dt, f.classes);
  for (int64_t i = 0; i < b.linear_bias.count; ++i) b.linear_bias.set(i, v.logit() / 16);

  int targets_dtype = s.choose(2) == 0 ? FUSEDLOSS_INT64 : FUSEDLOSS_INT32;
  if (s.spoil()) targets_dtype = s.choose(2) == 0 ? dtype_choice(s, true) : 9;
  store_raw(p.targets_dtype, targets_dtype);
  f.rule(integer(targets_dtype), "targets_dtype");
  f.ignore_index = ignore_index_choice(s);
  p.ignore_index = f.ignore_index;
  b.targets.allocate(!s.spoil(), integer(targets_dtype) ? targets_dtype : FUSEDLOSS_INT64, f.count);
  f.rule(!(n > 0 && !b.targets.given), "targets");
  for (int64_t i = 0; i < b.targets.count; ++i) b.targets.set_index(i, class_index(s, f, classes));
  b.weight.allocate(s.choose(2) == 0, FUSEDLOSS_FLOAT32, f.classes);
  for (int64_t i = 0; i < b.weight.count; ++i) b.weight.set(i, v.weight());
  f.ce_weights = b.weight.given;
  cross_entropy_options(s, f, p);

  const bool forward = f.call == fusedloss::call::forward,
             backward = f.call == fusedloss::call::backward;
  const bool loss_values = f.reduced() || n > 0;
  const int ldt = floating(f.logits_dtype) ? f.loss_dtype() : FUSEDLOSS_FLOAT64;
  b.loss.allocate(forward ? !s.spoil() : s.choose(2) == 0, ldt, f.loss_values());
  b.grad_loss.allocate(backward ? !s.spoil() : s.choose(4) == 0, ldt, f.loss_values());
  f.rule(!(forward && loss_values && !b.loss.given), "loss");
  f.rule(!(backward && loss_values && !b.grad_loss.given), "grad_loss");
  for (int64_t i = 0; i < b.grad_loss.count; ++i) b.grad_loss.set(i, v.upstream());
  b.lse.allocate(s.choose(2) == 0, ldt, f.count);
  b.z_loss.allocate(s.choose(2) == 0, ldt, f.loss_values());
  b.counter.allocate(s.choose(2) == 0, FUSEDLOSS_INT64, 1);
  if (b.counter.given) b.counter.set_index(0, s.choose(4));

  // Every gradient is optional; a forward may be given them too, and must leave them alone.
  const auto grad_given = [&] { return forward ? s.choose(4) == 0 : s.choose(4) != 0; };
  b.alias = b.input.given && s.choose(16) == 0;
  f.rule(!b.alias, "grad_input");
  b.grad_input.allocate(!b.alias && grad_given(), dt, capped(extent(grad_stride)));
  static const int accumulates[] = {0, 0, 0, 0, 1, 1, -1, 2};  // any nonzero int accumulates
  p.accumulate_grad_linear = s.from(accumulates);
  f.accumulate = p.accumulate_grad_linear != 0;
  const int gdt = known_dtype(linear_dtype) ? linear_dtype : FUSEDLOSS_FLOAT64;
  b.grad_weight.allocate(grad_given(), gdt, capped(matrix));
  b.grad_bias.allocate(grad_given(), gdt, f.classes);
  if (f.accumulate) {
    for (int64_t i = 0; i < b.grad_weight.count; ++i) b.grad_weight.set(i, v.upstream());
    for (int64_t i = 0; i < b.grad_bias.count; ++i) b.grad_bias.set(i, v.upstream());
  }

  f.what = "linear_cross_entropy N=" + std::to_string(n) + " H=" + std::to_string(hidden) +
           " V=" + std::to_string(classes);
  if (f.accumulate) f.what += " accumulating";
  const bool too_big = n > kCap || classes > kCap || matrix > kCap || extent(in_stride) > kCap ||
                       extent(grad_stride) > kCap;
  return !(f.valid && too_big);
}

// Rows whose targets count in the mean's normaliser, with their class weights (docs/SEMANTICS.md).
double linear_normaliser(const fuzz_case& f, const linear_buffers& b) {
  double d = 0;
  for (int64_t r = 0; r < f.count; ++r) {
    const int64_t y = b.targets.index(r);
    if (valid_class(f, y, f.classes)) d += b.weight.given ? b.weight.value(y) : 1.0;
  }
  return d;
}

// The input's pick, read as linear + cross-entropy's calls: those of a loss.
std::optional<fusedloss::call> picked_call(const fuzz_case& f, const linear_buffers&) {
  return f.call;
}

int64_t reported_invalid(const fuzz_case& f, fusedloss::call, const linear_buffers& b) {
  return count_invalid(f, b.targets, f.count, f.classes);
}
int64_t counter_added(const fuzz_case& f, fusedloss::call c, const linear_buffers& b) {
  return c != fusedloss::call::backward ? reported_invalid(f, c, b) : 0;
}

void check_finite(const fuzz_case& f, fusedloss::call c, const linear_buffers& b) {
  const std::vector<slot> slots = b.slots(f, c);
  check_finite_losses(f, slots, linear_normaliser(f, b));
  // A float16 gradient may still overflow: a mean's 1/D is unbounded by the values, and the
  // weight's and bias's gradients add over rows.
  for (const char* name : {"grad_input", "grad_linear_weight", "grad_linear_bias"}) {
    const slot& s = slot_named(slots, name);
    f.require(s.b->dtype == FUSEDLOSS_FLOAT16 || all_finite(*s.b, s.writes),
              std::string("moderate inputs gave a non-finite ") + name);
  }
}

using linear_trial = trial_of<fusedloss_linear_cross_entropy_params, linear_buffers>;

// Float64, moderate values: the loss, the LSE and the three gradients are cross-entropy's of the
// product z = x·Wᵀ + b, computed here, and of its gradient G (docs/SEMANTICS.md).
void check_product(const fuzz_case& f, const fusedloss_linear_cross_entropy_params& p,
                   const linear_buffers& original, std::vector<unsigned char>& workspace) {
  if (f.count == 0) return;
  const int64_t n = f.count, classes = f.classes, h = f.hidden;
  linear_buffers b = original;
  const int dt = FUSEDLOSS_FLOAT64;
  b.loss.allocate(true, dt, f.loss_values());
  b.lse.allocate(true, dt, n);
  b.z_loss.allocate(true, dt, f.loss_values());
  b.grad_input.allocate(true, dt, n * h);
  b.grad_weight.allocate(true, dt, classes * h);
  b.grad_bias.allocate(true, dt, classes);
  b.alias = false;
  fusedloss_linear_cross_entropy_params q = p;
  q.grad_input_row_stride = h;
  q.accumulate_grad_linear = 0;
  store_raw(q.grad_linear_dtype, FUSEDLOSS_FLOAT64);
  fuzz_case g = f;
  g.call = fusedloss::call::forward_backward;
  g.accumulate = false;
  g.grad_input_stride = h;
  const linear_trial fused =
      run_on(g, fusedloss::call::forward_backward, q, b, kPoison, workspace, 0);

  block logits, grad, loss, lse, z_loss;
  logits.allocate(true, dt, n * classes);
  for (int64_t r = 0; r < n; ++r) {
    for (int64_t c = 0; c < classes; ++c) {
      double z = b.linear_bias.given ? b.linear_bias.value(c) : 0.0;
      for (int64_t k = 0; k < h; ++k) {
        z += b.input.value(r * f.input_stride + k) * b.linear_weight.value(c * h + k);
      }
      logits.set(r * classes + c, z);
    }
  }
  grad.allocate(true, dt, n * classes);
  loss.allocate(true, dt, f.loss_values());
  lse.allocate(true, dt, n);
  z_loss.allocate(true, dt, f.loss_values());
  fusedloss_cross_entropy_params ce;
  fusedloss_cross_entropy_params_init(&ce);
  ce.batch = n, ce.num_classes = classes;
  ce.logits = logits.data();
  ce.logits_dtype = FUSEDLOSS_FLOAT64;
  ce.targets = b.targets.data();
  ce.targets_dtype = q.targets_dtype;
  ce.weight = static_cast<const float*>(b.weight.data());
  ce.ignore_index = q.ignore_index;
  ce.label_smoothing = q.label_smoothing, ce.z_loss = q.z_loss, ce.softcap = q.softcap;
  ce.reduction = q.reduction, ce.empty_mean = q.empty_mean;
  ce.grad_scale = q.grad_scale;
  ce.grad_scale_ptr = static_cast<const float*>(b.grad_scale.data());
  ce.loss = loss.data(), ce.lse = lse.data(), ce.z_loss_out = z_loss.data();
  ce.grad_logits = grad.data();
  const fusedloss_status status =
      fusedloss_cross_entropy_forward_backward(&ce, nullptr, 0, nullptr, nullptr);
  f.require(status == fused.status, "cross-entropy of the product returned another status");

  const auto near = [](int64_t, double want) { return 1e-12 * (1 + std::fabs(want)); };
  const std::vector<char> all(static_cast<size_t>(kCap), 1);
  const auto mask = [&](const block& x) {
    return std::vector<char>(all.begin(), all.begin() + x.count);
  };
  expect_near(g, fused.b.loss, loss, mask(loss), near, "loss against cross-entropy's of x·Wᵀ + b");
  expect_near(g, fused.b.lse, lse, mask(lse), near, "LSE against cross-entropy's of x·Wᵀ + b");
  expect_near(g, fused.b.z_loss, z_loss, mask(z_loss), near, "z-loss against cross-entropy's");

  // The gradients' products, with the magnitudes of their terms as the scale of their rounding.
  block want_input, want_weight, want_bias, scale_input, scale_weight, scale_bias;
  for (block* x : {&want_input, &scale_input}) x->allocate(true, dt, n * h);
  for (block* x : {&want_weight, &scale_weight}) x->allocate(true, dt, classes * h);
  for (block* x : {&want_bias, &scale_bias}) x->allocate(true, dt, classes);
  for (int64_t r = 0; r < n; ++r) {
    for (int64_t c = 0; c < classes; ++c) {
      const double gz = grad.value(r * classes + c);
      want_bias.set(c, want_bias.value(c) + gz);
      scale_bias.set(c, scale_bias.value(c) + std::fabs(gz));
      for (int64_t k = 0; k < h; ++k) {
        const double x = b.input.value(r * f.input_stride + k),
                     w = b.linear_weight.value(c * h + k);
        want_input.set(r * h + k, want_input.value(r * h + k) + gz * w);
        scale_input.set(r * h + k, scale_input.value(r * h + k) + std::fabs(gz * w));
        want_weight.set(c * h + k, want_weight.value(c * h + k) + gz * x);
        scale_weight.set(c * h + k, scale_weight.value(c * h + k) + std::fabs(gz * x));
      }
    }
  }
  const auto by = [](const block& scale) {
    return [&scale](int64_t i, double) { return 1e-12 * (1e-300 + scale.value(i)); };
  };
  expect_near(g, fused.b.grad_input, want_input, mask(want_input), by(scale_input),
              "grad_input against G·W");
  expect_near(g, fused.b.grad_weight, want_weight, mask(want_weight), by(scale_weight),
              "grad_linear_weight against Gᵀ·x");
  expect_near(g, fused.b.grad_bias, want_bias, mask(want_bias), by(scale_bias),
              "grad_linear_bias against the sum of G over rows");
}

void check_relations(const fuzz_case& f, const fusedloss_linear_cross_entropy_params& p,
                     const linear_trial& done, const linear_buffers& original,
                     std::vector<unsigned char>& workspace) {
  if (f.call == fusedloss::call::forward_backward) {
    linear_buffers with_loss = original;
    with_loss.loss.allocate(true, f.loss_dtype(), f.loss_values());
    const linear_trial fw =
        run_on(f, fusedloss::call::forward, p, with_loss, kPoison, workspace, 0);
    f.require(fw.status == done.status, "forward's status is not forward_backward's");
    f.require(!done.b.loss.given || fw.b.loss.bytes == done.b.loss.bytes,
              "forward_backward's loss is not forward's");
    f.require(fw.b.z_loss.bytes == done.b.z_loss.bytes,
              "forward_backward's z-loss isn't forward's");
    f.require(fw.b.lse.bytes == done.b.lse.bytes, "forward_backward's LSE is not forward's");

    // backward from the same upstream value as a grad_loss, when the loss dtype holds it exactly.
    double upstream = f.grad_scale;
    if (original.grad_scale.given) upstream *= original.grad_scale.value(0);
    linear_buffers up = original;
    up.grad_loss.allocate(true, f.loss_dtype(), f.loss_values());
    bool exact = true;
    for (int64_t i = 0; i < up.grad_loss.count; ++i) {
      up.grad_loss.set(i, upstream);
      exact = exact && up.grad_loss.value(i) == upstream;
    }
    if (exact) {
      const linear_trial bw = run_on(f, fusedloss::call::backward, p, up, kPoison, workspace, 0);
      f.require(bw.status == done.status, "backward's status is not forward_backward's");
      f.require(bw.b.grad_input.bytes == done.b.grad_input.bytes &&
                    bw.b.grad_weight.bytes == done.b.grad_weight.bytes &&
                    bw.b.grad_bias.bytes == done.b.grad_bias.bytes,
                "forward_backward's gradients are not backward's from the same upstream value");
    }
  }

  // Accumulating adds the gradient an overwriting call writes to what the buffers held, rounded
  // once to grad_linear_dtype (so within a rounding or two of that sum, and exact in float64).
  if (f.accumulate && f.call != fusedloss::call::forward) {
    fusedloss_linear_cross_entropy_params q = p;
    q.accumulate_grad_linear = 0;
    fuzz_case g = f;
    g.accumulate = false;
    const linear_trial plain = run_on(g, *f.call, q, original, kPoison, workspace, 0);
    f.require(plain.status == done.status, "accumulate_grad_linear changed the status");
    f.require(plain.b.loss.bytes == done.b.loss.bytes && plain.b.lse.bytes == done.b.lse.bytes &&
                  plain.b.grad_input.bytes == done.b.grad_input.bytes,
              "accumulate_grad_linear changed an output it does not accumulate");
    const auto check = [&](const block& init, const block& got, const block& part,
                           const char* what) {
      const double eps = epsilon_of(got.dtype), tiny = tiny_of(got.dtype);
      for (int64_t i = 0; i < got.count; ++i) {
        const double a = init.value(i), b = got.value(i), c = part.value(i);
        if (!std::isfinite(a) || !std::isfinite(b) || !std::isfinite(c)) continue;
        if (!(std::fabs(b - (a + c)) <=
              eps * (std::fabs(a) + std::fabs(b) + std::fabs(c)) + 2 * tiny)) {
          char message[160];
          std::snprintf(message, sizeof message, "%s[%lld] accumulated to %.17g, not %.17g + %.17g",
                        what, static_cast<long long>(i), b, a, c);
          f.fail_with(message);
        }
      }
    };
    check(original.grad_weight, done.b.grad_weight, plain.b.grad_weight, "grad_linear_weight");
    check(original.grad_bias, done.b.grad_bias, plain.b.grad_bias, "grad_linear_bias");
  }

  if (f.moderate && f.logits_dtype == FUSEDLOSS_FLOAT64) check_product(f, p, original, workspace);
}

template void fuzz_calls<fusedloss_linear_cross_entropy_params, linear_buffers>(source& s,
                                                                                fuzz_case& f);

}  // namespace fuzz
