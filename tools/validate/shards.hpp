// `fusedloss validate`: vocabulary-parallel cross-entropy, the ranks' shard calls simulated in one
// process, and the whole rows' call laid out alike, their oracle.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

#include "memory.hpp"
#include "problems.hpp"

namespace fusedloss::validate {

struct shard_problem {
  std::string options, shape;
  ce_p base;                    // the whole rows' sizes and options, without buffers
  inputs in;                    // the targets and the whole vocabulary's class weights
  std::vector<double> logits;   // (N, V)
  std::vector<int64_t> widths;  // the ranks' slices, in vocabulary order

  size_t loss_count() const {
    return base.reduction == FUSEDLOSS_REDUCTION_NONE ? size_t(base.batch) : 1;
  }
};

// Each rank's partial, the MAX all-reduce, rescale, the SUM all-reduce and finish, in `m`. The loss
// and LSE are rank 0's (a rank that disagrees throws); the gradient is the ranks' concatenated, (N,
// V), followed by every padding element of their gradients (still poisoned when right).
outputs shards(const shard_problem& sp, memory& m, fusedloss_dtype dtype, const upstream& up);

// The whole rows' forward_backward on the same logits, laid out as shards() lays out its outputs:
// the shard path's oracle.
outputs whole_rows(const shard_problem& sp, memory& m, fusedloss_dtype dtype, const upstream& up);

}  // namespace fusedloss::validate
