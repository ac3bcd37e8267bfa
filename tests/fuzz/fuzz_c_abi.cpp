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
// targets, softmax_focal, linear_cross_entropy) and a call (workspace_size, forward, backward,
// forward_backward), or a vocabulary-parallel shard call (workspace_size, partial, rescale,
// finish), or fusedloss_scale_in_place, and builds from its bytes the params: struct_size, device,
// every enum (ints that are no enumerator included), sizes and strides (zero, negative, padded, too
// short, overflowing), options (out of range, NaN, infinite), which pointers are given (null, in
// place), and every input value. Bytes past the input's end come from a generator seeded by the
// input. The generator knows which of its choices the contract refuses, so it knows whether the
// call must be accepted. Every buffer is exactly as long as the sizes imply, so ASan reports any
// access past it. The seed corpus (tests/fuzz/corpus) has one file per loss, call and value mode:
// its first four bytes choose them (see LLVMFuzzerTestOneInput), the rest are random bytes below
// 0xF0, the threshold of a refused choice, so every seed starts from an accepted call (bytes past a
// seed's end come from the generator, which may still spoil a choice; the linear_cross_entropy_*
// and cross_entropy_shard_* seeds were kept only where the call is accepted). The first byte picks
// the family modulo 8: 0 to 5 as before the linear and shard families came (so the older seeds
// keep their meaning), 6 linear and cross-entropy, 7 the shard calls, whose second byte picks
// partial, rescale and finish where a loss's picks forward, backward and forward_backward.
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
// Linear + cross-entropy and the shard calls, over buffers by role (input, output written from
// poison, or updated in place: accumulated gradients, a rescaled summary, the counter):
// - the same status, refusal, exact-writes and second-run checks; grad_input may not be the input;
//   the weight's and bias's gradients are float32 or the input's dtype; a shard's slice lies in
//   [0, vocab_size); partial writes every field of the summary, rescale only SUM_EXP and
//   WEIGHTED_SUM, finish the loss, LSE, z-loss and the shard's gradient (padding untouched);
// - linear: forward_backward's loss, LSE and z-loss are forward's bit for bit and its gradients
//   backward's from the same upstream value; accumulating adds the overwritten gradients to what
//   the buffers held (within a rounding of grad_linear_dtype); in float64 with moderate values,
//   loss, LSE and the three gradients are cross-entropy's of x·Wᵀ + b, formed here;
// - shards: finish counts invalid targets only at vocab_start 0 (and every rank reports them);
//   with moderate float64 or float32 logits and the whole vocabulary, the rows split over one to
//   three ranks (partial, MAX all-reduce here, rescale, SUM all-reduce here, finish) give
//   cross-entropy's forward_backward of the whole rows to the summaries' rounding (1e-12 relative
//   in float64, 1e-5 in float32), the same loss and LSE on every rank.
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

  // Linear + cross-entropy (batch, classes and count as above, logits_dtype the input's).
  int64_t hidden = 0, input_stride = 0, grad_input_stride = 0;
  bool accumulate = false;
  // The shard calls (batch and count the rows, classes the slice's width, grad_stride its
  // gradient's row stride, logits_dtype the shard's).
  const char* call_name = nullptr;  // partial, rescale, finish for forward, backward, ...
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

int dtype_choice(source& s, bool may_spoil) {
  static const int good[] = {FUSEDLOSS_FLOAT32, FUSEDLOSS_FLOAT16, FUSEDLOSS_BFLOAT16,
                             FUSEDLOSS_FLOAT64};
  static const int bad[] = {FUSEDLOSS_INT32, FUSEDLOSS_INT64, 6, -1, 1 << 20};
  return may_spoil && s.spoil() ? s.from(bad) : s.from(good);
}

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
  f.logits_dtype = dtype_choice(s, true);
  store_raw(p.logits_dtype, f.logits_dtype);
  f.rule(floating(f.logits_dtype), "logits_dtype");
  f.rule(!(f.cuda && f.logits_dtype == FUSEDLOSS_FLOAT64), "logits_dtype");
  generate_reduction(s, f, p);

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

int64_t ignore_index_choice(source& s) {
  static const int64_t ignore_indices[] = {-100, -100, -100, 0, -1, 3, kInt64Min, 1LL << 40};
  return s.from(ignore_indices);
}

// A class index in [0, c): 1 in 8 is ignore_index, 1 in 8 out of range (or ignored by chance).
int64_t class_index(source& s, const fuzz_case& f, int64_t c) {
  static const int64_t out_of_range[] = {-1, -100, -101, kInt64Min, kInt64Max, 1LL << 33};
  const int kind = s.choose(8);
  int64_t y = c > 0 ? s.up_to(c - 1) : 0;
  if (kind == 0) y = f.ignore_index;
  if (kind == 1) y = s.choose(2) == 0 ? c : s.from(out_of_range);
  return y;
}

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
  f.ignore_index = ignore_index_choice(s);
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
    b.targets.set_index(i, class_index(s, f, c));
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
  cross_entropy_options(s, f, p);
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

// ---- Buffers by role: linear + cross-entropy and the shard calls -------------------------------

// What a call does with a buffer: reads it only; writes it from scratch (it starts poisoned in
// each run and must be written exactly at `writes`); or updates it in place (accumulated gradients,
// a summary rescaled in place, the counter, logits overwritten by their gradient), where it may
// change only at `writes`.
enum class role { input, output, updated };
struct slot {
  const char* name;
  const block* b;
  role r;
  std::vector<char> writes;
};

const slot& slot_named(const std::vector<slot>& slots, const char* name) {
  for (const slot& s : slots) {
    if (std::strcmp(s.name, name) == 0) return s;
  }
  fail("no buffer %s", name);
}

// Masks over a block's elements, built only for an accepted problem, whose sizes fit the blocks.
std::vector<char> first_of(const block& b, int64_t k) {
  std::vector<char> w(b.count, 0);
  std::fill_n(w.begin(), std::clamp<int64_t>(k, 0, b.count), 1);
  return w;
}
std::vector<char> rows_of(const block& b, int64_t rows, int64_t width, int64_t stride,
                          int64_t offset = 0) {
  std::vector<char> w(b.count, 0);
  for (int64_t r = 0; r < rows; ++r) {
    for (int64_t k = 0; k < width; ++k) {
      const int64_t i = offset + r * stride + k;
      if (i < b.count) w[i] = 1;
    }
  }
  return w;
}

template <class B>
void poison_outputs(B& b, const fuzz_case& f, api_call c, unsigned char byte) {
  for (const slot& s : b.slots(f, c)) {
    // The slots point at b's own (non-const) blocks.
    if (s.r == role::output) {
      auto& bytes = const_cast<block*>(s.b)->bytes;
      std::fill(bytes.begin(), bytes.end(), byte);
    }
  }
}

// An accepted call: inputs keep their bytes, outputs are written exactly where they should be
// (padding keeps its poison), updated buffers change nowhere else.
void check_slots(const fuzz_case& f, const std::vector<slot>& was, const std::vector<slot>& is,
                 unsigned char poison) {
  for (size_t k = 0; k < is.size(); ++k) {
    const block& before = *was[k].b;
    const block& after = *is[k].b;
    if (is[k].r == role::input) {
      f.require(before.bytes == after.bytes, std::string("input ") + is[k].name + " changed");
      continue;
    }
    for (int64_t i = 0; i < after.count; ++i) {
      const bool written = is[k].writes[i] != 0;
      const bool ok = is[k].r == role::output
                          ? written != after.poisoned(i, poison)
                          : written || std::memcmp(before.at(i), after.at(i), after.width()) == 0;
      if (!ok) {
        f.fail_with(std::string(is[k].name) + "[" + std::to_string(i) + "] " +
                    (written ? "was not written" : "was written, but is not the call's"));
      }
    }
  }
}

// A second run whose outputs started under another poison wrote the same bits where the first
// wrote, and left the rest of every buffer as the first did.
void check_same_bits(const fuzz_case& f, const std::vector<slot>& first,
                     const std::vector<slot>& second) {
  for (size_t k = 0; k < first.size(); ++k) {
    const block& x = *first[k].b;
    const block& y = *second[k].b;
    if (first[k].r != role::output) {
      f.require(x.bytes == y.bytes, std::string("a second run differs in ") + first[k].name);
      continue;
    }
    for (int64_t i = 0; i < x.count; ++i) {
      const bool same = x.poisoned(i, kPoison) ? y.poisoned(i, kOtherPoison)
                                               : std::memcmp(x.at(i), y.at(i), x.width()) == 0;
      if (!same) {
        f.fail_with(std::string("a second run on fresh buffers differs at ") + first[k].name + "[" +
                    std::to_string(i) + "]");
      }
    }
  }
}

template <class P, class B>
struct trial_of {
  B b;
  P p;
  fusedloss_error err;
  fusedloss_status status;
};

template <class P, class B>
trial_of<P, B> run_on(const fuzz_case& f, api_call c, const P& p, const B& original,
                      unsigned char poison, std::vector<unsigned char>& workspace, size_t offset) {
  trial_of<P, B> t{original, p, {}, FUSEDLOSS_SUCCESS};
  poison_outputs(t.b, f, c, poison);
  bind(t.p, t.b);
  std::memset(&t.err, 0x3C, sizeof t.err);
  t.status = abi<P>::run(c, &t.p, workspace.data() + offset, workspace.size() - offset,
                         f.use_err ? &t.err : nullptr);
  return t;
}

// Two results of one problem by two paths agree within `tol(i)` wherever the second is finite.
template <class Tol>
void expect_near(const fuzz_case& f, const block& got, const block& want,
                 const std::vector<char>& written, Tol&& tol, const char* what) {
  for (int64_t i = 0; i < static_cast<int64_t>(written.size()); ++i) {
    if (!written[i] || !std::isfinite(want.value(i))) continue;
    const double a = got.value(i), b = want.value(i);
    if (!(std::fabs(a - b) <= tol(i, b))) {
      char message[160];
      std::snprintf(message, sizeof message, "%s[%lld]: %.17g against %.17g", what,
                    static_cast<long long>(i), a, b);
      f.fail_with(message);
    }
  }
}

// The relative rounding of a dtype and the spacing of its subnormals.
double epsilon_of(int dtype) {
  switch (dtype) {
    case FUSEDLOSS_FLOAT16:
      return std::ldexp(1.0, -10);
    case FUSEDLOSS_BFLOAT16:
      return std::ldexp(1.0, -7);
    case FUSEDLOSS_FLOAT64:
      return std::ldexp(1.0, -52);
    default:
      return std::ldexp(1.0, -23);
  }
}
double tiny_of(int dtype) {
  switch (dtype) {
    case FUSEDLOSS_FLOAT16:
      return std::ldexp(1.0, -24);
    case FUSEDLOSS_BFLOAT16:
      return std::ldexp(1.0, -133);
    case FUSEDLOSS_FLOAT64:
      return std::numeric_limits<double>::denorm_min();
    default:
      return std::numeric_limits<float>::denorm_min();
  }
}

bool valid_class(const fuzz_case& f, int64_t y, int64_t limit) {
  return y != f.ignore_index && y >= 0 && y < limit;
}
int64_t count_invalid(const fuzz_case& f, const block& targets, int64_t rows, int64_t limit) {
  int64_t invalid = 0;
  for (int64_t r = 0; r < std::min(rows, targets.count); ++r) {
    const int64_t y = targets.index(r);
    invalid += y != f.ignore_index && !valid_class(f, y, limit);
  }
  return invalid;
}

// The flow of fuzz_loss, over buffers by role: the status the contract asks for, a refused call
// changing no byte, an accepted one writing exactly its outputs, the same bits under another
// poison, finite outputs from moderate values, and the family's relations.
template <class P, class B>
void fuzz_calls(source& s, fuzz_case& f) {
  using A = abi<P>;
  P p;
  A::init(&p);
  B b;
  values v{s, f.moderate};
  if (!generate(s, v, f, p, b)) return;
  if (f.why != nullptr) f.what += std::string(", refused for ") + f.why;

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

  const trial_of<P, B> first = run_on(f, f.call, p, b, kPoison, workspace, offset);
  check_error(f, first.status, first.err);
  f.require(std::all_of(workspace.begin(), workspace.end(),
                        [](unsigned char c) { return c == kWorkspaceFill; }),
            "the workspace was written");
  fusedloss_status want = FUSEDLOSS_INVALID_ARGUMENT;
  if (f.valid && f.cuda) {
    want = f.misaligned_workspace ? FUSEDLOSS_INVALID_ARGUMENT : FUSEDLOSS_NOT_IMPLEMENTED;
  } else if (f.valid) {
    want = reported_invalid(f, f.call, b) > 0 ? FUSEDLOSS_INVALID_TARGET : FUSEDLOSS_SUCCESS;
  }
  f.require(first.status == want, "returned " + std::to_string(first.status) + " (" +
                                      (f.use_err && first.err.argument ? first.err.argument : "") +
                                      "), not " + std::to_string(want));
  if (want != FUSEDLOSS_SUCCESS && want != FUSEDLOSS_INVALID_TARGET) {
    B unchanged = b;
    poison_outputs(unchanged, f, f.call, kPoison);
    const std::vector<slot> was = unchanged.slots(f, f.call), is = first.b.slots(f, f.call);
    for (size_t k = 0; k < was.size(); ++k) {
      f.require(was[k].b->bytes == is[k].b->bytes,
                std::string("a refused call changed ") + is[k].name);
    }
    return;
  }
  check_slots(f, b.slots(f, f.call), first.b.slots(f, f.call), kPoison);
  if (first.b.counter.given) {
    const int64_t added = counter_added(f, f.call, b);
    f.require(first.b.counter.index(0) == b.counter.index(0) + added,
              "invalid_target_count is " + std::to_string(first.b.counter.index(0)) + ", not " +
                  std::to_string(b.counter.index(0)) + " + " + std::to_string(added));
  }
  const trial_of<P, B> second = run_on(f, f.call, p, b, kOtherPoison, workspace, offset);
  f.require(second.status == first.status, "a second run returned another status");
  check_same_bits(f, first.b.slots(f, f.call), second.b.slots(f, f.call));
  if (f.moderate) check_finite(f, f.call, first.b);
  check_relations(f, p, first, b, workspace);
}

// Moderate inputs give finite losses, except that an empty mean follows its policy.
void check_finite_losses(const fuzz_case& f, const std::vector<slot>& slots, double normaliser) {
  for (const char* name : {"loss", "z_loss_out"}) {
    const slot& s = slot_named(slots, name);
    if (f.reduction == FUSEDLOSS_REDUCTION_MEAN && normaliser == 0) {
      for (int64_t i = 0; i < s.b->count; ++i) {
        if (s.writes[i] && !empty_mean_value(f, s.b->value(i))) {
          f.fail_with(std::string("an empty mean's ") + name + " is " +
                      std::to_string(s.b->value(i)));
        }
      }
    } else {
      f.require(all_finite(*s.b, s.writes),
                std::string("moderate inputs gave a non-finite ") + name);
    }
  }
  const slot& lse = slot_named(slots, "lse");
  f.require(all_finite(*lse.b, lse.writes), "moderate inputs gave a non-finite LSE");
}

// ---- Fused linear + cross-entropy ---------------------------------------------------------------

template <>
struct abi<fusedloss_linear_cross_entropy_params> {
  using P = fusedloss_linear_cross_entropy_params;
  static void init(P* p) { fusedloss_linear_cross_entropy_params_init(p); }
  static fusedloss_status size(const P* p, size_t* bytes, fusedloss_error* err) {
    return fusedloss_linear_cross_entropy_workspace_size(p, bytes, err);
  }
  static fusedloss_status run(api_call c, const P* p, void* ws, size_t bytes,
                              fusedloss_error* err) {
    switch (c) {
      case api_call::forward:
        return fusedloss_linear_cross_entropy_forward(p, ws, bytes, nullptr, err);
      case api_call::backward:
        return fusedloss_linear_cross_entropy_backward(p, ws, bytes, nullptr, err);
      default:
        return fusedloss_linear_cross_entropy_forward_backward(p, ws, bytes, nullptr, err);
    }
  }
};

struct linear_buffers {
  block input, linear_weight, linear_bias, targets, weight, grad_loss, grad_scale, counter;
  block loss, lse, z_loss, grad_input, grad_weight, grad_bias;
  bool alias = false;  // grad_input is the input itself, which the contract refuses

  std::vector<slot> slots(const fuzz_case& f, api_call c) const {
    const bool fw = f.valid && c != api_call::backward;
    const bool bw = f.valid && c != api_call::forward;
    // Accumulated gradients are read, so they hold values, not poison.
    const role linear = f.accumulate ? role::updated : role::output;
    return {{"input", &input, role::input, {}},
            {"linear_weight", &linear_weight, role::input, {}},
            {"linear_bias", &linear_bias, role::input, {}},
            {"targets", &targets, role::input, {}},
            {"weight", &weight, role::input, {}},
            {"grad_loss", &grad_loss, role::input, {}},
            {"grad_scale_ptr", &grad_scale, role::input, {}},
            {"invalid_target_count", &counter, role::updated, first_of(counter, 1)},
            {"loss", &loss, role::output, first_of(loss, fw ? f.loss_values() : 0)},
            {"lse", &lse, role::output, first_of(lse, fw ? f.count : 0)},
            {"z_loss_out", &z_loss, role::output, first_of(z_loss, fw ? f.loss_values() : 0)},
            {"grad_input", &grad_input, role::output,
             rows_of(grad_input, bw ? f.count : 0, f.hidden, f.grad_input_stride)},
            {"grad_linear_weight", &grad_weight, linear, first_of(grad_weight, bw ? kCap : 0)},
            {"grad_linear_bias", &grad_bias, linear, first_of(grad_bias, bw ? kCap : 0)}};
  }
};

void bind(fusedloss_linear_cross_entropy_params& p, linear_buffers& b) {
  p.input = b.input.data();
  p.linear_weight = b.linear_weight.data();
  p.linear_bias = b.linear_bias.data();
  p.targets = b.targets.data();
  p.weight = static_cast<const float*>(b.weight.data());
  p.loss = b.loss.data();
  p.lse = b.lse.data();
  p.z_loss_out = b.z_loss.data();
  p.grad_input = b.alias ? b.input.data() : b.grad_input.data();
  p.grad_linear_weight = b.grad_weight.data();
  p.grad_linear_bias = b.grad_bias.data();
  p.grad_loss = b.grad_loss.data();
  p.grad_scale_ptr = static_cast<const float*>(b.grad_scale.data());
  p.invalid_target_count = static_cast<int64_t*>(b.counter.data());
}

int64_t saturated(__int128 v) {
  return static_cast<int64_t>(std::clamp<__int128>(v, kInt64Min, kInt64Max));
}

// A row stride of `width` elements: 0 (the default), padded, or too short, negative or
// overflowing.
int64_t stride_choice(source& s, int64_t width) {
  if (s.spoil()) {
    static const int64_t bad[] = {-1, -64, kBig, kInt64Max};
    return s.choose(2) == 0 ? saturated(__int128{width} - 1) : s.from(bad);
  }
  return s.choose(2) == 0 ? 0 : saturated(__int128{width} + s.choose(4));
}

bool generate(source& s, values& v, fuzz_case& f, fusedloss_linear_cross_entropy_params& p,
              linear_buffers& b) {
  static const int64_t vocabs[] = {1, 2, 3, 5, 8, 17, 32, 100, 257};
  static const int64_t hiddens[] = {1, 2, 3, 4, 8, 16, 33};
  int64_t classes = s.from(vocabs);
  int64_t hidden = std::min<int64_t>(s.from(hiddens), kCap / classes);
  // The reference's products cost N * V * H each, and a case runs several calls; the (N, V)
  // logits check_product forms must fit a block.
  int64_t n = s.up_to(std::min({int64_t{16}, 32768 / (classes * hidden), kCap / classes}));
  if (s.spoil()) {
    // Sizes the contract refuses: negative, zero, or V * H overflowing int64.
    const int64_t spoiled[][3] = {{-1, classes, hidden},
                                  {n, s.choose(2) == 0 ? 0 : -1, hidden},
                                  {n, classes, s.choose(2) == 0 ? 0 : -1},
                                  {n, kBig, 4},
                                  {n, 3, kBig},
                                  {n, kInt64Max, kInt64Max}};
    const int k = s.choose(6);
    n = spoiled[k][0], classes = spoiled[k][1], hidden = spoiled[k][2];
  }
  p.batch = n, p.num_classes = classes, p.hidden = hidden;
  f.rule(n >= 0, "batch");
  f.rule(hidden >= 1, "hidden");
  f.rule(classes >= 1, "num_classes");
  const bool sizes_ok = n >= 0 && hidden >= 1 && classes >= 1;
  f.rule(!sizes_ok || fits(__int128{classes} * hidden), "num_classes");
  const __int128 matrix = sizes_ok ? __int128{classes} * hidden : 0;

  p.input_row_stride = stride_choice(s, hidden);
  p.grad_input_row_stride = stride_choice(s, hidden);
  const auto stride_ok = [&](int64_t st) { return st == 0 || st >= hidden; };
  f.rule(stride_ok(p.input_row_stride), "input_row_stride");
  f.rule(stride_ok(p.grad_input_row_stride), "grad_input_row_stride");
  const int64_t in_stride = p.input_row_stride != 0 ? p.input_row_stride : hidden;
  const int64_t grad_stride = p.grad_input_row_stride != 0 ? p.grad_input_row_stride : hidden;
  f.rule(!(n > 0 && !fits(__int128{n} * in_stride)), "input_row_stride");
  f.rule(!(n > 0 && !fits(__int128{n} * grad_stride)), "grad_input_row_stride");

  f.rows = f.index_targets = true;
  f.batch = std::max<int64_t>(n, 0), f.classes = std::max<int64_t>(classes, 0);
  f.hidden = std::max<int64_t>(hidden, 0);
  f.count = std::min<int64_t>(f.batch, kCap + 1);
  f.input_stride = in_stride, f.grad_input_stride = grad_stride;
  generate_header(s, f, p);
  f.logits_dtype = dtype_choice(s, true);
  store_raw(p.input_dtype, f.logits_dtype);
  f.rule(floating(f.logits_dtype), "input_dtype");
  f.rule(!(f.cuda && f.logits_dtype == FUSEDLOSS_FLOAT64), "input_dtype");
  int linear_dtype = s.choose(2) == 0 ? FUSEDLOSS_FLOAT32 : f.logits_dtype;
  if (s.spoil()) {
    static const int odd[] = {
        FUSEDLOSS_FLOAT16, FUSEDLOSS_BFLOAT16, FUSEDLOSS_FLOAT64, FUSEDLOSS_INT32, 6, -1};
    linear_dtype = s.from(odd);
  }
  store_raw(p.grad_linear_dtype, linear_dtype);
  f.rule(linear_dtype == FUSEDLOSS_FLOAT32 || linear_dtype == f.logits_dtype, "grad_linear_dtype");
  generate_reduction(s, f, p);
  f.grad_scale = static_cast<float>(v.upstream());
  p.grad_scale = f.grad_scale;
  b.grad_scale.allocate(s.choose(4) == 0, FUSEDLOSS_FLOAT32, 1);
  if (b.grad_scale.given) b.grad_scale.set(0, v.upstream());

  // Moderate hidden states and weights below 1 keep |z| <= H + 1, so that the z-loss's LSE^2 and
  // the gradients' sums over rows and classes stay well inside float32.
  const auto extent = [&](int64_t st) -> __int128 {
    return n > 0 && sizes_ok ? __int128{n - 1} * st + hidden : 0;
  };
  const auto capped = [](__int128 e) {
    return static_cast<int64_t>(std::min<__int128>(e, kCap + 1));
  };
  const int dt = f.logits_dtype;
  b.input.allocate(!s.spoil(), dt, capped(extent(in_stride)));
  f.rule(!(n > 0 && !b.input.given), "input");
  for (int64_t i = 0; i < b.input.count; ++i) b.input.set(i, v.logit() / 16);
  b.linear_weight.allocate(!s.spoil(), dt, capped(matrix));
  f.rule(!(n > 0 && !b.linear_weight.given), "linear_weight");
  for (int64_t i = 0; i < b.linear_weight.count; ++i) b.linear_weight.set(i, v.logit() / 16);
  b.linear_bias.allocate(s.choose(2) == 0, dt, f.classes);
  for (int64_t i = 0; i < b.linear_bias.count; ++i) b.linear_bias.set(i, v.logit() / 16);

  int targets_dtype = s.choose(2) == 0 ? FUSEDLOSS_INT64 : FUSEDLOSS_INT32;
  if (s.spoil()) targets_dtype = s.choose(2) == 0 ? dtype_choice(s, true) : 9;
  store_raw(p.targets_dtype, targets_dtype);
  f.rule(integer(targets_dtype), "targets_dtype");
  f.ignore_index = ignore_index_choice(s);
  p.ignore_index = f.ignore_index;
  b.targets.allocate(!s.spoil(), integer(targets_dtype) ? targets_dtype : FUSEDLOSS_INT64, f.count);
  f.rule(!(n > 0 && !b.targets.given), "targets");
  for (int64_t i = 0; i < b.targets.count; ++i) b.targets.set_index(i, class_index(s, f, classes));
  b.weight.allocate(s.choose(2) == 0, FUSEDLOSS_FLOAT32, f.classes);
  for (int64_t i = 0; i < b.weight.count; ++i) b.weight.set(i, v.weight());
  f.ce_weights = b.weight.given;
  cross_entropy_options(s, f, p);

  const bool forward = f.call == api_call::forward, backward = f.call == api_call::backward;
  const bool loss_values = f.reduced() || n > 0;
  const int ldt = floating(f.logits_dtype) ? f.loss_dtype() : FUSEDLOSS_FLOAT64;
  b.loss.allocate(forward ? !s.spoil() : s.choose(2) == 0, ldt, f.loss_values());
  b.grad_loss.allocate(backward ? !s.spoil() : s.choose(4) == 0, ldt, f.loss_values());
  f.rule(!(forward && loss_values && !b.loss.given), "loss");
  f.rule(!(backward && loss_values && !b.grad_loss.given), "grad_loss");
  for (int64_t i = 0; i < b.grad_loss.count; ++i) b.grad_loss.set(i, v.upstream());
  b.lse.allocate(s.choose(2) == 0, ldt, f.count);
  b.z_loss.allocate(s.choose(2) == 0, ldt, f.loss_values());
  b.counter.allocate(s.choose(2) == 0, FUSEDLOSS_INT64, 1);
  if (b.counter.given) b.counter.set_index(0, s.choose(4));

  // Every gradient is optional; a forward may be given them too, and must leave them alone.
  const auto grad_given = [&] { return forward ? s.choose(4) == 0 : s.choose(4) != 0; };
  b.alias = b.input.given && s.choose(16) == 0;
  f.rule(!b.alias, "grad_input");
  b.grad_input.allocate(!b.alias && grad_given(), dt, capped(extent(grad_stride)));
  static const int accumulates[] = {0, 0, 0, 0, 1, 1, -1, 2};  // any nonzero int accumulates
  p.accumulate_grad_linear = s.from(accumulates);
  f.accumulate = p.accumulate_grad_linear != 0;
  const int gdt = known_dtype(linear_dtype) ? linear_dtype : FUSEDLOSS_FLOAT64;
  b.grad_weight.allocate(grad_given(), gdt, capped(matrix));
  b.grad_bias.allocate(grad_given(), gdt, f.classes);
  if (f.accumulate) {
    for (int64_t i = 0; i < b.grad_weight.count; ++i) b.grad_weight.set(i, v.upstream());
    for (int64_t i = 0; i < b.grad_bias.count; ++i) b.grad_bias.set(i, v.upstream());
  }

  f.what = "linear_cross_entropy N=" + std::to_string(n) + " H=" + std::to_string(hidden) +
           " V=" + std::to_string(classes);
  if (f.accumulate) f.what += " accumulating";
  const bool too_big = n > kCap || classes > kCap || matrix > kCap || extent(in_stride) > kCap ||
                       extent(grad_stride) > kCap;
  return !(f.valid && too_big);
}

// Rows whose targets count in the mean's normaliser, with their class weights (docs/SEMANTICS.md).
double linear_normaliser(const fuzz_case& f, const linear_buffers& b) {
  double d = 0;
  for (int64_t r = 0; r < f.count; ++r) {
    const int64_t y = b.targets.index(r);
    if (valid_class(f, y, f.classes)) d += b.weight.given ? b.weight.value(y) : 1.0;
  }
  return d;
}

int64_t reported_invalid(const fuzz_case& f, api_call, const linear_buffers& b) {
  return count_invalid(f, b.targets, f.count, f.classes);
}
int64_t counter_added(const fuzz_case& f, api_call c, const linear_buffers& b) {
  return c != api_call::backward ? reported_invalid(f, c, b) : 0;
}

void check_finite(const fuzz_case& f, api_call c, const linear_buffers& b) {
  const std::vector<slot> slots = b.slots(f, c);
  check_finite_losses(f, slots, linear_normaliser(f, b));
  // A float16 gradient may still overflow: a mean's 1/D is unbounded by the values, and the
  // weight's and bias's gradients add over rows.
  for (const char* name : {"grad_input", "grad_linear_weight", "grad_linear_bias"}) {
    const slot& s = slot_named(slots, name);
    f.require(s.b->dtype == FUSEDLOSS_FLOAT16 || all_finite(*s.b, s.writes),
              std::string("moderate inputs gave a non-finite ") + name);
  }
}

using linear_trial = trial_of<fusedloss_linear_cross_entropy_params, linear_buffers>;

// Float64, moderate values: the loss, the LSE and the three gradients are cross-entropy's of the
// product z = x·Wᵀ + b, computed here, and of its gradient G (docs/SEMANTICS.md).
void check_product(const fuzz_case& f, const fusedloss_linear_cross_entropy_params& p,
                   const linear_buffers& original, std::vector<unsigned char>& workspace) {
  if (f.count == 0) return;
  const int64_t n = f.count, classes = f.classes, h = f.hidden;
  linear_buffers b = original;
  const int dt = FUSEDLOSS_FLOAT64;
  b.loss.allocate(true, dt, f.loss_values());
  b.lse.allocate(true, dt, n);
  b.z_loss.allocate(true, dt, f.loss_values());
  b.grad_input.allocate(true, dt, n * h);
  b.grad_weight.allocate(true, dt, classes * h);
  b.grad_bias.allocate(true, dt, classes);
  b.alias = false;
  fusedloss_linear_cross_entropy_params q = p;
  q.grad_input_row_stride = h;
  q.accumulate_grad_linear = 0;
  store_raw(q.grad_linear_dtype, FUSEDLOSS_FLOAT64);
  fuzz_case g = f;
  g.call = api_call::forward_backward;
  g.accumulate = false;
  g.grad_input_stride = h;
  const linear_trial fused = run_on(g, api_call::forward_backward, q, b, kPoison, workspace, 0);

  block logits, grad, loss, lse, z_loss;
  logits.allocate(true, dt, n * classes);
  for (int64_t r = 0; r < n; ++r) {
    for (int64_t c = 0; c < classes; ++c) {
      double z = b.linear_bias.given ? b.linear_bias.value(c) : 0.0;
      for (int64_t k = 0; k < h; ++k) {
        z += b.input.value(r * f.input_stride + k) * b.linear_weight.value(c * h + k);
      }
      logits.set(r * classes + c, z);
    }
  }
  grad.allocate(true, dt, n * classes);
  loss.allocate(true, dt, f.loss_values());
  lse.allocate(true, dt, n);
  z_loss.allocate(true, dt, f.loss_values());
  fusedloss_cross_entropy_params ce;
  fusedloss_cross_entropy_params_init(&ce);
  ce.batch = n, ce.num_classes = classes;
  ce.logits = logits.data();
  ce.logits_dtype = FUSEDLOSS_FLOAT64;
  ce.targets = b.targets.data();
  ce.targets_dtype = q.targets_dtype;
  ce.weight = static_cast<const float*>(b.weight.data());
  ce.ignore_index = q.ignore_index;
  ce.label_smoothing = q.label_smoothing, ce.z_loss = q.z_loss, ce.softcap = q.softcap;
  ce.reduction = q.reduction, ce.empty_mean = q.empty_mean;
  ce.grad_scale = q.grad_scale;
  ce.grad_scale_ptr = static_cast<const float*>(b.grad_scale.data());
  ce.loss = loss.data(), ce.lse = lse.data(), ce.z_loss_out = z_loss.data();
  ce.grad_logits = grad.data();
  const fusedloss_status status =
      fusedloss_cross_entropy_forward_backward(&ce, nullptr, 0, nullptr, nullptr);
  f.require(status == fused.status, "cross-entropy of the product returned another status");

  const auto near = [](int64_t, double want) { return 1e-12 * (1 + std::fabs(want)); };
  const std::vector<char> all(static_cast<size_t>(kCap), 1);
  const auto mask = [&](const block& x) {
    return std::vector<char>(all.begin(), all.begin() + x.count);
  };
  expect_near(g, fused.b.loss, loss, mask(loss), near, "loss against cross-entropy's of x·Wᵀ + b");
  expect_near(g, fused.b.lse, lse, mask(lse), near, "LSE against cross-entropy's of x·Wᵀ + b");
  expect_near(g, fused.b.z_loss, z_loss, mask(z_loss), near, "z-loss against cross-entropy's");

  // The gradients' products, with the magnitudes of their terms as the scale of their rounding.
  block want_input, want_weight, want_bias, scale_input, scale_weight, scale_bias;
  for (block* x : {&want_input, &scale_input}) x->allocate(true, dt, n * h);
  for (block* x : {&want_weight, &scale_weight}) x->allocate(true, dt, classes * h);
  for (block* x : {&want_bias, &scale_bias}) x->allocate(true, dt, classes);
  for (int64_t r = 0; r < n; ++r) {
    for (int64_t c = 0; c < classes; ++c) {
      const double gz = grad.value(r * classes + c);
      want_bias.set(c, want_bias.value(c) + gz);
      scale_bias.set(c, scale_bias.value(c) + std::fabs(gz));
      for (int64_t k = 0; k < h; ++k) {
        const double x = b.input.value(r * f.input_stride + k),
                     w = b.linear_weight.value(c * h + k);
        want_input.set(r * h + k, want_input.value(r * h + k) + gz * w);
        scale_input.set(r * h + k, scale_input.value(r * h + k) + std::fabs(gz * w));
        want_weight.set(c * h + k, want_weight.value(c * h + k) + gz * x);
        scale_weight.set(c * h + k, scale_weight.value(c * h + k) + std::fabs(gz * x));
      }
    }
  }
  const auto by = [](const block& scale) {
    return [&scale](int64_t i, double) { return 1e-12 * (1e-300 + scale.value(i)); };
  };
  expect_near(g, fused.b.grad_input, want_input, mask(want_input), by(scale_input),
              "grad_input against G·W");
  expect_near(g, fused.b.grad_weight, want_weight, mask(want_weight), by(scale_weight),
              "grad_linear_weight against Gᵀ·x");
  expect_near(g, fused.b.grad_bias, want_bias, mask(want_bias), by(scale_bias),
              "grad_linear_bias against the sum of G over rows");
}

void check_relations(const fuzz_case& f, const fusedloss_linear_cross_entropy_params& p,
                     const linear_trial& done, const linear_buffers& original,
                     std::vector<unsigned char>& workspace) {
  if (f.call == api_call::forward_backward) {
    linear_buffers with_loss = original;
    with_loss.loss.allocate(true, f.loss_dtype(), f.loss_values());
    const linear_trial fw = run_on(f, api_call::forward, p, with_loss, kPoison, workspace, 0);
    f.require(fw.status == done.status, "forward's status is not forward_backward's");
    f.require(!done.b.loss.given || fw.b.loss.bytes == done.b.loss.bytes,
              "forward_backward's loss is not forward's");
    f.require(fw.b.z_loss.bytes == done.b.z_loss.bytes,
              "forward_backward's z-loss isn't forward's");
    f.require(fw.b.lse.bytes == done.b.lse.bytes, "forward_backward's LSE is not forward's");

    // backward from the same upstream value as a grad_loss, when the loss dtype holds it exactly.
    double upstream = f.grad_scale;
    if (original.grad_scale.given) upstream *= original.grad_scale.value(0);
    linear_buffers up = original;
    up.grad_loss.allocate(true, f.loss_dtype(), f.loss_values());
    bool exact = true;
    for (int64_t i = 0; i < up.grad_loss.count; ++i) {
      up.grad_loss.set(i, upstream);
      exact = exact && up.grad_loss.value(i) == upstream;
    }
    if (exact) {
      const linear_trial bw = run_on(f, api_call::backward, p, up, kPoison, workspace, 0);
      f.require(bw.status == done.status, "backward's status is not forward_backward's");
      f.require(bw.b.grad_input.bytes == done.b.grad_input.bytes &&
                    bw.b.grad_weight.bytes == done.b.grad_weight.bytes &&
                    bw.b.grad_bias.bytes == done.b.grad_bias.bytes,
                "forward_backward's gradients are not backward's from the same upstream value");
    }
  }

  // Accumulating adds the gradient an overwriting call writes to what the buffers held, rounded
  // once to grad_linear_dtype (so within a rounding or two of that sum, and exact in float64).
  if (f.accumulate && f.call != api_call::forward) {
    fusedloss_linear_cross_entropy_params q = p;
    q.accumulate_grad_linear = 0;
    fuzz_case g = f;
    g.accumulate = false;
    const linear_trial plain = run_on(g, f.call, q, original, kPoison, workspace, 0);
    f.require(plain.status == done.status, "accumulate_grad_linear changed the status");
    f.require(plain.b.loss.bytes == done.b.loss.bytes && plain.b.lse.bytes == done.b.lse.bytes &&
                  plain.b.grad_input.bytes == done.b.grad_input.bytes,
              "accumulate_grad_linear changed an output it does not accumulate");
    const auto check = [&](const block& init, const block& got, const block& part,
                           const char* what) {
      const double eps = epsilon_of(got.dtype), tiny = tiny_of(got.dtype);
      for (int64_t i = 0; i < got.count; ++i) {
        const double a = init.value(i), b = got.value(i), c = part.value(i);
        if (!std::isfinite(a) || !std::isfinite(b) || !std::isfinite(c)) continue;
        if (!(std::fabs(b - (a + c)) <=
              eps * (std::fabs(a) + std::fabs(b) + std::fabs(c)) + 2 * tiny)) {
          char message[160];
          std::snprintf(message, sizeof message, "%s[%lld] accumulated to %.17g, not %.17g + %.17g",
                        what, static_cast<long long>(i), b, a, c);
          f.fail_with(message);
        }
      }
    };
    check(original.grad_weight, done.b.grad_weight, plain.b.grad_weight, "grad_linear_weight");
    check(original.grad_bias, done.b.grad_bias, plain.b.grad_bias, "grad_linear_bias");
  }

  if (f.moderate && f.logits_dtype == FUSEDLOSS_FLOAT64) check_product(f, p, original, workspace);
}

// ---- Vocabulary-parallel shards -----------------------------------------------------------------

// The shard calls as the fuzzer's calls: partial for forward, rescale for backward, finish for
// forward_backward.
template <>
struct abi<fusedloss_cross_entropy_shard_params> {
  using P = fusedloss_cross_entropy_shard_params;
  static void init(P* p) { fusedloss_cross_entropy_shard_params_init(p); }
  static fusedloss_status size(const P* p, size_t* bytes, fusedloss_error* err) {
    return fusedloss_cross_entropy_shard_workspace_size(p, bytes, err);
  }
  static fusedloss_status run(api_call c, const P* p, void* ws, size_t bytes,
                              fusedloss_error* err) {
    switch (c) {
      case api_call::forward:
        return fusedloss_cross_entropy_shard_partial(p, ws, bytes, nullptr, err);
      case api_call::backward:
        return fusedloss_cross_entropy_shard_rescale(p, ws, bytes, nullptr, err);
      default:
        return fusedloss_cross_entropy_shard_finish(p, ws, bytes, nullptr, err);
    }
  }
};
const char* shard_name(api_call c) {
  static const char* names[] = {"workspace_size", "partial", "rescale", "finish"};
  return names[static_cast<int>(c)];
}

struct shard_buffers {
  block logits, targets, weight, grad_scale, counter, summary;
  block loss, lse, z_loss, grad;
  bool in_place = false;  // grad_logits == logits

  std::vector<slot> slots(const fuzz_case& f, api_call c) const {
    const bool partial = f.valid && c == api_call::forward;
    const bool rescale = f.valid && c == api_call::backward;
    const bool finish = f.valid && c == api_call::forward_backward;
    const int64_t n = f.count;
    const std::vector<char> gradient =
        rows_of(in_place ? logits : grad, finish ? n : 0, f.classes, f.grad_stride);
    return {
        {"logits", &logits,
         in_place && c == api_call::forward_backward ? role::updated : role::input,
         in_place ? gradient : std::vector<char>(logits.count, 0)},
        {"targets", &targets, role::input, {}},
        {"weight", &weight, role::input, {}},
        {"grad_scale_ptr", &grad_scale, role::input, {}},
        {"invalid_target_count", &counter,
         c == api_call::forward_backward ? role::updated : role::input, first_of(counter, 1)},
        // partial writes every field; rescale updates SUM_EXP and WEIGHTED_SUM; finish reads it.
        {"summary", &summary,
         c == api_call::forward    ? role::output
         : c == api_call::backward ? role::updated
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

double summary_field(const block& summary, int field, int64_t batch, int64_t r) {
  return summary.value(field * batch + r);
}

bool generate(source& s, values& v, fuzz_case& f, fusedloss_cross_entropy_shard_params& p,
              shard_buffers& b) {
  f.call_name = shard_name(f.call);
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
  f.logits_dtype = dtype_choice(s, true);
  store_raw(p.logits_dtype, f.logits_dtype);
  f.rule(floating(f.logits_dtype), "logits_dtype");
  f.rule(!(f.cuda && f.logits_dtype == FUSEDLOSS_FLOAT64), "logits_dtype");
  generate_reduction(s, f, p);
  f.grad_scale = static_cast<float>(v.upstream());
  p.grad_scale = f.grad_scale;
  b.grad_scale.allocate(s.choose(4) == 0, FUSEDLOSS_FLOAT32, 1);
  if (b.grad_scale.given) b.grad_scale.set(0, v.upstream());

  const auto extent = [&](int64_t st) -> __int128 {
    return n > 0 && c > 0 ? __int128{n - 1} * st + c : 0;
  };
  const auto capped = [](__int128 e) {
    return static_cast<int64_t>(std::min<__int128>(e, kCap + 1));
  };
  const bool partial = f.call == api_call::forward, finish = f.call == api_call::forward_backward;
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
  f.rule(!(n > 0 && f.call != api_call::backward && !b.targets.given), "targets");
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
  if (f.valid && !f.cuda && (f.call == api_call::backward || finish) && n > 0 && b.logits.given &&
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

int64_t reported_invalid(const fuzz_case& f, api_call c, const shard_buffers& b) {
  if (c != api_call::forward_backward) return 0;
  return count_invalid(f, b.targets, f.count, f.vocab_size);
}
int64_t counter_added(const fuzz_case& f, api_call c, const shard_buffers& b) {
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

void check_finite(const fuzz_case& f, api_call c, const shard_buffers& b) {
  const std::vector<slot> slots = b.slots(f, c);
  if (c == api_call::forward || (c == api_call::backward && f.summary_derived)) {
    f.require(all_finite(b.summary, std::vector<char>(b.summary.count, 1)),
              "moderate inputs gave a non-finite summary");
  }
  if (c != api_call::forward_backward || !f.summary_derived) return;
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
      f.call != api_call::backward &&
      (f.logits_dtype == FUSEDLOSS_FLOAT64 || f.logits_dtype == FUSEDLOSS_FLOAT32)) {
    check_ranks(f, p, original);
  }
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
  // 0-5 as before the linear and shard families were added (the seeds' first bytes), 6 and 7 those.
  const int which = s.choose(8);
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
    case 5:
      fuzz_scale(s, f);
      break;
    case 6:
      fuzz_calls<fusedloss_linear_cross_entropy_params, linear_buffers>(s, f);
      break;
    default:
      fuzz_calls<fusedloss_cross_entropy_shard_params, shard_buffers>(s, f);
      break;
  }
  return 0;
}
