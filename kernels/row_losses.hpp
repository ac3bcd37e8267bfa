// Launch interface of the row-loss kernels (cross-entropy with class-index or probability targets,
// softmax focal), in host terms: the host layer fills a row_problem from validated params and calls
// run_row_loss.
#pragma once

#include <cuda_runtime_api.h>

#include <cstddef>
#include <cstdint>

#include "fusedloss/fusedloss.h"

namespace fusedloss::kernels {

enum class row_loss { cross_entropy, probability_cross_entropy, softmax_focal };

/// How a row moves through the chip (see row_losses.cu). `automatic` picks by C, the layout and
/// the GPU; tests and benchmarks force the others to reach every path.
enum class row_tier { automatic, warp, block, cluster, two_pass, spatial };

/// The tier's name, as the enumerator spells it (tests and benchmarks name their cases by it).
constexpr const char* name(row_tier t) {
  constexpr const char* names[] = {"automatic", "warp", "block", "cluster", "two_pass", "spatial"};
  return names[static_cast<int>(t)];
}

/// One call's work. Pointers are device pointers; a null output is not written.
struct row_problem {
  row_loss kind;
  int64_t batch;
  int64_t num_classes;
  int64_t spatial;
  int64_t row_stride;       ///< resolved (never 0)
  int64_t grad_row_stride;  ///< resolved (never 0)
  const void* logits;
  fusedloss_dtype logits_dtype;  ///< float32, float16 or bfloat16; also grad's dtype
  const void* targets;
  fusedloss_dtype targets_dtype;
  const float* weight;  ///< cross-entropy class weights, or softmax focal's alpha; optional
  int64_t ignore_index;
  float label_smoothing;
  float z_loss;
  float softcap;  ///< 0: off
  float gamma;    ///< softmax focal
  fusedloss_reduction reduction;
  float empty_value;       ///< mean with a zero normaliser: NaN or 0
  float* loss;             ///< per row (none) or one value; optional
  float* lse;              ///< per row; written unless read_lse
  bool read_lse;           ///< backward: lse holds the forward's values and is read, not written
  float* z_loss_out;       ///< the z-loss term alone, reduced like the loss; optional
  void* grad;              ///< optional
  const float* grad_loss;  ///< backward's upstream (per row under none); else null
  float grad_scale;        ///< forward_backward's upstream, times *grad_scale_ptr if given
  const float* grad_scale_ptr;
  int64_t* invalid_target_count;  ///< optional; the host layer passes it to loss-computing calls
  row_tier tier;
};

/// Workspace bytes for `problem` on the current device, enough for all three calls.
cudaError_t row_workspace_bytes(const row_problem& problem, size_t* bytes);

/// The tier that will run `problem` on the current device (its own when forced).
cudaError_t row_tier_for(const row_problem& problem, row_tier* tier);

/// Enqueues the call on `stream`: no allocation, no synchronisation (graph-capturable); it plans
/// the call once (one query of the device). A forced tier that cannot hold the problem, or a
/// workspace smaller than row_workspace_bytes says (or null when that is not 0), gives
/// cudaErrorInvalidValue before anything is launched.
cudaError_t run_row_loss(const row_problem& problem, void* workspace, size_t workspace_bytes,
                         cudaStream_t stream);

}  // namespace fusedloss::kernels
