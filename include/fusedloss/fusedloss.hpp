/**
 * @file fusedloss.hpp
 * @brief The C++ layer over the C ABI: the same params structs and calls, with errors thrown as
 * fusedloss::error instead of returned.
 *
 * @code
 * auto p = fusedloss::make_cross_entropy_params();
 * p.batch = n; p.num_classes = c;
 * p.logits = logits; p.logits_dtype = FUSEDLOSS_BFLOAT16;
 * p.targets = targets; p.targets_dtype = FUSEDLOSS_INT64;
 * p.label_smoothing = 0.1;
 * p.loss = &loss; p.grad_logits = grad;
 * fusedloss::forward_backward(p);  // CPU reference: no workspace, no stream
 * @endcode
 */
#ifndef FUSEDLOSS_FUSEDLOSS_HPP
#define FUSEDLOSS_FUSEDLOSS_HPP

#include <cstddef>
#include <stdexcept>
#include <string>

#include "fusedloss/fusedloss.h"

namespace fusedloss {

/** @brief A refused or failed call: its status, the argument it names (if any) and its message. */
class error : public std::runtime_error {
 public:
  /** @brief Wraps the details a C call filled. @param[in] e the details. */
  explicit error(const fusedloss_error& e)
      : std::runtime_error(std::string(fusedloss_status_string(e.status)) + ": " + e.message),
        status_(e.status),
        argument_(e.argument) {}
  /** @brief The status the call returned. */
  fusedloss_status status() const noexcept { return status_; }
  /** @brief The refused argument's name, or nullptr. */
  const char* argument() const noexcept { return argument_; }

 private:
  fusedloss_status status_;
  const char* argument_;
};

/** @brief Caller-owned scratch memory for a call, sized by workspace_size(). */
struct workspace {
  void* data = nullptr; /**< device memory on the CUDA path; may be null when bytes is 0 */
  size_t bytes = 0;     /**< its size */
};

/** @brief Throws fusedloss::error unless `status` is success. @param status a C call's status.
 *  @param[in] e the details it filled. */
inline void throw_on_error(fusedloss_status status, const fusedloss_error& e) {
  if (status != FUSEDLOSS_SUCCESS) throw error(e);
}

/** @brief Scales a buffer in place; see fusedloss_scale_in_place(). @param data the buffer.
 *  @param dtype its dtype. @param numel its length. @param scale the scalar. @param scale_dtype
 *  its dtype. @param device the memory space. @param stream the stream. */
inline void scale_in_place(void* data, fusedloss_dtype dtype, int64_t numel, const void* scale,
                           fusedloss_dtype scale_dtype, fusedloss_device device,
                           void* stream = nullptr) {
  fusedloss_error e;
  throw_on_error(
      fusedloss_scale_in_place(data, dtype, numel, scale, scale_dtype, device, stream, &e), e);
}

/** @brief Reads and clears a counter; see fusedloss_read_and_clear_counter().
 *  @param counter the counter. @param device its memory space. @param stream its writers' stream.
 *  @return the count before clearing. */
inline int64_t read_and_clear_counter(int64_t* counter, fusedloss_device device,
                                      void* stream = nullptr) {
  fusedloss_error e;
  int64_t value = 0;
  throw_on_error(fusedloss_read_and_clear_counter(counter, device, stream, &value, &e), e);
  return value;
}

/** @brief The three calls every loss has (the C functions `fusedloss_<loss>_<call>`). */
enum class call { forward, backward, forward_backward };

// Each loss below: its params type, `make_<loss>_params()` (the init call's defaults), and the
// overloads workspace_size(p), forward(p, ws, stream), backward(p, ws, stream) and
// forward_backward(p, ws, stream), which throw fusedloss::error on any status but success. A
// cudaStream_t converts to the `void*` stream argument. run(p, c, ws, stream) takes the call as a
// value.

/** @brief The params of BCE with logits (the C struct). */
using bce_params = fusedloss_bce_params;

/** @brief BCE with logits's params with the defaults of fusedloss_bce_params_init. */
inline bce_params make_bce_params() {
  bce_params p;
  fusedloss_bce_params_init(&p);
  return p;
}

/** @brief fusedloss_bce_workspace_size, throwing on a refusal. */
inline size_t workspace_size(const bce_params& p) {
  fusedloss_error e;
  size_t bytes = 0;
  throw_on_error(fusedloss_bce_workspace_size(&p, &bytes, &e), e);
  return bytes;
}

/** @brief fusedloss_bce_forward, throwing on a refusal. */
inline void forward(const bce_params& p, workspace ws = {}, void* stream = nullptr) {
  fusedloss_error e;
  throw_on_error(fusedloss_bce_forward(&p, ws.data, ws.bytes, stream, &e), e);
}

/** @brief fusedloss_bce_backward, throwing on a refusal. */
inline void backward(const bce_params& p, workspace ws = {}, void* stream = nullptr) {
  fusedloss_error e;
  throw_on_error(fusedloss_bce_backward(&p, ws.data, ws.bytes, stream, &e), e);
}

/** @brief fusedloss_bce_forward_backward, throwing on a refusal. */
inline void forward_backward(const bce_params& p, workspace ws = {}, void* stream = nullptr) {
  fusedloss_error e;
  throw_on_error(fusedloss_bce_forward_backward(&p, ws.data, ws.bytes, stream, &e), e);
}

/** @brief The params of sigmoid focal loss (the C struct). */
using sigmoid_focal_params = fusedloss_sigmoid_focal_params;

/** @brief Sigmoid focal loss's params with the defaults of fusedloss_sigmoid_focal_params_init. */
inline sigmoid_focal_params make_sigmoid_focal_params() {
  sigmoid_focal_params p;
  fusedloss_sigmoid_focal_params_init(&p);
  return p;
}

/** @brief fusedloss_sigmoid_focal_workspace_size, throwing on a refusal. */
inline size_t workspace_size(const sigmoid_focal_params& p) {
  fusedloss_error e;
  size_t bytes = 0;
  throw_on_error(fusedloss_sigmoid_focal_workspace_size(&p, &bytes, &e), e);
  return bytes;
}

/** @brief fusedloss_sigmoid_focal_forward, throwing on a refusal. */
inline void forward(const sigmoid_focal_params& p, workspace ws = {}, void* stream = nullptr) {
  fusedloss_error e;
  throw_on_error(fusedloss_sigmoid_focal_forward(&p, ws.data, ws.bytes, stream, &e), e);
}

/** @brief fusedloss_sigmoid_focal_backward, throwing on a refusal. */
inline void backward(const sigmoid_focal_params& p, workspace ws = {}, void* stream = nullptr) {
  fusedloss_error e;
  throw_on_error(fusedloss_sigmoid_focal_backward(&p, ws.data, ws.bytes, stream, &e), e);
}

/** @brief fusedloss_sigmoid_focal_forward_backward, throwing on a refusal. */
inline void forward_backward(const sigmoid_focal_params& p, workspace ws = {},
                             void* stream = nullptr) {
  fusedloss_error e;
  throw_on_error(fusedloss_sigmoid_focal_forward_backward(&p, ws.data, ws.bytes, stream, &e), e);
}

/** @brief The params of MSE (the C struct). */
using mse_params = fusedloss_mse_params;

/** @brief MSE's params with the defaults of fusedloss_mse_params_init. */
inline mse_params make_mse_params() {
  mse_params p;
  fusedloss_mse_params_init(&p);
  return p;
}

/** @brief fusedloss_mse_workspace_size, throwing on a refusal. */
inline size_t workspace_size(const mse_params& p) {
  fusedloss_error e;
  size_t bytes = 0;
  throw_on_error(fusedloss_mse_workspace_size(&p, &bytes, &e), e);
  return bytes;
}

/** @brief fusedloss_mse_forward, throwing on a refusal. */
inline void forward(const mse_params& p, workspace ws = {}, void* stream = nullptr) {
  fusedloss_error e;
  throw_on_error(fusedloss_mse_forward(&p, ws.data, ws.bytes, stream, &e), e);
}

/** @brief fusedloss_mse_backward, throwing on a refusal. */
inline void backward(const mse_params& p, workspace ws = {}, void* stream = nullptr) {
  fusedloss_error e;
  throw_on_error(fusedloss_mse_backward(&p, ws.data, ws.bytes, stream, &e), e);
}

/** @brief fusedloss_mse_forward_backward, throwing on a refusal. */
inline void forward_backward(const mse_params& p, workspace ws = {}, void* stream = nullptr) {
  fusedloss_error e;
  throw_on_error(fusedloss_mse_forward_backward(&p, ws.data, ws.bytes, stream, &e), e);
}

/** @brief The params of cross-entropy (the C struct). */
using cross_entropy_params = fusedloss_cross_entropy_params;

/** @brief Cross-entropy's params with the defaults of fusedloss_cross_entropy_params_init. */
inline cross_entropy_params make_cross_entropy_params() {
  cross_entropy_params p;
  fusedloss_cross_entropy_params_init(&p);
  return p;
}

/** @brief fusedloss_cross_entropy_workspace_size, throwing on a refusal. */
inline size_t workspace_size(const cross_entropy_params& p) {
  fusedloss_error e;
  size_t bytes = 0;
  throw_on_error(fusedloss_cross_entropy_workspace_size(&p, &bytes, &e), e);
  return bytes;
}

/** @brief fusedloss_cross_entropy_forward, throwing on a refusal. */
inline void forward(const cross_entropy_params& p, workspace ws = {}, void* stream = nullptr) {
  fusedloss_error e;
  throw_on_error(fusedloss_cross_entropy_forward(&p, ws.data, ws.bytes, stream, &e), e);
}

/** @brief fusedloss_cross_entropy_backward, throwing on a refusal. */
inline void backward(const cross_entropy_params& p, workspace ws = {}, void* stream = nullptr) {
  fusedloss_error e;
  throw_on_error(fusedloss_cross_entropy_backward(&p, ws.data, ws.bytes, stream, &e), e);
}

/** @brief fusedloss_cross_entropy_forward_backward, throwing on a refusal. */
inline void forward_backward(const cross_entropy_params& p, workspace ws = {},
                             void* stream = nullptr) {
  fusedloss_error e;
  throw_on_error(fusedloss_cross_entropy_forward_backward(&p, ws.data, ws.bytes, stream, &e), e);
}

/** @brief The params of softmax focal loss (the C struct). */
using softmax_focal_params = fusedloss_softmax_focal_params;

/** @brief Softmax focal loss's params with the defaults of fusedloss_softmax_focal_params_init. */
inline softmax_focal_params make_softmax_focal_params() {
  softmax_focal_params p;
  fusedloss_softmax_focal_params_init(&p);
  return p;
}

/** @brief fusedloss_softmax_focal_workspace_size, throwing on a refusal. */
inline size_t workspace_size(const softmax_focal_params& p) {
  fusedloss_error e;
  size_t bytes = 0;
  throw_on_error(fusedloss_softmax_focal_workspace_size(&p, &bytes, &e), e);
  return bytes;
}

/** @brief fusedloss_softmax_focal_forward, throwing on a refusal. */
inline void forward(const softmax_focal_params& p, workspace ws = {}, void* stream = nullptr) {
  fusedloss_error e;
  throw_on_error(fusedloss_softmax_focal_forward(&p, ws.data, ws.bytes, stream, &e), e);
}

/** @brief fusedloss_softmax_focal_backward, throwing on a refusal. */
inline void backward(const softmax_focal_params& p, workspace ws = {}, void* stream = nullptr) {
  fusedloss_error e;
  throw_on_error(fusedloss_softmax_focal_backward(&p, ws.data, ws.bytes, stream, &e), e);
}

/** @brief fusedloss_softmax_focal_forward_backward, throwing on a refusal. */
inline void forward_backward(const softmax_focal_params& p, workspace ws = {},
                             void* stream = nullptr) {
  fusedloss_error e;
  throw_on_error(fusedloss_softmax_focal_forward_backward(&p, ws.data, ws.bytes, stream, &e), e);
}

/** @brief The params of fused linear + cross-entropy (the C struct). */
using linear_cross_entropy_params = fusedloss_linear_cross_entropy_params;

/** @brief Linear + cross-entropy's params with the defaults of
 *  fusedloss_linear_cross_entropy_params_init. */
inline linear_cross_entropy_params make_linear_cross_entropy_params() {
  linear_cross_entropy_params p;
  fusedloss_linear_cross_entropy_params_init(&p);
  return p;
}

/** @brief fusedloss_linear_cross_entropy_workspace_size, throwing on a refusal. */
inline size_t workspace_size(const linear_cross_entropy_params& p) {
  fusedloss_error e;
  size_t bytes = 0;
  throw_on_error(fusedloss_linear_cross_entropy_workspace_size(&p, &bytes, &e), e);
  return bytes;
}

/** @brief fusedloss_linear_cross_entropy_forward, throwing on a refusal. */
inline void forward(const linear_cross_entropy_params& p, workspace ws = {},
                    void* stream = nullptr) {
  fusedloss_error e;
  throw_on_error(fusedloss_linear_cross_entropy_forward(&p, ws.data, ws.bytes, stream, &e), e);
}

/** @brief fusedloss_linear_cross_entropy_backward, throwing on a refusal. */
inline void backward(const linear_cross_entropy_params& p, workspace ws = {},
                     void* stream = nullptr) {
  fusedloss_error e;
  throw_on_error(fusedloss_linear_cross_entropy_backward(&p, ws.data, ws.bytes, stream, &e), e);
}

/** @brief fusedloss_linear_cross_entropy_forward_backward, throwing on a refusal. */
inline void forward_backward(const linear_cross_entropy_params& p, workspace ws = {},
                             void* stream = nullptr) {
  fusedloss_error e;
  throw_on_error(fusedloss_linear_cross_entropy_forward_backward(&p, ws.data, ws.bytes, stream, &e),
                 e);
}

/**
 * @brief Runs call `c` of the loss whose params `p` are (any of the params types above).
 * @param p the params; @param c the call; @param ws the workspace; @param stream the stream.
 * @throws fusedloss::error on any status but success.
 */
template <class Params>
void run(const Params& p, call c, workspace ws = {}, void* stream = nullptr) {
  switch (c) {
    case call::forward:
      forward(p, ws, stream);
      break;
    case call::backward:
      backward(p, ws, stream);
      break;
    case call::forward_backward:
      forward_backward(p, ws, stream);
      break;
  }
}

/** @brief The three shard calls of vocabulary-parallel cross-entropy (the C functions
 *  `fusedloss_cross_entropy_shard_<step>`), in the order a step runs them. */
enum class shard_step { partial, rescale, finish };

/** @brief The params of one rank's share of vocabulary-parallel cross-entropy (the C struct). */
using cross_entropy_shard_params = fusedloss_cross_entropy_shard_params;

/** @brief A shard's params with the defaults of fusedloss_cross_entropy_shard_params_init. */
inline cross_entropy_shard_params make_cross_entropy_shard_params() {
  cross_entropy_shard_params p;
  fusedloss_cross_entropy_shard_params_init(&p);
  return p;
}

/** @brief fusedloss_cross_entropy_shard_workspace_size, throwing on a refusal. */
inline size_t workspace_size(const cross_entropy_shard_params& p) {
  fusedloss_error e;
  size_t bytes = 0;
  throw_on_error(fusedloss_cross_entropy_shard_workspace_size(&p, &bytes, &e), e);
  return bytes;
}

/**
 * @brief Runs shard call `step` (fusedloss_cross_entropy_shard_partial, _rescale or _finish).
 * @param p the params; @param step the call; @param ws the workspace; @param stream the stream.
 * @throws fusedloss::error on any status but success.
 */
inline void run(const cross_entropy_shard_params& p, shard_step step, workspace ws = {},
                void* stream = nullptr) {
  fusedloss_error e;
  fusedloss_status s = FUSEDLOSS_SUCCESS;
  switch (step) {
    case shard_step::partial:
      s = fusedloss_cross_entropy_shard_partial(&p, ws.data, ws.bytes, stream, &e);
      break;
    case shard_step::rescale:
      s = fusedloss_cross_entropy_shard_rescale(&p, ws.data, ws.bytes, stream, &e);
      break;
    case shard_step::finish:
      s = fusedloss_cross_entropy_shard_finish(&p, ws.data, ws.bytes, stream, &e);
      break;
  }
  throw_on_error(s, e);
}

}  // namespace fusedloss

#endif  // FUSEDLOSS_FUSEDLOSS_HPP
