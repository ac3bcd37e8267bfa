// The element rows' inputs and what every row draws its values from: a counter-based hash, the
// host's float32 values grown on demand, their upload to the device in a dtype, and the device
// copies of one (dtype, size) that the element rows share.
//
// Inputs are random and non-zero (never zeros: they hide bugs and can run faster than real data),
// generated on the host once per process from a counter-based hash and copied to the device once
// per (dtype, size).
#pragma once

#include <cuda_runtime_api.h>

#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

#include "fusedloss/fusedloss.h"
#include "memory.hpp"

namespace fusedloss::bench {

/// splitmix64 of (stream, i): all 64 bits, from the index alone.
inline uint64_t mix(uint64_t stream, uint64_t i) {
  uint64_t z = (i + 1) * 0x9E3779B97F4A7C15ull ^ (stream * 0xD1B54A32D192ED03ull);
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
  return z ^ (z >> 31);
}

/// Uniform in [0, 1) from the index alone (mix's top 24 bits), so that any prefix is the same
/// values.
inline float unit_value(uint64_t stream, uint64_t i) {
  return static_cast<float>(mix(stream, i) >> 40) * (1.0f / 16777216.0f);
}

/// The host values every benchmark draws from, grown on demand (float32; converted per dtype).
/// Logits are uniform in [-4, 4] without zeros; targets in [1/64, 63/64] (never 0 or 1 in any
/// dtype): soft targets, which take the focal loss's general gradient path.
class host_values {
 public:
  static host_values& get() {
    static host_values v;
    return v;
  }
  const float* logits(int64_t n) {
    grow(n);
    return logits_.data();
  }
  const float* targets(int64_t n) {
    grow(n);
    return targets_.data();
  }

 private:
  void grow(int64_t n);
  std::vector<float> logits_, targets_;
};

inline size_t dtype_bytes(fusedloss_dtype dtype) { return dtype == FUSEDLOSS_FLOAT32 ? 4 : 2; }

inline const char* dtype_label(fusedloss_dtype dtype) { return fusedloss_dtype_string(dtype); }

/// Copies n floats to the device's memory as `dtype` (float32, float16 or bfloat16), in slices.
cudaError_t upload(const float* values, int64_t n, fusedloss_dtype dtype, void* device);

/// upload() and then wait_for_device().
cudaError_t upload_and_wait(const float* values, int64_t n, fusedloss_dtype dtype, void* device);

/// Device copies of the first `numel` logits and targets in `dtype`, plus a gradient buffer of the
/// same size. One set lives at a time: asking for another frees the last one first.
class device_inputs {
 public:
  static device_inputs& get() {
    static device_inputs d;
    return d;
  }

  /// Makes the set of (dtype, numel) the one held; empty, or why it failed.
  std::string prepare(fusedloss_dtype dtype, int64_t numel);
  void release();

  const void* logits() const { return logits_.data(); }
  const void* targets() const { return targets_.data(); }
  void* grad() const { return grad_.data(); }

 private:
  bool ready_ = false;
  fusedloss_dtype dtype_ = FUSEDLOSS_FLOAT32;
  int64_t numel_ = 0;
  device_buffer logits_, targets_, grad_;
};

}  // namespace fusedloss::bench
