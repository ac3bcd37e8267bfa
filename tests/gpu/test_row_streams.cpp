// The row kernels on a non-default stream and replayed in CUDA graphs (also after calls of another
// size), from two host threads at once, and a backward from the GPU forward's own LSE.
#include <cuda_runtime_api.h>
#include <gtest/gtest.h>

#include <cstdint>
#include <random>
#include <string>
#include <thread>

#include "row_kernels_harness.hpp"

namespace fusedloss::gpu_tests::row_kernels {
namespace {

// ------------------------------------------------------------------------------------------------
// Streams, graphs, determinism.

struct stream_holder {
  cudaStream_t stream = nullptr;
  ~stream_holder() {
    if (stream != nullptr) cudaStreamDestroy(stream);
  }
};
struct graph_holder {
  cudaGraph_t graph = nullptr;
  cudaGraphExec_t exec = nullptr;
  ~graph_holder() {
    if (exec != nullptr) cudaGraphExecDestroy(exec);
    if (graph != nullptr) cudaGraphDestroy(graph);
  }
};

// On a non-blocking stream, then captured in a graph and replayed twice: each run matches the
// reference, the counter (read on the stream) gets each run's count, and every run is bitwise the
// same.
void expect_stream_and_graph(const row_case& c, fusedloss_dtype dtype) {
  const uint64_t seed = fresh_seed();
  SCOPED_TRACE("seed " + std::to_string(seed) + ": " + c.describe());
  if (c.tier == row_tier::cluster && !clusters_available()) return;
  std::mt19937_64 rng(seed);
  inputs in = make_inputs(c, dtype, rng);
  if (c.call == fusedloss::call::backward && c.saved_lse)
    in.saved_lse = reference_lse(c, dtype, in);
  const outputs want = run_reference(c, dtype, in);
  device_arrays dev(c, in, dtype);
  const bound b = dev.bind(c);
  size_t bytes = 0;
  ASSERT_TRUE(gpu_workspace_bytes(c, dtype, b, &bytes));
  device_buffer workspace(bytes);
  stream_holder s;
  FUSEDLOSS_CUDA_OK(cudaStreamCreateWithFlags(&s.stream, cudaStreamNonBlocking));

  dev.poison(c, in);
  ASSERT_TRUE(launch(c, dtype, b, workspace.data(), bytes, s.stream));
  FUSEDLOSS_CUDA_OK(cudaStreamSynchronize(s.stream));
  expect_matches(c, dtype, in, want, dev.download(c, dtype, s.stream));
  const auto direct = raw(dev);

  graph_holder g;
  FUSEDLOSS_CUDA_OK(cudaStreamBeginCapture(s.stream, cudaStreamCaptureModeGlobal));
  const ::testing::AssertionResult captured =
      launch(c, dtype, b, workspace.data(), bytes, s.stream);
  FUSEDLOSS_CUDA_OK(cudaStreamEndCapture(s.stream, &g.graph));
  ASSERT_TRUE(captured);
  FUSEDLOSS_CUDA_OK(cudaGraphInstantiate(&g.exec, g.graph, 0));
  for (int replay = 0; replay < 2; ++replay) {
    dev.poison(c, in);
    FUSEDLOSS_CUDA_OK(cudaGraphLaunch(g.exec, s.stream));
    FUSEDLOSS_CUDA_OK(cudaStreamSynchronize(s.stream));
    expect_matches(c, dtype, in, want, dev.download(c, dtype, s.stream));
    EXPECT_EQ(raw(dev), direct) << "replay " << replay << " differs from the direct run";
  }
}

TYPED_TEST(RowKernels, NonDefaultStreamAndGraphReplay) {
  const fusedloss_dtype dtype = TestFixture::dtype;
  row_case base;  // mean (the prepass), weights, smoothing, invalid targets, a device scale
  base.ignored = 0.1;
  base.invalid = 0.05;
  base.weight = true;
  base.label_smoothing = 0.1;
  base.grad_scale_ptr = true;
  for (const layout& l : kLayouts) {
    row_case c = base;
    c.num_classes = l.num_classes;
    c.batch = l.batch * 20;
    c.spatial = l.spatial;
    c.tier = l.tier;
    expect_stream_and_graph(c, dtype);
  }
  row_case vocab = base;  // cluster (sm_90) or two_pass, through the public API
  vocab.num_classes = 131072;
  vocab.batch = 2;
  vocab.reduction = FUSEDLOSS_REDUCTION_SUM;
  expect_stream_and_graph(vocab, dtype);
  row_case saved = base;  // backward from the saved LSE
  saved.num_classes = 1000;
  saved.batch = 50;
  saved.call = fusedloss::call::backward;
  saved.saved_lse = true;
  expect_stream_and_graph(saved, dtype);
  row_case focal;
  focal.kind = loss_kind::softmax_focal;
  focal.num_classes = 4097;
  focal.batch = 20;
  focal.reduction = FUSEDLOSS_REDUCTION_NONE;
  expect_stream_and_graph(focal, dtype);
}

// A graph captured at one size replays correctly after calls of another size (a smaller row, and
// so less shared memory, in between): a launch's shared-memory limit must not follow the last call.
TYPED_TEST(RowKernels, GraphReplayAfterACallOfAnotherSize) {
  const fusedloss_dtype dtype = TestFixture::dtype;
  row_case large;  // block tier, the row staged: 64 KB of shared memory
  large.num_classes = 65536 / static_cast<int64_t>(element_bytes(dtype));
  large.batch = 5;
  large.reduction = FUSEDLOSS_REDUCTION_SUM;
  row_case small = large;  // block tier, 8 KB
  small.num_classes = 4097;
  const uint64_t seed = fresh_seed();
  SCOPED_TRACE("seed " + std::to_string(seed));
  std::mt19937_64 rng(seed);
  const inputs in = make_inputs(large, dtype, rng);
  const outputs want = run_reference(large, dtype, in);
  device_arrays dev(large, in, dtype);
  const bound b = dev.bind(large);
  size_t bytes = 0;
  ASSERT_TRUE(gpu_workspace_bytes(large, dtype, b, &bytes));
  device_buffer workspace(bytes);
  stream_holder s;
  FUSEDLOSS_CUDA_OK(cudaStreamCreateWithFlags(&s.stream, cudaStreamNonBlocking));
  graph_holder g;
  FUSEDLOSS_CUDA_OK(cudaStreamBeginCapture(s.stream, cudaStreamCaptureModeGlobal));
  const ::testing::AssertionResult captured =
      launch(large, dtype, b, workspace.data(), bytes, s.stream);
  FUSEDLOSS_CUDA_OK(cudaStreamEndCapture(s.stream, &g.graph));
  ASSERT_TRUE(captured);
  FUSEDLOSS_CUDA_OK(cudaGraphInstantiate(&g.exec, g.graph, 0));
  expect_matches_reference(small, dtype);
  dev.poison(large, in);
  FUSEDLOSS_CUDA_OK(cudaGraphLaunch(g.exec, s.stream));
  FUSEDLOSS_CUDA_OK(cudaStreamSynchronize(s.stream));
  expect_matches(large, dtype, in, want, dev.download(large, dtype, s.stream));
}

// Two host threads calling on one device with rows of different sizes (64 KB and 8 KB of shared
// memory a block), each call checked against the reference.
TYPED_TEST(RowKernels, TwoHostThreadsAlternatingSizes) {
  const fusedloss_dtype dtype = TestFixture::dtype;
  const auto run = [dtype](int64_t C) {
    for (int k = 0; k < 3; ++k) {
      row_case c;
      c.num_classes = C;
      c.batch = 7;
      c.label_smoothing = k == 1 ? 0.1 : 0.0;
      expect_matches_reference(c, dtype);
    }
  };
  std::thread other(run, 65536 / static_cast<int64_t>(element_bytes(dtype)));
  run(4097);
  other.join();
}

// A backward given the GPU forward's own LSE (not the reference's) matches the reference backward
// given the same LSE, on each tier the two calls take: the forward's LSE is good enough to
// differentiate through.
TYPED_TEST(RowKernels, BackwardFromTheGpuForwardsLse) {
  const fusedloss_dtype dtype = TestFixture::dtype;
  for (int64_t C : {int64_t{100}, int64_t{4097}, int64_t{32768}}) {
    row_case c;
    c.num_classes = C;
    c.batch = 9;
    c.weight = true;
    c.label_smoothing = 0.1;
    c.ignored = 0.2;
    const uint64_t seed = fresh_seed();
    SCOPED_TRACE("seed " + std::to_string(seed) + ": " + c.describe());
    std::mt19937_64 rng(seed);
    inputs in = make_inputs(c, dtype, rng);
    row_case forward = c;
    forward.call = fusedloss::call::forward;
    forward.lse_out = true;
    device_arrays fwd(forward, in, dtype);
    fwd.poison(forward, in);
    const bound fb = fwd.bind(forward);
    size_t bytes = 0;
    ASSERT_TRUE(gpu_workspace_bytes(forward, dtype, fb, &bytes));
    device_buffer workspace(bytes);
    ASSERT_TRUE(launch(forward, dtype, fb, workspace.data(), bytes, nullptr));
    FUSEDLOSS_CUDA_OK(cudaDeviceSynchronize());
    in.saved_lse = fwd.download(forward, dtype, nullptr).lse;

    row_case backward = c;
    backward.call = fusedloss::call::backward;
    backward.saved_lse = true;
    const outputs want = run_reference(backward, dtype, in);
    device_arrays dev(backward, in, dtype);
    dev.poison(backward, in);
    const bound b = dev.bind(backward);
    ASSERT_TRUE(gpu_workspace_bytes(backward, dtype, b, &bytes));
    device_buffer backward_workspace(bytes);
    ASSERT_TRUE(launch(backward, dtype, b, backward_workspace.data(), bytes, nullptr));
    FUSEDLOSS_CUDA_OK(cudaDeviceSynchronize());
    expect_matches(backward, dtype, in, want, dev.download(backward, dtype, nullptr));
  }
}

}  // namespace
}  // namespace fusedloss::gpu_tests::row_kernels
