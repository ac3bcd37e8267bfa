/**
 * @file fusedloss/row_losses.h
 * @brief The row losses of the C ABI (cross-entropy, softmax focal): their params and calls.
 */
#ifndef FUSEDLOSS_ROW_LOSSES_H
#define FUSEDLOSS_ROW_LOSSES_H

#include "fusedloss/types.h"

#ifdef __cplusplus
extern "C" {
#endif

/*
 * Row losses share a layout: logits are (N, C) with `row_stride` >= C elements between rows, or
 * (N, C, S) with class c of position s of sample n at n*row_stride + c*S + s (row_stride >= C*S;
 * 0 means C*S, i.e. contiguous). A row is one (n, s); row-indexed buffers (class-index targets,
 * loss under none, lse, grad_loss under none) hold N*S values at n*S + s. Probability targets have
 * the logits' (N, C, S) shape, contiguous. `grad_row_stride` is grad_logits' sample stride (0: the
 * same as the logits'); padding columns are never written.
 */

/**
 * @brief Log-softmax cross-entropy (`torch.nn.CrossEntropyLoss`), with label smoothing, class
 * weights, `ignore_index`, z-loss and logit soft-cap.
 *
 * `targets_dtype` picks the kind of target, as PyTorch's dtype does: int32/int64 are class indices
 * (one per row), float32 or the logits' dtype are class probabilities (C per row).
 * - Index targets: `L_n = (1 - eps) * nll_n + (eps / C) * smooth_n`; `mean` divides by the sum of
 *   `weight[y_n]` over non-ignored rows (their count without weight).
 * - Probability targets: `L_n = -sum_c w_c * q'_{n,c} * lp_{n,c}` with `q' = (1 - eps) q + eps /
 * C`; `mean` divides by N*S; `ignore_index` does not apply. z-loss and soft-cap apply to both kinds
 * (z-loss to every non-ignored row).
 */
typedef struct fusedloss_cross_entropy_params {
  size_t struct_size;           /**< sizeof(fusedloss_cross_entropy_params), set by the init call */
  fusedloss_device device;      /**< where the call runs */
  int64_t batch;                /**< N, the number of samples */
  int64_t num_classes;          /**< C */
  int64_t spatial;              /**< S, positions per sample (1 for (N, C) logits), default 1 */
  int64_t row_stride;           /**< elements between samples of logits; 0: C * S */
  const void* logits;           /**< the logits, laid out as above */
  fusedloss_dtype logits_dtype; /**< dtype of logits and grad_logits */
  const void* targets;          /**< class indices (N*S) or probabilities (N*C*S) */
  fusedloss_dtype
      targets_dtype;      /**< int32/int64: indices; float32 or logits_dtype: probabilities */
  const float* weight;    /**< optional class weights, length C */
  int64_t ignore_index;   /**< target value whose row is skipped, default -100 */
  double label_smoothing; /**< eps in [0, 1], default 0 */
  double z_loss;          /**< lambda >= 0 of the z-loss `lambda * LSE_n^2`, default 0 (off) */
  double softcap;         /**< s > 0 replaces each logit by s * tanh(x / s); 0 (default): off */
  fusedloss_reduction reduction;   /**< default mean */
  fusedloss_empty_mean empty_mean; /**< default NaN */
  void* loss;                      /**< see the shared fields (types.h) */
  void* lse;                     /**< optional per-row LSE (after soft-cap), N*S in the loss dtype:
                                      written by forward / forward_backward; read by backward, which
                                      then skips recomputing it */
  void* z_loss_out;              /**< optional: the z-loss term alone, reduced like the loss (it is
                                      also included in the loss); written by forward calls */
  void* grad_logits;             /**< the gradient, laid out as the logits with grad_row_stride */
  int64_t grad_row_stride;       /**< elements between samples of grad_logits; 0: row_stride */
  const void* grad_loss;         /**< backward's upstream gradient */
  float grad_scale;              /**< forward_backward's scale, default 1 */
  const float* grad_scale_ptr;   /**< forward_backward's scale in memory, optional */
  int64_t* invalid_target_count; /**< optional counter (call's memory space) that forward and
                                      forward_backward add the count of out-of-range class-index
                                      targets to (backward, which follows a forward, does not) */
} fusedloss_cross_entropy_params;

/**
 * @brief Fills `p` with the defaults of cross-entropy (each field's comment names it) and sets
 * `p->struct_size`.
 * @param[out] p the params to fill.
 */
FUSEDLOSS_API void fusedloss_cross_entropy_params_init(fusedloss_cross_entropy_params* p);

/**
 * @brief The workspace bytes each call of cross-entropy needs for `p`: one size serves forward,
 * backward and forward_backward (0 on the CPU).
 * @param p the params, checked as the calls check them.
 * @param[out] bytes the size.
 * @param[out] err optional details of a refusal.
 * @return ::FUSEDLOSS_SUCCESS, or the status of the first refused argument.
 * @note Queries the current CUDA device; no synchronisation.
 */
FUSEDLOSS_API fusedloss_status fusedloss_cross_entropy_workspace_size(
    const fusedloss_cross_entropy_params* p, size_t* bytes, fusedloss_error* err);

/**
 * @brief Cross-entropy, forward: writes `loss` and, when given, `lse` and `z_loss_out`.
 * @param p the call's params, from fusedloss_cross_entropy_params_init.
 * @param workspace at least fusedloss_cross_entropy_workspace_size bytes in the device's memory,
 * 8-byte aligned (NULL when that is 0); unused on the CPU.
 * @param workspace_bytes its size.
 * @param stream the cudaStream_t to enqueue on (NULL: the default stream); unused on the CPU.
 * @param[out] err optional details of a refusal.
 * @return ::FUSEDLOSS_SUCCESS; ::FUSEDLOSS_INVALID_TARGET on the CPU when a class index is neither
 * `ignore_index` nor in [0, C) (the call completed, those rows ignored; on CUDA they are counted in
 * `invalid_target_count`); otherwise the status of the first refused argument, and nothing is
 * written.
 * @note On CUDA the call is enqueued on `stream` and returns: no host synchronisation and no
 * allocation, so it can be captured in a CUDA graph. What it reads and writes:
 * docs/DESIGN.md, "Memory traffic".
 */
FUSEDLOSS_API fusedloss_status
fusedloss_cross_entropy_forward(const fusedloss_cross_entropy_params* p, void* workspace,
                                size_t workspace_bytes, void* stream, fusedloss_error* err);

/**
 * @brief Cross-entropy, backward: writes `grad_logits` from `grad_loss`, and `lse` when given (then
 *   the logits are read once and the LSE is not recomputed).
 * @param p the call's params, from fusedloss_cross_entropy_params_init.
 * @param workspace at least fusedloss_cross_entropy_workspace_size bytes in the device's memory,
 * 8-byte aligned (NULL when that is 0); unused on the CPU.
 * @param workspace_bytes its size.
 * @param stream the cudaStream_t to enqueue on (NULL: the default stream); unused on the CPU.
 * @param[out] err optional details of a refusal.
 * @return ::FUSEDLOSS_SUCCESS; ::FUSEDLOSS_INVALID_TARGET on the CPU when a class index is neither
 * `ignore_index` nor in [0, C) (the call completed, those rows ignored; on CUDA they are counted in
 * `invalid_target_count`); otherwise the status of the first refused argument, and nothing is
 * written.
 * @note On CUDA the call is enqueued on `stream` and returns: no host synchronisation and no
 * allocation, so it can be captured in a CUDA graph. What it reads and writes:
 * docs/DESIGN.md, "Memory traffic".
 */
FUSEDLOSS_API fusedloss_status
fusedloss_cross_entropy_backward(const fusedloss_cross_entropy_params* p, void* workspace,
                                 size_t workspace_bytes, void* stream, fusedloss_error* err);

/**
 * @brief Cross-entropy, fused forward and backward (the training call): writes `grad_logits` scaled
 *   by the grad scale and, when given, `loss`, `lse` and `z_loss_out`, in one pass.
 * @param p the call's params, from fusedloss_cross_entropy_params_init.
 * @param workspace at least fusedloss_cross_entropy_workspace_size bytes in the device's memory,
 * 8-byte aligned (NULL when that is 0); unused on the CPU.
 * @param workspace_bytes its size.
 * @param stream the cudaStream_t to enqueue on (NULL: the default stream); unused on the CPU.
 * @param[out] err optional details of a refusal.
 * @return ::FUSEDLOSS_SUCCESS; ::FUSEDLOSS_INVALID_TARGET on the CPU when a class index is neither
 * `ignore_index` nor in [0, C) (the call completed, those rows ignored; on CUDA they are counted in
 * `invalid_target_count`); otherwise the status of the first refused argument, and nothing is
 * written.
 * @note On CUDA the call is enqueued on `stream` and returns: no host synchronisation and no
 * allocation, so it can be captured in a CUDA graph. What it reads and writes:
 * docs/DESIGN.md, "Memory traffic".
 */
FUSEDLOSS_API fusedloss_status fusedloss_cross_entropy_forward_backward(
    const fusedloss_cross_entropy_params* p, void* workspace, size_t workspace_bytes, void* stream,
    fusedloss_error* err);

/**
 * @brief Softmax focal loss for multi-class targets:
 * `l_n = -alpha[y_n] * (1 - p_{n,y_n})^gamma * lp_{n,y_n}`, 0 for an ignored row.
 *
 * Same layout as cross-entropy; class-index targets only. `mean` divides by the count of
 * non-ignored rows. gamma = 0 with alpha = 1 is cross-entropy without smoothing.
 */
typedef struct fusedloss_softmax_focal_params {
  size_t struct_size;           /**< sizeof(fusedloss_softmax_focal_params), set by the init call */
  fusedloss_device device;      /**< where the call runs */
  int64_t batch;                /**< N, the number of samples */
  int64_t num_classes;          /**< C */
  int64_t spatial;              /**< S, positions per sample, default 1 */
  int64_t row_stride;           /**< elements between samples of logits; 0: C * S */
  const void* logits;           /**< the logits */
  fusedloss_dtype logits_dtype; /**< dtype of logits and grad_logits */
  const void* targets;          /**< class indices, N*S */
  fusedloss_dtype targets_dtype;   /**< int32 or int64 */
  const float* alpha;              /**< optional per-class weight, length C (absent: all 1) */
  double gamma;                    /**< focusing exponent >= 0, default 2 */
  int64_t ignore_index;            /**< default -100 */
  fusedloss_reduction reduction;   /**< default mean */
  fusedloss_empty_mean empty_mean; /**< default NaN */
  void* loss;                      /**< see the shared fields (types.h) */
  void* lse;                       /**< optional per-row LSE, as in cross-entropy */
  void* grad_logits;               /**< the gradient, laid out as the logits with grad_row_stride */
  int64_t grad_row_stride;         /**< elements between samples of grad_logits; 0: row_stride */
  const void* grad_loss;           /**< backward's upstream gradient */
  float grad_scale;                /**< forward_backward's scale, default 1 */
  const float* grad_scale_ptr;     /**< forward_backward's scale in memory, optional */
  int64_t*
      invalid_target_count; /**< optional counter of out-of-range targets, as in cross-entropy */
} fusedloss_softmax_focal_params;

/**
 * @brief Fills `p` with the defaults of softmax focal loss (each field's comment names it) and sets
 * `p->struct_size`.
 * @param[out] p the params to fill.
 */
FUSEDLOSS_API void fusedloss_softmax_focal_params_init(fusedloss_softmax_focal_params* p);

/**
 * @brief The workspace bytes each call of softmax focal loss needs for `p`: one size serves
 * forward, backward and forward_backward (0 on the CPU).
 * @param p the params, checked as the calls check them.
 * @param[out] bytes the size.
 * @param[out] err optional details of a refusal.
 * @return ::FUSEDLOSS_SUCCESS, or the status of the first refused argument.
 * @note Queries the current CUDA device; no synchronisation.
 */
FUSEDLOSS_API fusedloss_status fusedloss_softmax_focal_workspace_size(
    const fusedloss_softmax_focal_params* p, size_t* bytes, fusedloss_error* err);

/**
 * @brief Softmax focal loss, forward: writes `loss` and, when given, `lse` and `z_loss_out`.
 * @param p the call's params, from fusedloss_softmax_focal_params_init.
 * @param workspace at least fusedloss_softmax_focal_workspace_size bytes in the device's memory,
 * 8-byte aligned (NULL when that is 0); unused on the CPU.
 * @param workspace_bytes its size.
 * @param stream the cudaStream_t to enqueue on (NULL: the default stream); unused on the CPU.
 * @param[out] err optional details of a refusal.
 * @return ::FUSEDLOSS_SUCCESS; ::FUSEDLOSS_INVALID_TARGET on the CPU when a class index is neither
 * `ignore_index` nor in [0, C) (the call completed, those rows ignored; on CUDA they are counted in
 * `invalid_target_count`); otherwise the status of the first refused argument, and nothing is
 * written.
 * @note On CUDA the call is enqueued on `stream` and returns: no host synchronisation and no
 * allocation, so it can be captured in a CUDA graph. What it reads and writes:
 * docs/DESIGN.md, "Memory traffic".
 */
FUSEDLOSS_API fusedloss_status
fusedloss_softmax_focal_forward(const fusedloss_softmax_focal_params* p, void* workspace,
                                size_t workspace_bytes, void* stream, fusedloss_error* err);

/**
 * @brief Softmax focal loss, backward: writes `grad_logits` from `grad_loss`, and `lse` when given
 *   (then the logits are read once and the LSE is not recomputed).
 * @param p the call's params, from fusedloss_softmax_focal_params_init.
 * @param workspace at least fusedloss_softmax_focal_workspace_size bytes in the device's memory,
 * 8-byte aligned (NULL when that is 0); unused on the CPU.
 * @param workspace_bytes its size.
 * @param stream the cudaStream_t to enqueue on (NULL: the default stream); unused on the CPU.
 * @param[out] err optional details of a refusal.
 * @return ::FUSEDLOSS_SUCCESS; ::FUSEDLOSS_INVALID_TARGET on the CPU when a class index is neither
 * `ignore_index` nor in [0, C) (the call completed, those rows ignored; on CUDA they are counted in
 * `invalid_target_count`); otherwise the status of the first refused argument, and nothing is
 * written.
 * @note On CUDA the call is enqueued on `stream` and returns: no host synchronisation and no
 * allocation, so it can be captured in a CUDA graph. What it reads and writes:
 * docs/DESIGN.md, "Memory traffic".
 */
FUSEDLOSS_API fusedloss_status
fusedloss_softmax_focal_backward(const fusedloss_softmax_focal_params* p, void* workspace,
                                 size_t workspace_bytes, void* stream, fusedloss_error* err);

/**
 * @brief Softmax focal loss, fused forward and backward (the training call): writes `grad_logits`
 *   scaled by the grad scale and, when given, `loss`, `lse` and `z_loss_out`, in one pass.
 * @param p the call's params, from fusedloss_softmax_focal_params_init.
 * @param workspace at least fusedloss_softmax_focal_workspace_size bytes in the device's memory,
 * 8-byte aligned (NULL when that is 0); unused on the CPU.
 * @param workspace_bytes its size.
 * @param stream the cudaStream_t to enqueue on (NULL: the default stream); unused on the CPU.
 * @param[out] err optional details of a refusal.
 * @return ::FUSEDLOSS_SUCCESS; ::FUSEDLOSS_INVALID_TARGET on the CPU when a class index is neither
 * `ignore_index` nor in [0, C) (the call completed, those rows ignored; on CUDA they are counted in
 * `invalid_target_count`); otherwise the status of the first refused argument, and nothing is
 * written.
 * @note On CUDA the call is enqueued on `stream` and returns: no host synchronisation and no
 * allocation, so it can be captured in a CUDA graph. What it reads and writes:
 * docs/DESIGN.md, "Memory traffic".
 */
FUSEDLOSS_API fusedloss_status fusedloss_softmax_focal_forward_backward(
    const fusedloss_softmax_focal_params* p, void* workspace, size_t workspace_bytes, void* stream,
    fusedloss_error* err);

#ifdef __cplusplus
}  // extern "C"
#endif

#endif  // FUSEDLOSS_ROW_LOSSES_H
