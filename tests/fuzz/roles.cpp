// The checks over buffers by role, out of line (roles.hpp says what each checks).
#include "roles.hpp"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>
#include <string>
#include <vector>

namespace fuzz {

const slot& slot_named(const std::vector<slot>& slots, const char* name) {
  for (const slot& s : slots) {
    if (std::strcmp(s.name, name) == 0) return s;
  }
  fail("no buffer %s", name);
}

std::vector<char> first_of(const block& b, int64_t k) {
  std::vector<char> w(b.count, 0);
  std::fill_n(w.begin(), std::clamp<int64_t>(k, 0, b.count), 1);
  return w;
}
std::vector<char> rows_of(const block& b, int64_t rows, int64_t width, int64_t stride,
                          int64_t offset) {
  std::vector<char> w(b.count, 0);
  for (int64_t r = 0; r < rows; ++r) {
    for (int64_t k = 0; k < width; ++k) {
      const int64_t i = offset + r * stride + k;
      if (i < b.count) w[i] = 1;
    }
  }
  return w;
}

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

}  // namespace fuzz
