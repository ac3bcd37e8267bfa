// The C ABI: validate, then dispatch to the CPU reference or (once a loss has one) its CUDA kernel.
#include <cstring>

#include "cuda_dispatch.hpp"
#include "device_memory.hpp"
#include "dtype.hpp"
#include "fusedloss/fusedloss.h"
#include "reference/reference.hpp"
#include "validate.hpp"

namespace fusedloss::host {
namespace {

// The reference entry point of each loss.
void run_reference(const fusedloss_bce_params& p, call c, int64_t& /*invalid_targets*/) {
  reference::bce(p, c);
}
void run_reference(const fusedloss_sigmoid_focal_params& p, call c, int64_t& /*invalid_targets*/) {
  reference::sigmoid_focal(p, c);
}
void run_reference(const fusedloss_mse_params& p, call c, int64_t& /*invalid_targets*/) {
  reference::mse(p, c);
}
void run_reference(const fusedloss_cross_entropy_params& p, call c, int64_t& invalid_targets) {
  invalid_targets = reference::cross_entropy(p, c);
}
void run_reference(const fusedloss_softmax_focal_params& p, call c, int64_t& invalid_targets) {
  invalid_targets = reference::softmax_focal(p, c);
}
void run_reference(const fusedloss_linear_cross_entropy_params& p, call c,
                   int64_t& invalid_targets) {
  invalid_targets = reference::linear_cross_entropy(p, c);
}

template <class Params>
fusedloss_status run(const Params* p, call c, void* workspace, size_t workspace_bytes, void* stream,
                     fusedloss_error* err) {
  Params resolved;
  if (const fusedloss_status s = validate(p, c, resolved, err); s != FUSEDLOSS_SUCCESS) return s;
  if (resolved.device == FUSEDLOSS_DEVICE_CUDA) {
    if (const fusedloss_status s = validate_cuda_workspace(workspace, err);
        s != FUSEDLOSS_SUCCESS) {
      return s;
    }
    return cuda::run(resolved, c, workspace, workspace_bytes, stream, err);
  }
  int64_t invalid_targets = 0;
  run_reference(resolved, c, invalid_targets);
  if (invalid_targets > 0) {
    return report(err, FUSEDLOSS_INVALID_TARGET, "targets",
                  "targets: %lld class index(es) neither ignore_index nor in [0, num_classes); "
                  "those rows were treated as ignored",
                  static_cast<long long>(invalid_targets));
  }
  return succeed(err);
}

// The CPU path of shard call `step`; only finish can report invalid targets.
int64_t run_reference(const fusedloss_cross_entropy_shard_params& p, shard_step step) {
  switch (step) {
    case shard_step::partial:
      reference::cross_entropy_shard_partial(p);
      return 0;
    case shard_step::rescale:
      reference::cross_entropy_shard_rescale(p);
      return 0;
    case shard_step::finish:
      return reference::cross_entropy_shard_finish(p);
  }
  return 0;
}

fusedloss_status run(const fusedloss_cross_entropy_shard_params* p, shard_step step,
                     void* workspace, size_t workspace_bytes, void* stream, fusedloss_error* err) {
  fusedloss_cross_entropy_shard_params resolved;
  if (const fusedloss_status s = validate(p, step, resolved, err); s != FUSEDLOSS_SUCCESS) {
    return s;
  }
  if (resolved.device == FUSEDLOSS_DEVICE_CUDA) {
    if (const fusedloss_status s = validate_cuda_workspace(workspace, err);
        s != FUSEDLOSS_SUCCESS) {
      return s;
    }
    return cuda::run(resolved, step, workspace, workspace_bytes, stream, err);
  }
  if (const int64_t invalid = run_reference(resolved, step); invalid > 0) {
    return report(err, FUSEDLOSS_INVALID_TARGET, "targets",
                  "targets: %lld class index(es) neither ignore_index nor in [0, vocab_size); "
                  "those rows were treated as ignored",
                  static_cast<long long>(invalid));
  }
  return succeed(err);
}

template <class Params>
fusedloss_status workspace_size(const Params* p, size_t* bytes, fusedloss_error* err) {
  if (const fusedloss_status s = validate_header(p, err); s != FUSEDLOSS_SUCCESS) return s;
  if (bytes == nullptr) return report(err, FUSEDLOSS_INVALID_ARGUMENT, "bytes", "bytes: null");
  if (p->device == FUSEDLOSS_DEVICE_CUDA) return cuda::workspace_size(*p, bytes, err);
  *bytes = 0;  // the reference needs none
  return succeed(err);
}

// Defaults shared by every params struct: CPU, float32 logits and targets, no outputs, scale 1.
template <class Params>
void init_common(Params* p) {
  std::memset(p, 0, sizeof *p);
  p->struct_size = sizeof *p;
  p->device = FUSEDLOSS_DEVICE_CPU;
  p->logits_dtype = FUSEDLOSS_FLOAT32;
  p->reduction = FUSEDLOSS_REDUCTION_MEAN;
  p->empty_mean = FUSEDLOSS_EMPTY_MEAN_NAN;
  p->grad_scale = 1.0f;
}

}  // namespace
}  // namespace fusedloss::host

using fusedloss::call;
using fusedloss::shard_step;
using fusedloss::host::init_common;

extern "C" {

void fusedloss_linear_cross_entropy_params_init(fusedloss_linear_cross_entropy_params* p) {
  std::memset(p, 0, sizeof *p);
  p->struct_size = sizeof *p;
  p->device = FUSEDLOSS_DEVICE_CPU;
  p->input_dtype = FUSEDLOSS_FLOAT32;
  p->targets_dtype = FUSEDLOSS_INT64;
  p->ignore_index = -100;
  p->reduction = FUSEDLOSS_REDUCTION_MEAN;
  p->empty_mean = FUSEDLOSS_EMPTY_MEAN_NAN;
  p->grad_linear_dtype = FUSEDLOSS_FLOAT32;
  p->grad_scale = 1.0f;
}

void fusedloss_bce_params_init(fusedloss_bce_params* p) {
  init_common(p);
  p->targets_dtype = FUSEDLOSS_FLOAT32;
  p->num_classes = 1;
  p->weight_layout = FUSEDLOSS_WEIGHT_PER_ELEMENT;
}

void fusedloss_sigmoid_focal_params_init(fusedloss_sigmoid_focal_params* p) {
  init_common(p);
  p->targets_dtype = FUSEDLOSS_FLOAT32;
  p->alpha = 0.25;
  p->gamma = 2.0;
  p->reduction = FUSEDLOSS_REDUCTION_NONE;  // torchvision's default
}

void fusedloss_mse_params_init(fusedloss_mse_params* p) {
  init_common(p);
  p->targets_dtype = FUSEDLOSS_FLOAT32;
}

void fusedloss_cross_entropy_params_init(fusedloss_cross_entropy_params* p) {
  init_common(p);
  p->targets_dtype = FUSEDLOSS_INT64;
  p->spatial = 1;
  p->ignore_index = -100;
}

void fusedloss_softmax_focal_params_init(fusedloss_softmax_focal_params* p) {
  init_common(p);
  p->targets_dtype = FUSEDLOSS_INT64;
  p->spatial = 1;
  p->ignore_index = -100;
  p->gamma = 2.0;
}

void fusedloss_cross_entropy_shard_params_init(fusedloss_cross_entropy_shard_params* p) {
  init_common(p);
  p->targets_dtype = FUSEDLOSS_INT64;
  p->num_classes = 1;
  p->vocab_size = 1;
  p->ignore_index = -100;
}

fusedloss_status fusedloss_bce_workspace_size(const fusedloss_bce_params* p, size_t* bytes,
                                              fusedloss_error* err) {
  return fusedloss::host::workspace_size(p, bytes, err);
}

fusedloss_status fusedloss_bce_forward(const fusedloss_bce_params* p, void* workspace,
                                       size_t workspace_bytes, void* stream, fusedloss_error* err) {
  return fusedloss::host::run(p, call::forward, workspace, workspace_bytes, stream, err);
}

fusedloss_status fusedloss_bce_backward(const fusedloss_bce_params* p, void* workspace,
                                        size_t workspace_bytes, void* stream,
                                        fusedloss_error* err) {
  return fusedloss::host::run(p, call::backward, workspace, workspace_bytes, stream, err);
}

fusedloss_status fusedloss_bce_forward_backward(const fusedloss_bce_params* p, void* workspace,
                                                size_t workspace_bytes, void* stream,
                                                fusedloss_error* err) {
  return fusedloss::host::run(p, call::forward_backward, workspace, workspace_bytes, stream, err);
}

fusedloss_status fusedloss_sigmoid_focal_workspace_size(const fusedloss_sigmoid_focal_params* p,
                                                        size_t* bytes, fusedloss_error* err) {
  return fusedloss::host::workspace_size(p, bytes, err);
}

fusedloss_status fusedloss_sigmoid_focal_forward(const fusedloss_sigmoid_focal_params* p,
                                                 void* workspace, size_t workspace_bytes,
                                                 void* stream, fusedloss_error* err) {
  return fusedloss::host::run(p, call::forward, workspace, workspace_bytes, stream, err);
}

fusedloss_status fusedloss_sigmoid_focal_backward(const fusedloss_sigmoid_focal_params* p,
                                                  void* workspace, size_t workspace_bytes,
                                                  void* stream, fusedloss_error* err) {
  return fusedloss::host::run(p, call::backward, workspace, workspace_bytes, stream, err);
}

fusedloss_status fusedloss_sigmoid_focal_forward_backward(const fusedloss_sigmoid_focal_params* p,
                                                          void* workspace, size_t workspace_bytes,
                                                          void* stream, fusedloss_error* err) {
  return fusedloss::host::run(p, call::forward_backward, workspace, workspace_bytes, stream, err);
}

fusedloss_status fusedloss_mse_workspace_size(const fusedloss_mse_params* p, size_t* bytes,
                                              fusedloss_error* err) {
  return fusedloss::host::workspace_size(p, bytes, err);
}

fusedloss_status fusedloss_mse_forward(const fusedloss_mse_params* p, void* workspace,
                                       size_t workspace_bytes, void* stream, fusedloss_error* err) {
  return fusedloss::host::run(p, call::forward, workspace, workspace_bytes, stream, err);
}

fusedloss_status fusedloss_mse_backward(const fusedloss_mse_params* p, void* workspace,
                                        size_t workspace_bytes, void* stream,
                                        fusedloss_error* err) {
  return fusedloss::host::run(p, call::backward, workspace, workspace_bytes, stream, err);
}

fusedloss_status fusedloss_mse_forward_backward(const fusedloss_mse_params* p, void* workspace,
                                                size_t workspace_bytes, void* stream,
                                                fusedloss_error* err) {
  return fusedloss::host::run(p, call::forward_backward, workspace, workspace_bytes, stream, err);
}

fusedloss_status fusedloss_cross_entropy_workspace_size(const fusedloss_cross_entropy_params* p,
                                                        size_t* bytes, fusedloss_error* err) {
  return fusedloss::host::workspace_size(p, bytes, err);
}

fusedloss_status fusedloss_cross_entropy_forward(const fusedloss_cross_entropy_params* p,
                                                 void* workspace, size_t workspace_bytes,
                                                 void* stream, fusedloss_error* err) {
  return fusedloss::host::run(p, call::forward, workspace, workspace_bytes, stream, err);
}

fusedloss_status fusedloss_cross_entropy_backward(const fusedloss_cross_entropy_params* p,
                                                  void* workspace, size_t workspace_bytes,
                                                  void* stream, fusedloss_error* err) {
  return fusedloss::host::run(p, call::backward, workspace, workspace_bytes, stream, err);
}

fusedloss_status fusedloss_cross_entropy_forward_backward(const fusedloss_cross_entropy_params* p,
                                                          void* workspace, size_t workspace_bytes,
                                                          void* stream, fusedloss_error* err) {
  return fusedloss::host::run(p, call::forward_backward, workspace, workspace_bytes, stream, err);
}

fusedloss_status fusedloss_softmax_focal_workspace_size(const fusedloss_softmax_focal_params* p,
                                                        size_t* bytes, fusedloss_error* err) {
  return fusedloss::host::workspace_size(p, bytes, err);
}

fusedloss_status fusedloss_softmax_focal_forward(const fusedloss_softmax_focal_params* p,
                                                 void* workspace, size_t workspace_bytes,
                                                 void* stream, fusedloss_error* err) {
  return fusedloss::host::run(p, call::forward, workspace, workspace_bytes, stream, err);
}

fusedloss_status fusedloss_softmax_focal_backward(const fusedloss_softmax_focal_params* p,
                                                  void* workspace, size_t workspace_bytes,
                                                  void* stream, fusedloss_error* err) {
  return fusedloss::host::run(p, call::backward, workspace, workspace_bytes, stream, err);
}

fusedloss_status fusedloss_softmax_focal_forward_backward(const fusedloss_softmax_focal_params* p,
                                                          void* workspace, size_t workspace_bytes,
                                                          void* stream, fusedloss_error* err) {
  return fusedloss::host::run(p, call::forward_backward, workspace, workspace_bytes, stream, err);
}

fusedloss_status fusedloss_linear_cross_entropy_workspace_size(
    const fusedloss_linear_cross_entropy_params* p, size_t* bytes, fusedloss_error* err) {
  return fusedloss::host::workspace_size(p, bytes, err);
}

fusedloss_status fusedloss_linear_cross_entropy_forward(
    const fusedloss_linear_cross_entropy_params* p, void* workspace, size_t workspace_bytes,
    void* stream, fusedloss_error* err) {
  return fusedloss::host::run(p, call::forward, workspace, workspace_bytes, stream, err);
}

fusedloss_status fusedloss_linear_cross_entropy_backward(
    const fusedloss_linear_cross_entropy_params* p, void* workspace, size_t workspace_bytes,
    void* stream, fusedloss_error* err) {
  return fusedloss::host::run(p, call::backward, workspace, workspace_bytes, stream, err);
}

fusedloss_status fusedloss_linear_cross_entropy_forward_backward(
    const fusedloss_linear_cross_entropy_params* p, void* workspace, size_t workspace_bytes,
    void* stream, fusedloss_error* err) {
  return fusedloss::host::run(p, call::forward_backward, workspace, workspace_bytes, stream, err);
}

fusedloss_status fusedloss_cross_entropy_shard_workspace_size(
    const fusedloss_cross_entropy_shard_params* p, size_t* bytes, fusedloss_error* err) {
  return fusedloss::host::workspace_size(p, bytes, err);
}

fusedloss_status fusedloss_cross_entropy_shard_partial(
    const fusedloss_cross_entropy_shard_params* p, void* workspace, size_t workspace_bytes,
    void* stream, fusedloss_error* err) {
  return fusedloss::host::run(p, shard_step::partial, workspace, workspace_bytes, stream, err);
}

fusedloss_status fusedloss_cross_entropy_shard_rescale(
    const fusedloss_cross_entropy_shard_params* p, void* workspace, size_t workspace_bytes,
    void* stream, fusedloss_error* err) {
  return fusedloss::host::run(p, shard_step::rescale, workspace, workspace_bytes, stream, err);
}

fusedloss_status fusedloss_cross_entropy_shard_finish(const fusedloss_cross_entropy_shard_params* p,
                                                      void* workspace, size_t workspace_bytes,
                                                      void* stream, fusedloss_error* err) {
  return fusedloss::host::run(p, shard_step::finish, workspace, workspace_bytes, stream, err);
}

fusedloss_status fusedloss_scale_in_place(void* data, fusedloss_dtype dtype, int64_t numel,
                                          const void* scale, fusedloss_dtype scale_dtype,
                                          fusedloss_device device, void* stream,
                                          fusedloss_error* err) {
  using fusedloss::host::load;
  if (const fusedloss_status s =
          fusedloss::host::validate_scale(data, dtype, numel, scale, scale_dtype, device, err);
      s != FUSEDLOSS_SUCCESS) {
    return s;
  }
  if (device == FUSEDLOSS_DEVICE_CUDA) {
    return fusedloss::host::cuda::scale_in_place(data, dtype, numel, scale, scale_dtype, stream,
                                                 err);
  }
  const double s = load(scale, scale_dtype, 0);
  if (s != 1.0) {
    for (int64_t i = 0; i < numel; ++i) {
      fusedloss::host::store(data, dtype, i, load(data, dtype, i) * s);
    }
  }
  return fusedloss::host::succeed(err);
}

fusedloss_status fusedloss_read_and_clear_counter(int64_t* counter, fusedloss_device device,
                                                  void* stream, int64_t* value,
                                                  fusedloss_error* err) {
  using fusedloss::host::report;
  using fusedloss::host::succeed;
  if (counter == nullptr)
    return report(err, FUSEDLOSS_INVALID_ARGUMENT, "counter", "counter: null");
  if (value == nullptr) return report(err, FUSEDLOSS_INVALID_ARGUMENT, "value", "value: null");
  if (fusedloss::host::stored(device) == FUSEDLOSS_DEVICE_CPU) {
    *value = *counter;
    *counter = 0;
    return succeed(err);
  }
  if (fusedloss::host::stored(device) != FUSEDLOSS_DEVICE_CUDA) {
    return report(err, FUSEDLOSS_INVALID_ARGUMENT, "device", "device: unknown device %d",
                  fusedloss::host::stored(device));
  }
  if (!fusedloss_built_with_cuda()) {
    return report(err, FUSEDLOSS_NOT_IMPLEMENTED, "device",
                  "device: fusedloss was built without CUDA");
  }
  return fusedloss::host::read_and_clear_device_counter(counter, stream, value, err);
}

int fusedloss_version(void) { return FUSEDLOSS_VERSION; }

const char* fusedloss_status_string(fusedloss_status status) {
  switch (status) {
    case FUSEDLOSS_SUCCESS:
      return "success";
    case FUSEDLOSS_INVALID_ARGUMENT:
      return "invalid argument";
    case FUSEDLOSS_INVALID_TARGET:
      return "invalid target";
    case FUSEDLOSS_NOT_IMPLEMENTED:
      return "not implemented";
    case FUSEDLOSS_CUDA_ERROR:
      return "CUDA error";
  }
  return "unknown status";
}

const char* fusedloss_dtype_string(fusedloss_dtype dtype) {
  switch (dtype) {
    case FUSEDLOSS_FLOAT32:
      return "float32";
    case FUSEDLOSS_FLOAT16:
      return "float16";
    case FUSEDLOSS_BFLOAT16:
      return "bfloat16";
    case FUSEDLOSS_FLOAT64:
      return "float64";
    case FUSEDLOSS_INT32:
      return "int32";
    case FUSEDLOSS_INT64:
      return "int64";
  }
  return "unknown";
}

const char* fusedloss_reduction_string(fusedloss_reduction reduction) {
  switch (reduction) {
    case FUSEDLOSS_REDUCTION_NONE:
      return "none";
    case FUSEDLOSS_REDUCTION_MEAN:
      return "mean";
    case FUSEDLOSS_REDUCTION_SUM:
      return "sum";
  }
  return "unknown";
}

}  // extern "C"
