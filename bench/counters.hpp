// The counters every row reports:
// - `bytes` is what must move: each input read once and each output written once, counted per
//   repeat with kIsIterationInvariantRate and decimal prefixes (kIs1000), so that it prints as
//   bytes per second in powers of 1000 (the report shows it as GB/s);
// - `frac_of_copy` divides that by the device-to-device copy bandwidth measured in the same
//   process (session.hpp);
// - `loss`, the loss the timed calls left, which also checks that they computed one.
#pragma once

#include <benchmark/benchmark.h>

namespace fusedloss::bench {

/// Sets `bytes` (a rate over the manual time, decimal) and `frac_of_copy` for a run of
/// `state.iterations()` repeats that took `seconds` in all and moved `bytes_per_repeat` each.
void set_counters(benchmark::State& state, double bytes_per_repeat, double seconds,
                  double copy_bytes_per_second);

/// Reads the loss the timed calls left at `loss` (the device's memory) into the row's `loss`
/// counter.
/// The mean loss of random inputs is finite: anything else means the timed call is broken, and
/// fails the row (false: set no more counters).
bool record_loss(benchmark::State& state, const float* loss);

}  // namespace fusedloss::bench
