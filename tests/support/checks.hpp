// Building blocks shared by the test suite and `fusedloss validate`: dtype-encoded buffers,
// poisoning, random inputs, central finite differences and per-dtype tolerances.
#pragma once

#include <cmath>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <random>
#include <vector>

#include "fusedloss/fusedloss.h"

namespace fusedloss::checks {

/// A host buffer holding values stored as `dtype`. Built from doubles (rounded once to the dtype),
/// read back as doubles (exactly).
class buffer {
 public:
  buffer() = default;
  buffer(fusedloss_dtype dtype, const std::vector<double>& values);
  /// `count` elements of `dtype`, every byte set to 0xFF: NaN in every floating dtype and -1 in the
  /// integer ones, so an element the call fails to write shows up.
  static buffer poisoned(fusedloss_dtype dtype, size_t count);

  void* data() { return bytes_.empty() ? nullptr : bytes_.data(); }
  const void* data() const { return bytes_.empty() ? nullptr : bytes_.data(); }
  fusedloss_dtype dtype() const { return dtype_; }
  size_t size() const { return count_; }
  size_t size_bytes() const { return bytes_.size(); }
  std::vector<double> values() const;
  double operator[](size_t i) const;

 private:
  fusedloss_dtype dtype_ = FUSEDLOSS_FLOAT64;
  size_t count_ = 0;
  std::vector<unsigned char> bytes_;
};

/// Every value as it reads back after storing in `dtype` (rounded once to nearest-even).
std::vector<double> round_to(fusedloss_dtype dtype, const std::vector<double>& values);

/// `count` values drawn uniformly from [lo, hi).
std::vector<double> uniform(std::mt19937_64& rng, size_t count, double lo, double hi);

/// `count` class indices drawn uniformly from [0, num_classes).
std::vector<double> class_indices(std::mt19937_64& rng, size_t count, int64_t num_classes);

/// Central differences `(f(x + h e_i) - f(x - h e_i)) / 2h` of a scalar function, for every i.
std::vector<double> finite_difference(const std::function<double(const std::vector<double>&)>& f,
                                      std::vector<double> x, double h);

/// `|got - want| <= atol + rtol * |want|`, with NaN matching NaN and an infinity matching itself.
struct tolerance {
  double atol;
  double rtol;
  bool accepts(double got, double want) const;
};

/// The dtype of the loss, LSE and z-loss outputs (and of an upstream gradient) for logits of
/// `logits_dtype`: float64 for float64 logits, float32 for every other.
fusedloss_dtype loss_dtype_of(fusedloss_dtype logits_dtype);

/// The tolerance for comparing a double-precision result rounded to `dtype` against an exact one:
/// one unit in the last place of the dtype relative (the rounding, plus a margin for the
/// reference's own double error), and the dtype's smallest subnormal absolute.
tolerance rounding_tolerance(fusedloss_dtype dtype);

/// The largest |got - want| over two equally long sequences (NaN where they disagree on NaN).
double max_abs_error(const std::vector<double>& got, const std::vector<double>& want);

}  // namespace fusedloss::checks
