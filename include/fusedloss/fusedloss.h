/**
 * @file fusedloss.h
 * @brief The C ABI of fusedloss: every loss, its three calls, and the types they share.
 *
 * Every loss has a params struct and five functions:
 * - `fusedloss_<loss>_params_init(p)` fills `p` with PyTorch's defaults and sets `p->struct_size`;
 * - `fusedloss_<loss>_workspace_size(p, &bytes, err)` says how much workspace the calls need for
 * `p` (the same amount serves all three calls; 0 on the CPU);
 * - `fusedloss_<loss>_forward` computes the loss (and, for row losses, the per-row LSE);
 * - `fusedloss_<loss>_backward` computes the gradient of the logits from the upstream gradient;
 * - `fusedloss_<loss>_forward_backward` computes loss and gradient in one pass (the training call).
 *
 * All calls are stateless: they read the params, the workspace and the stream and nothing else.
 * They check every argument the host can see before touching memory; a refused call writes nothing
 * and returns a status whose details (the argument's name and a message) go to the optional `err`.
 *
 * Pointers point to host memory when `device` is ::FUSEDLOSS_DEVICE_CPU and to memory of the
 * current device when it is ::FUSEDLOSS_DEVICE_CUDA (another device's memory is refused). The CPU
 * path is the double-precision reference: results are exact up to the final rounding to the output
 * dtype. It ignores `workspace` and `stream`.
 *
 * The header needs no CUDA header: streams travel as `void*` (null is the default stream). The
 * losses' params and calls are in fusedloss/element_losses.h and fusedloss/row_losses.h, fused
 * linear + cross-entropy's in fusedloss/linear_cross_entropy.h, and vocabulary-parallel
 * cross-entropy's shard calls in fusedloss/vocab_parallel.h, which this header includes; what each
 * call reads and writes is in docs/DESIGN.md ("Memory traffic").
 */
#ifndef FUSEDLOSS_FUSEDLOSS_H
#define FUSEDLOSS_FUSEDLOSS_H

#include "fusedloss/element_losses.h"
#include "fusedloss/linear_cross_entropy.h"
#include "fusedloss/row_losses.h"
#include "fusedloss/types.h"
#include "fusedloss/vocab_parallel.h"

#ifdef __cplusplus
extern "C" {
#endif

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
FUSEDLOSS_API fusedloss_status fusedloss_scale_in_place(void* data, fusedloss_dtype dtype,
                                                        int64_t numel, const void* scale,
                                                        fusedloss_dtype scale_dtype,
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
FUSEDLOSS_API fusedloss_status fusedloss_read_and_clear_counter(int64_t* counter,
                                                                fusedloss_device device,
                                                                void* stream, int64_t* value,
                                                                fusedloss_error* err);

/** @brief A static, human-readable name of a status ("success", "invalid argument", ...). */
FUSEDLOSS_API const char* fusedloss_status_string(fusedloss_status status);

/** @brief A static name of a dtype, as PyTorch spells it ("float32", "bfloat16", "int64", ...),
 *  or "unknown". */
FUSEDLOSS_API const char* fusedloss_dtype_string(fusedloss_dtype dtype);

/** @brief A static name of a reduction ("none", "mean", "sum"), or "unknown". */
FUSEDLOSS_API const char* fusedloss_reduction_string(fusedloss_reduction reduction);

/** @brief Whether this build has the CUDA path (1) or is the CPU reference only (0). */
FUSEDLOSS_API int fusedloss_built_with_cuda(void);

/** @brief The version of the library loaded, as ::FUSEDLOSS_VERSION encodes it (which is that of
 *  the headers a caller compiled against). */
FUSEDLOSS_API int fusedloss_version(void);

#ifdef __cplusplus
}  // extern "C"
#endif

#endif  // FUSEDLOSS_FUSEDLOSS_H
