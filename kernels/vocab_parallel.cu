// The shard calls of vocabulary-parallel cross-entropy on the GPU (fusedloss/vocab_parallel.h);
// host/reference/vocab_parallel.cpp defines what each field and output is, in double.
// This file is their host side: the grids, the workspace's layout and each step's launches; the
// kernels, and their launches where each template is instantiated, are in shard_kernels.cu.
//
// partial: a block per row folds the shard's (soft-capped) logits into a row_summary
//   (detail/online_softmax.cuh) with the streaming loop of the row kernels, merges it over the
//   block and writes the row's 7 summary fields. One read of the shard.
// rescale: a thread per row moves SUM_EXP and WEIGHTED_SUM from this rank's reference to the
//   global maximum, as row_summary::rebase moves a summary.
// finish: a prepass reduces the mean's normaliser D from the summed TARGET_WEIGHT field (it is
//   needed before any gradient and comes from the summaries alone, so no host read and the call
//   stays graph-capturable); a thread per row writes the LSE and the loss terms, summed per block
//   in double and then in a fixed order (detail/reduce.cuh: no floating-point atomics); a block
//   per row writes the shard's gradient, reading the shard once more.
//
// The partial and gradient kernels are templated on the logits' type and on whether the soft-cap
// is on (chosen at launch), so that a row without it runs no tanh; which coefficients label
// smoothing adds (none, ones or class weights) picks one of three copies of their loops with a
// uniform branch, not more instantiations. The other kernels are not templated: their options are
// run-time flags.
#include <climits>

#include "detail/device.hpp"
#include "detail/shard_kernels.hpp"
#include "vocab_parallel.hpp"

namespace fusedloss::kernels {
namespace {

using detail::device_facts;
using detail::kRowThreads;
using detail::query_device;

constexpr int kBlocksPerSm = 8;  // no grid exceeds sms times this

int grid_of(int64_t work, int sms) { return detail::grid_of(work, sms, kBlocksPerSm); }
int row_blocks_of(int64_t batch, int sms) {
  return grid_of((batch + kRowThreads - 1) / kRowThreads, sms);
}

// Workspace layout, in doubles: [prepass partials][D] under mean, then [loss partials][z-loss
// partials] under sum and mean. It depends on the shape and the reduction alone, so one workspace
// serves the three steps and any output pointers.
struct layout {
  size_t prepass, normaliser, loss, z, total;
};

layout layout_of(const shard_problem& p, int sms) {
  const bool mean = p.reduction == FUSEDLOSS_REDUCTION_MEAN;
  const bool reduced = p.reduction != FUSEDLOSS_REDUCTION_NONE;
  const size_t blocks = static_cast<size_t>(row_blocks_of(p.batch, sms));
  layout l{};
  l.prepass = 0;
  l.normaliser = mean ? blocks : 0;
  l.loss = l.normaliser + (mean ? 1 : 0);
  l.z = l.loss + (reduced ? blocks : 0);
  l.total = l.z + (reduced ? blocks : 0);
  return l;
}

// The layout of `p` on the current device, after the checks every step makes.
cudaError_t prepare(const shard_problem& p, void* workspace, size_t workspace_bytes,
                    device_facts* f, layout* l) {
  if (p.num_classes < 1 || p.num_classes > INT_MAX / 2 || p.batch < 0) {
    return cudaErrorInvalidValue;  // classes index as int
  }
  if (const cudaError_t e = query_device(f); e != cudaSuccess) return e;
  *l = layout_of(p, f->sms);
  const size_t needed = l->total * sizeof(double);
  if (workspace_bytes < needed || (needed > 0 && workspace == nullptr)) {
    return cudaErrorInvalidValue;
  }
  return cudaSuccess;
}

}  // namespace

cudaError_t shard_workspace_bytes(const shard_problem& problem, size_t* bytes) {
  device_facts f{};
  if (const cudaError_t e = query_device(&f); e != cudaSuccess) return e;
  *bytes = layout_of(problem, f.sms).total * sizeof(double);
  return cudaSuccess;
}

cudaError_t run_shard_partial(const shard_problem& p, void* workspace, size_t workspace_bytes,
                              cudaStream_t stream) {
  device_facts f{};
  layout l{};
  if (const cudaError_t e = prepare(p, workspace, workspace_bytes, &f, &l); e != cudaSuccess) {
    return e;
  }
  if (p.batch == 0) return cudaSuccess;
  detail::launch_shard_partial(p, grid_of(p.batch, f.sms), stream);
  return cudaGetLastError();
}

cudaError_t run_shard_rescale(const shard_problem& p, void* workspace, size_t workspace_bytes,
                              cudaStream_t stream) {
  device_facts f{};
  layout l{};
  if (const cudaError_t e = prepare(p, workspace, workspace_bytes, &f, &l); e != cudaSuccess) {
    return e;
  }
  if (p.batch == 0) return cudaSuccess;
  detail::launch_shard_rescale(p, row_blocks_of(p.batch, f.sms), stream);
  return cudaGetLastError();
}

cudaError_t run_shard_finish(const shard_problem& p, void* workspace, size_t workspace_bytes,
                             cudaStream_t stream) {
  device_facts f{};
  layout l{};
  if (const cudaError_t e = prepare(p, workspace, workspace_bytes, &f, &l); e != cudaSuccess) {
    return e;
  }
  auto* base = static_cast<double*>(workspace);
  const bool mean = p.reduction == FUSEDLOSS_REDUCTION_MEAN;
  const bool reduced =
      p.reduction != FUSEDLOSS_REDUCTION_NONE && (p.loss != nullptr || p.z_loss_out != nullptr);
  const int row_blocks = row_blocks_of(p.batch, f.sms);
  const double* normaliser = nullptr;
  if (mean && p.batch > 0) {
    detail::launch_shard_normaliser(p, row_blocks, base + l.prepass, base + l.normaliser, stream);
    normaliser = base + l.normaliser;
  }
  if (p.batch > 0) {
    const detail::finish_workspace w{normaliser, reduced ? base + l.loss : nullptr,
                                     reduced ? base + l.z : nullptr};
    detail::launch_shard_rows(p, row_blocks, w, stream);
  }
  if (reduced) {
    // Zero rows still have a sum (0) and a mean (the empty-mean value): written, from no partial.
    const int64_t partials = p.batch > 0 ? row_blocks : 0;
    detail::launch_shard_final_sums(p, base + l.loss, base + l.z, partials, normaliser, stream);
  }
  if (p.grad != nullptr && p.batch > 0) {
    detail::launch_shard_gradient(p, normaliser, grid_of(p.batch, f.sms), stream);
  }
  return cudaGetLastError();
}

}  // namespace fusedloss::kernels
