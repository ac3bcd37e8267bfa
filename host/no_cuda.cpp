// A build without CUDA: no pointer is device memory, device counters do not exist, and every CUDA
// call says the library was built without it.
#include "cuda_dispatch.hpp"
#include "device_memory.hpp"
#include "fusedloss/fusedloss.h"
#include "validate.hpp"

namespace fusedloss::host {

memory_location locate(const void*) { return {memory_space::either}; }

fusedloss_status read_and_clear_device_counter(int64_t*, void*, int64_t*, fusedloss_error* err) {
  return report(err, FUSEDLOSS_NOT_IMPLEMENTED, "device",
                "device: fusedloss was built without CUDA (FUSEDLOSS_WITH_CUDA=OFF)");
}

namespace cuda {
namespace {

fusedloss_status without_cuda(fusedloss_error* err) {
  return report(err, FUSEDLOSS_NOT_IMPLEMENTED, "device",
                "device: not implemented on this device (fusedloss was built without CUDA)");
}

}  // namespace

#define FUSEDLOSS_WITHOUT_CUDA(Params)                                                    \
  fusedloss_status workspace_size(const Params&, size_t*, fusedloss_error* err) {         \
    return without_cuda(err);                                                             \
  }                                                                                       \
  fusedloss_status run(const Params&, call, void*, size_t, void*, fusedloss_error* err) { \
    return without_cuda(err);                                                             \
  }

FUSEDLOSS_WITHOUT_CUDA(fusedloss_bce_params)
FUSEDLOSS_WITHOUT_CUDA(fusedloss_sigmoid_focal_params)
FUSEDLOSS_WITHOUT_CUDA(fusedloss_mse_params)
FUSEDLOSS_WITHOUT_CUDA(fusedloss_cross_entropy_params)
FUSEDLOSS_WITHOUT_CUDA(fusedloss_softmax_focal_params)
FUSEDLOSS_WITHOUT_CUDA(fusedloss_linear_cross_entropy_params)

fusedloss_status workspace_size(const fusedloss_cross_entropy_shard_params&, size_t*,
                                fusedloss_error* err) {
  return without_cuda(err);
}
fusedloss_status run(const fusedloss_cross_entropy_shard_params&, shard_step, void*, size_t, void*,
                     fusedloss_error* err) {
  return without_cuda(err);
}

#undef FUSEDLOSS_WITHOUT_CUDA

fusedloss_status scale_in_place(void*, fusedloss_dtype, int64_t, const void*, fusedloss_dtype,
                                void*, fusedloss_error* err) {
  return without_cuda(err);
}

}  // namespace cuda
}  // namespace fusedloss::host

extern "C" int fusedloss_built_with_cuda(void) { return 0; }
