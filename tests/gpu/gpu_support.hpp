// What the GPU tests share: the skip rule, device buffers, byte-exact copies to and from the host
// buffers of checks.hpp, and the dtypes the tests run over.
#pragma once

#include <cuda_runtime_api.h>
#include <gtest/gtest.h>

#include <algorithm>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <string>
#include <type_traits>
#include <vector>

#include "checks.hpp"
#include "cuda_support.hpp"

namespace fusedloss::gpu_tests {

using checks::why_no_gpu;

/// Skips the test when there is no GPU, unless FUSEDLOSS_REQUIRE_GPU is set (scripts/gpu-check.sh
/// sets it, so that a GPU test can never pass by skipping on a GPU machine).
#define FUSEDLOSS_REQUIRE_GPU_OR_SKIP()                                   \
  do {                                                                    \
    const std::string why = ::fusedloss::gpu_tests::why_no_gpu();         \
    if (!why.empty()) {                                                   \
      if (std::getenv("FUSEDLOSS_REQUIRE_GPU") != nullptr) FAIL() << why; \
      GTEST_SKIP() << "GPU test skipped: " << why;                        \
    }                                                                     \
  } while (0)

/// A large test's size times FUSEDLOSS_TEST_SIZE_SCALE (default 1; at least 1 element): tools that
/// run the suite many times slower than a GPU (compute-sanitizer, a simulator) shrink the large
/// tests with it. Below 1 the tests no longer reach the sizes their names promise (grids that turn,
/// 2^26 elements), which a run at scale 1 on a GPU must still check.
inline int64_t scaled_size(int64_t n) {
  static const double scale = [] {
    const char* s = std::getenv("FUSEDLOSS_TEST_SIZE_SCALE");
    return s != nullptr ? std::atof(s) : 1.0;
  }();
  return scale == 1.0 ? n
                      : std::max<int64_t>(1, static_cast<int64_t>(static_cast<double>(n) * scale));
}

/// Asserts that a CUDA runtime call succeeded, naming its error otherwise.
#define FUSEDLOSS_CUDA_OK(expr)                                      \
  do {                                                               \
    const cudaError_t fusedloss_e = (expr);                          \
    ASSERT_EQ(fusedloss_e, cudaSuccess)                              \
        << ::fusedloss::checks::cuda_error_text(fusedloss_e, #expr); \
  } while (0)

/// Device memory holding a copy of a host buffer's bytes (or its size only).
class device_buffer {
 public:
  device_buffer() = default;
  explicit device_buffer(size_t bytes) : bytes_(bytes) {
    if (bytes_ > 0 && cudaMalloc(&data_, bytes_) != cudaSuccess) {
      data_ = nullptr;
      ADD_FAILURE() << "cudaMalloc of " << bytes_ << " bytes failed";
    }
  }
  /// A copy of `host` starting `lead` bytes into the allocation (which cudaMalloc aligns to 256
  /// bytes): lead = one element misaligns the copy's first element.
  explicit device_buffer(const checks::buffer& host, size_t lead = 0)
      : device_buffer(host.size_bytes() + lead) {
    if (data_ != nullptr) {
      cudaMemcpy(static_cast<char*>(data_) + lead, host.data(), host.size_bytes(),
                 cudaMemcpyHostToDevice);
    }
  }
  device_buffer(const device_buffer&) = delete;
  device_buffer& operator=(const device_buffer&) = delete;
  device_buffer(device_buffer&& o) noexcept : data_(o.data_), bytes_(o.bytes_) {
    o.data_ = nullptr;
    o.bytes_ = 0;
  }
  device_buffer& operator=(device_buffer&& o) noexcept {
    std::swap(data_, o.data_);
    std::swap(bytes_, o.bytes_);
    return *this;
  }
  ~device_buffer() { cudaFree(data_); }

  void* data() const { return data_; }
  size_t bytes() const { return bytes_; }

  /// Copies the device bytes from byte `from` on back into `host` (which must be as large).
  void download(checks::buffer& host, size_t from = 0) const {
    if (bytes_ > from) {
      cudaMemcpy(host.data(), static_cast<const char*>(data_) + from, bytes_ - from,
                 cudaMemcpyDeviceToHost);
    }
  }
  /// The address `offset` bytes into the allocation.
  void* at(size_t offset) const { return static_cast<char*>(data_) + offset; }
  std::vector<unsigned char> raw() const {
    std::vector<unsigned char> out(bytes_);
    if (bytes_ > 0) cudaMemcpy(out.data(), data_, bytes_, cudaMemcpyDeviceToHost);
    return out;
  }

 private:
  void* data_ = nullptr;
  size_t bytes_ = 0;
};

/// The storage dtypes a typed GPU test runs over, named as PyTorch spells them
/// (`TYPED_TEST_SUITE(Suite, Dtypes, DtypeNames)`; the test reads `TypeParam::value`).
template <fusedloss_dtype D>
using dtype_constant = std::integral_constant<fusedloss_dtype, D>;
using Dtypes =
    ::testing::Types<dtype_constant<FUSEDLOSS_FLOAT32>, dtype_constant<FUSEDLOSS_FLOAT16>,
                     dtype_constant<FUSEDLOSS_BFLOAT16>>;
struct DtypeNames {
  template <class Dtype>
  static std::string GetName(int) {
    return fusedloss_dtype_string(Dtype::value);
  }
};

/// The bytes of one element of a storage dtype (float32, float16 or bfloat16).
inline size_t element_bytes(fusedloss_dtype dtype) { return dtype == FUSEDLOSS_FLOAT32 ? 4 : 2; }

}  // namespace fusedloss::gpu_tests
