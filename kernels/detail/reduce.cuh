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

/// The sum of `count` partials, in a fixed order, in thread 0 of a kFinalThreads block.
__device__ __forceinline__ double sum_partials(const double* partials, int64_t count) {
  using reduce = cub::BlockReduce<double, kFinalThreads>;
  __shared__ typename reduce::TempStorage storage;
  double value = 0;
  for (int64_t i = threadIdx.x; i < count; i += kFinalThreads) value += partials[i];
  return reduce(storage).Sum(value);
}

/// What the final pass writes: the sum of the partials, divided by the normaliser when `divide`
/// (the device's `*device_normaliser` when given, else `normaliser`); a zero normaliser gives
/// `empty_value` (NaN or 0, the empty-mean policy).
struct final_sum {
  const double* partials;
  int64_t count;
  bool divide;
  double normaliser;
  const double* device_normaliser;
  float empty_value;
};

// static: each kernel file that includes this header gets its own copy.
static __global__ void __launch_bounds__(kFinalThreads) final_sum_kernel(final_sum f, float* out) {
  const double total = sum_partials(f.partials, f.count);
  if (threadIdx.x != 0) return;
  const double normaliser = f.device_normaliser != nullptr ? *f.device_normaliser : f.normaliser;
  if (!f.divide) {
    *out = static_cast<float>(total);
  } else {
    *out = normaliser != 0 ? static_cast<float>(total / normaliser) : f.empty_value;
  }
}

/// Writes the sum of `count` partials to `*out`, in double (a normaliser for a later pass).
static __global__ void __launch_bounds__(kFinalThreads)
    total_kernel(const double* partials, int64_t count, double* out) {
  const double total = sum_partials(partials, count);
  if (threadIdx.x == 0) *out = total;
}

}  // namespace fusedloss::kernels::detail
