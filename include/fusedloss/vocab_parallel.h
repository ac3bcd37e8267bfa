/**
 * @file fusedloss/vocab_parallel.h
 * @brief Vocabulary-parallel cross-entropy of the C ABI: the shard calls with which ranks that
 * each hold a slice of every row's classes compute the loss of whole rows without exchanging
 * logits.
 *
 * A rank holds the logits of classes `[vocab_start, vocab_start + num_classes)` of `vocab_size`
 * for every row; the ranks' slices tile the vocabulary. Per training step every rank runs, on its
 * own stream and with its own slice of the class weights:
 *
 * 1. fusedloss_cross_entropy_shard_partial: reads its shard once and writes the rows' local
 *    summaries into `summary`;
 * 2. an all-reduce with MAX over the first `batch` values of `summary`
 *    (FUSEDLOSS_SHARD_SUMMARY_MAX);
 * 3. fusedloss_cross_entropy_shard_rescale: moves the local sums to the global maximum, in place;
 * 4. an all-reduce with SUM over the `FUSEDLOSS_SHARD_SUMMARY_SUMMED * batch` values that start
 *    at `summary + FUSEDLOSS_SHARD_SUMMARY_SUM_EXP * batch`;
 * 5. fusedloss_cross_entropy_shard_finish: writes the loss (the same on every rank), the per-row
 *    LSE and, when `grad_logits` is given, the shard's gradient (reading the shard again).
 *
 * The collectives carry `batch` and `5 * batch` values of the loss dtype (float32, float64 for
 * float64 logits), never logits. The shard is read twice and its gradient written once. The
 * result equals fusedloss_cross_entropy_forward_backward on the whole rows with the same options
 * (class-index targets), to the rounding of the summaries' sums.
 */
#ifndef FUSEDLOSS_VOCAB_PARALLEL_H
#define FUSEDLOSS_VOCAB_PARALLEL_H

#include "fusedloss/types.h"

#ifdef __cplusplus
extern "C" {
#endif

/**
 * @brief Where each field of a row's summary lives: field `f` of row `r` is
 * `summary[f * batch + r]`, in the loss dtype. All fields are of the soft-capped logits.
 */
typedef enum fusedloss_shard_summary_field {
  /** The shard's maximum logit (-inf for an all -inf shard); all-reduced with MAX. */
  FUSEDLOSS_SHARD_SUMMARY_MAX = 0,
  /** What this rank's sums are relative to (its maximum, or 0 when that is -inf); kept local. */
  FUSEDLOSS_SHARD_SUMMARY_REFERENCE = 1,
  /** sum over the shard of exp(x_c - reference); all-reduced with SUM, as are the fields below. */
  FUSEDLOSS_SHARD_SUMMARY_SUM_EXP = 2,
  /** sum over the shard of w_c * (x_c - reference), w_c the class weight (1 without `weight`);
   *  0 without label smoothing. */
  FUSEDLOSS_SHARD_SUMMARY_WEIGHTED_SUM = 3,
  /** sum over the shard of w_c; 0 without label smoothing. */
  FUSEDLOSS_SHARD_SUMMARY_WEIGHT_SUM = 4,
  /** The target's logit on the rank whose slice holds the target, 0 on the others. */
  FUSEDLOSS_SHARD_SUMMARY_TARGET_LOGIT = 5,
  /** The target's class weight (1 without `weight`) on the rank that holds it, 0 elsewhere. */
  FUSEDLOSS_SHARD_SUMMARY_TARGET_WEIGHT = 6,
  /** The number of fields: `summary` holds `FUSEDLOSS_SHARD_SUMMARY_FIELDS * batch` values. */
  FUSEDLOSS_SHARD_SUMMARY_FIELDS = 7
} fusedloss_shard_summary_field;

/** @brief How many fields (of `batch` values each) the SUM all-reduce takes: those from
 *  ::FUSEDLOSS_SHARD_SUMMARY_SUM_EXP on. */
#define FUSEDLOSS_SHARD_SUMMARY_SUMMED \
  (FUSEDLOSS_SHARD_SUMMARY_FIELDS - FUSEDLOSS_SHARD_SUMMARY_SUM_EXP)

/**
 * @brief One rank's share of a vocabulary-parallel cross-entropy with class-index targets.
 *
 * Logits are (batch, num_classes) with `row_stride` >= num_classes elements between rows; targets
 * hold `batch` global class indices in [0, vocab_size), the same on every rank. Per row, with
 * `eps` the label smoothing and `V = vocab_size`:
 * `L_n = (1 - eps) * w_{y_n} * (LSE_n - x_{n,y_n}) + (eps / V) * sum_c w_c * (LSE_n - x_{n,c})
 *  + z_loss * LSE_n^2`, the sums over the whole vocabulary; `mean` divides by the sum of
 * `w_{y_n}` over non-ignored rows (their count without weight). Every rank must pass the same
 * targets, options, reduction and `vocab_size`, and its own slice of `weight`.
 */
typedef struct fusedloss_cross_entropy_shard_params {
  size_t struct_size; /**< sizeof(fusedloss_cross_entropy_shard_params), set by the init call */
  fusedloss_device device;       /**< where the call runs */
  int64_t batch;                 /**< N, the number of rows */
  int64_t num_classes;           /**< this rank's slice width, >= 1 */
  int64_t vocab_start;           /**< the first class of this rank's slice */
  int64_t vocab_size;            /**< V, the classes of a whole row over all ranks */
  int64_t row_stride;            /**< elements between rows of logits; 0: num_classes */
  const void* logits;            /**< this rank's shard, (batch, num_classes) with row_stride */
  fusedloss_dtype logits_dtype;  /**< float32, float16, bfloat16 (float64 on the CPU) */
  const void* targets;           /**< batch global class indices */
  fusedloss_dtype targets_dtype; /**< int32 or int64 */
  const float* weight;           /**< optional weights of this rank's classes, length num_classes */
  int64_t ignore_index;          /**< target value whose row is skipped, default -100 */
  double label_smoothing;        /**< eps in [0, 1], default 0; its eps / V uses vocab_size */
  double z_loss;  /**< lambda >= 0 of the z-loss `lambda * LSE_n^2`, default 0 (off) */
  double softcap; /**< s > 0 replaces each logit by s * tanh(x / s); 0 (default): off */
  fusedloss_reduction reduction;   /**< default mean */
  fusedloss_empty_mean empty_mean; /**< default NaN */
  void* summary;                   /**< FUSEDLOSS_SHARD_SUMMARY_FIELDS * batch values in the loss
                                        dtype: written by partial, updated by rescale, read by
                                        finish */
  void* loss;        /**< finish's loss (see the shared fields in types.h), the same on every rank;
                          optional */
  void* lse;         /**< optional: finish's per-row LSE of the whole rows */
  void* z_loss_out;  /**< optional: finish's z-loss term alone, reduced like the loss */
  void* grad_logits; /**< optional: finish's gradient of this rank's shard, laid out as the
                          logits with grad_row_stride; may equal logits (equal strides) */
  int64_t grad_row_stride;       /**< elements between rows of grad_logits; 0: row_stride */
  float grad_scale;              /**< the gradient's upstream scale, default 1 */
  const float* grad_scale_ptr;   /**< the scale in memory, optional (times grad_scale) */
  int64_t* invalid_target_count; /**< optional counter that finish adds the count of targets
                                      neither ignore_index nor in [0, vocab_size) to, on the rank
                                      whose slice starts at class 0 only (so that a sum of the
                                      ranks' counters counts each once) */
} fusedloss_cross_entropy_shard_params;

/**
 * @brief Fills `p` with the defaults of a shard call (each field's comment names it) and sets
 * `p->struct_size`.
 * @param[out] p the params to fill.
 */
FUSEDLOSS_API void fusedloss_cross_entropy_shard_params_init(
    fusedloss_cross_entropy_shard_params* p);

/**
 * @brief The workspace bytes each shard call needs for `p` (one size serves the three; 0 on the
 * CPU).
 * @param p the params, checked as the calls check them.
 * @param[out] bytes the size.
 * @param[out] err optional details of a refusal.
 * @return ::FUSEDLOSS_SUCCESS, or the status of the first refused argument.
 */
FUSEDLOSS_API fusedloss_status fusedloss_cross_entropy_shard_workspace_size(
    const fusedloss_cross_entropy_shard_params* p, size_t* bytes, fusedloss_error* err);

/**
 * @brief Step 1: reads the shard once and writes every row's summary (all fields) to `summary`.
 * @param p the call's params.
 * @param workspace at least fusedloss_cross_entropy_shard_workspace_size bytes in the device's
 * memory, 8-byte aligned (NULL when that is 0); unused on the CPU.
 * @param workspace_bytes its size.
 * @param stream the cudaStream_t to enqueue on (NULL: the default stream); unused on the CPU.
 * @param[out] err optional details of a refusal.
 * @return ::FUSEDLOSS_SUCCESS, or the status of the first refused argument (nothing written).
 * @note On CUDA: enqueued on `stream`, no synchronisation, no allocation (graph-capturable).
 * Reads the logits once, the targets and `weight` once; writes `summary` once.
 */
FUSEDLOSS_API fusedloss_status fusedloss_cross_entropy_shard_partial(
    const fusedloss_cross_entropy_shard_params* p, void* workspace, size_t workspace_bytes,
    void* stream, fusedloss_error* err);

/**
 * @brief Step 3, after the MAX all-reduce: moves the SUM_EXP and WEIGHTED_SUM fields from this
 * rank's reference to the global maximum, in place (reads the first five fields, writes two).
 * @param p the call's params (only `device`, `batch`, `summary` and what validates them are read).
 * @param workspace as for partial.
 * @param workspace_bytes its size.
 * @param stream the stream; unused on the CPU.
 * @param[out] err optional details of a refusal.
 * @return ::FUSEDLOSS_SUCCESS, or the status of the first refused argument (nothing written).
 */
FUSEDLOSS_API fusedloss_status fusedloss_cross_entropy_shard_rescale(
    const fusedloss_cross_entropy_shard_params* p, void* workspace, size_t workspace_bytes,
    void* stream, fusedloss_error* err);

/**
 * @brief Step 5, after the SUM all-reduce: writes `loss`, `lse`, `z_loss_out` (each when given)
 * from the summaries alone, and, when `grad_logits` is given, the shard's gradient scaled by the
 * grad scale (reading the shard once more).
 * @param p the call's params.
 * @param workspace as for partial.
 * @param workspace_bytes its size.
 * @param stream the stream; unused on the CPU.
 * @param[out] err optional details of a refusal.
 * @return ::FUSEDLOSS_SUCCESS; ::FUSEDLOSS_INVALID_TARGET on the CPU when a target is neither
 * `ignore_index` nor in [0, vocab_size) (the call completed, those rows ignored; every rank
 * returns it); otherwise the status of the first refused argument, and nothing is written.
 * @note On CUDA: enqueued on `stream`, no synchronisation, no allocation. Reads `summary` and the
 * targets once; with `grad_logits` also the logits and `weight` once, and writes the gradient
 * once. Ignored rows' gradients are 0 and their logits are not read.
 */
FUSEDLOSS_API fusedloss_status
fusedloss_cross_entropy_shard_finish(const fusedloss_cross_entropy_shard_params* p, void* workspace,
                                     size_t workspace_bytes, void* stream, fusedloss_error* err);

#ifdef __cplusplus
}  // extern "C"
#endif

#endif  // FUSEDLOSS_VOCAB_PARALLEL_H
