// The element-loss kernels' test harness (element_kernels_harness.hpp): the tolerances per dtype,
// the comparison, the calls on either device, and the driver that runs a case on both.
#include "element_kernels_harness.hpp"

#include <cuda_runtime_api.h>
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <random>
#include <string>
#include <vector>

#include "checks.hpp"
#include "fusedloss/fusedloss.hpp"
#include "gpu_support.hpp"

namespace fusedloss::gpu_tests::element_kernels {

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

namespace {

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

// Outputs beyond the offset, as doubles.
std::vector<double> tail(const buffer& b, int64_t offset) {
  std::vector<double> v = b.values();
  return std::vector<double>(v.begin() + std::min<int64_t>(offset, v.size()), v.end());
}

}  // namespace

fusedloss_status run(const element_case& c, fusedloss_dtype dtype, fusedloss_device device,
                     const bound& b, cudaStream_t stream) {
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

void expect_matches_reference_on(element_case c, fusedloss_dtype dtype,
                                 const std::vector<double>& logits,
                                 const std::vector<double>& targets) {
  c.numel = static_cast<int64_t>(logits.size());
  c.reduction = FUSEDLOSS_REDUCTION_NONE;
  SCOPED_TRACE(c.describe());
  std::mt19937_64 rng(1);
  inputs in(c, dtype, rng);
  in.logits = buffer(dtype, logits);
  in.targets = buffer(dtype, targets);
  const host_outputs want = run_reference(c, dtype, in);
  device_arrays dev(in, c);
  ASSERT_EQ(run(c, dtype, FUSEDLOSS_DEVICE_CUDA, dev.bind(c, dtype)), FUSEDLOSS_SUCCESS);
  host_outputs got{buffer::poisoned(FUSEDLOSS_FLOAT32, logits.size()),
                   buffer::poisoned(dtype, logits.size())};
  dev.loss.download(got.loss);
  dev.grad.download(got.grad);
  expect_close(got.loss.values(), want.loss.values(), kElementLossTolerance, "loss");
  expect_close(got.grad.values(), want.grad.values(), tolerance_for(dtype), "grad");
}

}  // namespace fusedloss::gpu_tests::element_kernels
