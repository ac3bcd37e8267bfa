// The row-loss kernels' test harness (row_kernels_harness.hpp): the calls on either device, the
// reference's outputs, the comparison of every output, and the drivers that run a case.
#include "row_kernels_harness.hpp"

#include <cuda_runtime_api.h>
#include <gtest/gtest.h>

#include <cmath>
#include <cstdint>
#include <random>
#include <string>
#include <vector>

#include "checks.hpp"
#include "fusedloss/fusedloss.hpp"
#include "gpu_support.hpp"
#include "row_losses.hpp"

namespace fusedloss::gpu_tests::row_kernels {

// ------------------------------------------------------------------------------------------------
// Calls: the public API on either device, or (forced tiers) run_row_loss.

namespace {

template <class P>
void fill_rows(P& p, const row_case& c, fusedloss_dtype dtype, fusedloss_device device,
               const bound& b) {
  p.device = device;
  p.batch = c.batch;
  p.num_classes = c.num_classes;
  p.spatial = c.spatial;
  p.row_stride = c.row_padding > 0 ? stride_of(c) : 0;
  p.grad_row_stride = c.in_place || c.grad_padding < 0 ? 0 : grad_stride_of(c);
  p.logits = b.logits;
  p.logits_dtype = dtype;
  p.targets = b.targets;
  p.targets_dtype = targets_dtype_of(c, dtype);
  p.ignore_index = c.ignore_index;
  p.reduction = c.reduction;
  p.empty_mean = c.empty_mean;
  // backward is given the loss too: it must leave it alone.
  p.loss = c.call == fusedloss::call::forward_backward && !c.loss_out ? nullptr : b.loss;
  p.lse = c.call == fusedloss::call::backward ? (c.saved_lse ? b.lse : nullptr)
                                              : (c.lse_out ? b.lse : nullptr);
  p.grad_logits = b.grad;
  p.grad_loss = b.grad_loss;
  p.grad_scale = c.grad_scale;
  p.grad_scale_ptr = c.grad_scale_ptr ? b.scale : nullptr;
  p.invalid_target_count = b.counter;
}

fusedloss_cross_entropy_params ce_params(const row_case& c, fusedloss_dtype dtype,
                                         fusedloss_device device, const bound& b) {
  fusedloss_cross_entropy_params p;
  fusedloss_cross_entropy_params_init(&p);
  fill_rows(p, c, dtype, device, b);
  p.weight = b.weight;
  p.label_smoothing = c.label_smoothing;
  p.z_loss = c.z_loss;
  p.softcap = c.softcap;
  p.z_loss_out = c.z_loss_out ? b.z : nullptr;
  return p;
}

fusedloss_softmax_focal_params focal_params(const row_case& c, fusedloss_dtype dtype,
                                            fusedloss_device device, const bound& b) {
  fusedloss_softmax_focal_params p;
  fusedloss_softmax_focal_params_init(&p);
  fill_rows(p, c, dtype, device, b);
  p.alpha = b.weight;
  p.gamma = c.gamma;
  return p;
}

template <class P>
using c_call = fusedloss_status (*)(const P*, void*, size_t, void*, fusedloss_error*);

template <class P>
fusedloss_status invoke(const P& p, fusedloss::call call, c_call<P> forward, c_call<P> backward,
                        c_call<P> forward_backward, void* workspace, size_t bytes,
                        cudaStream_t stream, fusedloss_error* err) {
  const c_call<P> fn = call == fusedloss::call::forward    ? forward
                       : call == fusedloss::call::backward ? backward
                                                           : forward_backward;
  return fn(&p, workspace, bytes, stream, err);
}

fusedloss_status call_api(const row_case& c, fusedloss_dtype dtype, fusedloss_device device,
                          const bound& b, void* workspace, size_t bytes, cudaStream_t stream,
                          fusedloss_error* err) {
  if (c.kind == loss_kind::softmax_focal) {
    return invoke(focal_params(c, dtype, device, b), c.call, fusedloss_softmax_focal_forward,
                  fusedloss_softmax_focal_backward, fusedloss_softmax_focal_forward_backward,
                  workspace, bytes, stream, err);
  }
  return invoke(ce_params(c, dtype, device, b), c.call, fusedloss_cross_entropy_forward,
                fusedloss_cross_entropy_backward, fusedloss_cross_entropy_forward_backward,
                workspace, bytes, stream, err);
}

}  // namespace

kernels::row_problem make_problem(const row_case& c, fusedloss_dtype dtype, const bound& b) {
  kernels::row_problem p{};
  p.kind = c.kind == loss_kind::probability     ? kernels::row_loss::probability_cross_entropy
           : c.kind == loss_kind::softmax_focal ? kernels::row_loss::softmax_focal
                                                : kernels::row_loss::cross_entropy;
  p.batch = c.batch;
  p.num_classes = c.num_classes;
  p.spatial = c.spatial;
  p.row_stride = stride_of(c);
  p.grad_row_stride = grad_stride_of(c);
  p.logits = b.logits;
  p.logits_dtype = dtype;
  p.targets = b.targets;
  p.targets_dtype = targets_dtype_of(c, dtype);
  p.weight = b.weight;
  p.ignore_index = c.ignore_index;
  if (c.kind == loss_kind::softmax_focal) {
    p.gamma = static_cast<float>(c.gamma);
  } else {
    p.label_smoothing = static_cast<float>(c.label_smoothing);
    p.z_loss = static_cast<float>(c.z_loss);
    p.softcap = static_cast<float>(c.softcap);
  }
  p.reduction = c.reduction;
  p.empty_value = c.empty_mean == FUSEDLOSS_EMPTY_MEAN_ZERO ? 0.0f : NAN;
  const bool backward = c.call == fusedloss::call::backward;
  p.loss =
      backward || (c.call == fusedloss::call::forward_backward && !c.loss_out) ? nullptr : b.loss;
  p.lse = backward ? (c.saved_lse ? b.lse : nullptr) : (c.lse_out ? b.lse : nullptr);
  p.read_lse = backward && c.saved_lse;
  p.z_loss_out = !backward && c.z_loss_out && c.kind != loss_kind::softmax_focal ? b.z : nullptr;
  p.grad = c.call == fusedloss::call::forward ? nullptr : b.grad;
  p.grad_loss = backward ? b.grad_loss : nullptr;
  p.grad_scale = c.grad_scale;
  p.grad_scale_ptr = c.grad_scale_ptr ? b.scale : nullptr;
  p.invalid_target_count = backward ? nullptr : b.counter;
  p.tier = c.tier;
  return p;
}

::testing::AssertionResult gpu_workspace_bytes(const row_case& c, fusedloss_dtype dtype,
                                               const bound& b, size_t* bytes) {
  if (c.tier == row_tier::automatic) {
    fusedloss_error err{};
    fusedloss_status s;
    if (c.kind == loss_kind::softmax_focal) {
      const auto p = focal_params(c, dtype, FUSEDLOSS_DEVICE_CUDA, b);
      s = fusedloss_softmax_focal_workspace_size(&p, bytes, &err);
    } else {
      const auto p = ce_params(c, dtype, FUSEDLOSS_DEVICE_CUDA, b);
      s = fusedloss_cross_entropy_workspace_size(&p, bytes, &err);
    }
    if (s != FUSEDLOSS_SUCCESS) {
      return ::testing::AssertionFailure() << "workspace_size: " << err.message;
    }
    return ::testing::AssertionSuccess();
  }
  const cudaError_t e = kernels::row_workspace_bytes(make_problem(c, dtype, b), bytes);
  if (e != cudaSuccess) {
    return ::testing::AssertionFailure() << "row_workspace_bytes: " << cudaGetErrorName(e);
  }
  return ::testing::AssertionSuccess();
}

::testing::AssertionResult launch(const row_case& c, fusedloss_dtype dtype, const bound& b,
                                  void* workspace, size_t bytes, cudaStream_t stream) {
  if (c.tier == row_tier::automatic) {
    fusedloss_error err{};
    const fusedloss_status s =
        call_api(c, dtype, FUSEDLOSS_DEVICE_CUDA, b, workspace, bytes, stream, &err);
    if (s != FUSEDLOSS_SUCCESS) {
      return ::testing::AssertionFailure()
             << fusedloss_status_string(s) << " from the CUDA call: " << err.message;
    }
    return ::testing::AssertionSuccess();
  }
  const kernels::row_problem p = make_problem(c, dtype, b);
  row_tier chosen = row_tier::automatic;
  cudaError_t e = kernels::row_tier_for(p, &chosen);
  if (e != cudaSuccess)
    return ::testing::AssertionFailure() << "row_tier_for: " << cudaGetErrorName(e);
  if (chosen != c.tier)
    return ::testing::AssertionFailure() << "row_tier_for says " << name(chosen);
  e = kernels::run_row_loss(p, workspace, bytes, stream);
  if (e != cudaSuccess)
    return ::testing::AssertionFailure() << "run_row_loss: " << cudaGetErrorName(e);
  return ::testing::AssertionSuccess();
}

// ------------------------------------------------------------------------------------------------
// Outputs.

outputs poisoned_outputs(const row_case& c, fusedloss_dtype dtype) {
  return {buffer::poisoned(FUSEDLOSS_FLOAT32, loss_count(c)),
          buffer::poisoned(FUSEDLOSS_FLOAT32, static_cast<size_t>(rows_of(c))),
          buffer::poisoned(FUSEDLOSS_FLOAT32, loss_count(c)),
          buffer::poisoned(dtype, static_cast<size_t>(c.batch * grad_stride_of(c))), 0};
}

outputs run_reference(const row_case& c, fusedloss_dtype dtype, const inputs& in) {
  outputs out = poisoned_outputs(c, dtype);
  if (c.call == fusedloss::call::backward && c.saved_lse) out.lse = in.saved_lse;
  int64_t counter = kCounterStart;
  const bound b{in.logits.data(),
                in.targets.data(),
                c.weight ? static_cast<const float*>(in.weight.data()) : nullptr,
                static_cast<const float*>(in.grad_loss.data()),
                static_cast<const float*>(in.scale.data()),
                static_cast<float*>(out.lse.data()),
                static_cast<float*>(out.loss.data()),
                static_cast<float*>(out.z.data()),
                out.grad.data(),
                &counter};
  fusedloss_error err{};
  const fusedloss_status s = call_api(c, dtype, FUSEDLOSS_DEVICE_CPU, b, nullptr, 0, nullptr, &err);
  EXPECT_EQ(s, in.invalid > 0 ? FUSEDLOSS_INVALID_TARGET : FUSEDLOSS_SUCCESS)
      << "the reference: " << err.message;
  out.counter = counter;
  return out;
}

buffer reference_lse(const row_case& c, fusedloss_dtype dtype, const inputs& in) {
  row_case forward = c;
  forward.call = fusedloss::call::forward;
  forward.lse_out = true;
  forward.in_place = false;
  return run_reference(forward, dtype, in).lse;
}

// ------------------------------------------------------------------------------------------------
// Comparison.

void expect_matches(const row_case& c, fusedloss_dtype dtype, const inputs& in, const outputs& want,
                    const outputs& got) {
  const int64_t R = rows_of(c), C = c.num_classes;
  const row_bounds b = bounds_of(c, in);
  const bool backward = c.call == fusedloss::call::backward;

  {  // The loss and the z-loss term: unwritten (poisoned) on both sides in a backward.
    report loss("loss"), z("z_loss_out");
    if (c.reduction == FUSEDLOSS_REDUCTION_NONE) {
      for (int64_t r = 0; r < R; ++r) {
        const size_t i = static_cast<size_t>(r);
        const checks::tolerance t = counted(c, in, r)
                                        ? checks::tolerance{b.scale[i] * b.t[i], kLossRtol}
                                        : checks::tolerance{0, 0};  // exactly 0
        loss.value(i, got.loss[i], want.loss[i], t);
        z.value(i, got.z[i], want.z[i], t);
      }
    } else {
      double atol = 0;
      for (int64_t r = 0; r < R; ++r) {
        if (counted(c, in, r))
          atol += b.scale[static_cast<size_t>(r)] * b.t[static_cast<size_t>(r)];
      }
      const double normaliser = c.reduction == FUSEDLOSS_REDUCTION_MEAN ? b.normaliser : 1.0;
      const checks::tolerance t = normaliser != 0
                                      ? checks::tolerance{atol / normaliser, kReducedRtol}
                                      : checks::tolerance{0, 0};  // NaN or 0
      loss.value(0, got.loss[0], want.loss[0], t);
      z.value(0, got.z[0], want.z[0], t);
    }
  }

  {  // The LSE: written by forward calls, read (and left alone) by a backward given it.
    report lse("lse");
    const bool written = !backward && c.lse_out;
    for (int64_t r = 0; r < R; ++r) {
      const size_t i = static_cast<size_t>(r);
      lse.value(i, got.lse[i], want.lse[i],
                written ? checks::tolerance{b.t[i], 0} : checks::tolerance{0, 0});
    }
  }

  {  // The gradient, and every byte it must not write: padding, and all of it in a forward.
    const size_t element = element_bytes(dtype);
    const int64_t stride = stride_of(c), gstride = grad_stride_of(c);
    const size_t total = static_cast<size_t>(c.batch * gstride);
    std::vector<char> in_row(total, 0);
    const checks::tolerance dtype_tol = checks::rounding_tolerance(dtype);
    report grad("grad");
    for (int64_t r = 0; r < R; ++r) {
      const size_t ri = static_cast<size_t>(r);
      for (int64_t k = 0; k < C; ++k) {
        const size_t i = at(c, r, gstride, k);
        in_row[i] = 1;
        if (c.call == fusedloss::call::forward) continue;
        const double w = want.grad[i];
        checks::tolerance t{dtype_tol.atol + b.upstream[ri] * b.scale[ri] * b.t[ri],
                            dtype_tol.rtol + b.t[ri]};
        // Exactly 0: an ignored row or an empty mean, and a -inf logit whose exact gradient is 0
        // (p_j = 0 on both sides; no smoothing term).
        if (b.upstream[ri] == 0 ||
            (w == 0 && c.softcap == 0 && in.x[at(c, r, stride, k)] == -kInf)) {
          t = {0, 0};
        }
        grad.value(i, got.grad[i], w, t);
      }
    }
    report untouched("grad (must keep its bytes)");
    const std::vector<unsigned char> poison(element, 0xFF);
    const auto* got_bytes = static_cast<const unsigned char*>(got.grad.data());
    const auto* logit_bytes = static_cast<const unsigned char*>(in.logits.data());
    for (size_t i = 0; i < total; ++i) {
      if (in_row[i] && c.call != fusedloss::call::forward) continue;
      untouched.bytes(i, got_bytes + i * element,
                      c.in_place ? logit_bytes + i * element : poison.data(), element);
    }
  }

  const int64_t expected = kCounterStart + (backward ? 0 : in.invalid);
  EXPECT_EQ(want.counter, expected) << "the reference's invalid_target_count";
  EXPECT_EQ(got.counter, expected) << "invalid_target_count (start " << kCounterStart << ")";
}

// ------------------------------------------------------------------------------------------------
// Drivers.

device_facts facts() {
  device_facts f;
  int device = 0;
  cudaGetDevice(&device);
  cudaDeviceGetAttribute(&f.major, cudaDevAttrComputeCapabilityMajor, device);
  cudaDeviceGetAttribute(&f.sms, cudaDevAttrMultiProcessorCount, device);
  cudaDeviceGetAttribute(&f.shared_optin, cudaDevAttrMaxSharedMemoryPerBlockOptin, device);
  return f;
}

bool clusters_available() { return facts().major >= 9; }

bool tier_accepts(const row_case& c, fusedloss_dtype dtype) {
  if (c.tier == row_tier::automatic || c.tier == row_tier::spatial) return true;
  if (c.spatial != 1) return false;
  if (c.tier == row_tier::two_pass) return true;
  if (!index_targets(c)) return false;
  if (c.tier == row_tier::warp) {
    const auto vector = static_cast<int64_t>(16 / element_bytes(dtype));
    const bool whole = c.num_classes % vector == 0 && stride_of(c) % vector == 0 &&
                       grad_stride_of(c) % vector == 0 && c.lead % vector == 0;
    return c.num_classes <= (whole ? 32 * 4 * vector : 32 * 16);
  }
  return !(c.call == fusedloss::call::backward && c.saved_lse);
}

void expect_refused(const kernels::row_problem& p, bool workspace_refused) {
  row_tier t = row_tier::automatic;
  EXPECT_EQ(kernels::row_tier_for(p, &t), cudaErrorInvalidValue) << "tier " << name(p.tier);
  size_t bytes = 0;
  if (workspace_refused) {
    EXPECT_EQ(kernels::row_workspace_bytes(p, &bytes), cudaErrorInvalidValue)
        << "tier " << name(p.tier);
  }
  EXPECT_EQ(kernels::run_row_loss(p, nullptr, 0, nullptr), cudaErrorInvalidValue)
      << "tier " << name(p.tier);
  EXPECT_EQ(cudaGetLastError(), cudaSuccess);
}

uint64_t fresh_seed() { return std::random_device{}(); }

void expect_matches_reference(const row_case& c, fusedloss_dtype dtype) {
  const uint64_t seed = fresh_seed();
  SCOPED_TRACE("seed " + std::to_string(seed) + ": " + c.describe());
  if (c.tier == row_tier::cluster && !clusters_available()) {  // before sm_90: refused
    expect_refused(make_problem(c, dtype, bound{}));
    return;
  }
  std::mt19937_64 rng(seed);
  inputs in = make_inputs(c, dtype, rng);
  if (c.call == fusedloss::call::backward && c.saved_lse)
    in.saved_lse = reference_lse(c, dtype, in);
  const outputs want = run_reference(c, dtype, in);

  device_arrays dev(c, in, dtype);
  dev.poison(c, in);
  const bound b = dev.bind(c);
  size_t bytes = 0;
  ASSERT_TRUE(gpu_workspace_bytes(c, dtype, b, &bytes));
  device_buffer workspace(bytes);
  ASSERT_TRUE(launch(c, dtype, b, workspace.data(), bytes, nullptr));
  FUSEDLOSS_CUDA_OK(cudaDeviceSynchronize());
  expect_matches(c, dtype, in, want, dev.download(c, dtype, nullptr));
}

void on_every_layout(row_case c, fusedloss_dtype dtype) {
  for (const layout& l : kLayouts) {
    c.num_classes = l.num_classes;
    c.batch = l.batch;
    c.spatial = l.spatial;
    c.tier = l.tier;
    if (tier_accepts(c, dtype)) expect_matches_reference(c, dtype);
  }
}

std::vector<std::vector<unsigned char>> raw(const device_arrays& dev) {
  return {dev.loss.raw(), dev.lse.raw(), dev.z.raw(), dev.grad.raw(), dev.logits.raw()};
}

}  // namespace fusedloss::gpu_tests::row_kernels
