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

// For each loss: `<loss>_params` (the C struct), `make_<loss>_params()` (defaults filled) and the
// overloads workspace_size(p), forward(p, ws, stream), backward(p, ws, stream) and
// forward_backward(p, ws, stream), which throw fusedloss::error on any status but success. A
// cudaStream_t converts to the `void*` stream argument.
#define FUSEDLOSS_CXX_LOSS(name)                                                               \
  using name##_params = fusedloss_##name##_params;                                             \
  inline name##_params make_##name##_params() {                                                \
    name##_params p;                                                                           \
    fusedloss_##name##_params_init(&p);                                                        \
    return p;                                                                                  \
  }                                                                                            \
  inline size_t workspace_size(const name##_params& p) {                                       \
    fusedloss_error e;                                                                         \
    size_t bytes = 0;                                                                          \
    throw_on_error(fusedloss_##name##_workspace_size(&p, &bytes, &e), e);                      \
    return bytes;                                                                              \
  }                                                                                            \
  inline void forward(const name##_params& p, workspace ws = {}, void* stream = nullptr) {     \
    fusedloss_error e;                                                                         \
    throw_on_error(fusedloss_##name##_forward(&p, ws.data, ws.bytes, stream, &e), e);          \
  }                                                                                            \
  inline void backward(const name##_params& p, workspace ws = {}, void* stream = nullptr) {    \
    fusedloss_error e;                                                                         \
    throw_on_error(fusedloss_##name##_backward(&p, ws.data, ws.bytes, stream, &e), e);         \
  }                                                                                            \
  inline void forward_backward(const name##_params& p, workspace ws = {},                      \
                               void* stream = nullptr) {                                       \
    fusedloss_error e;                                                                         \
    throw_on_error(fusedloss_##name##_forward_backward(&p, ws.data, ws.bytes, stream, &e), e); \
  }

FUSEDLOSS_CXX_LOSS(bce)
FUSEDLOSS_CXX_LOSS(sigmoid_focal)
FUSEDLOSS_CXX_LOSS(mse)
FUSEDLOSS_CXX_LOSS(cross_entropy)
FUSEDLOSS_CXX_LOSS(softmax_focal)

#undef FUSEDLOSS_CXX_LOSS

}  // namespace fusedloss

#endif  // FUSEDLOSS_FUSEDLOSS_HPP
