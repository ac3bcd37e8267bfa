// The input's bytes and the values drawn from them: a source reads the input, then a generator
// seeded by it; `values` turns bytes into moderate values or the specials. Also the size limits
// and constants every file of the fuzzer shares, and fail(), which reports a failed check.
#ifndef FUSEDLOSS_TESTS_FUZZ_GENERATOR_HPP
#define FUSEDLOSS_TESTS_FUZZ_GENERATOR_HPP

#include <cstdarg>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <limits>
#include <random>

namespace fuzz {

constexpr int64_t kCap = 4096;  // the most elements a buffer of an accepted problem holds
constexpr int64_t kBig = int64_t{1} << 62;
constexpr int64_t kInt64Max = std::numeric_limits<int64_t>::max();
constexpr int64_t kInt64Min = std::numeric_limits<int64_t>::min();
constexpr double kInf = std::numeric_limits<double>::infinity();
constexpr double kNaN = std::numeric_limits<double>::quiet_NaN();

[[noreturn]] __attribute__((format(printf, 1, 2))) inline void fail(const char* format, ...) {
  std::fputs("fuzz_c_abi: check failed: ", stderr);
  va_list args;
  va_start(args, format);
  std::vfprintf(stderr, format, args);
  va_end(args);
  std::fputc('\n', stderr);
  std::abort();
}

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

}  // namespace fuzz

#endif  // FUSEDLOSS_TESTS_FUZZ_GENERATOR_HPP
