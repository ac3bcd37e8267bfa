// The CPU reference: every loss of docs/SEMANTICS.md computed in double from the stored inputs,
// written straight from the formulas and sharing no code with the CUDA kernels, so a mistake in one
// cannot hide in the other. The API layer calls these after it has validated the params and
// resolved their defaults (row_stride and grad_row_stride are never 0 here).
#pragma once

#include <cstdint>

#include "call.hpp"
#include "fusedloss/fusedloss.h"

namespace fusedloss::reference {

/// The upstream gradient of forward_backward: grad_scale times *grad_scale_ptr (when given).
template <class Params>
double fused_grad_scale(const Params& p) {
  return static_cast<double>(p.grad_scale) *
         (p.grad_scale_ptr != nullptr ? static_cast<double>(*p.grad_scale_ptr) : 1.0);
}

void bce(const fusedloss_bce_params& p, call c);
void sigmoid_focal(const fusedloss_sigmoid_focal_params& p, call c);
void mse(const fusedloss_mse_params& p, call c);

/// Row losses return how many class-index targets were neither ignore_index nor in [0, C) (those
/// rows were treated as ignored).
int64_t cross_entropy(const fusedloss_cross_entropy_params& p, call c);
int64_t softmax_focal(const fusedloss_softmax_focal_params& p, call c);

/// Linear + cross-entropy: the (N, V) product, then cross_entropy; returns its invalid count.
int64_t linear_cross_entropy(const fusedloss_linear_cross_entropy_params& p, call c);

/// The shard calls of vocabulary-parallel cross-entropy; finish returns the count of targets
/// neither ignore_index nor in [0, vocab_size).
void cross_entropy_shard_partial(const fusedloss_cross_entropy_shard_params& p);
void cross_entropy_shard_rescale(const fusedloss_cross_entropy_shard_params& p);
int64_t cross_entropy_shard_finish(const fusedloss_cross_entropy_shard_params& p);

}  // namespace fusedloss::reference
