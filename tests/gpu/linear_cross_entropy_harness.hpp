// The harness of fused linear + cross-entropy's GPU tests (test_linear_cross_entropy.cpp): CUDA
// against the CPU reference (the same C API, device CPU, on float64 copies of the very values the
// GPU reads). One case (lce_case), its inputs, the calls on either device, the device buffers of a
// GPU run, and the driver that runs a case on both and compares every output within the bounds
// linear_cross_entropy_compare.cpp derives. Outputs start poisoned (every byte 0xFF, a NaN), so a
// value the call fails to write fails the comparison; grad_input's padding columns must keep it,
// as must every output a call does not write.
#pragma once

#include <gtest/gtest.h>

#include <cstdint>
#include <random>
#include <sstream>
#include <string>
#include <vector>

#include "checks.hpp"
#include "fusedloss/fusedloss.hpp"
#include "gpu_support.hpp"

namespace fusedloss::gpu_tests::linear_cross_entropy {

using checks::buffer;

constexpr int64_t kCounterStart = 7;  // invalid_target_count before a call: calls add to it
constexpr float kScaleValue = 1.5f;   // *grad_scale_ptr

// ------------------------------------------------------------------------------------------------
// One case.

struct lce_case {
  int64_t n = 7, h = 33, v = 1000;
  int64_t input_padding = 0;  // input_row_stride = H + input_padding (0: passed as 0)
  int64_t grad_padding = 0;   // grad_input_row_stride = H + grad_padding (0: passed as 0)
  bool bias = true;
  bool weight = false;
  bool zero_weight = false;  // every class weight 0: the empty mean of a zero total weight
  int64_t ignore_index = -100;
  double ignored = 0.2;  // fraction of rows whose target is ignore_index
  double invalid = 0.0;  // fraction of rows whose target is neither ignore_index nor a class
  fusedloss_dtype targets_dtype = FUSEDLOSS_INT64;
  double label_smoothing = 0, z_loss = 0, softcap = 0;
  fusedloss_reduction reduction = FUSEDLOSS_REDUCTION_MEAN;
  fusedloss_empty_mean empty_mean = FUSEDLOSS_EMPTY_MEAN_NAN;
  call c = call::forward_backward;
  bool lse_out = true, z_out = false;
  bool grad_input = true, grad_weight = true, grad_bias = true;
  bool grad_in_input_dtype = false;  // grad_linear_dtype: the input's, else float32
  bool accumulate = false;
  float grad_scale = 1.0f;
  bool grad_scale_ptr = false;
  int64_t chunk_rows = 0;  // rows a chunk of the workspace holds; 0: the default query's (all N)

  std::string describe(fusedloss_dtype dtype) const {
    const char* calls[] = {"forward", "backward", "forward_backward"};
    std::ostringstream o;
    o << fusedloss_dtype_string(dtype) << " N=" << n << " H=" << h << " V=" << v
      << " padding=" << input_padding << "/" << grad_padding << " bias=" << bias
      << " weight=" << weight << (zero_weight ? "(zero)" : "") << " ignore_index=" << ignore_index
      << " ignored=" << ignored << " invalid=" << invalid
      << " targets=" << fusedloss_dtype_string(targets_dtype) << " eps=" << label_smoothing
      << " z_loss=" << z_loss << " softcap=" << softcap
      << " reduction=" << fusedloss_reduction_string(reduction)
      << " empty_mean=" << (empty_mean == FUSEDLOSS_EMPTY_MEAN_ZERO ? "zero" : "nan")
      << " call=" << calls[static_cast<int>(c)] << " lse=" << lse_out << " z_out=" << z_out
      << " grads=" << grad_input << grad_weight << grad_bias
      << " grad_dtype=" << (grad_in_input_dtype ? "input" : "float32")
      << " accumulate=" << accumulate << " scale=" << grad_scale << (grad_scale_ptr ? "*1.5" : "")
      << " chunk_rows=" << chunk_rows;
    return o.str();
  }
};

// Shape helpers of a case.
inline int64_t input_stride(const lce_case& k) { return k.h + k.input_padding; }
inline int64_t grad_stride(const lce_case& k) { return k.h + k.grad_padding; }
inline bool none(const lce_case& k) { return k.reduction == FUSEDLOSS_REDUCTION_NONE; }
inline size_t loss_count(const lce_case& k) { return none(k) ? static_cast<size_t>(k.n) : 1; }
inline bool forward_outputs(const lce_case& k) { return k.c != call::backward; }
inline bool gradients(const lce_case& k) { return k.c != call::forward; }

// The inputs as stored in the dtype (the GPU's bytes) and as float64 values (the reference's).
struct inputs {
  buffer input, weight, bias, targets, class_weight, grad_loss, scale;
  buffer grad_weight_start, grad_bias_start;  // accumulate: what the gradients hold before
  std::vector<double> x, w, b;                // stored values; x with its padding (NaN)
  std::vector<int64_t> y;
  int64_t invalid = 0;
};

// Random inputs for case `k`, stored in `dtype`.
inputs make_inputs(const lce_case& k, fusedloss_dtype dtype, std::mt19937_64& rng);

// The outputs of one run, read back as values.
struct outputs {
  std::vector<double> loss, lse, z, grad_input, grad_weight, grad_bias;
  int64_t counter = 0;
};

// Call `c` of the C API.
fusedloss_status call_api(const fusedloss::linear_cross_entropy_params& p, call c, void* ws,
                          size_t bytes, fusedloss_error* err);

// The CPU reference in float64 on the stored values.
outputs run_reference(const lce_case& k, const inputs& in);

// The workspace bytes that hold a chunk of `rows` rows: the default query's (all N rows) less the
// rows it does not need. For that budget the query gives back the chunks' balanced size: as many
// chunks as `rows` needs, ceil(N / chunks) rows each.
size_t workspace_for(const fusedloss::linear_cross_entropy_params& p, int64_t rows,
                     size_t row_bytes);

// The device buffers of one GPU run, poisoned outputs included.
struct device_run {
  device_buffer input, weight, bias, targets, class_weight, grad_loss, scale, counter;
  device_buffer loss, lse, z, grad_input, grad_weight, grad_bias;
  fusedloss::linear_cross_entropy_params p;
};

// Uploads the inputs, poisons the outputs and points the params at them.
void prepare(device_run& d, const lce_case& k, fusedloss_dtype dtype, const inputs& in);

// Downloads every output buffer, written or not.
outputs read_back(const device_run& d, const lce_case& k, fusedloss_dtype dtype);

// Runs case `k` on both devices and compares; also runs the GPU twice and expects the same bits.
void run_case(const lce_case& k, fusedloss_dtype dtype);

template <class Dtype>
class LinearCrossEntropyKernels : public ::testing::Test {};
TYPED_TEST_SUITE(LinearCrossEntropyKernels, Dtypes, DtypeNames);

}  // namespace fusedloss::gpu_tests::linear_cross_entropy
