// The row kernels on the values that make rows special: ignored rows and invalid targets, means
// over nothing, -inf masks, NaN and +inf logits, and logits near +-1e4.
#include <gtest/gtest.h>

#include <cstdint>

#include "row_kernels_harness.hpp"

namespace fusedloss::gpu_tests::row_kernels {
namespace {

// Invalid targets are counted by forward and forward_backward (not by backward), their rows
// treated as ignored; rows that are all ignored give zero loss and an exactly-zero gradient, even
// over NaN, +inf and all -inf logits.
TYPED_TEST(RowKernels, IgnoredRowsAndInvalidTargets) {
  for (fusedloss::call call :
       {fusedloss::call::forward, fusedloss::call::backward, fusedloss::call::forward_backward}) {
    row_case c;
    c.call = call;
    c.invalid = 0.4;
    c.reduction = FUSEDLOSS_REDUCTION_SUM;
    on_every_layout(c, TestFixture::dtype);
  }
  int variant = 0;
  for (fusedloss_reduction reduction : kReductions) {
    row_case c;
    c.ignored = 1.0;
    c.reduction = reduction;
    c.logits = variant % 2 == 0 ? pattern::non_finite : pattern::random;
    c.empty_mean = variant++ % 2 == 0 ? FUSEDLOSS_EMPTY_MEAN_ZERO : FUSEDLOSS_EMPTY_MEAN_NAN;
    on_every_layout(c, TestFixture::dtype);
    c.kind = loss_kind::softmax_focal;
    on_every_layout(c, TestFixture::dtype);
  }
}

// mean over nothing: no rows (N = 0, S = 0), every row ignored, zero total weight; NaN or 0 by
// the policy, a zero gradient under both.
TYPED_TEST(RowKernels, EmptyMeanPolicies) {
  const fusedloss_dtype dtype = TestFixture::dtype;
  for (fusedloss_empty_mean policy : {FUSEDLOSS_EMPTY_MEAN_NAN, FUSEDLOSS_EMPTY_MEAN_ZERO}) {
    for (loss_kind kind :
         {loss_kind::cross_entropy, loss_kind::probability, loss_kind::softmax_focal}) {
      for (int64_t N : {0, 3}) {
        row_case c;
        c.kind = kind;
        c.empty_mean = policy;
        c.batch = N;
        c.spatial = N == 0 ? 1 : 0;  // N = 3 with S = 0: no rows either
        c.z_loss = kind == loss_kind::cross_entropy ? 1e-3 : 0.0;
        c.z_loss_out = kind == loss_kind::cross_entropy;
        expect_matches_reference(c, dtype);
      }
      if (kind == loss_kind::probability) continue;  // never ignores a row
      row_case all_ignored;
      all_ignored.kind = kind;
      all_ignored.empty_mean = policy;
      all_ignored.ignored = 1.0;
      on_every_layout(all_ignored, dtype);
    }
    row_case zero_weight;
    zero_weight.empty_mean = policy;
    zero_weight.weight = true;
    zero_weight.zero_weight = true;
    on_every_layout(zero_weight, dtype);
  }
}

// -inf masks (finite loss and an exactly-zero gradient without smoothing; +inf loss and a finite
// gradient with it; undone by the soft-cap), a -inf target (+inf loss), NaN and +inf (NaN rows).
TYPED_TEST(RowKernels, MaskedAndNonFiniteLogits) {
  for (loss_kind kind :
       {loss_kind::cross_entropy, loss_kind::probability, loss_kind::softmax_focal}) {
    for (int set = 0; set < 4; ++set) {
      row_case c;
      c.kind = kind;
      c.reduction = FUSEDLOSS_REDUCTION_NONE;
      c.logits = set == 3 ? pattern::non_finite : pattern::masked;
      c.label_smoothing = kind != loss_kind::softmax_focal && set == 1 ? 0.1 : 0.0;
      c.softcap = kind != loss_kind::softmax_focal && set == 2 ? 5.0 : 0.0;
      c.weight = set == 1;
      c.gamma = set == 2 ? 0.5 : 2.0;
      on_every_layout(c, TestFixture::dtype);
    }
    if (kind == loss_kind::probability) continue;
    row_case target;
    target.kind = kind;
    target.reduction = FUSEDLOSS_REDUCTION_NONE;
    target.logits = pattern::masked_target;
    on_every_layout(target, TestFixture::dtype);
  }
  // A masked row under sum with smoothing: the sum is +inf.
  row_case sum;
  sum.logits = pattern::masked;
  sum.reduction = FUSEDLOSS_REDUCTION_SUM;
  sum.label_smoothing = 0.1;
  on_every_layout(sum, TestFixture::dtype);
}

// A NaN logit makes its whole row NaN (docs/SEMANTICS.md), also when it is the only logit, or the
// last, that a thread of the block folds, so that no finite logit follows it there: C = 1, and
// C = 33 with the NaN at class 32, which the two_pass, block and cluster tiers hand to a thread
// of its own. The warp and spatial tiers (one lane or thread folding class 32 after finite ones)
// run the same cases as a control.
TYPED_TEST(RowKernels, NanLogitAloneInAThreadsShare) {
  for (row_tier tier : {row_tier::two_pass, row_tier::block, row_tier::cluster, row_tier::warp,
                        row_tier::spatial}) {
    for (int64_t C : {1, 33}) {
      for (loss_kind kind : {loss_kind::cross_entropy, loss_kind::probability}) {
        row_case c;
        c.kind = kind;
        c.tier = tier;
        c.num_classes = C;
        c.batch = 2;
        c.logits = pattern::nan_last;
        c.reduction = FUSEDLOSS_REDUCTION_NONE;
        if (tier_accepts(c, TestFixture::dtype)) expect_matches_reference(c, TestFixture::dtype);
      }
    }
  }
}

// +-1e4 logits, and every logit shifted by 1e4. Each dtype against the reference on its own
// rounded inputs (bfloat16's spacing at 1e4 is 64, float16's 8: the shift changes the logits);
// the float32 LSE near 1e4 is known to 2^-11, which t_r allows for.
TYPED_TEST(RowKernels, ExtremeLogitsAndShift) {
  for (pattern logits : {pattern::extreme, pattern::shifted}) {
    for (loss_kind kind :
         {loss_kind::cross_entropy, loss_kind::probability, loss_kind::softmax_focal}) {
      for (int set = 0; set < 2; ++set) {
        row_case c;
        c.kind = kind;
        c.logits = logits;
        c.reduction = set == 0 ? FUSEDLOSS_REDUCTION_NONE : FUSEDLOSS_REDUCTION_SUM;
        c.label_smoothing = kind != loss_kind::softmax_focal && set == 1 ? 0.1 : 0.0;
        c.z_loss = kind != loss_kind::softmax_focal && set == 0 ? 1e-4 : 0.0;
        c.z_loss_out = c.z_loss > 0;
        c.gamma = set == 0 ? 0.5 : 2.0;
        c.ignored = 0.1;
        on_every_layout(c, TestFixture::dtype);
      }
    }
  }
}

}  // namespace
}  // namespace fusedloss::gpu_tests::row_kernels
