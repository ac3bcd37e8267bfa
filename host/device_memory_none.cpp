// A build without CUDA: no pointer is device memory, and device counters do not exist.
#include "device_memory.hpp"
#include "fusedloss/fusedloss.h"

namespace fusedloss::host {

memory_space memory_space_of(const void*) { return memory_space::either; }

std::string read_and_clear_device_counter(int64_t*, void*, int64_t*) {
  return "fusedloss was built without CUDA (FUSEDLOSS_WITH_CUDA=OFF)";
}

}  // namespace fusedloss::host

extern "C" int fusedloss_built_with_cuda(void) { return 0; }
