// 16-byte vectorised loads and stores of a run of elements, for any storage type.
//
// A kernel walks its arrays in chunks of `kChunk` = 16 / sizeof(T) elements of its narrowest type T
// (the logits'), so one chunk of logits is one 16-byte access and a chunk of a wider type (float32
// targets beside bf16 logits) is two. Arrays may start anywhere a T may: the kernel peels the
// first elements up to the logits' 16-byte boundary (`head_elements`) and processes the rest in
// chunks only when every other array is 16-byte aligned at the same element (`aligned_at`), with a
// scalar tail; otherwise it takes the scalar path throughout.
#pragma once

#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include <cstdint>
#include <cstring>
#include <type_traits>

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

/// Elements of T in one 16-byte vector.
template <class T>
constexpr int kPerVector = kVectorBytes / sizeof(T);

/// The elements of one 16-byte vector as float32 (16-bit pairs widened together).
template <class T>
__device__ __forceinline__ void unpack(const uint4& raw, float (&out)[kPerVector<T>]) {
  if constexpr (sizeof(T) == 4) {
    out[0] = __uint_as_float(raw.x);
    out[1] = __uint_as_float(raw.y);
    out[2] = __uint_as_float(raw.z);
    out[3] = __uint_as_float(raw.w);
  } else if constexpr (std::is_same_v<T, __half>) {
    const __half2* pairs = reinterpret_cast<const __half2*>(&raw);
#pragma unroll
    for (int k = 0; k < 4; ++k) {
      const float2 f = __half22float2(pairs[k]);
      out[2 * k] = f.x;
      out[2 * k + 1] = f.y;
    }
  } else {
    // A bfloat16 is the high half of its float32: one shift or one mask a value, where the
    // library's pair conversion spends a byte permute and a shift on the high one.
    const unsigned words[4] = {raw.x, raw.y, raw.z, raw.w};
#pragma unroll
    for (int k = 0; k < 4; ++k) {
      out[2 * k] = __uint_as_float(words[k] << 16);
      out[2 * k + 1] = __uint_as_float(words[k] & 0xffff0000u);
    }
  }
}

/// One 16-byte vector of float32 values rounded to T (to nearest even; 16-bit pairs together).
/// Built from 32-bit words by value (no pointer into the vector), so that the compiler keeps it in
/// registers and stores it with one 16-byte store.
template <class T>
__device__ __forceinline__ uint4 pack(const float (&in)[kPerVector<T>]) {
  if constexpr (sizeof(T) == 4) {
    return make_uint4(__float_as_uint(in[0]), __float_as_uint(in[1]), __float_as_uint(in[2]),
                      __float_as_uint(in[3]));
  } else {
    unsigned words[4];
#pragma unroll
    for (int k = 0; k < 4; ++k) {
      if constexpr (std::is_same_v<T, __half>) {
        const __half2 pair = __floats2half2_rn(in[2 * k], in[2 * k + 1]);
        memcpy(&words[k], &pair, sizeof words[k]);
      } else {
        const __nv_bfloat162 pair = __floats2bfloat162_rn(in[2 * k], in[2 * k + 1]);
        memcpy(&words[k], &pair, sizeof words[k]);
      }
    }
    return make_uint4(words[0], words[1], words[2], words[3]);
  }
}

/// The largest element of N vectors as float32, NaNs ignored (they reach the row through its
/// sum). 16-bit values are compared in pairs in their own type, which is exact.
template <class T, int N>
__device__ __forceinline__ float vectors_max(const uint4 (&raw)[N]) {
  if constexpr (sizeof(T) == 4) {
    float m = -INFINITY;
#pragma unroll
    for (int v = 0; v < N; ++v) {
      m = fmaxf(m, fmaxf(fmaxf(__uint_as_float(raw[v].x), __uint_as_float(raw[v].y)),
                         fmaxf(__uint_as_float(raw[v].z), __uint_as_float(raw[v].w))));
    }
    return m;
  } else {
    using pair = std::conditional_t<std::is_same_v<T, __half>, __half2, __nv_bfloat162>;
    pair m[4 * N];
#pragma unroll
    for (int v = 0; v < N; ++v) {
#pragma unroll
      for (int k = 0; k < 4; ++k) m[4 * v + k] = reinterpret_cast<const pair*>(&raw[v])[k];
    }
#pragma unroll
    for (int width = 1; width < 4 * N; width *= 2) {
#pragma unroll
      for (int k = 0; k + width < 4 * N; k += 2 * width) m[k] = __hmax2(m[k], m[k + width]);
    }
    return fmaxf(__low2float(m[0]), __high2float(m[0]));
  }
}

/// Loads `N` elements starting at `p` (global or shared memory) as float32: with N * sizeof(T) / 16
/// vector loads when that is whole (then `p` must be 16-byte aligned), else element by element
/// (the scalar path, N = 1). Plain loads, not __ldg: `p` may point to shared memory.
template <int N, class T>
__device__ __forceinline__ void load_chunk(const T* p, float (&out)[N]) {
  if constexpr (N * sizeof(T) % kVectorBytes == 0) {
    constexpr int V = kPerVector<T>;
#pragma unroll
    for (int v = 0; v < N / V; ++v) {
      const uint4 raw = reinterpret_cast<const uint4*>(p)[v];
      float values[V];
      unpack<T>(raw, values);
#pragma unroll
      for (int k = 0; k < V; ++k) out[v * V + k] = values[k];
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
    constexpr int V = kPerVector<T>;
#pragma unroll
    for (int v = 0; v < N / V; ++v) {
      float values[V];
#pragma unroll
      for (int k = 0; k < V; ++k) values[k] = in[v * V + k];
      reinterpret_cast<uint4*>(p)[v] = pack<T>(values);
    }
  } else {
#pragma unroll
    for (int k = 0; k < N; ++k) p[k] = from_float<T>(in[k]);
  }
}

}  // namespace fusedloss::kernels::detail
