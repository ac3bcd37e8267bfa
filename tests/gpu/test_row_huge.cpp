// The row kernels on more than 2^32 logits, a slow test (the fusedloss_gpu_slow_tests executable).
#include <cuda_runtime_api.h>
#include <gtest/gtest.h>

#include <algorithm>
#include <cstdint>
#include <random>
#include <string>
#include <vector>

#include "checks.hpp"
#include "fusedloss/fusedloss.h"
#include "row_kernels_harness.hpp"

namespace fusedloss::gpu_tests::row_kernels {
namespace {

// Logits (33000, 131072): 4.3e9 elements, 8.6 GB in bfloat16 (17.3 GB in float32), and as much
// gradient; row 32768 starts at element 2^32, row 16384 (bfloat16) or 8192 (float32) at byte 2^32.
// The rows repeat with a period of 61 rows (which divides neither 2^14 nor 2^15, so an offset that
// wraps at 32 bits lands on a row with other values): the reference runs on the 61 distinct rows,
// the GPU's every LSE and loss and sampled gradient rows on both sides of 2^32 are checked against
// it, and the sum against the per-row losses times their multiplicity, within the per-row bounds
// summed.
void expect_huge_batch(fusedloss_dtype dtype) {
  SCOPED_TRACE(fusedloss_dtype_string(dtype));
  const int64_t N = 33000, C = 131072, period = 61;
  const size_t logits_bytes = static_cast<size_t>(N * C) * element_bytes(dtype);
  const size_t needed = 2 * logits_bytes + (size_t{1} << 29);  // logits, gradient, 512 MiB more
  size_t free_bytes = 0, total_bytes = 0;
  FUSEDLOSS_CUDA_OK(cudaMemGetInfo(&free_bytes, &total_bytes));
  if (free_bytes < needed) {
    GTEST_SKIP() << "needs " << needed / (1 << 20)
                 << " MiB of free GPU memory (logits and gradient " << logits_bytes / (1 << 20)
                 << " MiB each), the GPU has " << free_bytes / (1 << 20)
                 << " MiB free: " << (needed - free_bytes) / (1 << 20) << " MiB short";
  }

  // The 61 distinct rows, on the reference: per-row loss, LSE and gradient (upstream 1).
  row_case u;
  u.batch = period;
  u.num_classes = C;
  u.reduction = FUSEDLOSS_REDUCTION_NONE;
  u.ignored = 0.1;
  u.invalid = 0.1;
  const uint64_t seed = fresh_seed();
  SCOPED_TRACE("seed " + std::to_string(seed));
  std::mt19937_64 rng(seed);
  const inputs in = make_inputs(u, dtype, rng);
  const outputs want = run_reference(u, dtype, in);
  const row_bounds b = bounds_of(u, in);

  // The device arrays: the 61 rows copied out by doubling, targets and expected counts repeated.
  device_buffer logits(logits_bytes), grad(logits_bytes);
  ASSERT_NE(logits.data(), nullptr);
  ASSERT_NE(grad.data(), nullptr);
  auto* base = static_cast<unsigned char*>(logits.data());
  const size_t row_bytes = static_cast<size_t>(C) * element_bytes(dtype);
  FUSEDLOSS_CUDA_OK(cudaMemcpy(base, in.logits.data(), period * row_bytes, cudaMemcpyHostToDevice));
  for (int64_t filled = period; filled < N;) {
    const int64_t n = std::min(filled, N - filled);
    FUSEDLOSS_CUDA_OK(
        cudaMemcpy(base + filled * row_bytes, base, n * row_bytes, cudaMemcpyDeviceToDevice));
    filled += n;
  }
  std::vector<double> y(N);
  std::vector<int64_t> multiplicity(period, 0);
  int64_t invalid = 0;
  for (int64_t r = 0; r < N; ++r) {
    y[r] = static_cast<double>(in.y[r % period]);
    ++multiplicity[r % period];
    if (!counted(u, in, r % period) && in.y[r % period] != u.ignore_index) ++invalid;
  }
  const device_buffer targets(buffer(FUSEDLOSS_INT64, y));
  device_buffer lse(N * sizeof(float)), loss(N * sizeof(float)), counter(sizeof(int64_t));
  FUSEDLOSS_CUDA_OK(cudaMemset(grad.data(), 0xFF, logits_bytes));
  FUSEDLOSS_CUDA_OK(cudaMemset(lse.data(), 0xFF, lse.bytes()));
  FUSEDLOSS_CUDA_OK(cudaMemset(counter.data(), 0, sizeof(int64_t)));

  fusedloss_cross_entropy_params p;
  fusedloss_cross_entropy_params_init(&p);
  p.device = FUSEDLOSS_DEVICE_CUDA;
  p.batch = N;
  p.num_classes = C;
  p.logits = logits.data();
  p.logits_dtype = dtype;
  p.targets = targets.data();
  p.targets_dtype = FUSEDLOSS_INT64;
  p.reduction = FUSEDLOSS_REDUCTION_SUM;
  p.loss = loss.data();
  p.lse = lse.data();
  p.grad_logits = grad.data();
  p.invalid_target_count = static_cast<int64_t*>(counter.data());
  fusedloss_error err{};
  size_t bytes = 0;
  ASSERT_EQ(fusedloss_cross_entropy_workspace_size(&p, &bytes, &err), FUSEDLOSS_SUCCESS)
      << err.message;
  device_buffer workspace(bytes);
  ASSERT_EQ(fusedloss_cross_entropy_forward_backward(&p, workspace.data(), bytes, nullptr, &err),
            FUSEDLOSS_SUCCESS)
      << err.message;
  FUSEDLOSS_CUDA_OK(cudaDeviceSynchronize());

  int64_t count = -1;
  ASSERT_EQ(fusedloss_read_and_clear_counter(static_cast<int64_t*>(counter.data()),
                                             FUSEDLOSS_DEVICE_CUDA, nullptr, &count, &err),
            FUSEDLOSS_SUCCESS);
  EXPECT_EQ(count, invalid);
  {
    buffer got_lse = buffer::poisoned(FUSEDLOSS_FLOAT32, N);
    lse.download(got_lse);
    report r("lse");
    for (int64_t i = 0; i < N; ++i) {
      r.value(i, got_lse[i], want.lse[i % period], {b.t[i % period], 0});
    }
  }
  {
    float got = 0;
    FUSEDLOSS_CUDA_OK(cudaMemcpy(&got, loss.data(), sizeof got, cudaMemcpyDeviceToHost));
    double sum = 0, atol = 0;
    for (int64_t k = 0; k < period; ++k) {
      sum += static_cast<double>(multiplicity[k]) * want.loss[k];
      if (counted(u, in, k)) atol += static_cast<double>(multiplicity[k]) * b.scale[k] * b.t[k];
    }
    report r("loss (sum)");
    r.value(0, got, sum, {atol, kReducedRtol});
  }
  {
    const checks::tolerance dt = checks::rounding_tolerance(dtype);
    for (int64_t row : {int64_t{0}, int64_t{1}, int64_t{2}, period, int64_t{8191}, int64_t{8192},
                        int64_t{16383}, int64_t{16384}, int64_t{32767}, int64_t{32768},
                        int64_t{32769}, int64_t{32768} + period, N - 1}) {
      buffer got = buffer::poisoned(dtype, C);
      FUSEDLOSS_CUDA_OK(cudaMemcpy(got.data(),
                                   static_cast<unsigned char*>(grad.data()) + row * row_bytes,
                                   row_bytes, cudaMemcpyDeviceToHost));
      const int64_t k = row % period;
      report r("grad row " + std::to_string(row));
      for (int64_t j = 0; j < C; ++j) {
        const checks::tolerance t =
            b.upstream[k] == 0 ? checks::tolerance{0, 0}
                               : checks::tolerance{dt.atol + b.upstream[k] * b.scale[k] * b.t[k],
                                                   dt.rtol + b.t[k]};
        r.value(j, got[j], want.grad[k * C + j], t);
      }
    }
  }

  // Every row's loss, from a forward under none.
  p.reduction = FUSEDLOSS_REDUCTION_NONE;
  p.grad_logits = nullptr;
  p.lse = nullptr;
  p.invalid_target_count = nullptr;
  ASSERT_EQ(fusedloss_cross_entropy_workspace_size(&p, &bytes, &err), FUSEDLOSS_SUCCESS)
      << err.message;
  device_buffer workspace_none(bytes);
  FUSEDLOSS_CUDA_OK(cudaMemset(loss.data(), 0xFF, loss.bytes()));
  ASSERT_EQ(fusedloss_cross_entropy_forward(&p, workspace_none.data(), bytes, nullptr, &err),
            FUSEDLOSS_SUCCESS)
      << err.message;
  FUSEDLOSS_CUDA_OK(cudaDeviceSynchronize());
  buffer got_loss = buffer::poisoned(FUSEDLOSS_FLOAT32, N);
  loss.download(got_loss);
  report r("loss (none)");
  for (int64_t i = 0; i < N; ++i) {
    const int64_t k = i % period;
    r.value(i, got_loss[i], want.loss[k],
            counted(u, in, k) ? checks::tolerance{b.scale[k] * b.t[k], kLossRtol}
                              : checks::tolerance{0, 0});
  }
}

TEST(RowKernelsHuge, LargeBatchTimesVocabAbove2To32) {
  FUSEDLOSS_REQUIRE_GPU_OR_SKIP();
  for (fusedloss_dtype dtype : {FUSEDLOSS_BFLOAT16, FUSEDLOSS_FLOAT32}) expect_huge_batch(dtype);
}

}  // namespace
}  // namespace fusedloss::gpu_tests::row_kernels
