// Fused linear + cross-entropy on CUDA against the CPU reference: odd shapes, every option, the
// three reductions, bias or none, accumulation, both gradient dtypes, the three calls, and
// workspaces that split the rows into uneven chunks; a too-small workspace is refused with nothing
// written.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <random>
#include <vector>

#include "linear_cross_entropy_harness.hpp"

namespace fusedloss::gpu_tests::linear_cross_entropy {
namespace {

TYPED_TEST(LinearCrossEntropyKernels, PlainMeanInUnevenChunks) {
  FUSEDLOSS_REQUIRE_GPU_OR_SKIP();
  lce_case k;  // N = 7, H = 33, V = 1000: chunks of 3, 3, 1
  k.chunk_rows = 3;
  run_case(k, TypeParam::value);
}

TYPED_TEST(LinearCrossEntropyKernels, EveryOptionUnderSum) {
  FUSEDLOSS_REQUIRE_GPU_OR_SKIP();
  lce_case k;
  k.n = 33;
  k.h = 7;
  k.v = 4097;
  k.input_padding = 5;
  k.grad_padding = 3;
  k.weight = true;
  k.ignore_index = 3;  // a class: its rows are ignored
  k.label_smoothing = 0.1;
  k.z_loss = 1e-3;
  k.z_out = true;
  k.softcap = 15;
  k.reduction = FUSEDLOSS_REDUCTION_SUM;
  k.grad_scale = 0.5f;
  k.grad_scale_ptr = true;
  k.grad_in_input_dtype = true;
  k.chunk_rows = 7;  // 7 * 4 + 5 (balanced: ceil(33 / 5) = 7)
  run_case(k, TypeParam::value);
}

TYPED_TEST(LinearCrossEntropyKernels, EveryOptionUnderMean) {
  FUSEDLOSS_REQUIRE_GPU_OR_SKIP();
  lce_case k;
  k.n = 33;
  k.h = 33;
  k.v = 1000;
  k.weight = true;
  k.invalid = 0.1;
  k.label_smoothing = 0.2;
  k.z_loss = 1e-2;
  k.z_out = true;
  k.softcap = 5;
  k.grad_scale = 2.0f;
  k.grad_scale_ptr = true;
  run_case(k, TypeParam::value);  // one chunk
}

TYPED_TEST(LinearCrossEntropyKernels, NoneBackwardAccumulatesWithoutBias) {
  FUSEDLOSS_REQUIRE_GPU_OR_SKIP();
  lce_case k;
  k.n = 1000;
  k.h = 33;
  k.v = 7;
  k.bias = false;
  k.reduction = FUSEDLOSS_REDUCTION_NONE;
  k.c = call::backward;
  k.grad_bias = false;
  k.accumulate = true;
  k.chunk_rows = 333;  // four chunks, balanced to 250 rows each
  run_case(k, TypeParam::value);
}

TYPED_TEST(LinearCrossEntropyKernels, NoneForwardBackwardGradInputAlone) {
  FUSEDLOSS_REQUIRE_GPU_OR_SKIP();
  lce_case k;
  k.n = 7;
  k.h = 1000;
  k.v = 33;
  k.reduction = FUSEDLOSS_REDUCTION_NONE;
  k.z_loss = 1e-3;
  k.z_out = true;
  k.grad_weight = false;
  k.grad_bias = false;
  k.grad_padding = 1;
  k.chunk_rows = 1;
  run_case(k, TypeParam::value);
}

TYPED_TEST(LinearCrossEntropyKernels, ForwardAloneWithInvalidTargets) {
  FUSEDLOSS_REQUIRE_GPU_OR_SKIP();
  lce_case k;
  k.n = 7;
  k.h = 4097;
  k.v = 33;
  k.c = call::forward;
  k.invalid = 0.3;
  k.targets_dtype = FUSEDLOSS_INT32;
  k.z_loss = 1e-3;
  k.z_out = true;
  k.chunk_rows = 3;
  run_case(k, TypeParam::value);
}

TYPED_TEST(LinearCrossEntropyKernels, MeanBackwardAccumulatesInTheInputDtype) {
  FUSEDLOSS_REQUIRE_GPU_OR_SKIP();
  lce_case k;
  k.n = 33;
  k.h = 1000;
  k.v = 33;
  k.weight = true;
  k.c = call::backward;
  k.accumulate = true;
  k.grad_in_input_dtype = true;
  k.chunk_rows = 7;
  run_case(k, TypeParam::value);
}

TYPED_TEST(LinearCrossEntropyKernels, SumBackwardFloat32Gradients) {
  FUSEDLOSS_REQUIRE_GPU_OR_SKIP();
  lce_case k;
  k.n = 1000;
  k.h = 7;
  k.v = 33;
  k.reduction = FUSEDLOSS_REDUCTION_SUM;
  k.c = call::backward;
  k.label_smoothing = 0.1;
  k.chunk_rows = 99;
  run_case(k, TypeParam::value);
}

TYPED_TEST(LinearCrossEntropyKernels, OneOfEverything) {
  FUSEDLOSS_REQUIRE_GPU_OR_SKIP();
  for (const fusedloss_reduction reduction :
       {FUSEDLOSS_REDUCTION_NONE, FUSEDLOSS_REDUCTION_MEAN, FUSEDLOSS_REDUCTION_SUM}) {
    lce_case k;
    k.n = 1;
    k.h = 1;
    k.v = 1;
    k.ignored = 0;
    k.reduction = reduction;
    run_case(k, TypeParam::value);
  }
}

TYPED_TEST(LinearCrossEntropyKernels, EmptyMeans) {
  FUSEDLOSS_REQUIRE_GPU_OR_SKIP();
  for (const fusedloss_empty_mean policy : {FUSEDLOSS_EMPTY_MEAN_NAN, FUSEDLOSS_EMPTY_MEAN_ZERO}) {
    lce_case every_row_ignored;
    every_row_ignored.ignored = 1.0;
    every_row_ignored.empty_mean = policy;
    every_row_ignored.z_out = true;
    every_row_ignored.chunk_rows = 3;
    run_case(every_row_ignored, TypeParam::value);

    lce_case zero_total_weight;
    zero_total_weight.weight = true;
    zero_total_weight.zero_weight = true;
    zero_total_weight.empty_mean = policy;
    run_case(zero_total_weight, TypeParam::value);

    lce_case no_rows;  // and the overwritten gradients of W and b are 0
    no_rows.n = 0;
    no_rows.empty_mean = policy;
    run_case(no_rows, TypeParam::value);
  }
}

TYPED_TEST(LinearCrossEntropyKernels, TooSmallWorkspacesAreRefusedWithNothingWritten) {
  FUSEDLOSS_REQUIRE_GPU_OR_SKIP();
  const fusedloss_dtype dtype = TypeParam::value;
  lce_case k;
  k.z_out = true;
  std::mt19937_64 rng(11);
  const inputs in = make_inputs(k, dtype, rng);
  device_run d;
  prepare(d, k, dtype, in);
  const size_t row_bytes = static_cast<size_t>(k.v) * element_bytes(dtype);
  const size_t one_row = workspace_for(d.p, 1, row_bytes);
  device_buffer workspace(one_row + 256);
  fusedloss_error err{};
  for (const call c : {call::forward, call::backward, call::forward_backward}) {
    EXPECT_EQ(call_api(d.p, c, workspace.data(), one_row - 1, &err), FUSEDLOSS_INVALID_ARGUMENT);
    EXPECT_STREQ(err.argument, "workspace");
    EXPECT_EQ(call_api(d.p, c, workspace.at(8), one_row, &err), FUSEDLOSS_INVALID_ARGUMENT);
    EXPECT_STREQ(err.argument, "workspace");
    EXPECT_EQ(call_api(d.p, c, nullptr, one_row, &err), FUSEDLOSS_INVALID_ARGUMENT);
  }
  auto q = d.p;
  q.max_workspace_bytes = one_row - 1;
  size_t bytes = 0;
  EXPECT_EQ(fusedloss_linear_cross_entropy_workspace_size(&q, &bytes, &err),
            FUSEDLOSS_INVALID_ARGUMENT);
  EXPECT_STREQ(err.argument, "max_workspace_bytes");
  FUSEDLOSS_CUDA_OK(cudaDeviceSynchronize());
  const outputs got = read_back(d, k, dtype);
  const auto untouched = [](const std::vector<double>& v) {
    return std::all_of(v.begin(), v.end(), [](double x) { return std::isnan(x); });
  };
  EXPECT_TRUE(untouched(got.loss) && untouched(got.lse) && untouched(got.z));
  EXPECT_TRUE(untouched(got.grad_input) && untouched(got.grad_weight) && untouched(got.grad_bias));
  EXPECT_EQ(got.counter, kCounterStart);
}

}  // namespace
}  // namespace fusedloss::gpu_tests::linear_cross_entropy
