// `fusedloss validate`: the checks of a call against an oracle of its own kind (fd, fused, product,
// gpu) and the golden checks; with the upstream gradients and the device tolerance that every
// check of the CUDA path shares.
#pragma once

#include <cstddef>
#include <vector>

#include "golden.hpp"
#include "linear.hpp"
#include "memory.hpp"
#include "problems.hpp"
#include "table.hpp"

namespace fusedloss::validate {

// Upstream gradient values: non-unit, mixed in sign, and exact in float32 (the loss dtype of the
// 16-bit paths and the type of grad_scale), so that one set serves every dtype and call.
std::vector<double> upstream_values(rng_t& rng, size_t count);

// forward_backward's upstream gradient split over grad_scale and *grad_scale_ptr, and backward's
// equivalent: their product (exact in double), broadcast to every loss value.
struct fused_upstream {
  upstream fused, separate;
  fused_upstream(rng_t& rng, size_t count) {
    const std::vector<double> ab = upstream_values(rng, 2);
    fused.grad_scale = float(ab[0]);
    fused.grad_scale_in_memory = float(ab[1]);
    separate.grad_loss.assign(count, ab[0] * ab[1]);
  }
};

// The kernels compute in float32 and round once to the output dtype; the reference computes in
// double and rounds once. Each float32 term is within 32 float32 ulps (2e-6) of exact: a handful of
// operations, each within a few ulps (fast exp and log included); rounding to the output dtype adds
// one of its ulps (rounding_tolerance's rtol). A value summed from `terms` float32 terms (a row's
// LSE, a reduction) adds up to one float32 ulp of the running sum per addition, in any order:
// terms * 2^-24 of the largest value compared.
tolerance device_tolerance(fusedloss_dtype out, const std::vector<double>& want, size_t terms);

/// fd: backward's gradient (float64 logits, a random non-unit upstream gradient) against central
/// finite differences of forward.
verdict fd_check(const validator& v, const problem& pr, rng_t& rng);

/// fused: forward_backward's loss and gradient against forward's loss and backward's gradient.
verdict fused_check(const validator& v, const problem& pr, rng_t& rng);

// Linear + cross-entropy's forward against cross-entropy of the logits computed here. The logits
// are exact (on_grid), so both sides run the same double-precision cross-entropy on the same
// values: a few ulps at most (the same bits, in practice).
verdict product_check(const validator& v, const linear_problem& lp);

// The CUDA path against the CPU reference, both given the same stored inputs.
verdict gpu_check(const validator& v, const checks::device_memory& api, const problem& pr,
                  fusedloss_dtype dtype, rng_t& rng);

// One row per golden case (on the CPU reference: the runner's tolerances are those of a result
// rounded once from exact), the worst of its outputs. The runner compares the outputs itself, so
// --perturb divides the expected values by 1 + EPS instead of multiplying the outputs by it: the
// same comparison, up to a factor 1 + EPS on atol. --tolerance-scale cannot reach the runner's
// tolerances through its interface.
void golden_checks(validator& v);

}  // namespace fusedloss::validate
