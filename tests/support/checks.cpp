// The buffers, random inputs, finite differences and tolerances of checks.hpp.
#include "checks.hpp"

#include <algorithm>

#include "value_codec.hpp"

namespace fusedloss::checks {

buffer::buffer(fusedloss_dtype dtype, const std::vector<double>& values)
    : dtype_(dtype), count_(values.size()), bytes_(values.size() * dtype_size(dtype)) {
  for (size_t i = 0; i < values.size(); ++i) {
    encode(dtype, values[i], bytes_.data() + i * dtype_size(dtype));
  }
}

buffer buffer::poisoned(fusedloss_dtype dtype, size_t count) {
  buffer b;
  b.dtype_ = dtype;
  b.count_ = count;
  b.bytes_.assign(count * dtype_size(dtype), 0xFF);
  return b;
}

double buffer::operator[](size_t i) const {
  return decode(dtype_, bytes_.data() + i * dtype_size(dtype_));
}

std::vector<double> buffer::values() const {
  std::vector<double> out(count_);
  for (size_t i = 0; i < count_; ++i) out[i] = (*this)[i];
  return out;
}

std::vector<double> round_to(fusedloss_dtype dtype, const std::vector<double>& values) {
  return buffer(dtype, values).values();
}

std::vector<double> uniform(std::mt19937_64& rng, size_t count, double lo, double hi) {
  std::uniform_real_distribution<double> dist(lo, hi);
  std::vector<double> out(count);
  for (auto& v : out) v = dist(rng);
  return out;
}

std::vector<double> class_indices(std::mt19937_64& rng, size_t count, int64_t num_classes) {
  std::uniform_int_distribution<int64_t> dist(0, num_classes - 1);
  std::vector<double> out(count);
  for (auto& v : out) v = static_cast<double>(dist(rng));
  return out;
}

std::vector<double> finite_difference(const std::function<double(const std::vector<double>&)>& f,
                                      std::vector<double> x, double h) {
  std::vector<double> grad(x.size());
  for (size_t i = 0; i < x.size(); ++i) {
    const double xi = x[i];
    x[i] = xi + h;
    const double up = f(x);
    x[i] = xi - h;
    const double down = f(x);
    x[i] = xi;
    grad[i] = (up - down) / (2 * h);
  }
  return grad;
}

bool tolerance::accepts(double got, double want) const {
  if (std::isnan(want) || std::isnan(got)) return std::isnan(want) && std::isnan(got);
  if (std::isinf(want) || std::isinf(got)) return got == want;
  return std::fabs(got - want) <= atol + rtol * std::fabs(want);
}

fusedloss_dtype loss_dtype_of(fusedloss_dtype logits_dtype) {
  return logits_dtype == FUSEDLOSS_FLOAT64 ? FUSEDLOSS_FLOAT64 : FUSEDLOSS_FLOAT32;
}

tolerance rounding_tolerance(fusedloss_dtype dtype) {
  switch (dtype) {
    case FUSEDLOSS_FLOAT16:
      return {std::ldexp(1.0, -24), std::ldexp(1.0, -10)};
    case FUSEDLOSS_BFLOAT16:
      return {std::ldexp(1.0, -133), std::ldexp(1.0, -7)};
    case FUSEDLOSS_FLOAT32:
      return {std::ldexp(1.0, -149), std::ldexp(1.0, -23)};
    default:
      return {1e-300, 1e-12};
  }
}

double max_abs_error(const std::vector<double>& got, const std::vector<double>& want) {
  double worst = 0;
  for (size_t i = 0; i < std::min(got.size(), want.size()); ++i) {
    if (std::isnan(got[i]) != std::isnan(want[i])) return NAN;
    if (std::isnan(got[i]) || got[i] == want[i]) continue;
    worst = std::max(worst, std::fabs(got[i] - want[i]));
  }
  return worst;
}

}  // namespace fusedloss::checks
