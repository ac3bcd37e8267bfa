// The element-loss calls' refusals on the GPU path: pointers in the wrong memory space and a
// short workspace.
#include <cuda_runtime_api.h>
#include <gtest/gtest.h>

#include <random>

#include "element_kernels_harness.hpp"

namespace fusedloss::gpu_tests::element_kernels {
namespace {

// Pointers in the wrong memory space and a short workspace are refused, and nothing is written.
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
}  // namespace fusedloss::gpu_tests::element_kernels
