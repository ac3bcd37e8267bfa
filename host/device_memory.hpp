// What the host layer asks of the CUDA runtime, behind one interface so that a build without
// CUDA (no_cuda.cpp) and one with it (device_memory_cuda.cpp) share the callers.
#pragma once

#include <cstdint>

#include "fusedloss/fusedloss.h"

namespace fusedloss::host {

/// Where a pointer's memory lives, as far as the runtime can tell without touching it.
enum class memory_space {
  host,          ///< ordinary (pageable) host memory: the device cannot read it
  device,        ///< memory of the current device: the host cannot read it
  other_device,  ///< memory of another device, which the current device reaches only by peer access
  either         ///< managed or pinned memory, or a pointer the runtime cannot classify
};

struct memory_location {
  memory_space space;
  int device = -1;          ///< the device holding device memory (device, other_device)
  int current_device = -1;  ///< the device the calls run on (device, other_device)
};

/// Calls run on the current device (the caller's stream belongs to it), so device memory is
/// classified against it.
memory_location locate(const void* pointer);

/// Reads a device counter on `stream`, waits for it, and clears it.
fusedloss_status read_and_clear_device_counter(int64_t* counter, void* stream, int64_t* value,
                                               fusedloss_error* err);

}  // namespace fusedloss::host
