// Vocabulary-parallel cross-entropy's shard calls (partial, rescale, finish) over buffers by role:
// their buffers and binding, the generator (a slice of a vocabulary, the summary, at random or from
// partial and rescale), and the check of one to three ranks against cross-entropy of whole rows.
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "case.hpp"
#include "checks.hpp"
#include "fusedloss/fusedloss.hpp"
#include "roles.hpp"

namespace fuzz {

using fusedloss::shard_step;

// Every buffer a shard call may touch, by role.
struct shard_buffers {
  block logits, targets, weight, grad_scale, counter, summary;
  block loss, lse, z_loss, grad;
  bool in_place = false;  // grad_logits == logits

  std::vector<slot> slots(const fuzz_case& f, shard_step c) const {
    const bool partial = f.valid && c == shard_step::partial;
    const bool rescale = f.valid && c == shard_step::rescale;
    const bool finish = f.valid && c == shard_step::finish;
    const int64_t n = f.count;
    const std::vector<char> gradient =
        rows_of(in_place ? logits : grad, finish ? n : 0, f.classes, f.grad_stride);
    return {
        {"logits", &logits, in_place && c == shard_step::finish ? role::updated : role::input,
         in_place ? gradient : std::vector<char>(logits.count, 0)},
        {"targets", &targets, role::input, {}},
        {"weight", &weight, role::input, {}},
        {"grad_scale_ptr", &grad_scale, role::input, {}},
        {"invalid_target_count", &counter, c == shard_step::finish ? role::updated : role::input,
         first_of(counter, 1)},
        // partial writes every field; rescale updates SUM_EXP and WEIGHTED_SUM; finish reads it.
        {"summary", &summary,
         c == shard_step::partial   ? role::output
         : c == shard_step::rescale ? role::updated
                                    : role::input,
         partial   ? first_of(summary, FUSEDLOSS_SHARD_SUMMARY_FIELDS * n)
         : rescale ? rows_of(summary, 2, n, n, FUSEDLOSS_SHARD_SUMMARY_SUM_EXP * n)
                   : std::vector<char>(summary.count, 0)},
        {"loss", &loss, role::output, first_of(loss, finish ? f.loss_values() : 0)},
        {"lse", &lse, role::output, first_of(lse, finish ? n : 0)},
        {"z_loss_out", &z_loss, role::output, first_of(z_loss, finish ? f.loss_values() : 0)},
        {"grad_logits", &grad, role::output,
         in_place ? std::vector<char>(grad.count, 0) : gradient},
    };
  }
};

void bind(fusedloss_cross_entropy_shard_params& p, shard_buffers& b) {
  p.logits = b.logits.data();
  p.targets = b.targets.data();
  p.weight = static_cast<const float*>(b.weight.data());
  p.summary = b.summary.data();
  p.loss = b.loss.data();
  p.lse = b.lse.data();
  p.z_loss_out = b.z_loss.data();
  p.grad_logits = b.in_place ? b.logits.data() : b.grad.data();
  p.grad_scale_ptr = static_cast<const float*>(b.grad_scale.data());
  p.invalid_target_count = static_cast<int64_t*>(b.counter.data());
}

// The input's pick, read as the shard calls: partial where a loss's forward is, rescale for its
// backward, finish for its forward_backward.
std::optional<shard_step> picked_call(const fuzz_case& f, const shard_buffers&) {
  if (!f.call) return std::nullopt;
  switch (*f.call) {
    case fusedloss::call::forward:
      return shard_step::partial;
    case fusedloss::call::backward:
      return shard_step::rescale;
    case fusedloss::call::forward_backward:
      break;
  }
  return shard_step::finish;
}

double summary_field(const block& summary, int field, int64_t batch, int64_t r) {
  return summary.value(field * batch + r);
}

bool generate(source& s, values& v, fuzz_case& f, fusedloss_cross_entropy_shard_params& p,
              shard_buffers& b) {
  const std::optional<shard_step> step = picked_call(f, b);
  f.call_name = name(step);
  static const int64_t vocabs[] = {1, 2, 3, 4, 5, 8, 10, 17, 32, 64, 100, 257, 600, 1000};
  int64_t vocab = s.from(vocabs), c = vocab, start = 0;
  if (s.choose(2) == 0) {  // a slice; else the whole vocabulary, one rank's
    c = 1 + s.up_to(vocab - 1);
    start = s.up_to(vocab - c);
  }
  // A vocabulary no buffer could hold, of which this rank holds a small slice.
  if (s.choose(8) == 0) vocab = kBig;
  int64_t n = s.up_to(std::min<int64_t>(24, kCap / c));
  if (s.spoil()) {
    switch (s.choose(7)) {
      case 0:
        n = -1;
        break;
      case 1:
        c = s.choose(2) == 0 ? 0 : -1;
        break;
      case 2:
        c = vocab + 1;
        break;
      case 3:
        start = -1;
        break;
      case 4:
        start = vocab - c + 1;
        break;
      case 5:
        start = kInt64Max;
        break;
      default:
        vocab = s.choose(2) == 0 ? c - 1 : kInt64Min;
        break;
    }
  }
  p.batch = n, p.num_classes = c, p.vocab_start = start, p.vocab_size = vocab;
  f.rule(n >= 0, "batch");
  f.rule(c >= 1, "num_classes");
  f.rule(vocab >= c, "vocab_size");
  const bool slice_ok = c >= 1 && vocab >= c && start >= 0 && start <= vocab - c;
  f.rule(slice_ok, "vocab_start");

  p.row_stride = stride_choice(s, c);
  p.grad_row_stride = stride_choice(s, c);
  const bool in_place_equal = s.choose(4) != 0;
  const auto stride_ok = [&](int64_t st) { return st == 0 || st >= c; };
  f.rule(stride_ok(p.row_stride), "row_stride");
  const int64_t stride = p.row_stride != 0 ? p.row_stride : c;
  const auto overflows = [&](int64_t st) { return n > 0 && !fits(__int128{n} * st); };
  f.rule(!overflows(stride), "row_stride");

  f.rows = f.index_targets = true;
  f.batch = std::max<int64_t>(n, 0), f.classes = std::max<int64_t>(c, 0);
  f.count = std::min<int64_t>(f.batch, kCap + 1);
  f.vocab_start = start, f.vocab_size = vocab, f.stride = stride;
  generate_header(s, f, p);
  generate_logits_dtype(s, f, p.logits_dtype, "logits_dtype");
  generate_reduction(s, f, p);
  generate_grad_scale(s, v, f, p, b.grad_scale);

  const auto extent = [&](int64_t st) -> __int128 {
    return n > 0 && c > 0 ? __int128{n - 1} * st + c : 0;
  };
  const auto capped = [](__int128 e) {
    return static_cast<int64_t>(std::min<__int128>(e, kCap + 1));
  };
  const bool partial = step == shard_step::partial, finish = step == shard_step::finish;
  b.logits.allocate(!s.spoil(), f.logits_dtype, capped(extent(stride)));
  for (int64_t i = 0; i < b.logits.count; ++i) b.logits.set(i, v.logit());
  b.in_place = b.logits.given && s.choose(8) == 0;
  if (b.in_place && in_place_equal) p.grad_row_stride = p.row_stride;
  const bool grad_given = !b.in_place && (finish ? !s.spoil() : s.choose(4) == 0);
  const int64_t grad_stride = p.grad_row_stride != 0 ? p.grad_row_stride : stride;
  f.rule(stride_ok(p.grad_row_stride), "grad_row_stride");
  f.rule(!overflows(grad_stride), "grad_row_stride");
  f.rule(!(b.in_place && grad_stride != stride), "grad_row_stride");
  f.grad_stride = grad_stride;
  b.grad.allocate(grad_given, f.logits_dtype, capped(extent(grad_stride)));
  const bool needs_logits = partial || (finish && (grad_given || b.in_place));
  f.rule(!(n > 0 && needs_logits && !b.logits.given), "logits");

  int targets_dtype = s.choose(2) == 0 ? FUSEDLOSS_INT64 : FUSEDLOSS_INT32;
  if (s.spoil()) targets_dtype = s.choose(2) == 0 ? dtype_choice(s, true) : 9;
  store_raw(p.targets_dtype, targets_dtype);
  f.rule(integer(targets_dtype), "targets_dtype");
  f.ignore_index = ignore_index_choice(s);
  p.ignore_index = f.ignore_index;
  b.targets.allocate(!s.spoil(), integer(targets_dtype) ? targets_dtype : FUSEDLOSS_INT64, f.count);
  f.rule(!(n > 0 && step != shard_step::rescale && !b.targets.given), "targets");
  for (int64_t i = 0; i < b.targets.count; ++i) {
    int64_t y = class_index(s, f, vocab);
    // Half the in-range targets in this rank's slice, which few would be of a large vocabulary.
    if (slice_ok && y >= 0 && y < vocab && y != f.ignore_index && s.choose(2) == 0) {
      y = start + y % c;
    }
    b.targets.set_index(i, y);
  }
  b.weight.allocate(s.choose(2) == 0, FUSEDLOSS_FLOAT32, f.classes);
  for (int64_t i = 0; i < b.weight.count; ++i) b.weight.set(i, v.weight());
  cross_entropy_options(s, f, p);

  const int ldt = floating(f.logits_dtype) ? f.loss_dtype() : FUSEDLOSS_FLOAT64;
  const __int128 summary_values = __int128{FUSEDLOSS_SHARD_SUMMARY_FIELDS} * f.batch;
  b.summary.allocate(!s.spoil(), ldt, capped(summary_values));
  f.rule(!(n > 0 && !b.summary.given), "summary");
  for (int64_t i = 0; i < b.summary.count; ++i) {
    const int field = static_cast<int>(i / std::max<int64_t>(f.batch, 1));
    const bool sum = field == FUSEDLOSS_SHARD_SUMMARY_SUM_EXP ||
                     field == FUSEDLOSS_SHARD_SUMMARY_WEIGHT_SUM ||
                     field == FUSEDLOSS_SHARD_SUMMARY_TARGET_WEIGHT;
    b.summary.set(i, sum ? v.weight() : v.logit());
  }
  b.loss.allocate(finish ? s.choose(4) != 0 : s.choose(4) == 0, ldt, f.loss_values());
  b.lse.allocate(s.choose(2) == 0, ldt, f.count);
  b.z_loss.allocate(s.choose(2) == 0, ldt, f.loss_values());
  b.counter.allocate(s.choose(2) == 0, FUSEDLOSS_INT64, 1);
  if (b.counter.given) b.counter.set_index(0, s.choose(4));

  // check_ranks' split of the whole vocabulary into up to three slices.
  f.rank_starts = {0};
  for (int k = s.choose(3); k > 0 && c >= 2; --k) f.rank_starts.push_back(1 + s.up_to(c - 2));
  std::sort(f.rank_starts.begin(), f.rank_starts.end());
  f.rank_starts.erase(std::unique(f.rank_starts.begin(), f.rank_starts.end()), f.rank_starts.end());

  f.what = std::string("cross_entropy_shard N=") + std::to_string(n) + " C=" + std::to_string(c) +
           " at " + std::to_string(start) + " of V=" + std::to_string(vocab);
  const bool too_big = n > kCap || c > kCap || summary_values > kCap || extent(stride) > kCap ||
                       extent(grad_stride) > kCap;
  if (f.valid && too_big) return false;

  // Rescale's and finish's summary, mostly from partial (and rescale) of this rank's own slice,
  // its maximum sometimes raised as another rank's would raise it: summaries that mean something.
  if (f.valid && !f.cuda && (step == shard_step::rescale || finish) && n > 0 && b.logits.given &&
      b.targets.given && s.choose(4) != 0) {
    fusedloss_cross_entropy_shard_params q = p;
    shard_buffers t = b;
    bind(q, t);
    if (fusedloss_cross_entropy_shard_partial(&q, nullptr, 0, nullptr, nullptr) !=
        FUSEDLOSS_SUCCESS) {
      f.fail_with("partial refused the params its " + std::string(f.call_name) + " accepts");
    }
    const double raise = s.choose(4) == 0 ? 1 + s.choose(3) : 0;
    for (int64_t r = 0; r < n; ++r) {
      t.summary.set(r, t.summary.value(r) + raise);  // field MAX comes first
    }
    if (finish && fusedloss_cross_entropy_shard_rescale(&q, nullptr, 0, nullptr, nullptr) !=
                      FUSEDLOSS_SUCCESS) {
      f.fail_with("rescale refused the params finish accepts");
    }
    b.summary = t.summary;
    f.summary_derived = true;
    f.what += raise > 0 ? ", summary from partial, its max raised" : ", summary from partial";
  }
  return true;
}

int64_t reported_invalid(const fuzz_case& f, shard_step c, const shard_buffers& b) {
  if (c != shard_step::finish) return 0;
  return count_invalid(f, b.targets, f.count, f.vocab_size);
}
int64_t counter_added(const fuzz_case& f, shard_step c, const shard_buffers& b) {
  return f.vocab_start == 0 ? reported_invalid(f, c, b) : 0;
}

// finish's normaliser: the targets' weights as the summary holds them.
double shard_normaliser(const fuzz_case& f, const shard_buffers& b) {
  double d = 0;
  for (int64_t r = 0; r < f.count; ++r) {
    if (valid_class(f, b.targets.index(r), f.vocab_size)) {
      d += summary_field(b.summary, FUSEDLOSS_SHARD_SUMMARY_TARGET_WEIGHT, f.count, r);
    }
  }
  return d;
}

void check_finite(const fuzz_case& f, shard_step c, const shard_buffers& b) {
  const std::vector<slot> slots = b.slots(f, c);
  if (c == shard_step::partial || (c == shard_step::rescale && f.summary_derived)) {
    f.require(all_finite(b.summary, std::vector<char>(b.summary.count, 1)),
              "moderate inputs gave a non-finite summary");
  }
  if (c != shard_step::finish || !f.summary_derived) return;
  check_finite_losses(f, slots, shard_normaliser(f, b));
  const slot& grad = slot_named(slots, b.in_place ? "logits" : "grad_logits");
  f.require(all_finite(*grad.b, grad.writes), "moderate inputs gave a non-finite gradient");
}

using shard_trial = trial_of<fusedloss_cross_entropy_shard_params, shard_buffers>;

// Moderate values, the whole vocabulary at vocab_start 0, float64 or float32 logits: the same
// rows split over up to three ranks through partial, a MAX all-reduce done here, rescale, a SUM
// all-reduce done here (rounded to the loss dtype, as the collectives carry it) and finish give
// cross-entropy's forward_backward of the whole rows, to the rounding of the summaries; every rank
// the same loss and LSE, and only the rank at class 0 counts the invalid targets.
void check_ranks(const fuzz_case& f, const fusedloss_cross_entropy_shard_params& p,
                 const shard_buffers& original) {
  using P = fusedloss_cross_entropy_shard_params;
  const int64_t n = f.count, classes = f.classes;
  shard_buffers b = original;
  const int ldt = f.loss_dtype(), dt = f.logits_dtype;

  block loss, lse, z_loss, grad, counter;
  loss.allocate(true, ldt, f.loss_values());
  lse.allocate(true, ldt, n);
  z_loss.allocate(true, ldt, f.loss_values());
  grad.allocate(true, dt, n * classes);
  counter.allocate(true, FUSEDLOSS_INT64, 1);
  fusedloss_cross_entropy_params ce;
  fusedloss_cross_entropy_params_init(&ce);
  ce.batch = n, ce.num_classes = classes, ce.row_stride = f.stride, ce.grad_row_stride = classes;
  ce.logits = b.logits.data();
  ce.logits_dtype = p.logits_dtype, ce.targets_dtype = p.targets_dtype;
  ce.targets = b.targets.data();
  ce.weight = static_cast<const float*>(b.weight.data());
  ce.ignore_index = p.ignore_index;
  ce.label_smoothing = p.label_smoothing, ce.z_loss = p.z_loss, ce.softcap = p.softcap;
  ce.reduction = p.reduction, ce.empty_mean = p.empty_mean;
  ce.grad_scale = p.grad_scale;
  ce.grad_scale_ptr = static_cast<const float*>(b.grad_scale.data());
  ce.loss = loss.data(), ce.lse = lse.data(), ce.z_loss_out = z_loss.data();
  ce.grad_logits = grad.data();
  ce.invalid_target_count = static_cast<int64_t*>(counter.data());
  const fusedloss_status whole =
      fusedloss_cross_entropy_forward_backward(&ce, nullptr, 0, nullptr, nullptr);

  struct rank {
    P q;
    block summary, loss, lse, z_loss, counter;
  };
  const size_t ranks = f.rank_starts.size();
  std::vector<rank> rk(ranks);
  block rgrad;
  rgrad.allocate(true, dt, n * classes);
  for (size_t k = 0; k < ranks; ++k) {
    const int64_t begin = f.rank_starts[k];
    const int64_t end = k + 1 < ranks ? f.rank_starts[k + 1] : classes;
    rank& r = rk[k];
    r.summary.allocate(true, ldt, FUSEDLOSS_SHARD_SUMMARY_FIELDS * n);
    r.loss.allocate(true, ldt, f.loss_values());
    r.lse.allocate(true, ldt, n);
    r.z_loss.allocate(true, ldt, f.loss_values());
    r.counter.allocate(true, FUSEDLOSS_INT64, 1);
    r.q = p;
    r.q.num_classes = end - begin, r.q.vocab_start = begin, r.q.vocab_size = classes;
    r.q.row_stride = f.stride, r.q.grad_row_stride = classes;
    r.q.logits = b.logits.bytes.data() + begin * b.logits.width();
    r.q.targets = b.targets.data();
    r.q.weight = b.weight.given ? static_cast<const float*>(b.weight.data()) + begin : nullptr;
    r.q.grad_scale_ptr = static_cast<const float*>(b.grad_scale.data());
    r.q.summary = r.summary.data();
    r.q.loss = r.loss.data(), r.q.lse = r.lse.data(), r.q.z_loss_out = r.z_loss.data();
    r.q.grad_logits = rgrad.bytes.data() + begin * rgrad.width();
    r.q.invalid_target_count = static_cast<int64_t*>(r.counter.data());
  }
  for (rank& r : rk) {
    f.require(fusedloss_cross_entropy_shard_partial(&r.q, nullptr, 0, nullptr, nullptr) ==
                  FUSEDLOSS_SUCCESS,
              "a rank's partial was refused");
  }
  for (int64_t row = 0; row < n; ++row) {
    double m = -kInf;
    for (const rank& r : rk) m = std::max(m, r.summary.value(row));
    for (rank& r : rk) r.summary.set(row, m);
  }
  for (rank& r : rk) {
    f.require(fusedloss_cross_entropy_shard_rescale(&r.q, nullptr, 0, nullptr, nullptr) ==
                  FUSEDLOSS_SUCCESS,
              "a rank's rescale was refused");
  }
  for (int64_t i = FUSEDLOSS_SHARD_SUMMARY_SUM_EXP * n; i < FUSEDLOSS_SHARD_SUMMARY_FIELDS * n;
       ++i) {
    double sum = 0;
    for (const rank& r : rk) sum += r.summary.value(i);
    for (rank& r : rk) r.summary.set(i, sum);
  }
  for (rank& r : rk) {
    f.require(fusedloss_cross_entropy_shard_finish(&r.q, nullptr, 0, nullptr, nullptr) == whole,
              "a rank's finish returned another status than cross-entropy of the whole rows");
  }

  for (size_t k = 1; k < ranks; ++k) {
    f.require(rk[k].loss.bytes == rk[0].loss.bytes && rk[k].lse.bytes == rk[0].lse.bytes &&
                  rk[k].z_loss.bytes == rk[0].z_loss.bytes,
              "the ranks' losses or LSEs differ");
    f.require(rk[k].counter.index(0) == 0, "a rank whose slice starts past 0 counted a target");
  }
  f.require(rk[0].counter.index(0) == counter.index(0),
            "the rank at class 0 counted " + std::to_string(rk[0].counter.index(0)) +
                " invalid targets, cross-entropy " + std::to_string(counter.index(0)));

  // The summaries' rounding, relative, and the scale of a gradient: the upstream value per row.
  const double rtol = ldt == FUSEDLOSS_FLOAT64 ? 1e-12 : 1e-5;
  double d = 0, wmax = 1, lse_max = 0;
  for (int64_t row = 0; row < n; ++row) {
    const int64_t y = b.targets.index(row);
    if (valid_class(f, y, classes)) d += b.weight.given ? b.weight.value(y) : 1.0;
    if (std::isfinite(lse.value(row))) lse_max = std::max(lse_max, std::fabs(lse.value(row)));
  }
  for (int64_t c = 0; c < b.weight.count; ++c) wmax = std::max(wmax, b.weight.value(c));
  double unit = std::fabs(static_cast<double>(p.grad_scale)) *
                (b.grad_scale.given ? std::fabs(b.grad_scale.value(0)) : 1.0);
  if (f.reduction == FUSEDLOSS_REDUCTION_MEAN && d != 0) unit /= d;
  const auto near = [&](int64_t, double want) { return rtol * (1 + std::fabs(want)); };
  const auto near_grad = [&](int64_t, double want) {
    return rtol * (std::fabs(want) + unit * (1 + wmax + 2 * p.z_loss * (1 + lse_max)));
  };
  const std::vector<char> all(static_cast<size_t>(kCap), 1);
  const auto mask = [&](const block& x) {
    return std::vector<char>(all.begin(), all.begin() + x.count);
  };
  expect_near(f, rk[0].loss, loss, mask(loss), near, "shards' loss against cross-entropy's");
  expect_near(f, rk[0].lse, lse, mask(lse), near, "shards' LSE against cross-entropy's");
  expect_near(f, rk[0].z_loss, z_loss, mask(z_loss), near,
              "shards' z-loss against cross-entropy's");
  expect_near(f, rgrad, grad, mask(grad), near_grad, "shards' gradient against cross-entropy's");
}

void check_relations(const fuzz_case& f, const fusedloss_cross_entropy_shard_params& p,
                     const shard_trial&, const shard_buffers& original,
                     std::vector<unsigned char>&) {
  const bool whole = f.vocab_start == 0 && f.classes == f.vocab_size;
  if (f.moderate && whole && f.count > 0 && original.logits.given && original.targets.given &&
      picked_call(f, original) != shard_step::rescale &&
      (f.logits_dtype == FUSEDLOSS_FLOAT64 || f.logits_dtype == FUSEDLOSS_FLOAT32)) {
    check_ranks(f, p, original);
  }
}

template void fuzz_calls<fusedloss_cross_entropy_shard_params, shard_buffers>(source& s,
                                                                              fuzz_case& f);

}  // namespace fuzz
