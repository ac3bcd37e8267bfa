// Vocabulary-parallel cross-entropy's shard calls on the CPU path, with the ranks simulated in one
// process: each rank's slice of the logits goes through partial, the host does the two
// all-reduces, and rescale and finish follow. The loss (the same on every rank), the LSE and the
// concatenated gradient must equal the whole-row cross-entropy of the same rows, which
// tests/row_losses/ proves against finite differences.
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
#include "loss_tests.hpp"

namespace {

namespace checks = fusedloss::checks;
using checks::buffer;
using fusedloss::shard_step;

constexpr double kInf = std::numeric_limits<double>::infinity();

// The shard path differs from the whole-row path only in the order of its sums and, below float64,
// in the rounding of the summaries the collectives carry to float32 (2^-24 relative each): a row's
// LSE moves by a few float32 ulps of its magnitude (< 10 here), each probability by as much
// relative. In float64 only the order of the sums differs.
checks::tolerance tolerance_of(fusedloss_dtype logits) {
  return logits == FUSEDLOSS_FLOAT64 ? checks::tolerance{1e-12, 1e-10}
                                     : checks::tolerance{2e-6, 2e-5};
}

// One problem over whole rows: the logits (rows x vocab), targets and options.
struct problem {
  int64_t rows = 0;
  int64_t vocab = 0;
  std::vector<double> logits;   // rows * vocab
  std::vector<double> targets;  // rows
  std::vector<float> weight;    // vocab, or empty
  fusedloss_dtype dtype = FUSEDLOSS_FLOAT64;
  fusedloss_dtype targets_dtype = FUSEDLOSS_INT64;
  int64_t ignore_index = -100;
  double label_smoothing = 0;
  double z_loss = 0;
  double softcap = 0;
  fusedloss_reduction reduction = FUSEDLOSS_REDUCTION_MEAN;
  fusedloss_empty_mean empty_mean = FUSEDLOSS_EMPTY_MEAN_NAN;
  float grad_scale = 1;
  float grad_scale_in_memory = 1;  // read through grad_scale_ptr
};

struct outputs {
  std::vector<double> loss, lse, z_loss, grad;  // grad: rows x vocab, the ranks' concatenated
  int64_t invalid_status_ranks = 0;             // ranks whose finish said invalid targets
  std::vector<int64_t> counters;                // each rank's invalid-target counter
};

// What the whole-row cross-entropy gives for `pb`.
outputs whole_rows(const problem& pb) {
  auto p = fusedloss::make_cross_entropy_params();
  const fusedloss_dtype loss_dtype = checks::loss_dtype_of(pb.dtype);
  const int64_t count = pb.reduction == FUSEDLOSS_REDUCTION_NONE ? pb.rows : 1;
  buffer logits(pb.dtype, pb.logits), targets(pb.targets_dtype, pb.targets);
  buffer loss = buffer::poisoned(loss_dtype, count), z = buffer::poisoned(loss_dtype, count);
  buffer lse = buffer::poisoned(loss_dtype, pb.rows);
  buffer grad = buffer::poisoned(pb.dtype, pb.rows * pb.vocab);
  p.batch = pb.rows;
  p.num_classes = pb.vocab;
  p.logits = logits.data();
  p.logits_dtype = pb.dtype;
  p.targets = targets.data();
  p.targets_dtype = pb.targets_dtype;
  p.weight = pb.weight.empty() ? nullptr : pb.weight.data();
  p.ignore_index = pb.ignore_index;
  p.label_smoothing = pb.label_smoothing;
  p.z_loss = pb.z_loss;
  p.softcap = pb.softcap;
  p.reduction = pb.reduction;
  p.empty_mean = pb.empty_mean;
  p.loss = loss.data();
  p.lse = lse.data();
  p.z_loss_out = z.data();
  p.grad_logits = grad.data();
  p.grad_scale = pb.grad_scale;
  p.grad_scale_ptr = &pb.grad_scale_in_memory;
  fusedloss_error e;
  const fusedloss_status s = fusedloss_cross_entropy_forward_backward(&p, nullptr, 0, nullptr, &e);
  EXPECT_TRUE(s == FUSEDLOSS_SUCCESS || s == FUSEDLOSS_INVALID_TARGET) << e.message;
  return {loss.values(), lse.values(), z.values(), grad.values(), 0, {}};
}

// How the ranks share one step's options.
struct shard_options {
  int64_t pad = 0;        // row_stride = width + pad (poisoned padding columns)
  bool in_place = false;  // grad_logits == logits
  bool gradient = true;   // finish writes the gradient
};

// The same problem split at `starts` (ascending, starts[0] == 0) over ranks, the all-reduces done
// here in the summaries' dtype.
outputs shards(const problem& pb, const std::vector<int64_t>& starts, shard_options o = {}) {
  const size_t world = starts.size();
  const fusedloss_dtype loss_dtype = checks::loss_dtype_of(pb.dtype);
  const int64_t count = pb.reduction == FUSEDLOSS_REDUCTION_NONE ? pb.rows : 1;
  const int64_t n = pb.rows;
  buffer targets(pb.targets_dtype, pb.targets);
  std::vector<buffer> logits(world), summaries(world), loss(world), lse(world), z(world);
  std::vector<buffer> grad(world);
  std::vector<std::vector<float>> weights(world);
  std::vector<fusedloss::cross_entropy_shard_params> ps(world);
  outputs out;
  out.counters.assign(world, 0);
  for (size_t k = 0; k < world; ++k) {
    const int64_t start = starts[k];
    const int64_t width = (k + 1 < world ? starts[k + 1] : pb.vocab) - start;
    const int64_t stride = width + o.pad;
    std::vector<double> shard(n * stride, std::nan(""));
    for (int64_t r = 0; r < n; ++r) {
      for (int64_t c = 0; c < width; ++c)
        shard[r * stride + c] = pb.logits[r * pb.vocab + start + c];
    }
    logits[k] = buffer(pb.dtype, shard);
    summaries[k] = buffer::poisoned(loss_dtype, FUSEDLOSS_SHARD_SUMMARY_FIELDS * n);
    loss[k] = buffer::poisoned(loss_dtype, count);
    z[k] = buffer::poisoned(loss_dtype, count);
    lse[k] = buffer::poisoned(loss_dtype, n);
    grad[k] = buffer::poisoned(pb.dtype, n * stride);
    if (!pb.weight.empty()) {
      weights[k].assign(pb.weight.begin() + start, pb.weight.begin() + start + width);
    }
    auto& p = ps[k];
    p = fusedloss::make_cross_entropy_shard_params();
    p.batch = n;
    p.num_classes = width;
    p.vocab_start = start;
    p.vocab_size = pb.vocab;
    p.row_stride = stride;
    p.logits = logits[k].data();
    p.logits_dtype = pb.dtype;
    p.targets = targets.data();
    p.targets_dtype = pb.targets_dtype;
    p.weight = weights[k].empty() ? nullptr : weights[k].data();
    p.ignore_index = pb.ignore_index;
    p.label_smoothing = pb.label_smoothing;
    p.z_loss = pb.z_loss;
    p.softcap = pb.softcap;
    p.reduction = pb.reduction;
    p.empty_mean = pb.empty_mean;
    p.summary = summaries[k].data();
    p.loss = loss[k].data();
    p.lse = lse[k].data();
    p.z_loss_out = z[k].data();
    p.grad_logits = !o.gradient ? nullptr : o.in_place ? logits[k].data() : grad[k].data();
    p.grad_scale = pb.grad_scale;
    p.grad_scale_ptr = &pb.grad_scale_in_memory;
    p.invalid_target_count = &out.counters[k];
    fusedloss::run(p, shard_step::partial);
  }
  // The all-reduces, field by field, each rank receiving the same values.
  auto all_reduce = [&](int field, bool max) {
    for (int64_t r = 0; r < n; ++r) {
      double v = max ? -kInf : 0.0;
      for (size_t k = 0; k < world; ++k) {
        const double x = summaries[k][field * n + r];
        v = max ? (std::isnan(v) || std::isnan(x) ? std::nan("") : std::max(v, x)) : v + x;
      }
      for (size_t k = 0; k < world; ++k) {
        std::vector<double> values = summaries[k].values();
        values[field * n + r] = v;
        summaries[k] = buffer(loss_dtype, values);
      }
    }
  };
  all_reduce(FUSEDLOSS_SHARD_SUMMARY_MAX, true);
  for (size_t k = 0; k < world; ++k) {
    ps[k].summary = summaries[k].data();
    fusedloss::run(ps[k], shard_step::rescale);
  }
  for (int f = FUSEDLOSS_SHARD_SUMMARY_SUM_EXP; f < FUSEDLOSS_SHARD_SUMMARY_FIELDS; ++f) {
    all_reduce(f, false);
  }
  out.grad.assign(n * pb.vocab, std::nan(""));
  for (size_t k = 0; k < world; ++k) {
    ps[k].summary = summaries[k].data();
    fusedloss_error e;
    const fusedloss_status s =
        fusedloss_cross_entropy_shard_finish(&ps[k], nullptr, 0, nullptr, &e);
    EXPECT_TRUE(s == FUSEDLOSS_SUCCESS || s == FUSEDLOSS_INVALID_TARGET) << e.message;
    if (s == FUSEDLOSS_INVALID_TARGET) ++out.invalid_status_ranks;
    if (k == 0) {
      out.loss = loss[k].values();
      out.lse = lse[k].values();
      out.z_loss = z[k].values();
    } else {
      // Every rank computes the same loss from the same summaries, bit for bit.
      EXPECT_EQ(checks::max_abs_error(loss[k].values(), out.loss), 0.0) << "rank " << k;
      EXPECT_EQ(checks::max_abs_error(lse[k].values(), out.lse), 0.0) << "rank " << k;
      EXPECT_EQ(checks::max_abs_error(z[k].values(), out.z_loss), 0.0) << "rank " << k;
    }
    const std::vector<double> g = (o.in_place ? logits[k] : grad[k]).values();
    const int64_t stride = ps[k].row_stride;
    for (int64_t r = 0; r < n; ++r) {
      for (int64_t c = 0; c < ps[k].num_classes; ++c) {
        out.grad[r * pb.vocab + starts[k] + c] = g[r * stride + c];
      }
      if (!o.in_place) {
        for (int64_t c = ps[k].num_classes; c < stride; ++c) {
          EXPECT_TRUE(std::isnan(g[r * stride + c])) << "padding written, rank " << k;
        }
      }
    }
  }
  return out;
}

void expect_close(const std::vector<double>& got, const std::vector<double>& want,
                  const checks::tolerance& tol, const char* what) {
  ASSERT_EQ(got.size(), want.size()) << what;
  for (size_t i = 0; i < got.size(); ++i) {
    EXPECT_TRUE(tol.accepts(got[i], want[i]))
        << what << "[" << i << "]: got " << got[i] << ", want " << want[i];
  }
}

void expect_matches_whole_rows(const problem& pb, const std::vector<int64_t>& starts,
                               shard_options o = {}) {
  const outputs want = whole_rows(pb);
  const outputs got = shards(pb, starts, o);
  const checks::tolerance tol = tolerance_of(pb.dtype);
  expect_close(got.loss, want.loss, tol, "loss");
  expect_close(got.lse, want.lse, tol, "lse");
  expect_close(got.z_loss, want.z_loss, tol, "z_loss");
  if (o.gradient) expect_close(got.grad, want.grad, tol, "grad");
}

// A random split of `vocab` classes over `world` ranks, each at least one class wide.
std::vector<int64_t> random_starts(std::mt19937_64& rng, int64_t vocab, size_t world) {
  std::vector<int64_t> cuts;
  for (int64_t c = 1; c < vocab; ++c) cuts.push_back(c);
  std::shuffle(cuts.begin(), cuts.end(), rng);
  cuts.resize(world - 1);
  cuts.push_back(0);
  std::sort(cuts.begin(), cuts.end());
  return cuts;
}

problem random_problem(std::mt19937_64& rng, int64_t rows, int64_t vocab, fusedloss_dtype dtype) {
  problem pb;
  pb.rows = rows;
  pb.vocab = vocab;
  pb.dtype = dtype;
  pb.logits = checks::round_to(dtype, checks::uniform(rng, rows * vocab, -4, 4));
  pb.targets = checks::class_indices(rng, rows, vocab);
  return pb;
}

// Every option on and off, every reduction, world sizes 1 to 4 with random uneven slices (one
// class wide included), some rows ignored, both index dtypes.
void sweep(fusedloss_dtype dtype) {
  SEEDED_RNG(rng);
  const int64_t vocab = 13;
  for (size_t world = 1; world <= 4; ++world) {
    for (int options = 0; options < 16; ++options) {
      for (fusedloss_reduction reduction :
           {FUSEDLOSS_REDUCTION_NONE, FUSEDLOSS_REDUCTION_MEAN, FUSEDLOSS_REDUCTION_SUM}) {
        problem pb = random_problem(rng, 9, vocab, dtype);
        if (options & 1) {
          for (double w : checks::uniform(rng, vocab, 0.25, 2)) pb.weight.push_back(float(w));
          pb.weight[3] = 0;  // a class of weight 0
        }
        if (options & 2) pb.label_smoothing = 0.15;
        if (options & 4) pb.z_loss = 0.02;
        if (options & 8) pb.softcap = 3;
        pb.reduction = reduction;
        pb.targets[2] = pb.ignore_index;
        pb.targets_dtype = world % 2 ? FUSEDLOSS_INT64 : FUSEDLOSS_INT32;
        pb.grad_scale = 0.75f;
        pb.grad_scale_in_memory = 1.5f;
        std::vector<int64_t> starts = random_starts(rng, vocab, world);
        if (world == 4) starts = {0, 1, 2, 7};  // two one-class slices at the front
        SCOPED_TRACE("world " + std::to_string(world) + ", options " + std::to_string(options) +
                     ", reduction " + fusedloss_reduction_string(reduction));
        expect_matches_whole_rows(pb, starts, {static_cast<int64_t>(world % 3), false, true});
      }
    }
  }
}

TEST(VocabParallel, MatchesWholeRowsFloat64) { sweep(FUSEDLOSS_FLOAT64); }
TEST(VocabParallel, MatchesWholeRowsFloat32) { sweep(FUSEDLOSS_FLOAT32); }

TEST(VocabParallel, TargetsInEveryRanksSlice) {
  SEEDED_RNG(rng);
  problem pb = random_problem(rng, 8, 8, FUSEDLOSS_FLOAT64);
  for (int64_t r = 0; r < 8; ++r) pb.targets[r] = static_cast<double>(r);  // one class a rank
  pb.label_smoothing = 0.1;
  expect_matches_whole_rows(pb, {0, 1, 2, 3, 4, 5, 6, 7});
}

TEST(VocabParallel, InPlaceGradient) {
  SEEDED_RNG(rng);
  problem pb = random_problem(rng, 6, 10, FUSEDLOSS_FLOAT32);
  pb.label_smoothing = 0.2;
  pb.softcap = 2;
  expect_matches_whole_rows(pb, {0, 4, 5}, {2, true, true});
}

TEST(VocabParallel, LossOnlyFinishNeedsNoLogits) {
  SEEDED_RNG(rng);
  problem pb = random_problem(rng, 5, 7, FUSEDLOSS_FLOAT64);
  pb.z_loss = 0.1;
  expect_matches_whole_rows(pb, {0, 3}, {0, false, false});
  // finish without a gradient reads the summaries alone: no logits needed.
  auto p = fusedloss::make_cross_entropy_shard_params();
  buffer targets(FUSEDLOSS_INT64, pb.targets);
  buffer summary(FUSEDLOSS_FLOAT64, std::vector<double>(FUSEDLOSS_SHARD_SUMMARY_FIELDS * 5, 1.0));
  buffer loss = buffer::poisoned(FUSEDLOSS_FLOAT64, 1);
  p.batch = 5;
  p.num_classes = 3;
  p.vocab_size = 7;
  p.logits_dtype = FUSEDLOSS_FLOAT64;
  p.targets = targets.data();
  p.summary = summary.data();
  p.loss = loss.data();
  fusedloss::run(p, shard_step::finish);
  EXPECT_FALSE(std::isnan(loss[0]));
}

TEST(VocabParallel, LargeLogitsAndMaskedShards) {
  SEEDED_RNG(rng);
  problem pb = random_problem(rng, 6, 12, FUSEDLOSS_FLOAT64);
  for (int64_t r = 0; r < 6; ++r) {
    for (int64_t c = 0; c < 4; ++c) pb.logits[r * 12 + c] += 1000;   // rank 0 holds the maximum
    for (int64_t c = 8; c < 12; ++c) pb.logits[r * 12 + c] = -kInf;  // rank 2 all masked
    pb.targets[r] = static_cast<double>(r % 8);
  }
  expect_matches_whole_rows(pb, {0, 4, 8});
  pb.label_smoothing = 0.1;  // a masked class under smoothing: an infinite loss, as whole rows
  expect_matches_whole_rows(pb, {0, 4, 8});
  pb.weight.assign(12, 1.0f);
  for (int c = 8; c < 12; ++c) pb.weight[c] = 0;  // ... unless its weight is exactly 0
  const outputs got = shards(pb, {0, 4, 8});
  for (double v : got.loss) EXPECT_TRUE(std::isfinite(v));
  expect_matches_whole_rows(pb, {0, 4, 8});
}

TEST(VocabParallel, NaNLogitOnOneRankMakesItsRowNaN) {
  SEEDED_RNG(rng);
  problem pb = random_problem(rng, 3, 6, FUSEDLOSS_FLOAT64);
  pb.logits[1 * 6 + 5] = std::nan("");
  pb.reduction = FUSEDLOSS_REDUCTION_NONE;
  const outputs got = shards(pb, {0, 3});
  EXPECT_FALSE(std::isnan(got.loss[0]));
  EXPECT_TRUE(std::isnan(got.loss[1]));
  EXPECT_FALSE(std::isnan(got.loss[2]));
  expect_matches_whole_rows(pb, {0, 3});
}

TEST(VocabParallel, InvalidTargetsAreCountedOnce) {
  SEEDED_RNG(rng);
  problem pb = random_problem(rng, 6, 9, FUSEDLOSS_FLOAT64);
  pb.targets[1] = 9;   // == vocab_size
  pb.targets[4] = -3;  // negative, not ignore_index
  pb.reduction = FUSEDLOSS_REDUCTION_NONE;
  const outputs got = shards(pb, {0, 2, 6});
  EXPECT_EQ(got.invalid_status_ranks, 3);  // every rank's finish says so
  EXPECT_EQ(got.counters, (std::vector<int64_t>{2, 0, 0}));
  EXPECT_EQ(got.loss[1], 0.0);
  EXPECT_EQ(got.loss[4], 0.0);
  for (int64_t c = 0; c < 9; ++c) EXPECT_EQ(got.grad[1 * 9 + c], 0.0);
  expect_matches_whole_rows(pb, {0, 2, 6});
}

TEST(VocabParallel, EmptyMean) {
  SEEDED_RNG(rng);
  for (fusedloss_empty_mean policy : {FUSEDLOSS_EMPTY_MEAN_NAN, FUSEDLOSS_EMPTY_MEAN_ZERO}) {
    problem pb = random_problem(rng, 4, 5, FUSEDLOSS_FLOAT64);
    pb.targets.assign(4, 2);
    pb.ignore_index = 2;  // an ignore_index inside the vocabulary: every row ignored
    pb.empty_mean = policy;
    const outputs got = shards(pb, {0, 2});
    EXPECT_EQ(std::isnan(got.loss[0]), policy == FUSEDLOSS_EMPTY_MEAN_NAN);
    for (double g : got.grad) EXPECT_EQ(g, 0.0);
    expect_matches_whole_rows(pb, {0, 2});
  }
}

TEST(VocabParallel, NoRows) {
  problem pb;
  pb.vocab = 4;
  pb.reduction = FUSEDLOSS_REDUCTION_SUM;
  const outputs got = shards(pb, {0, 1});
  EXPECT_EQ(got.loss, std::vector<double>{0.0});
}

// A refused call names the argument and writes nothing (the summary stays poisoned).
TEST(VocabParallel, BadInputIsRefused) {
  buffer logits(FUSEDLOSS_FLOAT32, std::vector<double>(8, 0.5));
  buffer targets(FUSEDLOSS_INT64, {0, 3});
  buffer summary = buffer::poisoned(FUSEDLOSS_FLOAT32, FUSEDLOSS_SHARD_SUMMARY_FIELDS * 2);
  const auto good = [&] {
    auto p = fusedloss::make_cross_entropy_shard_params();
    p.batch = 2;
    p.num_classes = 4;
    p.vocab_start = 4;
    p.vocab_size = 8;
    p.logits = logits.data();
    p.targets = targets.data();
    p.summary = summary.data();
    return p;
  };
  struct bad {
    const char* argument;
    void (*spoil)(fusedloss::cross_entropy_shard_params&);
  };
  const bad cases[] = {
      {"num_classes", [](auto& p) { p.num_classes = 0; }},
      {"vocab_size", [](auto& p) { p.vocab_size = 3; }},
      {"vocab_start", [](auto& p) { p.vocab_start = 5; }},
      {"vocab_start", [](auto& p) { p.vocab_start = -1; }},
      {"batch", [](auto& p) { p.batch = -1; }},
      {"row_stride", [](auto& p) { p.row_stride = 3; }},
      {"targets_dtype", [](auto& p) { p.targets_dtype = FUSEDLOSS_FLOAT32; }},
      {"logits_dtype", [](auto& p) { p.logits_dtype = FUSEDLOSS_INT32; }},
      {"summary", [](auto& p) { p.summary = nullptr; }},
      {"targets", [](auto& p) { p.targets = nullptr; }},
      {"logits", [](auto& p) { p.logits = nullptr; }},
      {"label_smoothing", [](auto& p) { p.label_smoothing = 1.5; }},
      {"z_loss", [](auto& p) { p.z_loss = -1; }},
      {"softcap", [](auto& p) { p.softcap = std::nan(""); }},
      {"reduction", [](auto& p) { p.reduction = static_cast<fusedloss_reduction>(7); }},
      {"struct_size", [](auto& p) { p.struct_size = 8; }},
  };
  for (const bad& c : cases) {
    auto p = good();
    c.spoil(p);
    fusedloss_error e;
    EXPECT_EQ(fusedloss_cross_entropy_shard_partial(&p, nullptr, 0, nullptr, &e),
              FUSEDLOSS_INVALID_ARGUMENT)
        << c.argument;
    EXPECT_STREQ(e.argument, c.argument);
    for (double v : summary.values()) EXPECT_TRUE(std::isnan(v)) << c.argument << ": written";
  }
  auto p = good();
  fusedloss_error e;
  EXPECT_EQ(fusedloss_cross_entropy_shard_partial(&p, nullptr, 0, nullptr, &e), FUSEDLOSS_SUCCESS)
      << e.message;
  size_t bytes = 1;
  ASSERT_EQ(fusedloss_cross_entropy_shard_workspace_size(&p, &bytes, &e), FUSEDLOSS_SUCCESS);
  EXPECT_EQ(bytes, 0u);  // the CPU needs none
}

}  // namespace
