// The deterministic two-stage sum behind every `sum` and `mean`: each block reduces its threads'
// double-precision partial sums with cub::BlockReduce (a fixed tree) into one slot of the caller's
// workspace, then a one-block pass adds the slots in a fixed order and writes the result. No
// floating-point atomics: for a given input, grid and GPU the bits never change.
#pragma once

#include <cstdint>
#include <cub/block/block_reduce.cuh>

namespace fusedloss::kernels::detail {

/// Reduces one double per thread to thread 0 of the block, which writes it to `partials[block]`.
template <int kThreads>
__device__ __forceinline__ void write_block_partial(double value, double* partials) {
  using reduce = cub::BlockReduce<double, kThreads>;
  __shared__ typename reduce::TempStorage storage;
  const double total = reduce(storage).Sum(value);
  if (threadIdx.x == 0) partials[blockIdx.x] = total;
}

constexpr int kFinalThreads = 256;

/// What the final pass writes: `sum / normaliser` (or `sum` when `divide` is false); a zero
/// normaliser gives `empty_value` (NaN or 0, the empty-mean policy).
struct final_sum {
  const double* partials;
  int64_t count;
  double normaliser;
  bool divide;
  float empty_value;
};

__global__ void __launch_bounds__(kFinalThreads) final_sum_kernel(final_sum f, float* out) {
  using reduce = cub::BlockReduce<double, kFinalThreads>;
  __shared__ typename reduce::TempStorage storage;
  double value = 0;
  for (int64_t i = threadIdx.x; i < f.count; i += kFinalThreads) value += f.partials[i];
  const double total = reduce(storage).Sum(value);
  if (threadIdx.x != 0) return;
  if (!f.divide) {
    *out = static_cast<float>(total);
  } else {
    *out = f.normaliser != 0 ? static_cast<float>(total / f.normaliser) : f.empty_value;
  }
}

}  // namespace fusedloss::kernels::detail
