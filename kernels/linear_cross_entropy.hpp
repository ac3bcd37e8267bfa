// Launch interface of fused linear + cross-entropy (fusedloss/linear_cross_entropy.h), in host
// terms: the host layer fills a linear_problem from validated params, sizes the workspace with
// linear_workspace_sizes / linear_chunk_rows and calls run_linear_cross_entropy.
#pragma once

#include <cuda_runtime_api.h>

#include <cstddef>
#include <cstdint>

#include "fusedloss/fusedloss.h"
#include "row_losses.hpp"

namespace fusedloss::kernels {

/// Which of the three calls runs: what the row kernel writes and which GEMMs follow it.
enum class linear_pass { forward, backward, forward_backward };

/// One call's work. Pointers are device pointers; a null output is not written.
struct linear_problem {
  linear_pass pass;
  int64_t batch;             ///< N
  int64_t hidden;            ///< H
  int64_t num_classes;       ///< V
  const void* input;         ///< (N, H), rows input_row_stride elements apart
  int64_t input_row_stride;  ///< resolved (never 0)
  fusedloss_dtype dtype;  ///< float32, float16 or bfloat16: input's, weight's, bias's, grad_input's
  const void* linear_weight;          ///< (V, H) contiguous
  const void* linear_bias;            ///< (V), optional
  void* grad_input;                   ///< (N, H), rows grad_input_row_stride apart; optional
  int64_t grad_input_row_stride;      ///< resolved (never 0)
  void* grad_linear_weight;           ///< (V, H) contiguous; optional
  void* grad_linear_bias;             ///< (V); optional
  fusedloss_dtype grad_linear_dtype;  ///< float32 or `dtype`
  bool accumulate_grad_linear;
  fusedloss_reduction reduction;
  float empty_value;       ///< mean with a zero normaliser: NaN or 0
  float* loss;             ///< forward, forward_backward: per row (none) or one value; optional
  float* lse;              ///< forward, forward_backward: per row; optional
  float* z_loss_out;       ///< forward, forward_backward: reduced like the loss; optional
  const float* grad_loss;  ///< backward: per row (none) or one value
  float grad_scale;        ///< forward_backward's upstream, times *grad_scale_ptr if given
  const float* grad_scale_ptr;
  /// The row kernel's options, shared by every chunk: kind (cross_entropy), targets (all N; each
  /// chunk gets its slice), targets_dtype, weight, ignore_index, label_smoothing, z_loss, softcap,
  /// invalid_target_count (null for backward) and tier. Its shape, buffers, reduction and upstream
  /// are set per chunk.
  row_problem rows;
};

/// The workspace a chunk of `rows` rows needs: fixed_bytes + rows * row_bytes. The chunk buffer
/// lies last and holds exactly its rows, so one more row always needs row_bytes more.
struct linear_workspace {
  size_t fixed_bytes;  ///< scalars, the row kernel's and cuBLASLt's workspaces (0 rows: scalars)
  size_t row_bytes;    ///< one row of logits in `dtype`
};

/// The workspace sizes of `problem` on the current device (one size serves the three calls).
cudaError_t linear_workspace_sizes(const linear_problem& problem, linear_workspace* sizes);

/// The rows of the largest chunk (at most `batch`) that `bytes` of workspace hold; 0 when not even
/// one row fits (or batch is 0).
int64_t linear_chunk_rows(const linear_workspace& sizes, int64_t batch, size_t bytes);

/// Why a call failed: a CUDA runtime error, or a cuBLASLt status with the function that returned
/// it.
struct linear_status {
  cudaError_t cuda;
  int blas;             ///< cublasStatus_t; 0 (CUBLAS_STATUS_SUCCESS) when the failure is CUDA's
  const char* call;     ///< the cuBLASLt function that failed, or null
  const char* message;  ///< cublasLtGetStatusString of `blas`, or null
};

/// Enqueues the call on `stream`, chunk by chunk in a fixed order: no allocation, no host
/// synchronisation (graph-capturable), deterministic. `workspace` (256-byte aligned) holds
/// `workspace_bytes`, at least a one-row chunk's (the caller checks both); the chunk is the largest
/// that fits. Every GEMM's algorithm is chosen before anything is launched, so a cuBLASLt refusal
/// writes nothing.
linear_status run_linear_cross_entropy(const linear_problem& problem, void* workspace,
                                       size_t workspace_bytes, cudaStream_t stream);

}  // namespace fusedloss::kernels
