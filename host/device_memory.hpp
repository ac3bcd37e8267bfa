// What the host layer asks of the CUDA runtime, behind one interface so that a build without
// CUDA (device_memory_none.cpp) and one with it (device_memory_cuda.cpp) share the callers.
#pragma once

#include <cstdint>
#include <string>

namespace fusedloss::host {

/// Where a pointer's memory lives, as far as the runtime can tell without touching it.
enum class memory_space {
  host,    ///< ordinary (pageable) host memory: the device cannot read it
  device,  ///< device memory: the host cannot read it
  either   ///< managed or pinned memory, or a pointer the runtime cannot classify
};

memory_space memory_space_of(const void* pointer);

/// Reads a device counter on `stream`, waits for it, and clears it. Returns "" or the CUDA error.
std::string read_and_clear_device_counter(int64_t* counter, void* stream, int64_t* value);

}  // namespace fusedloss::host
