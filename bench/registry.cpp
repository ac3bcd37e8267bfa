// The failure count and the two ways a row stops early (registry.hpp).
#include "registry.hpp"

namespace fusedloss::bench {

int& failures() {
  static int count = 0;
  return count;
}

void skip(benchmark::State& state, const std::string& why) {
  ++failures();
  state.SkipWithError(why.c_str());
}

void skip_not_applicable(benchmark::State& state, const std::string& why) {
  state.SkipWithError(("skipped: " + why).c_str());
}

}  // namespace fusedloss::bench
