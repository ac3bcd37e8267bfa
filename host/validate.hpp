// Argument checks: everything the host can see without reading device memory, checked before a
// call touches any buffer, so that a refused call writes nothing. Each check names the argument.
#pragma once

#include <cstddef>
#include <cstring>

#include "call.hpp"
#include "fusedloss/fusedloss.h"

namespace fusedloss::host {

/// Fills `err` (when given) and returns `status`; `argument` may be null.
fusedloss_status report(fusedloss_error* err, fusedloss_status status, const char* argument,
                        const char* format, ...) __attribute__((format(printf, 4, 5)));

/// Fills `err` (when given) with success and an empty message, and returns success.
fusedloss_status succeed(fusedloss_error* err);

/// Checks `p` for call `c` and, on success, copies it into `resolved` with its defaults made
/// explicit (row strides never 0). The workspace is checked by validate_cuda_workspace and, for
/// its size, by the device path that sizes it; the CPU reference ignores it.
fusedloss_status validate(const fusedloss_bce_params* p, call c, fusedloss_bce_params& resolved,
                          fusedloss_error* err);
fusedloss_status validate(const fusedloss_sigmoid_focal_params* p, call c,
                          fusedloss_sigmoid_focal_params& resolved, fusedloss_error* err);
fusedloss_status validate(const fusedloss_mse_params* p, call c, fusedloss_mse_params& resolved,
                          fusedloss_error* err);
fusedloss_status validate(const fusedloss_cross_entropy_params* p, call c,
                          fusedloss_cross_entropy_params& resolved, fusedloss_error* err);
fusedloss_status validate(const fusedloss_softmax_focal_params* p, call c,
                          fusedloss_softmax_focal_params& resolved, fusedloss_error* err);

/// Checks a shard call's params as validate() does a loss's: `step` decides which buffers it
/// needs.
fusedloss_status validate(const fusedloss_cross_entropy_shard_params* p, shard_step step,
                          fusedloss_cross_entropy_shard_params& resolved, fusedloss_error* err);

fusedloss_status validate(const fusedloss_linear_cross_entropy_params* p, call c,
                          fusedloss_linear_cross_entropy_params& resolved, fusedloss_error* err);

/// An enum field's stored value, read as the int it is without loading it as the enum: a caller
/// of the C ABI may store any int there, and loading one outside the enumerators' range as the
/// enum type is undefined in C++.
template <class Enum>
int stored(const Enum& field) {
  static_assert(sizeof(Enum) == sizeof(int), "C enums are int-sized here");
  int value;
  std::memcpy(&value, &field, sizeof value);
  return value;
}

/// Checks a CUDA call's workspace pointer (its size needs the device; the CUDA path checks that):
/// null, or 8-byte aligned (the kernels keep double partials there) memory that the current device
/// can use. Leaves `err` alone on success.
fusedloss_status validate_cuda_workspace(const void* workspace, fusedloss_error* err);

/// Checks fusedloss_scale_in_place's arguments.
fusedloss_status validate_scale(const void* data, const fusedloss_dtype& dtype, int64_t numel,
                                const void* scale, const fusedloss_dtype& scale_dtype,
                                const fusedloss_device& device, fusedloss_error* err);

/// Checks only what a workspace query needs: the struct itself and its device.
template <class Params>
fusedloss_status validate_header(const Params* p, fusedloss_error* err) {
  if (p == nullptr) return report(err, FUSEDLOSS_INVALID_ARGUMENT, "p", "params pointer is null");
  if (p->struct_size != sizeof(Params)) {
    return report(err, FUSEDLOSS_INVALID_ARGUMENT, "struct_size",
                  "struct_size is %zu, this library's params are %zu bytes (use the init call)",
                  p->struct_size, sizeof(Params));
  }
  const int device = stored(p->device);
  if (device != FUSEDLOSS_DEVICE_CPU && device != FUSEDLOSS_DEVICE_CUDA) {
    return report(err, FUSEDLOSS_INVALID_ARGUMENT, "device", "device: unknown device %d", device);
  }
  return FUSEDLOSS_SUCCESS;
}

}  // namespace fusedloss::host
