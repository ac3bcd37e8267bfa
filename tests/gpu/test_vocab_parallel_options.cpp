// Vocabulary-parallel cross-entropy's shard calls on the GPU over one to four ranks: every
// reduction and option, strides, alignment and the gradient in place, a loss-only finish, and
// vocabularies wide enough for every streaming loop.
#include <gtest/gtest.h>

#include <cstdint>
#include <vector>

#include "vocab_parallel_harness.hpp"

namespace fusedloss::gpu_tests::vocab_parallel {
namespace {

const std::vector<std::vector<int64_t>> kSlicings = {{37}, {20, 17}, {1, 18, 18}, {9, 1, 14, 13}};

// One to four ranks, uneven slices (one a single class wide), every reduction, no options.
TYPED_TEST(VocabParallelKernels, EveryRankCountAndReduction) {
  FUSEDLOSS_REQUIRE_GPU_OR_SKIP();
  uint64_t seed = 1;
  for (const auto& widths : kSlicings) {
    for (const fusedloss_reduction reduction : kReductions) {
      vp_case c;
      c.widths = widths;
      c.reduction = reduction;
      check_case(c, TypeParam::value, seed++);
    }
  }
}

// Each option alone, then all of them together (class weights, an ignore_index that is a class,
// label smoothing, z-loss with its output, soft-cap, int32 targets, both grad scales).
TYPED_TEST(VocabParallelKernels, EveryOption) {
  FUSEDLOSS_REQUIRE_GPU_OR_SKIP();
  uint64_t seed = 100;
  std::vector<vp_case> cases;
  vp_case c;
  c.widths = {11, 1, 25};
  cases.push_back(c);
  cases.back().weight = true;
  cases.push_back(c);
  cases.back().label_smoothing = 0.1;
  cases.push_back(c);
  cases.back().label_smoothing = 0.2;
  cases.back().weight = true;
  cases.push_back(c);
  cases.back().z_loss = 1e-3;
  cases.back().z_loss_out = true;
  cases.push_back(c);
  cases.back().softcap = 4.0;
  cases.push_back(c);
  cases.back().ignored = 0.3;
  cases.back().ignore_index = 12;  // a class: its rows are ignored, not counted
  cases.push_back(c);
  cases.back().grad_scale = 0.5f;
  cases.back().grad_scale_ptr = true;
  for (const auto& widths : {std::vector<int64_t>{20, 17}, std::vector<int64_t>{9, 1, 14, 13}}) {
    for (const fusedloss_reduction reduction : kReductions) {
      vp_case all;
      all.widths = widths;
      all.batch = 16;
      all.reduction = reduction;
      all.weight = true;
      all.ignore_index = 3;
      all.ignored = 0.25;
      all.index_dtype = FUSEDLOSS_INT32;
      all.label_smoothing = 0.1;
      all.z_loss = 1e-3;
      all.z_loss_out = true;
      all.softcap = 5.0;
      all.grad_scale = 0.5f;
      all.grad_scale_ptr = true;
      cases.push_back(all);
    }
  }
  for (const vp_case& k : cases) check_case(k, TypeParam::value, seed++);
}

// A row stride past the slice (padding untouched), misaligned starts (the first elements one by
// one, the gradient's alignment different from the logits'), and the gradient in place.
TYPED_TEST(VocabParallelKernels, StridesAlignmentAndInPlace) {
  FUSEDLOSS_REQUIRE_GPU_OR_SKIP();
  uint64_t seed = 200;
  for (const bool in_place : {false, true}) {
    for (const int64_t lead : {0, 1}) {
      vp_case c;
      c.widths = {40, 1, 23, 64};
      c.row_padding = 3;
      c.lead = lead;
      c.in_place = in_place;
      c.label_smoothing = 0.1;
      c.weight = true;
      c.softcap = 6.0;
      check_case(c, TypeParam::value, seed++);
    }
  }
  vp_case c;
  c.widths = {24, 48};
  c.row_padding = 8;  // whole vectors a row, so that the vector paths run
  c.lead = 1;
  c.grad_lead = 0;  // the gradient's boundary falls elsewhere: one by one
  c.label_smoothing = 0.1;
  c.weight = true;
  check_case(c, TypeParam::value, seed++);
  c.lead = 0;
  c.grad_lead = -1;
  c.z_loss = 1e-2;
  c.z_loss_out = true;
  check_case(c, TypeParam::value, seed++);
}

// finish without grad_logits: the losses alone, nothing else written.
TYPED_TEST(VocabParallelKernels, LossOnlyFinish) {
  FUSEDLOSS_REQUIRE_GPU_OR_SKIP();
  uint64_t seed = 300;
  for (const fusedloss_reduction reduction : kReductions) {
    vp_case c;
    c.widths = {5, 30, 2};
    c.reduction = reduction;
    c.grad = false;
    c.label_smoothing = 0.05;
    c.z_loss = 1e-3;
    c.z_loss_out = true;
    check_case(c, TypeParam::value, seed++);
  }
}

// A vocabulary of ~5000 over three uneven ranks (the widest slice 16-byte rows of float32, so
// its vectors run four in flight; the others misaligned), with and without the options.
TYPED_TEST(VocabParallelKernels, LargeVocabulary) {
  FUSEDLOSS_REQUIRE_GPU_OR_SKIP();
  uint64_t seed = 800;
  for (const bool options : {false, true}) {
    vp_case c;
    c.batch = 4;
    c.widths = {4104, 601, 303};
    if (options) {
      c.weight = true;
      c.label_smoothing = 0.1;
      c.z_loss = 1e-3;
      c.z_loss_out = true;
      c.softcap = 8.0;
      c.reduction = FUSEDLOSS_REDUCTION_SUM;
    }
    check_case(c, TypeParam::value, seed++);
  }
}

// Shards wide enough for every streaming loop in 16-bit dtypes too (LargeVocabulary's 4104 classes
// are 513 vectors there): 17003 classes run the 4-vector loops (which need more than 768 vectors a
// row past the head) twice and the class weights' 2-vector loops four times, 8997 them once and
// twice, both then the one-vector remainder. Odd widths (the second shard starts at an odd class)
// give the rows different heads (0, 5, 2 and 0, 3, 6 elements in 16 bits), so the weights' loads
// are vectors on the first row and one by one on the others. Three rows: no options, label
// smoothing alone, label smoothing with class weights and the soft-cap.
TYPED_TEST(VocabParallelKernels, WideShardsReachEveryLoop) {
  FUSEDLOSS_REQUIRE_GPU_OR_SKIP();
  uint64_t seed = 900;
  for (const int options : {0, 1, 2}) {
    vp_case c;
    c.batch = 3;
    c.widths = {17003, 8997};
    if (options == 0) {
      c.reduction = FUSEDLOSS_REDUCTION_NONE;
    } else if (options == 1) {
      c.label_smoothing = 0.1;
    } else {
      c.label_smoothing = 0.2;
      c.weight = true;
      c.softcap = 8.0;
      c.reduction = FUSEDLOSS_REDUCTION_SUM;
    }
    check_case(c, TypeParam::value, seed++);
  }
}

}  // namespace
}  // namespace fusedloss::gpu_tests::vocab_parallel
