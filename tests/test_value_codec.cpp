// The test support's value codec (tests/support/value_codec.hpp), which every oracle of the suite
// stores and reads its values with: exact decoding of every 16-bit pattern, one rounding to
// nearest-even straight from double, overflow, subnormals, and the integer dtypes.
#include <gtest/gtest.h>

#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <random>

#include "value_codec.hpp"

namespace checks = fusedloss::checks;

namespace {

constexpr fusedloss_dtype f16 = FUSEDLOSS_FLOAT16;
constexpr fusedloss_dtype bf16 = FUSEDLOSS_BFLOAT16;
constexpr fusedloss_dtype f32 = FUSEDLOSS_FLOAT32;
constexpr fusedloss_dtype f64 = FUSEDLOSS_FLOAT64;

uint16_t encode16(fusedloss_dtype dtype, double v) {
  uint16_t bits;
  checks::encode(dtype, v, &bits);
  return bits;
}

double decode16(fusedloss_dtype dtype, uint16_t bits) { return checks::decode(dtype, &bits); }

uint32_t encode32(double v) {
  uint32_t bits;
  checks::encode(f32, v, &bits);
  return bits;
}

uint32_t float_bits(float f) {
  uint32_t bits;
  std::memcpy(&bits, &f, sizeof bits);
  return bits;
}

// Every pattern of a 16-bit dtype reads back as a value that writes back as the same pattern, but
// NaNs, which stay NaN; and the finite positive patterns read as increasing values, so no two
// patterns decode alike and none is out of order.
void expect_every_pattern_round_trips(fusedloss_dtype dtype, uint16_t infinity) {
  double previous = -1;
  for (uint32_t p = 0; p <= 0xFFFF; ++p) {
    const auto bits = static_cast<uint16_t>(p);
    const double v = decode16(dtype, bits);
    const bool nan_pattern = (bits & infinity) == infinity && (bits & ~0x8000 & ~infinity) != 0;
    ASSERT_EQ(std::isnan(v), nan_pattern) << std::hex << p;
    if (nan_pattern) {
      ASSERT_TRUE(std::isnan(decode16(dtype, encode16(dtype, v)))) << std::hex << p;
      continue;
    }
    ASSERT_EQ(encode16(dtype, v), bits) << std::hex << p << " decodes to " << v;
    ASSERT_EQ(std::signbit(v), (bits & 0x8000) != 0) << std::hex << p;
    if (bits <= infinity) {
      ASSERT_GT(v, previous) << std::hex << p;
      previous = v;
    }
  }
}

TEST(ValueCodec, DtypeSizes) {
  EXPECT_EQ(checks::dtype_size(f16), 2u);
  EXPECT_EQ(checks::dtype_size(bf16), 2u);
  EXPECT_EQ(checks::dtype_size(f32), 4u);
  EXPECT_EQ(checks::dtype_size(f64), 8u);
  EXPECT_EQ(checks::dtype_size(FUSEDLOSS_INT32), 4u);
  EXPECT_EQ(checks::dtype_size(FUSEDLOSS_INT64), 8u);
}

TEST(ValueCodec, EveryFloat16PatternRoundTrips) {
  expect_every_pattern_round_trips(f16, 0x7C00);
  EXPECT_EQ(decode16(f16, 0x3C00), 1.0);
  EXPECT_EQ(decode16(f16, 0xC000), -2.0);
  EXPECT_EQ(decode16(f16, 0x3555), 0x555p-12);  // 1/3, rounded to float16
  EXPECT_EQ(decode16(f16, 0x7C00), INFINITY);
  EXPECT_EQ(decode16(f16, 0xFC00), -INFINITY);
}

TEST(ValueCodec, EveryBfloat16PatternRoundTrips) {
  expect_every_pattern_round_trips(bf16, 0x7F80);
  // A bfloat16 is the float32 whose upper half it is.
  for (uint32_t p = 0; p <= 0xFFFF; ++p) {
    const uint32_t f32_bits = p << 16;
    float f;
    std::memcpy(&f, &f32_bits, sizeof f);
    const double v = decode16(bf16, static_cast<uint16_t>(p));
    if (std::isnan(f)) {
      ASSERT_TRUE(std::isnan(v)) << std::hex << p;
    } else {
      ASSERT_EQ(v, double(f)) << std::hex << p;
    }
  }
}

TEST(ValueCodec, Float32DecodesAsTheHardwareDoes) {
  // A prime stride visits patterns of every exponent and sign, subnormals and NaNs included.
  for (uint64_t p = 0; p <= 0xFFFFFFFF; p += 65521) {
    const auto bits = static_cast<uint32_t>(p);
    float f;
    std::memcpy(&f, &bits, sizeof f);
    const double v = checks::decode(f32, &bits);
    if (std::isnan(f)) {
      ASSERT_TRUE(std::isnan(v)) << std::hex << p;
      continue;
    }
    ASSERT_EQ(v, double(f)) << std::hex << p;
    ASSERT_EQ(encode32(v), bits) << std::hex << p;
  }
}

TEST(ValueCodec, Float32RoundsAsTheHardwareDoes) {
  // The conversion double -> float rounds once to nearest-even: an oracle for the float32 path on
  // values of every magnitude below float32's largest (overflow has its own test), subnormals
  // included, with fraction bits well below float32's.
  std::mt19937_64 rng(20261202);
  std::uniform_real_distribution<double> fraction(1, 2);
  std::uniform_int_distribution<int> exponent(-160, 126);
  for (int i = 0; i < 200000; ++i) {
    const double v = std::ldexp(fraction(rng), exponent(rng)) * (i % 2 ? -1 : 1);
    ASSERT_EQ(encode32(v), float_bits(static_cast<float>(v))) << std::hexfloat << v;
  }
}

TEST(ValueCodec, TiesRoundToEven) {
  // float16 has 10 fraction bits: halfway between 1 and 1 + 2^-10 goes down to the even 1, halfway
  // between 1 + 2^-10 and 1 + 2^-9 up to the even 1 + 2^-9; just past halfway goes up.
  EXPECT_EQ(encode16(f16, 1 + 0x1p-11), 0x3C00);
  EXPECT_EQ(encode16(f16, 1 + 3 * 0x1p-11), 0x3C02);
  EXPECT_EQ(encode16(f16, -(1 + 3 * 0x1p-11)), 0xBC02);
  EXPECT_EQ(encode16(f16, 1 + 0x1p-11 + 0x1p-52), 0x3C01);
  EXPECT_EQ(encode16(f16, 1 + 0x1p-11 - 0x1p-52), 0x3C00);
  // Straight from double: 1 + 2^-11 + 2^-30 lies above the tie, but rounding through float32
  // first would land on the tie (float32 keeps 23 fraction bits) and then go down to 1.
  EXPECT_EQ(encode16(f16, 1 + 0x1p-11 + 0x1p-30), 0x3C01);
  // bfloat16 has 7 fraction bits.
  EXPECT_EQ(encode16(bf16, 1 + 0x1p-8), 0x3F80);
  EXPECT_EQ(encode16(bf16, 1 + 3 * 0x1p-8), 0x3F82);
  EXPECT_EQ(encode16(bf16, 1 + 0x1p-8 + 0x1p-30), 0x3F81);
  // float32 has 23.
  EXPECT_EQ(encode32(1 + 0x1p-24), float_bits(1.0f));
  EXPECT_EQ(encode32(1 + 3 * 0x1p-24), float_bits(1 + 0x1p-22f));
  // float64 stores the double itself.
  const double third = 1.0 / 3;
  double stored;
  checks::encode(f64, third, &stored);
  EXPECT_EQ(stored, third);
}

TEST(ValueCodec, LargestFiniteValueAndFirstOverflow) {
  // float16: the largest finite value is 65504 = (2 - 2^-10) 2^15, with an odd fraction; from
  // halfway to the next binade (65520) everything rounds to infinity.
  EXPECT_EQ(encode16(f16, 65504), 0x7BFF);
  EXPECT_EQ(decode16(f16, 0x7BFF), 65504);
  EXPECT_EQ(encode16(f16, std::nextafter(65520.0, 0.0)), 0x7BFF);
  EXPECT_EQ(encode16(f16, 65520), 0x7C00);
  EXPECT_EQ(encode16(f16, -65520), 0xFC00);
  EXPECT_EQ(encode16(f16, 1e300), 0x7C00);
  // bfloat16: (2 - 2^-7) 2^127, and infinity from (2 - 2^-8) 2^127.
  EXPECT_EQ(encode16(bf16, 0x1.FEp127), 0x7F7F);
  EXPECT_EQ(decode16(bf16, 0x7F7F), 0x1.FEp127);
  EXPECT_EQ(encode16(bf16, std::nextafter(0x1.FFp127, 0.0)), 0x7F7F);
  EXPECT_EQ(encode16(bf16, 0x1.FFp127), 0x7F80);
  EXPECT_EQ(encode16(bf16, -0x1.FFp127), 0xFF80);
  // float32: FLT_MAX, and infinity from (2 - 2^-24) 2^127.
  const double flt_max = std::numeric_limits<float>::max();
  EXPECT_EQ(encode32(flt_max), float_bits(std::numeric_limits<float>::max()));
  EXPECT_EQ(encode32(std::nextafter(0x1.FFFFFFp127, 0.0)),
            float_bits(std::numeric_limits<float>::max()));
  EXPECT_EQ(encode32(0x1.FFFFFFp127), float_bits(INFINITY));
  EXPECT_EQ(encode32(-std::numeric_limits<double>::max()), float_bits(-INFINITY));
}

TEST(ValueCodec, Subnormals) {
  // float16's smallest subnormal is 2^-24 and its smallest normal 2^-14.
  EXPECT_EQ(decode16(f16, 0x0001), 0x1p-24);
  EXPECT_EQ(decode16(f16, 0x03FF), 0x1p-14 - 0x1p-24);
  EXPECT_EQ(decode16(f16, 0x0400), 0x1p-14);
  EXPECT_EQ(encode16(f16, 0x1p-24), 0x0001);
  EXPECT_EQ(encode16(f16, 0x1p-25), 0x0000);  // a tie, to the even 0
  EXPECT_EQ(encode16(f16, -0x1p-25), 0x8000);
  EXPECT_EQ(encode16(f16, 0x1p-25 + 0x1p-60), 0x0001);
  EXPECT_EQ(encode16(f16, 3 * 0x1p-25), 0x0002);        // a tie, to the even 2 2^-24
  EXPECT_EQ(encode16(f16, 0x1p-14 - 0x1p-26), 0x0400);  // rounds up into the normals
  EXPECT_EQ(encode16(f16, 0x1p-1074), 0x0000);          // double's smallest subnormal
  // bfloat16 and float32 share the smallest normal 2^-126; their smallest subnormals are 2^-133
  // and 2^-149.
  EXPECT_EQ(decode16(bf16, 0x0001), 0x1p-133);
  EXPECT_EQ(encode16(bf16, 0x1p-133), 0x0001);
  EXPECT_EQ(encode16(bf16, 0x1p-134), 0x0000);
  EXPECT_EQ(encode16(bf16, 3 * 0x1p-134), 0x0002);
  EXPECT_EQ(encode32(0x1p-149), 0x00000001u);
  EXPECT_EQ(encode32(0x1p-150), 0x00000000u);
  EXPECT_EQ(encode32(0x1p-126 - 0x1p-149), 0x007FFFFFu);
  // float64's own subnormals are stored and read exactly.
  for (const double v : {0x1p-1074, -0x1p-1074, 0x1.8p-1050, 0x1p-1022 - 0x1p-1074}) {
    double stored;
    checks::encode(f64, v, &stored);
    EXPECT_EQ(checks::decode(f64, &stored), v);
  }
}

TEST(ValueCodec, InfinitiesNanAndSignedZeroAreKept) {
  for (const fusedloss_dtype dtype : {f16, bf16, f32, f64}) {
    SCOPED_TRACE(fusedloss_dtype_string(dtype));
    unsigned char bytes[8];
    for (const double v : {double(INFINITY), -double(INFINITY), 0.0, -0.0}) {
      checks::encode(dtype, v, bytes);
      const double back = checks::decode(dtype, bytes);
      EXPECT_EQ(back, v);
      EXPECT_EQ(std::signbit(back), std::signbit(v));
    }
    checks::encode(dtype, NAN, bytes);
    EXPECT_TRUE(std::isnan(checks::decode(dtype, bytes)));
    checks::encode(dtype, -NAN, bytes);
    EXPECT_TRUE(std::isnan(checks::decode(dtype, bytes)));
  }
}

TEST(ValueCodec, IntegersAreExact) {
  for (const int64_t v : {int64_t{0}, int64_t{1}, int64_t{-1}, int64_t{123456789},
                          int64_t{std::numeric_limits<int32_t>::max()},
                          int64_t{std::numeric_limits<int32_t>::min()}}) {
    int32_t stored;
    checks::encode(FUSEDLOSS_INT32, double(v), &stored);
    EXPECT_EQ(stored, v);
    EXPECT_EQ(checks::decode(FUSEDLOSS_INT32, &stored), double(v));
  }
  for (const int64_t v : {int64_t{0}, int64_t{-1}, int64_t{1} << 40, int64_t{1} << 53,
                          -(int64_t{1} << 53), (int64_t{1} << 53) - 1, int64_t{1} << 62}) {
    int64_t stored;
    checks::encode(FUSEDLOSS_INT64, double(v), &stored);
    EXPECT_EQ(stored, v);
    EXPECT_EQ(checks::decode(FUSEDLOSS_INT64, &stored), double(v));
  }
}

}  // namespace
