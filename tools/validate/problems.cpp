// `fusedloss validate`: the problems' helpers that are not templates.
#include "problems.hpp"

#include <cstdarg>
#include <cstdio>

namespace fusedloss::validate {

std::string format(const char* fmt, ...) {
  char text[512];
  va_list args;
  va_start(args, fmt);
  std::vsnprintf(text, sizeof text, fmt, args);
  va_end(args);
  return text;
}

const float* floats(memory& m, const buffer& b) { return static_cast<const float*>(m.put(b)); }

void attach(fusedloss_bce_params& p, const inputs& in, memory& m) {
  p.targets = m.put(in.targets);
  p.targets_dtype = in.targets.dtype();
  p.weight = floats(m, in.weight);
  p.pos_weight = floats(m, in.pos_weight);
}

}  // namespace fusedloss::validate
