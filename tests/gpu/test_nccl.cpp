// fusedloss::nccl: vocabulary-parallel cross-entropy with NCCL's all-reduces, run with one rank on
// one GPU (NCCL puts at most one rank of a communicator on a device), against the one-GPU fused
// cross-entropy of the same rows; and its refusals, which need no GPU.
#include <gtest/gtest.h>

#include <cmath>
#include <random>
#include <string>
#include <vector>

#include "checks.hpp"
#include "fusedloss/nccl.h"
#include "gpu_support.hpp"

namespace {

using fusedloss::checks::buffer;
using fusedloss::gpu_tests::device_buffer;

TEST(VocabParallelNccl, RefusesTheCpuAndANullCommunicator) {
  fusedloss_cross_entropy_shard_params p;
  fusedloss_cross_entropy_shard_params_init(&p);
  fusedloss_error err;
  EXPECT_EQ(fusedloss_cross_entropy_vocab_parallel_nccl(&p, nullptr, nullptr, 0, nullptr, &err),
            FUSEDLOSS_INVALID_ARGUMENT);
  EXPECT_STREQ(err.argument, "device");
  p.device = FUSEDLOSS_DEVICE_CUDA;
  EXPECT_EQ(fusedloss_cross_entropy_vocab_parallel_nccl(&p, nullptr, nullptr, 0, nullptr, &err),
            FUSEDLOSS_INVALID_ARGUMENT);
  EXPECT_STREQ(err.argument, "comm");
}

TEST(VocabParallelNccl, OneRankEqualsTheFusedCall) {
  FUSEDLOSS_REQUIRE_GPU_OR_SKIP();
  const unsigned seed = std::random_device{}();
  SCOPED_TRACE("seed " + std::to_string(seed));
  std::mt19937_64 rng(seed);
  int device = 0;
  FUSEDLOSS_CUDA_OK(cudaGetDevice(&device));
  ncclComm_t comm = nullptr;
  ASSERT_EQ(ncclCommInitAll(&comm, 1, &device), ncclSuccess);
  cudaStream_t stream;
  FUSEDLOSS_CUDA_OK(cudaStreamCreateWithFlags(&stream, cudaStreamNonBlocking));

  const int64_t n = 37, v = 1003;
  const buffer logits(FUSEDLOSS_BFLOAT16, fusedloss::checks::uniform(rng, n * v, -6, 6));
  std::vector<double> classes = fusedloss::checks::class_indices(rng, n, v);
  classes[3] = -100;
  const buffer targets(FUSEDLOSS_INT64, classes);
  device_buffer d_logits(logits), d_targets(targets);
  device_buffer summary(FUSEDLOSS_SHARD_SUMMARY_FIELDS * n * sizeof(float));
  device_buffer loss(sizeof(float)), grad(logits.size_bytes());
  device_buffer want_loss(sizeof(float)), want_grad(logits.size_bytes());

  fusedloss_cross_entropy_shard_params p;
  fusedloss_cross_entropy_shard_params_init(&p);
  p.device = FUSEDLOSS_DEVICE_CUDA;
  p.batch = n;
  p.num_classes = v;
  p.vocab_size = v;
  p.logits = d_logits.data();
  p.logits_dtype = FUSEDLOSS_BFLOAT16;
  p.targets = d_targets.data();
  p.label_smoothing = 0.1;
  p.z_loss = 1e-3;
  p.summary = summary.data();
  p.loss = loss.data();
  p.grad_logits = grad.data();
  fusedloss_error err;
  size_t bytes = 0;
  ASSERT_EQ(fusedloss_cross_entropy_shard_workspace_size(&p, &bytes, &err), FUSEDLOSS_SUCCESS);
  device_buffer workspace(bytes);
  ASSERT_EQ(
      fusedloss_cross_entropy_vocab_parallel_nccl(&p, comm, workspace.data(), bytes, stream, &err),
      FUSEDLOSS_SUCCESS)
      << err.message;

  fusedloss_cross_entropy_params whole;
  fusedloss_cross_entropy_params_init(&whole);
  whole.device = FUSEDLOSS_DEVICE_CUDA;
  whole.batch = n;
  whole.num_classes = v;
  whole.logits = d_logits.data();
  whole.logits_dtype = FUSEDLOSS_BFLOAT16;
  whole.targets = d_targets.data();
  whole.label_smoothing = 0.1;
  whole.z_loss = 1e-3;
  whole.loss = want_loss.data();
  whole.grad_logits = want_grad.data();
  size_t whole_bytes = 0;
  ASSERT_EQ(fusedloss_cross_entropy_workspace_size(&whole, &whole_bytes, &err), FUSEDLOSS_SUCCESS);
  device_buffer whole_workspace(whole_bytes);
  ASSERT_EQ(fusedloss_cross_entropy_forward_backward(&whole, whole_workspace.data(), whole_bytes,
                                                     stream, &err),
            FUSEDLOSS_SUCCESS)
      << err.message;
  FUSEDLOSS_CUDA_OK(cudaStreamSynchronize(stream));

  buffer got = buffer::poisoned(FUSEDLOSS_FLOAT32, 1),
         want = buffer::poisoned(FUSEDLOSS_FLOAT32, 1);
  loss.download(got);
  want_loss.download(want);
  // Both compute in float32 from the same bf16 logits; they differ in the order of their sums.
  EXPECT_NEAR(got[0], want[0], 1e-5 * std::abs(want[0]));
  buffer got_grad = buffer::poisoned(FUSEDLOSS_BFLOAT16, n * v);
  buffer want_grad_host = buffer::poisoned(FUSEDLOSS_BFLOAT16, n * v);
  grad.download(got_grad);
  want_grad.download(want_grad_host);
  // ... and their bf16 gradients by at most one bf16 ulp where a value lies near a rounding tie.
  for (int64_t i = 0; i < n * v; ++i) {
    const double w = want_grad_host[i];
    if (std::abs(got_grad[i] - w) > std::abs(w) * 0x1p-7 + 1e-9) {
      ADD_FAILURE() << "grad[" << i << "]: " << got_grad[i] << " vs " << w;
      break;
    }
  }
  cudaStreamDestroy(stream);
  ncclCommDestroy(comm);
}

}  // namespace
