// fusedloss_scale_in_place on the GPU: a scale of 1 leaves the data bit for bit, any other scale
// multiplies every element once (misaligned starts and odd lengths included), on the caller's
// stream.
#include <gtest/gtest.h>

#include <cmath>
#include <random>
#include <vector>

#include "checks.hpp"
#include "fusedloss/fusedloss.h"
#include "gpu_support.hpp"

namespace {

using fusedloss::checks::buffer;
using fusedloss::gpu_tests::device_buffer;

TEST(ScaleInPlaceGpu, OneIsANoOpAndOtherScalesMultiply) {
  FUSEDLOSS_REQUIRE_GPU_OR_SKIP();
  std::mt19937_64 rng(std::random_device{}());
  cudaStream_t stream;
  FUSEDLOSS_CUDA_OK(cudaStreamCreateWithFlags(&stream, cudaStreamNonBlocking));
  for (fusedloss_dtype dtype : {FUSEDLOSS_FLOAT32, FUSEDLOSS_FLOAT16, FUSEDLOSS_BFLOAT16}) {
    for (int64_t numel : {int64_t{1}, int64_t{7}, int64_t{4097}, (int64_t{1} << 20) + 3}) {
      for (int64_t offset : {0, 1}) {
        SCOPED_TRACE(std::string(fusedloss_dtype_string(dtype)) + " numel " +
                     std::to_string(numel) + " offset " + std::to_string(offset));
        const buffer host(dtype, fusedloss::checks::uniform(rng, numel + offset, -4.0, 4.0));
        device_buffer data(host);
        const size_t size = fusedloss::gpu_tests::element_bytes(dtype);
        void* start = static_cast<unsigned char*>(data.data()) + offset * size;
        for (double s : {1.0, -0.75}) {
          device_buffer scale(buffer(FUSEDLOSS_BFLOAT16, {s}));
          const auto before = data.raw();
          fusedloss_error err;
          ASSERT_EQ(fusedloss_scale_in_place(start, dtype, numel, scale.data(), FUSEDLOSS_BFLOAT16,
                                             FUSEDLOSS_DEVICE_CUDA, stream, &err),
                    FUSEDLOSS_SUCCESS)
              << err.message;
          FUSEDLOSS_CUDA_OK(cudaStreamSynchronize(stream));
          if (s == 1.0) {
            EXPECT_EQ(data.raw(), before);
            continue;
          }
          buffer got = buffer::poisoned(dtype, host.size());
          data.download(got);
          if (offset == 1) {
            EXPECT_EQ(got[0], host[0]) << "the element before the start was written";
          }
          // -0.75 * x rounds once in float32 and once more to the dtype: within one ulp of it.
          const auto tol = fusedloss::checks::rounding_tolerance(dtype);
          for (size_t i = offset; i < host.size(); ++i) {
            if (!tol.accepts(got[i], s * host[i])) {
              ADD_FAILURE() << "element " << i << ": " << got[i] << " vs " << s * host[i];
              break;
            }
          }
        }
      }
    }
  }
  cudaStreamDestroy(stream);
}

}  // namespace
