// The row kernels on every memory layout: (N, C, S) with S > 1, strides with padding, the
// gradient in place of the logits (on clusters of up to 8 blocks too), and a misaligned first row.
#include <gtest/gtest.h>

#include <cstdint>
#include <utility>
#include <vector>

#include "row_kernels_harness.hpp"

namespace fusedloss::gpu_tests::row_kernels {
namespace {

// (N, C, S) with S > 1: classes S apart, targets (N, S); with padding between samples of the
// logits and of the gradient.
TYPED_TEST(RowKernels, SpatialLayout) {
  int variant = 0;
  for (int64_t S : {2, 7, 300}) {
    for (int64_t C : {1, 3, 33, 1000}) {
      row_case c;
      c.num_classes = C;
      c.spatial = S;
      c.batch = S * C > 30000 ? 1 : 3;
      c.kind = variant % 3 == 0   ? loss_kind::cross_entropy
               : variant % 3 == 1 ? loss_kind::probability
                                  : loss_kind::softmax_focal;
      c.reduction = kReductions[variant % 3 == 2 ? 1 : variant % 2];
      c.call = variant % 4 == 3 ? fusedloss::call::backward : fusedloss::call::forward_backward;
      c.saved_lse = variant % 8 == 3;
      c.label_smoothing = c.kind != loss_kind::softmax_focal ? 0.1 : 0.0;
      c.weight = variant % 2 == 0;
      c.ignored = 0.1;
      c.row_padding = variant % 2 == 0 ? 5 : 0;
      c.grad_padding = variant % 3 == 0 ? 3 : -1;
      ++variant;
      expect_matches_reference(c, TestFixture::dtype);
    }
  }
}

// Row strides > C (aligned and not), a separate gradient stride; the poisoned padding of the
// gradient stays untouched.
TYPED_TEST(RowKernels, StridesAndPadding) {
  int variant = 0;
  for (const auto& [row_padding, grad_padding] : std::vector<std::pair<int64_t, int64_t>>{
           {1, -1}, {8, -1}, {13, 0}, {1, 5}, {8, 8}, {0, 3}}) {
    row_case c;
    c.row_padding = row_padding;
    c.grad_padding = grad_padding;
    c.kind = variant++ % 2 == 0 ? loss_kind::cross_entropy : loss_kind::softmax_focal;
    c.label_smoothing = c.kind == loss_kind::cross_entropy ? 0.1 : 0.0;
    c.reduction = FUSEDLOSS_REDUCTION_NONE;
    on_every_layout(c, TestFixture::dtype);
  }
}

// grad_logits == logits (equal strides): the gradient replaces the logits, the padding between
// rows keeps them. Cross-entropy under none (each row's loss reads its target logit) and softmax
// focal (every gradient depends on the target logit), so a tier that reads a logit after another
// thread overwrote it shows.
TYPED_TEST(RowKernels, InPlaceGradient) {
  for (loss_kind kind : {loss_kind::cross_entropy, loss_kind::softmax_focal}) {
    for (fusedloss::call call : {fusedloss::call::forward_backward, fusedloss::call::backward}) {
      row_case c;
      c.kind = kind;
      c.in_place = true;
      c.row_padding = 3;
      c.call = call;
      c.saved_lse = call == fusedloss::call::backward;
      c.reduction =
          call == fusedloss::call::backward ? FUSEDLOSS_REDUCTION_SUM : FUSEDLOSS_REDUCTION_NONE;
      c.label_smoothing = kind == loss_kind::cross_entropy ? 0.1 : 0.0;
      c.ignored = 0.1;
      on_every_layout(c, TestFixture::dtype);
      c.saved_lse = false;  // backward recomputing the LSE, on every layout
      if (call == fusedloss::call::backward) on_every_layout(c, TestFixture::dtype);
    }
  }
}

// In place on clusters of 4 and of 8 blocks (the last with slices near a block's shared-memory
// limit), soft-capped, on aligned and on misaligned rows (element-wise loops in every block).
TYPED_TEST(RowKernels, InPlaceGradientOnLargeClusters) {
  const fusedloss_dtype dtype = TestFixture::dtype;
  if (!clusters_available()) GTEST_SKIP() << "clusters need sm_90";
  const device_facts f = facts();
  const auto es = static_cast<int64_t>(element_bytes(dtype));
  const int64_t vector = 16 / es;
  const int64_t per_block = (f.shared_optin - 8192) / es / vector * vector;
  // A forced cluster doubles from 2 blocks until a slice fits: 4 for a row of 3 blocks' worth, 8
  // for one of 8 blocks' worth less a vector.
  for (int64_t C : {3 * per_block, 8 * per_block - vector}) {
    for (int64_t padding : {int64_t{0}, int64_t{3}}) {
      row_case c;
      c.tier = row_tier::cluster;
      c.num_classes = C;
      c.batch = 3;
      c.in_place = true;
      c.row_padding = padding;
      c.softcap = 5.0;
      c.label_smoothing = 0.1;
      c.reduction = FUSEDLOSS_REDUCTION_SUM;
      expect_matches_reference(c, dtype);
    }
  }
}

// Row 0 off a 16-byte boundary (logits and gradient one element into their allocations, as a
// slice x[:, 1:] is): with a stride of whole vectors every row is misaligned, with another some
// rows are. Every tier, in place and not.
TYPED_TEST(RowKernels, MisalignedFirstRow) {
  const fusedloss_dtype dtype = TestFixture::dtype;
  for (row_tier tier : {row_tier::automatic, row_tier::warp, row_tier::block, row_tier::cluster,
                        row_tier::two_pass}) {
    if (tier == row_tier::cluster && !clusters_available()) continue;
    for (int64_t C : {int64_t{64}, int64_t{500}, int64_t{1000}, int64_t{4097}}) {
      for (bool in_place : {false, true}) {
        row_case c;
        c.tier = tier;
        c.num_classes = C;
        c.batch = 5;
        c.lead = 1;
        c.in_place = in_place;
        c.label_smoothing = 0.1;
        c.ignored = 0.2;
        if (tier_accepts(c, dtype)) expect_matches_reference(c, dtype);
      }
    }
  }
}

}  // namespace
}  // namespace fusedloss::gpu_tests::row_kernels
