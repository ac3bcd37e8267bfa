// `fusedloss validate`: the checks of cross-entropy's two other families, the shard path and fused
// linear + cross-entropy on CUDA, whose tolerances carry a bound on the logits' and LSE's error
// through cross-entropy.
#pragma once

#include "golden.hpp"
#include "linear.hpp"
#include "problems.hpp"
#include "shards.hpp"
#include "table.hpp"

namespace fusedloss::validate {

/// shards: the shard path on the CPU against the whole rows' call, in float64 or float32 logits.
verdict shard_check(const validator& v, const shard_problem& sp, fusedloss_dtype dtype, rng_t& rng);

/// gpu: the shard path on CUDA against the CPU's, both given the same stored logits.
verdict shard_gpu_check(const validator& v, const checks::device_memory& api,
                        const shard_problem& sp, fusedloss_dtype dtype, rng_t& rng);

/// gpu: linear + cross-entropy on CUDA, with the default workspace and with one that splits the
/// rows into chunks, against the CPU reference on the same stored values.
verdict linear_gpu_check(const validator& v, const checks::device_memory& api,
                         const linear_problem& lp, fusedloss_dtype dtype, rng_t& rng);

}  // namespace fusedloss::validate
