// Buffers: a block is one buffer of exactly the elements its sizes imply (so that ASan reports any
// access past it), `buffers` every buffer an element or row loss's call may touch, and the binding
// of their pointers and of raw enum values into the params structs.
#ifndef FUSEDLOSS_TESTS_FUZZ_BUFFERS_HPP
#define FUSEDLOSS_TESTS_FUZZ_BUFFERS_HPP

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <utility>
#include <vector>

#include "fusedloss/fusedloss.h"
#include "generator.hpp"
#include "value_codec.hpp"

namespace fuzz {

constexpr unsigned char kPoison = 0xFF;       // NaN in every floating dtype
constexpr unsigned char kOtherPoison = 0xA5;  // the second run's poison
constexpr unsigned char kWorkspaceFill = 0x5A;

inline bool known_dtype(int d) { return d >= FUSEDLOSS_FLOAT32 && d <= FUSEDLOSS_INT64; }
inline bool floating(int d) { return d >= FUSEDLOSS_FLOAT32 && d <= FUSEDLOSS_FLOAT64; }
inline bool integer(int d) { return d == FUSEDLOSS_INT32 || d == FUSEDLOSS_INT64; }

// A dtype the call must refuse still gets 8-byte elements, so that its buffer has a size. (Only a
// known dtype is passed on as the enum: loading any other int as one is undefined.)
inline size_t element_bytes(int dtype) {
  return known_dtype(dtype) ? fusedloss::checks::dtype_size(static_cast<fusedloss_dtype>(dtype))
                            : 8;
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
    if (!known_dtype(dtype)) return NAN;  // a buffer the call must refuse: no value to read
    return fusedloss::checks::decode(static_cast<fusedloss_dtype>(dtype), at(i));
  }
  // Floating dtypes only: a buffer of any other dtype belongs to a call that must refuse it.
  void set(int64_t i, double v) {
    if (floating(dtype)) {
      fusedloss::checks::encode(static_cast<fusedloss_dtype>(dtype), v, bytes.data() + i * width());
    }
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

template <class P>
void bind_shared(P& p, buffers& b) {
  p.logits = b.logits.data();
  p.targets = b.targets.data();
  p.loss = b.loss.data();
  p.grad_logits = b.in_place ? b.logits.data() : b.grad.data();
  p.grad_loss = b.grad_loss.data();
  p.grad_scale_ptr = static_cast<const float*>(b.grad_scale.data());
}

// Stores an int into an enum field as a C caller can, whatever its value.
template <class Enum>
void store_raw(Enum& field, int value) {
  static_assert(sizeof(Enum) == sizeof(int), "C enums are int-sized here");
  std::memcpy(&field, &value, sizeof value);
}

}  // namespace fuzz

#endif  // FUSEDLOSS_TESTS_FUZZ_BUFFERS_HPP
