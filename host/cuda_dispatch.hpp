// The CUDA path of every loss: workspace sizes and launches, from validated params. Built from
// cuda_dispatch.cpp with CUDA and from no_cuda.cpp without it.
#pragma once

#include <cstddef>

#include "call.hpp"
#include "fusedloss/fusedloss.h"

namespace fusedloss::host::cuda {

/// Workspace bytes `p`'s calls need on the current device.
fusedloss_status workspace_size(const fusedloss_bce_params& p, size_t* bytes, fusedloss_error* err);
fusedloss_status workspace_size(const fusedloss_sigmoid_focal_params& p, size_t* bytes,
                                fusedloss_error* err);
fusedloss_status workspace_size(const fusedloss_mse_params& p, size_t* bytes, fusedloss_error* err);
fusedloss_status workspace_size(const fusedloss_cross_entropy_params& p, size_t* bytes,
                                fusedloss_error* err);
fusedloss_status workspace_size(const fusedloss_softmax_focal_params& p, size_t* bytes,
                                fusedloss_error* err);
fusedloss_status workspace_size(const fusedloss_cross_entropy_shard_params& p, size_t* bytes,
                                fusedloss_error* err);
fusedloss_status workspace_size(const fusedloss_linear_cross_entropy_params& p, size_t* bytes,
                                fusedloss_error* err);

/// Checks the workspace, then enqueues call `c` of validated params on `stream`.
fusedloss_status run(const fusedloss_bce_params& p, call c, void* workspace, size_t workspace_bytes,
                     void* stream, fusedloss_error* err);
fusedloss_status run(const fusedloss_sigmoid_focal_params& p, call c, void* workspace,
                     size_t workspace_bytes, void* stream, fusedloss_error* err);
fusedloss_status run(const fusedloss_mse_params& p, call c, void* workspace, size_t workspace_bytes,
                     void* stream, fusedloss_error* err);
fusedloss_status run(const fusedloss_cross_entropy_params& p, call c, void* workspace,
                     size_t workspace_bytes, void* stream, fusedloss_error* err);
fusedloss_status run(const fusedloss_softmax_focal_params& p, call c, void* workspace,
                     size_t workspace_bytes, void* stream, fusedloss_error* err);
fusedloss_status run(const fusedloss_linear_cross_entropy_params& p, call c, void* workspace,
                     size_t workspace_bytes, void* stream, fusedloss_error* err);

/// Checks the workspace, then enqueues shard call `step` of validated params on `stream`.
fusedloss_status run(const fusedloss_cross_entropy_shard_params& p, shard_step step,
                     void* workspace, size_t workspace_bytes, void* stream, fusedloss_error* err);

/// fusedloss_scale_in_place on the device, arguments validated.
fusedloss_status scale_in_place(void* data, fusedloss_dtype dtype, int64_t numel, const void* scale,
                                fusedloss_dtype scale_dtype, void* stream, fusedloss_error* err);

}  // namespace fusedloss::host::cuda
