// The row kernels' options and calls against the reference on every layout: cross-entropy's
// options, probability targets, softmax focal, the three calls and their optional outputs, the
// index dtypes and ignore_index.
#include <gtest/gtest.h>

#include <cstdint>
#include <random>
#include <string>
#include <utility>
#include <vector>

#include "row_kernels_harness.hpp"

namespace fusedloss::gpu_tests::row_kernels {
namespace {

TYPED_TEST(RowKernels, EveryCrossEntropyOption) {
  int variant = 0;
  for (int set = 0; set < 8; ++set) {
    row_case c;
    c.reduction = kReductions[variant++ % 3];
    c.ignored = 0.1;
    switch (set) {
      case 0:
        c.weight = true;
        break;
      case 1:  // ignore_index a class
        c.ignore_index = 2;
        c.ignored = 0.3;
        break;
      case 2:
        c.label_smoothing = 0.1;
        break;
      case 3:
        c.label_smoothing = 1.0;
        break;  // smoothing alone
      case 4:
        c.weight = true;
        c.label_smoothing = 0.2;
        c.invalid = 0.1;
        break;
      case 5:
        c.z_loss = 1e-3;
        c.z_loss_out = true;
        break;
      case 6:
        c.softcap = 5.0;
        break;  // logits in [-6, 6): the cap bites, its slope stays >= 0.3
      default:
        c.softcap = 5.0;
        c.label_smoothing = 0.1;
        c.z_loss = 1e-2;
        c.z_loss_out = true;
        c.weight = true;
    }
    on_every_layout(c, TestFixture::dtype);
  }
}

TYPED_TEST(RowKernels, ProbabilityTargets) {
  int variant = 0;
  for (bool float32_targets : {false, true}) {
    for (int set = 0; set < 3; ++set) {
      row_case c;
      c.kind = loss_kind::probability;
      c.float32_targets = float32_targets;
      c.reduction = kReductions[variant++ % 3];
      c.label_smoothing = set == 0 ? 0.0 : 0.3;
      c.weight = set != 1;
      c.z_loss = set == 2 ? 1e-3 : 0.0;
      c.z_loss_out = set == 2;
      c.softcap = set == 1 ? 5.0 : 0.0;
      on_every_layout(c, TestFixture::dtype);
    }
  }
}

TYPED_TEST(RowKernels, SoftmaxFocal) {
  for (double gamma : {0.0, 0.5, 2.0}) {
    for (bool alpha : {false, true}) {
      for (fusedloss_reduction reduction : kReductions) {
        // mean with alpha: SoftmaxFocalMeanDividesByTheRowCount below
        if (alpha && reduction == FUSEDLOSS_REDUCTION_MEAN) continue;
        row_case c;
        c.kind = loss_kind::softmax_focal;
        c.gamma = gamma;
        c.weight = alpha;
        c.reduction = reduction;
        c.ignored = 0.2;
        c.ignore_index = 1;
        c.invalid = 0.05;
        on_every_layout(c, TestFixture::dtype);
      }
    }
  }
}

// gamma = 0 without alpha is cross-entropy without smoothing: bit for bit on the GPU.
TYPED_TEST(RowKernels, SoftmaxFocalGammaZeroIsCrossEntropy) {
  const fusedloss_dtype dtype = TestFixture::dtype;
  for (const layout& l : kLayouts) {
    for (fusedloss_reduction reduction : {FUSEDLOSS_REDUCTION_NONE, FUSEDLOSS_REDUCTION_MEAN}) {
      row_case ce;
      ce.num_classes = l.num_classes;
      ce.batch = l.batch;
      ce.spatial = l.spatial;
      ce.tier = l.tier;
      ce.reduction = reduction;
      ce.ignored = 0.2;
      if (ce.tier == row_tier::cluster && !clusters_available()) continue;
      row_case focal = ce;
      focal.kind = loss_kind::softmax_focal;
      focal.gamma = 0.0;
      const uint64_t seed = fresh_seed();
      SCOPED_TRACE("seed " + std::to_string(seed) + ": " + ce.describe());
      std::mt19937_64 rng(seed);
      const inputs in = make_inputs(ce, dtype, rng);
      std::vector<std::vector<unsigned char>> results;
      for (const row_case* c : {&ce, &focal}) {
        device_arrays dev(*c, in, dtype);
        dev.poison(*c, in);
        const bound b = dev.bind(*c);
        size_t bytes = 0;
        ASSERT_TRUE(gpu_workspace_bytes(*c, dtype, b, &bytes));
        device_buffer workspace(bytes);
        ASSERT_TRUE(launch(*c, dtype, b, workspace.data(), bytes, nullptr));
        FUSEDLOSS_CUDA_OK(cudaDeviceSynchronize());
        for (auto& r : raw(dev)) results.push_back(std::move(r));
      }
      const size_t half = results.size() / 2;
      for (size_t i = 0; i < half; ++i) EXPECT_EQ(results[i], results[half + i]) << "array " << i;
    }
  }
}

// Every call: forward with the LSE and the z-loss term; backward with a per-row and a scalar
// upstream, with and without the saved LSE; forward_backward with grad_scale and grad_scale_ptr,
// without the loss, without the LSE.
TYPED_TEST(RowKernels, EveryCall) {
  for (loss_kind kind : {loss_kind::cross_entropy, loss_kind::softmax_focal}) {
    for (int set = 0; set < 8; ++set) {
      row_case c;
      c.kind = kind;
      c.ignored = 0.1;
      c.weight = set % 2 == 1 && kind == loss_kind::cross_entropy;
      c.label_smoothing = kind == loss_kind::cross_entropy && set % 3 == 0 ? 0.1 : 0.0;
      switch (set) {
        case 0:
          c.call = fusedloss::call::forward;
          c.z_loss = kind == loss_kind::cross_entropy ? 1e-3 : 0.0;
          c.z_loss_out = kind == loss_kind::cross_entropy;
          break;
        case 1:
          c.call = fusedloss::call::backward;
          c.reduction = FUSEDLOSS_REDUCTION_NONE;
          break;
        case 2:
          c.call = fusedloss::call::backward;
          c.reduction = FUSEDLOSS_REDUCTION_SUM;
          c.saved_lse = true;
          break;
        case 3:
          c.call = fusedloss::call::backward;
          c.saved_lse = true;  // mean
          c.softcap = kind == loss_kind::cross_entropy ? 5.0 : 0.0;
          break;
        case 4:
          c.grad_scale = 0.75f;
          c.grad_scale_ptr = true;
          break;
        case 5:
          c.reduction = FUSEDLOSS_REDUCTION_NONE;
          c.grad_scale = 2.0f;  // scales every row alike
          break;
        case 6:
          c.loss_out = false;
          c.reduction = FUSEDLOSS_REDUCTION_SUM;
          break;
        default:
          c.lse_out = false;
          c.z_loss = kind == loss_kind::cross_entropy ? 1e-3 : 0.0;
          c.grad_scale_ptr = true;
      }
      on_every_layout(c, TestFixture::dtype);
    }
  }
}

// int32 and int64 targets; ignore_index -100, 0 (a class), and one int32 cannot hold (its rows
// then carry -100, out of range); out-of-range values beyond 32 bits.
TYPED_TEST(RowKernels, IndexDtypesAndIgnoreIndex) {
  for (fusedloss_dtype index_dtype : {FUSEDLOSS_INT32, FUSEDLOSS_INT64}) {
    for (int64_t ignore_index : {int64_t{-100}, int64_t{0}, int64_t{1} << 40}) {
      row_case c;
      c.index_dtype = index_dtype;
      c.ignore_index = ignore_index;
      c.ignored = 0.2;
      c.invalid = 0.2;
      c.reduction = ignore_index == 0 ? FUSEDLOSS_REDUCTION_NONE : FUSEDLOSS_REDUCTION_MEAN;
      on_every_layout(c, TestFixture::dtype);
    }
  }
}

// docs/SEMANTICS.md: softmax focal's mean divides by the count of non-ignored rows, alpha or not.
TYPED_TEST(RowKernels, SoftmaxFocalMeanDividesByTheRowCount) {
  row_case c;
  c.kind = loss_kind::softmax_focal;
  c.weight = true;  // alpha
  c.ignored = 0.2;
  on_every_layout(c, TestFixture::dtype);
}

// The z-loss term is a forward output of its own: forward_backward writes it without the loss.
TYPED_TEST(RowKernels, ZLossOutWithoutTheLoss) {
  for (fusedloss_reduction reduction : kReductions) {
    row_case c;
    c.z_loss = 1e-3;
    c.z_loss_out = true;
    c.loss_out = false;
    c.reduction = reduction;
    on_every_layout(c, TestFixture::dtype);
  }
}

}  // namespace
}  // namespace fusedloss::gpu_tests::row_kernels
