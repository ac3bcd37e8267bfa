/* The C ABI calls whose enum arguments the fuzzer sets to any int. A C caller may pass any int
 * value as an enum; C++ may not even hold one outside the enum's range (UBSan reports the load),
 * so fuzz_c_abi.cpp passes them as ints through here. */
#include <stdint.h>

#include "fusedloss/fusedloss.h"

fusedloss_status fuzz_scale_in_place(void* data, int dtype, int64_t numel, const void* scale,
                                     int scale_dtype, int device, fusedloss_error* err) {
  return fusedloss_scale_in_place(data, (fusedloss_dtype)dtype, numel, scale,
                                  (fusedloss_dtype)scale_dtype, (fusedloss_device)device, NULL,
                                  err);
}
