// The element-loss kernels (BCE with logits, sigmoid focal, MSE) against the CPU reference on the
// same dtype-rounded inputs, through the public C API. Outputs are poisoned (every byte 0xFF, a
// NaN) before each run, so an element a kernel fails to write fails the comparison.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <random>
#include <string>
#include <type_traits>
#include <vector>

#include "checks.hpp"
#include "element_losses.hpp"
#include "fusedloss/fusedloss.hpp"
#include "gpu_support.hpp"

namespace {

using fusedloss::checks::buffer;
using fusedloss::gpu_tests::device_buffer;

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

gradient_tolerance tolerance_for(fusedloss_dtype dtype) {
  switch (dtype) {
    case FUSEDLOSS_FLOAT16:
      return {std::ldexp(1.0, -24), 1e-6, std::ldexp(1.0, -10) + 4e-6};
    case FUSEDLOSS_BFLOAT16:
      return {0.0, 1e-6, std::ldexp(1.0, -7) + 4e-6};
    default:
      return {0.0, 1e-6, 4e-6};
  }
}

// Losses are float32 for every logits dtype: per-element losses as a float32 gradient; a sum of
// float32 terms accumulated in double differs from the exact sum by the terms' own error.
constexpr gradient_tolerance kElementLossTolerance{0.0, 1e-6, 4e-6};
constexpr double kReducedLossRtol = 1e-5;

void expect_close(const std::vector<double>& got, const std::vector<double>& want,
                  const gradient_tolerance& t, const char* what) {
  ASSERT_EQ(got.size(), want.size()) << what;
  double largest = 0;
  for (double w : want) {
    if (std::isfinite(w)) largest = std::max(largest, std::fabs(w));
  }
  const fusedloss::checks::tolerance tol{t.floor + t.of_largest * largest, t.rtol};
  int reported = 0;
  for (size_t i = 0; i < want.size(); ++i) {
    if (!tol.accepts(got[i], want[i]) && reported++ < 5) {
      ADD_FAILURE() << what << "[" << i << "]: got " << got[i] << ", want " << want[i] << " (atol "
                    << tol.atol << ", rtol " << tol.rtol << ")";
    }
  }
}

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
int64_t grad_start(const element_case& c) { return c.offset + (c.grad_shifted ? 1 : 0); }
size_t grad_count(const element_case& c) { return static_cast<size_t>(c.numel + grad_start(c)); }

size_t loss_count(const element_case& c) {
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

template <class Params>
using c_call = fusedloss_status (*)(const Params*, void*, size_t, void*, fusedloss_error*);
template <class Params>
using c_workspace = fusedloss_status (*)(const Params*, size_t*, fusedloss_error*);

// Queries the workspace, allocates it on the GPU, and runs the case's call.
template <class Params>
fusedloss_status run_call(const Params& p, const element_case& c, c_workspace<Params> size,
                          c_call<Params> forward, c_call<Params> backward,
                          c_call<Params> forward_backward, cudaStream_t stream,
                          fusedloss_error* err) {
  size_t bytes = 0;
  if (const fusedloss_status s = size(&p, &bytes, err); s != FUSEDLOSS_SUCCESS) return s;
  device_buffer workspace(p.device == FUSEDLOSS_DEVICE_CUDA ? bytes : 0);
  const c_call<Params> fn = c.call == fusedloss::call::forward    ? forward
                            : c.call == fusedloss::call::backward ? backward
                                                                  : forward_backward;
  return fn(&p, workspace.data(), workspace.bytes(), stream, err);
}

fusedloss_status run(const element_case& c, fusedloss_dtype dtype, fusedloss_device device,
                     const bound& b, cudaStream_t stream = nullptr) {
  fusedloss_error err;
  fusedloss_status s;
  switch (c.kind) {
    case loss_kind::bce: {
      fusedloss_bce_params p;
      fusedloss_bce_params_init(&p);
      fill(p, c, dtype, device, b);
      p.num_classes = c.num_classes;
      p.weight = c.weight ? b.weight : nullptr;
      p.weight_layout =
          c.weight_per_class ? FUSEDLOSS_WEIGHT_PER_CLASS : FUSEDLOSS_WEIGHT_PER_ELEMENT;
      p.pos_weight = c.pos_weight ? b.pos_weight : nullptr;
      s = run_call(p, c, fusedloss_bce_workspace_size, fusedloss_bce_forward,
                   fusedloss_bce_backward, fusedloss_bce_forward_backward, stream, &err);
      break;
    }
    case loss_kind::sigmoid_focal: {
      fusedloss_sigmoid_focal_params p;
      fusedloss_sigmoid_focal_params_init(&p);
      fill(p, c, dtype, device, b);
      p.alpha = c.alpha;
      p.gamma = c.gamma;
      s = run_call(p, c, fusedloss_sigmoid_focal_workspace_size, fusedloss_sigmoid_focal_forward,
                   fusedloss_sigmoid_focal_backward, fusedloss_sigmoid_focal_forward_backward,
                   stream, &err);
      break;
    }
    default: {
      fusedloss_mse_params p;
      fusedloss_mse_params_init(&p);
      fill(p, c, dtype, device, b);
      s = run_call(p, c, fusedloss_mse_workspace_size, fusedloss_mse_forward,
                   fusedloss_mse_backward, fusedloss_mse_forward_backward, stream, &err);
    }
  }
  EXPECT_EQ(s, FUSEDLOSS_SUCCESS) << err.message;
  return s;
}

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
        grad(c.in_place ? 0 : grad_count(c) * (in.logits.size_bytes() / in.logits.size())) {
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
host_outputs run_reference(const element_case& c, fusedloss_dtype dtype, const inputs& in) {
  host_outputs out{buffer::poisoned(FUSEDLOSS_FLOAT32, loss_count(c)),
                   buffer::poisoned(dtype, grad_count(c))};
  const fusedloss_dtype tdtype = c.float32_targets ? FUSEDLOSS_FLOAT32 : dtype;
  const bool none = c.reduction == FUSEDLOSS_REDUCTION_NONE;
  const bound b{advance(in.logits.data(), c.offset, dtype),
                advance(in.targets.data(), c.offset, tdtype),
                advance(in.grad_loss.data(), none ? c.offset : 0, FUSEDLOSS_FLOAT32),
                advance(static_cast<const float*>(in.weight.data()),
                        c.weight_per_class ? 0 : c.offset, FUSEDLOSS_FLOAT32),
                static_cast<const float*>(in.pos_weight.data()),
                static_cast<const float*>(in.scale.data()),
                advance(out.loss.data(), none ? c.offset : 0, FUSEDLOSS_FLOAT32),
                advance(out.grad.data(), grad_start(c), dtype)};
  run(c, dtype, FUSEDLOSS_DEVICE_CPU, b);
  return out;
}

// Outputs beyond the offset, as doubles.
std::vector<double> tail(const buffer& b, int64_t offset) {
  std::vector<double> v = b.values();
  return std::vector<double>(v.begin() + std::min<int64_t>(offset, v.size()), v.end());
}

// Compares the GPU's outputs with the reference's for one case.
void expect_matches_reference(const element_case& c, fusedloss_dtype dtype) {
  const uint64_t seed = std::random_device{}();
  SCOPED_TRACE("seed " + std::to_string(seed) + ": " + c.describe());
  std::mt19937_64 rng(seed);
  const inputs in(c, dtype, rng);
  const host_outputs want = run_reference(c, dtype, in);

  device_arrays dev(in, c);
  ASSERT_EQ(run(c, dtype, FUSEDLOSS_DEVICE_CUDA, dev.bind(c, dtype)), FUSEDLOSS_SUCCESS);
  FUSEDLOSS_CUDA_OK(cudaDeviceSynchronize());
  host_outputs got{buffer::poisoned(FUSEDLOSS_FLOAT32, loss_count(c)),
                   buffer::poisoned(dtype, c.in_place ? in.logits.size() : grad_count(c))};
  dev.loss.download(got.loss);
  (c.in_place ? dev.logits : dev.grad).download(got.grad);

  const bool none = c.reduction == FUSEDLOSS_REDUCTION_NONE;
  if (c.call != fusedloss::call::backward) {
    if (none) {
      expect_close(tail(got.loss, c.offset), tail(want.loss, c.offset), kElementLossTolerance,
                   "loss");
    } else {
      expect_close(got.loss.values(), want.loss.values(), {0.0, 0.0, kReducedLossRtol}, "loss");
    }
  }
  if (c.call != fusedloss::call::forward) {
    expect_close(tail(got.grad, c.in_place ? c.offset : grad_start(c)),
                 tail(want.grad, grad_start(c)), tolerance_for(dtype), "grad");
  }
}

using fusedloss::gpu_tests::DtypeNames;
using fusedloss::gpu_tests::Dtypes;

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

TYPED_TEST(ElementKernels, SizesThatBreakKernels) {
  for (int64_t numel : {int64_t{0}, int64_t{1}, int64_t{7}, int64_t{4095}, int64_t{4097},
                        fusedloss::gpu_tests::scaled_size((int64_t{1} << 20) + 3)}) {
    for (loss_kind kind : kKinds) {
      for (fusedloss_reduction reduction : kReductions) {
        element_case c;
        c.kind = kind;
        c.numel = numel;
        c.reduction = reduction;
        expect_matches_reference(c, TestFixture::dtype);
      }
    }
  }
}

TYPED_TEST(ElementKernels, EmptyMeanPolicies) {
  for (loss_kind kind : kKinds) {
    for (auto policy : {FUSEDLOSS_EMPTY_MEAN_NAN, FUSEDLOSS_EMPTY_MEAN_ZERO}) {
      element_case c;
      c.kind = kind;
      c.numel = 0;
      c.empty_mean = policy;
      expect_matches_reference(c, TestFixture::dtype);
    }
  }
}

TYPED_TEST(ElementKernels, MisalignedStarts) {
  for (loss_kind kind : kKinds) {
    for (fusedloss_reduction reduction : kReductions) {
      for (bool float32_targets : {false, true}) {
        element_case c;
        c.kind = kind;
        c.reduction = reduction;
        c.offset = 1;
        c.float32_targets = float32_targets;
        c.weight = kind == loss_kind::bce;
        expect_matches_reference(c, TestFixture::dtype);
      }
    }
  }
}

// Off the vector path (the gradient misaligned against the logits: every element one at a time)
// and in place (the gradient over the logits), for every loss.
TYPED_TEST(ElementKernels, ScalarPathAndInPlace) {
  for (loss_kind kind : kKinds) {
    for (int mode = 0; mode < 2; ++mode) {
      element_case c;
      c.kind = kind;
      c.numel = 4097;
      c.reduction = FUSEDLOSS_REDUCTION_SUM;
      c.weight = kind == loss_kind::bce;
      c.grad_shifted = mode == 0;
      c.in_place = mode == 1;
      expect_matches_reference(c, TestFixture::dtype);
    }
  }
}

TYPED_TEST(ElementKernels, EveryBceOption) {
  for (int layout = 0; layout < 3; ++layout) {  // no weight, per element, per class
    for (bool pos_weight : {false, true}) {
      for (bool hard : {false, true}) {
        for (bool float32_targets : {false, true}) {
          element_case c;
          c.numel = 7 * 613;
          c.num_classes = 7;
          c.weight = layout > 0;
          c.weight_per_class = layout == 2;
          c.pos_weight = pos_weight;
          c.hard_targets = hard;
          c.float32_targets = float32_targets;
          c.reduction = hard ? FUSEDLOSS_REDUCTION_SUM : FUSEDLOSS_REDUCTION_NONE;
          expect_matches_reference(c, TestFixture::dtype);
        }
      }
    }
  }
}

TYPED_TEST(ElementKernels, EverySigmoidFocalOption) {
  // 2: its own loop; 0, 1, 3, 15: the integer loop; 0.5, 3.5, 16: powf.
  for (double gamma : {0.0, 0.5, 1.0, 2.0, 3.0, 3.5, 15.0, 16.0}) {
    for (double alpha : {0.25, -1.0, 1.5}) {
      for (bool hard : {false, true}) {
        element_case c;
        c.kind = loss_kind::sigmoid_focal;
        c.gamma = gamma;
        c.alpha = alpha;
        c.hard_targets = hard;
        c.reduction = FUSEDLOSS_REDUCTION_NONE;
        expect_matches_reference(c, TestFixture::dtype);
      }
    }
  }
  // Saturated logits with gamma in (0, 1): finite on both sides (torchvision gives NaN).
  element_case saturated;
  saturated.kind = loss_kind::sigmoid_focal;
  saturated.gamma = 0.5;
  saturated.hard_targets = true;
  saturated.logit_range = 100.0;
  saturated.reduction = FUSEDLOSS_REDUCTION_NONE;
  expect_matches_reference(saturated, TestFixture::dtype);
}

TYPED_TEST(ElementKernels, EveryCall) {
  for (loss_kind kind : kKinds) {
    for (fusedloss_reduction reduction : kReductions) {
      for (fusedloss::call call : {fusedloss::call::forward, fusedloss::call::backward}) {
        element_case c;
        c.kind = kind;
        c.reduction = reduction;
        c.call = call;
        expect_matches_reference(c, TestFixture::dtype);
      }
      element_case scaled;  // the fused call's gradient scale, host and device parts
      scaled.kind = kind;
      scaled.reduction = reduction;
      scaled.grad_scale = 0.75f;
      scaled.grad_scale_ptr = true;
      expect_matches_reference(scaled, TestFixture::dtype);
    }
  }
}

TYPED_TEST(ElementKernels, LargestThatFitsATest) {
  element_case c;
  c.numel = fusedloss::gpu_tests::scaled_size((int64_t{1} << 26) + 5);
  c.weight = true;
  expect_matches_reference(c, TestFixture::dtype);
}

TYPED_TEST(ElementKernels, InfinitiesAndNaN) {
  const fusedloss_dtype dtype = TestFixture::dtype;
  // BCE's rule: x = -inf with y = 0 and x = +inf with y = 1 give loss 0, gradient 0.
  const std::vector<double> x = {-INFINITY, INFINITY, INFINITY, -INFINITY, NAN, 1e4, -1e4, 0.0};
  const std::vector<double> y = {0, 1, 0, 1, 1, 0, 1, 0.5};
  for (loss_kind kind : kKinds) {
    for (double gamma : {0.5, 0.0, 2.0, 3.0}) {  // sigmoid focal's three loops
      if (kind != loss_kind::sigmoid_focal && gamma != 0.5) continue;
      element_case c;
      c.kind = kind;
      c.numel = static_cast<int64_t>(x.size());
      c.reduction = FUSEDLOSS_REDUCTION_NONE;
      c.gamma = gamma;
      SCOPED_TRACE(c.describe());
      std::mt19937_64 rng(1);
      inputs in(c, dtype, rng);
      in.logits = buffer(dtype, x);
      in.targets = buffer(dtype, y);
      const host_outputs want = run_reference(c, dtype, in);
      device_arrays dev(in, c);
      ASSERT_EQ(run(c, dtype, FUSEDLOSS_DEVICE_CUDA, dev.bind(c, dtype)), FUSEDLOSS_SUCCESS);
      host_outputs got{buffer::poisoned(FUSEDLOSS_FLOAT32, x.size()),
                       buffer::poisoned(dtype, x.size())};
      dev.loss.download(got.loss);
      dev.grad.download(got.grad);
      expect_close(got.loss.values(), want.loss.values(), kElementLossTolerance, "loss");
      expect_close(got.grad.values(), want.grad.values(), tolerance_for(dtype), "grad");
    }
  }
}

TYPED_TEST(ElementKernels, NonDefaultStreamAndGraphReplay) {
  const fusedloss_dtype dtype = TestFixture::dtype;
  element_case c;
  c.numel = (1 << 20) + 3;
  c.weight = true;
  c.pos_weight = true;
  c.grad_scale_ptr = true;
  std::mt19937_64 rng(std::random_device{}());
  const inputs in(c, dtype, rng);
  const host_outputs want = run_reference(c, dtype, in);
  device_arrays dev(in, c);

  cudaStream_t stream;
  FUSEDLOSS_CUDA_OK(cudaStreamCreateWithFlags(&stream, cudaStreamNonBlocking));
  fusedloss_bce_params p;
  fusedloss_bce_params_init(&p);
  fill(p, c, dtype, FUSEDLOSS_DEVICE_CUDA, dev.bind(c, dtype));
  p.weight = static_cast<const float*>(dev.weight.data());
  p.pos_weight = static_cast<const float*>(dev.pos_weight.data());
  size_t bytes = 0;
  ASSERT_EQ(fusedloss_bce_workspace_size(&p, &bytes, nullptr), FUSEDLOSS_SUCCESS);
  device_buffer workspace(bytes);

  cudaGraph_t graph;
  FUSEDLOSS_CUDA_OK(cudaStreamBeginCapture(stream, cudaStreamCaptureModeGlobal));
  fusedloss_error err;
  const fusedloss_status s =
      fusedloss_bce_forward_backward(&p, workspace.data(), workspace.bytes(), stream, &err);
  FUSEDLOSS_CUDA_OK(cudaStreamEndCapture(stream, &graph));
  ASSERT_EQ(s, FUSEDLOSS_SUCCESS) << err.message;
  cudaGraphExec_t exec;
  FUSEDLOSS_CUDA_OK(cudaGraphInstantiate(&exec, graph, 0));

  std::vector<unsigned char> first_loss, first_grad;
  for (int replay = 0; replay < 2; ++replay) {
    dev.poison();
    FUSEDLOSS_CUDA_OK(cudaGraphLaunch(exec, stream));
    FUSEDLOSS_CUDA_OK(cudaStreamSynchronize(stream));
    host_outputs got{buffer::poisoned(FUSEDLOSS_FLOAT32, 1),
                     buffer::poisoned(dtype, in.logits.size())};
    dev.loss.download(got.loss);
    dev.grad.download(got.grad);
    expect_close(got.loss.values(), want.loss.values(), {0.0, 0.0, kReducedLossRtol}, "loss");
    expect_close(got.grad.values(), want.grad.values(), tolerance_for(dtype), "grad");
    if (replay == 0) {
      first_loss = dev.loss.raw();
      first_grad = dev.grad.raw();
    } else {
      EXPECT_EQ(dev.loss.raw(), first_loss) << "graph replays differ";
      EXPECT_EQ(dev.grad.raw(), first_grad) << "graph replays differ";
    }
  }
  cudaGraphExecDestroy(exec);
  cudaGraphDestroy(graph);
  cudaStreamDestroy(stream);
}

TYPED_TEST(ElementKernels, TwoRunsAreBitwiseIdentical) {
  const fusedloss_dtype dtype = TestFixture::dtype;
  for (loss_kind kind : kKinds) {
    element_case c;
    c.kind = kind;
    c.numel = (1 << 22) + 1;
    c.reduction = FUSEDLOSS_REDUCTION_SUM;
    std::mt19937_64 rng(std::random_device{}());
    const inputs in(c, dtype, rng);
    device_arrays dev(in, c);
    ASSERT_EQ(run(c, dtype, FUSEDLOSS_DEVICE_CUDA, dev.bind(c, dtype)), FUSEDLOSS_SUCCESS);
    const auto loss = dev.loss.raw();
    const auto grad = dev.grad.raw();
    dev.poison();
    ASSERT_EQ(run(c, dtype, FUSEDLOSS_DEVICE_CUDA, dev.bind(c, dtype)), FUSEDLOSS_SUCCESS);
    EXPECT_EQ(dev.loss.raw(), loss);
    EXPECT_EQ(dev.grad.raw(), grad);
  }
}

// A different grid changes the order of the double-precision sum; the float32 result may then
// differ by the rounding of that sum to float32, one unit in the last place.
TYPED_TEST(ElementKernels, LaunchConfigurationsAgreeOnTheSum) {
  const fusedloss_dtype dtype = TestFixture::dtype;
  element_case c;
  c.numel = (1 << 22) + 7;
  c.reduction = FUSEDLOSS_REDUCTION_SUM;
  c.call = fusedloss::call::forward;
  std::mt19937_64 rng(std::random_device{}());
  const inputs in(c, dtype, rng);
  device_arrays dev(in, c);
  const bound b = dev.bind(c, dtype);

  fusedloss::kernels::element_problem problem{};
  problem.kind = fusedloss::kernels::element_loss::bce;
  problem.numel = c.numel;
  problem.num_classes = 1;
  problem.logits = b.logits;
  problem.logits_dtype = dtype;
  problem.targets = b.targets;
  problem.targets_dtype = dtype;
  problem.reduction = c.reduction;
  problem.loss = static_cast<float*>(b.loss);
  problem.grad_scale = 1.0f;
  float sums[2];
  int index = 0;
  for (int max_blocks : {0, 3}) {
    problem.max_blocks = max_blocks;
    size_t bytes = 0;
    FUSEDLOSS_CUDA_OK(fusedloss::kernels::element_workspace_bytes(c.numel, max_blocks, &bytes));
    device_buffer workspace(bytes);
    FUSEDLOSS_CUDA_OK(fusedloss::kernels::run_element_loss(problem, workspace.data(), nullptr));
    FUSEDLOSS_CUDA_OK(cudaMemcpy(&sums[index++], b.loss, sizeof(float), cudaMemcpyDeviceToHost));
  }
  EXPECT_NEAR(sums[0], sums[1], std::ldexp(std::fabs(sums[0]), -23))
      << sums[0] << " vs " << sums[1];
}

// Pointers in the wrong memory space and a short workspace are refused, and nothing is written.
// More than 2^32 elements: bfloat16 BCE with per-class weights and pos_weight over 2^32 + 2^20 + 3
// elements (8.6 GB a buffer). The data repeat with a period of 427 elements (61 times the 7
// classes, so that an index that wraps at 32 bits lands on other values): the reference runs on
// one period; the GPU's sum is checked against it times each element's multiplicity, and windows
// of the gradient on both sides of 2^31 and 2^32 element by element.
TEST(ElementKernelsHuge, MoreThan2To32Elements) {
  FUSEDLOSS_REQUIRE_GPU_OR_SKIP();
  const fusedloss_dtype dtype = FUSEDLOSS_BFLOAT16;
  const int64_t C = 7, period = 61 * C, M = (int64_t{1} << 32) + (int64_t{1} << 20) + 3;
  const size_t bytes = static_cast<size_t>(M) * 2;
  size_t free_bytes = 0, total_bytes = 0;
  FUSEDLOSS_CUDA_OK(cudaMemGetInfo(&free_bytes, &total_bytes));
  if (free_bytes < 3 * bytes + (size_t{1} << 28)) {
    GTEST_SKIP() << "needs " << (3 * bytes) / (1 << 20) << " MiB of free GPU memory, the GPU has "
                 << free_bytes / (1 << 20) << " MiB free";
  }
  element_case u;
  u.numel = period;
  u.num_classes = C;
  u.weight = true;
  u.weight_per_class = true;
  u.pos_weight = true;
  u.reduction = FUSEDLOSS_REDUCTION_NONE;
  const uint64_t seed = std::random_device{}();
  SCOPED_TRACE("seed " + std::to_string(seed));
  std::mt19937_64 rng(seed);
  const inputs in(u, dtype, rng);
  const host_outputs want = run_reference(u, dtype, in);

  device_buffer logits(bytes), targets(bytes), grad(bytes), loss(sizeof(float));
  const device_buffer weight(in.weight), pos_weight(in.pos_weight), scale(in.scale);
  ASSERT_NE(grad.data(), nullptr);
  for (auto [device, host] : {std::pair{&logits, &in.logits}, std::pair{&targets, &in.targets}}) {
    auto* base = static_cast<unsigned char*>(device->data());
    FUSEDLOSS_CUDA_OK(cudaMemcpy(base, host->data(), period * 2, cudaMemcpyHostToDevice));
    for (size_t filled = period * 2; filled < bytes;) {  // doubling, in whole periods
      const size_t n = std::min(filled, bytes - filled);
      FUSEDLOSS_CUDA_OK(cudaMemcpy(base + filled, base, n, cudaMemcpyDeviceToDevice));
      filled += n;
    }
  }
  FUSEDLOSS_CUDA_OK(cudaMemset(grad.data(), 0xFF, bytes));
  element_case big = u;
  big.numel = M;
  big.reduction = FUSEDLOSS_REDUCTION_SUM;
  const bound b{logits.data(),
                targets.data(),
                nullptr,
                static_cast<const float*>(weight.data()),
                static_cast<const float*>(pos_weight.data()),
                static_cast<const float*>(scale.data()),
                loss.data(),
                grad.data()};
  ASSERT_EQ(run(big, dtype, FUSEDLOSS_DEVICE_CUDA, b), FUSEDLOSS_SUCCESS);
  FUSEDLOSS_CUDA_OK(cudaDeviceSynchronize());

  const std::vector<double> losses = want.loss.values(), grads = want.grad.values();
  double sum = 0;
  for (int64_t k = 0; k < period; ++k) {
    sum += static_cast<double>(M / period + (k < M % period ? 1 : 0)) * losses[k];
  }
  float got_sum = 0;
  FUSEDLOSS_CUDA_OK(cudaMemcpy(&got_sum, loss.data(), sizeof got_sum, cudaMemcpyDeviceToHost));
  expect_close({got_sum}, {sum}, {0.0, 0.0, kReducedLossRtol}, "loss (sum)");
  constexpr int64_t kWindow = 4096;
  for (int64_t start : {int64_t{0}, (int64_t{1} << 31) - kWindow / 2,
                        (int64_t{1} << 32) - kWindow / 2, M - kWindow}) {
    buffer got = buffer::poisoned(dtype, kWindow);
    FUSEDLOSS_CUDA_OK(cudaMemcpy(got.data(), static_cast<unsigned char*>(grad.data()) + start * 2,
                                 kWindow * 2, cudaMemcpyDeviceToHost));
    std::vector<double> expected(kWindow);
    for (int64_t j = 0; j < kWindow; ++j) expected[j] = grads[(start + j) % period];
    SCOPED_TRACE("gradient from element " + std::to_string(start));
    expect_close(got.values(), expected, tolerance_for(dtype), "grad");
  }
}

TEST(ElementKernelsBadInput, WrongMemorySpaceAndShortWorkspace) {
  FUSEDLOSS_REQUIRE_GPU_OR_SKIP();
  element_case c;
  c.reduction = FUSEDLOSS_REDUCTION_SUM;
  std::mt19937_64 rng(3);
  const inputs in(c, FUSEDLOSS_FLOAT32, rng);
  device_arrays dev(in, c);
  const auto poisoned_loss = dev.loss.raw();
  const auto poisoned_grad = dev.grad.raw();

  fusedloss_bce_params p;
  fusedloss_bce_params_init(&p);
  fill(p, c, FUSEDLOSS_FLOAT32, FUSEDLOSS_DEVICE_CUDA, dev.bind(c, FUSEDLOSS_FLOAT32));
  fusedloss_error err;
  size_t bytes = 0;
  ASSERT_EQ(fusedloss_bce_workspace_size(&p, &bytes, &err), FUSEDLOSS_SUCCESS);
  ASSERT_GT(bytes, 0u);
  device_buffer workspace(bytes);

  EXPECT_EQ(fusedloss_bce_forward_backward(&p, workspace.data(), bytes - 1, nullptr, &err),
            FUSEDLOSS_INVALID_ARGUMENT);
  EXPECT_STREQ(err.argument, "workspace");
  EXPECT_EQ(fusedloss_bce_forward_backward(&p, nullptr, bytes, nullptr, &err),
            FUSEDLOSS_INVALID_ARGUMENT);
  EXPECT_STREQ(err.argument, "workspace");

  fusedloss_bce_params host_logits = p;
  host_logits.logits = in.logits.data();
  EXPECT_EQ(fusedloss_bce_forward_backward(&host_logits, workspace.data(), bytes, nullptr, &err),
            FUSEDLOSS_INVALID_ARGUMENT);
  EXPECT_STREQ(err.argument, "logits");

  fusedloss_bce_params on_cpu = p;
  on_cpu.device = FUSEDLOSS_DEVICE_CPU;
  EXPECT_EQ(fusedloss_bce_forward_backward(&on_cpu, nullptr, 0, nullptr, &err),
            FUSEDLOSS_INVALID_ARGUMENT);
  EXPECT_STREQ(err.argument, "logits");

  FUSEDLOSS_CUDA_OK(cudaDeviceSynchronize());
  EXPECT_EQ(dev.loss.raw(), poisoned_loss);
  EXPECT_EQ(dev.grad.raw(), poisoned_grad);
}

}  // namespace
