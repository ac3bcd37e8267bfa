// The rows' counters (counters.hpp).
#include "counters.hpp"

#include <cmath>
#include <limits>
#include <string>

#include "memory.hpp"
#include "registry.hpp"

namespace fusedloss::bench {

void set_counters(benchmark::State& state, double bytes_per_repeat, double seconds,
                  double copy_bytes_per_second) {
  state.counters["bytes"] = benchmark::Counter(
      bytes_per_repeat, benchmark::Counter::kIsIterationInvariantRate, benchmark::Counter::kIs1000);
  const double achieved =
      seconds > 0 ? bytes_per_repeat * static_cast<double>(state.iterations()) / seconds : 0.0;
  state.counters["frac_of_copy"] = copy_bytes_per_second > 0
                                       ? achieved / copy_bytes_per_second
                                       : std::numeric_limits<double>::quiet_NaN();
}

bool record_loss(benchmark::State& state, const float* loss) {
  float value = 0;
  if (const cudaError_t e = copy_memory(&value, loss, sizeof value, cudaMemcpyDeviceToHost);
      e != cudaSuccess) {
    skip(state, cuda_error_text(e, "reading the loss"));
    return false;
  }
  if (!std::isfinite(value)) {
    skip(state, "the loss is not finite (" + std::to_string(value) + ")");
    return false;
  }
  state.counters["loss"] = value;
  return true;
}

}  // namespace fusedloss::bench
