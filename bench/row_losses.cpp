// Benchmarks of the row losses' CUDA calls (or the CPU reference's, see bench_support.hpp):
// cross-entropy with class-index targets (the LLM case) and softmax focal loss, (N, C) logits,
// float32 and bfloat16.
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
// - at 1024 x 1000 and 65536 x 80 only, softmax_focal/<dtype>/{forward,forward_backward} (gamma 2).
// compare.py's other row cases are the plain LLM rows and the 1024 x 1000 rows.
// The cross-entropy rows are the plain LLM case: int64 class indices uniform in [0, C), no weight,
// no smoothing, ignore_index at its default (-100: no row is ignored), reduction mean. Every call
// writes the per-row LSE (float32) and the loss.
//
// Bytes that must move, per call (decimal GB/s, see bench_support.hpp):
// - forward_backward and forward_then_backward: logits read once + gradient written once
//   (2 * N * C * sizeof(dtype)) + targets (8 * N) + per-row LSE (4 * N). The separate pair moves
//   more (the backward reads the logits again, and the LSE), but it is counted the same, so that
//   the ratio of the two rows' GB/s is the ratio of their throughputs;
// - forward: logits read once + targets + per-row LSE;
// - cross_entropy_vocab_parallel: what the shard path moves, logits read twice + gradient written
//   once (3 * N * C * sizeof(dtype)) + targets + per-row LSE (the 28-byte summary a row left out).
// The 4-byte loss and the workspace (the mean's normaliser and per-block partial sums) are left
// out.
//
// Inputs are generated once per (shape, dtype) in that dtype on the host (threads), uploaded, and
// kept while the rows of that shape and dtype run; logits are a triangular distribution on
// [-4, 4] (the sum of two uniforms), never 0. The small shapes run with MinTime(kSmallMinTime),
// which Google Benchmark adds to their names (/min_time:0.050): each of their repeats costs an L2
// flush and a synchronisation that last ~10x the call, and 0.5 s of calls would take ~10 s each.
// In the CPU mode (bench_support.hpp) the shapes are scaled down, the label saying to what.
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <map>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "bench_support.hpp"
#include "fusedloss/fusedloss.h"

namespace fusedloss::bench {
namespace {

/// Seconds of event time per row for the shapes whose calls take microseconds.
constexpr double kSmallMinTime = 0.05;

enum class row_kind {
  cross_entropy,
  cross_entropy_options,
  cross_entropy_ignore,
  cross_entropy_shard,
  softmax_focal
};
enum class row_call { forward_backward, forward_then_backward, forward };

const char* kind_name(row_kind k) {
  switch (k) {
    case row_kind::cross_entropy:
      return "cross_entropy";
    case row_kind::cross_entropy_options:
      return "cross_entropy_smoothing_zloss";
    case row_kind::cross_entropy_ignore:
      return "cross_entropy_smoothing_ignore";
    case row_kind::cross_entropy_shard:
      return "cross_entropy_vocab_parallel";
    default:
      return "softmax_focal";
  }
}

/// Whether row r's target is ignore_index in the cross_entropy_ignore rows: every tenth row.
bool ignored_row(int64_t r) { return r % 10 == 1; }

std::string kind_label(row_kind k, int64_t batch) {
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
    default:
      return "softmax_focal (gamma 2)";
  }
}

const char* call_name(row_call c) {
  switch (c) {
    case row_call::forward_backward:
      return "forward_backward";
    case row_call::forward_then_backward:
      return "forward_then_backward";
    default:
      return "forward";
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

constexpr fusedloss_dtype kRowDtypes[] = {FUSEDLOSS_FLOAT32, FUSEDLOSS_BFLOAT16};

struct row_case {
  row_kind kind;
  fusedloss_dtype dtype;
  row_call call;
  row_shape where;

  /// N as run (fewer on the CPU).
  int64_t batch() const { return run_batch(where.batch, where.classes); }
  std::string shape_label() const {
    return size_label(std::to_string(where.batch) + " x " + std::to_string(where.classes),
                      where.batch, where.classes);
  }
  std::string name() const {
    return std::string(kind_name(kind)) + "/" + dtype_label(dtype) + "/" + call_name(call) + "/" +
           where.name;
  }
  std::string label() const {
    return kind_label(kind, batch()) + " " + dtype_label(dtype) + " " + call_name(call) + " " +
           shape_label();
  }
  /// The same computation in any call: the fused row and its separate pair share it.
  std::string computation() const {
    return std::string(kind_name(kind)) + "/" + dtype_label(dtype) + "/" + where.name;
  }
  double bytes() const {
    const double n = static_cast<double>(batch());
    const double logits = n * static_cast<double>(where.classes) * dtype_bytes(dtype);
    const double rows = n * (sizeof(int64_t) + sizeof(float));  // targets + LSE
    const double passes = kind == row_kind::cross_entropy_shard ? 3.0
                          : call == row_call::forward           ? 1.0
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
// Inputs

/// splitmix64 of (stream, i), as unit_value in bench_support.hpp, all 64 bits.
uint64_t mix(uint64_t stream, uint64_t i) {
  uint64_t z = (i + 1) * 0x9E3779B97F4A7C15ull ^ (stream * 0xD1B54A32D192ED03ull);
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
  return z ^ (z >> 31);
}

/// Logit i: the sum of two 24-bit uniforms from one hash, scaled to [-4, 4] (triangular, so
/// normal-ish), never 0.
float logit_value(uint64_t i) {
  const uint64_t z = mix(11, i);
  const float a = static_cast<float>(z >> 40) * (1.0f / 16777216.0f);
  const float b = static_cast<float>((z >> 16) & 0xFFFFFFu) * (1.0f / 16777216.0f);
  const float x = 4.0f * (a + b - 1.0f);
  return std::fabs(x) < 1.0f / 1024 ? 0.5f : x;
}

/// Runs body(from, to) over [0, n) split across the host's threads.
template <class Body>
void parallel_for(int64_t n, const Body& body) {
  const int64_t threads =
      std::clamp<int64_t>(static_cast<int64_t>(std::thread::hardware_concurrency()), 1, 16);
  const int64_t chunk = (n + threads - 1) / threads;
  std::vector<std::thread> pool;
  for (int64_t from = chunk; from < n; from += chunk)
    pool.emplace_back([&body, from, to = std::min(n, from + chunk)] { body(from, to); });
  body(0, std::min(n, chunk));
  for (std::thread& t : pool) t.join();
}

/// Writes logits [from, from + count) in `dtype` to `out`.
void fill_logits(fusedloss_dtype dtype, int64_t from, int64_t count, void* out) {
  parallel_for(count, [&](int64_t begin, int64_t end) {
    for (int64_t i = begin; i < end; ++i) {
      const float v = logit_value(static_cast<uint64_t>(from + i));
      if (dtype == FUSEDLOSS_FLOAT32) {
        static_cast<float*>(out)[i] = v;
      } else {
        const __nv_bfloat16 b = __float2bfloat16_rn(v);
        std::memcpy(static_cast<uint16_t*>(out) + i, &b, 2);
      }
    }
  });
}

/// The device's buffers of one (shape, dtype): logits, gradient, int64 targets (and the same with
/// ignored rows), per-row LSE, the loss, and grad_loss = 1 for the backward call. One set lives at
/// a time; preparing one frees the element benchmarks' inputs first.
class row_inputs {
 public:
  static row_inputs& get() {
    static row_inputs r;
    return r;
  }

  std::string prepare(fusedloss_dtype dtype, int64_t batch, int64_t classes) {
    if (ready_ && dtype == dtype_ && batch == batch_ && classes == classes_) return {};
    release();
    device_inputs::get().release();
    const int64_t numel = batch * classes;
    const size_t bytes = static_cast<size_t>(numel) * dtype_bytes(dtype);
    cudaError_t e = logits_.allocate(bytes);
    if (e == cudaSuccess) e = grad_.allocate(bytes);
    if (e == cudaSuccess) e = targets_.allocate(static_cast<size_t>(batch) * sizeof(int64_t));
    if (e == cudaSuccess) e = ignored_.allocate(targets_.bytes());
    if (e == cudaSuccess) e = lse_.allocate(static_cast<size_t>(batch) * sizeof(float));
    if (e == cudaSuccess) e = loss_.allocate(sizeof(float));
    if (e == cudaSuccess) e = grad_loss_.allocate(sizeof(float));
    if (e != cudaSuccess)
      return cuda_error_text(e, "allocating 2 x " + std::to_string(bytes) + " bytes and the rows");

    // Logits in slices of 2^26 values, generated in the dtype and copied.
    constexpr int64_t kSlice = int64_t{1} << 26;
    const size_t width = dtype_bytes(dtype);
    std::vector<unsigned char> staging(static_cast<size_t>(std::min(numel, kSlice)) * width);
    for (int64_t from = 0; from < numel && e == cudaSuccess; from += kSlice) {
      const int64_t count = std::min(kSlice, numel - from);
      fill_logits(dtype, from, count, staging.data());
      e = copy_memory(
          static_cast<unsigned char*>(logits_.data()) + static_cast<size_t>(from) * width,
          staging.data(), static_cast<size_t>(count) * width, cudaMemcpyHostToDevice);
    }
    std::vector<int64_t> targets(static_cast<size_t>(batch)), ignored(targets.size());
    for (int64_t r = 0; r < batch; ++r) {
      targets[static_cast<size_t>(r)] =
          static_cast<int64_t>(mix(12, static_cast<uint64_t>(r)) % static_cast<uint64_t>(classes));
      ignored[static_cast<size_t>(r)] = ignored_row(r) ? -100 : targets[static_cast<size_t>(r)];
    }
    const float one = 1.0f;
    if (e == cudaSuccess)
      e = copy_memory(targets_.data(), targets.data(), targets_.bytes(), cudaMemcpyHostToDevice);
    if (e == cudaSuccess)
      e = copy_memory(ignored_.data(), ignored.data(), ignored_.bytes(), cudaMemcpyHostToDevice);
    if (e == cudaSuccess)
      e = copy_memory(grad_loss_.data(), &one, sizeof one, cudaMemcpyHostToDevice);
    // The outputs are written by the calls; start them non-zero all the same.
    if (e == cudaSuccess) e = fill_memory(grad_.data(), 0x3c, bytes);
    if (e == cudaSuccess) e = fill_memory(lse_.data(), 0x3c, lse_.bytes());
    if (e == cudaSuccess) e = fill_memory(loss_.data(), 0x3c, loss_.bytes());
    if (e == cudaSuccess) e = wait_for_device();
    if (e != cudaSuccess) return cuda_error_text(e, "uploading the row inputs");
    dtype_ = dtype;
    batch_ = batch;
    classes_ = classes;
    ready_ = true;
    return {};
  }

  void release() {
    ready_ = false;
    logits_.reset();
    grad_.reset();
    targets_.reset();
    ignored_.reset();
    lse_.reset();
    loss_.reset();
    grad_loss_.reset();
  }

  const void* logits() const { return logits_.data(); }
  void* grad() const { return grad_.data(); }
  const void* targets() const { return targets_.data(); }
  const void* ignored_targets() const { return ignored_.data(); }
  void* lse() const { return lse_.data(); }
  void* loss() const { return loss_.data(); }
  const void* grad_loss() const { return grad_loss_.data(); }

 private:
  bool ready_ = false;
  fusedloss_dtype dtype_ = FUSEDLOSS_FLOAT32;
  int64_t batch_ = 0, classes_ = 0;
  device_buffer logits_, grad_, targets_, ignored_, lse_, loss_, grad_loss_;
};

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

template <class Params>
void run_rows(benchmark::State& state, const row_case& c, const loss_api<Params>& api) {
  double copy_bytes_per_second = 0;
  if (!start_row(state, c, &copy_bytes_per_second)) return;
  session& s = session::get();
  row_inputs& in = row_inputs::get();

  // One params struct serves the three calls: forward ignores grad_logits and grad_loss, the fused
  // call ignores grad_loss, backward reads the LSE that forward wrote.
  Params p;
  api.init(&p);
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
  p.grad_logits = c.call == row_call::forward ? nullptr : in.grad();
  p.grad_loss = in.grad_loss();
  set_options(p, c.kind);

  device_buffer workspace;
  if (!allocate_workspace(state, api.workspace_size, p, workspace)) return;
  fusedloss_error err{};

  const auto invoke = [&](decltype(api.forward) function, const char* name) -> std::string {
    const fusedloss_status st = function(&p, workspace.data(), workspace.bytes(), s.stream(), &err);
    return st == FUSEDLOSS_SUCCESS ? std::string() : status_text(name, st, err);
  };
  const auto call = [&]() -> std::string {
    switch (c.call) {
      case row_call::forward_backward:
        return invoke(api.forward_backward, "forward_backward");
      case row_call::forward:
        return invoke(api.forward, "forward");
      default:
        if (std::string why = invoke(api.forward, "forward"); !why.empty()) return why;
        return invoke(api.backward, "backward");
    }
  };

  const double seconds = timed_loop(state, call);
  if (seconds < 0) return;

  if (!record_loss(state, static_cast<const float*>(in.loss()))) return;
  set_counters(state, c.bytes(), seconds, copy_bytes_per_second);

  const double per_call = seconds / static_cast<double>(std::max<int64_t>(state.iterations(), 1));
  if (c.call == row_call::forward_then_backward) {
    separate_seconds()[c.computation()] = per_call;  // the last run of the row is the one reported
  } else if (c.call == row_call::forward_backward) {
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
  fusedloss_cross_entropy_shard_params p;
  fusedloss_cross_entropy_shard_params_init(&p);
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
  if (!allocate_workspace(state, fusedloss_cross_entropy_shard_workspace_size, p, workspace)) {
    return;
  }
  fusedloss_error err{};
  const auto call = [&]() -> std::string {
    using step = fusedloss_status (*)(const fusedloss_cross_entropy_shard_params*, void*, size_t,
                                      void*, fusedloss_error*);
    const std::pair<step, const char*> steps[] = {
        {fusedloss_cross_entropy_shard_partial, "partial"},
        {fusedloss_cross_entropy_shard_rescale, "rescale"},
        {fusedloss_cross_entropy_shard_finish, "finish"}};
    for (const auto& [function, name] : steps) {
      const fusedloss_status st =
          function(&p, workspace.data(), workspace.bytes(), s.stream(), &err);
      if (st != FUSEDLOSS_SUCCESS) return status_text(name, st, err);
    }
    return {};
  };
  const double seconds = timed_loop(state, call);
  if (seconds < 0) return;
  if (!record_loss(state, static_cast<const float*>(in.loss()))) return;
  set_counters(state, c.bytes(), seconds, copy_bytes_per_second);
}

void row_benchmark(benchmark::State& state, const row_case& c) {
  if (c.kind == row_kind::cross_entropy_shard) {
    run_shard_rows(state, c);
  } else if (c.kind == row_kind::softmax_focal) {
    run_rows(state, c, FUSEDLOSS_BENCH_API(softmax_focal));
  } else {
    run_rows(state, c, FUSEDLOSS_BENCH_API(cross_entropy));
  }
}

void add_row(const row_case& c) {
  register_timed(
      c.name(), [c](benchmark::State& state) { row_benchmark(state, c); }, c.where.min_time);
}

}  // namespace

void register_row_benchmarks() {
  for (const row_shape& where : kRowShapes) {
    const std::string shape = where.name;
    for (fusedloss_dtype dtype : kRowDtypes) {
      // The separate pair before the fused row, whose speedup counter reads its time.
      for (row_call call :
           {row_call::forward, row_call::forward_then_backward, row_call::forward_backward})
        add_row({row_kind::cross_entropy, dtype, call, where});
      if (shape == "8192x128256" && dtype == FUSEDLOSS_BFLOAT16)
        add_row({row_kind::cross_entropy_options, dtype, row_call::forward_backward, where});
      if (where.llm && dtype == FUSEDLOSS_BFLOAT16) {
        add_row({row_kind::cross_entropy_ignore, dtype, row_call::forward_backward, where});
        add_row({row_kind::cross_entropy_shard, dtype, row_call::forward_backward, where});
      }
      if (!where.llm) {
        for (row_call call : {row_call::forward, row_call::forward_backward})
          add_row({row_kind::softmax_focal, dtype, call, where});
      }
    }
  }
}

void release_row_inputs() { row_inputs::get().release(); }

}  // namespace fusedloss::bench
