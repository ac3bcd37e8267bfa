// The value codec of value_codec.hpp. The 16- and 32-bit floating dtypes go through one encoder and
// one decoder of an IEEE 754 binary format given by its field widths, working on the integer
// significand and exponent of the double: the rounding is one integer shift with the dropped bits
// compared against half, so no intermediate type can round twice.
#include "value_codec.hpp"

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>

namespace fusedloss::checks {

namespace {

/// An IEEE 754 binary format: the sign bit on top, then `exponent_bits`, then `fraction_bits`
/// (the significand without its leading bit, which is 1 exactly when the exponent field is not 0).
struct binary_format {
  int exponent_bits;
  int fraction_bits;

  int bias() const { return (1 << (exponent_bits - 1)) - 1; }
  /// The exponent of the smallest normal value, which the subnormals share.
  int min_exponent() const { return 1 - bias(); }
  uint64_t exponent_field_ones() const { return (uint64_t{1} << exponent_bits) - 1; }
  uint64_t infinity() const { return exponent_field_ones() << fraction_bits; }
  uint64_t sign_bit() const { return uint64_t{1} << (exponent_bits + fraction_bits); }
};

constexpr binary_format kFloat16{5, 10};
constexpr binary_format kBfloat16{8, 7};
constexpr binary_format kFloat32{8, 23};

uint64_t encode_bits(const binary_format& f, double value) {
  uint64_t bits;
  std::memcpy(&bits, &value, sizeof bits);
  const uint64_t sign = (bits >> 63) != 0 ? f.sign_bit() : 0;
  if (std::isnan(value)) return sign | f.infinity() | (uint64_t{1} << (f.fraction_bits - 1));
  if (std::isinf(value)) return sign | f.infinity();
  // |value| = significand 2^scale, exactly (double: 52 fraction bits, bias 1023).
  const int stored_exponent = static_cast<int>((bits >> 52) & 0x7ff);
  uint64_t significand = bits & ((uint64_t{1} << 52) - 1);
  if (stored_exponent != 0) significand |= uint64_t{1} << 52;
  if (significand == 0) return sign;
  const int scale = std::max(stored_exponent, 1) - 1075;
  int top = 52;
  while ((significand >> top) == 0) --top;
  const int exponent = scale + top;  // floor(log2 |value|)
  // The spacing of the format's values around |value| is 2^quantum; count |value| in quanta,
  // rounded to nearest-even.
  const int quantum = std::max(exponent, f.min_exponent()) - f.fraction_bits;
  const int shift = quantum - scale;
  uint64_t quanta;
  if (shift <= 0) {
    quanta = significand << -shift;
  } else if (shift > 53) {
    quanta = 0;  // below half the smallest subnormal: significand < 2^53 <= 2^(shift - 1)
  } else {
    const uint64_t kept = significand >> shift;
    const uint64_t dropped = significand & ((uint64_t{1} << shift) - 1);
    const uint64_t half = uint64_t{1} << (shift - 1);
    quanta = kept + ((dropped > half || (dropped == half && (kept & 1) != 0)) ? 1 : 0);
  }
  // A normal value's quanta include the leading bit (2^fraction_bits), so adding them to the
  // exponent field's offset gives its encoding, a carry out of the fraction included; a subnormal
  // one's are its fraction field.
  const uint64_t offset =
      static_cast<uint64_t>(std::max(exponent, f.min_exponent()) - f.min_exponent())
      << f.fraction_bits;
  const uint64_t magnitude = offset + quanta;
  return sign | std::min(magnitude, f.infinity());
}

double decode_bits(const binary_format& f, uint64_t bits) {
  const uint64_t fraction = bits & ((uint64_t{1} << f.fraction_bits) - 1);
  const uint64_t exponent_field = (bits >> f.fraction_bits) & f.exponent_field_ones();
  double magnitude;
  if (exponent_field == f.exponent_field_ones()) {
    magnitude = fraction != 0 ? NAN : INFINITY;
  } else if (exponent_field == 0) {
    magnitude = std::ldexp(static_cast<double>(fraction), f.min_exponent() - f.fraction_bits);
  } else {
    const uint64_t significand = fraction | (uint64_t{1} << f.fraction_bits);
    magnitude = std::ldexp(static_cast<double>(significand),
                           static_cast<int>(exponent_field) - f.bias() - f.fraction_bits);
  }
  return (bits & f.sign_bit()) != 0 ? -magnitude : magnitude;
}

template <class Stored>
void put(Stored v, void* dst) {
  std::memcpy(dst, &v, sizeof v);
}

template <class Stored>
Stored take(const void* src) {
  Stored v;
  std::memcpy(&v, src, sizeof v);
  return v;
}

}  // namespace

size_t dtype_size(fusedloss_dtype dtype) {
  switch (dtype) {
    case FUSEDLOSS_FLOAT16:
    case FUSEDLOSS_BFLOAT16:
      return 2;
    case FUSEDLOSS_FLOAT32:
    case FUSEDLOSS_INT32:
      return 4;
    case FUSEDLOSS_FLOAT64:
    case FUSEDLOSS_INT64:
      return 8;
  }
  return 0;
}

void encode(fusedloss_dtype dtype, double value, void* dst) {
  switch (dtype) {
    case FUSEDLOSS_FLOAT16:
      return put(static_cast<uint16_t>(encode_bits(kFloat16, value)), dst);
    case FUSEDLOSS_BFLOAT16:
      return put(static_cast<uint16_t>(encode_bits(kBfloat16, value)), dst);
    case FUSEDLOSS_FLOAT32:
      return put(static_cast<uint32_t>(encode_bits(kFloat32, value)), dst);
    case FUSEDLOSS_FLOAT64:
      return put(value, dst);
    case FUSEDLOSS_INT32:
      return put(static_cast<int32_t>(static_cast<int64_t>(value)), dst);
    case FUSEDLOSS_INT64:
      return put(static_cast<int64_t>(value), dst);
  }
}

double decode(fusedloss_dtype dtype, const void* src) {
  switch (dtype) {
    case FUSEDLOSS_FLOAT16:
      return decode_bits(kFloat16, take<uint16_t>(src));
    case FUSEDLOSS_BFLOAT16:
      return decode_bits(kBfloat16, take<uint16_t>(src));
    case FUSEDLOSS_FLOAT32:
      return decode_bits(kFloat32, take<uint32_t>(src));
    case FUSEDLOSS_FLOAT64:
      return take<double>(src);
    case FUSEDLOSS_INT32:
      return take<int32_t>(src);
    case FUSEDLOSS_INT64:
      return static_cast<double>(take<int64_t>(src));
  }
  return NAN;
}

}  // namespace fusedloss::checks
