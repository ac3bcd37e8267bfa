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

/** @brief The three shard calls of vocabulary-parallel cross-entropy (the C functions
 *  `fusedloss_cross_entropy_shard_<step>`), in the order a step runs them. */
enum class shard_step { partial, rescale, finish };

/** @brief The call's name as the C functions spell it. @param c the call.
 *  @return "forward", "backward" or "forward_backward". */
constexpr const char* name(call c) {
  switch (c) {
    case call::forward:
      return "forward";
    case call::backward:
      return "backward";
    case call::forward_backward:
      break;
  }
  return "forward_backward";
}

/** @brief The shard call's name as the C functions spell it. @param step the call.
 *  @return "partial", "rescale" or "finish". */
constexpr const char* name(shard_step step) {
  switch (step) {
    case shard_step::partial:
      return "partial";
    case shard_step::rescale:
      return "rescale";
    case shard_step::finish:
      break;
  }
  return "finish";
}

/** @brief The signature every loss call of the C ABI has: params, workspace and its size, stream,
 *  error details. */
template <class Params>
using c_call = fusedloss_status (*)(const Params*, void*, size_t, void*, fusedloss_error*);

/**
 * @brief One loss's C entry points, by its params type: the one table through which the C++
 * layer below, the tests, the tools and the benchmarks reach the C ABI.
 *
 * Each specialisation has `name` (the `<loss>` of the C functions' names), `init` (the params
 * init call), `workspace_size`, and the calls: `forward`, `backward` and `forward_backward`, or
 * for cross_entropy_shard_params `partial`, `rescale` and `finish`.
 */
template <class Params>
struct c_api;

/** @brief The params of BCE with logits (the C struct). */
using bce_params = fusedloss_bce_params;

/** @brief The C entry points of BCE with logits. */
template <>
struct c_api<fusedloss_bce_params> {
  static constexpr const char* name = "bce"; /**< the C functions' `<loss>` */
  /** @brief fusedloss_bce_params_init */
  static constexpr void (*init)(fusedloss_bce_params*) = fusedloss_bce_params_init;
  /** @brief fusedloss_bce_workspace_size */
  static constexpr fusedloss_status (*workspace_size)(
      const fusedloss_bce_params*, size_t*, fusedloss_error*) = fusedloss_bce_workspace_size;
  static constexpr c_call<fusedloss_bce_params> forward =
      fusedloss_bce_forward; /**< the forward call */
  static constexpr c_call<fusedloss_bce_params> backward =
      fusedloss_bce_backward; /**< the backward call */
  /** @brief the fused forward + backward call */
  static constexpr c_call<fusedloss_bce_params> forward_backward = fusedloss_bce_forward_backward;
};

/** @brief BCE with logits's params with the defaults of fusedloss_bce_params_init. */
inline bce_params make_bce_params() {
  bce_params p;
  fusedloss_bce_params_init(&p);
  return p;
}

/** @brief The params of sigmoid focal loss (the C struct). */
using sigmoid_focal_params = fusedloss_sigmoid_focal_params;

/** @brief The C entry points of sigmoid focal loss. */
template <>
struct c_api<fusedloss_sigmoid_focal_params> {
  static constexpr const char* name = "sigmoid_focal"; /**< the C functions' `<loss>` */
  /** @brief fusedloss_sigmoid_focal_params_init */
  static constexpr void (*init)(fusedloss_sigmoid_focal_params*) =
      fusedloss_sigmoid_focal_params_init;
  /** @brief fusedloss_sigmoid_focal_workspace_size */
  static constexpr fusedloss_status (*workspace_size)(const fusedloss_sigmoid_focal_params*,
                                                      size_t*, fusedloss_error*) =
      fusedloss_sigmoid_focal_workspace_size;
  static constexpr c_call<fusedloss_sigmoid_focal_params> forward =
      fusedloss_sigmoid_focal_forward; /**< the forward call */
  static constexpr c_call<fusedloss_sigmoid_focal_params> backward =
      fusedloss_sigmoid_focal_backward; /**< the backward call */
  /** @brief the fused forward + backward call */
  static constexpr c_call<fusedloss_sigmoid_focal_params> forward_backward =
      fusedloss_sigmoid_focal_forward_backward;
};

/** @brief Sigmoid focal loss's params with the defaults of fusedloss_sigmoid_focal_params_init. */
inline sigmoid_focal_params make_sigmoid_focal_params() {
  sigmoid_focal_params p;
  fusedloss_sigmoid_focal_params_init(&p);
  return p;
}

/** @brief The params of MSE (the C struct). */
using mse_params = fusedloss_mse_params;

/** @brief The C entry points of MSE. */
template <>
struct c_api<fusedloss_mse_params> {
  static constexpr const char* name = "mse"; /**< the C functions' `<loss>` */
  /** @brief fusedloss_mse_params_init */
  static constexpr void (*init)(fusedloss_mse_params*) = fusedloss_mse_params_init;
  /** @brief fusedloss_mse_workspace_size */
  static constexpr fusedloss_status (*workspace_size)(
      const fusedloss_mse_params*, size_t*, fusedloss_error*) = fusedloss_mse_workspace_size;
  static constexpr c_call<fusedloss_mse_params> forward =
      fusedloss_mse_forward; /**< the forward call */
  static constexpr c_call<fusedloss_mse_params> backward =
      fusedloss_mse_backward; /**< the backward call */
  /** @brief the fused forward + backward call */
  static constexpr c_call<fusedloss_mse_params> forward_backward = fusedloss_mse_forward_backward;
};

/** @brief MSE's params with the defaults of fusedloss_mse_params_init. */
inline mse_params make_mse_params() {
  mse_params p;
  fusedloss_mse_params_init(&p);
  return p;
}

/** @brief The params of cross-entropy (the C struct). */
using cross_entropy_params = fusedloss_cross_entropy_params;

/** @brief The C entry points of cross-entropy. */
template <>
struct c_api<fusedloss_cross_entropy_params> {
  static constexpr const char* name = "cross_entropy"; /**< the C functions' `<loss>` */
  /** @brief fusedloss_cross_entropy_params_init */
  static constexpr void (*init)(fusedloss_cross_entropy_params*) =
      fusedloss_cross_entropy_params_init;
  /** @brief fusedloss_cross_entropy_workspace_size */
  static constexpr fusedloss_status (*workspace_size)(const fusedloss_cross_entropy_params*,
                                                      size_t*, fusedloss_error*) =
      fusedloss_cross_entropy_workspace_size;
  static constexpr c_call<fusedloss_cross_entropy_params> forward =
      fusedloss_cross_entropy_forward; /**< the forward call */
  static constexpr c_call<fusedloss_cross_entropy_params> backward =
      fusedloss_cross_entropy_backward; /**< the backward call */
  /** @brief the fused forward + backward call */
  static constexpr c_call<fusedloss_cross_entropy_params> forward_backward =
      fusedloss_cross_entropy_forward_backward;
};

/** @brief Cross-entropy's params with the defaults of fusedloss_cross_entropy_params_init. */
inline cross_entropy_params make_cross_entropy_params() {
  cross_entropy_params p;
  fusedloss_cross_entropy_params_init(&p);
  return p;
}

/** @brief The params of softmax focal loss (the C struct). */
using softmax_focal_params = fusedloss_softmax_focal_params;

/** @brief The C entry points of softmax focal loss. */
template <>
struct c_api<fusedloss_softmax_focal_params> {
  static constexpr const char* name = "softmax_focal"; /**< the C functions' `<loss>` */
  /** @brief fusedloss_softmax_focal_params_init */
  static constexpr void (*init)(fusedloss_softmax_focal_params*) =
      fusedloss_softmax_focal_params_init;
  /** @brief fusedloss_softmax_focal_workspace_size */
  static constexpr fusedloss_status (*workspace_size)(const fusedloss_softmax_focal_params*,
                                                      size_t*, fusedloss_error*) =
      fusedloss_softmax_focal_workspace_size;
  static constexpr c_call<fusedloss_softmax_focal_params> forward =
      fusedloss_softmax_focal_forward; /**< the forward call */
  static constexpr c_call<fusedloss_softmax_focal_params> backward =
      fusedloss_softmax_focal_backward; /**< the backward call */
  /** @brief the fused forward + backward call */
  static constexpr c_call<fusedloss_softmax_focal_params> forward_backward =
      fusedloss_softmax_focal_forward_backward;
};

/** @brief Softmax focal loss's params with the defaults of fusedloss_softmax_focal_params_init. */
inline softmax_focal_params make_softmax_focal_params() {
  softmax_focal_params p;
  fusedloss_softmax_focal_params_init(&p);
  return p;
}

/** @brief The params of fused linear + cross-entropy (the C struct). */
using linear_cross_entropy_params = fusedloss_linear_cross_entropy_params;

/** @brief The C entry points of fused linear + cross-entropy. */
template <>
struct c_api<fusedloss_linear_cross_entropy_params> {
  static constexpr const char* name = "linear_cross_entropy"; /**< the C functions' `<loss>` */
  /** @brief fusedloss_linear_cross_entropy_params_init */
  static constexpr void (*init)(fusedloss_linear_cross_entropy_params*) =
      fusedloss_linear_cross_entropy_params_init;
  /** @brief fusedloss_linear_cross_entropy_workspace_size */
  static constexpr fusedloss_status (*workspace_size)(const fusedloss_linear_cross_entropy_params*,
                                                      size_t*, fusedloss_error*) =
      fusedloss_linear_cross_entropy_workspace_size;
  static constexpr c_call<fusedloss_linear_cross_entropy_params> forward =
      fusedloss_linear_cross_entropy_forward; /**< the forward call */
  static constexpr c_call<fusedloss_linear_cross_entropy_params> backward =
      fusedloss_linear_cross_entropy_backward; /**< the backward call */
  /** @brief the fused forward + backward call */
  static constexpr c_call<fusedloss_linear_cross_entropy_params> forward_backward =
      fusedloss_linear_cross_entropy_forward_backward;
};

/** @brief Fused linear + cross-entropy's params with the defaults of
 * fusedloss_linear_cross_entropy_params_init. */
inline linear_cross_entropy_params make_linear_cross_entropy_params() {
  linear_cross_entropy_params p;
  fusedloss_linear_cross_entropy_params_init(&p);
  return p;
}

/** @brief The params of one rank's share of vocabulary-parallel cross-entropy (the C struct). */
using cross_entropy_shard_params = fusedloss_cross_entropy_shard_params;

/** @brief The C entry points of vocabulary-parallel cross-entropy's shard calls. */
template <>
struct c_api<fusedloss_cross_entropy_shard_params> {
  static constexpr const char* name = "cross_entropy_shard"; /**< the C functions' `<loss>` */
  /** @brief fusedloss_cross_entropy_shard_params_init */
  static constexpr void (*init)(fusedloss_cross_entropy_shard_params*) =
      fusedloss_cross_entropy_shard_params_init;
  /** @brief fusedloss_cross_entropy_shard_workspace_size */
  static constexpr fusedloss_status (*workspace_size)(const fusedloss_cross_entropy_shard_params*,
                                                      size_t*, fusedloss_error*) =
      fusedloss_cross_entropy_shard_workspace_size;
  static constexpr c_call<fusedloss_cross_entropy_shard_params> partial =
      fusedloss_cross_entropy_shard_partial; /**< partial */
  static constexpr c_call<fusedloss_cross_entropy_shard_params> rescale =
      fusedloss_cross_entropy_shard_rescale; /**< rescale */
  static constexpr c_call<fusedloss_cross_entropy_shard_params> finish =
      fusedloss_cross_entropy_shard_finish; /**< finish */
};

/** @brief A shard's params with the defaults of fusedloss_cross_entropy_shard_params_init. */
inline cross_entropy_shard_params make_cross_entropy_shard_params() {
  cross_entropy_shard_params p;
  fusedloss_cross_entropy_shard_params_init(&p);
  return p;
}

/** @brief The C function of call `c` of the loss whose params type is `Params`.
 *  @param c the call. @return fusedloss_<loss>_<call>. */
template <class Params>
constexpr c_call<Params> entry_point(call c) {
  switch (c) {
    case call::forward:
      return c_api<Params>::forward;
    case call::backward:
      return c_api<Params>::backward;
    case call::forward_backward:
      break;
  }
  return c_api<Params>::forward_backward;
}

/** @brief The C function of shard call `step`. @param step the call.
 *  @return fusedloss_cross_entropy_shard_<step>. */
constexpr c_call<cross_entropy_shard_params> entry_point(shard_step step) {
  using api = c_api<cross_entropy_shard_params>;
  switch (step) {
    case shard_step::partial:
      return api::partial;
    case shard_step::rescale:
      return api::rescale;
    case shard_step::finish:
      break;
  }
  return api::finish;
}

// The throwing calls, for every params type above. A cudaStream_t converts to the `void*` stream
// argument.

/**
 * @brief The workspace a call with `p` needs (fusedloss_<loss>_workspace_size).
 * @param p the params. @return the bytes. @throws fusedloss::error on a refusal.
 */
template <class Params>
size_t workspace_size(const Params& p) {
  fusedloss_error e;
  size_t bytes = 0;
  throw_on_error(c_api<Params>::workspace_size(&p, &bytes, &e), e);
  return bytes;
}

/**
 * @brief Runs call `c` of the loss whose params `p` are (fusedloss_<loss>_<call>).
 * @param p the params; @param c the call; @param ws the workspace; @param stream the stream.
 * @throws fusedloss::error on any status but success.
 */
template <class Params>
void run(const Params& p, call c, workspace ws = {}, void* stream = nullptr) {
  fusedloss_error e;
  throw_on_error(entry_point<Params>(c)(&p, ws.data, ws.bytes, stream, &e), e);
}

/**
 * @brief Runs shard call `step` (fusedloss_cross_entropy_shard_partial, _rescale or _finish).
 * @param p the params; @param step the call; @param ws the workspace; @param stream the stream.
 * @throws fusedloss::error on any status but success.
 */
inline void run(const cross_entropy_shard_params& p, shard_step step, workspace ws = {},
                void* stream = nullptr) {
  fusedloss_error e;
  throw_on_error(entry_point(step)(&p, ws.data, ws.bytes, stream, &e), e);
}

/** @brief run(p, call::forward, ws, stream). @param p the params; @param ws the workspace;
 *  @param stream the stream. @throws fusedloss::error on any status but success. */
template <class Params>
void forward(const Params& p, workspace ws = {}, void* stream = nullptr) {
  run(p, call::forward, ws, stream);
}

/** @brief run(p, call::backward, ws, stream). @param p the params; @param ws the workspace;
 *  @param stream the stream. @throws fusedloss::error on any status but success. */
template <class Params>
void backward(const Params& p, workspace ws = {}, void* stream = nullptr) {
  run(p, call::backward, ws, stream);
}

/** @brief run(p, call::forward_backward, ws, stream). @param p the params; @param ws the
 *  workspace; @param stream the stream. @throws fusedloss::error on any status but success. */
template <class Params>
void forward_backward(const Params& p, workspace ws = {}, void* stream = nullptr) {
  run(p, call::forward_backward, ws, stream);
}

}  // namespace fusedloss

#endif  // FUSEDLOSS_FUSEDLOSS_HPP
