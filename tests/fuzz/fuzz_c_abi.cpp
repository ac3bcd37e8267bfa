// A libFuzzer target over the C ABI on the CPU path (the double-precision reference), under
// AddressSanitizer and UndefinedBehaviorSanitizer. Built by the `fuzz` preset (clang, CPU only,
// FUSEDLOSS_BUILD_FUZZER=ON):
//
//   cmake --workflow --preset fuzz             # build, then CTest's fuzz_c_abi: a minute from the
//                                              # seed corpus (copied first; tests/fuzz/run.cmake)
//   mkdir -p /tmp/corpus                       # a longer run, new inputs kept in /tmp/corpus:
//   build/fuzz/tests/fuzz/fuzz_c_abi /tmp/corpus tests/fuzz/corpus -max_total_time=3600
//   build/fuzz/tests/fuzz/fuzz_c_abi crash-... # replay an input that failed
//
// Each input picks a loss (bce, sigmoid_focal, mse, cross_entropy with class-index or probability
// targets, softmax_focal) and a call (workspace_size, forward, backward, forward_backward), or
// fusedloss_scale_in_place, and builds from its bytes the params: struct_size, device, every enum
// (ints that are no enumerator included), sizes and strides (zero, negative, padded, too short,
// overflowing), options (out of range, NaN, infinite), which pointers are given (null, in place),
// and every input value. Bytes past the input's end come from a generator seeded by the input. The
// generator knows which of its choices the contract refuses, so it knows whether the call must be
// accepted. Every buffer is exactly as long as the sizes imply, so ASan reports any access past it.
// The seed corpus (tests/fuzz/corpus) has one file per loss, call and value mode: its first four
// bytes choose them (see LLVMFuzzerTestOneInput), the rest are random bytes below 0xF0, the
// threshold of a refused choice, so every seed starts from an accepted call.
//
// Checked, besides no crash and no sanitizer report:
// - the call is accepted exactly when the contract says (success, or invalid target exactly when
//   a class index is neither ignore_index nor in [0, C), counted here); the error names an
//   argument;
// - a refused call changes no byte of any buffer;
// - an accepted one changes no input, writes every element of the outputs it writes and nothing
//   else (padding columns included; outputs start poisoned), and adds the invalid targets counted
//   here to the counter;
// - run again on fresh buffers under another poison, it writes the same bits (no output is read
//   before it is written);
// - forward_backward's loss, LSE and z-loss are forward's bit for bit, and its gradient is
//   backward's from the same upstream value;
// - sum is the sum of none's values; mean is sum over the normaliser computed here from the
//   targets and weights, and NaN or 0 (per the empty-mean policy) when that is 0;
// - in the generator's moderate mode (finite, moderate values), every output is finite; with
//   float64 logits there, a row loss's backward from forward's saved LSE matches the one that
//   computes its own, and cross-entropy's index targets match their one-hot probability targets
//   (docs/SEMANTICS.md), losses and gradients, through the two target paths.
// A failed check prints what it saw and aborts; libFuzzer then saves the input.
#include <algorithm>
#include <cmath>
#include <cstdarg>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <limits>
#include <random>
#include <string>
#include <type_traits>
#include <utility>
#include <vector>

#include "dtype.hpp"
#include "fusedloss/fusedloss.h"

// enum_arguments.c: calls that take enum arguments, passed from here as the ints they may be.
extern "C" fusedloss_status fuzz_scale_in_place(void* data, int dtype, int64_t numel,
                                                const void* scale, int scale_dtype, int device,
                                                fusedloss_error* err);

namespace {

using fusedloss::host::load;
using fusedloss::host::store;

constexpr int64_t kCap = 4096;  // the most elements a buffer of an accepted problem holds
constexpr int64_t kBig = int64_t{1} << 62;
constexpr int64_t kInt64Max = std::numeric_limits<int64_t>::max();
constexpr int64_t kInt64Min = std::numeric_limits<int64_t>::min();
constexpr double kInf = std::numeric_limits<double>::infinity();
constexpr double kNaN = std::numeric_limits<double>::quiet_NaN();
constexpr unsigned char kPoison = 0xFF;       // NaN in every floating dtype
constexpr unsigned char kOtherPoison = 0xA5;  // the second run's poison
constexpr unsigned char kWorkspaceFill = 0x5A;

[[noreturn]] __attribute__((format(printf, 1, 2))) void fail(const char* format, ...) {
  std::fputs("fuzz_c_abi: check failed: ", stderr);
  va_list args;
  va_start(args, format);
  std::vfprintf(stderr, format, args);
  va_end(args);
  std::fputc('\n', stderr);
  std::abort();
}

// ---- The input's bytes --------------------------------------------------------------------------

class source {
 public:
  source(const uint8_t* data, size_t size) : data_(data), size_(size) {
    uint32_t seed = static_cast<uint32_t>(size);
    for (size_t i = 0; i < size; ++i) seed = seed * 31u + data[i];
    rng_.seed(seed);
  }

  uint8_t byte() { return pos_ < size_ ? data_[pos_++] : static_cast<uint8_t>(rng_()); }
  int choose(int n) { return byte() % n; }
  // A rare byte (1 in 16) spoils a choice; the seed corpus keeps its bytes below it.
  bool spoil() { return byte() >= 0xF0; }
  int64_t up_to(int64_t n) {  // in [0, n]; two bytes, so past 65535 only the low end
    const int64_t v = (int64_t{byte()} << 8) | byte();
    return n <= 0 ? 0 : n >= 0xFFFF ? v : v % (n + 1);
  }
  template <class T, size_t N>
  T from(const T (&table)[N]) {
    return table[choose(static_cast<int>(N))];
  }

 private:
  const uint8_t* data_;
  size_t size_;
  size_t pos_ = 0;
  std::mt19937 rng_;
};

// Values: `moderate` ones are finite and small enough that every output must be finite; the others
// add the specials (infinities, NaN, huge, tiny, negative where a weight or target is expected).
struct values {
  source& s;
  bool moderate;

  double special() {
    static const double table[] = {0.0,   -0.0,  1.0,     -1.0, 0.5,   2.0,   -3.5, 100.0,
                                   1e4,   -1e4,  65504.0, 7e4,  1e30,  -1e30, 3e38, 1e300,
                                   1e-30, 1e-45, 5e-324,  kInf, -kInf, kNaN,  kNaN, -2.0};
    return s.from(table);
  }
  // Every moderate value below is a small multiple of a power of two, exact in every dtype.
  double logit() { return !moderate && s.spoil() ? special() : (s.byte() - 128) / 8.0; }
  double unit() { return !moderate && s.spoil() ? special() : s.byte() / 256.0; }
  double target01() {
    const int k = s.choose(3);
    return k == 2 ? unit() : k;
  }
  double weight() { return !moderate && s.spoil() ? special() : s.byte() / 64.0; }
  double upstream() { return !moderate && s.spoil() ? special() : (s.byte() - 128) / 32.0; }
};

// ---- Buffers ------------------------------------------------------------------------------------

bool known_dtype(int d) { return d >= FUSEDLOSS_FLOAT32 && d <= FUSEDLOSS_INT64; }
bool floating(int d) { return d >= FUSEDLOSS_FLOAT32 && d <= FUSEDLOSS_FLOAT64; }
bool integer(int d) { return d == FUSEDLOSS_INT32 || d == FUSEDLOSS_INT64; }

size_t element_bytes(int dtype) {
  switch (dtype) {
    case FUSEDLOSS_FLOAT16:
    case FUSEDLOSS_BFLOAT16:
      return 2;
    case FUSEDLOSS_FLOAT32:
    case FUSEDLOSS_INT32:
      return 4;
    default:
      return 8;  // float64, int64, and a dtype the call must refuse
  }
}

// One buffer: `count` elements of `dtype` in a heap block of exactly that size (1 byte when empty,
// so that any read of an element overflows it), passed to the call only when `given`.
struct block {
  bool given = false;
  int dtype = FUSEDLOSS_FLOAT32;
  int64_t count = 0;
  std::vector<unsigned char> bytes;

  void allocate(bool is_given, int element_dtype, int64_t elements) {
    given = is_given;
    dtype = element_dtype;
    count = given ? std::clamp<int64_t>(elements, 0, kCap) : 0;
    bytes.assign(std::max<size_t>(static_cast<size_t>(count) * element_bytes(dtype), 1), 0);
  }
  void* data() { return given ? bytes.data() : nullptr; }
  size_t width() const { return element_bytes(dtype); }
  const unsigned char* at(int64_t i) const { return bytes.data() + i * width(); }
  bool poisoned(int64_t i, unsigned char poison) const {
    return std::all_of(at(i), at(i) + width(), [poison](unsigned char b) { return b == poison; });
  }
  double value(int64_t i) const {
    return load(bytes.data(), static_cast<fusedloss_dtype>(dtype), i);
  }
  // Floating dtypes only: a buffer of any other dtype belongs to a call that must refuse it.
  void set(int64_t i, double v) {
    if (floating(dtype)) store(bytes.data(), static_cast<fusedloss_dtype>(dtype), i, v);
  }
  void set_index(int64_t i, int64_t v) {
    if (dtype == FUSEDLOSS_INT32) {
      const auto x = static_cast<int32_t>(v);  // as a caller's int32 buffer would hold it
      std::memcpy(bytes.data() + 4 * i, &x, 4);
    } else {
      std::memcpy(bytes.data() + 8 * i, &v, 8);
    }
  }
  int64_t index(int64_t i) const {
    if (dtype == FUSEDLOSS_INT32) {
      int32_t x;
      std::memcpy(&x, bytes.data() + 4 * i, 4);
      return x;
    }
    int64_t x;
    std::memcpy(&x, bytes.data() + 8 * i, 8);
    return x;
  }
};

// Every buffer a call may touch. Outputs start poisoned in each run; lse is an input of backward.
struct buffers {
  block logits, targets, weight, pos_weight, grad_loss, grad_scale, lse, counter;
  block loss, z_loss, grad;
  bool in_place = false;  // grad_logits == logits
  bool lse_is_input = false;

  const block& grad_view() const { return in_place ? logits : grad; }
  std::vector<block*> outputs() {
    std::vector<block*> o = {&loss, &z_loss, &grad};
    if (!lse_is_input) o.push_back(&lse);
    return o;
  }
  // Every buffer with its name, the same order for every copy.
  std::vector<std::pair<const char*, const block*>> named() const {
    return {{"logits", &logits},
            {"targets", &targets},
            {"weight", &weight},
            {"pos_weight", &pos_weight},
            {"grad_loss", &grad_loss},
            {"grad_scale_ptr", &grad_scale},
            {"lse", &lse},
            {"invalid_target_count", &counter},
            {"loss", &loss},
            {"z_loss_out", &z_loss},
            {"grad_logits", &grad}};
  }
  void poison(unsigned char byte) {
    for (block* b : outputs()) std::fill(b->bytes.begin(), b->bytes.end(), byte);
  }
};

// ---- The C ABI, one set of calls per params type ------------------------------------------------

enum class api_call { workspace_size, forward, backward, forward_backward };
const char* name(api_call c) {
  static const char* names[] = {"workspace_size", "forward", "backward", "forward_backward"};
  return names[static_cast<int>(c)];
}

template <class Params>
struct abi;
#define FUZZ_ABI(loss_name)                                                            \
  template <>                                                                          \
  struct abi<fusedloss_##loss_name##_params> {                                         \
    using P = fusedloss_##loss_name##_params;                                          \
    static constexpr const char* name = #loss_name;                                    \
    static void init(P* p) { fusedloss_##loss_name##_params_init(p); }                 \
    static fusedloss_status size(const P* p, size_t* bytes, fusedloss_error* err) {    \
      return fusedloss_##loss_name##_workspace_size(p, bytes, err);                    \
    }                                                                                  \
    static fusedloss_status run(api_call c, const P* p, void* ws, size_t bytes,        \
                                fusedloss_error* err) {                                \
      switch (c) {                                                                     \
        case api_call::forward:                                                        \
          return fusedloss_##loss_name##_forward(p, ws, bytes, nullptr, err);          \
        case api_call::backward:                                                       \
          return fusedloss_##loss_name##_backward(p, ws, bytes, nullptr, err);         \
        default:                                                                       \
          return fusedloss_##loss_name##_forward_backward(p, ws, bytes, nullptr, err); \
      }                                                                                \
    }                                                                                  \
  };
FUZZ_ABI(bce)
FUZZ_ABI(sigmoid_focal)
FUZZ_ABI(mse)
FUZZ_ABI(cross_entropy)
FUZZ_ABI(softmax_focal)
#undef FUZZ_ABI

template <class P>
void bind_shared(P& p, buffers& b) {
  p.logits = b.logits.data();
  p.targets = b.targets.data();
  p.loss = b.loss.data();
  p.grad_logits = b.in_place ? b.logits.data() : b.grad.data();
  p.grad_loss = b.grad_loss.data();
  p.grad_scale_ptr = static_cast<const float*>(b.grad_scale.data());
}
template <class P>
void bind_rows(P& p, buffers& b) {
  bind_shared(p, b);
  p.lse = b.lse.data();
  p.invalid_target_count = static_cast<int64_t*>(b.counter.data());
}
void bind(fusedloss_bce_params& p, buffers& b) {
  bind_shared(p, b);
  p.weight = static_cast<const float*>(b.weight.data());
  p.pos_weight = static_cast<const float*>(b.pos_weight.data());
}
void bind(fusedloss_sigmoid_focal_params& p, buffers& b) { bind_shared(p, b); }
void bind(fusedloss_mse_params& p, buffers& b) { bind_shared(p, b); }
void bind(fusedloss_cross_entropy_params& p, buffers& b) {
  bind_rows(p, b);
  p.weight = static_cast<const float*>(b.weight.data());
  p.z_loss_out = b.z_loss.data();
}
void bind(fusedloss_softmax_focal_params& p, buffers& b) {
  bind_rows(p, b);
  p.alpha = static_cast<const float*>(b.weight.data());
}

// Stores an int into an enum field as a C caller can, whatever its value.
template <class Enum>
void store_raw(Enum& field, int value) {
  static_assert(sizeof(Enum) == sizeof(int), "C enums are int-sized here");
  std::memcpy(&field, &value, sizeof value);
}

// ---- One generated case -------------------------------------------------------------------------

// What the generator chose and what the contract says of it.
struct fuzz_case {
  std::string what;  // the loss, the call and the shape, for failure messages
  api_call call = api_call::forward;
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
    fail("%s [%s; %s; %s]", message.c_str(), what.c_str(), name(call),
         moderate ? "moderate values" : "any values");
  }
  void require(bool ok, const std::string& message) const {
    if (!ok) fail_with(message);
  }
};

int dtype_choice(source& s, bool may_spoil) {
  static const int good[] = {FUSEDLOSS_FLOAT32, FUSEDLOSS_FLOAT16, FUSEDLOSS_BFLOAT16,
                             FUSEDLOSS_FLOAT64};
  static const int bad[] = {FUSEDLOSS_INT32, FUSEDLOSS_INT64, 6, -1, 1 << 20};
  return may_spoil && s.spoil() ? s.from(bad) : s.from(good);
}

// The fields every params struct has: struct_size, device, dtypes, reduction, the grad scale, and
// which of the shared pointers are given. Sizes come first (the caller's), then this.
template <class P>
void generate_shared(source& s, values& v, fuzz_case& f, P& p, buffers& b) {
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

  f.logits_dtype = dtype_choice(s, true);
  store_raw(p.logits_dtype, f.logits_dtype);
  f.rule(floating(f.logits_dtype), "logits_dtype");
  f.rule(!(f.cuda && f.logits_dtype == FUSEDLOSS_FLOAT64), "logits_dtype");

  f.reduction = s.choose(3);
  if (s.spoil()) f.reduction = s.choose(2) == 0 ? 3 : -1;
  store_raw(p.reduction, f.reduction);
  f.rule(f.reduction >= 0 && f.reduction <= 2, "reduction");
  f.empty_mean = s.choose(2);
  if (s.spoil()) f.empty_mean = s.choose(2) == 0 ? 2 : -7;
  store_raw(p.empty_mean, f.empty_mean);
  f.rule(f.empty_mean == 0 || f.empty_mean == 1, "empty_mean");

  f.grad_scale = static_cast<float>(v.upstream());
  p.grad_scale = f.grad_scale;
  b.grad_scale.allocate(s.choose(4) == 0, FUSEDLOSS_FLOAT32, 1);
  if (b.grad_scale.given) b.grad_scale.set(0, v.upstream());

  // The pointers each call needs are usually given; a spoiled choice drops or adds one.
  const bool forward = f.call == api_call::forward;
  const bool backward = f.call == api_call::backward;
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
bool generate_logits(source& s, values& v, fuzz_case& f, buffers& b, int64_t extent) {
  b.logits.allocate(!s.spoil(), f.logits_dtype, extent);
  f.rule(!(f.count > 0 && !b.logits.given), "logits");
  for (int64_t i = 0; i < b.logits.count; ++i) b.logits.set(i, v.logit());
  const bool grads = f.call != api_call::forward;
  b.in_place = b.logits.given && s.choose(8) == 0;
  const bool grad_given = !b.in_place && (grads ? !s.spoil() : s.choose(4) == 0);
  f.rule(!(grads && f.count > 0 && !grad_given && !b.in_place), "grad_logits");
  return grad_given;
}

// ---- Element losses -----------------------------------------------------------------------------

template <class P>
void generate_elements(source& s, values& v, fuzz_case& f, P& p, buffers& b) {
  int64_t m = s.choose(4) == 0 ? s.up_to(kCap) : s.up_to(64);
  if (s.spoil()) m = s.choose(2) == 0 ? -1 : kInt64Min;
  p.numel = m;
  f.rule(m >= 0, "numel");
  f.count = std::max<int64_t>(m, 0);
  generate_shared(s, v, f, p, b);
  b.grad.allocate(generate_logits(s, v, f, b, f.count), f.logits_dtype, f.count);

  int targets_dtype = s.choose(2) == 0 ? FUSEDLOSS_FLOAT32 : f.logits_dtype;
  if (s.spoil()) targets_dtype = dtype_choice(s, true);
  store_raw(p.targets_dtype, targets_dtype);
  f.rule(targets_dtype == FUSEDLOSS_FLOAT32 || targets_dtype == f.logits_dtype, "targets_dtype");
  b.targets.allocate(!s.spoil(), targets_dtype, f.count);
  f.rule(!(f.count > 0 && !b.targets.given), "targets");
  for (int64_t i = 0; i < b.targets.count; ++i) b.targets.set(i, v.target01());
}

bool generate(source& s, values& v, fuzz_case& f, fusedloss_bce_params& p, buffers& b) {
  generate_elements(s, v, f, p, b);
  // C: a divisor of M mostly, else anything (it only matters with a per-class vector).
  int64_t c = 1;
  for (int64_t d = 1 + s.up_to(16); d >= 1; --d) {
    if (f.count % d == 0) {
      c = d;
      break;
    }
  }
  if (s.spoil()) {
    static const int64_t odd[] = {0, -1, 3, 7, kBig};
    c = s.from(odd);
  }
  p.num_classes = c;
  int layout = s.choose(2);
  if (s.spoil()) layout = 2;
  store_raw(p.weight_layout, layout);
  f.rule(layout == 0 || layout == 1, "weight_layout");
  const bool weight = s.choose(2) == 0, pos_weight = s.choose(2) == 0;
  const bool per_class = pos_weight || (weight && layout == FUSEDLOSS_WEIGHT_PER_CLASS);
  f.rule(!per_class || (c > 0 && f.count % c == 0), "num_classes");
  if (per_class && c > kCap && f.valid) return false;  // accepted, but too big to allocate
  b.weight.allocate(weight, FUSEDLOSS_FLOAT32, layout == FUSEDLOSS_WEIGHT_PER_CLASS ? c : f.count);
  b.pos_weight.allocate(pos_weight, FUSEDLOSS_FLOAT32, c);
  for (int64_t i = 0; i < b.weight.count; ++i) b.weight.set(i, v.weight());
  for (int64_t i = 0; i < b.pos_weight.count; ++i) b.pos_weight.set(i, v.weight());
  return true;
}

double alpha_choice(source& s, bool moderate) {
  static const double good[] = {0.25, -1.0, 0.75, 0.0, 1.0, 1.5};
  static const double bad[] = {kNaN, kInf, -kInf};
  static const double huge[] = {1e300, -1e300};
  if (!s.spoil()) return s.from(good);
  return moderate || s.choose(2) == 0 ? s.from(bad) : s.from(huge);
}

double gamma_choice(source& s, fuzz_case& f) {
  static const double good[] = {2.0, 0.0, 0.5, 1.0, 3.0, 0.25};
  static const double bad[] = {-0.5, -kInf, kInf, kNaN};
  const double g = s.spoil() ? s.from(bad) : s.from(good);
  f.rule(std::isfinite(g) && g >= 0, "gamma");
  return g;
}

bool generate(source& s, values& v, fuzz_case& f, fusedloss_sigmoid_focal_params& p, buffers& b) {
  generate_elements(s, v, f, p, b);
  p.alpha = alpha_choice(s, f.moderate);
  f.rule(std::isfinite(p.alpha), "alpha");
  p.gamma = gamma_choice(s, f);
  return true;
}

bool generate(source& s, values& v, fuzz_case& f, fusedloss_mse_params& p, buffers& b) {
  generate_elements(s, v, f, p, b);
  return true;
}

// ---- Row losses ---------------------------------------------------------------------------------

// Products of a row loss's sizes that must fit int64, else the call is refused.
bool fits(__int128 v) { return v <= kInt64Max; }

// The (N, C, S) layout and strides, the row buffers and the class-index or probability targets.
// Returns false for an accepted problem too large to allocate (the input is skipped).
template <class P>
bool generate_rows(source& s, values& v, fuzz_case& f, P& p, buffers& b, bool probability_ok) {
  static const int64_t classes[] = {1, 2, 3, 4, 5, 8, 10, 17, 32, 64, 100, 257, 600, 1000};
  static const int64_t spatials[] = {1, 1, 1, 1, 1, 2, 3, 5, 0};
  int64_t c = s.from(classes), sp = s.from(spatials);
  int64_t n = s.up_to(std::min<int64_t>(24, kCap / std::max<int64_t>(c * sp, 1)));
  if (s.spoil()) {
    // Sizes the contract refuses: negative, zero classes (with rows), or a product that
    // overflows int64 (C * S, N * S, C * S again).
    const int64_t spoiled[][3] = {{-1, c, sp},
                                  {n, s.choose(2) == 0 ? -1 : 0, sp},
                                  {n, c, -1},
                                  {n, std::max<int64_t>(c, 2), kBig},
                                  {std::max<int64_t>(n, 2), 1, kBig},
                                  {n, kBig, 2}};
    const int k = s.choose(6);
    n = spoiled[k][0], c = spoiled[k][1], sp = spoiled[k][2];
  }
  p.batch = n, p.num_classes = c, p.spatial = sp;
  f.rule(n >= 0, "batch");
  f.rule(c >= 0, "num_classes");
  f.rule(sp >= 0, "spatial");
  const bool sizes_ok =
      n >= 0 && c >= 0 && sp >= 0 && fits(__int128{c} * sp) && fits(__int128{n} * sp);
  f.rule(sizes_ok, "spatial");
  const __int128 row_elements = sizes_ok ? __int128{c} * sp : 0;
  const __int128 rows = sizes_ok ? __int128{n} * sp : 0;
  f.rule(c > 0 || rows == 0, "num_classes");

  // Strides: 0 (contiguous), padded, or too short, negative or overflowing.
  const auto stride_choice = [&]() -> int64_t {
    if (s.spoil()) {
      static const int64_t bad[] = {-1, -64, kBig, kInt64Max};
      return s.choose(2) == 0 ? static_cast<int64_t>(row_elements) - 1 : s.from(bad);
    }
    return s.choose(2) == 0 ? 0 : static_cast<int64_t>(row_elements) + s.choose(4);
  };
  p.row_stride = stride_choice();
  p.grad_row_stride = stride_choice();
  const bool in_place_equal = s.choose(4) != 0;  // in place, mostly with the logits' stride
  const auto stride_ok = [&](int64_t st) { return st == 0 || st >= row_elements; };
  f.rule(stride_ok(p.row_stride), "row_stride");
  const int64_t stride = p.row_stride != 0 ? p.row_stride : static_cast<int64_t>(row_elements);
  const auto overflows = [&](int64_t st) { return n > 0 && !fits(__int128{n} * st); };
  f.rule(!overflows(stride), "row_stride");

  f.rows = true;
  f.batch = std::max<int64_t>(n, 0), f.classes = std::max<int64_t>(c, 0);
  f.spatial = std::max<int64_t>(sp, 0);
  f.count = static_cast<int64_t>(std::min<__int128>(rows, kCap + 1));
  generate_shared(s, v, f, p, b);

  // The logits (and the gradient, which may alias them) span (N - 1) * stride + C * S elements.
  const auto extent = [&](int64_t st) -> __int128 {
    return rows > 0 ? __int128{n - 1} * st + row_elements : 0;
  };
  const bool grad_given = generate_logits(
      s, v, f, b, static_cast<int64_t>(std::min<__int128>(extent(stride), kCap + 1)));
  if (b.in_place && in_place_equal) p.grad_row_stride = p.row_stride;
  const int64_t grad_stride = p.grad_row_stride != 0 ? p.grad_row_stride : stride;
  f.rule(stride_ok(p.grad_row_stride), "grad_row_stride");
  f.rule(!overflows(grad_stride), "grad_row_stride");
  f.rule(!(b.in_place && grad_stride != stride), "grad_row_stride");
  f.grad_stride = grad_stride;
  b.grad.allocate(grad_given, f.logits_dtype,
                  static_cast<int64_t>(std::min<__int128>(extent(grad_stride), kCap + 1)));

  // Targets: class indices (valid, ignore_index, out of range), or probabilities.
  int targets_dtype = s.choose(2) == 0 ? FUSEDLOSS_INT64 : FUSEDLOSS_INT32;
  if (probability_ok && s.choose(3) == 0) {
    targets_dtype = s.choose(2) == 0 ? FUSEDLOSS_FLOAT32 : f.logits_dtype;
  }
  if (s.spoil()) targets_dtype = s.choose(2) == 0 ? dtype_choice(s, true) : 9;
  store_raw(p.targets_dtype, targets_dtype);
  f.index_targets = integer(targets_dtype);
  const bool probability =
      probability_ok && (targets_dtype == FUSEDLOSS_FLOAT32 ||
                         (targets_dtype == f.logits_dtype && floating(targets_dtype)));
  f.rule(f.index_targets || probability, "targets_dtype");
  static const int64_t ignore_indices[] = {-100, -100, -100, 0, -1, 3, kInt64Min, 1LL << 40};
  f.ignore_index = s.from(ignore_indices);
  p.ignore_index = f.ignore_index;
  const __int128 target_count = probability ? rows * c : rows;
  b.targets.allocate(!s.spoil(), known_dtype(targets_dtype) ? targets_dtype : FUSEDLOSS_INT64,
                     static_cast<int64_t>(std::min<__int128>(target_count, kCap + 1)));
  f.rule(!(rows > 0 && !b.targets.given), "targets");
  // Targets of any other dtype belong to a call that must refuse them: they stay zero.
  const int64_t filled = f.index_targets || probability ? b.targets.count : 0;
  for (int64_t i = 0; i < filled; ++i) {
    if (probability) {
      b.targets.set(i, v.unit());
      continue;
    }
    static const int64_t out_of_range[] = {-1, -100, -101, kInt64Min, kInt64Max, 1LL << 33};
    const int kind = s.choose(8);  // 1 in 8 ignored, 1 in 8 out of range (or ignored by chance)
    int64_t y = c > 0 ? s.up_to(c - 1) : 0;
    if (kind == 0) y = f.ignore_index;
    if (kind == 1) y = s.choose(2) == 0 ? c : s.from(out_of_range);
    b.targets.set_index(i, y);
  }

  // Per-row outputs and inputs: the LSE (backward's input when given), the counter.
  const int ldt = f.loss_dtype();
  b.lse_is_input = f.call == api_call::backward;
  b.lse.allocate(s.choose(2) == 0 && !(f.moderate && b.lse_is_input), ldt, f.count);
  if (b.lse_is_input) {
    for (int64_t i = 0; i < b.lse.count; ++i) b.lse.set(i, v.logit());
  }
  b.counter.allocate(s.choose(2) == 0, FUSEDLOSS_INT64, 1);
  if (b.counter.given) b.counter.set_index(0, s.choose(4));
  b.weight.allocate(s.choose(2) == 0, FUSEDLOSS_FLOAT32, f.classes);
  for (int64_t i = 0; i < b.weight.count; ++i) b.weight.set(i, v.weight());

  // An accepted problem must fit the buffers as allocated.
  const bool too_big = rows > kCap || extent(stride) > kCap || extent(grad_stride) > kCap ||
                       target_count > kCap || c > kCap;
  return !(f.valid && too_big);
}

bool generate(source& s, values& v, fuzz_case& f, fusedloss_cross_entropy_params& p, buffers& b) {
  if (!generate_rows(s, v, f, p, b, /*probability_ok=*/true)) return false;
  f.ce_weights = f.index_targets && b.weight.given;
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
  b.z_loss.allocate(s.choose(2) == 0, f.loss_dtype(), f.loss_values());
  return true;
}

bool generate(source& s, values& v, fuzz_case& f, fusedloss_softmax_focal_params& p, buffers& b) {
  if (!generate_rows(s, v, f, p, b, /*probability_ok=*/false)) return false;
  p.gamma = gamma_choice(s, f);
  // (1 - u)^gamma for gamma in (0, 1) has an unbounded derivative at confident rows.
  f.smooth_in_lse = p.gamma == 0 || p.gamma >= 1;
  return true;
}

// ---- Running a call and checking it -------------------------------------------------------------

template <class P>
struct trial {
  buffers b;
  P p;
  fusedloss_error err;
  fusedloss_status status;
};

// Runs call `c` of `p` on a copy of `original` whose outputs are poisoned with `poison`.
template <class P>
trial<P> run(const fuzz_case& f, api_call c, const P& p, const buffers& original,
             unsigned char poison, std::vector<unsigned char>& workspace, size_t offset) {
  trial<P> t{original, p, {}, FUSEDLOSS_SUCCESS};
  t.b.poison(poison);
  bind(t.p, t.b);
  std::memset(&t.err, 0x3C, sizeof t.err);  // so that a field the call leaves alone shows
  t.status = abi<P>::run(c, &t.p, workspace.data() + offset, workspace.size() - offset,
                         f.use_err ? &t.err : nullptr);
  return t;
}

// The error a call filled in agrees with its status and names the refused argument.
void check_error(const fuzz_case& f, fusedloss_status status, const fusedloss_error& err) {
  if (!f.use_err) return;
  int filled;  // read as an int: a status the call never wrote need not be an enumerator
  std::memcpy(&filled, &err.status, sizeof filled);
  f.require(filled == status, "err.status differs from the returned status");
  if (status == FUSEDLOSS_SUCCESS) {
    f.require(err.argument == nullptr && err.message[0] == '\0', "success left an error behind");
    return;
  }
  f.require(err.argument != nullptr, "a refusal names no argument");
  f.require(std::memchr(err.message, '\0', sizeof err.message) != nullptr, "unterminated message");
  f.require(std::strstr(err.message, err.argument) != nullptr,
            std::string("the message does not name ") + err.argument + ": " + err.message);
}

// The class of row r, or -1 (ignored) or -2 (neither ignore_index nor in [0, C)).
int64_t row_class(const fuzz_case& f, const block& targets, int64_t r) {
  const int64_t y = targets.index(r);
  if (y == f.ignore_index) return -1;
  return y >= 0 && y < f.classes ? y : -2;
}

int64_t invalid_targets(const fuzz_case& f, const block& targets) {
  if (!f.rows || !f.index_targets) return 0;
  int64_t invalid = 0;
  for (int64_t r = 0; r < f.count; ++r) invalid += row_class(f, targets, r) == -2;
  return invalid;
}

// The mean's normaliser, from docs/SEMANTICS.md: M for the element losses, N*S for probability
// targets, the count of non-ignored rows, or with cross-entropy's class weights the sum of their
// weights (in row order, as the library adds them, so that a sum that cancels to 0 agrees).
double normaliser(const fuzz_case& f, const buffers& b) {
  if (!f.rows || !f.index_targets) return static_cast<double>(f.count);
  double d = 0;
  for (int64_t r = 0; r < f.count; ++r) {
    const int64_t y = row_class(f, b.targets, r);
    if (y >= 0) d += f.ce_weights ? b.weight.value(y) : 1.0;
  }
  return d;
}

// Which elements of each output call `c` writes.
struct writes {
  std::vector<char> loss, z_loss, lse, grad;
};

writes expected_writes(const fuzz_case& f, api_call c, const buffers& b) {
  writes w;
  w.loss.assign(b.loss.count, 0);
  w.z_loss.assign(b.z_loss.count, 0);
  w.lse.assign(b.lse_is_input ? 0 : b.lse.count, 0);
  const block& grad = b.grad_view();
  w.grad.assign(grad.count, 0);
  if (c != api_call::backward) {
    std::fill_n(w.loss.begin(), std::min(f.loss_values(), b.loss.count), 1);
    std::fill_n(w.z_loss.begin(), std::min(f.loss_values(), b.z_loss.count), 1);
    std::fill(w.lse.begin(), w.lse.end(), 1);
  }
  if (c != api_call::forward && grad.given) {
    // Element i, or class k of row r = (n, s) at n * grad_stride + k * S + s.
    for (int64_t r = 0; r < f.count; ++r) {
      if (!f.rows) {
        w.grad[r] = 1;
        continue;
      }
      const int64_t base = (r / f.spatial) * f.grad_stride + r % f.spatial;
      for (int64_t k = 0; k < f.classes; ++k) w.grad[base + k * f.spatial] = 1;
    }
  }
  return w;
}

// An accepted call: each output written exactly where it should be (padding keeps its poison, or
// in place the logits), the inputs unchanged, the invalid targets added to the counter.
void check_outputs(const fuzz_case& f, api_call c, const buffers& before, const buffers& after,
                   unsigned char poison) {
  const writes w = expected_writes(f, c, after);
  const auto check = [&](const block& got, const std::vector<char>& written, const char* what,
                         const block* padding_from) {
    for (int64_t i = 0; i < static_cast<int64_t>(written.size()); ++i) {
      const bool ok = written[i] ? !got.poisoned(i, poison)
                      : padding_from != nullptr
                          ? std::memcmp(got.at(i), padding_from->at(i), got.width()) == 0
                          : got.poisoned(i, poison);
      if (!ok) {
        f.fail_with(std::string(what) + "[" + std::to_string(i) + "] " +
                    (written[i] ? "was not written" : "was written, but is not the call's"));
      }
    }
  };
  check(after.loss, w.loss, "loss", nullptr);
  check(after.z_loss, w.z_loss, "z_loss_out", nullptr);
  check(after.lse, w.lse, "lse", nullptr);
  check(after.grad_view(), w.grad, "grad_logits", after.in_place ? &before.logits : nullptr);

  const auto was = before.named(), is = after.named();
  for (size_t k = 0; k < was.size(); ++k) {
    const block* b = is[k].second;
    const bool output = b == &after.loss || b == &after.z_loss || b == &after.grad ||
                        b == &after.counter || (b == &after.lse && !after.lse_is_input) ||
                        (b == &after.logits && after.in_place && c != api_call::forward);
    f.require(output || was[k].second->bytes == b->bytes,
              std::string("input ") + is[k].first + " changed");
  }
  if (after.counter.given) {
    const int64_t added = c != api_call::backward ? invalid_targets(f, after.targets) : 0;
    f.require(after.counter.index(0) == before.counter.index(0) + added,
              "invalid_target_count is " + std::to_string(after.counter.index(0)) + ", not " +
                  std::to_string(before.counter.index(0)) + " + " + std::to_string(added));
  }
}

// A second run, whose outputs started under another poison, wrote the same bits where the first
// wrote and nothing elsewhere: no output is read before it is written. Every other buffer (inputs,
// the counter, logits written in place) holds the same bytes after both.
void check_same_bits(const fuzz_case& f, const buffers& first, const buffers& second) {
  const auto a = first.named(), b = second.named();
  for (size_t k = 0; k < a.size(); ++k) {
    const block& x = *a[k].second;
    const block& y = *b[k].second;
    const bool poisoned = &x == &first.loss || &x == &first.z_loss || &x == &first.grad ||
                          (&x == &first.lse && !first.lse_is_input);
    if (!poisoned) {
      f.require(x.bytes == y.bytes, std::string("a second run differs in ") + a[k].first);
      continue;
    }
    for (int64_t i = 0; i < x.count; ++i) {
      const bool same = x.poisoned(i, kPoison) ? y.poisoned(i, kOtherPoison)
                                               : std::memcmp(x.at(i), y.at(i), x.width()) == 0;
      if (!same) {
        f.fail_with(std::string("a second run on fresh buffers differs at ") + a[k].first + "[" +
                    std::to_string(i) + "]");
      }
    }
  }
}

bool all_finite(const block& b, const std::vector<char>& written) {
  for (int64_t i = 0; i < static_cast<int64_t>(written.size()); ++i) {
    if (written[i] && !std::isfinite(b.value(i))) return false;
  }
  return true;
}

// What `mean` must give over a zero normaliser.
bool empty_mean_value(const fuzz_case& f, double v) {
  return f.empty_mean == FUSEDLOSS_EMPTY_MEAN_NAN ? std::isnan(v) : v == 0 && !std::signbit(v);
}

// Moderate inputs give finite outputs, except that an empty mean follows its policy.
void check_finite(const fuzz_case& f, api_call c, const buffers& b) {
  const writes w = expected_writes(f, c, b);
  if (f.reduction == FUSEDLOSS_REDUCTION_MEAN && normaliser(f, b) == 0) {
    for (const block* out : {&b.loss, &b.z_loss}) {
      if (out->given && c != api_call::backward && !empty_mean_value(f, out->value(0))) {
        f.fail_with("an empty mean is " + std::to_string(out->value(0)));
      }
    }
  } else {
    f.require(all_finite(b.loss, w.loss), "moderate inputs gave a non-finite loss");
    f.require(all_finite(b.z_loss, w.z_loss), "moderate inputs gave a non-finite z-loss");
  }
  f.require(all_finite(b.lse, w.lse), "moderate inputs gave a non-finite LSE");
  f.require(all_finite(b.grad_view(), w.grad), "moderate inputs gave a non-finite gradient");
}

// `got` is `want` up to the loss dtype's rounding of values whose magnitudes add up to
// `magnitude`, plus `absolute` (subnormal spacings).
bool close(const fuzz_case& f, double got, double want, double magnitude, double absolute) {
  const double rtol = f.loss_dtype() == FUSEDLOSS_FLOAT64 ? 1e-13 : std::ldexp(1.0, -21);
  return std::fabs(got - want) <= rtol * magnitude + absolute;
}

// The spacing of the loss dtype's subnormals: the absolute error of rounding one value.
double subnormal_spacing(const fuzz_case& f) {
  return f.loss_dtype() == FUSEDLOSS_FLOAT64 ? std::numeric_limits<double>::denorm_min()
                                             : std::numeric_limits<float>::denorm_min();
}

// The values an output holds where `written`, in order.
std::vector<double> written_values(const block& b, const std::vector<char>& written) {
  std::vector<double> out;
  for (int64_t i = 0; i < static_cast<int64_t>(written.size()); ++i) {
    if (written[i]) out.push_back(b.value(i));
  }
  return out;
}

// Two float64 results of one problem by two paths agree within `tol` wherever both are finite.
void expect_close(const fuzz_case& f, const std::vector<double>& a, const std::vector<double>& b,
                  double tol, const char* what) {
  f.require(a.size() == b.size(), std::string(what) + ": the two paths wrote different counts");
  for (size_t i = 0; i < a.size(); ++i) {
    if (std::isfinite(a[i]) && std::isfinite(b[i]) && !(std::fabs(a[i] - b[i]) <= tol)) {
      f.fail_with(std::string(what) + "[" + std::to_string(i) + "]: " + std::to_string(a[i]) +
                  " against " + std::to_string(b[i]));
    }
  }
}

// Row losses, float64 logits, moderate values: backward given forward's saved LSE (exact to an
// ulp in float64) computes the gradient backward computes without it, to rounding: the saved-LSE
// path reads each row's LSE at its own index. Upstream 1 under none and sum; mean's 1/D widens the
// tolerance, which is otherwise far below any wrong LSE's effect.
template <class P>
void check_saved_lse(const fuzz_case& f, const P& p, const buffers& original,
                     std::vector<unsigned char>& workspace) {
  if (!f.smooth_in_lse || (!original.grad.given && !original.in_place)) return;
  buffers saving = original;
  saving.lse_is_input = false;
  saving.lse.allocate(true, FUSEDLOSS_FLOAT64, f.count);
  saving.loss.allocate(true, FUSEDLOSS_FLOAT64, f.loss_values());
  const trial<P> fw = run(f, api_call::forward, p, saving, kPoison, workspace, 0);
  f.require(fw.status == FUSEDLOSS_SUCCESS || fw.status == FUSEDLOSS_INVALID_TARGET,
            "a forward saving the LSE was refused");
  buffers reading = original;
  reading.lse_is_input = true;
  reading.lse = fw.b.lse;
  reading.grad_loss.allocate(true, FUSEDLOSS_FLOAT64, f.loss_values());
  for (int64_t i = 0; i < reading.grad_loss.count; ++i) reading.grad_loss.set(i, 1.0);
  buffers recomputing = reading;
  recomputing.lse.allocate(false, FUSEDLOSS_FLOAT64, 0);
  fuzz_case g = f;
  g.call = api_call::backward;
  const trial<P> saved = run(g, api_call::backward, p, reading, kPoison, workspace, 0);
  const trial<P> own = run(g, api_call::backward, p, recomputing, kPoison, workspace, 0);
  f.require(saved.status == own.status, "backward's status depends on a saved LSE");
  const std::vector<char> w = expected_writes(g, api_call::backward, saved.b).grad;
  const double d = f.reduction == FUSEDLOSS_REDUCTION_MEAN ? std::fabs(normaliser(f, original)) : 1;
  const double tol = 1e-9 * (1.0 + static_cast<double>(f.classes)) / std::min(d, 1.0);
  expect_close(f, written_values(saved.b.grad_view(), w), written_values(own.b.grad_view(), w), tol,
               "backward from a saved LSE against its own");
}

// Cross-entropy, float64 logits, moderate values, every row a class: index targets equal the
// smoothed one-hot probability targets row by row (docs/SEMANTICS.md), losses under none and
// gradients from upstream 1, computed by the two target paths.
void check_one_hot(const fuzz_case& f, const fusedloss_cross_entropy_params& p,
                   const buffers& original, std::vector<unsigned char>& workspace) {
  if (!f.index_targets || f.count == 0 || f.count * f.classes > kCap) return;
  for (int64_t r = 0; r < f.count; ++r) {
    if (row_class(f, original.targets, r) < 0) return;  // probability targets ignore no row
  }
  fusedloss_cross_entropy_params q = p;
  store_raw(q.reduction, FUSEDLOSS_REDUCTION_NONE);
  fuzz_case g = f;
  g.reduction = FUSEDLOSS_REDUCTION_NONE;
  buffers by_index = original;
  by_index.lse_is_input = false;
  by_index.lse.allocate(false, FUSEDLOSS_FLOAT64, 0);
  by_index.loss.allocate(true, FUSEDLOSS_FLOAT64, f.count);
  by_index.z_loss.allocate(false, FUSEDLOSS_FLOAT64, 0);
  by_index.grad_loss.allocate(true, FUSEDLOSS_FLOAT64, f.count);
  for (int64_t i = 0; i < f.count; ++i) by_index.grad_loss.set(i, 1.0);
  buffers by_probability = by_index;
  by_probability.targets.allocate(true, FUSEDLOSS_FLOAT64, f.count * f.classes);
  for (int64_t r = 0; r < f.count; ++r) {
    const int64_t n = r / f.spatial, s = r % f.spatial, y = row_class(f, original.targets, r);
    by_probability.targets.set((n * f.classes + y) * f.spatial + s, 1.0);
  }
  fusedloss_cross_entropy_params qp = q;
  store_raw(qp.targets_dtype, FUSEDLOSS_FLOAT64);
  const double tol = 1e-11 * (1.0 + static_cast<double>(f.classes));
  const writes w = expected_writes(g, api_call::forward, by_index);
  const trial<fusedloss_cross_entropy_params> li =
      run(g, api_call::forward, q, by_index, kPoison, workspace, 0);
  const trial<fusedloss_cross_entropy_params> lp =
      run(g, api_call::forward, qp, by_probability, kPoison, workspace, 0);
  expect_close(f, written_values(li.b.loss, w.loss), written_values(lp.b.loss, w.loss), tol,
               "loss by index against by one-hot probability");
  if (!original.grad.given && !original.in_place) return;
  g.call = api_call::backward;
  const std::vector<char> wg = expected_writes(g, api_call::backward, by_index).grad;
  const trial<fusedloss_cross_entropy_params> gi =
      run(g, api_call::backward, q, by_index, kPoison, workspace, 0);
  const trial<fusedloss_cross_entropy_params> gp =
      run(g, api_call::backward, qp, by_probability, kPoison, workspace, 0);
  expect_close(f, written_values(gi.b.grad_view(), wg), written_values(gp.b.grad_view(), wg), tol,
               "gradient by index against by one-hot probability");
}

// forward_backward against forward and backward; the three reductions against each other.
template <class P>
void check_relations(const fuzz_case& f, const P& p, const trial<P>& done, const buffers& original,
                     std::vector<unsigned char>& workspace) {
  if (f.call == api_call::forward_backward) {
    buffers with_loss = original;
    with_loss.loss.allocate(true, f.loss_dtype(), f.loss_values());
    const trial<P> fw = run(f, api_call::forward, p, with_loss, kPoison, workspace, 0);
    f.require(fw.status == done.status, "forward's status is not forward_backward's");
    f.require(!done.b.loss.given || fw.b.loss.bytes == done.b.loss.bytes,
              "forward_backward's loss is not forward's");
    f.require(fw.b.z_loss.bytes == done.b.z_loss.bytes,
              "forward_backward's z-loss isn't forward's");
    f.require(fw.b.lse.bytes == done.b.lse.bytes, "forward_backward's LSE is not forward's");

    // backward from the same upstream value as a grad_loss (when the loss dtype holds it
    // exactly), without a saved LSE: forward_backward computes its own.
    double upstream = f.grad_scale;
    if (original.grad_scale.given) upstream *= original.grad_scale.value(0);
    buffers up = original;
    up.lse_is_input = true;
    up.lse.allocate(false, f.loss_dtype(), 0);
    up.grad_loss.allocate(true, f.loss_dtype(), f.loss_values());
    bool exact = true;
    for (int64_t i = 0; i < up.grad_loss.count; ++i) {
      up.grad_loss.set(i, upstream);
      exact = exact && up.grad_loss.value(i) == upstream;
    }
    if (exact) {
      const trial<P> bw = run(f, api_call::backward, p, up, kPoison, workspace, 0);
      f.require(bw.status == done.status, "backward's status is not forward_backward's");
      f.require(bw.b.grad_view().bytes == done.b.grad_view().bytes,
                "forward_backward's gradient is not backward's from the same upstream value");
    }
  }
  if constexpr (!std::is_same_v<P, fusedloss_bce_params> &&
                !std::is_same_v<P, fusedloss_sigmoid_focal_params> &&
                !std::is_same_v<P, fusedloss_mse_params>) {
    if (f.moderate && f.logits_dtype == FUSEDLOSS_FLOAT64) {
      check_saved_lse(f, p, original, workspace);
      if constexpr (std::is_same_v<P, fusedloss_cross_entropy_params>) {
        check_one_hot(f, p, original, workspace);
      }
    }
  }
  if (f.call == api_call::backward) return;

  // sum is the sum of none's values and mean sum / D, over forwards given every output.
  const auto forward_with = [&](int reduction) {
    P q = p;
    store_raw(q.reduction, reduction);
    fuzz_case g = f;
    g.reduction = reduction;
    buffers b = original;
    b.loss.allocate(true, f.loss_dtype(), g.loss_values());
    b.z_loss.allocate(b.z_loss.given, f.loss_dtype(), g.loss_values());
    trial<P> t = run(g, api_call::forward, q, b, kPoison, workspace, 0);
    f.require(t.status == done.status, "a forward under another reduction returned another status");
    return t;
  };
  const trial<P> none = forward_with(FUSEDLOSS_REDUCTION_NONE);
  const trial<P> sum = forward_with(FUSEDLOSS_REDUCTION_SUM);
  const trial<P> mean = forward_with(FUSEDLOSS_REDUCTION_MEAN);
  const double d = normaliser(f, original);
  const auto compare = [&](const block& each, const block& total, const block& avg,
                           const std::string& what) {
    if (!each.given) return;
    double want = 0, magnitude = 0;
    for (int64_t i = 0; i < each.count; ++i) {
      want += each.value(i);
      magnitude += std::fabs(each.value(i));
    }
    const double got_sum = total.value(0), got_mean = avg.value(0);
    const double spacing = subnormal_spacing(f);
    f.require(!(std::isfinite(magnitude) && magnitude < 1e30) ||
                  close(f, got_sum, want, magnitude, (each.count + 1) * spacing),
              what + ": sum " + std::to_string(got_sum) + ", none adds to " + std::to_string(want));
    if (d == 0) {
      f.require(empty_mean_value(f, got_mean), what + ": empty mean " + std::to_string(got_mean));
    } else if (std::isfinite(got_sum) && std::fabs(got_sum) < 1e30 &&
               std::fabs(got_sum / d) < 1e30) {
      // The mean rounds once; the sum it is compared with did too, an error that 1/D scales.
      f.require(
          close(f, got_mean, got_sum / d, std::fabs(got_sum / d), spacing + spacing / std::fabs(d)),
          what + ": mean " + std::to_string(got_mean) + ", sum / D " + std::to_string(got_sum / d));
    }
  };
  compare(none.b.loss, sum.b.loss, mean.b.loss, "loss");
  compare(none.b.z_loss, sum.b.z_loss, mean.b.z_loss, "z-loss");
}

template <class P>
void fuzz_loss(source& s, fuzz_case& f) {
  using A = abi<P>;
  P p;
  A::init(&p);
  buffers b;
  values v{s, f.moderate};
  if (!generate(s, v, f, p, b)) return;
  f.what = std::string(A::name) +
           (f.rows ? " N=" + std::to_string(f.batch) + " C=" + std::to_string(f.classes) +
                         " S=" + std::to_string(f.spatial)
                   : " M=" + std::to_string(f.count));
  if (f.rows && !f.index_targets) f.what += " probability targets";
  if (f.why != nullptr) f.what += std::string(", refused for ") + f.why;

  // The workspace: the CPU path ignores it, so never writes it; CUDA's must be 8-byte aligned.
  std::vector<unsigned char> workspace(64, kWorkspaceFill);
  const size_t offset = s.choose(4) == 0 ? 1 + s.choose(7) : 0;
  f.misaligned_workspace = offset % 8 != 0;
  const bool null_p = s.choose(64) == 0;
  fusedloss_error err;
  fusedloss_error* e = f.use_err ? &err : nullptr;

  if (f.call == api_call::workspace_size) {
    const bool null_bytes = s.choose(8) == 0;
    size_t bytes = 0xDEADBEEF;
    const fusedloss_status status =
        A::size(null_p ? nullptr : &p, null_bytes ? nullptr : &bytes, e);
    fusedloss_status want = FUSEDLOSS_INVALID_ARGUMENT;
    if (!null_p && !null_bytes && f.header_ok) {
      want = f.cuda ? FUSEDLOSS_NOT_IMPLEMENTED : FUSEDLOSS_SUCCESS;
    }
    f.require(status == want, "workspace_size returned " + std::to_string(status) + ", not " +
                                  std::to_string(want));
    f.require(bytes == (status == FUSEDLOSS_SUCCESS ? 0 : 0xDEADBEEF),
              "workspace_size gave " + std::to_string(bytes) + " bytes");
    check_error(f, status, err);
    return;
  }
  if (null_p) {
    const fusedloss_status status = A::run(f.call, nullptr, workspace.data(), 64, e);
    f.require(status == FUSEDLOSS_INVALID_ARGUMENT, "a null params pointer was accepted");
    check_error(f, status, err);
    return;
  }

  const trial<P> first = run(f, f.call, p, b, kPoison, workspace, offset);
  check_error(f, first.status, first.err);
  f.require(std::all_of(workspace.begin(), workspace.end(),
                        [](unsigned char c) { return c == kWorkspaceFill; }),
            "the workspace was written");
  fusedloss_status want = FUSEDLOSS_INVALID_ARGUMENT;
  if (f.valid && f.cuda) {
    want = f.misaligned_workspace ? FUSEDLOSS_INVALID_ARGUMENT : FUSEDLOSS_NOT_IMPLEMENTED;
  } else if (f.valid) {
    want = invalid_targets(f, b.targets) > 0 ? FUSEDLOSS_INVALID_TARGET : FUSEDLOSS_SUCCESS;
  }
  f.require(first.status == want, "returned " + std::to_string(first.status) + " (" +
                                      (f.use_err && first.err.argument ? first.err.argument : "") +
                                      "), not " + std::to_string(want));
  if (want != FUSEDLOSS_SUCCESS && want != FUSEDLOSS_INVALID_TARGET) {
    // A refused call writes nothing: every byte of every buffer as it was, poison included.
    buffers unchanged = b;
    unchanged.poison(kPoison);
    const auto was = unchanged.named(), is = first.b.named();
    for (size_t k = 0; k < was.size(); ++k) {
      f.require(was[k].second->bytes == is[k].second->bytes,
                std::string("a refused call changed ") + is[k].first);
    }
    return;
  }
  check_outputs(f, f.call, b, first.b, kPoison);
  const trial<P> second = run(f, f.call, p, b, kOtherPoison, workspace, offset);
  f.require(second.status == first.status, "a second run returned another status");
  check_same_bits(f, first.b, second.b);
  if (f.moderate) check_finite(f, f.call, first.b);
  check_relations(f, p, first, b, workspace);
}

// fusedloss_scale_in_place: each value times the scale, rounded once to the data's dtype, and
// bitwise the same at a scale of exactly 1.
void fuzz_scale(source& s, fuzz_case& f) {
  values v{s, f.moderate};
  int64_t numel = s.up_to(s.choose(4) == 0 ? kCap : 64);
  if (s.spoil()) numel = -1;
  const int dtype = dtype_choice(s, true), scale_dtype = dtype_choice(s, true);
  int device = FUSEDLOSS_DEVICE_CPU;
  if (s.spoil()) device = s.choose(2) == 0 ? FUSEDLOSS_DEVICE_CUDA : 5;
  f.what = "scale_in_place numel=" + std::to_string(numel);
  block data, scale;
  data.allocate(!s.spoil(), dtype, numel);
  scale.allocate(!s.spoil(), scale_dtype, 1);
  for (int64_t i = 0; i < data.count; ++i) data.set(i, v.logit());
  if (scale.given) scale.set(0, s.choose(4) == 0 ? 1.0 : v.upstream());
  f.rule(numel >= 0, "numel");
  f.rule(floating(dtype), "dtype");
  f.rule(floating(scale_dtype), "scale_dtype");
  f.rule(device == FUSEDLOSS_DEVICE_CPU || device == FUSEDLOSS_DEVICE_CUDA, "device");
  f.rule(!(device == FUSEDLOSS_DEVICE_CUDA &&
           (dtype == FUSEDLOSS_FLOAT64 || scale_dtype == FUSEDLOSS_FLOAT64)),
         "dtype");
  f.rule(!(numel > 0 && !data.given), "data");
  f.rule(scale.given, "scale");
  const bool runs = f.valid && device == FUSEDLOSS_DEVICE_CPU;

  const block original = data, scale_before = scale;
  block expected = data;
  if (runs && scale.value(0) != 1.0) {
    for (int64_t i = 0; i < expected.count; ++i) expected.set(i, data.value(i) * scale.value(0));
  }
  fusedloss_error err;
  const fusedloss_status status = fuzz_scale_in_place(
      data.data(), dtype, numel, scale.data(), scale_dtype, device, f.use_err ? &err : nullptr);
  check_error(f, status, err);
  fusedloss_status want = FUSEDLOSS_INVALID_ARGUMENT;
  if (f.valid) want = runs ? FUSEDLOSS_SUCCESS : FUSEDLOSS_NOT_IMPLEMENTED;
  f.require(status == want,
            "scale_in_place returned " + std::to_string(status) + ", not " + std::to_string(want));
  f.require(scale.bytes == scale_before.bytes, "scale_in_place changed the scale");
  f.require(data.bytes == (runs ? expected.bytes : original.bytes),
            runs ? "scale_in_place's values are not each value times the scale, rounded once"
                 : "a refused scale_in_place wrote");
}

}  // namespace

extern "C" int LLVMFuzzerInitialize(int*, char***) {
  if (fusedloss_built_with_cuda()) {
    std::fputs("fuzz_c_abi covers the CPU path of a build without CUDA (the fuzz preset)\n",
               stderr);
    std::abort();
  }
  return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  source s(data, size);
  fuzz_case f;
  const int which = s.choose(6);
  f.call = static_cast<api_call>(s.choose(4));
  f.moderate = s.choose(2) == 0;
  f.use_err = s.choose(8) != 0;
  switch (which) {
    case 0:
      fuzz_loss<fusedloss_bce_params>(s, f);
      break;
    case 1:
      fuzz_loss<fusedloss_sigmoid_focal_params>(s, f);
      break;
    case 2:
      fuzz_loss<fusedloss_mse_params>(s, f);
      break;
    case 3:
      fuzz_loss<fusedloss_cross_entropy_params>(s, f);
      break;
    case 4:
      fuzz_loss<fusedloss_softmax_focal_params>(s, f);
      break;
    default:
      fuzz_scale(s, f);
      break;
  }
  return 0;
}
