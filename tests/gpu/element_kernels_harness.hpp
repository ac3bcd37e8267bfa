// The harness of the element-loss kernels' tests (test_element_*.cpp): BCE with logits, sigmoid
// focal and MSE against the CPU reference on the same dtype-rounded inputs, through the public C
// API. One problem (element_case), its inputs, the tolerances, the calls on either device and the
// comparison. Outputs are poisoned (every byte 0xFF, a NaN) before each run, so an element a
// kernel fails to write fails the comparison.
//
// The tests that take more than a few seconds on a GPU (2^26 and more than 2^32 elements) are those
// of test_element_large.cpp, which make part of the fusedloss_gpu_slow_tests executable (CTest
// label `slow`); the others are fusedloss_gpu_tests'.
#pragma once

#include <cuda_runtime_api.h>
#include <gtest/gtest.h>

#include <cstdint>
#include <random>
#include <string>
#include <type_traits>
#include <vector>

#include "checks.hpp"
#include "fusedloss/fusedloss.hpp"
#include "gpu_support.hpp"

namespace fusedloss::gpu_tests::element_kernels {

using fusedloss::checks::buffer;

enum class loss_kind { bce, sigmoid_focal, mse };

// One problem: the loss, its size and options, and the call to run.
struct element_case {
  loss_kind kind = loss_kind::bce;
  int64_t numel = 4097;
  int64_t num_classes = 1;
  fusedloss_reduction reduction = FUSEDLOSS_REDUCTION_MEAN;
  fusedloss_empty_mean empty_mean = FUSEDLOSS_EMPTY_MEAN_NAN;
  fusedloss::call call = fusedloss::call::forward_backward;
  bool weight = false;
  bool weight_per_class = false;
  bool pos_weight = false;
  bool hard_targets = false;
  bool float32_targets = false;  // float32 targets beside 16-bit logits
  double alpha = 0.25;
  double gamma = 2.0;
  double logit_range = 6.0;
  int64_t offset = 0;         // elements each array starts past its allocation: 1 misaligns it
  bool grad_shifted = false;  // the gradient one element further still: element by element
  bool in_place = false;      // grad_logits == logits
  float grad_scale = 1.0f;
  bool grad_scale_ptr = false;

  std::string describe() const {
    const char* names[] = {"bce", "sigmoid_focal", "mse"};
    return std::string(names[static_cast<int>(kind)]) + " numel=" + std::to_string(numel) +
           " C=" + std::to_string(num_classes) +
           " reduction=" + fusedloss_reduction_string(reduction) +
           " call=" + std::to_string(static_cast<int>(call)) + " weight=" + std::to_string(weight) +
           (weight_per_class ? "/class" : "") + " pos_weight=" + std::to_string(pos_weight) +
           " hard=" + std::to_string(hard_targets) +
           " f32_targets=" + std::to_string(float32_targets) + " alpha=" + std::to_string(alpha) +
           " gamma=" + std::to_string(gamma) + " range=" + std::to_string(logit_range) +
           " offset=" + std::to_string(offset) + (grad_shifted ? "+1 (grad)" : "") +
           (in_place ? " in_place" : "") + " scale=" + std::to_string(grad_scale) +
           (grad_scale_ptr ? "*ptr" : "");
  }
};

// Gradients: the kernels compute in float32, each operation within a few float32 ulps, so their
// float32 gradient is within ~1e-6 relative of the exact one; rounding that and the reference's
// exact value to the output dtype can then land one unit in the last place apart (the `rtol`). The
// absolute part covers cancellation (p - y keeps an absolute, not relative, float32 error) as a
// fraction of the largest gradient, plus float16's subnormal spacing. Stated once per dtype.
struct gradient_tolerance {
  double floor;       // absolute, in the dtype's units
  double of_largest;  // absolute, relative to the largest |gradient|
  double rtol;
};

gradient_tolerance tolerance_for(fusedloss_dtype dtype);

// Losses are float32 for every logits dtype: per-element losses as a float32 gradient; a sum of
// float32 terms accumulated in double differs from the exact sum by the terms' own error.
constexpr gradient_tolerance kElementLossTolerance{0.0, 1e-6, 4e-6};
constexpr double kReducedLossRtol = 1e-5;

void expect_close(const std::vector<double>& got, const std::vector<double>& want,
                  const gradient_tolerance& t, const char* what);

// Host inputs of one case, each array with `offset` leading elements that the call skips.
struct inputs {
  buffer logits, targets, grad_loss, weight, pos_weight, scale;

  inputs(const element_case& c, fusedloss_dtype dtype, std::mt19937_64& rng) {
    using fusedloss::checks::uniform;
    const auto n = static_cast<size_t>(c.numel + c.offset);
    logits = buffer(dtype, uniform(rng, n, -c.logit_range, c.logit_range));
    std::vector<double> y = uniform(rng, n, 0.0, 1.0);
    if (c.hard_targets) {
      for (double& v : y) v = v < 0.5 ? 0.0 : 1.0;
    }
    targets = buffer(c.float32_targets ? FUSEDLOSS_FLOAT32 : dtype, y);
    const bool none = c.reduction == FUSEDLOSS_REDUCTION_NONE;
    grad_loss = buffer(FUSEDLOSS_FLOAT32, uniform(rng, none ? n : 1, 0.5, 2.0));
    const size_t weights = c.weight_per_class ? static_cast<size_t>(c.num_classes) : n;
    weight = buffer(FUSEDLOSS_FLOAT32, uniform(rng, weights, 0.5, 2.0));
    pos_weight =
        buffer(FUSEDLOSS_FLOAT32, uniform(rng, static_cast<size_t>(c.num_classes), 0.5, 3.0));
    scale = buffer(FUSEDLOSS_FLOAT32, {1.5});
  }
};

// Where a run's arrays live (host buffers for the CPU, device copies for the GPU), already
// advanced past the offset, and its poisoned outputs.
struct bound {
  const void* logits;
  const void* targets;
  const void* grad_loss;
  const float* weight;
  const float* pos_weight;
  const float* scale;
  void* loss;
  void* grad;
};

// Where the gradient starts in its allocation, and the allocation's length (elements).
inline int64_t grad_start(const element_case& c) { return c.offset + (c.grad_shifted ? 1 : 0); }
inline size_t grad_count(const element_case& c) {
  return static_cast<size_t>(c.numel + grad_start(c));
}

inline size_t loss_count(const element_case& c) {
  return c.reduction == FUSEDLOSS_REDUCTION_NONE ? static_cast<size_t>(c.numel + c.offset) : 1;
}

template <class T>
T* advance(T* p, int64_t elements, fusedloss_dtype dtype) {
  if (p == nullptr) return p;
  using byte = std::conditional_t<std::is_const_v<T>, const unsigned char, unsigned char>;
  const size_t size = dtype == FUSEDLOSS_FLOAT16 || dtype == FUSEDLOSS_BFLOAT16 ? 2 : 4;
  return reinterpret_cast<T*>(reinterpret_cast<byte*>(p) + elements * size);
}

template <class Params>
void fill(Params& p, const element_case& c, fusedloss_dtype dtype, fusedloss_device device,
          const bound& b) {
  p.device = device;
  p.numel = c.numel;
  p.logits = b.logits;
  p.logits_dtype = dtype;
  p.targets = b.targets;
  p.targets_dtype = c.float32_targets ? FUSEDLOSS_FLOAT32 : dtype;
  p.reduction = c.reduction;
  p.empty_mean = c.empty_mean;
  p.loss = c.call == fusedloss::call::backward ? nullptr : b.loss;
  p.grad_logits = c.call == fusedloss::call::forward ? nullptr : b.grad;
  p.grad_loss = c.call == fusedloss::call::backward ? b.grad_loss : nullptr;
  p.grad_scale = c.grad_scale;
  p.grad_scale_ptr = c.grad_scale_ptr ? b.scale : nullptr;
}

fusedloss_status run(const element_case& c, fusedloss_dtype dtype, fusedloss_device device,
                     const bound& b, cudaStream_t stream = nullptr);

// Device copies of a case's inputs and poisoned outputs.
struct device_arrays {
  device_buffer logits, targets, grad_loss, weight, pos_weight, scale, loss, grad;

  device_arrays(const inputs& in, const element_case& c)
      : logits(in.logits),
        targets(in.targets),
        grad_loss(in.grad_loss),
        weight(in.weight),
        pos_weight(in.pos_weight),
        scale(in.scale),
        loss(loss_count(c) * sizeof(float)),
        grad(c.in_place ? 0 : grad_count(c) * element_bytes(in.logits.dtype())) {
    poison();
  }

  void poison() {
    if (loss.bytes() > 0) cudaMemset(loss.data(), 0xFF, loss.bytes());
    if (grad.bytes() > 0) cudaMemset(grad.data(), 0xFF, grad.bytes());
  }

  bound bind(const element_case& c, fusedloss_dtype dtype) const {
    const fusedloss_dtype tdtype = c.float32_targets ? FUSEDLOSS_FLOAT32 : dtype;
    const bool none = c.reduction == FUSEDLOSS_REDUCTION_NONE;
    return {
        advance(static_cast<const void*>(logits.data()), c.offset, dtype),
        advance(static_cast<const void*>(targets.data()), c.offset, tdtype),
        advance(static_cast<const void*>(grad_loss.data()), none ? c.offset : 0, FUSEDLOSS_FLOAT32),
        advance(static_cast<const float*>(weight.data()), c.weight_per_class ? 0 : c.offset,
                FUSEDLOSS_FLOAT32),
        static_cast<const float*>(pos_weight.data()),
        static_cast<const float*>(scale.data()),
        advance(loss.data(), none ? c.offset : 0, FUSEDLOSS_FLOAT32),
        c.in_place ? advance(logits.data(), c.offset, dtype)
                   : advance(grad.data(), grad_start(c), dtype)};
  }
};

struct host_outputs {
  buffer loss, grad;
};

// Runs the case on the CPU reference (host buffers) and returns its outputs.
host_outputs run_reference(const element_case& c, fusedloss_dtype dtype, const inputs& in);

// Compares the GPU's outputs with the reference's for one case.
void expect_matches_reference(const element_case& c, fusedloss_dtype dtype);

// The same on given logits and targets (c.numel of each, rounded to dtype) under reduction none:
// the per-element losses and gradients compared.
void expect_matches_reference_on(element_case c, fusedloss_dtype dtype,
                                 const std::vector<double>& logits,
                                 const std::vector<double>& targets);

template <class Dtype>
class ElementKernels : public ::testing::Test {
 protected:
  static constexpr fusedloss_dtype dtype = Dtype::value;
  void SetUp() override { FUSEDLOSS_REQUIRE_GPU_OR_SKIP(); }
};

TYPED_TEST_SUITE(ElementKernels, Dtypes, DtypeNames);

constexpr loss_kind kKinds[] = {loss_kind::bce, loss_kind::sigmoid_focal, loss_kind::mse};
constexpr fusedloss_reduction kReductions[] = {FUSEDLOSS_REDUCTION_NONE, FUSEDLOSS_REDUCTION_MEAN,
                                               FUSEDLOSS_REDUCTION_SUM};

}  // namespace fusedloss::gpu_tests::element_kernels
