/**
 * @file fusedloss/nccl.h
 * @brief Vocabulary-parallel cross-entropy over NCCL, for C++ trainers: the shard calls of
 * fusedloss/vocab_parallel.h with `ncclAllReduce` between them, in one call. Library
 * `fusedloss::nccl` (target fusedloss_nccl), built when CMake finds NCCL; the core library does
 * not depend on it.
 */
#ifndef FUSEDLOSS_NCCL_H
#define FUSEDLOSS_NCCL_H

#include <nccl.h>

#include "fusedloss/fusedloss.h"

#ifdef __cplusplus
extern "C" {
#endif

/**
 * @brief One rank's vocabulary-parallel cross-entropy: fusedloss_cross_entropy_shard_partial, an
 * `ncclAllReduce` with ncclMax of the summary's first `batch` floats, the rescale, an
 * `ncclAllReduce` with ncclSum of the `FUSEDLOSS_SHARD_SUMMARY_SUMMED * batch` floats from
 * ::FUSEDLOSS_SHARD_SUMMARY_SUM_EXP on, and fusedloss_cross_entropy_shard_finish, all enqueued on
 * `stream`. Every rank of `comm` calls it with its own shard, slice of `weight` and summary.
 * @param p the rank's params; `device` must be ::FUSEDLOSS_DEVICE_CUDA.
 * @param comm the caller's communicator, one rank per slice (in any order of slices).
 * @param workspace at least fusedloss_cross_entropy_shard_workspace_size bytes of device memory.
 * @param workspace_bytes its size.
 * @param stream the cudaStream_t of the calls and the collectives (NULL: the default stream).
 * @param[out] err optional details of a refusal.
 * @return ::FUSEDLOSS_SUCCESS; ::FUSEDLOSS_INVALID_ARGUMENT for refused params (before any
 * collective: a refusal on some ranks only leaves the others waiting in the first all-reduce,
 * so every rank should pass consistent params); ::FUSEDLOSS_CUDA_ERROR for a failed launch or an
 * NCCL error (the message names it).
 * @note No host synchronisation, no allocation. Reads the shard twice and writes its gradient once
 * (when `grad_logits` is given); the network carries 6 * batch floats.
 */
FUSEDLOSS_API fusedloss_status fusedloss_cross_entropy_vocab_parallel_nccl(
    const fusedloss_cross_entropy_shard_params* p, ncclComm_t comm, void* workspace,
    size_t workspace_bytes, void* stream, fusedloss_error* err);

#ifdef __cplusplus
}  // extern "C"
#endif

#endif  // FUSEDLOSS_NCCL_H
