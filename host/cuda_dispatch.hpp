// The CUDA path of every loss: workspace sizes and launches, from validated params, and the row
// kernels' work they launch. Built from cuda_dispatch.cpp with CUDA and from no_cuda.cpp without
// it (which defines no builder of kernels' work: nothing without CUDA calls one).
#pragma once

#include <cstddef>

#include "call.hpp"
#include "fusedloss/fusedloss.h"

namespace fusedloss::kernels {
struct row_problem;  // kernels/row_losses.hpp, which a caller of the builders below includes
}  // namespace fusedloss::kernels

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

/// The row kernels' work for call `c` of params that validate() resolved (row strides never 0):
/// the kernels::row_problem that `run` hands to kernels::run_row_loss for them, with the tier
/// automatic, and that `workspace_size` sizes for call::forward_backward (the size covers the
/// three calls). Outputs a call does not write are null in it (the loss and z_loss_out for
/// backward, the gradient for forward), the saved LSE is read only by a backward given one, and
/// the invalid-target counter goes to the loss-computing calls. Tests and benchmarks set `tier` on
/// the result to force one.
kernels::row_problem cross_entropy_problem(const fusedloss_cross_entropy_params& p, call c);
kernels::row_problem softmax_focal_problem(const fusedloss_softmax_focal_params& p, call c);

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
