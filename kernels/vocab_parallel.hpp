// Launch interface of the shard kernels of vocabulary-parallel cross-entropy
// (fusedloss/vocab_parallel.h), in host terms: the host layer fills a shard_problem from validated
// params and calls the step's function.
#pragma once

#include <cuda_runtime_api.h>

#include <cstddef>
#include <cstdint>

#include "fusedloss/fusedloss.h"

namespace fusedloss::kernels {

/// One shard call's work. Pointers are device pointers; a null output is not written.
struct shard_problem {
  int64_t batch;
  int64_t num_classes;  ///< this rank's slice width (>= 1)
  int64_t vocab_start;
  int64_t vocab_size;
  int64_t row_stride;       ///< resolved (never 0)
  int64_t grad_row_stride;  ///< resolved (never 0)
  const void* logits;
  fusedloss_dtype logits_dtype;  ///< float32, float16 or bfloat16; also grad's dtype
  const void* targets;
  fusedloss_dtype targets_dtype;  ///< int32 or int64
  const float* weight;            ///< this slice's class weights, optional
  int64_t ignore_index;
  float label_smoothing;
  float z_loss;
  float softcap;  ///< 0: off
  fusedloss_reduction reduction;
  float empty_value;  ///< mean with a zero normaliser: NaN or 0
  float* summary;     ///< FUSEDLOSS_SHARD_SUMMARY_FIELDS * batch floats, field-major
  float* loss;        ///< finish: per row (none) or one value; optional
  float* lse;         ///< finish: per row; optional
  float* z_loss_out;  ///< finish: the z-loss term alone, reduced like the loss; optional
  void* grad;         ///< finish: the shard's gradient; optional
  float grad_scale;   ///< finish: the gradient's scale, times *grad_scale_ptr if given
  const float* grad_scale_ptr;
  int64_t* invalid_target_count;  ///< finish: optional; the host passes it on one rank only
};

/// Workspace bytes that every step of `problem` needs on the current device.
cudaError_t shard_workspace_bytes(const shard_problem& problem, size_t* bytes);

/// The three steps, each enqueued on `stream`: no allocation, no synchronisation
/// (graph-capturable). A workspace smaller than shard_workspace_bytes says (or null when that is
/// not 0) gives cudaErrorInvalidValue before anything is launched.
cudaError_t run_shard_partial(const shard_problem& problem, void* workspace, size_t workspace_bytes,
                              cudaStream_t stream);
cudaError_t run_shard_rescale(const shard_problem& problem, void* workspace, size_t workspace_bytes,
                              cudaStream_t stream);
cudaError_t run_shard_finish(const shard_problem& problem, void* workspace, size_t workspace_bytes,
                             cudaStream_t stream);

}  // namespace fusedloss::kernels
