// Host-side reading and writing of the storage dtypes. The reference computes in double; these
// convert each stored value to double exactly and round each result once, to nearest-even, straight
// from double to the output dtype (no detour through float that could round twice).
#pragma once

#include <cmath>
#include <cstdint>
#include <cstring>

#include "fusedloss/fusedloss.h"

namespace fusedloss::host {

/// Bytes of one element of `dtype`, 0 for an unknown dtype.
inline size_t dtype_size(fusedloss_dtype dtype) {
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

inline bool is_floating(fusedloss_dtype dtype) {
  return dtype == FUSEDLOSS_FLOAT32 || dtype == FUSEDLOSS_FLOAT16 || dtype == FUSEDLOSS_BFLOAT16 ||
         dtype == FUSEDLOSS_FLOAT64;
}

inline bool is_integer(fusedloss_dtype dtype) {
  return dtype == FUSEDLOSS_INT32 || dtype == FUSEDLOSS_INT64;
}

/// The loss / LSE dtype for a logits dtype: float64 for float64 logits, float32 otherwise.
inline fusedloss_dtype loss_dtype(fusedloss_dtype logits_dtype) {
  return logits_dtype == FUSEDLOSS_FLOAT64 ? FUSEDLOSS_FLOAT64 : FUSEDLOSS_FLOAT32;
}

namespace detail {

inline double half_bits_to_double(uint16_t h) {
  const int sign = (h >> 15) & 1;
  const int exponent = (h >> 10) & 0x1f;
  const int mantissa = h & 0x3ff;
  double v;
  if (exponent == 0x1f) {
    v = mantissa != 0 ? NAN : INFINITY;
  } else if (exponent == 0) {
    v = std::ldexp(static_cast<double>(mantissa), -24);
  } else {
    v = std::ldexp(static_cast<double>(mantissa | 0x400), exponent - 25);
  }
  return sign ? -v : v;
}

inline double bfloat16_bits_to_double(uint16_t b) {
  const uint32_t bits = static_cast<uint32_t>(b) << 16;
  float f;
  std::memcpy(&f, &bits, sizeof f);
  return f;
}

/// Rounds `v` to nearest-even in a binary format with `digits` significand bits (the implicit one
/// included) and smallest normal exponent `min_exponent` (as std::ilogb reports it); values past
/// the largest finite become infinities. The result is exactly representable in that format.
inline double round_to_format(double v, int digits, int min_exponent, double max_finite) {
  if (!std::isfinite(v) || v == 0.0) return v;
  int e = std::ilogb(v);
  if (e < min_exponent) e = min_exponent;  // subnormals share the smallest exponent's spacing
  const double r = std::ldexp(std::nearbyint(std::ldexp(v, digits - 1 - e)), e - (digits - 1));
  if (std::fabs(r) > max_finite) return std::copysign(INFINITY, v);
  return r;
}

inline uint16_t double_to_half_bits(double v) {
  uint16_t sign = std::signbit(v) ? 0x8000 : 0;
  if (std::isnan(v)) return 0x7e00;
  const double r = std::fabs(round_to_format(v, 11, -14, 65504.0));
  if (std::isinf(r)) return sign | 0x7c00;
  if (r < std::ldexp(1.0, -14)) {  // subnormal (or zero): a multiple of 2^-24
    return sign | static_cast<uint16_t>(std::ldexp(r, 24));
  }
  const int e = std::ilogb(r);
  const auto mantissa = static_cast<uint16_t>(std::ldexp(r, 10 - e) - 1024.0);
  return sign | static_cast<uint16_t>((e + 15) << 10) | mantissa;
}

inline uint16_t double_to_bfloat16_bits(double v) {
  if (std::isnan(v)) return 0x7fc0;
  // bfloat16 shares float32's exponent range; its values are float32 values with 16 zero low bits.
  const auto f = static_cast<float>(round_to_format(v, 8, -126, 3.3895313892515355e38));
  uint32_t bits;
  std::memcpy(&bits, &f, sizeof bits);
  return static_cast<uint16_t>(bits >> 16);
}

}  // namespace detail

/// Element `i` of a buffer of `dtype`, exactly, as a double.
inline double load(const void* base, fusedloss_dtype dtype, int64_t i) {
  switch (dtype) {
    case FUSEDLOSS_FLOAT32:
      return static_cast<const float*>(base)[i];
    case FUSEDLOSS_FLOAT64:
      return static_cast<const double*>(base)[i];
    case FUSEDLOSS_FLOAT16:
      return detail::half_bits_to_double(static_cast<const uint16_t*>(base)[i]);
    case FUSEDLOSS_BFLOAT16:
      return detail::bfloat16_bits_to_double(static_cast<const uint16_t*>(base)[i]);
    case FUSEDLOSS_INT32:
      return static_cast<const int32_t*>(base)[i];
    case FUSEDLOSS_INT64:
      return static_cast<double>(static_cast<const int64_t*>(base)[i]);
  }
  return NAN;
}

/// Element `i` of an integer buffer (class-index targets), without a detour through double.
inline int64_t load_index(const void* base, fusedloss_dtype dtype, int64_t i) {
  return dtype == FUSEDLOSS_INT32 ? static_cast<const int32_t*>(base)[i]
                                  : static_cast<const int64_t*>(base)[i];
}

/// Writes `v`, rounded once to nearest-even, as element `i` of a floating buffer of `dtype`.
inline void store(void* base, fusedloss_dtype dtype, int64_t i, double v) {
  switch (dtype) {
    case FUSEDLOSS_FLOAT32:
      static_cast<float*>(base)[i] = static_cast<float>(v);
      return;
    case FUSEDLOSS_FLOAT64:
      static_cast<double*>(base)[i] = v;
      return;
    case FUSEDLOSS_FLOAT16:
      static_cast<uint16_t*>(base)[i] = detail::double_to_half_bits(v);
      return;
    case FUSEDLOSS_BFLOAT16:
      static_cast<uint16_t*>(base)[i] = detail::double_to_bfloat16_bits(v);
      return;
    case FUSEDLOSS_INT32:
    case FUSEDLOSS_INT64:
      return;  // never an output dtype; validation refuses it before this
  }
}

}  // namespace fusedloss::host
