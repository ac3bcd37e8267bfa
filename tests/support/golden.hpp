// Golden files: expected outputs of every loss computed by an oracle outside the library
// (tests/golden/make_golden.py, from PyTorch in float64), read back and replayed through the public
// C API. Used by tests/test_golden.cpp and by `fusedloss validate`.
//
// Format (one record per case; whitespace-separated tokens; '#' lines and blank lines skipped):
//
//   case <name>
//   loss <bce|sigmoid_focal|mse|cross_entropy|softmax_focal>
//   <key> <value>                  scalar options, any order
//   <array> <count> v1 v2 ...      arrays, on one line
//   end
//
// Scalar keys: logits_dtype, targets_dtype (float32|float16|bfloat16|float64|int32|int64),
// reduction (none|mean|sum), empty_mean (nan|zero), weight_layout (per_element|per_class), numel,
// num_classes, batch, spatial, row_stride, ignore_index (integers), label_smoothing, z_loss,
// softcap, alpha, gamma (reals). An absent key keeps the params' default. Arrays: logits (the
// layout the library reads, padding columns included), targets, weight (BCE weight, cross-entropy
// class weight, softmax-focal alpha), pos_weight, grad_loss, expect_loss, expect_lse,
// expect_z_loss, expect_grad (laid out as logits; padding positions are not compared). Numbers are
// anything strtod reads in full (nan, inf and -inf included).
#pragma once

#include <cstddef>
#include <functional>
#include <map>
#include <string>
#include <vector>

#include "checks.hpp"
#include "fusedloss/fusedloss.h"

namespace fusedloss::checks {

/// One case of a golden file, as written there.
struct golden_case {
  std::string name;
  std::string loss;  ///< bce, sigmoid_focal, mse, cross_entropy or softmax_focal
  std::string file;  ///< where it was read from, for messages
  int line = 0;      ///< the line of its `case`
  std::map<std::string, std::string> scalars;
  std::map<std::string, std::vector<double>> arrays;

  bool has(const std::string& key) const { return scalars.count(key) || arrays.count(key); }
  /// A scalar's text, or `fallback` when the case does not set it.
  std::string scalar(const std::string& key, const std::string& fallback = "") const;
};

/// Every case of a golden file. Throws std::runtime_error naming file:line on malformed input: an
/// unknown key or loss, a bad number or option value, a count that does not match its values, a
/// repeated key, a record without `loss`, `end` or one of the arrays every case needs (logits,
/// targets, grad_loss, expect_loss, expect_grad).
std::vector<golden_case> read_golden_file(const std::string& path);

/// One compared output of one call, or a call that did not return success.
struct golden_result {
  std::string call;    ///< forward, backward or forward_backward
  std::string output;  ///< loss, lse, z_loss, grad, or status when the call failed
  double max_error;  ///< largest |got - want| over the compared values (NaN: they disagree on NaN)
  tolerance tol;     ///< what each value had to meet
  bool pass;         ///< every value within tol, padding and the element past the end untouched,
                     ///< and the call returned success
  std::string detail;  ///< the first failure, or the call's status and message
  /// The compared values (padding positions left out), for a caller that judges them itself. A
  /// failed call leaves `got` empty and `want` one NaN, so the lengths differ.
  std::vector<double> got, want;
  fusedloss_status status = FUSEDLOSS_SUCCESS;  ///< what the call returned
};

/// How to reach device memory, for a device other than the CPU (the library's checks stay free of
/// the CUDA runtime; `fusedloss validate` supplies cudaMalloc / cudaMemcpy / cudaFree).
struct device_memory {
  std::function<void*(size_t bytes)> allocate;
  std::function<void(void* device_dst, const void* host_src, size_t bytes)> to_device;
  std::function<void(void* host_dst, const void* device_src, size_t bytes)> to_host;
  std::function<void(void* device_ptr)> release;
};

/// Runs one case through the public C API with params built by `fusedloss_*_params_init`: forward
/// (loss, and lse / z_loss where expected), backward from grad_loss, then forward_backward (with
/// grad_scale = grad_loss[0] when the reduction is not none; under none only its loss outputs are
/// compared). Every output starts poisoned (0xFF bytes), so an unwritten element fails, and
/// padding columns of the gradient must keep their poison. Losses, LSE and z-loss are compared with
/// rounding_tolerance of the loss dtype (float64 for float64 logits, else float32), the gradient
/// with rounding_tolerance of the logits dtype. A call that does not return success gives one
/// failed result with output "status" (and its outputs are not compared).
///
/// `memory` is needed when `device` is not the CPU: inputs and poisoned outputs are copied there
/// and back. Without it the host buffers are passed as they are (the call will refuse them or
/// report that it is not implemented). Throws std::runtime_error on a case it cannot run (an
/// array whose length does not fit the sizes).
std::vector<golden_result> run_golden_case(const golden_case& c, fusedloss_device device,
                                           const device_memory* memory = nullptr);

}  // namespace fusedloss::checks
