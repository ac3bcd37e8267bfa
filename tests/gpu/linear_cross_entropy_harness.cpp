// Fused linear + cross-entropy's GPU test harness (linear_cross_entropy_harness.hpp): the inputs,
// the calls on either device, the workspace that holds a chunk of rows, and a GPU run's buffers.
#include "linear_cross_entropy_harness.hpp"

#include <gtest/gtest.h>

#include <cmath>
#include <cstdint>
#include <limits>
#include <random>
#include <vector>

#include "checks.hpp"
#include "fusedloss/fusedloss.hpp"
#include "gpu_support.hpp"

namespace fusedloss::gpu_tests::linear_cross_entropy {

inputs make_inputs(const lce_case& k, fusedloss_dtype dtype, std::mt19937_64& rng) {
  inputs in;
  std::uniform_real_distribution<double> unit(0.0, 1.0);
  std::uniform_int_distribution<int64_t> any_class(0, k.v - 1);
  // Logits of magnitude ~1: W scaled by 2 / sqrt(H), so each softmax has a few dominant classes.
  const double scale = 2.0 / std::sqrt(static_cast<double>(k.h));
  std::vector<double> x(static_cast<size_t>(k.n * input_stride(k)),
                        std::numeric_limits<double>::quiet_NaN());
  for (int64_t r = 0; r < k.n; ++r) {
    for (int64_t c = 0; c < k.h; ++c) x[r * input_stride(k) + c] = 2 * unit(rng) - 1;
  }
  in.input = buffer(dtype, x);
  in.x = in.input.values();
  in.weight = buffer(dtype, checks::uniform(rng, k.v * k.h, -scale, scale));
  in.w = in.weight.values();
  if (k.bias) {
    in.bias = buffer(dtype, checks::uniform(rng, k.v, -0.5, 0.5));
    in.b = in.bias.values();
  }
  in.y.resize(k.n);
  std::vector<double> stored(k.n);
  for (int64_t r = 0; r < k.n; ++r) {
    const double u = unit(rng);
    int64_t y = any_class(rng);
    if (u < k.ignored) {
      y = k.ignore_index;
    } else if (u < k.ignored + k.invalid) {
      y = r % 2 == 0 ? k.v + r : -1 - r;
    }
    in.y[r] = y;
    stored[r] = static_cast<double>(y);
    if (y != k.ignore_index && (y < 0 || y >= k.v)) ++in.invalid;
  }
  in.targets = buffer(k.targets_dtype, stored);
  if (k.weight) {
    std::vector<double> cw = checks::uniform(rng, k.v, 0.5, 2.0);
    if (k.zero_weight) std::fill(cw.begin(), cw.end(), 0.0);
    in.class_weight = buffer(FUSEDLOSS_FLOAT32, cw);
  }
  in.grad_loss = buffer(FUSEDLOSS_FLOAT32, checks::uniform(rng, loss_count(k), -1.0, 1.0));
  in.scale = buffer(FUSEDLOSS_FLOAT32, {kScaleValue});
  const fusedloss_dtype gdtype = k.grad_in_input_dtype ? dtype : FUSEDLOSS_FLOAT32;
  in.grad_weight_start = buffer(gdtype, checks::uniform(rng, k.v * k.h, -1.0, 1.0));
  in.grad_bias_start = buffer(gdtype, checks::uniform(rng, k.v, -1.0, 1.0));
  return in;
}

namespace {

// The params both devices share; the caller points them at its buffers.
fusedloss::linear_cross_entropy_params params_of(const lce_case& k) {
  auto p = fusedloss::make_linear_cross_entropy_params();
  p.batch = k.n;
  p.hidden = k.h;
  p.num_classes = k.v;
  p.input_row_stride = k.input_padding != 0 ? input_stride(k) : 0;
  p.grad_input_row_stride = k.grad_padding != 0 ? grad_stride(k) : 0;
  p.targets_dtype = k.targets_dtype;
  p.ignore_index = k.ignore_index;
  p.label_smoothing = k.label_smoothing;
  p.z_loss = k.z_loss;
  p.softcap = k.softcap;
  p.reduction = k.reduction;
  p.empty_mean = k.empty_mean;
  p.accumulate_grad_linear = k.accumulate ? 1 : 0;
  p.grad_scale = k.grad_scale;
  return p;
}

}  // namespace

fusedloss_status call_api(const fusedloss::linear_cross_entropy_params& p, call c, void* ws,
                          size_t bytes, fusedloss_error* err) {
  switch (c) {
    case call::forward:
      return fusedloss_linear_cross_entropy_forward(&p, ws, bytes, nullptr, err);
    case call::backward:
      return fusedloss_linear_cross_entropy_backward(&p, ws, bytes, nullptr, err);
    default:
      return fusedloss_linear_cross_entropy_forward_backward(&p, ws, bytes, nullptr, err);
  }
}

outputs run_reference(const lce_case& k, const inputs& in) {
  auto p = params_of(k);
  p.device = FUSEDLOSS_DEVICE_CPU;
  p.input_dtype = FUSEDLOSS_FLOAT64;
  p.grad_linear_dtype = FUSEDLOSS_FLOAT64;
  buffer x(FUSEDLOSS_FLOAT64, in.x), w(FUSEDLOSS_FLOAT64, in.w), b(FUSEDLOSS_FLOAT64, in.b);
  buffer targets = in.targets, cw = in.class_weight, gl = in.grad_loss, scale = in.scale;
  buffer loss = buffer::poisoned(FUSEDLOSS_FLOAT64, loss_count(k));
  buffer lse = buffer::poisoned(FUSEDLOSS_FLOAT64, k.n);
  buffer z = buffer::poisoned(FUSEDLOSS_FLOAT64, loss_count(k));
  buffer gi = buffer::poisoned(FUSEDLOSS_FLOAT64, k.n * grad_stride(k));
  buffer gw(FUSEDLOSS_FLOAT64, in.grad_weight_start.values());
  buffer gb(FUSEDLOSS_FLOAT64, in.grad_bias_start.values());
  int64_t counter = kCounterStart;
  p.input = x.data();
  p.linear_weight = w.data();
  p.linear_bias = k.bias ? b.data() : nullptr;
  p.targets = targets.data();
  p.weight = k.weight ? static_cast<const float*>(cw.data()) : nullptr;
  p.loss = forward_outputs(k) ? loss.data() : nullptr;
  p.lse = forward_outputs(k) && k.lse_out ? lse.data() : nullptr;
  p.z_loss_out = forward_outputs(k) && k.z_out ? z.data() : nullptr;
  p.grad_input = gradients(k) && k.grad_input ? gi.data() : nullptr;
  p.grad_linear_weight = gradients(k) && k.grad_weight ? gw.data() : nullptr;
  p.grad_linear_bias = gradients(k) && k.grad_bias ? gb.data() : nullptr;
  p.grad_loss = k.c == call::backward ? gl.data() : nullptr;
  p.grad_scale_ptr = k.grad_scale_ptr ? static_cast<const float*>(scale.data()) : nullptr;
  p.invalid_target_count = &counter;
  fusedloss_error err{};
  const fusedloss_status s = call_api(p, k.c, nullptr, 0, &err);
  EXPECT_TRUE(s == FUSEDLOSS_SUCCESS || (s == FUSEDLOSS_INVALID_TARGET && in.invalid > 0))
      << err.message;
  outputs out;
  out.loss = loss.values();
  out.lse = lse.values();
  out.z = z.values();
  out.grad_input = gi.values();
  out.grad_weight = gw.values();
  out.grad_bias = gb.values();
  return out;
}

size_t workspace_for(const fusedloss::linear_cross_entropy_params& p, int64_t rows,
                     size_t row_bytes) {
  fusedloss_error err{};
  size_t full = 0;
  EXPECT_EQ(fusedloss_linear_cross_entropy_workspace_size(&p, &full, &err), FUSEDLOSS_SUCCESS)
      << err.message;
  if (rows == 0 || rows >= p.batch) return full;
  const size_t bytes = full - static_cast<size_t>(p.batch - rows) * row_bytes;
  auto q = p;
  q.max_workspace_bytes = bytes;
  size_t got = 0;
  EXPECT_EQ(fusedloss_linear_cross_entropy_workspace_size(&q, &got, &err), FUSEDLOSS_SUCCESS)
      << err.message;
  const int64_t chunks = (p.batch + rows - 1) / rows;
  const int64_t balanced = (p.batch + chunks - 1) / chunks;
  const size_t want = full - static_cast<size_t>(p.batch - balanced) * row_bytes;
  EXPECT_EQ(got, want) << "a workspace of " << rows << " rows";
  q.max_workspace_bytes = bytes + row_bytes - 1;  // not yet one more row
  EXPECT_EQ(fusedloss_linear_cross_entropy_workspace_size(&q, &got, &err), FUSEDLOSS_SUCCESS);
  EXPECT_EQ(got, want);
  return bytes;
}

void prepare(device_run& d, const lce_case& k, fusedloss_dtype dtype, const inputs& in) {
  const fusedloss_dtype gdtype = k.grad_in_input_dtype ? dtype : FUSEDLOSS_FLOAT32;
  d.input = device_buffer(in.input);
  d.weight = device_buffer(in.weight);
  d.bias = device_buffer(in.bias);
  d.targets = device_buffer(in.targets);
  d.class_weight = device_buffer(in.class_weight);
  d.grad_loss = device_buffer(in.grad_loss);
  d.scale = device_buffer(in.scale);
  d.counter = device_buffer(buffer(FUSEDLOSS_INT64, {static_cast<double>(kCounterStart)}));
  d.loss = device_buffer(buffer::poisoned(FUSEDLOSS_FLOAT32, loss_count(k)));
  d.lse = device_buffer(buffer::poisoned(FUSEDLOSS_FLOAT32, k.n));
  d.z = device_buffer(buffer::poisoned(FUSEDLOSS_FLOAT32, loss_count(k)));
  d.grad_input = device_buffer(buffer::poisoned(dtype, k.n * grad_stride(k)));
  d.grad_weight =
      device_buffer(k.accumulate ? in.grad_weight_start : buffer::poisoned(gdtype, k.v * k.h));
  d.grad_bias = device_buffer(k.accumulate ? in.grad_bias_start : buffer::poisoned(gdtype, k.v));
  auto& p = d.p;
  p = params_of(k);
  p.device = FUSEDLOSS_DEVICE_CUDA;
  p.input_dtype = dtype;
  p.grad_linear_dtype = gdtype;
  p.input = d.input.data();
  p.linear_weight = d.weight.data();
  p.linear_bias = k.bias ? d.bias.data() : nullptr;
  p.targets = d.targets.data();
  p.weight = k.weight ? static_cast<const float*>(d.class_weight.data()) : nullptr;
  // Every output buffer is given; a call must leave those it does not write as they are.
  p.loss = d.loss.data();
  p.lse = k.lse_out ? d.lse.data() : nullptr;
  p.z_loss_out = k.z_out ? d.z.data() : nullptr;
  p.grad_input = k.grad_input ? d.grad_input.data() : nullptr;
  p.grad_linear_weight = k.grad_weight ? d.grad_weight.data() : nullptr;
  p.grad_linear_bias = k.grad_bias ? d.grad_bias.data() : nullptr;
  // Given to every call (the refusal test runs backward on these params); only backward reads it.
  p.grad_loss = d.grad_loss.data();
  p.grad_scale_ptr = k.grad_scale_ptr ? static_cast<const float*>(d.scale.data()) : nullptr;
  p.invalid_target_count = static_cast<int64_t*>(d.counter.data());
}

outputs read_back(const device_run& d, const lce_case& k, fusedloss_dtype dtype) {
  const fusedloss_dtype gdtype = k.grad_in_input_dtype ? dtype : FUSEDLOSS_FLOAT32;
  buffer loss = buffer::poisoned(FUSEDLOSS_FLOAT32, loss_count(k));
  buffer lse = buffer::poisoned(FUSEDLOSS_FLOAT32, k.n);
  buffer z = buffer::poisoned(FUSEDLOSS_FLOAT32, loss_count(k));
  buffer gi = buffer::poisoned(dtype, k.n * grad_stride(k));
  buffer gw = buffer::poisoned(gdtype, k.v * k.h);
  buffer gb = buffer::poisoned(gdtype, k.v);
  buffer counter = buffer::poisoned(FUSEDLOSS_INT64, 1);
  d.loss.download(loss);
  d.lse.download(lse);
  d.z.download(z);
  d.grad_input.download(gi);
  d.grad_weight.download(gw);
  d.grad_bias.download(gb);
  d.counter.download(counter);
  outputs out;
  out.loss = loss.values();
  out.lse = lse.values();
  out.z = z.values();
  out.grad_input = gi.values();
  out.grad_weight = gw.values();
  out.grad_bias = gb.values();
  out.counter = static_cast<int64_t>(counter[0]);
  return out;
}

}  // namespace fusedloss::gpu_tests::linear_cross_entropy
