/**
 * @file fusedloss/element_losses.h
 * @brief The element losses of the C ABI (BCE with logits, sigmoid focal, MSE): their params and
 * calls.
 */
#ifndef FUSEDLOSS_ELEMENT_LOSSES_H
#define FUSEDLOSS_ELEMENT_LOSSES_H

#include "fusedloss/types.h"

#ifdef __cplusplus
extern "C" {
#endif

/**
 * @brief BCE with logits (`torch.nn.BCEWithLogitsLoss`) over M contiguous elements, viewed as
 * (M/C, C).
 *
 * `l_i = w_i * [pw_c * y_i * softplus(-x_i) + (1 - y_i) * softplus(x_i)]`; `mean` divides by M
 * (weights never enter the normaliser). Targets are float32 or the logits' dtype; any value is
 * computed as written.
 */
typedef struct fusedloss_bce_params {
  size_t struct_size;            /**< sizeof(fusedloss_bce_params), set by the init call */
  fusedloss_device device;       /**< where the call runs */
  int64_t numel;                 /**< M, the number of elements */
  int64_t num_classes;           /**< C, the length of a per-class weight / pos_weight;
                                      M must be a multiple of it when either is given */
  const void* logits;            /**< M logits */
  fusedloss_dtype logits_dtype;  /**< dtype of logits and grad_logits */
  const void* targets;           /**< M targets */
  fusedloss_dtype targets_dtype; /**< float32 or logits_dtype */
  const float* weight;           /**< optional rescaling weight, laid out per weight_layout */
  fusedloss_weight_layout weight_layout; /**< per element (default) or per class */
  const float* pos_weight;               /**< optional weight of positive examples, length C */
  fusedloss_reduction reduction;         /**< default mean */
  fusedloss_empty_mean empty_mean;       /**< default NaN */
  void* loss;                            /**< see the shared fields (types.h) */
  void* grad_logits;                     /**< M gradients */
  const void* grad_loss;                 /**< backward's upstream gradient */
  float grad_scale;                      /**< forward_backward's scale, default 1 */
  const float* grad_scale_ptr;           /**< forward_backward's scale in memory, optional */
} fusedloss_bce_params;

/**
 * @brief Fills `p` with the defaults of BCE with logits (each field's comment names it) and sets
 * `p->struct_size`.
 * @param[out] p the params to fill.
 */
FUSEDLOSS_API void fusedloss_bce_params_init(fusedloss_bce_params* p);

/**
 * @brief The workspace bytes each call of BCE with logits needs for `p`: one size serves forward,
 * backward and forward_backward (0 on the CPU).
 * @param p the params, checked as the calls check them.
 * @param[out] bytes the size.
 * @param[out] err optional details of a refusal.
 * @return ::FUSEDLOSS_SUCCESS, or the status of the first refused argument.
 * @note Queries the current CUDA device; no synchronisation.
 */
FUSEDLOSS_API fusedloss_status fusedloss_bce_workspace_size(const fusedloss_bce_params* p,
                                                            size_t* bytes, fusedloss_error* err);

/**
 * @brief BCE with logits, forward: writes `loss`.
 * @param p the call's params, from fusedloss_bce_params_init.
 * @param workspace at least fusedloss_bce_workspace_size bytes in the device's memory, 8-byte
 * aligned (NULL when that is 0); unused on the CPU.
 * @param workspace_bytes its size.
 * @param stream the cudaStream_t to enqueue on (NULL: the default stream); unused on the CPU.
 * @param[out] err optional details of a refusal.
 * @return ::FUSEDLOSS_SUCCESS; otherwise the status of the first refused argument, and
 * nothing is written.
 * @note On CUDA the call is enqueued on `stream` and returns: no host synchronisation and no
 * allocation, so it can be captured in a CUDA graph. What it reads and writes:
 * docs/DESIGN.md, "Memory traffic".
 */
FUSEDLOSS_API fusedloss_status fusedloss_bce_forward(const fusedloss_bce_params* p, void* workspace,
                                                     size_t workspace_bytes, void* stream,
                                                     fusedloss_error* err);

/**
 * @brief BCE with logits, backward: writes `grad_logits` from `grad_loss`.
 * @param p the call's params, from fusedloss_bce_params_init.
 * @param workspace at least fusedloss_bce_workspace_size bytes in the device's memory, 8-byte
 * aligned (NULL when that is 0); unused on the CPU.
 * @param workspace_bytes its size.
 * @param stream the cudaStream_t to enqueue on (NULL: the default stream); unused on the CPU.
 * @param[out] err optional details of a refusal.
 * @return ::FUSEDLOSS_SUCCESS; otherwise the status of the first refused argument, and
 * nothing is written.
 * @note On CUDA the call is enqueued on `stream` and returns: no host synchronisation and no
 * allocation, so it can be captured in a CUDA graph. What it reads and writes:
 * docs/DESIGN.md, "Memory traffic".
 */
FUSEDLOSS_API fusedloss_status fusedloss_bce_backward(const fusedloss_bce_params* p,
                                                      void* workspace, size_t workspace_bytes,
                                                      void* stream, fusedloss_error* err);

/**
 * @brief BCE with logits, fused forward and backward (the training call): writes `grad_logits`
 *   scaled by the grad scale and, when given, `loss`, in one pass.
 * @param p the call's params, from fusedloss_bce_params_init.
 * @param workspace at least fusedloss_bce_workspace_size bytes in the device's memory, 8-byte
 * aligned (NULL when that is 0); unused on the CPU.
 * @param workspace_bytes its size.
 * @param stream the cudaStream_t to enqueue on (NULL: the default stream); unused on the CPU.
 * @param[out] err optional details of a refusal.
 * @return ::FUSEDLOSS_SUCCESS; otherwise the status of the first refused argument, and
 * nothing is written.
 * @note On CUDA the call is enqueued on `stream` and returns: no host synchronisation and no
 * allocation, so it can be captured in a CUDA graph. What it reads and writes:
 * docs/DESIGN.md, "Memory traffic".
 */
FUSEDLOSS_API fusedloss_status fusedloss_bce_forward_backward(const fusedloss_bce_params* p,
                                                              void* workspace,
                                                              size_t workspace_bytes, void* stream,
                                                              fusedloss_error* err);

/**
 * @brief Sigmoid focal loss (`torchvision.ops.sigmoid_focal_loss`) over M contiguous elements.
 *
 * `l = alpha_t * (1 - p_t)^gamma * ce` with `ce` BCE with logits' form; finite loss and gradient
 * for every finite logit and every gamma >= 0. `mean` divides by M.
 */
typedef struct fusedloss_sigmoid_focal_params {
  size_t struct_size;           /**< sizeof(fusedloss_sigmoid_focal_params), set by the init call */
  fusedloss_device device;      /**< where the call runs */
  int64_t numel;                /**< M, the number of elements */
  const void* logits;           /**< M logits */
  fusedloss_dtype logits_dtype; /**< dtype of logits and grad_logits */
  const void* targets;          /**< M targets in [0, 1] (others are computed as written) */
  fusedloss_dtype targets_dtype; /**< float32 or logits_dtype */
  double alpha;                  /**< positive-class weight, default 0.25; negative turns it off */
  double gamma;                  /**< focusing exponent >= 0, default 2 */
  fusedloss_reduction reduction; /**< default none, as torchvision */
  fusedloss_empty_mean empty_mean; /**< default NaN */
  void* loss;                      /**< see the shared fields (types.h) */
  void* grad_logits;               /**< M gradients */
  const void* grad_loss;           /**< backward's upstream gradient */
  float grad_scale;                /**< forward_backward's scale, default 1 */
  const float* grad_scale_ptr;     /**< forward_backward's scale in memory, optional */
} fusedloss_sigmoid_focal_params;

/**
 * @brief Fills `p` with the defaults of sigmoid focal loss (each field's comment names it) and sets
 * `p->struct_size`.
 * @param[out] p the params to fill.
 */
FUSEDLOSS_API void fusedloss_sigmoid_focal_params_init(fusedloss_sigmoid_focal_params* p);

/**
 * @brief The workspace bytes each call of sigmoid focal loss needs for `p`: one size serves
 * forward, backward and forward_backward (0 on the CPU).
 * @param p the params, checked as the calls check them.
 * @param[out] bytes the size.
 * @param[out] err optional details of a refusal.
 * @return ::FUSEDLOSS_SUCCESS, or the status of the first refused argument.
 * @note Queries the current CUDA device; no synchronisation.
 */
FUSEDLOSS_API fusedloss_status fusedloss_sigmoid_focal_workspace_size(
    const fusedloss_sigmoid_focal_params* p, size_t* bytes, fusedloss_error* err);

/**
 * @brief Sigmoid focal loss, forward: writes `loss`.
 * @param p the call's params, from fusedloss_sigmoid_focal_params_init.
 * @param workspace at least fusedloss_sigmoid_focal_workspace_size bytes in the device's memory,
 * 8-byte aligned (NULL when that is 0); unused on the CPU.
 * @param workspace_bytes its size.
 * @param stream the cudaStream_t to enqueue on (NULL: the default stream); unused on the CPU.
 * @param[out] err optional details of a refusal.
 * @return ::FUSEDLOSS_SUCCESS; otherwise the status of the first refused argument, and
 * nothing is written.
 * @note On CUDA the call is enqueued on `stream` and returns: no host synchronisation and no
 * allocation, so it can be captured in a CUDA graph. What it reads and writes:
 * docs/DESIGN.md, "Memory traffic".
 */
FUSEDLOSS_API fusedloss_status
fusedloss_sigmoid_focal_forward(const fusedloss_sigmoid_focal_params* p, void* workspace,
                                size_t workspace_bytes, void* stream, fusedloss_error* err);

/**
 * @brief Sigmoid focal loss, backward: writes `grad_logits` from `grad_loss`.
 * @param p the call's params, from fusedloss_sigmoid_focal_params_init.
 * @param workspace at least fusedloss_sigmoid_focal_workspace_size bytes in the device's memory,
 * 8-byte aligned (NULL when that is 0); unused on the CPU.
 * @param workspace_bytes its size.
 * @param stream the cudaStream_t to enqueue on (NULL: the default stream); unused on the CPU.
 * @param[out] err optional details of a refusal.
 * @return ::FUSEDLOSS_SUCCESS; otherwise the status of the first refused argument, and
 * nothing is written.
 * @note On CUDA the call is enqueued on `stream` and returns: no host synchronisation and no
 * allocation, so it can be captured in a CUDA graph. What it reads and writes:
 * docs/DESIGN.md, "Memory traffic".
 */
FUSEDLOSS_API fusedloss_status
fusedloss_sigmoid_focal_backward(const fusedloss_sigmoid_focal_params* p, void* workspace,
                                 size_t workspace_bytes, void* stream, fusedloss_error* err);

/**
 * @brief Sigmoid focal loss, fused forward and backward (the training call): writes `grad_logits`
 *   scaled by the grad scale and, when given, `loss`, in one pass.
 * @param p the call's params, from fusedloss_sigmoid_focal_params_init.
 * @param workspace at least fusedloss_sigmoid_focal_workspace_size bytes in the device's memory,
 * 8-byte aligned (NULL when that is 0); unused on the CPU.
 * @param workspace_bytes its size.
 * @param stream the cudaStream_t to enqueue on (NULL: the default stream); unused on the CPU.
 * @param[out] err optional details of a refusal.
 * @return ::FUSEDLOSS_SUCCESS; otherwise the status of the first refused argument, and
 * nothing is written.
 * @note On CUDA the call is enqueued on `stream` and returns: no host synchronisation and no
 * allocation, so it can be captured in a CUDA graph. What it reads and writes:
 * docs/DESIGN.md, "Memory traffic".
 */
FUSEDLOSS_API fusedloss_status fusedloss_sigmoid_focal_forward_backward(
    const fusedloss_sigmoid_focal_params* p, void* workspace, size_t workspace_bytes, void* stream,
    fusedloss_error* err);

/**
 * @brief Mean squared error (`torch.nn.MSELoss`) over M contiguous elements: `l_i = (x_i - y_i)^2`.
 *
 * `mean` divides by M. Meant for regression (and for the sigmoid-plus-MSE comparison in the
 * examples).
 */
typedef struct fusedloss_mse_params {
  size_t struct_size;              /**< sizeof(fusedloss_mse_params), set by the init call */
  fusedloss_device device;         /**< where the call runs */
  int64_t numel;                   /**< M, the number of elements */
  const void* logits;              /**< M predictions */
  fusedloss_dtype logits_dtype;    /**< dtype of logits and grad_logits */
  const void* targets;             /**< M targets */
  fusedloss_dtype targets_dtype;   /**< float32 or logits_dtype */
  fusedloss_reduction reduction;   /**< default mean */
  fusedloss_empty_mean empty_mean; /**< default NaN */
  void* loss;                      /**< see the shared fields (types.h) */
  void* grad_logits;               /**< M gradients */
  const void* grad_loss;           /**< backward's upstream gradient */
  float grad_scale;                /**< forward_backward's scale, default 1 */
  const float* grad_scale_ptr;     /**< forward_backward's scale in memory, optional */
} fusedloss_mse_params;

/**
 * @brief Fills `p` with the defaults of MSE (each field's comment names it) and sets
 * `p->struct_size`.
 * @param[out] p the params to fill.
 */
FUSEDLOSS_API void fusedloss_mse_params_init(fusedloss_mse_params* p);

/**
 * @brief The workspace bytes each call of MSE needs for `p`: one size serves forward, backward and
 * forward_backward (0 on the CPU).
 * @param p the params, checked as the calls check them.
 * @param[out] bytes the size.
 * @param[out] err optional details of a refusal.
 * @return ::FUSEDLOSS_SUCCESS, or the status of the first refused argument.
 * @note Queries the current CUDA device; no synchronisation.
 */
FUSEDLOSS_API fusedloss_status fusedloss_mse_workspace_size(const fusedloss_mse_params* p,
                                                            size_t* bytes, fusedloss_error* err);

/**
 * @brief MSE, forward: writes `loss`.
 * @param p the call's params, from fusedloss_mse_params_init.
 * @param workspace at least fusedloss_mse_workspace_size bytes in the device's memory, 8-byte
 * aligned (NULL when that is 0); unused on the CPU.
 * @param workspace_bytes its size.
 * @param stream the cudaStream_t to enqueue on (NULL: the default stream); unused on the CPU.
 * @param[out] err optional details of a refusal.
 * @return ::FUSEDLOSS_SUCCESS; otherwise the status of the first refused argument, and
 * nothing is written.
 * @note On CUDA the call is enqueued on `stream` and returns: no host synchronisation and no
 * allocation, so it can be captured in a CUDA graph. What it reads and writes:
 * docs/DESIGN.md, "Memory traffic".
 */
FUSEDLOSS_API fusedloss_status fusedloss_mse_forward(const fusedloss_mse_params* p, void* workspace,
                                                     size_t workspace_bytes, void* stream,
                                                     fusedloss_error* err);

/**
 * @brief MSE, backward: writes `grad_logits` from `grad_loss`.
 * @param p the call's params, from fusedloss_mse_params_init.
 * @param workspace at least fusedloss_mse_workspace_size bytes in the device's memory, 8-byte
 * aligned (NULL when that is 0); unused on the CPU.
 * @param workspace_bytes its size.
 * @param stream the cudaStream_t to enqueue on (NULL: the default stream); unused on the CPU.
 * @param[out] err optional details of a refusal.
 * @return ::FUSEDLOSS_SUCCESS; otherwise the status of the first refused argument, and
 * nothing is written.
 * @note On CUDA the call is enqueued on `stream` and returns: no host synchronisation and no
 * allocation, so it can be captured in a CUDA graph. What it reads and writes:
 * docs/DESIGN.md, "Memory traffic".
 */
FUSEDLOSS_API fusedloss_status fusedloss_mse_backward(const fusedloss_mse_params* p,
                                                      void* workspace, size_t workspace_bytes,
                                                      void* stream, fusedloss_error* err);

/**
 * @brief MSE, fused forward and backward (the training call): writes `grad_logits` scaled by the
 *   grad scale and, when given, `loss`, in one pass.
 * @param p the call's params, from fusedloss_mse_params_init.
 * @param workspace at least fusedloss_mse_workspace_size bytes in the device's memory, 8-byte
 * aligned (NULL when that is 0); unused on the CPU.
 * @param workspace_bytes its size.
 * @param stream the cudaStream_t to enqueue on (NULL: the default stream); unused on the CPU.
 * @param[out] err optional details of a refusal.
 * @return ::FUSEDLOSS_SUCCESS; otherwise the status of the first refused argument, and
 * nothing is written.
 * @note On CUDA the call is enqueued on `stream` and returns: no host synchronisation and no
 * allocation, so it can be captured in a CUDA graph. What it reads and writes:
 * docs/DESIGN.md, "Memory traffic".
 */
FUSEDLOSS_API fusedloss_status fusedloss_mse_forward_backward(const fusedloss_mse_params* p,
                                                              void* workspace,
                                                              size_t workspace_bytes, void* stream,
                                                              fusedloss_error* err);

#ifdef __cplusplus
}  // extern "C"
#endif

#endif  // FUSEDLOSS_ELEMENT_LOSSES_H
