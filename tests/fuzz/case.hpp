// One generated case: what the generator chose and what the contract says of it (fuzz_case), the
// choices the families share (the header fields, the reduction, the shared pointers, the logits,
// cross-entropy's options, strides, class indices), the five losses' generators and bindings
// (element.cpp, rows.cpp), and the families LLVMFuzzerTestOneInput runs an input through.
#ifndef FUSEDLOSS_TESTS_FUZZ_CASE_HPP
#define FUSEDLOSS_TESTS_FUZZ_CASE_HPP

#include <cmath>
#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "buffers.hpp"
#include "fusedloss/fusedloss.hpp"
#include "generator.hpp"

namespace fuzz {

// The name of a pick (fusedloss::call or, for the shard calls, fusedloss::shard_step), for
// failure messages.
template <class Call>
const char* name(std::optional<Call> c) {
  return c ? fusedloss::name(*c) : "workspace_size";
}

// What the generator chose and what the contract says of it.
struct fuzz_case {
  std::string what;                     // the loss, the call and the shape, for failure messages
  std::optional<fusedloss::call> call;  // none: workspace_size
  bool moderate = false;
  bool valid = true;          // the CPU path must accept the params
  bool header_ok = true;      // struct_size and device pass: workspace_size's checks
  const char* why = nullptr;  // the first refused choice, for messages
  bool cuda = false;          // device CUDA: refused by a build without it
  bool misaligned_workspace = false;
  bool use_err = true;

  // The problem as an accepted call sees it.
  bool rows = false;
  int64_t count = 0;                                             // elements, or rows N*S
  int64_t batch = 0, classes = 0, spatial = 1, grad_stride = 0;  // row losses
  int logits_dtype = FUSEDLOSS_FLOAT32;
  int reduction = FUSEDLOSS_REDUCTION_MEAN;
  int empty_mean = FUSEDLOSS_EMPTY_MEAN_NAN;
  bool index_targets = false;
  bool ce_weights = false;    // cross-entropy's mean is normalised by the targets' weights
  bool smooth_in_lse = true;  // the gradient is smooth in the LSE (softmax focal: gamma 0 or >= 1)
  int64_t ignore_index = -100;
  float grad_scale = 1.0f;

  // Linear + cross-entropy (batch, classes and count as above, logits_dtype the input's).
  int64_t hidden = 0, input_stride = 0, grad_input_stride = 0;
  bool accumulate = false;
  // The shard calls (batch and count the rows, classes the slice's width, grad_stride its
  // gradient's row stride, logits_dtype the shard's).
  const char* call_name = nullptr;  // the shard calls' name of the pick, for messages
  int64_t vocab_start = 0, vocab_size = 0, stride = 0;
  bool summary_derived = false;      // the summary came from partial (and rescale), not at random
  std::vector<int64_t> rank_starts;  // where the ranks of check_ranks start their slices

  void rule(bool ok, const char* argument) {
    if (!ok && valid) {
      valid = false;
      why = argument;
    }
  }
  int loss_dtype() const {
    return logits_dtype == FUSEDLOSS_FLOAT64 ? FUSEDLOSS_FLOAT64 : FUSEDLOSS_FLOAT32;
  }
  bool reduced() const { return reduction != FUSEDLOSS_REDUCTION_NONE; }
  int64_t loss_values() const { return reduced() ? 1 : count; }

  [[noreturn]] void fail_with(const std::string& message) const {
    fail("%s [%s; %s; %s]", message.c_str(), what.c_str(),
         call_name != nullptr ? call_name : name(call),
         moderate ? "moderate values" : "any values");
  }
  void require(bool ok, const std::string& message) const {
    if (!ok) fail_with(message);
  }
};

int dtype_choice(source& s, bool may_spoil);

// struct_size and device: all that a workspace query checks.
template <class P>
void generate_header(source& s, fuzz_case& f, P& p) {
  p.struct_size = sizeof(P);
  if (s.spoil()) {
    static const size_t sizes[] = {0, 1, sizeof(P) - 8, sizeof(P) + 8, SIZE_MAX};
    p.struct_size = s.from(sizes);
  }
  f.rule(p.struct_size == sizeof(P), "struct_size");
  f.header_ok = p.struct_size == sizeof(P);
  int device = FUSEDLOSS_DEVICE_CPU;
  if (s.spoil()) {
    static const int devices[] = {FUSEDLOSS_DEVICE_CUDA, FUSEDLOSS_DEVICE_CUDA, 2, -1};
    device = s.from(devices);
  }
  store_raw(p.device, device);
  f.cuda = device == FUSEDLOSS_DEVICE_CUDA;
  f.rule(device == FUSEDLOSS_DEVICE_CPU || f.cuda, "device");
  f.header_ok = f.header_ok && (device == FUSEDLOSS_DEVICE_CPU || f.cuda);
}

// The logits' (or hidden states') dtype into `field`, named `name`: any int, a floating dtype
// accepted, float64 on the CPU alone.
template <class Enum>
void generate_logits_dtype(source& s, fuzz_case& f, Enum& field, const char* name) {
  f.logits_dtype = dtype_choice(s, true);
  store_raw(field, f.logits_dtype);
  f.rule(floating(f.logits_dtype), name);
  f.rule(!(f.cuda && f.logits_dtype == FUSEDLOSS_FLOAT64), name);
}

// forward_backward's upstream value: the grad scale, and sometimes the float behind
// grad_scale_ptr (`ptr_value`, allocated here).
template <class P>
void generate_grad_scale(source& s, values& v, fuzz_case& f, P& p, block& ptr_value) {
  f.grad_scale = static_cast<float>(v.upstream());
  p.grad_scale = f.grad_scale;
  ptr_value.allocate(s.choose(4) == 0, FUSEDLOSS_FLOAT32, 1);
  if (ptr_value.given) ptr_value.set(0, v.upstream());
}

template <class P>
void generate_reduction(source& s, fuzz_case& f, P& p) {
  f.reduction = s.choose(3);
  if (s.spoil()) f.reduction = s.choose(2) == 0 ? 3 : -1;
  store_raw(p.reduction, f.reduction);
  f.rule(f.reduction >= 0 && f.reduction <= 2, "reduction");
  f.empty_mean = s.choose(2);
  if (s.spoil()) f.empty_mean = s.choose(2) == 0 ? 2 : -7;
  store_raw(p.empty_mean, f.empty_mean);
  f.rule(f.empty_mean == 0 || f.empty_mean == 1, "empty_mean");
}

// The fields every loss's params have: struct_size, device, dtypes, reduction, the grad scale, and
// which of the shared pointers are given. Sizes come first (the caller's), then this.
template <class P>
void generate_shared(source& s, values& v, fuzz_case& f, P& p, buffers& b) {
  generate_header(s, f, p);
  generate_logits_dtype(s, f, p.logits_dtype, "logits_dtype");
  generate_reduction(s, f, p);

  generate_grad_scale(s, v, f, p, b.grad_scale);

  // The pointers each call needs are usually given; a spoiled choice drops or adds one.
  const bool forward = f.call == fusedloss::call::forward;
  const bool backward = f.call == fusedloss::call::backward;
  const bool needs_values = f.count > 0;
  const int ldt = floating(f.logits_dtype) ? f.loss_dtype() : FUSEDLOSS_FLOAT64;
  b.loss.allocate(forward ? !s.spoil() : s.choose(2) == 0, ldt, f.loss_values());
  b.grad_loss.allocate(backward ? !s.spoil() : s.choose(4) == 0, ldt, f.loss_values());
  f.rule(!(forward && (f.reduced() || needs_values) && !b.loss.given), "loss");
  f.rule(!(backward && (f.reduced() || needs_values) && !b.grad_loss.given), "grad_loss");
  if (b.grad_loss.given) {
    for (int64_t i = 0; i < b.grad_loss.count; ++i) b.grad_loss.set(i, v.upstream());
  }
}

// The logits (`extent` elements of their dtype) and whether the gradient is written in place or
// to a buffer of its own; returns whether that buffer is given (the caller sizes it).
bool generate_logits(source& s, values& v, fuzz_case& f, buffers& b, int64_t extent);

// Products of a row loss's sizes that must fit int64, else the call is refused.
inline bool fits(__int128 v) { return v <= kInt64Max; }

int64_t ignore_index_choice(source& s);

// A class index in [0, c): 1 in 8 is ignore_index, 1 in 8 out of range (or ignored by chance).
int64_t class_index(source& s, const fuzz_case& f, int64_t c);

// Cross-entropy's options, which the shard calls and linear + cross-entropy share.
template <class P>
void cross_entropy_options(source& s, fuzz_case& f, P& p) {
  static const double eps_good[] = {0.0, 0.0, 0.1, 0.5, 1.0};
  static const double eps_bad[] = {-0.1, 1.5, kNaN, kInf};
  p.label_smoothing = s.spoil() ? s.from(eps_bad) : s.from(eps_good);
  f.rule(p.label_smoothing >= 0 && p.label_smoothing <= 1, "label_smoothing");
  static const double z_good[] = {0.0, 0.0, 1e-4, 0.5};
  static const double z_bad[] = {-1e-4, kNaN, kInf};
  p.z_loss = s.spoil() ? s.from(z_bad) : s.from(z_good);
  f.rule(std::isfinite(p.z_loss) && p.z_loss >= 0, "z_loss");
  static const double cap_good[] = {0.0, 0.0, 30.0, 1.0, 1e-3};
  static const double cap_bad[] = {-30.0, kNaN, kInf};
  p.softcap = s.spoil() ? s.from(cap_bad) : s.from(cap_good);
  f.rule(std::isfinite(p.softcap) && p.softcap >= 0, "softcap");
}

// A focal loss's gamma: mostly accepted values, a spoiled one refused.
double gamma_choice(source& s, fuzz_case& f);

// `v` clamped to int64.
int64_t saturated(__int128 v);

// A row stride of `width` elements: 0 (the default), padded, or too short, negative or
// overflowing.
int64_t stride_choice(source& s, int64_t width);

// The five losses' generators (element.cpp, rows.cpp): the sizes, then the shared fields and the
// loss's own; false for an accepted problem too large to allocate (the input is skipped).
bool generate(source& s, values& v, fuzz_case& f, fusedloss_bce_params& p, buffers& b);
bool generate(source& s, values& v, fuzz_case& f, fusedloss_sigmoid_focal_params& p, buffers& b);
bool generate(source& s, values& v, fuzz_case& f, fusedloss_mse_params& p, buffers& b);
bool generate(source& s, values& v, fuzz_case& f, fusedloss_cross_entropy_params& p, buffers& b);
bool generate(source& s, values& v, fuzz_case& f, fusedloss_softmax_focal_params& p, buffers& b);

// Their bindings: the params' pointers to the buffers.
void bind(fusedloss_bce_params& p, buffers& b);
void bind(fusedloss_sigmoid_focal_params& p, buffers& b);
void bind(fusedloss_mse_params& p, buffers& b);
void bind(fusedloss_cross_entropy_params& p, buffers& b);
void bind(fusedloss_softmax_focal_params& p, buffers& b);

// The families an input runs through, after LLVMFuzzerTestOneInput's picks: an element or row
// loss (loss.cpp, for the five params types), scale_in_place (scale.cpp), and over buffers by role
// (roles.hpp) linear + cross-entropy (linear.cpp) and the shard calls (shards.cpp).
template <class P>
void fuzz_loss(source& s, fuzz_case& f);
void fuzz_scale(source& s, fuzz_case& f);
struct linear_buffers;
struct shard_buffers;
template <class P, class B>
void fuzz_calls(source& s, fuzz_case& f);

}  // namespace fuzz

#endif  // FUSEDLOSS_TESTS_FUZZ_CASE_HPP
