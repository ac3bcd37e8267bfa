// What the parameterised loss tests (tests/row_losses/, tests/element_losses/) share: the names
// of their cases (a case prints as its name, built from pieces such as a dtype, a reduction, a call
// or a number, in the letters, digits and underscores gtest accepts in a parameter's name), and a
// fresh seed for each test (also the other CPU tests').
#pragma once

#include <gtest/gtest.h>

#include <charconv>
#include <cstdint>
#include <cstdlib>
#include <initializer_list>
#include <random>
#include <sstream>
#include <string>

#include "fusedloss/fusedloss.hpp"

namespace loss_tests {

using fusedloss::call;

/// A seed for one test: FUSEDLOSS_TEST_SEED when set, to replay a failure's draw, else one from
/// std::random_device, made once (constructing one costs more than most of these tests).
inline uint64_t fresh_seed() {
  if (const char* s = std::getenv("FUSEDLOSS_TEST_SEED")) return std::strtoull(s, nullptr, 10);
  static std::random_device device;
  return (static_cast<uint64_t>(device()) << 32) ^ device();
}

// A generator `rng` for one test from a fresh seed, which every failure in the scope names;
// setting FUSEDLOSS_TEST_SEED to it replays the draw.
#define SEEDED_RNG(rng)                                              \
  const uint64_t rng##_seed = loss_tests::fresh_seed();              \
  SCOPED_TRACE("FUSEDLOSS_TEST_SEED=" + std::to_string(rng##_seed)); \
  std::mt19937_64 rng(rng##_seed)

/// The pieces joined by `_`, the empty ones (options left off) dropped.
inline std::string join(std::initializer_list<std::string> pieces) {
  std::string name;
  for (const std::string& piece : pieces) {
    if (piece.empty()) continue;
    if (!name.empty()) name += '_';
    name += piece;
  }
  return name;
}

/// A number as a name piece: "0p25" for 0.25, "m1" for -1.
inline std::string number(double v) {
  char text[32];
  std::string s(text, std::to_chars(text, text + sizeof text, v).ptr);
  for (char& c : s) {
    if (c == '.') c = 'p';
    if (c == '-') c = 'm';
  }
  return s;
}

/// `label` followed by the value, or nothing when the option is off (0).
inline std::string option(const char* label, double value) {
  return value == 0 ? std::string() : label + number(value);
}

/// The name generator of INSTANTIATE_TEST_SUITE_P: a case is named as it prints (its PrintTo), a
/// bare dtype or reduction by its C name.
struct by_name {
  template <class Case>
  std::string operator()(const ::testing::TestParamInfo<Case>& info) const {
    // One stream for every name of a suite: every test process names all the cases at start, and
    // constructing a stream costs more than the rest of a name.
    static std::ostringstream os;
    os.str("");
    PrintTo(info.param, &os);
    return os.str();
  }
  std::string operator()(const ::testing::TestParamInfo<fusedloss_dtype>& info) const {
    return fusedloss_dtype_string(info.param);
  }
  std::string operator()(const ::testing::TestParamInfo<fusedloss_reduction>& info) const {
    return fusedloss_reduction_string(info.param);
  }
};

}  // namespace loss_tests
