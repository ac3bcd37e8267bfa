// 16-byte vectorised loads and stores of a run of elements, for any storage type.
//
// A kernel walks its arrays in chunks of `kChunk` = 16 / sizeof(T) elements of its narrowest type T
// (the logits'), so one chunk of logits is one 16-byte access and a chunk of a wider type (float32
// targets beside bf16 logits) is two. Arrays may start anywhere a T may: the kernel peels the
// first elements up to the logits' 16-byte boundary (`head_elements`) and processes the rest in
// chunks only when every other array is 16-byte aligned at the same element (`aligned_at`), with a
// scalar tail; otherwise it takes the scalar path throughout.
#pragma once

#include <cstdint>

#include "storage.cuh"

namespace fusedloss::kernels::detail {

constexpr int kVectorBytes = 16;

/// Elements before `p` reaches a 16-byte boundary (`p` itself is aligned to its element size).
template <class T>
__host__ __device__ inline int64_t head_elements(const T* p) {
  const auto misalignment = reinterpret_cast<uintptr_t>(p) % kVectorBytes;
  return misalignment == 0 ? 0 : static_cast<int64_t>((kVectorBytes - misalignment) / sizeof(T));
}

/// Whether element `i` of `p` starts a 16-byte boundary (an absent array is no obstacle).
template <class T>
__host__ __device__ inline bool aligned_at(const T* p, int64_t i) {
  return p == nullptr || reinterpret_cast<uintptr_t>(p + i) % kVectorBytes == 0;
}

/// Loads `N` elements starting at `p` (global or shared memory) as float32: with N * sizeof(T) / 16
/// vector loads when that is whole (then `p` must be 16-byte aligned), else element by element
/// (the scalar path, N = 1). Plain loads, not __ldg: `p` may point to shared memory.
template <int N, class T>
__device__ __forceinline__ void load_chunk(const T* p, float (&out)[N]) {
  if constexpr (N * sizeof(T) % kVectorBytes == 0) {
    constexpr int kPerVector = kVectorBytes / sizeof(T);
#pragma unroll
    for (int v = 0; v < N / kPerVector; ++v) {
      const uint4 raw = reinterpret_cast<const uint4*>(p)[v];
      const T* elements = reinterpret_cast<const T*>(&raw);
#pragma unroll
      for (int k = 0; k < kPerVector; ++k) out[v * kPerVector + k] = to_float(elements[k]);
    }
  } else {
#pragma unroll
    for (int k = 0; k < N; ++k) out[k] = to_float(p[k]);
  }
}

/// Stores `N` float32 values rounded to T at `p`, vectorised under the same rule as load_chunk.
template <int N, class T>
__device__ __forceinline__ void store_chunk(T* p, const float (&in)[N]) {
  if constexpr (N * sizeof(T) % kVectorBytes == 0) {
    constexpr int kPerVector = kVectorBytes / sizeof(T);
#pragma unroll
    for (int v = 0; v < N / kPerVector; ++v) {
      uint4 raw;
      T* elements = reinterpret_cast<T*>(&raw);
#pragma unroll
      for (int k = 0; k < kPerVector; ++k) elements[k] = from_float<T>(in[v * kPerVector + k]);
      reinterpret_cast<uint4*>(p)[v] = raw;
    }
  } else {
#pragma unroll
    for (int k = 0; k < N; ++k) p[k] = from_float<T>(in[k]);
  }
}

}  // namespace fusedloss::kernels::detail
