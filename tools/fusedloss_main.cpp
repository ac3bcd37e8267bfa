// `fusedloss validate`: runs every loss and option over a sweep of shapes and prints one table row
// per check.
//
// - fd: backward's gradient (float64 logits, a random non-unit upstream gradient) against central
//   finite differences of forward.
// - fused: forward_backward's loss and gradient (with grad_scale and grad_scale_ptr) against
//   forward's loss and backward's gradient.
// - product: fused linear + cross-entropy's loss against cross-entropy of the logits x W^T + b
//   computed here. Its fd and fused rows differentiate the hidden states, the weight and the bias
//   together.
// - shards: vocabulary-parallel cross-entropy's shard calls over 1 to 4 ranks (the all-reduces
//   done here) against the whole rows' cross-entropy: loss, LSE and the concatenated gradient, in
//   float64 and float32.
// - golden: every case of the golden files, which come from an oracle that shares no code with the
//   library (tests/golden/make_golden.py).
// - gpu: the CUDA path in float32/float16/bfloat16 against the CPU reference on the same stored
//   inputs (compiled in with FUSEDLOSS_VALIDATE_CUDA, run when a device is present); linear +
//   cross-entropy (with the default workspace and with one that splits the rows into chunks) and
//   the shard path in float32 and bfloat16.
//
// --perturb and --tolerance-scale make a correct library fail on purpose: the test suite uses them
// to prove that the tool notices a wrong result.
#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cinttypes>
#include <cmath>
#include <cstdarg>
#include <cstdio>
#include <cstring>
#include <deque>
#include <filesystem>
#include <functional>
#include <limits>
#include <optional>
#include <random>
#include <stdexcept>
#include <string>
#include <type_traits>
#include <vector>

#include "checks.hpp"
#include "fusedloss/fusedloss.hpp"
#include "golden.hpp"

#ifdef FUSEDLOSS_VALIDATE_CUDA
#include <cuda_runtime.h>

#include "cuda_support.hpp"
#endif

namespace {

namespace checks = fusedloss::checks;
using checks::buffer;
using checks::tolerance;
using rng_t = std::mt19937_64;

constexpr double kEps = std::numeric_limits<double>::epsilon();

std::string format(const char* fmt, ...) __attribute__((format(printf, 1, 2)));
std::string format(const char* fmt, ...) {
  char text[512];
  va_list args;
  va_start(args, fmt);
  std::vsnprintf(text, sizeof text, fmt, args);
  va_end(args);
  return text;
}

// ------------------------------------------------------------------------------------------------
// Where a call's buffers live

// Host memory for the CPU path, device memory for the CUDA one, so that one problem description
// drives both.
class memory {
 public:
  virtual ~memory() = default;
  virtual fusedloss_device device() const = 0;
  /// A copy of `b` that lives as long as *this; null for an empty buffer.
  virtual void* put(const buffer& b) = 0;
  /// The values now at `p`, which `put` returned.
  virtual std::vector<double> get(const void* p) const = 0;
  /// `bytes` of scratch memory (null for 0).
  virtual void* scratch(size_t bytes) = 0;
};

class host_buffers final : public memory {
 public:
  fusedloss_device device() const override { return FUSEDLOSS_DEVICE_CPU; }
  void* put(const buffer& b) override {
    if (b.size() == 0) return nullptr;
    held_.push_back(b);  // a deque never moves its elements, so the pointer stays valid
    return held_.back().data();
  }
  std::vector<double> get(const void* p) const override {
    for (const buffer& b : held_) {
      if (b.data() == p) return b.values();
    }
    return {};
  }
  void* scratch(size_t bytes) override {
    return bytes == 0 ? nullptr : put(buffer::poisoned(FUSEDLOSS_INT64, (bytes + 7) / 8));
  }

 private:
  std::deque<buffer> held_;
};

// Device memory reached through the golden runner's interface, so that the CUDA runtime is named
// in one place only (gpu_memory below).
class device_buffers final : public memory {
 public:
  explicit device_buffers(const checks::device_memory& api) : api_(api) {}
  device_buffers(const device_buffers&) = delete;
  device_buffers& operator=(const device_buffers&) = delete;
  ~device_buffers() override {
    for (const held& h : held_) api_.release(h.pointer);
  }
  fusedloss_device device() const override { return FUSEDLOSS_DEVICE_CUDA; }
  void* put(const buffer& b) override {
    if (b.size() == 0) return nullptr;
    void* p = allocate(b.size_bytes(), b.dtype(), b.size());
    api_.to_device(p, b.data(), b.size_bytes());
    return p;
  }
  std::vector<double> get(const void* p) const override {
    for (const held& h : held_) {
      if (h.pointer != p) continue;
      buffer out = buffer::poisoned(h.dtype, h.count);
      api_.to_host(out.data(), p, out.size_bytes());
      return out.values();
    }
    return {};
  }
  void* scratch(size_t bytes) override {
    return bytes == 0 ? nullptr : allocate(bytes, FUSEDLOSS_INT64, 0);
  }

 private:
  struct held {
    void* pointer;
    fusedloss_dtype dtype;
    size_t count;
  };
  void* allocate(size_t bytes, fusedloss_dtype dtype, size_t count) {
    held_.push_back({api_.allocate(bytes), dtype, count});
    return held_.back().pointer;
  }
  const checks::device_memory& api_;
  std::vector<held> held_;
};

// The CUDA runtime's memory calls, or nothing and the reason the GPU checks cannot run.
std::optional<checks::device_memory> gpu_memory(std::string& why_not) {
  if (!fusedloss_built_with_cuda()) {
    why_not = "fusedloss was built without CUDA";
    return std::nullopt;
  }
#ifdef FUSEDLOSS_VALIDATE_CUDA
  if (why_not = checks::why_no_gpu(); !why_not.empty()) return std::nullopt;
  const auto check = [](cudaError_t e, const char* what) {
    if (e != cudaSuccess) throw std::runtime_error(checks::cuda_error_text(e, what));
  };
  return checks::device_memory{
      [check](size_t bytes) {
        void* p = nullptr;
        check(cudaMalloc(&p, bytes), "cudaMalloc");
        return p;
      },
      [check](void* dst, const void* src, size_t bytes) {
        check(cudaMemcpy(dst, src, bytes, cudaMemcpyHostToDevice), "cudaMemcpy");
      },
      [check](void* dst, const void* src, size_t bytes) {
        check(cudaMemcpy(dst, src, bytes, cudaMemcpyDeviceToHost), "cudaMemcpy");
      },
      [](void* p) { cudaFree(p); }};
#else
  why_not = "this tool was built without the CUDA runtime (FUSEDLOSS_VALIDATE_CUDA)";
  return std::nullopt;
#endif
}

// ------------------------------------------------------------------------------------------------
// Problems: one loss with its options on one shape and reduction

struct shape {
  int64_t n, c, s;
  std::string name() const {
    return s == 1 ? format("%" PRId64 "x%" PRId64, n, c)
                  : format("%" PRId64 "x%" PRId64 "x%" PRId64, n, c, s);
  }
  int64_t rows() const { return n * s; }
  int64_t elements() const { return n * c * s; }
};

using fusedloss::call;

// The upstream gradient: backward's grad_loss, or forward_backward's grad_scale times the float
// behind grad_scale_ptr.
struct upstream {
  std::vector<double> grad_loss;
  float grad_scale = 1;
  float grad_scale_in_memory = 1;
};

struct outputs {
  std::vector<double> loss, grad;
  std::vector<double> lse = {};  // the vocabulary-parallel checks' only
};

// Inputs besides the logits, kept on the host and put into the call's memory for every call.
struct inputs {
  buffer targets;
  buffer weight;       // BCE's and cross-entropy's weight, softmax focal's alpha
  buffer pos_weight;   // BCE only
  buffer linear_bias;  // linear + cross-entropy only: the bias's starting values, when it has one
};

const float* floats(memory& m, const buffer& b) { return static_cast<const float*>(m.put(b)); }

void attach(fusedloss_bce_params& p, const inputs& in, memory& m) {
  p.targets = m.put(in.targets);
  p.targets_dtype = in.targets.dtype();
  p.weight = floats(m, in.weight);
  p.pos_weight = floats(m, in.pos_weight);
}
template <class Params>
void attach(Params& p, const inputs& in, memory& m) {
  p.targets = m.put(in.targets);
  p.targets_dtype = in.targets.dtype();
  if constexpr (std::is_same_v<Params, fusedloss_cross_entropy_params> ||
                std::is_same_v<Params, fusedloss_linear_cross_entropy_params>)
    p.weight = floats(m, in.weight);
  if constexpr (std::is_same_v<Params, fusedloss_softmax_focal_params>)
    p.alpha = floats(m, in.weight);
}

template <class Params>
constexpr bool is_row_loss = std::is_same_v<Params, fusedloss_cross_entropy_params> ||
                             std::is_same_v<Params, fusedloss_softmax_focal_params>;

struct problem {
  std::string loss, options, shape;
  fusedloss_reduction reduction;
  std::vector<double> logits;  // the layout the call reads, row padding included
  std::vector<bool> padding;   // logits the loss never reads (row_stride > C*S)
  size_t losses;               // loss values under none: rows or elements
  size_t terms;                // logits that enter one loss value: C for row losses, else 1
  std::function<outputs(memory&, call, fusedloss_dtype, const std::vector<double>& logits,
                        const upstream&)>
      run;
  size_t loss_count() const { return reduction == FUSEDLOSS_REDUCTION_NONE ? losses : 1; }
};

// Runs call `kind` of `p`, whose inputs and outputs are already in `m`: backward with upstream
// gradient `up.grad_loss`, forward_backward with it split over grad_scale and *grad_scale_ptr.
// `gradient` reads back what the call wrote of the gradient.
template <class Params>
outputs run_call(memory& m, Params p, call kind, fusedloss_dtype loss_dtype, const upstream& up,
                 const std::function<std::vector<double>()>& gradient) {
  fusedloss::workspace ws{nullptr, fusedloss::workspace_size(p)};
  ws.data = m.scratch(ws.bytes);
  switch (kind) {
    case call::forward:
      fusedloss::forward(p, ws);
      return outputs{m.get(p.loss), {}};
    case call::backward:
      p.grad_loss = m.put(buffer(loss_dtype, up.grad_loss));
      fusedloss::backward(p, ws);
      return outputs{{}, gradient()};
    case call::forward_backward:
      p.grad_scale = up.grad_scale;
      p.grad_scale_ptr = floats(m, buffer(FUSEDLOSS_FLOAT32, {up.grad_scale_in_memory}));
      fusedloss::forward_backward(p, ws);
      return outputs{m.get(p.loss), gradient()};
  }
  return outputs{};
}

fusedloss_dtype loss_dtype_of(fusedloss_dtype dtype) {
  return dtype == FUSEDLOSS_FLOAT64 ? dtype : FUSEDLOSS_FLOAT32;
}

template <class Params>
problem make_problem(std::string loss, std::string options, const shape& sh, const Params& base,
                     const inputs& in, rng_t& rng) {
  problem pr{std::move(loss), std::move(options), sh.name(), base.reduction, {}, {}, 0, 1, {}};
  if constexpr (is_row_loss<Params>) {
    const int64_t extent = base.num_classes * base.spatial;
    const int64_t stride = base.row_stride != 0 ? base.row_stride : extent;
    pr.padding.resize(base.batch * stride);
    for (size_t i = 0; i < pr.padding.size(); ++i) pr.padding[i] = int64_t(i) % stride >= extent;
    pr.losses = base.batch * base.spatial;
    pr.terms = base.num_classes;
  } else {
    pr.padding.assign(base.numel, false);
    pr.losses = base.numel;
  }
  // [-3, 3]: every loss is smooth and well conditioned there, so finite differences are meaningful.
  pr.logits = checks::uniform(rng, pr.padding.size(), -3, 3);
  const size_t losses = pr.losses;
  pr.run = [base, in, losses](memory& m, call kind, fusedloss_dtype dtype,
                              const std::vector<double>& logits, const upstream& up) {
    Params p = base;
    p.device = m.device();
    attach(p, in, m);
    p.logits = m.put(buffer(dtype, logits));
    p.logits_dtype = dtype;
    const fusedloss_dtype loss_dtype = loss_dtype_of(dtype);
    p.loss =
        m.put(buffer::poisoned(loss_dtype, p.reduction == FUSEDLOSS_REDUCTION_NONE ? losses : 1));
    // Poisoned, so that a gradient the call fails to write (or padding it writes) shows up.
    p.grad_logits = m.put(buffer::poisoned(dtype, logits.size()));
    return run_call(m, p, kind, loss_dtype, up, [&] { return m.get(p.grad_logits); });
  };
  return pr;
}

// ------------------------------------------------------------------------------------------------
// Fused linear + cross-entropy: a problem whose "logits" are the three inputs it differentiates

using lce_p = fusedloss_linear_cross_entropy_params;
using ce_p = fusedloss_cross_entropy_params;

// Values on a grid of 2^-10 in [-bound, bound], bound <= 1. With the hidden states, the weight and
// the bias on it and a power-of-two finite-difference step (kFdStep, 2^-20), every product x w and
// every logit's sum of them is exact in double (multiples of 2^-30 below 2^22), also with one input
// moved by the step: the logits are exact in every evaluation, whatever the order of their sums.
// So the tool's product equals the reference's bit for bit, and finite differences of the loss
// round exactly as cross-entropy's own rows do (fd_tolerance).
std::vector<double> on_grid(rng_t& rng, size_t count, double bound) {
  std::vector<double> v = checks::uniform(rng, count, -bound, bound);
  for (double& x : v) x = std::round(x * 1024) / 1024;
  return v;
}

// Smallest to largest: the budget of a chunk of one row (the query refuses every budget below it)
// and the workspace of one chunk of every row; a third of the way between them splits the rows into
// about three chunks of balanced size. The query alone tells where the first lies.
size_t split_budget(lce_p p) {
  p.max_workspace_bytes = 0;
  const size_t whole = fusedloss::workspace_size(p);
  size_t refused = 0, accepted = whole;  // 0 asks for the default budget, so it is never tried
  while (accepted - refused > 1) {
    const size_t middle = refused + (accepted - refused) / 2;
    p.max_workspace_bytes = middle;
    size_t bytes = 0;
    fusedloss_error e;
    const bool fits =
        fusedloss_linear_cross_entropy_workspace_size(&p, &bytes, &e) == FUSEDLOSS_SUCCESS;
    (fits ? accepted : refused) = middle;
  }
  p.max_workspace_bytes = accepted + (whole - accepted) / 3;
  if (p.batch > 1 && fusedloss::workspace_size(p) >= whole) {
    throw std::runtime_error(
        format("max_workspace_bytes %zu holds every row in one chunk", p.max_workspace_bytes));
  }
  return p.max_workspace_bytes;
}

// Linear + cross-entropy of `values`: the hidden states (N, H), the weight (V, H) and the bias (V,
// when the problem has one) concatenated; its gradient is concatenated the same way. `split` runs
// the rows in several chunks of the workspace (CUDA only: the CPU reference has no chunks).
outputs run_linear(const lce_p& base, const inputs& in, memory& m, call kind, fusedloss_dtype dtype,
                   const std::vector<double>& values, const upstream& up, bool split) {
  lce_p p = base;
  const size_t n = p.batch, h = p.hidden, v = p.num_classes;
  const bool bias = in.linear_bias.size() != 0;
  const auto part = [&](size_t first, size_t count) {
    return buffer(dtype,
                  std::vector<double>(values.begin() + first, values.begin() + first + count));
  };
  p.device = m.device();
  attach(p, in, m);
  p.input = m.put(part(0, n * h));
  p.input_dtype = dtype;
  p.linear_weight = m.put(part(n * h, v * h));
  p.linear_bias = bias ? m.put(part((n + v) * h, v)) : nullptr;
  const fusedloss_dtype loss_dtype = loss_dtype_of(dtype);
  p.grad_linear_dtype = loss_dtype;  // below float64: float32, the default
  p.loss = m.put(buffer::poisoned(loss_dtype, p.reduction == FUSEDLOSS_REDUCTION_NONE ? n : 1));
  p.grad_input = m.put(buffer::poisoned(dtype, n * h));
  p.grad_linear_weight = m.put(buffer::poisoned(loss_dtype, v * h));
  p.grad_linear_bias = bias ? m.put(buffer::poisoned(loss_dtype, v)) : nullptr;
  if (split) p.max_workspace_bytes = split_budget(p);
  return run_call(m, p, kind, loss_dtype, up, [&] {
    std::vector<double> g = m.get(p.grad_input);
    for (const void* rest : {p.grad_linear_weight, p.grad_linear_bias}) {
      if (rest == nullptr) continue;
      const std::vector<double> more = m.get(rest);
      g.insert(g.end(), more.begin(), more.end());
    }
    return g;
  });
}

struct linear_problem {
  problem pr;     // logits: the inputs of run_linear, concatenated; for fd and fused
  problem whole;  // cross-entropy of the same targets and options: the loss's oracle
  lce_p base;
  inputs in;

  /// The logits x W^T + b of `values` (laid out as pr.logits), (N, V).
  std::vector<double> product(const std::vector<double>& values) const {
    const int64_t n = base.batch, h = base.hidden, v = base.num_classes;
    const bool bias = in.linear_bias.size() != 0;
    std::vector<double> z(n * v);
    for (int64_t r = 0; r < n; ++r) {
      for (int64_t c = 0; c < v; ++c) {
        double sum = bias ? values[(n + v) * h + c] : 0.0;
        for (int64_t k = 0; k < h; ++k) sum += values[r * h + k] * values[n * h + c * h + k];
        z[r * v + c] = sum;
      }
    }
    return z;
  }
};

linear_problem make_linear_problem(std::string options, const shape& sh, const lce_p& base,
                                   const inputs& in, rng_t& rng) {
  const int64_t n = base.batch, h = base.hidden, v = base.num_classes;
  linear_problem lp{
      {"linear_ce", options, sh.name(), base.reduction, {}, {}, size_t(n), size_t(v), {}},
      {},
      base,
      in};
  // Logits of magnitude about 1 (the weight scaled by 2 / sqrt(H)), where cross-entropy is smooth
  // and well conditioned.
  std::vector<double>& values = lp.pr.logits;
  values = on_grid(rng, n * h, 1);
  const std::vector<double> w = on_grid(rng, v * h, 2 / std::sqrt(double(h)));
  const std::vector<double> b = in.linear_bias.values();
  values.insert(values.end(), w.begin(), w.end());
  values.insert(values.end(), b.begin(), b.end());
  lp.pr.padding.assign(values.size(), false);
  lp.pr.run = [base, in](memory& m, call kind, fusedloss_dtype dtype, const std::vector<double>& x,
                         const upstream& up) {
    return run_linear(base, in, m, kind, dtype, x, up, false);
  };
  ce_p ce = fusedloss::make_cross_entropy_params();
  ce.batch = n;
  ce.num_classes = v;
  ce.ignore_index = base.ignore_index;
  ce.label_smoothing = base.label_smoothing;
  ce.z_loss = base.z_loss;
  ce.softcap = base.softcap;
  ce.reduction = base.reduction;
  ce.empty_mean = base.empty_mean;
  lp.whole = make_problem("cross_entropy", std::move(options), shape{n, v, 1}, ce, in, rng);
  return lp;
}

// ------------------------------------------------------------------------------------------------
// Vocabulary-parallel cross-entropy: the ranks' shard calls, simulated in one process

struct shard_problem {
  std::string options, shape;
  ce_p base;                    // the whole rows' sizes and options, without buffers
  inputs in;                    // the targets and the whole vocabulary's class weights
  std::vector<double> logits;   // (N, V)
  std::vector<int64_t> widths;  // the ranks' slices, in vocabulary order

  size_t loss_count() const {
    return base.reduction == FUSEDLOSS_REDUCTION_NONE ? size_t(base.batch) : 1;
  }
};

// Odd ranks' rows are one element longer than their slice (row_stride > num_classes), so that
// strides are exercised and padding the gradient must not write sits between rows.
int64_t shard_padding(size_t rank) { return int64_t(rank % 2); }

// Each rank's partial, the MAX all-reduce, rescale, the SUM all-reduce and finish, in `m`. The loss
// and LSE are rank 0's (a rank that disagrees throws); the gradient is the ranks' concatenated, (N,
// V), followed by every padding element of their gradients (still poisoned when right).
outputs shards(const shard_problem& sp, memory& m, fusedloss_dtype dtype, const upstream& up) {
  const int64_t n = sp.base.batch, vocab = sp.base.num_classes;
  const size_t world = sp.widths.size();
  const fusedloss_dtype loss_dtype = loss_dtype_of(dtype);
  const void* targets = m.put(sp.in.targets);
  const float* scale = floats(m, buffer(FUSEDLOSS_FLOAT32, {up.grad_scale_in_memory}));
  const std::vector<double> weight = sp.in.weight.values();
  std::vector<fusedloss::cross_entropy_shard_params> ranks;
  std::vector<fusedloss::workspace> workspaces;
  std::vector<int64_t> starts;
  int64_t start = 0;
  for (size_t k = 0; k < world; start += sp.widths[k], ++k) {
    const int64_t width = sp.widths[k], stride = width + shard_padding(k);
    std::vector<double> shard(n * stride, NAN);
    for (int64_t r = 0; r < n; ++r) {
      for (int64_t c = 0; c < width; ++c) shard[r * stride + c] = sp.logits[r * vocab + start + c];
    }
    auto p = fusedloss::make_cross_entropy_shard_params();
    p.device = m.device();
    p.batch = n;
    p.num_classes = width;
    p.vocab_start = start;
    p.vocab_size = vocab;
    p.row_stride = stride;
    p.logits = m.put(buffer(dtype, shard));
    p.logits_dtype = dtype;
    p.targets = targets;
    p.targets_dtype = sp.in.targets.dtype();
    if (!weight.empty()) {
      p.weight = floats(
          m, buffer(FUSEDLOSS_FLOAT32, {weight.begin() + start, weight.begin() + start + width}));
    }
    p.ignore_index = sp.base.ignore_index;
    p.label_smoothing = sp.base.label_smoothing;
    p.z_loss = sp.base.z_loss;
    p.softcap = sp.base.softcap;
    p.reduction = sp.base.reduction;
    p.empty_mean = sp.base.empty_mean;
    p.summary = m.put(buffer::poisoned(loss_dtype, FUSEDLOSS_SHARD_SUMMARY_FIELDS * n));
    p.loss = m.put(buffer::poisoned(loss_dtype, sp.loss_count()));
    p.lse = m.put(buffer::poisoned(loss_dtype, n));
    p.grad_logits = m.put(buffer::poisoned(dtype, n * stride));
    p.grad_scale = up.grad_scale;
    p.grad_scale_ptr = scale;
    fusedloss::workspace ws{nullptr, fusedloss::workspace_size(p)};
    ws.data = m.scratch(ws.bytes);
    ranks.push_back(p);
    workspaces.push_back(ws);
    starts.push_back(start);
  }
  const auto step = [&](fusedloss::shard_step s) {
    for (size_t k = 0; k < world; ++k) fusedloss::run(ranks[k], s, workspaces[k]);
  };
  // The collectives, here on the host: in rank order and in the summaries' dtype, each addition
  // rounded as a collective's is; every rank receives the same values.
  const auto all_reduce = [&](int first, int fields, bool max) {
    std::vector<std::vector<double>> summaries(world);
    for (size_t k = 0; k < world; ++k) summaries[k] = m.get(ranks[k].summary);
    for (int64_t i = first * n; i < (first + fields) * n; ++i) {
      double v = max ? -INFINITY : 0.0;
      for (const std::vector<double>& s : summaries) {
        const double x = s[i];
        if (max) {
          v = std::isnan(v) || std::isnan(x) ? NAN : std::max(v, x);  // a NaN sticks
        } else {
          v = loss_dtype == FUSEDLOSS_FLOAT32 ? double(float(v) + float(x)) : v + x;
        }
      }
      for (std::vector<double>& s : summaries) s[i] = v;
    }
    for (size_t k = 0; k < world; ++k) ranks[k].summary = m.put(buffer(loss_dtype, summaries[k]));
  };
  step(fusedloss::shard_step::partial);
  all_reduce(FUSEDLOSS_SHARD_SUMMARY_MAX, 1, true);
  step(fusedloss::shard_step::rescale);
  all_reduce(FUSEDLOSS_SHARD_SUMMARY_SUM_EXP, FUSEDLOSS_SHARD_SUMMARY_SUMMED, false);
  step(fusedloss::shard_step::finish);

  outputs out{m.get(ranks[0].loss), std::vector<double>(n * vocab), m.get(ranks[0].lse)};
  std::vector<double> padding;
  for (size_t k = 0; k < world; ++k) {
    // finish computes them from the same summaries alone: the same bits on every rank.
    if (checks::max_abs_error(m.get(ranks[k].loss), out.loss) != 0 ||
        checks::max_abs_error(m.get(ranks[k].lse), out.lse) != 0) {
      throw std::runtime_error(format("rank %zu's loss or LSE differs from rank 0's", k));
    }
    const std::vector<double> g = m.get(ranks[k].grad_logits);
    const int64_t width = sp.widths[k], stride = ranks[k].row_stride;
    for (int64_t r = 0; r < n; ++r) {
      for (int64_t c = 0; c < stride; ++c) {
        const double x = g[r * stride + c];
        if (c < width) {
          out.grad[r * vocab + starts[k] + c] = x;
        } else {
          padding.push_back(x);
        }
      }
    }
  }
  out.grad.insert(out.grad.end(), padding.begin(), padding.end());
  return out;
}

// The whole rows' forward_backward on the same logits, laid out as shards() lays out its outputs:
// the shard path's oracle.
outputs whole_rows(const shard_problem& sp, memory& m, fusedloss_dtype dtype, const upstream& up) {
  ce_p p = sp.base;
  p.device = m.device();
  attach(p, sp.in, m);
  p.logits = m.put(buffer(dtype, sp.logits));
  p.logits_dtype = dtype;
  const fusedloss_dtype loss_dtype = loss_dtype_of(dtype);
  p.loss = m.put(buffer::poisoned(loss_dtype, sp.loss_count()));
  p.lse = m.put(buffer::poisoned(loss_dtype, p.batch));
  p.grad_logits = m.put(buffer::poisoned(dtype, sp.logits.size()));
  outputs out =
      run_call(m, p, call::forward_backward, loss_dtype, up, [&] { return m.get(p.grad_logits); });
  out.lse = m.get(p.lse);
  for (size_t k = 0; k < sp.widths.size(); ++k) {
    out.grad.insert(out.grad.end(), size_t(sp.base.batch * shard_padding(k)), NAN);
  }
  return out;
}

// ------------------------------------------------------------------------------------------------
// The sweep: for each loss, option combinations built from named options

// A named option: a scalar field set to a value, or a function that changes the params and inputs.
template <class Params>
struct option {
  const char* name;
  void (*apply)(Params&, inputs&, rng_t&, const shape&) = nullptr;
  double Params::*field = nullptr;
  double value = 0;
};

template <class Params>
option<Params> set(const char* name, double Params::*field, double value) {
  return {name, nullptr, field, value};
}

template <class Params>
struct loss_sweep {
  const char* loss;
  void (*setup)(Params&, inputs&, rng_t&, const shape&);  // sizes and default targets
  std::vector<std::vector<option<Params>>> combinations;
  std::vector<shape> shapes;
};

buffer weights(rng_t& rng, int64_t count) {
  return buffer(FUSEDLOSS_FLOAT32, checks::uniform(rng, count, 0.5, 2));
}

template <class Params>
void element_setup(Params& p, inputs& in, rng_t& rng, const shape& sh) {
  p.numel = sh.elements();
  in.targets = buffer(FUSEDLOSS_FLOAT32, checks::class_indices(rng, sh.elements(), 2));
  if constexpr (std::is_same_v<Params, fusedloss_bce_params>) p.num_classes = sh.c;
  if constexpr (std::is_same_v<Params, fusedloss_mse_params>) {
    in.targets = buffer(FUSEDLOSS_FLOAT32, checks::uniform(rng, sh.elements(), -3, 3));
  }
}

template <class Params>
void row_setup(Params& p, inputs& in, rng_t& rng, const shape& sh) {
  p.batch = sh.n;
  p.num_classes = sh.c;
  p.spatial = sh.s;
  in.targets = buffer(FUSEDLOSS_INT64, checks::class_indices(rng, sh.rows(), sh.c));
}

template <class Params>
void soft_targets(Params&, inputs& in, rng_t& rng, const shape& sh) {
  in.targets = buffer(FUSEDLOSS_FLOAT32, checks::uniform(rng, sh.elements(), 0, 1));
}

// Every third row ignored (never the first, so no sweep shape ends with all rows ignored, whose
// mean is NaN by policy).
template <class Params>
void ignore_rows(Params& p, inputs& in, rng_t&, const shape&) {
  p.ignore_index = -1;
  std::vector<double> t = in.targets.values();
  for (size_t r = 1; r < t.size(); r += 3) t[r] = -1;
  in.targets = buffer(in.targets.dtype(), t);
}

template <class Params>
void row_stride(Params& p, inputs&, rng_t&, const shape& sh) {
  p.row_stride = sh.c * sh.s + 3;
}

template <class Params>
void int32_targets(Params&, inputs& in, rng_t&, const shape&) {
  in.targets = buffer(FUSEDLOSS_INT32, in.targets.values());
}

template <class Params>
void class_weight(Params&, inputs& in, rng_t& rng, const shape& sh) {
  in.weight = weights(rng, sh.c);
}

// Probabilities of each row (n, s) over its C classes, laid out as the logits.
void probability_targets(fusedloss_cross_entropy_params&, inputs& in, rng_t& rng, const shape& sh) {
  std::vector<double> q = checks::uniform(rng, sh.elements(), 0.05, 1);
  for (int64_t n = 0; n < sh.n; ++n) {
    for (int64_t s = 0; s < sh.s; ++s) {
      double sum = 0;
      for (int64_t c = 0; c < sh.c; ++c) sum += q[(n * sh.c + c) * sh.s + s];
      for (int64_t c = 0; c < sh.c; ++c) q[(n * sh.c + c) * sh.s + s] /= sum;
    }
  }
  in.targets = buffer(FUSEDLOSS_FLOAT32, q);
}

using bce_p = fusedloss_bce_params;
using focal_p = fusedloss_sigmoid_focal_params;
using mse_p = fusedloss_mse_params;
using sf_p = fusedloss_softmax_focal_params;

const std::vector<shape> element_shapes = {{1, 1, 1}, {3, 5, 1}, {17, 33, 1}};
const std::vector<shape> row_shapes = {{1, 1, 1}, {3, 5, 1}, {17, 33, 1}, {4, 2, 3}};

const option<bce_p> bce_weight_per_element = {"weight per element",
                                              [](bce_p&, inputs& in, rng_t& rng, const shape& sh) {
                                                in.weight = weights(rng, sh.elements());
                                              }};
const option<bce_p> bce_weight_per_class = {"weight per class",
                                            [](bce_p& p, inputs& in, rng_t& rng, const shape& sh) {
                                              p.weight_layout = FUSEDLOSS_WEIGHT_PER_CLASS;
                                              in.weight = weights(rng, sh.c);
                                            }};
const option<bce_p> bce_pos_weight = {
    "pos_weight",
    [](bce_p&, inputs& in, rng_t& rng, const shape& sh) { in.pos_weight = weights(rng, sh.c); }};
const option<bce_p> bce_soft_targets = {"soft targets", soft_targets<bce_p>};

const loss_sweep<bce_p> bce_sweep = {"bce",
                                     element_setup<bce_p>,
                                     {{},
                                      {bce_weight_per_element},
                                      {bce_weight_per_class},
                                      {bce_pos_weight},
                                      {bce_soft_targets},
                                      {bce_weight_per_class, bce_pos_weight, bce_soft_targets}},
                                     element_shapes};

const loss_sweep<focal_p> sigmoid_focal_sweep = {
    "sigmoid_focal",
    element_setup<focal_p>,
    {{set("gamma 0", &focal_p::gamma, 0), set("alpha -1", &focal_p::alpha, -1)},
     {set("gamma 0.5", &focal_p::gamma, 0.5), set("alpha 0.25", &focal_p::alpha, 0.25)},
     {set("gamma 2", &focal_p::gamma, 2), set("alpha 0.25", &focal_p::alpha, 0.25)},
     {set("gamma 2", &focal_p::gamma, 2), set("alpha -1", &focal_p::alpha, -1)},
     {set("gamma 0.5", &focal_p::gamma, 0.5), {"soft targets", soft_targets<focal_p>}}},
    element_shapes};

const loss_sweep<mse_p> mse_sweep = {"mse", element_setup<mse_p>, {{}}, element_shapes};

const option<ce_p> ce_weight = {"weight", class_weight<ce_p>};
const option<ce_p> ce_ignore = {"ignore_index", ignore_rows<ce_p>};
const option<ce_p> ce_stride = {"row_stride > C*S", row_stride<ce_p>};
const option<ce_p> smoothing = set("label_smoothing 0.1", &ce_p::label_smoothing, 0.1);
const option<ce_p> z_loss = set("z_loss 0.1", &ce_p::z_loss, 0.1);
// Soft-capping is smooth (tanh), and 2 bends logits of [-3, 3] well into its curved part.
const option<ce_p> softcap = set("softcap 2", &ce_p::softcap, 2);
const option<ce_p> probabilities = {"probability targets", probability_targets};

const loss_sweep<ce_p> cross_entropy_sweep = {
    "cross_entropy",
    row_setup<ce_p>,
    {{},
     {ce_weight},
     {ce_ignore},
     {smoothing},
     {z_loss},
     {softcap},
     {ce_stride},
     {{"int32 targets", int32_targets<ce_p>}},
     {ce_weight, ce_ignore, smoothing},
     {ce_weight, ce_ignore, smoothing, z_loss, softcap, ce_stride},
     {probabilities},
     {probabilities, ce_weight},
     {probabilities, smoothing},
     {probabilities, ce_weight, smoothing, z_loss, softcap, ce_stride}},
    row_shapes};

const loss_sweep<sf_p> softmax_focal_sweep = {
    "softmax_focal",
    row_setup<sf_p>,
    {{set("gamma 0", &sf_p::gamma, 0)},
     {set("gamma 0.5", &sf_p::gamma, 0.5)},
     {set("gamma 2", &sf_p::gamma, 2), {"alpha", class_weight<sf_p>}},
     {set("gamma 0.5", &sf_p::gamma, 0.5),
      {"alpha", class_weight<sf_p>},
      {"ignore_index", ignore_rows<sf_p>},
      {"row_stride > C*S", row_stride<sf_p>}}},
    row_shapes};

// Every combination of `sweep` on each of its shapes under each reduction: `build(shape, params,
// inputs, name)` makes the problems of one, named "reduction, option, ...".
template <class Params, class Build>
void sweep_problems(const loss_sweep<Params>& sweep, Params (*make)(), rng_t& rng, Build&& build) {
  for (const auto& combination : sweep.combinations) {
    for (const shape& sh : sweep.shapes) {
      for (const fusedloss_reduction r :
           {FUSEDLOSS_REDUCTION_NONE, FUSEDLOSS_REDUCTION_MEAN, FUSEDLOSS_REDUCTION_SUM}) {
        Params p = make();
        p.reduction = r;
        inputs in;
        sweep.setup(p, in, rng, sh);
        std::string name = fusedloss_reduction_string(r);
        for (const option<Params>& o : combination) {
          if (o.apply != nullptr) o.apply(p, in, rng, sh);
          if (o.field != nullptr) p.*o.field = o.value;
          name += std::string(", ") + o.name;
        }
        build(sh, p, in, std::move(name));
      }
    }
  }
}

template <class Params>
void add_problems(const loss_sweep<Params>& sweep, Params (*make)(), rng_t& rng,
                  std::vector<problem>& out) {
  sweep_problems(sweep, make, rng,
                 [&](const shape& sh, const Params& p, const inputs& in, std::string name) {
                   out.push_back(make_problem(sweep.loss, std::move(name), sh, p, in, rng));
                 });
}

std::vector<problem> all_problems(rng_t& rng) {
  std::vector<problem> out;
  add_problems(bce_sweep, fusedloss::make_bce_params, rng, out);
  add_problems(sigmoid_focal_sweep, fusedloss::make_sigmoid_focal_params, rng, out);
  add_problems(mse_sweep, fusedloss::make_mse_params, rng, out);
  add_problems(cross_entropy_sweep, fusedloss::make_cross_entropy_params, rng, out);
  add_problems(softmax_focal_sweep, fusedloss::make_softmax_focal_params, rng, out);
  return out;
}

// A linear + cross-entropy shape's (n, c, s) are (N, H, V), so that its name reads NxHxV. Each of
// N, H and V is 33 once, odd sizes that no vector width divides; the finite differences' cost
// grows as (N + V) H * N H V, so no two are 33 at once.
const std::vector<shape> linear_shapes = {{7, 7, 33}, {7, 33, 7}, {33, 7, 7}};

void linear_setup(lce_p& p, inputs& in, rng_t& rng, const shape& sh) {
  p.batch = sh.n;
  p.hidden = sh.c;
  p.num_classes = sh.s;
  in.targets = buffer(FUSEDLOSS_INT64, checks::class_indices(rng, sh.n, sh.s));
}

const option<lce_p> linear_bias = {"bias", [](lce_p&, inputs& in, rng_t& rng, const shape& sh) {
                                     in.linear_bias =
                                         buffer(FUSEDLOSS_FLOAT64, on_grid(rng, sh.s, 0.5));
                                   }};
const option<lce_p> linear_weight = {"weight", [](lce_p&, inputs& in, rng_t& rng, const shape& sh) {
                                       in.weight = weights(rng, sh.s);
                                     }};
const option<lce_p> linear_smoothing = set("label_smoothing 0.1", &lce_p::label_smoothing, 0.1);
const option<lce_p> linear_z_loss = set("z_loss 0.1", &lce_p::z_loss, 0.1);
// The logits are about 1 in magnitude: a cap of 1 bends them well into tanh's curved part.
const option<lce_p> linear_softcap = set("softcap 1", &lce_p::softcap, 1);

const loss_sweep<lce_p> linear_sweep = {"linear_ce",
                                        linear_setup,
                                        {{},
                                         {linear_bias},
                                         {linear_bias, linear_smoothing},
                                         {linear_weight, linear_z_loss},
                                         {linear_bias, linear_softcap},
                                         {linear_bias,
                                          linear_weight,
                                          {"ignore_index", ignore_rows<lce_p>},
                                          linear_smoothing,
                                          linear_z_loss,
                                          linear_softcap}},
                                        linear_shapes};

std::vector<linear_problem> linear_problems(rng_t& rng) {
  std::vector<linear_problem> out;
  sweep_problems(linear_sweep, fusedloss::make_linear_cross_entropy_params, rng,
                 [&](const shape& sh, const lce_p& p, const inputs& in, std::string name) {
                   out.push_back(make_linear_problem(std::move(name), sh, p, in, rng));
                 });
  return out;
}

// The whole rows' options; every problem runs over 1 to 4 ranks.
const loss_sweep<ce_p> shard_sweep = {"vocab_ce",
                                      row_setup<ce_p>,
                                      {{},
                                       {ce_weight, ce_ignore},
                                       {smoothing, {"int32 targets", int32_targets<ce_p>}},
                                       {z_loss, softcap},
                                       {ce_weight, ce_ignore, smoothing, z_loss, softcap}},
                                      {{9, 13, 1}}};

// The ranks' slices of the 13 classes: uneven, and one class wide for some.
const std::vector<std::vector<int64_t>> shard_widths = {{13}, {9, 4}, {5, 1, 7}, {1, 1, 5, 6}};

std::vector<shard_problem> shard_problems(rng_t& rng) {
  std::vector<shard_problem> out;
  sweep_problems(shard_sweep, fusedloss::make_cross_entropy_params, rng,
                 [&](const shape& sh, const ce_p& p, const inputs& in, const std::string& name) {
                   for (const std::vector<int64_t>& widths : shard_widths) {
                     std::string slices;
                     for (const int64_t w : widths) {
                       slices += (slices.empty() ? "" : "+") + std::to_string(w);
                     }
                     out.push_back({name + ", slices " + slices, sh.name(), p, in,
                                    checks::uniform(rng, sh.elements(), -3, 3), widths});
                   }
                 });
  return out;
}

// ------------------------------------------------------------------------------------------------
// Verdicts and the table

double max_abs(const std::vector<double>& values) {
  double m = 0;
  for (double x : values) {
    if (std::isfinite(x)) m = std::max(m, std::fabs(x));
  }
  return m;
}

struct verdict {
  double max_error = 0;
  tolerance tol{0, 0};
  bool pass = true;
  double excess = 0;  // the largest |got - want| / (atol + rtol |want|); infinite where it fails
  std::string note;   // why it failed, when the numbers alone do not say
};

// The verdict to report of two: a failure over a pass, else the closer call.
verdict worse(const verdict& a, const verdict& b) {
  if (a.pass != b.pass) return a.pass ? b : a;
  return b.excess > a.excess ? b : a;
}

struct label {
  std::string check, loss, options, shape, dtype;
};

// Where the golden files are: beside an installed tool (<prefix>/share/fusedloss/golden for
// <prefix>/bin/fusedloss), else in the source tree the build was made from.
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

struct settings {
  std::string device = "auto";
  std::string golden_dir = default_golden_dir();
  double tolerance_scale = 1;
  double perturb = 0;
  uint64_t seed = 0;
};

class validator {
 public:
  explicit validator(const settings& s) : s_(s) {}
  const settings& options() const { return s_; }

  // Every tolerance of the sweep goes through here, so that --tolerance-scale reaches them all.
  // `bounds`, when given, adds an absolute bound of each element's own to tol's atol; the row
  // reports the largest sum.
  verdict judge(const std::vector<double>& got, const std::vector<double>& want, tolerance tol,
                const std::vector<double>& bounds = {}) const {
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
        v.excess = std::max(
            v.excess, std::fabs(got[i] - want[i]) / (own.atol + own.rtol * std::fabs(want[i])));
      }
    }
    return v;
  }

  // What the backend under test returned, made wrong on purpose by --perturb.
  outputs under_test(outputs o) const {
    for (std::vector<double>* values : {&o.loss, &o.grad, &o.lse}) {
      for (double& x : *values) x *= 1 + s_.perturb;
    }
    return o;
  }

  // Runs one check and prints its row. A call that throws fails the check.
  template <class Check>
  void check(const label& l, Check&& body) {
    try {
      const verdict v = body();
      print(l, &v, v.pass ? "pass" : "FAIL" + (v.note.empty() ? "" : " (" + v.note + ")"));
      ++(v.pass ? passed_ : failed_);
    } catch (const std::exception& e) {
      fail(l, e.what());
    }
  }

  void fail(const label& l, const std::string& why) {
    print(l, nullptr, "FAIL (" + why + ")");
    ++failed_;
  }

  void header() const {
    row("check", "loss", "options", "shape", "dtype", "max error", "tolerance", "result");
  }

  int finish(double seconds) const {
    std::printf("validate (%.1f s): %d passed, %d failed\n", seconds, passed_, failed_);
    return failed_ > 0 ? 1 : 0;
  }

 private:
  static void row(const std::string& check, const std::string& loss, const std::string& options,
                  const std::string& shape, const std::string& dtype, const std::string& error,
                  const std::string& tol, const std::string& result) {
    std::printf("%-10s  %-13s  %-62s  %-7s  %-8s  %-9s  %-23s  %s\n", check.c_str(), loss.c_str(),
                options.c_str(), shape.c_str(), dtype.c_str(), error.c_str(), tol.c_str(),
                result.c_str());
  }

  void print(const label& l, const verdict* v, const std::string& result) const {
    std::string error = "-", tol = "-";
    if (v != nullptr) {
      error = format("%.2e", v->max_error);
      tol = v->tol.rtol == 0 ? format("abs %.1e", v->tol.atol)
                             : format("abs %.1e rel %.1e", v->tol.atol, v->tol.rtol);
    }
    row(l.check, l.loss, l.options, l.shape, l.dtype, error, tol, result);
  }

  settings s_;
  int passed_ = 0, failed_ = 0;
};

// ------------------------------------------------------------------------------------------------
// The checks

// Upstream gradient values: non-unit, mixed in sign, and exact in float32 (the loss dtype of the
// 16-bit paths and the type of grad_scale), so that one set serves every dtype and call.
std::vector<double> upstream_values(rng_t& rng, size_t count) {
  std::vector<double> g = checks::uniform(rng, count, 0.5, 2);
  for (double& x : g) x *= rng() % 4 == 0 ? -1 : 1;
  return checks::round_to(FUSEDLOSS_FLOAT32, g);
}

// Central differences with h = 2^-20 (about 1e-6; a power of two, so that inputs on on_grid's grid
// stay on a grid when moved by it) have two errors. Truncation, h^2/6 |f'''|, stays below 1e-12:
// every loss here is smooth with O(1) third derivatives on logits in [-3, 3] (weights, upstream
// gradients and the soft-cap's 1/s^2 are O(1) too; linear + cross-entropy's, through logits linear
// in each input with O(1) slopes, add up over at most 33 rows, as S below does). Rounding: f is a
// double-precision sum of terms of total magnitude S; each of f(x +- h) is off by a few eps*S, and
// their difference is divided by 2h, so about eps*S/h (2e-10 for S = 1). Over many seeds the
// largest error seen is 2 eps*S/h; the tolerance allows 32, and --perturb 1e-3 still fails every
// check whose gradient is not all 0.
constexpr double kFdStep = 0x1p-20;
tolerance fd_tolerance(double magnitude) {
  return {1e-12 + 32 * kEps * std::max(magnitude, 1.0) / kFdStep, 0};
}

verdict fd_check(const validator& v, const problem& pr, rng_t& rng) {
  const upstream up{upstream_values(rng, pr.loss_count())};
  // The forward is the oracle here: scaling loss and gradient together is invisible to finite
  // differences, so only the gradient is the backend under test.
  const auto f = [&](const std::vector<double>& x) {
    host_buffers m;
    const std::vector<double> loss = pr.run(m, call::forward, FUSEDLOSS_FLOAT64, x, up).loss;
    double sum = 0;
    for (size_t i = 0; i < loss.size(); ++i) sum += up.grad_loss[i] * loss[i];
    return sum;
  };
  host_buffers m;
  const std::vector<double> loss = pr.run(m, call::forward, FUSEDLOSS_FLOAT64, pr.logits, up).loss;
  double magnitude = 0;
  for (size_t i = 0; i < loss.size(); ++i) magnitude += std::fabs(up.grad_loss[i] * loss[i]);

  const outputs got = v.under_test(pr.run(m, call::backward, FUSEDLOSS_FLOAT64, pr.logits, up));
  std::vector<double> want = checks::finite_difference(f, pr.logits, kFdStep);
  for (size_t i = 0; i < want.size(); ++i) {
    if (pr.padding[i]) want[i] = NAN;  // never written, so still poisoned
  }
  return v.judge(got.grad, want, fd_tolerance(magnitude));
}

// forward_backward's upstream gradient split over grad_scale and *grad_scale_ptr, and backward's
// equivalent: their product (exact in double), broadcast to every loss value.
struct fused_upstream {
  upstream fused, separate;
  fused_upstream(rng_t& rng, size_t count) {
    const std::vector<double> ab = upstream_values(rng, 2);
    fused.grad_scale = float(ab[0]);
    fused.grad_scale_in_memory = float(ab[1]);
    separate.grad_loss.assign(count, ab[0] * ab[1]);
  }
};

// forward_backward against forward and backward: the same double-precision formulas, possibly
// evaluated in another order, so they agree to a few ulps of the largest value compared.
tolerance same_formula_tolerance(const std::vector<double>& want) {
  const double rtol = checks::rounding_tolerance(FUSEDLOSS_FLOAT64).rtol;
  return {rtol * max_abs(want), rtol};
}

verdict fused_check(const validator& v, const problem& pr, rng_t& rng) {
  const fused_upstream up(rng, pr.loss_count());
  host_buffers m;
  const auto run = [&](call kind, const upstream& u) {
    return v.under_test(pr.run(m, kind, FUSEDLOSS_FLOAT64, pr.logits, u));
  };
  const outputs fb = run(call::forward_backward, up.fused);
  const outputs f = run(call::forward, up.separate);
  const outputs b = run(call::backward, up.separate);
  return worse(v.judge(fb.loss, f.loss, same_formula_tolerance(f.loss)),
               v.judge(fb.grad, b.grad, same_formula_tolerance(b.grad)));
}

// Linear + cross-entropy's forward against cross-entropy of the logits computed here. The logits
// are exact (on_grid), so both sides run the same double-precision cross-entropy on the same
// values: a few ulps at most (the same bits, in practice).
verdict product_check(const validator& v, const linear_problem& lp) {
  host_buffers m;
  const upstream unused{};
  const std::vector<double> want =
      lp.whole.run(m, call::forward, FUSEDLOSS_FLOAT64, lp.product(lp.pr.logits), unused).loss;
  const outputs got =
      v.under_test(lp.pr.run(m, call::forward, FUSEDLOSS_FLOAT64, lp.pr.logits, unused));
  return v.judge(got.loss, want, same_formula_tolerance(want));
}

// The kernels compute in float32 and round once to the output dtype; the reference computes in
// double and rounds once. Each float32 term is within 32 float32 ulps (2e-6) of exact: a handful of
// operations, each within a few ulps (fast exp and log included); rounding to the output dtype adds
// one of its ulps (rounding_tolerance's rtol). A value summed from `terms` float32 terms (a row's
// LSE, a reduction) adds up to one float32 ulp of the running sum per addition, in any order:
// terms * 2^-24 of the largest value compared.
tolerance device_tolerance(fusedloss_dtype out, const std::vector<double>& want, size_t terms) {
  const tolerance r = checks::rounding_tolerance(out);
  const double u = std::ldexp(1.0, -24);
  return {r.atol + double(terms) * u * max_abs(want), r.rtol + 32 * u};
}

// The CUDA path against the CPU reference, both given the same stored inputs.
verdict gpu_check(const validator& v, const checks::device_memory& api, const problem& pr,
                  fusedloss_dtype dtype, rng_t& rng) {
  const upstream up{upstream_values(rng, pr.loss_count())};
  const fused_upstream split(rng, pr.loss_count());
  host_buffers host;
  device_buffers device(api);
  const auto run = [&](memory& m, call kind, const upstream& u) {
    return pr.run(m, kind, dtype, pr.logits, u);
  };
  const outputs want_f = run(host, call::forward, up);
  const outputs want_b = run(host, call::backward, up);
  const outputs want_fb = run(host, call::backward, split.separate);
  const outputs f = v.under_test(run(device, call::forward, up));
  const outputs b = v.under_test(run(device, call::backward, up));
  const outputs fb = v.under_test(run(device, call::forward_backward, split.fused));
  // A loss value sums `terms` logits' contributions; a reduction sums all of those.
  const size_t loss_terms = pr.terms * (pr.loss_count() == 1 ? pr.losses : 1);
  const tolerance loss_tol = device_tolerance(FUSEDLOSS_FLOAT32, want_f.loss, loss_terms);
  return worse(
      worse(v.judge(f.loss, want_f.loss, loss_tol), v.judge(fb.loss, want_f.loss, loss_tol)),
      worse(v.judge(b.grad, want_b.grad, device_tolerance(dtype, want_b.grad, pr.terms)),
            v.judge(fb.grad, want_fb.grad, device_tolerance(dtype, want_fb.grad, pr.terms))));
}

tolerance plus(tolerance t, double atol) { return {t.atol + atol, t.rtol}; }

// How far cross-entropy's outputs can move when every (soft-capped) logit and every row's LSE is
// off by at most t, t << 1, to first order. Row loss a (LSE - z_y) + b sum_c w_c (LSE - z_c) +
// lambda LSE^2, with a = (1 - eps) w_y, b = eps / V and W the weights' total (a + b W <= w_max),
// moves by at most 2 t (a + b W + lambda |LSE|) <= k t, k = 2 (w_max + lambda Lambda), Lambda >=
// |LSE|; loss() allows twice that. The row's gradient up cap' (a (p - onehot) + b (p W - w) +
// 2 lambda LSE p) sums to at most |up| k in absolute value over the row's classes; each p_c =
// exp(z_c - LSE) moves by at most 2t relative (3t allows for e^2t), cap' = 1 - tanh^2(z / s) by
// 2t / s relative and the LSE factor by t, so over the row's classes the gradient moves by at most
// |up| gradient() = 4 |up| k t (1 + 1 / s).
struct ce_sensitivity {
  double k, cap;
  double loss(double t) const { return 2 * k * t; }
  double gradient(double t) const { return 4 * k * t * cap; }
};

ce_sensitivity sensitivity(const inputs& in, double z_loss, double softcap, double lse_bound) {
  const double w_max = in.weight.size() != 0 ? max_abs(in.weight.values()) : 1.0;
  return {2 * (w_max + z_loss * lse_bound), softcap > 0 ? 1 + 1 / softcap : 1.0};
}

// The mean's normaliser: the class weights (1 without) of the rows not ignored (every other
// target of the sweep is a class).
double normaliser_of(const inputs& in, int64_t ignore_index) {
  double d = 0;
  for (const double y : in.targets.values()) {
    if (int64_t(y) != ignore_index) d += in.weight.size() != 0 ? in.weight[size_t(y)] : 1.0;
  }
  return d;
}

// How many rows' losses one loss value adds up: one (none), all (sum), all over D (mean).
double rows_per_loss(fusedloss_reduction r, int64_t rows, double normaliser) {
  if (r == FUSEDLOSS_REDUCTION_NONE) return 1;
  return r == FUSEDLOSS_REDUCTION_SUM ? double(rows) : normaliser > 0 ? rows / normaliser : 0.0;
}

// Each row's upstream gradient, the mean's 1 / D included: backward's grad_loss (the reduced
// loss's for every row) or forward_backward's grad scale times *grad_scale_ptr.
std::vector<double> row_upstreams(call kind, const upstream& up, int64_t rows,
                                  fusedloss_reduction r, double normaliser) {
  std::vector<double> out(rows);
  for (int64_t i = 0; i < rows; ++i) {
    if (kind == call::forward_backward) {
      out[i] = double(up.grad_scale) * up.grad_scale_in_memory;
    } else {
      out[i] = up.grad_loss[r == FUSEDLOSS_REDUCTION_NONE ? i : 0];
    }
    if (r == FUSEDLOSS_REDUCTION_MEAN) out[i] = normaliser > 0 ? out[i] / normaliser : 0.0;
  }
  return out;
}

// The shard path's loss, LSE and gradient against `want`, every logit and LSE off by at most t,
// on top of `rounding` of each output's dtype: the CPU's one rounding on each side, or a device's
// (device_tolerance over the row's V terms, and all rows' for a reduced loss).
verdict judge_shards(const validator& v, const shard_problem& sp, fusedloss_dtype dtype,
                     const outputs& got, const outputs& want, double t, const upstream& up,
                     bool device) {
  const int64_t n = sp.base.batch, vocab = sp.base.num_classes;
  const fusedloss_dtype loss_dtype = loss_dtype_of(dtype);
  const auto rounding = [&](fusedloss_dtype out, const std::vector<double>& values, size_t terms) {
    return device ? device_tolerance(out, values, terms) : checks::rounding_tolerance(out);
  };
  const double d = normaliser_of(sp.in, sp.base.ignore_index);
  const ce_sensitivity s = sensitivity(sp.in, sp.base.z_loss, sp.base.softcap,
                                       max_abs(sp.logits) + std::log(double(vocab)));
  const double rows = rows_per_loss(sp.base.reduction, n, d);
  const size_t loss_terms = vocab * (sp.base.reduction == FUSEDLOSS_REDUCTION_NONE ? 1 : n);
  const double up_max = max_abs(row_upstreams(call::forward_backward, up, 1, sp.base.reduction, d));
  return worse(worse(v.judge(got.loss, want.loss,
                             plus(rounding(loss_dtype, want.loss, loss_terms), rows * s.loss(t))),
                     v.judge(got.lse, want.lse, plus(rounding(loss_dtype, want.lse, vocab), t))),
               v.judge(got.grad, want.grad,
                       plus(rounding(dtype, want.grad, vocab), up_max * s.gradient(t))));
}

// The shard path on the CPU against the whole rows' call, in float64 or float32 logits. Both
// compute in double; the shard path also stores every summary in the loss dtype (unit roundoff u:
// 2^-53 or 2^-24) up to five times (partial, rescale, and each addition of the SUM all-reduce over
// at most four ranks), its reference logit and the target's once, and both sum the V exponentials
// in their own orders. So the LSE's log-sum is off by at most (V + 5) u, a capped logit by s u, the
// smoothing term's weighted sum by 5 u (<= 2 Lambda W) relative: t = u (V + 8 + Lambda + 2 s)
// bounds them all. Each output is then rounded once on each side (rounding_tolerance).
verdict shard_check(const validator& v, const shard_problem& sp, fusedloss_dtype dtype,
                    rng_t& rng) {
  const upstream up = fused_upstream(rng, 1).fused;
  host_buffers m;
  const outputs want = whole_rows(sp, m, dtype, up);
  const outputs got = v.under_test(shards(sp, m, dtype, up));
  const double u = std::ldexp(1.0, dtype == FUSEDLOSS_FLOAT64 ? -53 : -24);
  const double lse_bound = max_abs(sp.logits) + std::log(double(sp.base.num_classes));
  const double t = u * (double(sp.base.num_classes) + 8 + lse_bound + 2 * sp.base.softcap);
  return judge_shards(v, sp, dtype, got, want, t, up, false);
}

// The shard path on CUDA against the CPU's, both given the same stored logits and both with their
// summaries in float32 and all-reduced here alike. The device computes in float32, the reference
// in double: each row's LSE and capped logits within (V + 32) 2^-24 (1 + Lambda + s), the budget of
// device_tolerance (V float32 exponentials summed, each within a few ulps, the soft-cap's tanhf;
// the summaries' rescale and log one more ulp each), on top of device_tolerance itself.
verdict shard_gpu_check(const validator& v, const checks::device_memory& api,
                        const shard_problem& sp, fusedloss_dtype dtype, rng_t& rng) {
  const upstream up = fused_upstream(rng, 1).fused;
  host_buffers host;
  device_buffers device(api);
  const outputs want = shards(sp, host, dtype, up);
  const outputs got = v.under_test(shards(sp, device, dtype, up));
  const double lse_bound =
      max_abs(checks::round_to(dtype, sp.logits)) + std::log(double(sp.base.num_classes));
  const double t =
      (double(sp.base.num_classes) + 32) * std::ldexp(1.0, -24) * (1 + lse_bound + sp.base.softcap);
  return judge_shards(v, sp, dtype, got, want, t, up, true);
}

// Linear + cross-entropy on CUDA against the CPU reference on the same stored values (u_in: one
// ulp of the input dtype; u = 2^-24), bounded per row r as tests/gpu/test_linear_cross_entropy.cpp
// derives it. The GEMM accumulates each logit over H in float32, the bias added in its epilogue:
// within (H + 2) u M_r of exact, M_r the row's largest sum_h |x_h w_h| + |b| (float32's worst-case
// dot product); the chunk buffer stores it in the input dtype, within half an ulp: u_in Z_r with a
// factor 2 of margin, Z_r the row's largest |logit|. The row kernel's float32 adds (V + 32) u (1 +
// |LSE_r| + s) to its LSE and capped logits, as in shard_gpu_check. So t_r = u_in Z_r + (H + 2) u
// M_r + (V + 32) u (1 + |LSE_r| + s) bounds every error of row r that ce_sensitivity takes; the
// loss is bounded with the largest t_r.
//
// Per element, the row's gradient g_c = up cap'_c h_c has |g_c| <= m_c = |up| ((a + b W +
// 2 lambda |LSE|) p_c + a [c = y] + b w_c) (ce_sensitivity's a, b, W), and moves by at most e_r m_c
// with e_r = 8 t_r (1 + 1 / s) + 2 u_in: p_c and the LSE's term by 4 t_r relative, cap' by 2 t_r /
// s, a factor 2 of margin, and the in-place store of g in the input dtype. Then grad_input = g W
// sums V products in float32 (V u of sum_c m_c |w_c|), grad_weight = g^T x and grad_bias, g's
// column sums, sum N rows in float32 and round the running float32 value once a chunk (at most N
// chunks): (2 N + 1) u of sum_r m_r |x_r|. On top, device_tolerance's rounding of each output dtype
// (both sides round once). Each run, with the default workspace and with one that splits the rows
// into chunks (split_budget), must be within these bounds; the row reports the worse.
struct linear_bounds {
  double t = 0;                    // the largest t_r
  ce_sensitivity s{};              // with Lambda the largest |LSE_r| bound
  std::vector<double> e, m, x, w;  // e_r; m_{r,c} per unit |up|, (N, V); |x|, |w| as stored
};

linear_bounds linear_bounds_of(const linear_problem& lp, fusedloss_dtype dtype) {
  const int64_t n = lp.base.batch, h = lp.base.hidden, v = lp.base.num_classes;
  const bool bias = lp.in.linear_bias.size() != 0;
  const std::vector<double> stored = checks::round_to(dtype, lp.pr.logits);
  const std::vector<double> z = lp.product(stored);
  const double u = std::ldexp(1.0, -24), u_in = checks::rounding_tolerance(dtype).rtol;
  const double cap = lp.base.softcap, eps = lp.base.label_smoothing, lambda = lp.base.z_loss;
  const std::vector<double> cw = lp.in.weight.values(), y = lp.in.targets.values();
  const auto weight = [&](int64_t c) { return cw.empty() ? 1.0 : cw[c]; };
  double total_weight = 0, lse_bound = 0;
  for (int64_t c = 0; c < v; ++c) total_weight += weight(c);
  linear_bounds b;
  b.e.resize(n);
  b.m.assign(n * v, 0.0);
  for (int64_t i = 0; i < (n + v) * h; ++i) (i < n * h ? b.x : b.w).push_back(std::fabs(stored[i]));
  for (int64_t r = 0; r < n; ++r) {
    double m_r = 0, z_r = 0, top = -INFINITY, sum = 0;
    std::vector<double> capped(v);
    for (int64_t c = 0; c < v; ++c) {
      double magnitude = bias ? std::fabs(stored[(n + v) * h + c]) : 0.0;
      for (int64_t k = 0; k < h; ++k) magnitude += b.x[r * h + k] * b.w[c * h + k];
      m_r = std::max(m_r, magnitude);
      z_r = std::max(z_r, std::fabs(z[r * v + c]));
      capped[c] = cap > 0 ? cap * std::tanh(z[r * v + c] / cap) : z[r * v + c];
      top = std::max(top, capped[c]);
    }
    for (int64_t c = 0; c < v; ++c) sum += std::exp(capped[c] - top);
    const double lse = top + std::log(sum);
    lse_bound = std::max(lse_bound, std::fabs(lse));
    const double t =
        u_in * z_r + double(h + 2) * u * m_r + (double(v) + 32) * u * (1 + std::fabs(lse) + cap);
    b.t = std::max(b.t, t);
    b.e[r] = 8 * t * (cap > 0 ? 1 + 1 / cap : 1.0) + 2 * u_in;
    const int64_t target = int64_t(y[r]);
    if (target == lp.base.ignore_index) continue;  // a zero gradient on both sides
    const double a = (1 - eps) * weight(target), bw = eps / double(v);
    for (int64_t c = 0; c < v; ++c) {
      b.m[r * v + c] =
          (a + bw * total_weight + 2 * lambda * std::fabs(lse)) * std::exp(capped[c] - lse) +
          (c == target ? a : 0.0) + bw * weight(c);
    }
  }
  b.s = sensitivity(lp.in, lambda, cap, lse_bound);
  return b;
}

// `values[first, first + count)`, or all of them when they are too few (so that judge reports the
// count).
std::vector<double> slice(const std::vector<double>& values, size_t first, size_t count) {
  if (first + count > values.size()) return values;
  return {values.begin() + first, values.begin() + first + count};
}

verdict judge_linear_gradient(const validator& v, const linear_problem& lp, fusedloss_dtype dtype,
                              const linear_bounds& b, const outputs& got, const outputs& want,
                              call kind, const upstream& up) {
  const size_t n = lp.base.batch, h = lp.base.hidden, c = lp.base.num_classes;
  const double u = std::ldexp(1.0, -24);
  const std::vector<double> ups = row_upstreams(kind, up, lp.base.batch, lp.base.reduction,
                                                normaliser_of(lp.in, lp.base.ignore_index));
  std::vector<double> input(n * h), weight(c * h), bias(c);
  for (size_t r = 0; r < n; ++r) {
    for (size_t j = 0; j < c; ++j) {
      const double m = std::fabs(ups[r]) * b.m[r * c + j];
      const double by_class = (b.e[r] + double(c) * u) * m;
      const double by_row = (b.e[r] + (2.0 * n + 1) * u) * m;
      for (size_t k = 0; k < h; ++k) {
        input[r * h + k] += by_class * b.w[j * h + k];
        weight[j * h + k] += by_row * b.x[r * h + k];
      }
      bias[j] += by_row;
    }
  }
  const auto judge = [&](size_t first, const std::vector<double>& bounds, fusedloss_dtype out) {
    const std::vector<double> w = slice(want.grad, first, bounds.size());
    const std::vector<double> g =
        got.grad.size() == want.grad.size() ? slice(got.grad, first, bounds.size()) : got.grad;
    return v.judge(g, w, device_tolerance(out, w, 0), bounds);
  };
  verdict r = worse(judge(0, input, dtype), judge(n * h, weight, FUSEDLOSS_FLOAT32));
  if (lp.in.linear_bias.size() != 0) r = worse(r, judge((n + c) * h, bias, FUSEDLOSS_FLOAT32));
  return r;
}

verdict linear_gpu_check(const validator& v, const checks::device_memory& api,
                         const linear_problem& lp, fusedloss_dtype dtype, rng_t& rng) {
  const problem& pr = lp.pr;
  const upstream up{upstream_values(rng, pr.loss_count())};
  const fused_upstream split(rng, pr.loss_count());
  const auto run = [&](memory& m, call kind, const upstream& u, bool chunks) {
    return run_linear(lp.base, lp.in, m, kind, dtype, pr.logits, u, chunks);
  };
  host_buffers host;
  const outputs want_f = run(host, call::forward, up, false);
  const outputs want_b = run(host, call::backward, up, false);
  const outputs want_fb = run(host, call::backward, split.separate, false);
  const linear_bounds b = linear_bounds_of(lp, dtype);
  const int64_t n = lp.base.batch;
  const double rows = rows_per_loss(pr.reduction, n, normaliser_of(lp.in, lp.base.ignore_index));
  const size_t loss_terms = pr.terms * (pr.loss_count() == 1 ? pr.losses : 1);
  const tolerance loss_tol =
      plus(device_tolerance(FUSEDLOSS_FLOAT32, want_f.loss, loss_terms), rows * b.s.loss(b.t));
  std::optional<verdict> worst;
  for (const bool chunks : {false, true}) {
    device_buffers device(api);
    const outputs f = v.under_test(run(device, call::forward, up, chunks));
    const outputs bw = v.under_test(run(device, call::backward, up, chunks));
    const outputs fb = v.under_test(run(device, call::forward_backward, split.fused, chunks));
    const verdict this_one = worse(
        worse(v.judge(f.loss, want_f.loss, loss_tol), v.judge(fb.loss, want_f.loss, loss_tol)),
        worse(judge_linear_gradient(v, lp, dtype, b, bw, want_b, call::backward, up),
              judge_linear_gradient(v, lp, dtype, b, fb, want_fb, call::forward_backward,
                                    split.fused)));
    worst = worst ? worse(*worst, this_one) : this_one;
  }
  return *worst;
}

std::string golden_shape(const checks::golden_case& c) {
  if (!c.has("batch")) return c.scalar("numel", "-");
  const std::string s = c.scalar("spatial", "1");
  return c.scalar("batch") + "x" + c.scalar("num_classes") + (s == "1" ? "" : "x" + s);
}

// One row per golden case (on the CPU reference: the runner's tolerances are those of a result
// rounded once from exact), the worst of its outputs. The runner compares the outputs itself, so
// --perturb divides the expected values by 1 + EPS instead of multiplying the outputs by it: the
// same comparison, up to a factor 1 + EPS on atol. --tolerance-scale cannot reach the runner's
// tolerances through its interface.
void golden_checks(validator& v) {
  namespace fs = std::filesystem;
  const std::string& dir = v.options().golden_dir;
  std::vector<fs::path> files;
  std::error_code ec;
  for (const auto& entry : fs::directory_iterator(dir, ec)) {
    if (entry.path().extension() == ".golden") files.push_back(entry.path());
  }
  std::sort(files.begin(), files.end());
  if (files.empty()) {
    v.fail({"golden", "-", dir, "-", "-"}, ec ? ec.message() : "no *.golden files");
    return;
  }
  for (const fs::path& file : files) {
    std::vector<checks::golden_case> cases;
    try {
      cases = checks::read_golden_file(file.string());
    } catch (const std::exception& e) {
      v.fail({"golden", "-", file.filename().string(), "-", "-"}, e.what());
      continue;
    }
    for (checks::golden_case& c : cases) {
      for (auto& [key, values] : c.arrays) {
        if (key.rfind("expect_", 0) != 0) continue;
        for (double& x : values) x /= 1 + v.options().perturb;
      }
      v.check({"golden", c.loss, c.name, golden_shape(c), c.scalar("logits_dtype", "-")}, [&] {
        std::optional<verdict> worst;
        for (const checks::golden_result& r : checks::run_golden_case(c, FUSEDLOSS_DEVICE_CPU)) {
          const verdict this_one{r.max_error, r.tol, r.pass, r.pass ? r.max_error : INFINITY,
                                 r.call + " " + r.output + ": " + r.detail};
          worst = worst ? worse(*worst, this_one) : this_one;
        }
        return worst.value_or(verdict{});
      });
    }
  }
}

// ------------------------------------------------------------------------------------------------
// The command line

void usage(std::FILE* out) {
  std::fprintf(
      out,
      "usage: fusedloss validate [--device auto|cpu|cuda] [--golden DIR]\n"
      "                          [--tolerance-scale X] [--perturb EPS] [--seed N]\n"
      "\n"
      "Checks every loss and option over a sweep of shapes, one table row per check:\n"
      "  fd      backward's gradient against finite differences of forward (CPU, float64)\n"
      "  fused   forward_backward against forward and backward (CPU, float64)\n"
      "  product linear + cross-entropy's loss against cross-entropy of the product (CPU)\n"
      "  shards  vocabulary-parallel shard calls against the whole rows (CPU, float64/float32)\n"
      "  golden  every case of DIR/*.golden (default %s)\n"
      "  gpu     the CUDA path in float32/float16/bfloat16 against the CPU reference\n"
      "\n"
      "  --device           auto: GPU checks when a CUDA device is usable (default);\n"
      "                     cpu: none; cuda: fail when no device is usable\n"
      "  --tolerance-scale  multiply every fd, fused and gpu tolerance by X > 0 (default 1)\n"
      "  --perturb          multiply every loss and gradient under test by 1 + EPS, to show\n"
      "                     that the checks catch a wrong result (default 0)\n"
      "  --seed             seed of the random inputs (default: random; printed)\n"
      "\n"
      "Exit status: 0 when every check passed, 1 when one failed, 2 on a usage error.\n",
      FUSEDLOSS_GOLDEN_DIR);
}

bool parse_double(const char* text, double& out) {
  char* end = nullptr;
  out = std::strtod(text, &end);
  return end != text && *end == '\0' && std::isfinite(out);
}

bool parse_u64(const char* text, uint64_t& out) {
  char* end = nullptr;
  errno = 0;
  out = std::strtoull(text, &end, 10);
  return end != text && *end == '\0' && errno == 0 && text[0] != '-';
}

// Reads `validate`'s options into `s`. Returns -1 for --help, 2 on a usage error, else 0.
int parse(int argc, char** argv, settings& s) {
  bool seeded = false;
  for (int i = 2; i < argc; ++i) {
    const std::string arg = argv[i];
    if (arg == "-h" || arg == "--help") return -1;
    const bool known = arg == "--device" || arg == "--golden" || arg == "--tolerance-scale" ||
                       arg == "--perturb" || arg == "--seed";
    if (!known || i + 1 >= argc) {
      std::fprintf(stderr, "fusedloss validate: %s %s\n",
                   known ? "missing value for" : "unknown option", arg.c_str());
      return 2;
    }
    const char* value = argv[++i];
    bool ok = true;
    if (arg == "--device") {
      s.device = value;
      ok = s.device == "auto" || s.device == "cpu" || s.device == "cuda";
    } else if (arg == "--golden") {
      s.golden_dir = value;
    } else if (arg == "--tolerance-scale") {
      ok = parse_double(value, s.tolerance_scale) && s.tolerance_scale > 0;
    } else if (arg == "--perturb") {
      ok = parse_double(value, s.perturb) && s.perturb > -1;
    } else {
      ok = seeded = parse_u64(value, s.seed);
    }
    if (!ok) {
      std::fprintf(stderr, "fusedloss validate: bad value for %s: %s\n", arg.c_str(), value);
      return 2;
    }
  }
  if (!seeded) {
    std::random_device device;
    s.seed = (uint64_t(device()) << 32) ^ device();
  }
  return 0;
}

int validate(const settings& s) {
  const auto start = std::chrono::steady_clock::now();
  std::printf("fusedloss validate: seed %" PRIu64 ", tolerance scale %g, perturb %g, golden %s\n",
              s.seed, s.tolerance_scale, s.perturb, s.golden_dir.c_str());
  validator v(s);
  rng_t rng(s.seed);
  const std::vector<problem> problems = all_problems(rng);
  const std::vector<linear_problem> linear = linear_problems(rng);
  const std::vector<shard_problem> sharded = shard_problems(rng);
  v.header();
  for (const problem& pr : problems) {
    v.check({"fd", pr.loss, pr.options, pr.shape, "float64"}, [&] { return fd_check(v, pr, rng); });
    v.check({"fused", pr.loss, pr.options, pr.shape, "float64"},
            [&] { return fused_check(v, pr, rng); });
  }
  for (const linear_problem& lp : linear) {
    const problem& pr = lp.pr;
    v.check({"fd", pr.loss, pr.options, pr.shape, "float64"}, [&] { return fd_check(v, pr, rng); });
    v.check({"fused", pr.loss, pr.options, pr.shape, "float64"},
            [&] { return fused_check(v, pr, rng); });
    v.check({"product", pr.loss, pr.options, pr.shape, "float64"},
            [&] { return product_check(v, lp); });
  }
  for (const shard_problem& sp : sharded) {
    for (const fusedloss_dtype dtype : {FUSEDLOSS_FLOAT64, FUSEDLOSS_FLOAT32}) {
      v.check({"shards", shard_sweep.loss, sp.options, sp.shape, fusedloss_dtype_string(dtype)},
              [&] { return shard_check(v, sp, dtype, rng); });
    }
  }
  golden_checks(v);

  std::string why_not = "--device cpu";
  const std::optional<checks::device_memory> gpu =
      s.device == "cpu" ? std::nullopt : gpu_memory(why_not);
  if (gpu) {
    for (const problem& pr : problems) {
      for (const fusedloss_dtype dtype :
           {FUSEDLOSS_FLOAT32, FUSEDLOSS_FLOAT16, FUSEDLOSS_BFLOAT16}) {
        v.check({"gpu", pr.loss, pr.options, pr.shape, fusedloss_dtype_string(dtype)},
                [&] { return gpu_check(v, *gpu, pr, dtype, rng); });
      }
    }
    for (const fusedloss_dtype dtype : {FUSEDLOSS_FLOAT32, FUSEDLOSS_BFLOAT16}) {
      for (const linear_problem& lp : linear) {
        const problem& pr = lp.pr;
        v.check({"gpu", pr.loss, pr.options, pr.shape, fusedloss_dtype_string(dtype)},
                [&] { return linear_gpu_check(v, *gpu, lp, dtype, rng); });
      }
      for (const shard_problem& sp : sharded) {
        v.check({"gpu", shard_sweep.loss, sp.options, sp.shape, fusedloss_dtype_string(dtype)},
                [&] { return shard_gpu_check(v, *gpu, sp, dtype, rng); });
      }
    }
  } else if (s.device == "cuda") {
    v.fail({"gpu", "-", "-", "-", "-"}, "--device cuda, but " + why_not);
  } else {
    std::printf("GPU checks skipped: %s\n", why_not.c_str());
  }
  const std::chrono::duration<double> elapsed = std::chrono::steady_clock::now() - start;
  return v.finish(elapsed.count());
}

}  // namespace

int main(int argc, char** argv) {
  const bool validate_command = argc >= 2 && std::strcmp(argv[1], "validate") == 0;
  settings s;
  const int status = validate_command ? parse(argc, argv, s) : 2;
  if (status != 0) {
    const bool help =
        status < 0 ||
        (argc == 2 && (std::strcmp(argv[1], "-h") == 0 || std::strcmp(argv[1], "--help") == 0));
    usage(help ? stdout : stderr);
    return help ? 0 : 2;
  }
  return validate(s);
}
