// `fusedloss validate`: fused linear + cross-entropy, a problem whose "logits" are the three inputs
// it differentiates, with cross-entropy of the same rows as its loss's oracle.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

#include "memory.hpp"
#include "problems.hpp"

namespace fusedloss::validate {

// Values on a grid of 2^-10 in [-bound, bound], bound <= 1. With the hidden states, the weight and
// the bias on it and a power-of-two finite-difference step (kFdStep, 2^-20), every product x w and
// every logit's sum of them is exact in double (multiples of 2^-30 below 2^22), also with one input
// moved by the step: the logits are exact in every evaluation, whatever the order of their sums.
// So the tool's product equals the reference's bit for bit, and finite differences of the loss
// round exactly as cross-entropy's own rows do (fd_tolerance).
std::vector<double> on_grid(rng_t& rng, size_t count, double bound);

// Linear + cross-entropy of `values`: the hidden states (N, H), the weight (V, H) and the bias (V,
// when the problem has one) concatenated; its gradient is concatenated the same way. `split` runs
// the rows in several chunks of the workspace (CUDA only: the CPU reference has no chunks).
outputs run_linear(const lce_p& base, const inputs& in, memory& m, call kind, fusedloss_dtype dtype,
                   const std::vector<double>& values, const upstream& up, bool split);

struct linear_problem {
  problem pr;     // logits: the inputs of run_linear, concatenated; for fd and fused
  problem whole;  // cross-entropy of the same targets and options: the loss's oracle
  lce_p base;
  inputs in;

  /// The logits x W^T + b of `values` (laid out as pr.logits), (N, V).
  std::vector<double> product(const std::vector<double>& values) const {
    const int64_t n = base.batch, h = base.hidden, v = base.num_classes;
    const bool bias = in.linear_bias.size() != 0;
    std::vector<double> z(n * v);
    for (int64_t r = 0; r < n; ++r) {
      for (int64_t c = 0; c < v; ++c) {
        double sum = bias ? values[(n + v) * h + c] : 0.0;
        for (int64_t k = 0; k < h; ++k) sum += values[r * h + k] * values[n * h + c * h + k];
        z[r * v + c] = sum;
      }
    }
    return z;
  }
};

linear_problem make_linear_problem(std::string options, const shape& sh, const lce_p& base,
                                   const inputs& in, rng_t& rng);

}  // namespace fusedloss::validate
