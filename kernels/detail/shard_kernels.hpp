// What the vocabulary-parallel steps' host side (vocab_parallel.cu) and their kernels
// (shard_kernels.cu) share: the block size of the kernels with a thread per row, the workspace of
// finish's rows kernel, and the launches shard_kernels.cu defines, so that the host side holds no
// device code.
#pragma once

#include <cuda_runtime_api.h>

#include <cstdint>

#include "vocab_parallel.hpp"

namespace fusedloss::kernels::detail {

constexpr int kRowThreads = 256;  // the prepass and finish's rows: a thread per row

// What finish needs besides the problem: D and where the block sums go.
struct finish_workspace {
  const double* normaliser;  // D under mean, else null
  double* loss_partials;     // a slot per rows-kernel block under sum and mean, else null
  double* z_partials;
};

// partial's kernel over `blocks` blocks, instantiated for the logits' type and the soft-cap.
void launch_shard_partial(const shard_problem& p, int blocks, cudaStream_t stream);

void launch_shard_rescale(const shard_problem& p, int blocks, cudaStream_t stream);

// finish's prepass: the mean's normaliser D, `blocks` partials into `partials`, their total into
// `*normaliser`.
void launch_shard_normaliser(const shard_problem& p, int blocks, double* partials,
                             double* normaliser, cudaStream_t stream);

// finish's per-row outputs and block sums.
void launch_shard_rows(const shard_problem& p, int blocks, const finish_workspace& w,
                       cudaStream_t stream);

// The reduced loss and z-loss from `partials` block sums each (mean: divided by D).
void launch_shard_final_sums(const shard_problem& p, const double* loss_partials,
                             const double* z_partials, int64_t partials, const double* normaliser,
                             cudaStream_t stream);

// finish's gradient of the shard, over `blocks` blocks.
void launch_shard_gradient(const shard_problem& p, const double* normaliser, int blocks,
                           cudaStream_t stream);

}  // namespace fusedloss::kernels::detail
