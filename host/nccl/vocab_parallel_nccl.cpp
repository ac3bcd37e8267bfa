// fusedloss/nccl.h: the shard calls of the core library's C ABI with NCCL's all-reduces between
// them. Only the public ABI is used, so this library links any build of the core library.
#include <cuda_runtime_api.h>

#include <cstdio>

#include "fusedloss/nccl.h"

namespace {

fusedloss_status refuse(fusedloss_error* err, fusedloss_status status, const char* argument,
                        const char* message, const char* detail = "") {
  if (err != nullptr) {
    err->status = status;
    err->argument = argument;
    std::snprintf(err->message, sizeof err->message, "%s: %s%s", argument, message, detail);
  }
  return status;
}

fusedloss_status reduce(float* values, int64_t count, ncclRedOp_t op, ncclComm_t comm, void* stream,
                        fusedloss_error* err) {
  if (count == 0) return FUSEDLOSS_SUCCESS;  // every rank has the same batch: none calls NCCL
  const ncclResult_t r = ncclAllReduce(values, values, static_cast<size_t>(count), ncclFloat32, op,
                                       comm, static_cast<cudaStream_t>(stream));
  if (r == ncclSuccess) return FUSEDLOSS_SUCCESS;
  return refuse(err, FUSEDLOSS_CUDA_ERROR, "comm", "ncclAllReduce failed: ", ncclGetErrorString(r));
}

}  // namespace

extern "C" fusedloss_status fusedloss_cross_entropy_vocab_parallel_nccl(
    const fusedloss_cross_entropy_shard_params* p, ncclComm_t comm, void* workspace,
    size_t workspace_bytes, void* stream, fusedloss_error* err) {
  // The struct itself is checked by the first shard call; only what it cannot know is here.
  if (p != nullptr && p->struct_size == sizeof *p && p->device != FUSEDLOSS_DEVICE_CUDA) {
    return refuse(err, FUSEDLOSS_INVALID_ARGUMENT, "device",
                  "the NCCL call runs on CUDA (the CPU path takes the shard calls and the "
                  "caller's own all-reduce)");
  }
  if (comm == nullptr) return refuse(err, FUSEDLOSS_INVALID_ARGUMENT, "comm", "null");
  fusedloss_status s =
      fusedloss_cross_entropy_shard_partial(p, workspace, workspace_bytes, stream, err);
  if (s != FUSEDLOSS_SUCCESS) return s;
  float* summary = static_cast<float*>(p->summary);
  const int64_t n = p->batch;
  s = reduce(summary + FUSEDLOSS_SHARD_SUMMARY_MAX * n, n, ncclMax, comm, stream, err);
  if (s == FUSEDLOSS_SUCCESS) {
    s = fusedloss_cross_entropy_shard_rescale(p, workspace, workspace_bytes, stream, err);
  }
  if (s == FUSEDLOSS_SUCCESS) {
    s = reduce(summary + FUSEDLOSS_SHARD_SUMMARY_SUM_EXP * n, FUSEDLOSS_SHARD_SUMMARY_SUMMED * n,
               ncclSum, comm, stream, err);
  }
  if (s == FUSEDLOSS_SUCCESS) {
    s = fusedloss_cross_entropy_shard_finish(p, workspace, workspace_bytes, stream, err);
  }
  return s;
}
