// Benchmarks of the row losses' CUDA calls (or the CPU reference's, see mode.hpp): cross-entropy
// with class-index targets (the LLM case) and softmax focal loss, (N, C) logits, float32 and
// bfloat16; and the row kernels' tiers, each forced, at the headline shapes.
//
// Rows, for each shape (8192 x 32000, 8192 x 128256, 4096 x 256000, 1024 x 1000, 65536 x 80) and
// dtype (float32, bfloat16), registered after the element rows (register_row_benchmarks):
// - cross_entropy/<dtype>/forward: the forward call alone (loss and per-row LSE);
// - cross_entropy/<dtype>/forward_then_backward: the forward call, then the backward call reading
//   the LSE it saved (grad_loss = 1), timed together as one region: what the fused call replaces;
// - cross_entropy/<dtype>/forward_backward: the fused training call, with `speedup_vs_separate`,
//   the forward_then_backward row's time per call over this row's, when that row ran earlier in the
//   same process (it is registered just before);
// - at 8192 x 128256 bfloat16 only, cross_entropy_smoothing_zloss/bfloat16/forward_backward: the
//   same with label_smoothing 0.1 and z_loss 1e-4 (what the options cost);
// - at the three LLM shapes in bfloat16, cross_entropy_smoothing_ignore/bfloat16/forward_backward:
//   bench/compare.py's second LLM case, label_smoothing 0.1 with every tenth row's target (rows 1,
//   11, 21, ...) at ignore_index (compare.py picks 10% at random; the label gives the count);
// - at the three LLM shapes in bfloat16, cross_entropy_vocab_parallel/bfloat16/forward_backward:
//   the vocab-parallel shard calls (partial, rescale, finish with the gradient) with one rank
//   holding the whole vocabulary and no collective between them: what the shard path costs beside
//   the fused call, whose row runs earlier;
// - at 8192 x 128256 and 1024 x 1000 in bfloat16, and at 262144 x 1024 (a shape of these rows
//   alone: the warp tier's largest row of bf16 vectors, which every tier can hold),
//   cross_entropy_tier_<tier>/bfloat16/forward_backward for each tier warp, block, cluster and
//   two_pass: the fused row's call with the tier forced, so that one run compares the tiers. The
//   row problem is the one the dispatch launches for the same params (host::validate, then
//   host::cuda::cross_entropy_problem), with `tier` set, run by kernels::run_row_loss. A tier
//   that cannot hold the shape (row_tier_for refuses it: at 8192 x 128256 the warp and block
//   tiers; the cluster tier before sm_90) skips, saying why, and so does every tier row in the CPU
//   mode; a skip is not a failure;
// - at 1024 x 1000 and 65536 x 80 only, softmax_focal/<dtype>/{forward,forward_backward} (gamma 2).
// compare.py's other row cases are the plain LLM rows and the 1024 x 1000 rows.
// The cross-entropy rows are the plain LLM case: int64 class indices uniform in [0, C), no weight,
// no smoothing, ignore_index at its default (-100: no row is ignored), reduction mean. Every call
// writes the per-row LSE (float32) and the loss.
//
// Bytes that must move, per call (decimal GB/s, see counters.hpp):
// - forward_backward, forward_then_backward and the tier rows: logits read once + gradient written
//   once (2 * N * C * sizeof(dtype)) + targets (8 * N) + per-row LSE (4 * N). The separate pair
//   moves more (the backward reads the logits again, and the LSE), but it is counted the same, so
//   that the ratio of the two rows' GB/s is the ratio of their throughputs;
// - forward: logits read once + targets + per-row LSE;
// - cross_entropy_vocab_parallel: what the shard path moves, logits read twice + gradient written
//   once (3 * N * C * sizeof(dtype)) + targets + per-row LSE (the 28-byte summary a row left out).
// The 4-byte loss and the workspace (the mean's normaliser and per-block partial sums) are left
// out.
//
// Inputs (row_inputs.hpp) are generated once per (shape, dtype) and kept while the rows of that
// shape and dtype run. The small shapes run with MinTime(kSmallMinTime), which Google Benchmark
// adds to their names (/min_time:0.050): each of their repeats costs an L2 flush and a
// synchronisation that last ~10x the call, and 0.5 s of calls would take ~10 s each. In the CPU
// mode (mode.hpp) the shapes are scaled down, the label saying to what.
#include "row_losses.hpp"  // kernels/: the row kernels' launch interface, not a header of this file

#include <algorithm>
#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include "calls.hpp"
#include "counters.hpp"
#include "cuda_dispatch.hpp"
#include "fusedloss/fusedloss.hpp"
#include "inputs.hpp"
#include "memory.hpp"
#include "mode.hpp"
#include "registry.hpp"
#include "row_inputs.hpp"
#include "session.hpp"
#include "validate.hpp"

namespace fusedloss::bench {
namespace {

using kernels::row_tier;

/// Seconds of event time per row for the shapes whose calls take microseconds.
constexpr double kSmallMinTime = 0.05;

/// Which loss and options a row computes (cross_entropy_tier: the plain case, its tier forced).
enum class row_kind {
  cross_entropy,
  cross_entropy_options,
  cross_entropy_ignore,
  cross_entropy_shard,
  cross_entropy_tier,
  softmax_focal
};

/// What a row's timed region holds: one C call, or the forward call and then the backward call
/// reading the LSE it saved, which the fused call replaces (the row's `call` is then
/// forward_backward, whose work the pair does).
enum class row_scenario { one_call, forward_then_backward };

/// The tiers the cross_entropy_tier rows force (spatial is for (N, C, S) layouts, which no row
/// has).
constexpr row_tier kForcedTiers[] = {row_tier::warp, row_tier::block, row_tier::cluster,
                                     row_tier::two_pass};

std::string kind_name(row_kind k, row_tier t) {
  switch (k) {
    case row_kind::cross_entropy:
      return "cross_entropy";
    case row_kind::cross_entropy_options:
      return "cross_entropy_smoothing_zloss";
    case row_kind::cross_entropy_ignore:
      return "cross_entropy_smoothing_ignore";
    case row_kind::cross_entropy_shard:
      return "cross_entropy_vocab_parallel";
    case row_kind::cross_entropy_tier:
      return std::string("cross_entropy_tier_") + kernels::name(t);
    default:
      return "softmax_focal";
  }
}

std::string kind_label(row_kind k, row_tier t, int64_t batch) {
  switch (k) {
    case row_kind::cross_entropy:
      return "cross_entropy";
    case row_kind::cross_entropy_options:
      return "cross_entropy (label_smoothing 0.1, z_loss 1e-4)";
    case row_kind::cross_entropy_ignore:
      return "cross_entropy (label_smoothing 0.1, " + std::to_string((batch + 8) / 10) + " of " +
             std::to_string(batch) + " rows ignored)";
    case row_kind::cross_entropy_shard:
      return "vocab-parallel cross_entropy, one rank (partial, rescale, finish)";
    case row_kind::cross_entropy_tier:
      return std::string("cross_entropy (the ") + kernels::name(t) + " tier forced)";
    default:
      return "softmax_focal (gamma 2)";
  }
}

struct row_shape {
  const char* name;  // in the benchmark's name: no regex metacharacters
  int64_t batch;     // N
  int64_t classes;   // C
  double min_time;   // 0: Google Benchmark's (--benchmark_min_time)
  bool llm;          // an LLM vocabulary
};

const row_shape kRowShapes[] = {
    {"8192x32000", 8192, 32000, 0, true},             // a Llama 2-sized vocabulary
    {"8192x128256", 8192, 128256, 0, true},           // Llama 3's vocabulary (the target row)
    {"4096x256000", 4096, 256000, 0, true},           // a Gemma-sized vocabulary
    {"1024x1000", 1024, 1000, kSmallMinTime, false},  // ImageNet classes
    {"65536x80", 65536, 80, kSmallMinTime, false},    // detection, COCO's classes
};

/// The forced-tier rows' shape that has no other row: C = 1024 bf16 is 32 lanes of 4 vectors, the
/// warp tier's largest row, so every tier holds it (1 GiB of logits and gradient).
const row_shape kTierShape = {"262144x1024", 262144, 1024, 0, false};

constexpr fusedloss_dtype kRowDtypes[] = {FUSEDLOSS_FLOAT32, FUSEDLOSS_BFLOAT16};

struct row_case {
  row_kind kind;
  fusedloss_dtype dtype;
  fusedloss::call call;
  row_shape where;
  row_scenario scenario = row_scenario::one_call;
  row_tier tier = row_tier::automatic;  // forced in the cross_entropy_tier rows

  /// N as run (fewer on the CPU).
  int64_t batch() const { return run_batch(where.batch, where.classes); }
  /// What the name and label say is timed: the call, or the scenario when it is not one call.
  const char* timed() const {
    return scenario == row_scenario::forward_then_backward ? "forward_then_backward"
                                                           : fusedloss::name(call);
  }
  std::string shape_label() const {
    return size_label(std::to_string(where.batch) + " x " + std::to_string(where.classes),
                      where.batch, where.classes);
  }
  std::string name() const {
    return kind_name(kind, tier) + "/" + dtype_label(dtype) + "/" + timed() + "/" + where.name;
  }
  std::string label() const {
    return kind_label(kind, tier, batch()) + " " + dtype_label(dtype) + " " + timed() + " " +
           shape_label();
  }
  /// The same computation in any call: the fused row and its separate pair share it.
  std::string computation() const {
    return kind_name(kind, tier) + "/" + dtype_label(dtype) + "/" + where.name;
  }
  double bytes() const {
    const double n = static_cast<double>(batch());
    const double logits = n * static_cast<double>(where.classes) * dtype_bytes(dtype);
    const double rows = n * (sizeof(int64_t) + sizeof(float));  // targets + LSE
    const double passes = kind == row_kind::cross_entropy_shard ? 3.0
                          : call == fusedloss::call::forward    ? 1.0
                                                                : 2.0;
    return passes * logits + rows;
  }
};

/// Per call seconds of each forward_then_backward row's last run, by computation().
std::map<std::string, double>& separate_seconds() {
  static std::map<std::string, double> seconds;
  return seconds;
}

// ------------------------------------------------------------------------------------------------
// The runs

void set_options(fusedloss_cross_entropy_params& p, row_kind kind) {
  if (kind == row_kind::cross_entropy_options || kind == row_kind::cross_entropy_ignore)
    p.label_smoothing = 0.1;
  if (kind == row_kind::cross_entropy_options) p.z_loss = 1e-4;
}
void set_options(fusedloss_softmax_focal_params&, row_kind) {}  // the defaults: gamma 2, no alpha

// What a row's run starts with: its label, the session's copy bandwidth (measured now when the
// copy row was filtered out, while no input is held) and the row's inputs; false after skipping the
// row.
bool start_row(benchmark::State& state, const row_case& c, double* copy_bytes_per_second) {
  session& s = session::get();
  state.SetLabel(c.label());
  if (!s.error().empty()) {
    skip(state, s.error());
    return false;
  }
  *copy_bytes_per_second = s.copy_bandwidth();
  if (std::string why = row_inputs::get().prepare(c.dtype, c.batch(), c.where.classes);
      !why.empty()) {
    skip(state, why);
    return false;
  }
  return true;
}

/// A row's params over the prepared inputs. One params struct serves the three calls: forward
/// ignores grad_logits and grad_loss, the fused call ignores grad_loss, backward reads the LSE
/// that forward wrote.
template <class Params>
Params row_params(const row_case& c) {
  const row_inputs& in = row_inputs::get();
  Params p;
  c_api<Params>::init(&p);
  p.device = run_device();
  p.batch = c.batch();
  p.num_classes = c.where.classes;
  p.logits = in.logits();
  p.logits_dtype = c.dtype;
  p.targets = c.kind == row_kind::cross_entropy_ignore ? in.ignored_targets() : in.targets();
  p.targets_dtype = FUSEDLOSS_INT64;
  p.reduction = FUSEDLOSS_REDUCTION_MEAN;
  p.loss = in.loss();
  p.lse = in.lse();
  p.grad_logits = c.call == call::forward ? nullptr : in.grad();
  p.grad_loss = in.grad_loss();
  set_options(p, c.kind);
  return p;
}

template <class Params>
void run_rows(benchmark::State& state, const row_case& c) {
  double copy_bytes_per_second = 0;
  if (!start_row(state, c, &copy_bytes_per_second)) return;
  session& s = session::get();
  const Params p = row_params<Params>(c);

  device_buffer workspace;
  if (!allocate_workspace(state, p, workspace)) return;
  fusedloss_error err{};

  const std::vector<c_step<Params>> steps =
      c.scenario == row_scenario::forward_then_backward
          ? std::vector<c_step<Params>>{step_of<Params>(call::forward),
                                        step_of<Params>(call::backward)}
          : std::vector<c_step<Params>>{step_of<Params>(c.call)};
  const double seconds =
      timed_loop(state, [&] { return call_in_order(steps, p, workspace, s.stream(), &err); });
  if (seconds < 0) return;

  if (!record_loss(state, static_cast<const float*>(row_inputs::get().loss()))) return;
  set_counters(state, c.bytes(), seconds, copy_bytes_per_second);

  const double per_call = seconds / static_cast<double>(std::max<int64_t>(state.iterations(), 1));
  if (c.scenario == row_scenario::forward_then_backward) {
    separate_seconds()[c.computation()] = per_call;  // the last run of the row is the one reported
  } else if (c.call == call::forward_backward) {
    const auto it = separate_seconds().find(c.computation());
    if (it != separate_seconds().end() && per_call > 0)
      state.counters["speedup_vs_separate"] = it->second / per_call;
  }
}

// The three shard calls of one rank holding every class; the summary stays as partial and rescale
// leave it (with one rank, the all-reduces would change nothing).
void run_shard_rows(benchmark::State& state, const row_case& c) {
  double copy_bytes_per_second = 0;
  if (!start_row(state, c, &copy_bytes_per_second)) return;
  session& s = session::get();
  row_inputs& in = row_inputs::get();
  cross_entropy_shard_params p;
  c_api<cross_entropy_shard_params>::init(&p);
  p.device = run_device();
  p.batch = c.batch();
  p.num_classes = p.vocab_size = c.where.classes;
  p.logits = in.logits();
  p.logits_dtype = c.dtype;
  p.targets = in.targets();
  p.targets_dtype = FUSEDLOSS_INT64;
  p.loss = in.loss();
  p.lse = in.lse();
  p.grad_logits = in.grad();
  device_buffer summary;
  if (const cudaError_t e = summary.allocate(static_cast<size_t>(FUSEDLOSS_SHARD_SUMMARY_FIELDS) *
                                             static_cast<size_t>(p.batch) * sizeof(float));
      e != cudaSuccess) {
    skip(state, cuda_error_text(e, "allocating the summary"));
    return;
  }
  p.summary = summary.data();
  device_buffer workspace;
  if (!allocate_workspace(state, p, workspace)) return;
  fusedloss_error err{};
  const std::vector<c_step<cross_entropy_shard_params>> steps = {
      step_of(shard_step::partial), step_of(shard_step::rescale), step_of(shard_step::finish)};
  const double seconds =
      timed_loop(state, [&] { return call_in_order(steps, p, workspace, s.stream(), &err); });
  if (seconds < 0) return;
  if (!record_loss(state, static_cast<const float*>(in.loss()))) return;
  set_counters(state, c.bytes(), seconds, copy_bytes_per_second);
}

// The fused row's call with its tier forced: the params go the C call's way (validate, then the
// dispatch's builder), and the problem straight to run_row_loss, which the C ABI cannot force.
void run_tier_rows(benchmark::State& state, const row_case& c) {
  if (on_cpu()) {
    state.SetLabel(c.label());
    skip_not_applicable(state, "the tiers are the CUDA kernels'; the CPU reference has none");
    return;
  }
  double copy_bytes_per_second = 0;
  if (!start_row(state, c, &copy_bytes_per_second)) return;
  session& s = session::get();
  fusedloss_error err{};
  cross_entropy_params resolved;
  const cross_entropy_params p = row_params<cross_entropy_params>(c);
  if (const fusedloss_status st = host::validate(&p, c.call, resolved, &err);
      st != FUSEDLOSS_SUCCESS) {
    skip(state, status_text("validate", st, err));
    return;
  }
  kernels::row_problem problem = host::cuda::cross_entropy_problem(resolved, c.call);
  problem.tier = c.tier;
  row_tier chosen = row_tier::automatic;
  if (const cudaError_t e = kernels::row_tier_for(problem, &chosen); e == cudaErrorInvalidValue) {
    skip_not_applicable(state, std::string("the ") + kernels::name(c.tier) + " tier cannot hold " +
                                   c.shape_label() + " " + dtype_label(c.dtype) + " rows here (" +
                                   cuda_error_text(e, "row_tier_for") + ")");
    return;
  } else if (e != cudaSuccess) {
    skip(state, cuda_error_text(e, "row_tier_for"));
    return;
  }
  if (chosen != c.tier) {
    skip(state, std::string("row_tier_for chose the ") + kernels::name(chosen) + " tier");
    return;
  }
  size_t bytes = 0;
  device_buffer workspace;
  cudaError_t e = kernels::row_workspace_bytes(problem, &bytes);
  if (e == cudaSuccess) e = workspace.allocate(bytes);
  if (e != cudaSuccess) {
    skip(state, cuda_error_text(e, "the workspace"));
    return;
  }
  const double seconds = timed_loop(state, [&] {
    const cudaError_t launched =
        kernels::run_row_loss(problem, workspace.data(), workspace.bytes(), s.stream());
    return launched == cudaSuccess ? std::string() : cuda_error_text(launched, "run_row_loss");
  });
  if (seconds < 0) return;
  if (!record_loss(state, static_cast<const float*>(row_inputs::get().loss()))) return;
  set_counters(state, c.bytes(), seconds, copy_bytes_per_second);
}

void row_benchmark(benchmark::State& state, const row_case& c) {
  switch (c.kind) {
    case row_kind::cross_entropy_shard:
      run_shard_rows(state, c);
      break;
    case row_kind::cross_entropy_tier:
      run_tier_rows(state, c);
      break;
    case row_kind::softmax_focal:
      run_rows<softmax_focal_params>(state, c);
      break;
    default:
      run_rows<cross_entropy_params>(state, c);
  }
}

void add_row(const row_case& c) {
  register_timed(
      c.name(), [c](benchmark::State& state) { row_benchmark(state, c); }, c.where.min_time);
}

void add_tier_rows(const row_shape& where) {
  for (row_tier tier : kForcedTiers) {
    add_row({row_kind::cross_entropy_tier, FUSEDLOSS_BFLOAT16, call::forward_backward, where,
             row_scenario::one_call, tier});
  }
}

}  // namespace

void register_row_benchmarks() {
  for (const row_shape& where : kRowShapes) {
    const std::string shape = where.name;
    for (fusedloss_dtype dtype : kRowDtypes) {
      // The separate pair before the fused row, whose speedup counter reads its time.
      add_row({row_kind::cross_entropy, dtype, call::forward, where});
      add_row({row_kind::cross_entropy, dtype, call::forward_backward, where,
               row_scenario::forward_then_backward});
      add_row({row_kind::cross_entropy, dtype, call::forward_backward, where});
      if (shape == "8192x128256" && dtype == FUSEDLOSS_BFLOAT16)
        add_row({row_kind::cross_entropy_options, dtype, call::forward_backward, where});
      if (where.llm && dtype == FUSEDLOSS_BFLOAT16) {
        add_row({row_kind::cross_entropy_ignore, dtype, call::forward_backward, where});
        add_row({row_kind::cross_entropy_shard, dtype, call::forward_backward, where});
      }
      // After the shape's other cross-entropy rows in bf16, whose inputs they share.
      if ((shape == "8192x128256" || shape == "1024x1000") && dtype == FUSEDLOSS_BFLOAT16)
        add_tier_rows(where);
      if (!where.llm) {
        for (call which : {call::forward, call::forward_backward})
          add_row({row_kind::softmax_focal, dtype, which, where});
      }
    }
  }
  add_tier_rows(kTierShape);
}

void release_row_inputs() { row_inputs::get().release(); }

}  // namespace fusedloss::bench
