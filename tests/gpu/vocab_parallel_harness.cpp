// Vocabulary-parallel cross-entropy's GPU test harness (vocab_parallel_harness.hpp): the inputs,
// and the shard calls of every rank on one device (or on the CPU path), with the all-reduces on
// the host.
#include "vocab_parallel_harness.hpp"

#include <cuda_runtime_api.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>
#include <random>
#include <string>
#include <vector>

#include "checks.hpp"
#include "fusedloss/fusedloss.h"
#include "gpu_support.hpp"

namespace fusedloss::gpu_tests::vocab_parallel {

inputs make_inputs(const vp_case& c, fusedloss_dtype dtype, std::mt19937_64& rng) {
  const int64_t N = c.batch, V = c.vocab();
  std::uniform_real_distribution<double> unit(0.0, 1.0), logit(-6.0, 6.0);
  inputs in;
  in.x = checks::round_to(dtype, checks::uniform(rng, static_cast<size_t>(N * V), -6.0, 6.0));
  in.w = c.weight ? checks::round_to(FUSEDLOSS_FLOAT32,
                                     checks::uniform(rng, static_cast<size_t>(V), 0.5, 2.0))
                  : std::vector<double>(static_cast<size_t>(V), 1.0);
  const std::vector<int64_t> out_of_range = {V, V + 1000, -1, -7, int64_t{1} << 33};
  in.y.resize(static_cast<size_t>(N));
  for (int64_t r = 0; r < N; ++r) {
    // Row r's target lies in rank r % W's slice, so every rank owns some.
    const int k = static_cast<int>(r % c.ranks());
    std::uniform_int_distribution<int64_t> in_slice(c.start(k), c.start(k) + c.widths[k] - 1);
    const double u = unit(rng);
    int64_t y = in_slice(rng);
    if (u < c.ignored) {
      y = c.ignore_index;
    } else if (u < c.ignored + c.invalid) {
      const bool int32 = c.index_dtype == FUSEDLOSS_INT32;
      y = out_of_range[static_cast<size_t>(in.invalid) % (int32 ? 4 : out_of_range.size())];
      ++in.invalid;
    }
    in.y[static_cast<size_t>(r)] = y;
  }
  if (c.non_finite) {
    const auto X = [&](int64_t r, int64_t cls) -> double& {
      return in.x[static_cast<size_t>(r * V + cls)];
    };
    const int last = c.ranks() - 1;
    const double inf = std::numeric_limits<double>::infinity();
    if (N > 1) X(1, c.start(last)) = kNaN;
    if (N > 2) X(2, c.widths[0] - 1) = inf;
    for (int64_t j = 0; N > 3 && j < c.widths[static_cast<size_t>(last)]; ++j) {
      X(3, c.start(last) + j) = -inf;
    }
    for (int64_t j = 0; N > 4 && j < V; ++j) {
      if (j % 3 == 0 || j == in.y[4]) X(4, j) = -inf;
    }
  }
  std::vector<double> stored(in.y.begin(), in.y.end());
  in.targets = buffer(c.index_dtype, stored);
  return in;
}

buffer slice_logits(const vp_case& c, const inputs& in, fusedloss_dtype dtype, int k) {
  const int64_t V = c.vocab(), s = c.stride(k), w = c.widths[static_cast<size_t>(k)];
  std::vector<double> v(static_cast<size_t>(c.batch * s), kNaN);
  for (int64_t r = 0; r < c.batch; ++r) {
    for (int64_t j = 0; j < w; ++j) {
      v[static_cast<size_t>(r * s + j)] = in.x[static_cast<size_t>(r * V + c.start(k) + j)];
    }
  }
  return buffer(dtype, v);
}

// ------------------------------------------------------------------------------------------------
// The shard calls of every rank on one device, with the all-reduces on the host.

namespace {

// Rank k's slice of the weights.
buffer slice_weights(const vp_case& c, const inputs& in, int k) {
  const auto b = in.w.begin() + c.start(k);
  return buffer(FUSEDLOSS_FLOAT32, std::vector<double>(b, b + c.widths[static_cast<size_t>(k)]));
}

// The all-reduces of the summaries (float32 values, rank order). MAX propagates a NaN.
void all_reduce_max(std::vector<buffer>& s, int64_t batch) {
  for (int64_t r = 0; r < batch; ++r) {
    float m = -std::numeric_limits<float>::infinity();
    for (const buffer& b : s) {
      const float v = static_cast<const float*>(b.data())[r];
      m = std::isnan(m) || std::isnan(v) ? NAN : std::max(m, v);
    }
    for (buffer& b : s) static_cast<float*>(b.data())[r] = m;
  }
}
void all_reduce_sum(std::vector<buffer>& s, int64_t batch) {
  const int64_t first = FUSEDLOSS_SHARD_SUMMARY_SUM_EXP * batch;
  for (int64_t i = first; i < kFields * batch; ++i) {
    float total = 0.0f;
    for (const buffer& b : s) total += static_cast<const float*>(b.data())[i];
    for (buffer& b : s) static_cast<float*>(b.data())[i] = total;
  }
}

}  // namespace

shard_run run_shards(const vp_case& c, const inputs& in, fusedloss_dtype dtype, bool gpu) {
  const int W = c.ranks();
  const int64_t N = c.batch;
  const size_t e = element_bytes(dtype);
  const fusedloss_device device = gpu ? FUSEDLOSS_DEVICE_CUDA : FUSEDLOSS_DEVICE_CPU;
  shard_run out;
  out.ranks.resize(static_cast<size_t>(W));

  // Host arrays per rank, and their device copies on the GPU path.
  std::vector<buffer> logits(W), weight(W), summary(W), loss(W), lse(W), z(W), grad(W), count(W);
  const buffer scale(FUSEDLOSS_FLOAT32, {1.5});
  for (int k = 0; k < W; ++k) {
    logits[k] = slice_logits(c, in, dtype, k);
    weight[k] = slice_weights(c, in, k);
    summary[k] = buffer::poisoned(FUSEDLOSS_FLOAT32, static_cast<size_t>(kFields * N));
    loss[k] = buffer::poisoned(FUSEDLOSS_FLOAT32, c.loss_count());
    lse[k] = buffer::poisoned(FUSEDLOSS_FLOAT32, static_cast<size_t>(N));
    z[k] = buffer::poisoned(FUSEDLOSS_FLOAT32, c.loss_count());
    grad[k] = buffer::poisoned(dtype, static_cast<size_t>(N * c.stride(k)));
    count[k] = buffer(FUSEDLOSS_INT64, {static_cast<double>(kCounterStart)});
  }
  const size_t lead = static_cast<size_t>(c.lead) * e;
  const size_t grad_lead = static_cast<size_t>(c.grad_lead < 0 ? c.lead : c.grad_lead) * e;
  std::vector<device_buffer> d_logits, d_weight, d_summary, d_loss, d_lse, d_z, d_grad, d_count,
      d_workspace;
  device_buffer d_targets, d_scale;
  if (gpu) {
    d_targets = device_buffer(in.targets);
    d_scale = device_buffer(scale);
    for (int k = 0; k < W; ++k) {
      d_logits.emplace_back(logits[k], lead);
      d_weight.emplace_back(weight[k]);
      d_summary.emplace_back(summary[k]);
      d_loss.emplace_back(loss[k]);
      d_lse.emplace_back(lse[k]);
      d_z.emplace_back(z[k]);
      d_grad.emplace_back(grad[k], grad_lead);
      d_count.emplace_back(count[k]);
    }
  }
  std::vector<fusedloss_cross_entropy_shard_params> params(static_cast<size_t>(W));
  for (int k = 0; k < W; ++k) {
    fusedloss_cross_entropy_shard_params& p = params[static_cast<size_t>(k)];
    fusedloss_cross_entropy_shard_params_init(&p);
    const auto at = [&](buffer& h, std::vector<device_buffer>& d, size_t offset = 0) -> void* {
      return gpu ? d[static_cast<size_t>(k)].at(offset) : h.data();
    };
    p.device = device;
    p.batch = N;
    p.num_classes = c.widths[static_cast<size_t>(k)];
    p.vocab_start = c.start(k);
    p.vocab_size = c.vocab();
    p.row_stride = c.row_padding > 0 ? c.stride(k) : 0;
    p.logits = at(logits[k], d_logits, gpu ? lead : 0);
    p.logits_dtype = dtype;
    p.targets = gpu ? d_targets.data() : in.targets.data();
    p.targets_dtype = c.index_dtype;
    p.weight = c.weight ? static_cast<const float*>(at(weight[k], d_weight)) : nullptr;
    p.ignore_index = c.ignore_index;
    p.label_smoothing = c.label_smoothing;
    p.z_loss = c.z_loss;
    p.softcap = c.softcap;
    p.reduction = c.reduction;
    p.empty_mean = c.empty_mean;
    p.summary = at(summary[k], d_summary);
    p.loss = c.loss_out ? at(loss[k], d_loss) : nullptr;
    p.lse = c.lse_out ? at(lse[k], d_lse) : nullptr;
    p.z_loss_out = c.z_loss_out ? at(z[k], d_z) : nullptr;
    p.grad_logits = !c.grad      ? nullptr
                    : c.in_place ? const_cast<void*>(p.logits)
                                 : at(grad[k], d_grad, gpu ? grad_lead : 0);
    p.grad_scale = c.grad_scale;
    p.grad_scale_ptr =
        c.grad_scale_ptr ? static_cast<const float*>(gpu ? d_scale.data() : scale.data()) : nullptr;
    p.invalid_target_count = static_cast<int64_t*>(at(count[k], d_count));
    size_t bytes = 0;
    fusedloss_error err{};
    if (fusedloss_cross_entropy_shard_workspace_size(&p, &bytes, &err) != FUSEDLOSS_SUCCESS) {
      out.failure = std::string("workspace_size: ") + err.message;
      return out;
    }
    if (!gpu && bytes != 0) out.failure = "the CPU path asks for a workspace";
    if (gpu) d_workspace.emplace_back(bytes);
  }
  using step_fn = fusedloss_status (*)(const fusedloss_cross_entropy_shard_params*, void*, size_t,
                                       void*, fusedloss_error*);
  const auto step = [&](step_fn fn, const char* name, int k) {
    fusedloss_error err{};
    void* ws = gpu ? d_workspace[static_cast<size_t>(k)].data() : nullptr;
    const size_t bytes = gpu ? d_workspace[static_cast<size_t>(k)].bytes() : 0;
    const fusedloss_status s = fn(&params[static_cast<size_t>(k)], ws, bytes, nullptr, &err);
    if (s != FUSEDLOSS_SUCCESS && !(s == FUSEDLOSS_INVALID_TARGET && !gpu)) {
      out.failure = std::string(name) + ": " + err.message;
    }
    return s;
  };
  const auto download_summaries = [&] {
    if (!gpu) return;
    for (int k = 0; k < W; ++k) d_summary[k].download(summary[k]);
  };
  const auto upload_summaries = [&] {
    if (!gpu) return;
    for (int k = 0; k < W; ++k) {
      cudaMemcpy(d_summary[k].data(), summary[k].data(), summary[k].size_bytes(),
                 cudaMemcpyHostToDevice);
    }
  };

  for (int k = 0; k < W; ++k) step(fusedloss_cross_entropy_shard_partial, "partial", k);
  download_summaries();
  for (int k = 0; k < W; ++k) out.ranks[k].summary_partial = summary[k];
  all_reduce_max(summary, N);
  upload_summaries();
  for (int k = 0; k < W; ++k) step(fusedloss_cross_entropy_shard_rescale, "rescale", k);
  download_summaries();
  all_reduce_sum(summary, N);
  upload_summaries();
  for (int k = 0; k < W; ++k) {
    out.ranks[k].finish = step(fusedloss_cross_entropy_shard_finish, "finish", k);
  }
  if (gpu && cudaDeviceSynchronize() != cudaSuccess) out.failure = "a kernel failed";
  for (int k = 0; k < W; ++k) {
    rank_outputs& o = out.ranks[k];
    if (gpu) {
      d_loss[k].download(loss[k]);
      d_lse[k].download(lse[k]);
      d_z[k].download(z[k]);
      if (c.in_place) {
        d_logits[k].download(grad[k], lead);
      } else {
        d_grad[k].download(grad[k], grad_lead);
      }
      d_count[k].download(count[k]);
    } else if (c.in_place) {
      grad[k] = logits[k];
    }
    o.loss = loss[k];
    o.lse = lse[k];
    o.z = z[k];
    o.grad = grad[k];
    o.counter = static_cast<int64_t>(count[k][0]);
  }
  return out;
}

}  // namespace fusedloss::gpu_tests::vocab_parallel
