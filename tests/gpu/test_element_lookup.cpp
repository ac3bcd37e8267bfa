// The lookup kernel of lean bfloat16 BCE and gamma = 2 sigmoid focal (a table of the logistic
// functions of every bfloat16 magnitude in shared memory), which calls take from
// element_lookup_from() elements on: here every eligible call takes it, at the sizes, layouts and
// calls that the series kernel's tests cover, and at the logits where the table's clamps and its
// NaN entry act. Against the CPU reference, with the element tests' tolerances.
#include <cuda_runtime_api.h>
#include <gtest/gtest.h>

#include <cmath>
#include <cstdint>
#include <random>
#include <vector>

#include "checks.hpp"
#include "element_kernels_harness.hpp"
#include "element_losses.hpp"

namespace fusedloss::gpu_tests::element_kernels {
namespace {

constexpr fusedloss_dtype kBf16 = FUSEDLOSS_BFLOAT16;

// Every eligible call takes the lookup kernel while it lives.
class ElementLookup : public ::testing::Test {
 protected:
  void SetUp() override {
    FUSEDLOSS_REQUIRE_GPU_OR_SKIP();
    previous_ = fusedloss::kernels::set_element_lookup_from(0);
  }
  void TearDown() override {
    if (previous_ >= 0) fusedloss::kernels::set_element_lookup_from(previous_);
  }

 private:
  int64_t previous_ = -1;
};

TEST_F(ElementLookup, EveryCallSizeAndLayout) {
  for (loss_kind kind : {loss_kind::bce, loss_kind::sigmoid_focal}) {
    for (fusedloss_reduction reduction : kReductions) {
      for (fusedloss::call call : {fusedloss::call::forward, fusedloss::call::forward_backward,
                                   fusedloss::call::backward}) {
        // Backward under `none` has an upstream value an element: the series kernel's.
        if (call == fusedloss::call::backward && reduction == FUSEDLOSS_REDUCTION_NONE) continue;
        // A few elements (scalar only), one chunk and a tail, and a size that gives each thread of
        // the grid a chunk or none; aligned and not. SeveralTurnsAThread takes the loop further.
        for (int64_t numel : {int64_t{5}, int64_t{8 + 3}, scaled_size((1 << 18) + 13)}) {
          for (int64_t offset : {0, 1}) {
            element_case c;
            c.kind = kind;
            c.reduction = reduction;
            c.call = call;
            c.numel = numel;
            c.offset = offset;
            c.hard_targets = numel % 2 == 1 && offset == 1;
            c.grad_scale = 0.75f;
            c.grad_scale_ptr = reduction == FUSEDLOSS_REDUCTION_SUM;
            expect_matches_reference(c, kBf16);
          }
        }
      }
    }
  }
}

// The loop of turns itself (two chunks a turn, the next turn's loads issued before the loop's
// back branch), which the sizes above never reach: at most one 768-thread block an SM, so a grid
// stride covers SMs x 768 chunks of 8 elements, and 4.5 strides give each thread two whole turns
// and half the threads a chunk after them.
TEST_F(ElementLookup, SeveralTurnsAThread) {
  int device = 0;
  int sms = 0;
  FUSEDLOSS_CUDA_OK(cudaGetDevice(&device));
  FUSEDLOSS_CUDA_OK(cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, device));
  const int64_t stride = int64_t{sms} * 768 * 8;
  for (loss_kind kind : {loss_kind::bce, loss_kind::sigmoid_focal}) {
    for (fusedloss_reduction reduction : {FUSEDLOSS_REDUCTION_NONE, FUSEDLOSS_REDUCTION_MEAN}) {
      element_case c;
      c.kind = kind;
      c.reduction = reduction;
      c.numel = stride * 9 / 2 + 13;
      c.grad_scale = 0.75f;
      expect_matches_reference(c, kBf16);
    }
  }
}

TEST_F(ElementLookup, SaturatedLogitsAndHardTargets) {
  for (loss_kind kind : {loss_kind::bce, loss_kind::sigmoid_focal}) {
    for (double range : {0.01, 30.0, 200.0}) {  // under the table's first entries, past its last
      element_case c;
      c.kind = kind;
      c.numel = 4097;
      c.logit_range = range;
      c.hard_targets = range > 1.0;
      c.reduction = FUSEDLOSS_REDUCTION_NONE;
      expect_matches_reference(c, kBf16);
    }
  }
}

// The logits where the table's clamps meet its entries (2^-25 and 104, and either side), zeros
// of both signs, a subnormal, the infinities and NaN, each beside targets 0 and 1 (and 0.3 for
// the finite ones).
TEST_F(ElementLookup, TableEdgesInfinitiesAndNaN) {
  const std::vector<double> magnitudes = {0.0,
                                          std::ldexp(1.0, -133),
                                          std::ldexp(1.0, -26),
                                          std::ldexp(1.0, -25),
                                          std::ldexp(1.5, -25),
                                          1.0,
                                          87.5,
                                          103.5,
                                          104.0,
                                          105.0,
                                          3e38,
                                          INFINITY,
                                          NAN};
  std::vector<double> x, y;
  for (double m : magnitudes) {
    for (double sign : {1.0, -1.0}) {
      for (double target : {0.0, 1.0, 0.3}) {
        if (!std::isfinite(m) && target == 0.3) continue;  // the reference's rule is for 0 and 1
        x.push_back(sign * m);
        y.push_back(target);
      }
    }
  }
  for (loss_kind kind : {loss_kind::bce, loss_kind::sigmoid_focal}) {
    element_case c;
    c.kind = kind;
    expect_matches_reference_on(c, kBf16, x, y);
  }
}

// Either side of element_lookup_from(), the lookup and the series kernels agree within the
// tolerances each meets against the reference.
TEST_F(ElementLookup, LookupAndSeriesAgree) {
  element_case c;
  c.kind = loss_kind::sigmoid_focal;
  c.numel = 4096;
  c.reduction = FUSEDLOSS_REDUCTION_NONE;
  std::mt19937_64 rng(std::random_device{}());
  const inputs in(c, kBf16, rng);
  host_outputs got[2] = {
      {buffer::poisoned(FUSEDLOSS_FLOAT32, 4096), buffer::poisoned(kBf16, 4096)},
      {buffer::poisoned(FUSEDLOSS_FLOAT32, 4096), buffer::poisoned(kBf16, 4096)}};
  for (int lookup = 0; lookup < 2; ++lookup) {
    fusedloss::kernels::set_element_lookup_from(lookup == 1 ? 0 : int64_t{1} << 40);
    device_arrays dev(in, c);
    ASSERT_EQ(run(c, kBf16, FUSEDLOSS_DEVICE_CUDA, dev.bind(c, kBf16)), FUSEDLOSS_SUCCESS);
    dev.loss.download(got[lookup].loss);
    dev.grad.download(got[lookup].grad);
  }
  expect_close(got[1].loss.values(), got[0].loss.values(), kElementLossTolerance, "loss");
  expect_close(got[1].grad.values(), got[0].grad.values(), tolerance_for(kBf16), "grad");
}

}  // namespace
}  // namespace fusedloss::gpu_tests::element_kernels
