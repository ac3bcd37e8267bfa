// The golden files' runner (golden.hpp's run_golden_case): a case replayed through the C API, each
// call's outputs compared with the case's expectations.
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <sstream>
#include <stdexcept>
#include <string>
#include <type_traits>
#include <utility>

#include "fusedloss/fusedloss.hpp"
#include "golden.hpp"
#include "golden_format.hpp"
#include "value_codec.hpp"

namespace fusedloss::checks {

using namespace golden_format;

namespace {

// ------------------------------------------------------------------------------------------------
// Running a case

fusedloss_dtype dtype_option(const golden_case& c, const char* key, fusedloss_dtype fallback) {
  return c.scalars.count(key) ? dtype_names().at(c.scalars.at(key)) : fallback;
}

int64_t integer_option(const golden_case& c, const char* key, int64_t fallback) {
  int64_t v = fallback;
  if (c.scalars.count(key)) parse_integer(c.scalars.at(key), v);
  return v;
}

double real_option(const golden_case& c, const char* key, double fallback) {
  double v = fallback;
  if (c.scalars.count(key)) parse_real(c.scalars.at(key), v);
  return v;
}

const std::vector<double>* array_option(const golden_case& c, const char* key) {
  const auto it = c.arrays.find(key);
  return it == c.arrays.end() ? nullptr : &it->second;
}

[[noreturn]] void unrunnable(const golden_case& c, const std::string& what) {
  throw std::runtime_error(c.file + ":" + std::to_string(c.line) + ": case " + c.name + ": " +
                           what);
}

/// A host buffer and its copy in the call's memory space. At least one element is always stored, so
/// the call never sees a null pointer for an empty array; outputs carry one more poisoned element
/// past their end, which must stay poisoned.
class staged {
 public:
  staged() = default;
  staged(buffer host, size_t count, const device_memory* memory)
      : host_(std::move(host)), count_(count), memory_(memory) {
    if (memory_ != nullptr) {
      device_ = memory_->allocate(bytes());
      memory_->to_device(device_, host_.data(), bytes());
    }
  }
  static staged input(fusedloss_dtype dtype, std::vector<double> values,
                      const device_memory* memory) {
    const size_t count = values.size();
    if (values.empty()) values.push_back(0.0);
    return staged(buffer(dtype, values), count, memory);
  }
  static staged output(fusedloss_dtype dtype, size_t count, const device_memory* memory) {
    return staged(buffer::poisoned(dtype, count + 1), count, memory);
  }
  staged(staged&& o) noexcept { *this = std::move(o); }
  staged& operator=(staged&& o) noexcept {
    std::swap(host_, o.host_);
    std::swap(count_, o.count_);
    std::swap(memory_, o.memory_);
    std::swap(device_, o.device_);
    return *this;
  }
  staged(const staged&) = delete;
  staged& operator=(const staged&) = delete;
  ~staged() {
    if (memory_ != nullptr && device_ != nullptr) memory_->release(device_);
  }

  void* ptr() { return memory_ != nullptr ? device_ : host_.data(); }
  void download() {
    if (memory_ != nullptr) memory_->to_host(host_.data(), device_, bytes());
  }
  const buffer& host() const { return host_; }
  size_t count() const { return count_; }
  /// Whether element i still holds the poison (all bytes 0xFF).
  bool poisoned(size_t i) const {
    const size_t size = dtype_size(host_.dtype());
    const auto* p = static_cast<const unsigned char*>(host_.data()) + i * size;
    for (size_t b = 0; b < size; ++b) {
      if (p[b] != 0xFF) return false;
    }
    return true;
  }

 private:
  size_t bytes() const { return host_.size() * dtype_size(host_.dtype()); }
  buffer host_;
  size_t count_ = 0;
  const device_memory* memory_ = nullptr;
  void* device_ = nullptr;
};

std::string number(double v) {
  std::ostringstream s;
  s.precision(17);
  s << v;
  return s.str();
}

/// Compares an output with its expected values. `padding(i)` says which positions the call must
/// leave alone (they must keep their poison), as must the guard element past the end.
golden_result compare(const std::string& call, const std::string& output, const staged& got,
                      const std::vector<double>& want, tolerance tol,
                      const std::function<bool(size_t)>& padding) {
  golden_result r{call, output, 0.0, tol, true, "", {}, {}, FUSEDLOSS_SUCCESS};
  r.got.reserve(want.size());
  r.want.reserve(want.size());
  auto fail = [&r](const std::string& detail) {
    if (r.pass) r.detail = detail;
    r.pass = false;
  };
  for (size_t i = 0; i < want.size(); ++i) {
    if (padding && padding(i)) {
      if (!got.poisoned(i)) fail("padding element " + std::to_string(i) + " was written");
      continue;
    }
    const double g = got.host()[i];
    const double w = want[i];
    r.got.push_back(g);
    r.want.push_back(w);
    if (std::isnan(g) != std::isnan(w)) {
      r.max_error = NAN;
    } else if (!std::isnan(g) && g != w && !std::isnan(r.max_error)) {
      r.max_error = std::max(r.max_error, std::fabs(g - w));
    }
    if (!tol.accepts(g, w)) {
      fail("element " + std::to_string(i) + ": got " + number(g) + ", want " + number(w) +
           (got.poisoned(i) ? " (never written)" : ""));
    }
  }
  if (!got.poisoned(got.count()))
    fail("wrote past the end (element " + std::to_string(got.count()) + ")");
  return r;
}

template <class P>
constexpr bool is_cross_entropy = std::is_same_v<P, fusedloss_cross_entropy_params>;
template <class P>
constexpr bool is_row_loss =
    is_cross_entropy<P> || std::is_same_v<P, fusedloss_softmax_focal_params>;

/// Everything one case needs beyond its params: staged inputs, sizes, tolerances.
struct runner {
  const golden_case& c;
  const device_memory* memory;
  fusedloss_dtype logits_dtype;
  fusedloss_dtype loss_dtype;
  bool none;
  size_t rows;    // outputs under none (elements or rows)
  size_t inner;   // C * S for row losses (a sample's used columns), numel otherwise
  size_t stride;  // elements between samples of the logits
  staged logits, targets, weight, pos_weight, grad_loss;
  std::vector<golden_result> results;

  size_t loss_count() const { return none ? rows : 1; }
  bool padding(size_t i) const { return stride > 0 && i % stride >= inner; }

  const std::vector<double>& array(const char* key) const { return c.arrays.at(key); }

  /// Stages the optional float32 vector `key` (absent: an empty staged buffer, passed as null).
  staged optional(const char* key) const {
    const auto* v = array_option(c, key);
    return v ? staged::input(FUSEDLOSS_FLOAT32, *v, memory) : staged();
  }

  template <class P>
  void bind_inputs(P& p) {
    p.logits = logits.ptr();
    p.targets = targets.ptr();
    p.grad_loss = grad_loss.ptr();
    auto vec = [](staged& s) {
      return s.host().size() ? static_cast<const float*>(s.ptr()) : nullptr;
    };
    if constexpr (std::is_same_v<P, fusedloss_bce_params>) {
      p.weight = vec(weight);
      p.pos_weight = vec(pos_weight);
    } else if constexpr (is_cross_entropy<P>) {
      p.weight = vec(weight);
    } else if constexpr (std::is_same_v<P, fusedloss_softmax_focal_params>) {
      p.alpha = vec(weight);
    }
  }

  /// Runs one call on a copy of `base` with fresh poisoned outputs and compares what it wrote.
  template <class P>
  void call(P p, fusedloss::call which) {
    const std::string call_name = fusedloss::name(which);
    const bool is_forward = which != fusedloss::call::backward;
    const bool is_backward = which != fusedloss::call::forward;
    bind_inputs(p);
    staged loss = staged::output(loss_dtype, loss_count(), memory);
    staged lse = staged::output(loss_dtype, rows, memory);
    staged z_loss = staged::output(loss_dtype, loss_count(), memory);
    staged grad = staged::output(logits_dtype, logits.count(), memory);
    const bool want_lse = is_forward && array_option(c, "expect_lse") != nullptr;
    const bool want_z = is_forward && array_option(c, "expect_z_loss") != nullptr;
    if (is_forward) p.loss = loss.ptr();
    if constexpr (is_row_loss<P>) {
      if (want_lse) p.lse = lse.ptr();
    }
    if constexpr (is_cross_entropy<P>) {
      if (want_z) p.z_loss_out = z_loss.ptr();
    }
    if (is_backward) p.grad_logits = grad.ptr();
    if (which == fusedloss::call::forward_backward)
      p.grad_scale = none ? 1.0f : static_cast<float>(grad_loss.host()[0]);

    fusedloss_error err{};
    size_t bytes = 0;
    fusedloss_status status = fusedloss::c_api<P>::workspace_size(&p, &bytes, &err);
    std::vector<unsigned char> host_ws;
    void* ws = nullptr;
    if (status == FUSEDLOSS_SUCCESS && bytes > 0) {
      if (memory != nullptr) {
        ws = memory->allocate(bytes);
      } else {
        host_ws.resize(bytes);
        ws = host_ws.data();
      }
    }
    if (status == FUSEDLOSS_SUCCESS) {
      status = fusedloss::entry_point<P>(which)(&p, ws, bytes, nullptr, &err);
    }
    if (memory != nullptr && ws != nullptr) memory->release(ws);
    if (status != FUSEDLOSS_SUCCESS) {
      results.push_back({call_name,
                         "status",
                         NAN,
                         tolerance{0, 0},
                         false,
                         std::string(fusedloss_status_string(status)) + ": " + err.message,
                         {},
                         {NAN},
                         status});
      return;
    }

    const tolerance loss_tol = rounding_tolerance(loss_dtype);
    if (is_forward) {
      loss.download();
      results.push_back(compare(call_name, "loss", loss, array("expect_loss"), loss_tol, nullptr));
    }
    if (want_lse) {
      lse.download();
      results.push_back(compare(call_name, "lse", lse, array("expect_lse"), loss_tol, nullptr));
    }
    if (want_z) {
      z_loss.download();
      results.push_back(
          compare(call_name, "z_loss", z_loss, array("expect_z_loss"), loss_tol, nullptr));
    }
    // Under none the fused call's gradient is that of the plain sum of losses, which the golden
    // does not hold: only its loss outputs are compared.
    if (is_backward && !(which == fusedloss::call::forward_backward && none)) {
      grad.download();
      results.push_back(compare(call_name, "grad", grad, array("expect_grad"),
                                rounding_tolerance(logits_dtype),
                                [this](size_t i) { return padding(i); }));
    }
  }

  template <class P>
  void run_all(const P& p) {
    for (fusedloss::call which :
         {fusedloss::call::forward, fusedloss::call::backward, fusedloss::call::forward_backward})
      call(p, which);
  }

  void expect_size(const char* key, size_t count) const {
    const auto* v = array_option(c, key);
    if (v != nullptr && v->size() != count) {
      unrunnable(c, std::string("'") + key + "' has " + std::to_string(v->size()) +
                        " values, the sizes say " + std::to_string(count));
    }
  }
};

template <class P>
void common_options(const golden_case& c, P& p, fusedloss_device device) {
  p.device = device;
  p.logits_dtype = dtype_option(c, "logits_dtype", p.logits_dtype);
  p.targets_dtype = dtype_option(c, "targets_dtype", p.targets_dtype);
  if (c.scalars.count("reduction")) p.reduction = reduction_names().at(c.scalars.at("reduction"));
  if (c.scalars.count("empty_mean")) {
    p.empty_mean = empty_mean_names().at(c.scalars.at("empty_mean"));
  }
}

// The layout and ignore_index that both row losses take.
template <class P>
void row_options(const golden_case& c, P& p) {
  p.batch = integer_option(c, "batch", p.batch);
  p.num_classes = integer_option(c, "num_classes", p.num_classes);
  p.spatial = integer_option(c, "spatial", p.spatial);
  p.row_stride = integer_option(c, "row_stride", p.row_stride);
  p.ignore_index = integer_option(c, "ignore_index", p.ignore_index);
}

template <class P>
std::vector<golden_result> run_element(const golden_case& c, P p, const device_memory* memory) {
  const auto m = static_cast<size_t>(p.numel);
  runner r{c,
           memory,
           p.logits_dtype,
           loss_dtype_of(p.logits_dtype),
           p.reduction == FUSEDLOSS_REDUCTION_NONE,
           m,
           m,
           0,
           {},
           {},
           {},
           {},
           {},
           {}};
  r.expect_size("logits", m);
  r.expect_size("targets", m);
  r.expect_size("expect_grad", m);
  r.expect_size("expect_loss", r.loss_count());
  r.expect_size("grad_loss", r.loss_count());
  r.logits = staged::input(p.logits_dtype, r.array("logits"), memory);
  r.targets = staged::input(p.targets_dtype, r.array("targets"), memory);
  r.grad_loss = staged::input(r.loss_dtype, r.array("grad_loss"), memory);
  r.weight = r.optional("weight");
  r.pos_weight = r.optional("pos_weight");
  r.run_all(p);
  return std::move(r.results);
}

template <class P>
std::vector<golden_result> run_rows(const golden_case& c, P p, const device_memory* memory) {
  const auto n = static_cast<size_t>(p.batch);
  const auto classes = static_cast<size_t>(p.num_classes);
  const auto s = static_cast<size_t>(p.spatial);
  const size_t inner = classes * s;
  const size_t stride = p.row_stride > 0 ? static_cast<size_t>(p.row_stride) : inner;
  const bool index_targets =
      p.targets_dtype == FUSEDLOSS_INT32 || p.targets_dtype == FUSEDLOSS_INT64;
  runner r{c,
           memory,
           p.logits_dtype,
           loss_dtype_of(p.logits_dtype),
           p.reduction == FUSEDLOSS_REDUCTION_NONE,
           n * s,
           inner,
           stride,
           {},
           {},
           {},
           {},
           {},
           {}};
  const size_t logits_count = r.array("logits").size();
  if (n > 0 && (logits_count < (n - 1) * stride + inner || logits_count > n * stride)) {
    unrunnable(c, "'logits' has " + std::to_string(logits_count) + " values, the layout needs " +
                      std::to_string((n - 1) * stride + inner) + " to " +
                      std::to_string(n * stride));
  }
  if (n == 0) r.expect_size("logits", 0);
  r.expect_size("expect_grad", logits_count);
  r.expect_size("targets", index_targets ? n * s : n * inner);
  r.expect_size("expect_lse", n * s);
  r.expect_size("expect_loss", r.loss_count());
  r.expect_size("expect_z_loss", r.loss_count());
  r.expect_size("grad_loss", r.loss_count());
  r.expect_size("weight", classes);
  r.logits = staged::input(p.logits_dtype, r.array("logits"), memory);
  r.targets = staged::input(p.targets_dtype, r.array("targets"), memory);
  r.grad_loss = staged::input(r.loss_dtype, r.array("grad_loss"), memory);
  r.weight = r.optional("weight");
  r.run_all(p);
  return std::move(r.results);
}

}  // namespace

std::vector<golden_result> run_golden_case(const golden_case& c, fusedloss_device device,
                                           const device_memory* memory) {
  if (c.loss == "bce") {
    auto p = fusedloss::make_bce_params();
    common_options(c, p, device);
    p.numel = integer_option(c, "numel", p.numel);
    p.num_classes = integer_option(c, "num_classes", p.num_classes);
    if (c.scalars.count("weight_layout")) {
      p.weight_layout = weight_layout_names().at(c.scalars.at("weight_layout"));
    }
    if (const auto* w = array_option(c, "weight")) {
      const bool per_class = p.weight_layout == FUSEDLOSS_WEIGHT_PER_CLASS;
      if (w->size() != static_cast<size_t>(per_class ? p.num_classes : p.numel)) {
        unrunnable(c, "'weight' does not fit weight_layout");
      }
    }
    if (const auto* pw = array_option(c, "pos_weight")) {
      if (pw->size() != static_cast<size_t>(p.num_classes))
        unrunnable(c, "'pos_weight' is not C long");
    }
    return run_element(c, p, memory);
  }
  if (c.loss == "sigmoid_focal") {
    auto p = fusedloss::make_sigmoid_focal_params();
    common_options(c, p, device);
    p.numel = integer_option(c, "numel", p.numel);
    p.alpha = real_option(c, "alpha", p.alpha);
    p.gamma = real_option(c, "gamma", p.gamma);
    return run_element(c, p, memory);
  }
  if (c.loss == "mse") {
    auto p = fusedloss::make_mse_params();
    common_options(c, p, device);
    p.numel = integer_option(c, "numel", p.numel);
    return run_element(c, p, memory);
  }
  if (c.loss == "cross_entropy") {
    auto p = fusedloss::make_cross_entropy_params();
    common_options(c, p, device);
    row_options(c, p);
    p.label_smoothing = real_option(c, "label_smoothing", p.label_smoothing);
    p.z_loss = real_option(c, "z_loss", p.z_loss);
    p.softcap = real_option(c, "softcap", p.softcap);
    return run_rows(c, p, memory);
  }
  if (c.loss == "softmax_focal") {
    auto p = fusedloss::make_softmax_focal_params();
    common_options(c, p, device);
    row_options(c, p);
    p.gamma = real_option(c, "gamma", p.gamma);
    return run_rows(c, p, memory);
  }
  unrunnable(c, "unknown loss '" + c.loss + "'");
}

}  // namespace fusedloss::checks
