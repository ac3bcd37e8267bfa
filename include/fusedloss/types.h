/**
 * @file fusedloss/types.h
 * @brief The types every call of the C ABI shares: statuses, errors, devices, dtypes, reductions.
 */
#ifndef FUSEDLOSS_TYPES_H
#define FUSEDLOSS_TYPES_H

#include <stddef.h>
#include <stdint.h>

#include "fusedloss/version.h"

#ifdef __cplusplus
extern "C" {
#endif

/** @brief Marks the C ABI's functions: the shared library exports them and nothing else (it is
 *  built with hidden visibility). */
#if defined(__GNUC__)
#define FUSEDLOSS_API __attribute__((visibility("default")))
#else
#define FUSEDLOSS_API
#endif

/** @brief What a call returned. */
typedef enum fusedloss_status {
  /** The call completed. */
  FUSEDLOSS_SUCCESS = 0,
  /** An argument was refused; nothing was written. `fusedloss_error::argument` names it. */
  FUSEDLOSS_INVALID_ARGUMENT = 1,
  /** The call completed, but some class-index targets were neither `ignore_index` nor in [0, C);
   *  those rows were treated as ignored. Returned by the CPU path only: on the GPU the count goes
   * to the params' `invalid_target_count` instead (the host never reads device memory). */
  FUSEDLOSS_INVALID_TARGET = 2,
  /** The CUDA path was asked of a library built without CUDA (FUSEDLOSS_WITH_CUDA=OFF). */
  FUSEDLOSS_NOT_IMPLEMENTED = 3,
  /** The CUDA runtime reported an error (no device, a failed launch, ...). */
  FUSEDLOSS_CUDA_ERROR = 4
} fusedloss_status;

/** @brief Details of a status, filled by every call that is given one. */
typedef struct fusedloss_error {
  /** The status the call returned. */
  fusedloss_status status;
  /** The refused argument's name (a static string), or NULL when the status is not about one. */
  const char* argument;
  /** A human-readable, NUL-terminated explanation ("" on success). */
  char message[256];
} fusedloss_error;

/** @brief Where a call runs and where its pointers point. */
typedef enum fusedloss_device {
  /** The double-precision CPU reference; all pointers are host pointers. */
  FUSEDLOSS_DEVICE_CPU = 0,
  /** The CUDA kernels; all pointers are device pointers of the current device. */
  FUSEDLOSS_DEVICE_CUDA = 1
} fusedloss_device;

/** @brief Storage type of a buffer. */
typedef enum fusedloss_dtype {
  FUSEDLOSS_FLOAT32 = 0,
  FUSEDLOSS_FLOAT16 = 1,
  FUSEDLOSS_BFLOAT16 = 2,
  /** CPU path only: lets finite differences run through the public API. */
  FUSEDLOSS_FLOAT64 = 3,
  FUSEDLOSS_INT32 = 4,
  FUSEDLOSS_INT64 = 5
} fusedloss_dtype;

/** @brief How per-element or per-row losses are combined. */
typedef enum fusedloss_reduction {
  /** One loss per element (element losses) or per row (row losses). */
  FUSEDLOSS_REDUCTION_NONE = 0,
  /** The sum divided by the loss's normaliser (see each params struct). */
  FUSEDLOSS_REDUCTION_MEAN = 1,
  /** The sum. */
  FUSEDLOSS_REDUCTION_SUM = 2
} fusedloss_reduction;

/** @brief What `mean` gives when its normaliser is 0 (no rows, all rows ignored, zero total
 * weight). The gradient is 0 under both policies. */
typedef enum fusedloss_empty_mean {
  /** NaN, as PyTorch. */
  FUSEDLOSS_EMPTY_MEAN_NAN = 0,
  /** 0. */
  FUSEDLOSS_EMPTY_MEAN_ZERO = 1
} fusedloss_empty_mean;

/** @brief How BCE's `weight` vector is laid out. */
typedef enum fusedloss_weight_layout {
  /** One weight per element (length M). */
  FUSEDLOSS_WEIGHT_PER_ELEMENT = 0,
  /** One weight per class (length C), broadcast over the M / C rows. */
  FUSEDLOSS_WEIGHT_PER_CLASS = 1
} fusedloss_weight_layout;

/*
 * Fields shared by every params struct, in this order after `struct_size`:
 *
 * - `device`: where the call runs.
 * - `logits`, `logits_dtype`: the input, float32/float16/bfloat16 (float64 on the CPU only).
 * - `targets`, `targets_dtype`: see each loss.
 * - `reduction`, `empty_mean`: see the enums.
 * - `loss`: output of forward and forward_backward. Its dtype is float32, or float64 for float64
 *   logits. It holds one value per element / row under ::FUSEDLOSS_REDUCTION_NONE, one value
 *   otherwise. Required by forward; optional (may be NULL) in forward_backward.
 * - `grad_logits`: output of backward and forward_backward, in the logits' dtype. It may equal
 *   `logits` (in-place) when the strides are equal.
 * - `grad_loss`: input of backward, the upstream gradient in the loss's dtype: one value for
 *   sum/mean, one per element / row for none.
 * - `grad_scale`, `grad_scale_ptr`: forward_backward's upstream gradient, applied in the same pass:
 *   the gradient is scaled by `grad_scale` times `*grad_scale_ptr` (a float32 in the call's memory
 *   space; NULL reads as 1). Under none it scales every element's / row's gradient alike.
 */

#ifdef __cplusplus
}  // extern "C"
#endif

#endif  // FUSEDLOSS_TYPES_H
