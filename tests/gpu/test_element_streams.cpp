// The element-loss kernels on a non-default stream and replayed in a CUDA graph, bitwise identical
// runs, and the same sum from different launch configurations.
#include <cuda_runtime_api.h>
#include <gtest/gtest.h>

#include <cmath>
#include <random>
#include <vector>

#include "checks.hpp"
#include "element_kernels_harness.hpp"
#include "element_losses.hpp"

namespace fusedloss::gpu_tests::element_kernels {
namespace {

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

}  // namespace
}  // namespace fusedloss::gpu_tests::element_kernels
