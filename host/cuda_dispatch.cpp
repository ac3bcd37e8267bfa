// The CUDA path: turns validated params into kernel launches on the caller's stream and workspace.
#include "cuda_dispatch.hpp"

#include <cuda_runtime_api.h>

#include <cmath>

#include "cuda_status.hpp"
#include "dtype.hpp"
#include "element_losses.hpp"
#include "linear_cross_entropy.hpp"
#include "row_losses.hpp"
#include "scale.hpp"
#include "validate.hpp"
#include "vocab_parallel.hpp"

namespace fusedloss::host::cuda {
namespace {

fusedloss_status check_workspace(size_t needed, const void* workspace, size_t workspace_bytes,
                                 fusedloss_error* err) {
  if (workspace_bytes < needed || (needed > 0 && workspace == nullptr)) {
    return report(err, FUSEDLOSS_INVALID_ARGUMENT, "workspace",
                  "workspace: %zu bytes at %p given, the call needs %zu (ask the workspace_size "
                  "call)",
                  workspace_bytes, workspace, needed);
  }
  return FUSEDLOSS_SUCCESS;
}

// The fields every element loss shares; the caller adds its loss's own.
template <class Params>
kernels::element_problem element_problem(const Params& p, kernels::element_loss kind, call c) {
  kernels::element_problem e{};
  e.kind = kind;
  e.numel = p.numel;
  e.num_classes = 1;
  e.logits = p.logits;
  e.logits_dtype = p.logits_dtype;
  e.targets = p.targets;
  e.targets_dtype = p.targets_dtype;
  e.reduction = p.reduction;
  e.empty_value = p.empty_mean == FUSEDLOSS_EMPTY_MEAN_ZERO ? 0.0f : NAN;
  e.loss = c != call::backward ? static_cast<float*>(p.loss) : nullptr;
  e.grad = c != call::forward ? p.grad_logits : nullptr;
  e.grad_loss = c == call::backward ? static_cast<const float*>(p.grad_loss) : nullptr;
  e.grad_scale = p.grad_scale;
  e.grad_scale_ptr = p.grad_scale_ptr;
  return e;
}

template <class Params>
fusedloss_status element_workspace(const Params& p, size_t* bytes, fusedloss_error* err) {
  const cudaError_t e = kernels::element_workspace_bytes(p.numel, 0, bytes);
  return e == cudaSuccess ? succeed(err) : FUSEDLOSS_CUDA_FAILURE(err, e);
}

fusedloss_status run_element(const kernels::element_problem& problem, void* workspace,
                             size_t workspace_bytes, void* stream, fusedloss_error* err) {
  size_t needed = 0;
  cudaError_t e = kernels::element_workspace_bytes(problem.numel, problem.max_blocks, &needed);
  if (e != cudaSuccess) return FUSEDLOSS_CUDA_FAILURE(err, e);
  if (const fusedloss_status s = check_workspace(needed, workspace, workspace_bytes, err);
      s != FUSEDLOSS_SUCCESS) {
    return s;
  }
  e = kernels::run_element_loss(problem, workspace, static_cast<cudaStream_t>(stream));
  return e == cudaSuccess ? succeed(err) : FUSEDLOSS_CUDA_FAILURE(err, e);
}

// The fields both row losses share; the caller adds its loss's own. The workspace query passes
// the params of any call; the size it gets covers all three.
template <class Params>
kernels::row_problem row_problem(const Params& p, kernels::row_loss kind, call c) {
  kernels::row_problem e{};
  e.kind = kind;
  e.batch = p.batch;
  e.num_classes = p.num_classes;
  e.spatial = p.spatial;
  e.row_stride = p.row_stride;
  e.grad_row_stride = p.grad_row_stride;
  e.logits = p.logits;
  e.logits_dtype = p.logits_dtype;
  e.targets = p.targets;
  e.targets_dtype = p.targets_dtype;
  e.ignore_index = p.ignore_index;
  e.reduction = p.reduction;
  e.empty_value = p.empty_mean == FUSEDLOSS_EMPTY_MEAN_ZERO ? 0.0f : NAN;
  e.loss = c != call::backward ? static_cast<float*>(p.loss) : nullptr;
  e.lse = static_cast<float*>(p.lse);
  e.read_lse = c == call::backward && p.lse != nullptr;
  e.grad = c != call::forward ? p.grad_logits : nullptr;
  e.grad_loss = c == call::backward ? static_cast<const float*>(p.grad_loss) : nullptr;
  e.grad_scale = p.grad_scale;
  e.grad_scale_ptr = p.grad_scale_ptr;
  // The loss-computing calls count; a backward that follows its forward would count twice.
  e.invalid_target_count = c != call::backward ? p.invalid_target_count : nullptr;
  e.tier = kernels::row_tier::automatic;
  return e;
}

}  // namespace

kernels::row_problem cross_entropy_problem(const fusedloss_cross_entropy_params& p, call c) {
  kernels::row_problem e =
      row_problem(p,
                  is_integer(p.targets_dtype) ? kernels::row_loss::cross_entropy
                                              : kernels::row_loss::probability_cross_entropy,
                  c);
  e.weight = p.weight;
  e.label_smoothing = static_cast<float>(p.label_smoothing);
  e.z_loss = static_cast<float>(p.z_loss);
  e.softcap = static_cast<float>(p.softcap);
  e.z_loss_out = c != call::backward ? static_cast<float*>(p.z_loss_out) : nullptr;
  return e;
}

kernels::row_problem softmax_focal_problem(const fusedloss_softmax_focal_params& p, call c) {
  kernels::row_problem e = row_problem(p, kernels::row_loss::softmax_focal, c);
  e.weight = p.alpha;
  e.gamma = static_cast<float>(p.gamma);
  return e;
}

namespace {

fusedloss_status row_workspace(const kernels::row_problem& problem, size_t* bytes,
                               fusedloss_error* err) {
  const cudaError_t e = kernels::row_workspace_bytes(problem, bytes);
  return e == cudaSuccess ? succeed(err) : FUSEDLOSS_CUDA_FAILURE(err, e);
}

// The call is planned once, by run_row_loss; only a refusal plans it again, for the size the
// message names (the host never forces a tier, so a refusal is the workspace's).
// The status of a launch `e` that checked its own workspace: a cudaErrorInvalidValue is sized again
// (by `size`, only then) to say what the workspace lacks, when that is what it refused.
template <class Size>
fusedloss_status launch_status(cudaError_t e, const Size& size, const void* workspace,
                               size_t workspace_bytes, fusedloss_error* err) {
  if (e == cudaErrorInvalidValue) {
    size_t needed = 0;
    const cudaError_t sized = size(&needed);
    if (sized != cudaSuccess) return FUSEDLOSS_CUDA_FAILURE(err, sized);
    if (const fusedloss_status s = check_workspace(needed, workspace, workspace_bytes, err);
        s != FUSEDLOSS_SUCCESS) {
      return s;
    }
  }
  return e == cudaSuccess ? succeed(err) : FUSEDLOSS_CUDA_FAILURE(err, e);
}

fusedloss_status run_rows(const kernels::row_problem& problem, void* workspace,
                          size_t workspace_bytes, void* stream, fusedloss_error* err) {
  const cudaError_t e =
      kernels::run_row_loss(problem, workspace, workspace_bytes, static_cast<cudaStream_t>(stream));
  return launch_status(
      e, [&](size_t* bytes) { return kernels::row_workspace_bytes(problem, bytes); }, workspace,
      workspace_bytes, err);
}

// The shard calls' work; the invalid-target counter goes to the rank whose slice starts at class
// 0, so that the ranks' counters add up to each invalid target once.
kernels::shard_problem shard_problem(const fusedloss_cross_entropy_shard_params& p) {
  kernels::shard_problem e{};
  e.batch = p.batch;
  e.num_classes = p.num_classes;
  e.vocab_start = p.vocab_start;
  e.vocab_size = p.vocab_size;
  e.row_stride = p.row_stride;
  e.grad_row_stride = p.grad_row_stride;
  e.logits = p.logits;
  e.logits_dtype = p.logits_dtype;
  e.targets = p.targets;
  e.targets_dtype = p.targets_dtype;
  e.weight = p.weight;
  e.ignore_index = p.ignore_index;
  e.label_smoothing = static_cast<float>(p.label_smoothing);
  e.z_loss = static_cast<float>(p.z_loss);
  e.softcap = static_cast<float>(p.softcap);
  e.reduction = p.reduction;
  e.empty_value = p.empty_mean == FUSEDLOSS_EMPTY_MEAN_ZERO ? 0.0f : NAN;
  e.summary = static_cast<float*>(p.summary);
  e.loss = static_cast<float*>(p.loss);
  e.lse = static_cast<float*>(p.lse);
  e.z_loss_out = static_cast<float*>(p.z_loss_out);
  e.grad = p.grad_logits;
  e.grad_scale = p.grad_scale;
  e.grad_scale_ptr = p.grad_scale_ptr;
  e.invalid_target_count = p.vocab_start == 0 ? p.invalid_target_count : nullptr;
  return e;
}

// Linear + cross-entropy's work for call `c`; the workspace query passes forward_backward (one
// size serves the three calls).
kernels::linear_problem linear_problem(const fusedloss_linear_cross_entropy_params& p, call c) {
  kernels::linear_problem e{};
  e.pass = c == call::forward    ? kernels::linear_pass::forward
           : c == call::backward ? kernels::linear_pass::backward
                                 : kernels::linear_pass::forward_backward;
  e.batch = p.batch;
  e.hidden = p.hidden;
  e.num_classes = p.num_classes;
  e.input = p.input;
  e.input_row_stride = p.input_row_stride;
  e.dtype = p.input_dtype;
  e.linear_weight = p.linear_weight;
  e.linear_bias = p.linear_bias;
  e.grad_input = p.grad_input;
  e.grad_input_row_stride = p.grad_input_row_stride;
  e.grad_linear_weight = p.grad_linear_weight;
  e.grad_linear_bias = p.grad_linear_bias;
  e.grad_linear_dtype = p.grad_linear_dtype;
  e.accumulate_grad_linear = p.accumulate_grad_linear != 0;
  e.reduction = p.reduction;
  e.empty_value = p.empty_mean == FUSEDLOSS_EMPTY_MEAN_ZERO ? 0.0f : NAN;
  e.loss = static_cast<float*>(p.loss);
  e.lse = static_cast<float*>(p.lse);
  e.z_loss_out = static_cast<float*>(p.z_loss_out);
  e.grad_loss = static_cast<const float*>(p.grad_loss);
  e.grad_scale = p.grad_scale;
  e.grad_scale_ptr = p.grad_scale_ptr;
  kernels::row_problem& rows = e.rows;
  rows.kind = kernels::row_loss::cross_entropy;
  rows.targets = p.targets;
  rows.targets_dtype = p.targets_dtype;
  rows.weight = p.weight;
  rows.ignore_index = p.ignore_index;
  rows.label_smoothing = static_cast<float>(p.label_smoothing);
  rows.z_loss = static_cast<float>(p.z_loss);
  rows.softcap = static_cast<float>(p.softcap);
  // As for cross-entropy: a backward that follows its forward would count twice.
  rows.invalid_target_count = c != call::backward ? p.invalid_target_count : nullptr;
  rows.tier = kernels::row_tier::automatic;
  return e;
}

// The smallest workspace linear + cross-entropy runs in: its fixed part and one row's chunk.
size_t linear_minimum_bytes(const kernels::linear_workspace& sizes, int64_t batch) {
  return sizes.fixed_bytes + (batch > 0 ? sizes.row_bytes : 0);
}

}  // namespace

fusedloss_status workspace_size(const fusedloss_bce_params& p, size_t* bytes,
                                fusedloss_error* err) {
  return element_workspace(p, bytes, err);
}
fusedloss_status workspace_size(const fusedloss_sigmoid_focal_params& p, size_t* bytes,
                                fusedloss_error* err) {
  return element_workspace(p, bytes, err);
}
fusedloss_status workspace_size(const fusedloss_mse_params& p, size_t* bytes,
                                fusedloss_error* err) {
  return element_workspace(p, bytes, err);
}
fusedloss_status workspace_size(const fusedloss_cross_entropy_params& p, size_t* bytes,
                                fusedloss_error* err) {
  return row_workspace(cross_entropy_problem(p, call::forward_backward), bytes, err);
}
fusedloss_status workspace_size(const fusedloss_softmax_focal_params& p, size_t* bytes,
                                fusedloss_error* err) {
  return row_workspace(softmax_focal_problem(p, call::forward_backward), bytes, err);
}

fusedloss_status workspace_size(const fusedloss_cross_entropy_shard_params& p, size_t* bytes,
                                fusedloss_error* err) {
  const cudaError_t e = kernels::shard_workspace_bytes(shard_problem(p), bytes);
  return e == cudaSuccess ? succeed(err) : FUSEDLOSS_CUDA_FAILURE(err, e);
}

fusedloss_status workspace_size(const fusedloss_linear_cross_entropy_params& p, size_t* bytes,
                                fusedloss_error* err) {
  // The query checks the params as the calls do (the chunk depends on the shape and options).
  fusedloss_linear_cross_entropy_params resolved;
  if (const fusedloss_status s = validate(&p, call::forward_backward, resolved, err);
      s != FUSEDLOSS_SUCCESS) {
    return s;
  }
  kernels::linear_workspace sizes{};
  const cudaError_t e =
      kernels::linear_workspace_sizes(linear_problem(resolved, call::forward_backward), &sizes);
  if (e != cudaSuccess) return FUSEDLOSS_CUDA_FAILURE(err, e);
  const size_t budget =
      resolved.max_workspace_bytes != 0 ? resolved.max_workspace_bytes : size_t{512} << 20;
  const size_t minimum = linear_minimum_bytes(sizes, resolved.batch);
  if (budget < minimum) {
    return report(
        err, FUSEDLOSS_INVALID_ARGUMENT, "max_workspace_bytes",
        "max_workspace_bytes: %zu bytes hold no chunk; a chunk of one row of %lld classes "
        "needs %zu",
        budget, static_cast<long long>(resolved.num_classes), minimum);
  }
  const int64_t rows = kernels::linear_chunk_rows(sizes, resolved.batch, budget);
  *bytes = sizes.fixed_bytes + static_cast<size_t>(rows) * sizes.row_bytes;
  return succeed(err);
}

fusedloss_status run(const fusedloss_bce_params& p, call c, void* workspace, size_t workspace_bytes,
                     void* stream, fusedloss_error* err) {
  kernels::element_problem e = element_problem(p, kernels::element_loss::bce, c);
  e.num_classes = p.num_classes;
  e.weight = p.weight;
  e.weight_per_class = p.weight_layout == FUSEDLOSS_WEIGHT_PER_CLASS;
  e.pos_weight = p.pos_weight;
  return run_element(e, workspace, workspace_bytes, stream, err);
}

fusedloss_status run(const fusedloss_sigmoid_focal_params& p, call c, void* workspace,
                     size_t workspace_bytes, void* stream, fusedloss_error* err) {
  kernels::element_problem e = element_problem(p, kernels::element_loss::sigmoid_focal, c);
  e.focal = kernels::focal_constants_of(static_cast<float>(p.alpha), static_cast<float>(p.gamma));
  return run_element(e, workspace, workspace_bytes, stream, err);
}

fusedloss_status run(const fusedloss_mse_params& p, call c, void* workspace, size_t workspace_bytes,
                     void* stream, fusedloss_error* err) {
  return run_element(element_problem(p, kernels::element_loss::mse, c), workspace, workspace_bytes,
                     stream, err);
}

fusedloss_status run(const fusedloss_cross_entropy_params& p, call c, void* workspace,
                     size_t workspace_bytes, void* stream, fusedloss_error* err) {
  return run_rows(cross_entropy_problem(p, c), workspace, workspace_bytes, stream, err);
}

fusedloss_status run(const fusedloss_softmax_focal_params& p, call c, void* workspace,
                     size_t workspace_bytes, void* stream, fusedloss_error* err) {
  return run_rows(softmax_focal_problem(p, c), workspace, workspace_bytes, stream, err);
}

fusedloss_status run(const fusedloss_linear_cross_entropy_params& p, call c, void* workspace,
                     size_t workspace_bytes, void* stream, fusedloss_error* err) {
  const kernels::linear_problem problem = linear_problem(p, c);
  kernels::linear_workspace sizes{};
  const cudaError_t e = kernels::linear_workspace_sizes(problem, &sizes);
  if (e != cudaSuccess) return FUSEDLOSS_CUDA_FAILURE(err, e);
  // cuBLASLt's workspace and the chunk buffer (a GEMM operand) lie in it.
  if (reinterpret_cast<uintptr_t>(workspace) % 256 != 0) {
    return report(err, FUSEDLOSS_INVALID_ARGUMENT, "workspace",
                  "workspace: %p is not 256-byte aligned (cuBLASLt's operands live in it)",
                  workspace);
  }
  if (const fusedloss_status s =
          check_workspace(linear_minimum_bytes(sizes, p.batch), workspace, workspace_bytes, err);
      s != FUSEDLOSS_SUCCESS) {
    return s;
  }
  const kernels::linear_status s = kernels::run_linear_cross_entropy(
      problem, workspace, workspace_bytes, static_cast<cudaStream_t>(stream));
  if (s.cuda != cudaSuccess) return FUSEDLOSS_CUDA_FAILURE(err, s.cuda);
  if (s.blas != 0) {
    return report(err, FUSEDLOSS_CUDA_ERROR, nullptr, "%s: %s (cuBLASLt status %d)", s.call,
                  s.message != nullptr ? s.message : "unknown status", s.blas);
  }
  return succeed(err);
}

fusedloss_status run(const fusedloss_cross_entropy_shard_params& p, shard_step step,
                     void* workspace, size_t workspace_bytes, void* stream, fusedloss_error* err) {
  // Each step checks its workspace before it launches: planned once, sized again on a refusal.
  const kernels::shard_problem problem = shard_problem(p);
  const auto cuda_stream = static_cast<cudaStream_t>(stream);
  cudaError_t e = cudaSuccess;
  switch (step) {
    case shard_step::partial:
      e = kernels::run_shard_partial(problem, workspace, workspace_bytes, cuda_stream);
      break;
    case shard_step::rescale:
      e = kernels::run_shard_rescale(problem, workspace, workspace_bytes, cuda_stream);
      break;
    case shard_step::finish:
      e = kernels::run_shard_finish(problem, workspace, workspace_bytes, cuda_stream);
      break;
  }
  return launch_status(
      e, [&](size_t* bytes) { return kernels::shard_workspace_bytes(problem, bytes); }, workspace,
      workspace_bytes, err);
}

fusedloss_status scale_in_place(void* data, fusedloss_dtype dtype, int64_t numel, const void* scale,
                                fusedloss_dtype scale_dtype, void* stream, fusedloss_error* err) {
  const cudaError_t e = kernels::scale_in_place(data, dtype, numel, scale, scale_dtype,
                                                static_cast<cudaStream_t>(stream));
  return e == cudaSuccess ? succeed(err) : FUSEDLOSS_CUDA_FAILURE(err, e);
}

}  // namespace fusedloss::host::cuda
