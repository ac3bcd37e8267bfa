// Launch interface of the in-place scaling kernel (fusedloss_scale_in_place's CUDA path).
#pragma once

#include <cuda_runtime_api.h>

#include <cstdint>

#include "fusedloss/fusedloss.h"

namespace fusedloss::kernels {

/// Multiplies `numel` values of `data` (float32/float16/bfloat16, device memory) by the one value
/// at `scale` (device memory, float32/float16/bfloat16), doing nothing past reading it when it
/// is 1. Enqueued on `stream`; no allocation, no synchronisation.
cudaError_t scale_in_place(void* data, fusedloss_dtype dtype, int64_t numel, const void* scale,
                           fusedloss_dtype scale_dtype, cudaStream_t stream);

}  // namespace fusedloss::kernels
