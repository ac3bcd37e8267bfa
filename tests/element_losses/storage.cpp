// The element losses on float32, float16 and bfloat16 storage against float64 on the same rounded
// inputs, for every loss, targets dtype, reduction and call.
#include <ostream>
#include <vector>

#include "support.hpp"

namespace element_loss_tests {
namespace {

struct precision_case {
  loss_config loss;
  fusedloss_dtype dtype;
  bool targets_as_logits;  // targets in the logits' dtype, else in float32
  fusedloss_reduction reduction;
  call c;
};

void PrintTo(const precision_case& c, std::ostream* os) {
  *os << names::join({name_of(c.loss), name_of(c.dtype),
                      c.targets_as_logits ? "targets_as_logits" : "targets_float32",
                      name_of(c.reduction), fusedloss::name(c.c)});
}

std::vector<precision_case> precision_cases() {
  std::vector<precision_case> cases;
  for (const loss_config loss : all_losses) {
    for (const auto dtype : {f32, f16, bf16}) {
      for (const bool targets_as_logits : {false, true}) {
        for (const auto r : reductions) {
          for (const auto o : all_calls) cases.push_back({loss, dtype, targets_as_logits, r, o});
        }
      }
    }
  }
  return cases;
}

// The CPU path computes in double whatever the storage, so a 16-bit or float32 call must equal
// the float64 call on the same rounded inputs up to the one rounding of each output: the loss to
// float32, the gradient to the logits' dtype.
class ReducedPrecision : public random_test<precision_case> {};

TEST_P(ReducedPrecision, MatchesFloat64OnRoundedInputs) {
  const precision_case& c = GetParam();
  const fusedloss_dtype dtype = c.dtype;
  const fusedloss_dtype y_dtype = c.targets_as_logits ? dtype : f32;
  const fusedloss_reduction r = c.reduction;
  const call o = c.c;
  constexpr size_t m = 36;
  const auto x = checks::uniform(rng, m, -6.0, 6.0);
  const auto y = mixed_targets(rng, m);
  const tolerance loss_tolerance = checks::rounding_tolerance(f32);
  with_params_of(c.loss, [&](auto p) {
    const auto xr = checks::round_to(dtype, x);
    const auto yr = checks::round_to(y_dtype, y);
    p.reduction = r;
    const auto upstream = checks::round_to(f32, checks::uniform(rng, r == none ? m : 1, -2.0, 2.0));
    const auto got = call_loss(p, o, xr, dtype, yr, y_dtype, upstream);
    const auto want = call_loss64(p, o, xr, yr, upstream);
    expect_all_accepted(got.loss, want.loss, loss_tolerance, "loss");
    expect_all_accepted(got.grad, want.grad, checks::rounding_tolerance(dtype), "grad");
  });
}

INSTANTIATE_TEST_SUITE_P(ElementLossRandom, ReducedPrecision,
                         ::testing::ValuesIn(precision_cases()), names::by_name{});

}  // namespace
}  // namespace element_loss_tests
