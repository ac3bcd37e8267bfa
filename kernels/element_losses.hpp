// Launch interface of the element-loss kernels (BCE with logits, sigmoid focal, MSE), in host
// terms: the host layer fills an element_problem from validated params and calls run_element_loss.
#pragma once

#include <cuda_runtime_api.h>

#include <cmath>
#include <cstddef>
#include <cstdint>

#include "fusedloss/fusedloss.h"

namespace fusedloss::kernels {

enum class element_loss { bce, sigmoid_focal, mse };

/// Sigmoid focal's per-call constants, formed on the host (focal_constants_of) so that the kernel
/// reads them as constant operands instead of holding them in registers:
/// alpha_t = alpha_0 + alpha_y y, gamma (2y - 1) = gamma_y y - gamma.
struct focal_constants {
  float alpha_0, alpha_y, gamma, gamma_y;
  bool integer_gamma;  ///< gamma an integer in [0, 15]: 1 - p_t raised by repeated squaring
  int lower_exponent;  ///< for an integer gamma n: the exponent of (1 - p_t)^(n - 1), 0 when n = 0
};

/// The constants of alpha (negative: no weighting) and gamma >= 0.
inline focal_constants focal_constants_of(float alpha, float gamma) {
  const bool integer = gamma >= 0.0f && gamma <= 15.0f && gamma == std::floor(gamma);
  return {alpha >= 0.0f ? 1.0f - alpha : 1.0f,
          alpha >= 0.0f ? 2.0f * alpha - 1.0f : 0.0f,
          gamma,
          2.0f * gamma,
          integer,
          integer && gamma >= 1.0f ? static_cast<int>(gamma) - 1 : 0};
}

/// One call's work. Pointers are device pointers; a null output is not written.
struct element_problem {
  element_loss kind;
  int64_t numel;
  int64_t num_classes;  ///< class of element i is i % num_classes (per-class vectors)
  const void* logits;
  fusedloss_dtype logits_dtype;  ///< float32, float16 or bfloat16; also grad's dtype
  const void* targets;
  fusedloss_dtype targets_dtype;  ///< float32 or logits_dtype
  const float* weight;            ///< BCE only, optional
  bool weight_per_class;
  const float* pos_weight;  ///< BCE only, optional, per class
  focal_constants focal;    ///< sigmoid focal
  fusedloss_reduction reduction;
  float empty_value;       ///< mean over zero elements: NaN or 0
  float* loss;             ///< per element (none) or one value; optional
  void* grad;              ///< optional
  const float* grad_loss;  ///< backward's upstream (per element under none); else null
  float grad_scale;        ///< forward_backward's upstream, times *grad_scale_ptr if given
  const float* grad_scale_ptr;
  int max_blocks;  ///< 0: the default grid; tests cap it to vary the launch
};

/// Workspace bytes for `numel` elements on the current device under the same max_blocks.
cudaError_t element_workspace_bytes(int64_t numel, int max_blocks, size_t* bytes);

/// Elements from which a lean bfloat16 BCE or gamma = 2 sigmoid focal call (bfloat16 targets, no
/// weight, pos_weight or per-element upstream) reads its logistic functions from a table in
/// shared memory, which each block fills first (estimated at a microsecond a call, repaid from
/// 2^23 elements: docs/performance.md). 2^23 unless set.
int64_t element_lookup_from();

/// Sets element_lookup_from (the tests send every eligible call through the table with 0);
/// returns the previous value. Safe to call from any thread; calls in flight are not affected.
int64_t set_element_lookup_from(int64_t elements);

/// Enqueues the call on `stream`: no allocation, no synchronisation (graph-capturable).
cudaError_t run_element_loss(const element_problem& problem, void* workspace, cudaStream_t stream);

}  // namespace fusedloss::kernels
