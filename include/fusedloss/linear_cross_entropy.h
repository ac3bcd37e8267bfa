/**
 * @file fusedloss/linear_cross_entropy.h
 * @brief Fused linear + cross-entropy of the C ABI: the loss of an LLM's classifier head and the
 * gradients of its hidden states, weight and bias, without ever holding the (N, V) logits.
 *
 * The logits are `z = input · linear_weightᵀ + linear_bias`, (N, V); the loss is cross-entropy
 * with class-index targets of them (fusedloss/row_losses.h) with every option. The CUDA path runs
 * chunks of rows through a workspace buffer: the chunk's logits (a cuBLASLt GEMM, float32
 * accumulation, the bias in its epilogue), the row kernel's fused forward and backward in place on
 * them, then `grad_input` of the chunk and its contribution to `grad_linear_weight` (two more
 * GEMMs), and the bias gradient as a column sum. The CPU path is the double-precision reference:
 * the product, then cross-entropy's reference, then the two products of the gradient.
 */
#ifndef FUSEDLOSS_LINEAR_CROSS_ENTROPY_H
#define FUSEDLOSS_LINEAR_CROSS_ENTROPY_H

#include "fusedloss/types.h"

#ifdef __cplusplus
extern "C" {
#endif

/**
 * @brief Linear + cross-entropy: `L_n` of cross-entropy (row_losses.h) on the logits
 * `z_{n,c} = sum_h input_{n,h} * linear_weight_{c,h} + linear_bias_c`.
 *
 * `input` (N, H) has `input_row_stride` >= H elements between rows; `linear_weight` is (V, H)
 * contiguous and `linear_bias` (V), both in the input's dtype. Gradients: `grad_input` (N, H) in
 * the input's dtype, `grad_linear_weight` (V, H) and `grad_linear_bias` (V) in `grad_linear_dtype`
 * (float32, or the input's dtype), each written only when given. With `accumulate_grad_linear`,
 * the weight's and bias's gradients are added to what the buffers hold (gradient accumulation over
 * micro-batches), else overwritten.
 */
typedef struct fusedloss_linear_cross_entropy_params {
  size_t struct_size; /**< sizeof(fusedloss_linear_cross_entropy_params), set by the init call */
  fusedloss_device device;       /**< where the call runs */
  int64_t batch;                 /**< N, rows of hidden states */
  int64_t hidden;                /**< H, the hidden size */
  int64_t num_classes;           /**< V, the vocabulary (rows of linear_weight) */
  const void* input;             /**< the hidden states, (N, H) with input_row_stride */
  int64_t input_row_stride;      /**< elements between rows of input; 0: H */
  fusedloss_dtype input_dtype;   /**< float32, float16, bfloat16 (float64 on the CPU): input's,
                                      linear_weight's, linear_bias's and grad_input's dtype */
  const void* linear_weight;     /**< (V, H), contiguous */
  const void* linear_bias;       /**< optional, (V) */
  const void* targets;           /**< N class indices */
  fusedloss_dtype targets_dtype; /**< int32 or int64 */
  const float* weight;           /**< optional class weights, length V */
  int64_t ignore_index;          /**< target value whose row is skipped, default -100 */
  double label_smoothing;        /**< eps in [0, 1], default 0 */
  double z_loss;                 /**< lambda >= 0, default 0 (off) */
  double softcap;                /**< s > 0 caps each logit to s * tanh(z / s); 0 (default): off */
  fusedloss_reduction reduction; /**< default mean */
  fusedloss_empty_mean empty_mean;   /**< default NaN */
  void* loss;                        /**< see the shared fields (types.h) */
  void* lse;                         /**< optional per-row LSE, N in the loss dtype */
  void* z_loss_out;                  /**< optional: the z-loss term alone, reduced like the loss */
  void* grad_input;                  /**< optional, (N, H) with grad_input_row_stride */
  int64_t grad_input_row_stride;     /**< elements between rows of grad_input; 0: H */
  void* grad_linear_weight;          /**< optional, (V, H) contiguous, in grad_linear_dtype */
  void* grad_linear_bias;            /**< optional, (V), in grad_linear_dtype */
  fusedloss_dtype grad_linear_dtype; /**< float32 (default) or the input's dtype */
  int accumulate_grad_linear;        /**< nonzero: add to grad_linear_weight / _bias; default 0 */
  const void* grad_loss;             /**< backward's upstream gradient */
  float grad_scale;                  /**< forward_backward's scale, default 1 */
  const float* grad_scale_ptr;       /**< forward_backward's scale in memory, optional */
  int64_t* invalid_target_count;     /**< optional counter, as in cross-entropy */
  size_t max_workspace_bytes; /**< the workspace the CUDA calls may use, which sets their chunk of
                                   rows: workspace_size asks for at most this much (0: 512 MiB) */
} fusedloss_linear_cross_entropy_params;

/**
 * @brief Fills `p` with the defaults (each field's comment names it) and sets `p->struct_size`.
 * @param[out] p the params to fill.
 */
FUSEDLOSS_API void fusedloss_linear_cross_entropy_params_init(
    fusedloss_linear_cross_entropy_params* p);

/**
 * @brief The workspace bytes the calls need for `p`: the chunk of rows that fits in
 * `max_workspace_bytes` (one size serves the three calls; 0 on the CPU).
 * @param p the params, checked as the calls check them.
 * @param[out] bytes the size.
 * @param[out] err optional details of a refusal.
 * @return ::FUSEDLOSS_SUCCESS, or the status of the first refused argument (also when not even
 * one row fits in `max_workspace_bytes`).
 */
FUSEDLOSS_API fusedloss_status fusedloss_linear_cross_entropy_workspace_size(
    const fusedloss_linear_cross_entropy_params* p, size_t* bytes, fusedloss_error* err);

/**
 * @brief Forward: writes `loss` and, when given, `lse` and `z_loss_out`.
 * @param p the call's params.
 * @param workspace at least fusedloss_linear_cross_entropy_workspace_size bytes of the device's
 * memory, 256-byte aligned; unused on the CPU.
 * @param workspace_bytes its size: the chunk of rows is the largest that fits in it.
 * @param stream the cudaStream_t to enqueue on; unused on the CPU.
 * @param[out] err optional details of a refusal.
 * @return ::FUSEDLOSS_SUCCESS; ::FUSEDLOSS_INVALID_TARGET on the CPU for targets neither
 * ignore_index nor in [0, V); otherwise the status of the first refused argument, and nothing is
 * written.
 * @note CUDA: no host synchronisation, no allocation, deterministic for given buffers (a fixed
 * chunk order, no split-K, no atomics). Reads `input` once and `linear_weight` (and
 * `linear_bias`) once a chunk; each chunk's logits are written to the workspace and read back
 * once. The chunks are balanced: as many as the largest chunk the workspace holds needs.
 */
FUSEDLOSS_API fusedloss_status fusedloss_linear_cross_entropy_forward(
    const fusedloss_linear_cross_entropy_params* p, void* workspace, size_t workspace_bytes,
    void* stream, fusedloss_error* err);

/**
 * @brief Backward: writes the gradients given (`grad_input`, `grad_linear_weight`,
 * `grad_linear_bias`) from `grad_loss`, recomputing the logits chunk by chunk.
 * @param p the call's params.
 * @param workspace as for forward.
 * @param workspace_bytes its size.
 * @param stream the stream; unused on the CPU.
 * @param[out] err optional details of a refusal.
 * @return as forward.
 * @note As forward, and per chunk reads `linear_weight` and `input` once more (the gradients'
 * products) and the chunk's logit gradient twice; writes `grad_input` once, and the weight's and
 * bias's gradients once a chunk, accumulated across chunks in `grad_linear_dtype` (float32
 * accumulation when that is float32; rounded to the input's dtype once a chunk otherwise).
 */
FUSEDLOSS_API fusedloss_status fusedloss_linear_cross_entropy_backward(
    const fusedloss_linear_cross_entropy_params* p, void* workspace, size_t workspace_bytes,
    void* stream, fusedloss_error* err);

/**
 * @brief The training call: `loss` (and `lse`, `z_loss_out`) and the gradients given, scaled by
 * the grad scale, in one pass over the chunks.
 * @param p the call's params.
 * @param workspace as for forward.
 * @param workspace_bytes its size.
 * @param stream the stream; unused on the CPU.
 * @param[out] err optional details of a refusal.
 * @return as forward.
 */
FUSEDLOSS_API fusedloss_status fusedloss_linear_cross_entropy_forward_backward(
    const fusedloss_linear_cross_entropy_params* p, void* workspace, size_t workspace_bytes,
    void* stream, fusedloss_error* err);

#ifdef __cplusplus
}  // extern "C"
#endif

#endif  // FUSEDLOSS_LINEAR_CROSS_ENTROPY_H
