// `fusedloss validate`: runs every loss and option over a sweep of shapes and prints one table row
// per check.
//
// - fd: backward's gradient (float64 logits, a random non-unit upstream gradient) against central
//   finite differences of forward.
// - fused: forward_backward's loss and gradient (with grad_scale and grad_scale_ptr) against
//   forward's loss and backward's gradient.
// - golden: every case of the golden files, which come from an oracle that shares no code with the
//   library (tests/golden/make_golden.py).
// - gpu: the CUDA path in float32/float16/bfloat16 against the CPU reference on the same stored
//   inputs (compiled in with FUSEDLOSS_VALIDATE_CUDA, run when a device is present).
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
};

// Inputs besides the logits, kept on the host and put into the call's memory for every call.
struct inputs {
  buffer targets;
  buffer weight;      // BCE's and cross-entropy's weight, softmax focal's alpha
  buffer pos_weight;  // BCE only
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
  if constexpr (std::is_same_v<Params, fusedloss_cross_entropy_params>)
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
    const fusedloss_dtype loss_dtype = dtype == FUSEDLOSS_FLOAT64 ? dtype : FUSEDLOSS_FLOAT32;
    p.loss =
        m.put(buffer::poisoned(loss_dtype, p.reduction == FUSEDLOSS_REDUCTION_NONE ? losses : 1));
    // Poisoned, so that a gradient the call fails to write (or padding it writes) shows up.
    p.grad_logits = m.put(buffer::poisoned(dtype, logits.size()));
    fusedloss::workspace ws{nullptr, fusedloss::workspace_size(p)};
    ws.data = m.scratch(ws.bytes);
    switch (kind) {
      case call::forward:
        fusedloss::forward(p, ws);
        return outputs{m.get(p.loss), {}};
      case call::backward:
        p.grad_loss = m.put(buffer(loss_dtype, up.grad_loss));
        fusedloss::backward(p, ws);
        return outputs{{}, m.get(p.grad_logits)};
      case call::forward_backward:
        p.grad_scale = up.grad_scale;
        p.grad_scale_ptr = floats(m, buffer(FUSEDLOSS_FLOAT32, {up.grad_scale_in_memory}));
        fusedloss::forward_backward(p, ws);
        return outputs{m.get(p.loss), m.get(p.grad_logits)};
    }
    return outputs{};
  };
  return pr;
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
using ce_p = fusedloss_cross_entropy_params;
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

template <class Params>
void add_problems(const loss_sweep<Params>& sweep, Params (*make)(), rng_t& rng,
                  std::vector<problem>& out) {
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
        out.push_back(make_problem(sweep.loss, name, sh, p, in, rng));
      }
    }
  }
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

// ------------------------------------------------------------------------------------------------
// Verdicts and the table

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
  verdict judge(const std::vector<double>& got, const std::vector<double>& want,
                tolerance tol) const {
    tol = {tol.atol * s_.tolerance_scale, tol.rtol * s_.tolerance_scale};
    verdict v{checks::max_abs_error(got, want), tol, got.size() == want.size(), 0, ""};
    if (!v.pass)
      v.note = "got " + std::to_string(got.size()) + " values, want " + std::to_string(want.size());
    for (size_t i = 0; i < std::min(got.size(), want.size()); ++i) {
      const bool same = got[i] == want[i] || (std::isnan(got[i]) && std::isnan(want[i]));
      if (!tol.accepts(got[i], want[i])) {
        if (v.pass) v.note = format("element %zu: got %.17g, want %.17g", i, got[i], want[i]);
        v.pass = false;
        v.excess = INFINITY;
      } else if (!same) {
        v.excess = std::max(
            v.excess, std::fabs(got[i] - want[i]) / (tol.atol + tol.rtol * std::fabs(want[i])));
      }
    }
    return v;
  }

  // What the backend under test returned, made wrong on purpose by --perturb.
  outputs under_test(outputs o) const {
    for (std::vector<double>* values : {&o.loss, &o.grad}) {
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

double max_abs(const std::vector<double>& values) {
  double m = 0;
  for (double x : values) {
    if (std::isfinite(x)) m = std::max(m, std::fabs(x));
  }
  return m;
}

// Central differences with h = 1e-6 have two errors. Truncation, h^2/6 |f'''|, stays below 1e-12:
// every loss here is smooth with O(1) third derivatives on logits in [-3, 3] (weights, upstream
// gradients and the soft-cap's 1/s^2 are O(1) too). Rounding: f is a double-precision sum of terms
// of total magnitude S; each of f(x +- h) is off by a few eps*S, and their difference is divided by
// 2h, so about eps*S/h (2e-10 for S = 1). Over many seeds the largest error seen is 2 eps*S/h; the
// tolerance allows 32, and --perturb 1e-3 still fails every check whose gradient is not all 0.
constexpr double kFdStep = 1e-6;
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
  v.header();
  for (const problem& pr : problems) {
    v.check({"fd", pr.loss, pr.options, pr.shape, "float64"}, [&] { return fd_check(v, pr, rng); });
    v.check({"fused", pr.loss, pr.options, pr.shape, "float64"},
            [&] { return fused_check(v, pr, rng); });
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
