// The sizes and labels of the CPU mode (mode.hpp).
#include "mode.hpp"

namespace fusedloss::bench {

int64_t run_batch(int64_t batch, int64_t classes) {
  while (on_cpu() && batch > 1 && batch * classes > kCpuMaxElements) batch /= 2;
  return batch;
}

std::string size_label(const std::string& full, int64_t batch, int64_t classes) {
  if (!on_cpu()) return full;
  const std::string n = std::to_string(run_batch(batch, classes));
  return full + ", run at " + (classes > 1 ? n + " x " + std::to_string(classes) : n) +
         " on the CPU reference";
}

}  // namespace fusedloss::bench
