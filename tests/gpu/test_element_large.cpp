// The element-loss kernels on 2^26 and on more than 2^32 elements. Slow tests (the
// fusedloss_gpu_slow_tests executable).
#include <cuda_runtime_api.h>
#include <gtest/gtest.h>

#include <algorithm>
#include <cstdint>
#include <random>
#include <string>
#include <utility>
#include <vector>

#include "checks.hpp"
#include "element_kernels_harness.hpp"

namespace fusedloss::gpu_tests::element_kernels {
namespace {

TYPED_TEST(ElementKernels, LargestThatFitsATest) {
  element_case c;
  c.numel = fusedloss::gpu_tests::scaled_size((int64_t{1} << 26) + 5);
  c.weight = true;
  expect_matches_reference(c, TestFixture::dtype);
}

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

}  // namespace
}  // namespace fusedloss::gpu_tests::element_kernels
