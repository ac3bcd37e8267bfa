// How rows enter Google Benchmark and how they end when they cannot run: registering a row timed
// by manual time, failing it (counted: main's exit status) or skipping it as not applicable here;
// and the row losses' registration (row_losses.cpp), which main calls.
#pragma once

#include <benchmark/benchmark.h>

#include <string>
#include <utility>

#include "mode.hpp"

namespace fusedloss::bench {

/// Registers a row timed by manual time, in microseconds, with MinTime `min_time` on the GPU (0:
/// Google Benchmark's, --benchmark_min_time) and kCpuMinTime on the CPU. A row's own MinTime wins
/// over --benchmark_min_time, and adds /min_time:X to its name.
template <class Function>
void register_timed(const std::string& name, Function&& function, double min_time = 0) {
  auto* b = benchmark::RegisterBenchmark(name.c_str(), std::forward<Function>(function))
                ->UseManualTime()
                ->Unit(benchmark::kMicrosecond);
  if (on_cpu()) min_time = kCpuMinTime;
  if (min_time > 0) b->MinTime(min_time);
}

/// How many benchmark runs failed (SkipWithError through skip()); main's exit status.
int& failures();

/// Marks the running benchmark as failed, saying why, and counts it.
void skip(benchmark::State& state, const std::string& why);

/// Skips the running benchmark without failing it: the row cannot run in this mode or on this
/// device (a forced tier on the CPU reference, or one that cannot hold the shape). Google
/// Benchmark 1.7 has no skip but SkipWithError, so the output shows it as an error message that
/// starts with "skipped: "; it is not counted in failures().
void skip_not_applicable(benchmark::State& state, const std::string& why);

/// Registers the row-loss rows. Call after registering the copy row (and the element rows), so that
/// the copy stays the first row and the reference of those after it.
void register_row_benchmarks();
/// Frees the row rows' inputs: call after the benchmarks, before session::release().
void release_row_inputs();

}  // namespace fusedloss::bench
