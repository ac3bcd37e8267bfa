#include "validate.hpp"

#include <algorithm>
#include <cmath>
#include <cstdarg>
#include <cstdint>
#include <cstdio>
#include <initializer_list>
#include <limits>
#include <type_traits>

#include "device_memory.hpp"
#include "dtype.hpp"

namespace fusedloss::host {

fusedloss_status report(fusedloss_error* err, fusedloss_status status, const char* argument,
                        const char* format, ...) {
  if (err != nullptr) {
    err->status = status;
    err->argument = argument;
    va_list args;
    va_start(args, format);
    std::vsnprintf(err->message, sizeof err->message, format, args);
    va_end(args);
  }
  return status;
}

fusedloss_status succeed(fusedloss_error* err) {
  if (err != nullptr) {
    err->status = FUSEDLOSS_SUCCESS;
    err->argument = nullptr;
    err->message[0] = '\0';
  }
  return FUSEDLOSS_SUCCESS;
}

namespace {

// Runs a list of checks and keeps the first failure, so each loss's validation reads as a list.
class checker {
 public:
  explicit checker(fusedloss_error* err) : err_(err) {}

  template <class... Args>
  void require(bool ok, const char* argument, const char* format, Args... args) {
    if (ok || status_ != FUSEDLOSS_SUCCESS) return;
    status_ = FUSEDLOSS_INVALID_ARGUMENT;
    if (err_ == nullptr) return;
    err_->status = status_;
    err_->argument = argument;
    const int n = std::snprintf(err_->message, sizeof err_->message, "%s: ", argument);
    if constexpr (sizeof...(Args) == 0) {  // a message alone: no non-literal format string
      std::snprintf(err_->message + n, sizeof err_->message - n, "%s", format);
    } else {
      std::snprintf(err_->message + n, sizeof err_->message - n, format, args...);
    }
  }

  // A buffer the call needs must be given, and in the call's memory space when that is detectable.
  void require_buffer(const void* pointer, bool needed, fusedloss_device device,
                      const char* argument) {
    if (pointer == nullptr) {
      require(!needed, argument, "null, but this call needs it");
      return;
    }
    const memory_location where = locate(pointer);
    if (device == FUSEDLOSS_DEVICE_CPU) {
      require(where.space != memory_space::device && where.space != memory_space::other_device,
              argument, "points to device memory, but the call runs on the CPU");
    } else {
      require(where.space != memory_space::host, argument,
              "points to pageable host memory, but the call runs on CUDA");
      require(where.space != memory_space::other_device, argument,
              "points to memory of CUDA device %d, but the call runs on device %d (the current "
              "device)",
              where.device, where.current_device);
    }
  }

  fusedloss_status status() const { return status_; }

 private:
  fusedloss_error* err_;
  fusedloss_status status_ = FUSEDLOSS_SUCCESS;
};

bool finite(double v) { return std::isfinite(v); }

// The logits come first, as in the params and the header's formulas: their dtype, then the
// buffer, which the call needs when it has any of its `count` elements or rows to compute.
template <class Params>
void check_logits(checker& v, const Params& p, int64_t count) {
  v.require(is_floating(p.logits_dtype), "logits_dtype", "%s is not a floating-point dtype",
            fusedloss_dtype_string(p.logits_dtype));
  v.require(!(p.device == FUSEDLOSS_DEVICE_CUDA && p.logits_dtype == FUSEDLOSS_FLOAT64),
            "logits_dtype", "float64 runs on the CPU reference only");
  v.require_buffer(p.logits, count > 0, p.device, "logits");
}

// The outputs call `c` writes and the upstream gradient it reads, shared by every loss; `count` is
// the number of loss values under reduction none (elements or rows).
template <class Params>
void check_outputs(checker& v, const Params& p, call c, int64_t count) {
  const bool loss_values = p.reduction != FUSEDLOSS_REDUCTION_NONE || count > 0;
  v.require_buffer(p.loss, c == call::forward && loss_values, p.device, "loss");
  v.require_buffer(p.grad_logits, c != call::forward && count > 0, p.device, "grad_logits");
  v.require_buffer(p.grad_loss, c == call::backward && loss_values, p.device, "grad_loss");
  v.require_buffer(p.grad_scale_ptr, false, p.device, "grad_scale_ptr");
}

// Element losses: M contiguous values; targets float32 or the logits' dtype.
template <class Params>
void check_elements(checker& v, const Params& p, call c) {
  v.require(p.numel >= 0, "numel", "negative (%lld)", static_cast<long long>(p.numel));
  check_logits(v, p, p.numel);
  v.require(p.targets_dtype == FUSEDLOSS_FLOAT32 || p.targets_dtype == p.logits_dtype,
            "targets_dtype", "%s; expected float32 or the logits' dtype (%s)",
            fusedloss_dtype_string(p.targets_dtype), fusedloss_dtype_string(p.logits_dtype));
  v.require_buffer(p.targets, p.numel > 0, p.device, "targets");
  check_outputs(v, p, c, p.numel);
}

void check_gamma(checker& v, double gamma) {
  v.require(finite(gamma) && gamma >= 0, "gamma", "%g; expected a finite value >= 0", gamma);
}

// The row strides of a (batch, row_elements) layout and of its gradient, with their defaults
// resolved in `resolved` (0: row_elements, and the logits' stride for the gradient's).
template <class Params>
void check_strides(checker& v, const Params& p, int64_t row_elements, const char* row_name,
                   Params& resolved) {
  constexpr int64_t int64_max = std::numeric_limits<int64_t>::max();
  v.require(p.row_stride == 0 || p.row_stride >= row_elements, "row_stride",
            "%lld is less than %s (%lld)", static_cast<long long>(p.row_stride), row_name,
            static_cast<long long>(row_elements));
  v.require(p.grad_row_stride == 0 || p.grad_row_stride >= row_elements, "grad_row_stride",
            "%lld is less than %s (%lld)", static_cast<long long>(p.grad_row_stride), row_name,
            static_cast<long long>(row_elements));
  resolved.row_stride = p.row_stride != 0 ? p.row_stride : row_elements;
  resolved.grad_row_stride = p.grad_row_stride != 0 ? p.grad_row_stride : resolved.row_stride;
  v.require(p.batch == 0 || resolved.row_stride <= int64_max / p.batch, "row_stride",
            "batch * row_stride overflows int64");
  v.require(p.batch == 0 || resolved.grad_row_stride <= int64_max / p.batch, "grad_row_stride",
            "batch * grad_row_stride overflows int64");
  v.require(p.grad_logits != p.logits || p.logits == nullptr ||
                resolved.grad_row_stride == resolved.row_stride,
            "grad_row_stride", "in-place (grad_logits == logits) needs equal row strides");
}

// Row losses: the (N, C) / (N, C, S) layout with its strides, the class-index targets' dtype and
// the optional counter. Resolves the strides' defaults in `resolved`.
template <class Params>
void check_rows(checker& v, const Params& p, call c, bool probability_ok, Params& resolved) {
  constexpr int64_t int64_max = std::numeric_limits<int64_t>::max();
  v.require(p.batch >= 0, "batch", "negative (%lld)", static_cast<long long>(p.batch));
  v.require(p.num_classes >= 0, "num_classes", "negative (%lld)",
            static_cast<long long>(p.num_classes));
  v.require(p.spatial >= 0, "spatial", "negative (%lld)", static_cast<long long>(p.spatial));
  if (v.status() != FUSEDLOSS_SUCCESS) return;
  v.require(p.spatial == 0 || p.num_classes <= int64_max / p.spatial, "spatial",
            "num_classes * spatial overflows int64");
  if (v.status() != FUSEDLOSS_SUCCESS) return;
  const int64_t row_elements = p.num_classes * p.spatial;
  v.require(p.batch == 0 || p.spatial <= int64_max / p.batch, "batch",
            "batch * spatial overflows int64");
  if (v.status() != FUSEDLOSS_SUCCESS) return;
  const int64_t rows = p.batch * p.spatial;
  v.require(p.num_classes > 0 || rows == 0, "num_classes", "0 with %lld rows",
            static_cast<long long>(rows));

  check_strides(v, p, row_elements, "num_classes * spatial", resolved);
  check_logits(v, p, rows);
  const bool index_targets = is_integer(p.targets_dtype);
  const bool probability_targets =
      probability_ok && (p.targets_dtype == FUSEDLOSS_FLOAT32 || p.targets_dtype == p.logits_dtype);
  v.require(index_targets || probability_targets, "targets_dtype", "%s; expected %s",
            fusedloss_dtype_string(p.targets_dtype),
            probability_ok ? "int32, int64, float32 or the logits' dtype" : "int32 or int64");
  v.require_buffer(p.targets, rows > 0, p.device, "targets");
  v.require_buffer(p.lse, false, p.device, "lse");
  v.require_buffer(p.invalid_target_count, false, p.device, "invalid_target_count");
  check_outputs(v, p, c, rows);
}

// Cross-entropy's options, shared by the whole-row and the shard calls.
template <class Params>
void check_cross_entropy_options(checker& v, const Params& p) {
  v.require(p.label_smoothing >= 0 && p.label_smoothing <= 1, "label_smoothing",
            "%g is outside [0, 1]", p.label_smoothing);
  v.require(finite(p.z_loss) && p.z_loss >= 0, "z_loss", "%g; expected a finite value >= 0",
            p.z_loss);
  v.require(finite(p.softcap) && p.softcap >= 0, "softcap",
            "%g; expected a finite value > 0, or 0 for off", p.softcap);
  v.require_buffer(p.weight, false, p.device, "weight");
  v.require_buffer(p.z_loss_out, false, p.device, "z_loss_out");
}

template <class Enum>
bool one_of(const Enum& field, std::initializer_list<Enum> known) {
  const int value = stored(field);
  return std::any_of(known.begin(), known.end(), [value](Enum k) { return value == k; });
}

// Every enum field is checked as a stored int before anything reads it as its enum type.
void check_dtype_enum(checker& v, const fusedloss_dtype& dtype, const char* argument) {
  const auto dtypes = {FUSEDLOSS_FLOAT32, FUSEDLOSS_FLOAT16, FUSEDLOSS_BFLOAT16,
                       FUSEDLOSS_FLOAT64, FUSEDLOSS_INT32,   FUSEDLOSS_INT64};
  v.require(one_of(dtype, dtypes), argument, "unknown dtype %d", stored(dtype));
}

template <class Params>
void check_enums(checker& v, const Params& p) {
  if constexpr (std::is_same_v<Params, fusedloss_linear_cross_entropy_params>) {
    check_dtype_enum(v, p.input_dtype, "input_dtype");
    check_dtype_enum(v, p.grad_linear_dtype, "grad_linear_dtype");
  } else {
    check_dtype_enum(v, p.logits_dtype, "logits_dtype");
  }
  check_dtype_enum(v, p.targets_dtype, "targets_dtype");
  v.require(one_of(p.reduction,
                   {FUSEDLOSS_REDUCTION_NONE, FUSEDLOSS_REDUCTION_MEAN, FUSEDLOSS_REDUCTION_SUM}),
            "reduction", "unknown reduction %d", stored(p.reduction));
  v.require(one_of(p.empty_mean, {FUSEDLOSS_EMPTY_MEAN_NAN, FUSEDLOSS_EMPTY_MEAN_ZERO}),
            "empty_mean", "unknown empty-mean policy %d", stored(p.empty_mean));
  if constexpr (std::is_same_v<Params, fusedloss_bce_params>) {
    v.require(one_of(p.weight_layout, {FUSEDLOSS_WEIGHT_PER_ELEMENT, FUSEDLOSS_WEIGHT_PER_CLASS}),
              "weight_layout", "unknown layout %d", stored(p.weight_layout));
  }
}

template <class Params, class Check>
fusedloss_status validate_with(const Params* p, Params& resolved, fusedloss_error* err,
                               Check&& check) {
  if (const fusedloss_status s = validate_header(p, err); s != FUSEDLOSS_SUCCESS) return s;
  checker v(err);
  check_enums(v, *p);
  if (v.status() != FUSEDLOSS_SUCCESS) return v.status();
  resolved = *p;
  check(v);
  return v.status() != FUSEDLOSS_SUCCESS ? v.status() : succeed(err);
}

}  // namespace

fusedloss_status validate_scale(const void* data, const fusedloss_dtype& dtype, int64_t numel,
                                const void* scale, const fusedloss_dtype& scale_dtype,
                                const fusedloss_device& device, fusedloss_error* err) {
  checker v(err);
  const auto floats = {FUSEDLOSS_FLOAT32, FUSEDLOSS_FLOAT16, FUSEDLOSS_BFLOAT16, FUSEDLOSS_FLOAT64};
  v.require(one_of(device, {FUSEDLOSS_DEVICE_CPU, FUSEDLOSS_DEVICE_CUDA}), "device",
            "unknown device %d", stored(device));
  v.require(one_of(dtype, floats), "dtype", "%d is not a floating-point dtype", stored(dtype));
  v.require(one_of(scale_dtype, floats), "scale_dtype", "%d is not a floating-point dtype",
            stored(scale_dtype));
  if (v.status() != FUSEDLOSS_SUCCESS) return v.status();
  const bool cuda = device == FUSEDLOSS_DEVICE_CUDA;
  v.require(!(cuda && dtype == FUSEDLOSS_FLOAT64), "dtype", "float64 runs on the CPU only");
  v.require(!(cuda && scale_dtype == FUSEDLOSS_FLOAT64), "scale_dtype",
            "float64 runs on the CPU only");
  v.require(numel >= 0, "numel", "negative (%lld)", static_cast<long long>(numel));
  v.require_buffer(data, numel > 0, device, "data");
  v.require_buffer(scale, true, device, "scale");
  return v.status() != FUSEDLOSS_SUCCESS ? v.status() : succeed(err);
}

fusedloss_status validate_cuda_workspace(const void* workspace, fusedloss_error* err) {
  checker v(err);
  v.require(reinterpret_cast<uintptr_t>(workspace) % alignof(double) == 0, "workspace",
            "%p is not %zu-byte aligned (the kernels keep double partials there)", workspace,
            alignof(double));
  v.require_buffer(workspace, false, FUSEDLOSS_DEVICE_CUDA, "workspace");
  return v.status();
}

fusedloss_status validate(const fusedloss_bce_params* p, call c, fusedloss_bce_params& resolved,
                          fusedloss_error* err) {
  return validate_with(p, resolved, err, [&](checker& v) {
    check_elements(v, *p, c);
    const bool per_class = p->pos_weight != nullptr ||
                           (p->weight != nullptr && p->weight_layout == FUSEDLOSS_WEIGHT_PER_CLASS);
    v.require(!per_class || (p->num_classes > 0 && p->numel % p->num_classes == 0), "num_classes",
              "%lld does not divide numel (%lld); a per-class weight or pos_weight needs it to",
              static_cast<long long>(p->num_classes), static_cast<long long>(p->numel));
    v.require_buffer(p->weight, false, p->device, "weight");
    v.require_buffer(p->pos_weight, false, p->device, "pos_weight");
  });
}

fusedloss_status validate(const fusedloss_sigmoid_focal_params* p, call c,
                          fusedloss_sigmoid_focal_params& resolved, fusedloss_error* err) {
  return validate_with(p, resolved, err, [&](checker& v) {
    check_elements(v, *p, c);
    v.require(finite(p->alpha), "alpha", "%g; expected a finite value", p->alpha);
    check_gamma(v, p->gamma);
  });
}

fusedloss_status validate(const fusedloss_mse_params* p, call c, fusedloss_mse_params& resolved,
                          fusedloss_error* err) {
  return validate_with(p, resolved, err, [&](checker& v) { check_elements(v, *p, c); });
}

fusedloss_status validate(const fusedloss_cross_entropy_params* p, call c,
                          fusedloss_cross_entropy_params& resolved, fusedloss_error* err) {
  return validate_with(p, resolved, err, [&](checker& v) {
    check_rows(v, *p, c, /*probability_ok=*/true, resolved);
    check_cross_entropy_options(v, *p);
  });
}

fusedloss_status validate(const fusedloss_softmax_focal_params* p, call c,
                          fusedloss_softmax_focal_params& resolved, fusedloss_error* err) {
  return validate_with(p, resolved, err, [&](checker& v) {
    check_rows(v, *p, c, /*probability_ok=*/false, resolved);
    check_gamma(v, p->gamma);
    v.require_buffer(p->alpha, false, p->device, "alpha");
  });
}

fusedloss_status validate(const fusedloss_cross_entropy_shard_params* p, shard_step step,
                          fusedloss_cross_entropy_shard_params& resolved, fusedloss_error* err) {
  return validate_with(p, resolved, err, [&](checker& v) {
    v.require(p->batch >= 0, "batch", "negative (%lld)", static_cast<long long>(p->batch));
    v.require(p->num_classes >= 1, "num_classes", "%lld; a rank's slice holds at least one class",
              static_cast<long long>(p->num_classes));
    v.require(p->vocab_size >= p->num_classes, "vocab_size",
              "%lld is less than this rank's num_classes (%lld)",
              static_cast<long long>(p->vocab_size), static_cast<long long>(p->num_classes));
    if (v.status() != FUSEDLOSS_SUCCESS) return;
    v.require(p->vocab_start >= 0 && p->vocab_start <= p->vocab_size - p->num_classes,
              "vocab_start",
              "%lld; the slice [vocab_start, vocab_start + num_classes) must lie in [0, "
              "vocab_size) = [0, %lld) with num_classes %lld",
              static_cast<long long>(p->vocab_start), static_cast<long long>(p->vocab_size),
              static_cast<long long>(p->num_classes));
    check_strides(v, *p, p->num_classes, "num_classes", resolved);
    const bool rows = p->batch > 0;
    const bool gradient = step == shard_step::finish && p->grad_logits != nullptr;
    check_logits(v, *p, step == shard_step::partial || gradient ? p->batch : 0);
    v.require(is_integer(p->targets_dtype), "targets_dtype", "%s; expected int32 or int64",
              fusedloss_dtype_string(p->targets_dtype));
    v.require_buffer(p->targets, rows && step != shard_step::rescale, p->device, "targets");
    v.require_buffer(p->summary, rows, p->device, "summary");
    v.require_buffer(p->loss, false, p->device, "loss");
    v.require_buffer(p->lse, false, p->device, "lse");
    v.require_buffer(p->grad_logits, false, p->device, "grad_logits");
    v.require_buffer(p->grad_scale_ptr, false, p->device, "grad_scale_ptr");
    v.require_buffer(p->invalid_target_count, false, p->device, "invalid_target_count");
    check_cross_entropy_options(v, *p);
  });
}

fusedloss_status validate(const fusedloss_linear_cross_entropy_params* p, call c,
                          fusedloss_linear_cross_entropy_params& resolved, fusedloss_error* err) {
  return validate_with(p, resolved, err, [&](checker& v) {
    constexpr int64_t int64_max = std::numeric_limits<int64_t>::max();
    v.require(p->batch >= 0, "batch", "negative (%lld)", static_cast<long long>(p->batch));
    v.require(p->hidden >= 1, "hidden", "%lld; expected at least 1",
              static_cast<long long>(p->hidden));
    v.require(p->num_classes >= 1, "num_classes", "%lld; expected at least 1",
              static_cast<long long>(p->num_classes));
    if (v.status() != FUSEDLOSS_SUCCESS) return;
    v.require(p->num_classes <= int64_max / p->hidden, "num_classes",
              "num_classes * hidden overflows int64");
    v.require(p->input_row_stride == 0 || p->input_row_stride >= p->hidden, "input_row_stride",
              "%lld is less than hidden (%lld)", static_cast<long long>(p->input_row_stride),
              static_cast<long long>(p->hidden));
    v.require(p->grad_input_row_stride == 0 || p->grad_input_row_stride >= p->hidden,
              "grad_input_row_stride", "%lld is less than hidden (%lld)",
              static_cast<long long>(p->grad_input_row_stride), static_cast<long long>(p->hidden));
    resolved.input_row_stride = p->input_row_stride != 0 ? p->input_row_stride : p->hidden;
    resolved.grad_input_row_stride =
        p->grad_input_row_stride != 0 ? p->grad_input_row_stride : p->hidden;
    v.require(p->batch == 0 || resolved.input_row_stride <= int64_max / p->batch,
              "input_row_stride", "batch * input_row_stride overflows int64");
    v.require(p->batch == 0 || resolved.grad_input_row_stride <= int64_max / p->batch,
              "grad_input_row_stride", "batch * grad_input_row_stride overflows int64");
    v.require(is_floating(p->input_dtype), "input_dtype", "%s is not a floating-point dtype",
              fusedloss_dtype_string(p->input_dtype));
    v.require(!(p->device == FUSEDLOSS_DEVICE_CUDA && p->input_dtype == FUSEDLOSS_FLOAT64),
              "input_dtype", "float64 runs on the CPU reference only");
    v.require(p->grad_linear_dtype == FUSEDLOSS_FLOAT32 || p->grad_linear_dtype == p->input_dtype,
              "grad_linear_dtype", "%s; expected float32 or the input's dtype (%s)",
              fusedloss_dtype_string(p->grad_linear_dtype), fusedloss_dtype_string(p->input_dtype));
    v.require(is_integer(p->targets_dtype), "targets_dtype", "%s; expected int32 or int64",
              fusedloss_dtype_string(p->targets_dtype));
    const bool rows = p->batch > 0;
    v.require_buffer(p->input, rows, p->device, "input");
    v.require_buffer(p->linear_weight, rows, p->device, "linear_weight");
    v.require_buffer(p->linear_bias, false, p->device, "linear_bias");
    v.require_buffer(p->targets, rows, p->device, "targets");
    const bool loss_values = p->reduction != FUSEDLOSS_REDUCTION_NONE || rows;
    v.require_buffer(p->loss, c == call::forward && loss_values, p->device, "loss");
    v.require_buffer(p->lse, false, p->device, "lse");
    v.require_buffer(p->grad_input, false, p->device, "grad_input");
    v.require(p->grad_input == nullptr || p->grad_input != p->input, "grad_input",
              "the same buffer as input (the gradient cannot overwrite the hidden states)");
    v.require_buffer(p->grad_linear_weight, false, p->device, "grad_linear_weight");
    v.require_buffer(p->grad_linear_bias, false, p->device, "grad_linear_bias");
    v.require_buffer(p->grad_loss, c == call::backward && loss_values, p->device, "grad_loss");
    v.require_buffer(p->grad_scale_ptr, false, p->device, "grad_scale_ptr");
    v.require_buffer(p->invalid_target_count, false, p->device, "invalid_target_count");
    check_cross_entropy_options(v, *p);
  });
}

}  // namespace fusedloss::host
