/**
 * @file fusedloss.h
 * @brief The C ABI of fusedloss: every loss, its three calls, and the types they share.
 *
 * Every loss has a params struct and five functions:
 * - `fusedloss_<loss>_params_init(p)` fills `p` with PyTorch's defaults and sets `p->struct_size`;
 * - `fusedloss_<loss>_workspace_size(p, &bytes, err)` says how much workspace the calls need for `p`
 *   (the same amount serves all three calls; 0 on the CPU);
 * - `fusedloss_<loss>_forward` computes the loss (and, for row losses, the per-row LSE);
 * - `fusedloss_<loss>_backward` computes the gradient of the logits from the upstream gradient;
 * - `fusedloss_<loss>_forward_backward` computes loss and gradient in one pass (the training call).
 *
 * All calls are stateless: they read the params, the workspace and the stream and nothing else. They
 * check every argument the host can see before touching memory; a refused call writes nothing and
 * returns a status whose details (the argument's name and a message) go to the optional `err`.
 *
 * Pointers point to host memory when `device` is ::FUSEDLOSS_DEVICE_CPU and to memory of the current
 * device when it is ::FUSEDLOSS_DEVICE_CUDA (another device's memory is refused). The CPU path is the
 * double-precision reference: results are exact up to the final rounding to the output dtype. It
 * ignores `workspace` and `stream`.
 *
 * The header needs no CUDA header: streams travel as `void*` (null is the default stream).
 */
#ifndef FUSEDLOSS_FUSEDLOSS_H
#define FUSEDLOSS_FUSEDLOSS_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/** @brief Library version, as major * 10000 + minor * 100 + patch. */
#define FUSEDLOSS_VERSION 100

/** @brief What a call returned. */
typedef enum fusedloss_status {
  /** The call completed. */
  FUSEDLOSS_SUCCESS = 0,
  /** An argument was refused; nothing was written. `fusedloss_error::argument` names it. */
  FUSEDLOSS_INVALID_ARGUMENT = 1,
  /** The call completed, but some class-index targets were neither `ignore_index` nor in [0, C);
   *  those rows were treated as ignored. Returned by the CPU path only: on the GPU the count goes to
   *  the params' `invalid_target_count` instead (the host never reads device memory). */
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

/** @brief What `mean` gives when its normaliser is 0 (no rows, all rows ignored, zero total weight).
 *  The gradient is 0 under both policies. */
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
 *   logits. It holds one value per element / row under ::FUSEDLOSS_REDUCTION_NONE, one value otherwise.
 *   Required by forward; optional (may be NULL) in forward_backward.
 * - `grad_logits`: output of backward and forward_backward, in the logits' dtype. It may equal
 *   `logits` (in-place) when the strides are equal.
 * - `grad_loss`: input of backward, the upstream gradient in the loss's dtype: one value for
 *   sum/mean, one per element / row for none.
 * - `grad_scale`, `grad_scale_ptr`: forward_backward's upstream gradient, applied in the same pass:
 *   the gradient is scaled by `grad_scale` times `*grad_scale_ptr` (a float32 in the call's memory
 *   space; NULL reads as 1). Under none it scales every element's / row's gradient alike.
 */

/**
 * @brief BCE with logits (`torch.nn.BCEWithLogitsLoss`) over M contiguous elements viewed as (M/C, C).
 *
 * `l_i = w_i * [pw_c * y_i * softplus(-x_i) + (1 - y_i) * softplus(x_i)]`; `mean` divides by M
 * (weights never enter the normaliser). Targets are float32 or the logits' dtype; any value is
 * computed as written.
 */
typedef struct fusedloss_bce_params {
  size_t struct_size;                     /**< sizeof(fusedloss_bce_params), set by the init call */
  fusedloss_device device;                /**< where the call runs */
  int64_t numel;                          /**< M, the number of elements */
  int64_t num_classes;                    /**< C, the length of a per-class weight / pos_weight;
                                               M must be a multiple of it when either is given */
  const void* logits;                     /**< M logits */
  fusedloss_dtype logits_dtype;           /**< dtype of logits and grad_logits */
  const void* targets;                    /**< M targets */
  fusedloss_dtype targets_dtype;          /**< float32 or logits_dtype */
  const float* weight;                    /**< optional rescaling weight, laid out per weight_layout */
  fusedloss_weight_layout weight_layout;  /**< per element (default) or per class */
  const float* pos_weight;                /**< optional weight of positive examples, length C */
  fusedloss_reduction reduction;          /**< default mean */
  fusedloss_empty_mean empty_mean;        /**< default NaN */
  void* loss;                             /**< see the shared fields above */
  void* grad_logits;                      /**< M gradients */
  const void* grad_loss;                  /**< backward's upstream gradient */
  float grad_scale;                       /**< forward_backward's scale, default 1 */
  const float* grad_scale_ptr;            /**< forward_backward's scale in memory, optional */
} fusedloss_bce_params;

/**
 * @brief Sigmoid focal loss (`torchvision.ops.sigmoid_focal_loss`) over M contiguous elements.
 *
 * `l = alpha_t * (1 - p_t)^gamma * ce` with `ce` BCE with logits' form; finite loss and gradient for
 * every finite logit and every gamma >= 0. `mean` divides by M.
 */
typedef struct fusedloss_sigmoid_focal_params {
  size_t struct_size;             /**< sizeof(fusedloss_sigmoid_focal_params), set by the init call */
  fusedloss_device device;        /**< where the call runs */
  int64_t numel;                  /**< M, the number of elements */
  const void* logits;             /**< M logits */
  fusedloss_dtype logits_dtype;   /**< dtype of logits and grad_logits */
  const void* targets;            /**< M targets in [0, 1] (others are computed as written) */
  fusedloss_dtype targets_dtype;  /**< float32 or logits_dtype */
  double alpha;                   /**< positive-class weight, default 0.25; negative turns it off */
  double gamma;                   /**< focusing exponent >= 0, default 2 */
  fusedloss_reduction reduction;  /**< default none, as torchvision */
  fusedloss_empty_mean empty_mean;/**< default NaN */
  void* loss;                     /**< see the shared fields above */
  void* grad_logits;              /**< M gradients */
  const void* grad_loss;          /**< backward's upstream gradient */
  float grad_scale;               /**< forward_backward's scale, default 1 */
  const float* grad_scale_ptr;    /**< forward_backward's scale in memory, optional */
} fusedloss_sigmoid_focal_params;

/**
 * @brief Mean squared error (`torch.nn.MSELoss`) over M contiguous elements: `l_i = (x_i - y_i)^2`.
 *
 * `mean` divides by M. Meant for regression (and for the sigmoid-plus-MSE comparison in the examples).
 */
typedef struct fusedloss_mse_params {
  size_t struct_size;             /**< sizeof(fusedloss_mse_params), set by the init call */
  fusedloss_device device;        /**< where the call runs */
  int64_t numel;                  /**< M, the number of elements */
  const void* logits;             /**< M predictions */
  fusedloss_dtype logits_dtype;   /**< dtype of logits and grad_logits */
  const void* targets;            /**< M targets */
  fusedloss_dtype targets_dtype;  /**< float32 or logits_dtype */
  fusedloss_reduction reduction;  /**< default mean */
  fusedloss_empty_mean empty_mean;/**< default NaN */
  void* loss;                     /**< see the shared fields above */
  void* grad_logits;              /**< M gradients */
  const void* grad_loss;          /**< backward's upstream gradient */
  float grad_scale;               /**< forward_backward's scale, default 1 */
  const float* grad_scale_ptr;    /**< forward_backward's scale in memory, optional */
} fusedloss_mse_params;

/*
 * Row losses share a layout: logits are (N, C) with `row_stride` >= C elements between rows, or
 * (N, C, S) with class c of position s of sample n at n*row_stride + c*S + s (row_stride >= C*S;
 * 0 means C*S, i.e. contiguous). A row is one (n, s); row-indexed buffers (class-index targets, loss
 * under none, lse, grad_loss under none) hold N*S values at n*S + s. Probability targets have the
 * logits' (N, C, S) shape, contiguous. `grad_row_stride` is grad_logits' sample stride (0: the same
 * as the logits'); padding columns are never written.
 */

/**
 * @brief Log-softmax cross-entropy (`torch.nn.CrossEntropyLoss`), with label smoothing, class
 * weights, `ignore_index`, z-loss and logit soft-cap.
 *
 * `targets_dtype` picks the kind of target, as PyTorch's dtype does: int32/int64 are class indices
 * (one per row), float32 or the logits' dtype are class probabilities (C per row).
 * - Index targets: `L_n = (1 - eps) * nll_n + (eps / C) * smooth_n`; `mean` divides by the sum of
 *   `weight[y_n]` over non-ignored rows (their count without weight).
 * - Probability targets: `L_n = -sum_c w_c * q'_{n,c} * lp_{n,c}` with `q' = (1 - eps) q + eps / C`;
 *   `mean` divides by N*S; `ignore_index` does not apply.
 * z-loss and soft-cap apply to both kinds (z-loss to every non-ignored row).
 */
typedef struct fusedloss_cross_entropy_params {
  size_t struct_size;             /**< sizeof(fusedloss_cross_entropy_params), set by the init call */
  fusedloss_device device;        /**< where the call runs */
  int64_t batch;                  /**< N, the number of samples */
  int64_t num_classes;            /**< C */
  int64_t spatial;                /**< S, positions per sample (1 for (N, C) logits), default 1 */
  int64_t row_stride;             /**< elements between samples of logits; 0: C * S */
  const void* logits;             /**< the logits, laid out as above */
  fusedloss_dtype logits_dtype;   /**< dtype of logits and grad_logits */
  const void* targets;            /**< class indices (N*S) or probabilities (N*C*S) */
  fusedloss_dtype targets_dtype;  /**< int32/int64: indices; float32 or logits_dtype: probabilities */
  const float* weight;            /**< optional class weights, length C */
  int64_t ignore_index;           /**< target value whose row is skipped, default -100 */
  double label_smoothing;         /**< eps in [0, 1], default 0 */
  double z_loss;                  /**< lambda >= 0 of the z-loss `lambda * LSE_n^2`, default 0 (off) */
  double softcap;                 /**< s > 0 replaces each logit by s * tanh(x / s); 0 (default): off */
  fusedloss_reduction reduction;  /**< default mean */
  fusedloss_empty_mean empty_mean;/**< default NaN */
  void* loss;                     /**< see the shared fields above */
  void* lse;                      /**< optional per-row LSE (after soft-cap), N*S in the loss dtype:
                                       written by forward / forward_backward; read by backward, which
                                       then skips recomputing it */
  void* z_loss_out;               /**< optional: the z-loss term alone, reduced like the loss (it is
                                       also included in the loss); written by forward calls */
  void* grad_logits;              /**< the gradient, laid out as the logits with grad_row_stride */
  int64_t grad_row_stride;        /**< elements between samples of grad_logits; 0: row_stride */
  const void* grad_loss;          /**< backward's upstream gradient */
  float grad_scale;               /**< forward_backward's scale, default 1 */
  const float* grad_scale_ptr;    /**< forward_backward's scale in memory, optional */
  int64_t* invalid_target_count;  /**< optional counter (call's memory space) that forward and
                                       forward_backward add the count of out-of-range class-index
                                       targets to (backward, which follows a forward, does not) */
} fusedloss_cross_entropy_params;

/**
 * @brief Softmax focal loss for multi-class targets:
 * `l_n = -alpha[y_n] * (1 - p_{n,y_n})^gamma * lp_{n,y_n}`, 0 for an ignored row.
 *
 * Same layout as cross-entropy; class-index targets only. `mean` divides by the count of
 * non-ignored rows. gamma = 0 with alpha = 1 is cross-entropy without smoothing.
 */
typedef struct fusedloss_softmax_focal_params {
  size_t struct_size;             /**< sizeof(fusedloss_softmax_focal_params), set by the init call */
  fusedloss_device device;        /**< where the call runs */
  int64_t batch;                  /**< N, the number of samples */
  int64_t num_classes;            /**< C */
  int64_t spatial;                /**< S, positions per sample, default 1 */
  int64_t row_stride;             /**< elements between samples of logits; 0: C * S */
  const void* logits;             /**< the logits */
  fusedloss_dtype logits_dtype;   /**< dtype of logits and grad_logits */
  const void* targets;            /**< class indices, N*S */
  fusedloss_dtype targets_dtype;  /**< int32 or int64 */
  const float* alpha;             /**< optional per-class weight, length C (absent: all 1) */
  double gamma;                   /**< focusing exponent >= 0, default 2 */
  int64_t ignore_index;           /**< default -100 */
  fusedloss_reduction reduction;  /**< default mean */
  fusedloss_empty_mean empty_mean;/**< default NaN */
  void* loss;                     /**< see the shared fields above */
  void* lse;                      /**< optional per-row LSE, as in cross-entropy */
  void* grad_logits;              /**< the gradient, laid out as the logits with grad_row_stride */
  int64_t grad_row_stride;        /**< elements between samples of grad_logits; 0: row_stride */
  const void* grad_loss;          /**< backward's upstream gradient */
  float grad_scale;               /**< forward_backward's scale, default 1 */
  const float* grad_scale_ptr;    /**< forward_backward's scale in memory, optional */
  int64_t* invalid_target_count;  /**< optional counter of out-of-range targets, as in cross-entropy */
} fusedloss_softmax_focal_params;

/**
 * @def FUSEDLOSS_DECLARE_LOSS
 * @brief Declares one loss's five calls (the macro is undefined after use):
 *
 * - `void fusedloss_<loss>_params_init(fusedloss_<loss>_params* p)`: fill `p` with the defaults
 *   named in the struct's fields and set `p->struct_size`.
 * - `fusedloss_status fusedloss_<loss>_workspace_size(const params* p, size_t* bytes, err)`: the
 *   workspace bytes that each of the three calls needs for `p`.
 * - `fusedloss_status fusedloss_<loss>_forward(const params* p, void* workspace,
 *   size_t workspace_bytes, void* stream, fusedloss_error* err)`: writes `loss` (and, for row
 *   losses, `lse` and `z_loss_out` when given).
 * - `..._backward(same arguments)`: writes `grad_logits` from `grad_loss` (row losses read `lse` when
 *   given instead of recomputing it).
 * - `..._forward_backward(same arguments)`: writes `loss` (when given), the row outputs and
 *   `grad_logits` scaled by the grad scale, in one pass.
 *
 * `workspace` must hold at least the bytes the workspace_size call gave for the same params (it may be
 * NULL when that is 0) and, on CUDA, be 8-byte aligned (as cudaMalloc's memory is); `stream` is a
 * cudaStream_t (NULL: the default stream); `err` may be NULL.
 *
 * Memory traffic. CUDA element losses (bce, sigmoid_focal, mse): every call reads logits, targets
 * and a per-element weight once each (per-class vectors are C floats, cached); forward writes the
 * loss once (M floats under none, one float otherwise, plus 8 bytes a block of workspace);
 * backward also reads grad_loss once and writes grad_logits once; forward_backward writes
 * grad_logits and the loss once each in the same single pass. CUDA row losses (cross_entropy,
 * softmax_focal) with class-index targets and S = 1: forward and forward_backward read each row of
 * logits once, and forward_backward writes each gradient element once (the target's twice: its
 * value without the true-class term, then with it), whenever the row fits on
 * the chip (C up to ~100K 16-bit or ~50K float32 values in one block's shared memory, up to 8x that
 * in a cluster on sm_90); past that, and for probability targets, the logits are read twice (a
 * statistics pass, then the gradient pass); backward reads them once when given the saved `lse`,
 * else as forward_backward does. Per row they read the target (and its weight) once and write the
 * loss, `lse` and `z_loss_out` values asked for; `mean` with class-index targets adds a read of
 * the targets to sum its normaliser on the device first, and label smoothing with class weights a
 * read of the C weights for their total (plus a copy of them into the workspace when they are not
 * 16-byte aligned). The (N, C, S) layout with S > 1 reads the
 * logits twice. Probability targets are read as often as the logits.
 * The CPU path (the reference) reads each element input once, and a row's logits twice for its
 * LSE (max, then sum) plus once more for the outputs written from it.
 */
#define FUSEDLOSS_DECLARE_LOSS(name)                                                              \
  void fusedloss_##name##_params_init(fusedloss_##name##_params* p);                              \
  fusedloss_status fusedloss_##name##_workspace_size(const fusedloss_##name##_params* p,          \
                                                     size_t* bytes, fusedloss_error* err);        \
  fusedloss_status fusedloss_##name##_forward(const fusedloss_##name##_params* p, void* workspace, \
                                              size_t workspace_bytes, void* stream,               \
                                              fusedloss_error* err);                              \
  fusedloss_status fusedloss_##name##_backward(const fusedloss_##name##_params* p,                \
                                               void* workspace, size_t workspace_bytes,           \
                                               void* stream, fusedloss_error* err);               \
  fusedloss_status fusedloss_##name##_forward_backward(const fusedloss_##name##_params* p,        \
                                                       void* workspace, size_t workspace_bytes,   \
                                                       void* stream, fusedloss_error* err);

FUSEDLOSS_DECLARE_LOSS(bce)
FUSEDLOSS_DECLARE_LOSS(sigmoid_focal)
FUSEDLOSS_DECLARE_LOSS(mse)
FUSEDLOSS_DECLARE_LOSS(cross_entropy)
FUSEDLOSS_DECLARE_LOSS(softmax_focal)

#undef FUSEDLOSS_DECLARE_LOSS

/**
 * @brief Multiply `numel` values of `data` in place by the one value at `scale`: the upstream
 * gradient a framework's backward applies to the gradient that forward_backward already wrote.
 * @param[in,out] data a buffer of `dtype` (float32, float16 or bfloat16; float64 on the CPU).
 * @param dtype its dtype.
 * @param numel how many values.
 * @param[in] scale one value of `scale_dtype` (the same choice of dtypes), in `device`'s memory.
 * @param scale_dtype its dtype.
 * @param device where `data` and `scale` live and the call runs.
 * @param stream the stream (CUDA only; NULL: the default stream).
 * @param[out] err optional details.
 * @return the status.
 * @note Reads `scale` once; when it is exactly 1 that is all the call does (on CUDA, a launch whose
 * threads read it and exit: no host synchronisation decides it). Otherwise `data` is read and
 * written once, multiplied in float32 (double on the CPU) and rounded once.
 */
fusedloss_status fusedloss_scale_in_place(void* data, fusedloss_dtype dtype, int64_t numel,
                                          const void* scale, fusedloss_dtype scale_dtype,
                                          fusedloss_device device, void* stream,
                                          fusedloss_error* err);

/**
 * @brief Read a counter (such as `invalid_target_count`) and set it to 0.
 * @param[in,out] counter an int64 in `device`'s memory.
 * @param device where the counter lives.
 * @param stream the stream the counter's writers ran on (CUDA only; NULL: default stream).
 * @param[out] value the count before clearing (host memory).
 * @param[out] err optional details.
 * @return the status.
 * @note Synchronises `stream` on the CUDA path: call it when the caller chooses to wait.
 */
fusedloss_status fusedloss_read_and_clear_counter(int64_t* counter, fusedloss_device device,
                                                  void* stream, int64_t* value,
                                                  fusedloss_error* err);

/** @brief A static, human-readable name of a status ("success", "invalid argument", ...). */
const char* fusedloss_status_string(fusedloss_status status);

/** @brief A static name of a dtype, as PyTorch spells it ("float32", "bfloat16", "int64", ...),
 *  or "unknown". */
const char* fusedloss_dtype_string(fusedloss_dtype dtype);

/** @brief A static name of a reduction ("none", "mean", "sum"), or "unknown". */
const char* fusedloss_reduction_string(fusedloss_reduction reduction);

/** @brief Whether this build has the CUDA path (1) or is the CPU reference only (0). */
int fusedloss_built_with_cuda(void);

#ifdef __cplusplus
}  // extern "C"
#endif

#endif  // FUSEDLOSS_FUSEDLOSS_H
