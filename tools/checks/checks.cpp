#include "checks.hpp"

#include <algorithm>
#include <cstring>

#include "dtype.hpp"

namespace fusedloss::checks {

buffer::buffer(fusedloss_dtype dtype, const std::vector<double>& values)
    : dtype_(dtype), count_(values.size()), bytes_(values.size() * host::dtype_size(dtype)) {
  for (size_t i = 0; i < values.size(); ++i) {
    if (host::is_integer(dtype)) {
      const auto v = static_cast<int64_t>(values[i]);
      if (dtype == FUSEDLOSS_INT32) {
        const auto v32 = static_cast<int32_t>(v);
        std::memcpy(bytes_.data() + 4 * i, &v32, 4);
      } else {
        std::memcpy(bytes_.data() + 8 * i, &v, 8);
      }
    } else {
      host::store(bytes_.data(), dtype, static_cast<int64_t>(i), values[i]);
    }
  }
}

buffer buffer::poisoned(fusedloss_dtype dtype, size_t count) {
  buffer b;
  b.dtype_ = dtype;
  b.count_ = count;
  b.bytes_.assign(count * host::dtype_size(dtype), 0xFF);
  return b;
}

double buffer::operator[](size_t i) const {
  return host::load(bytes_.data(), dtype_, static_cast<int64_t>(i));
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
