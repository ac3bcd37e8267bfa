// The session's device setup and release, the L2 flush, and the reference copy (session.hpp).
#include "session.hpp"

#include <algorithm>
#include <cstring>

#include "inputs.hpp"
#include "l2_flush.hpp"

namespace fusedloss::bench {

cudaError_t session::flush_l2() {
  return launch_l2_flush(flush_.data(), flush_.bytes(), kFlushMinNs,
                         static_cast<int*>(sink_.data()), flush_blocks_, stream_);
}

void session::release() {
  flush_.reset();
  sink_.reset();
  if (start_ != nullptr) cudaEventDestroy(start_);
  if (stop_ != nullptr) cudaEventDestroy(stop_);
  if (stream_ != nullptr) cudaStreamDestroy(stream_);
  start_ = stop_ = nullptr;
  stream_ = nullptr;
  if (error_.empty()) error_ = "session released";
}

std::string session::init() {
  if (std::string why = why_no_gpu(); !why.empty()) return why;
  cudaError_t e = cudaGetDevice(&device_);
  if (e == cudaSuccess) e = cudaGetDeviceProperties(&properties_, device_);
  if (e != cudaSuccess) return cuda_error_text(e, "cudaGetDeviceProperties");
  int l2 = 0;
  e = cudaDeviceGetAttribute(&l2, cudaDevAttrL2CacheSize, device_);
  if (e != cudaSuccess) return cuda_error_text(e, "cudaDevAttrL2CacheSize");
  l2_bytes_ = static_cast<size_t>(l2);
  flush_blocks_ = std::max(1, properties_.multiProcessorCount) * 8;
  // Twice the L2 (at least 8 MiB), a multiple of the kernel's 16-byte reads.
  const size_t flush_bytes = (std::max<size_t>(2 * l2_bytes_, size_t{8} << 20) + 15) / 16 * 16;
  if ((e = cudaStreamCreateWithFlags(&stream_, cudaStreamNonBlocking)) != cudaSuccess)
    return cuda_error_text(e, "cudaStreamCreate");
  if ((e = cudaEventCreate(&start_)) != cudaSuccess || (e = cudaEventCreate(&stop_)) != cudaSuccess)
    return cuda_error_text(e, "cudaEventCreate");
  if ((e = flush_.allocate(flush_bytes)) != cudaSuccess)
    return cuda_error_text(e, "cudaMalloc of the L2 flush buffer");
  if ((e = sink_.allocate(sizeof(int))) != cudaSuccess)
    return cuda_error_text(e, "cudaMalloc of the flush sink");
  e = cudaMemsetAsync(flush_.data(), 0, flush_.bytes(), stream_);
  if (e == cudaSuccess) e = cudaMemsetAsync(sink_.data(), 0, sizeof(int), stream_);
  if (e == cudaSuccess) e = flush_l2();
  if (e == cudaSuccess) e = cudaStreamSynchronize(stream_);
  if (e != cudaSuccess) return cuda_error_text(e, "first L2 flush");
  return {};
}

double session::copy_bandwidth() {
  if (copy_bandwidth_ > 0 || !error_.empty()) return copy_bandwidth_;
  // The copy row did not run (filtered out): a shorter measurement of the same copy.
  copy_buffers buffers;
  if (!buffers.prepare().empty()) return 0;
  const auto copy = [&] { return buffers.call(); };
  for (int i = 0; i < kWarmupLaunches; ++i) copy();
  double total = 0;
  constexpr int kRepeats = 20;
  for (int i = 0; i < kRepeats; ++i) {
    double seconds = 0;
    if (!time_once(copy, &seconds).empty()) return 0;
    total += seconds;
  }
  copy_bandwidth_ = 2.0 * static_cast<double>(copy_bytes()) * kRepeats / total;
  return copy_bandwidth_;
}

std::string copy_buffers::prepare() {
  const int64_t n = static_cast<int64_t>(copy_bytes() / sizeof(float));
  cudaError_t e = from_.allocate(copy_bytes());
  if (e == cudaSuccess) e = to_.allocate(copy_bytes());
  if (e == cudaSuccess)
    e = upload_and_wait(host_values::get().logits(n), n, FUSEDLOSS_FLOAT32, from_.data());
  return e == cudaSuccess ? std::string() : cuda_error_text(e, "copy buffers");
}

std::string copy_buffers::call() {
  if (on_cpu()) {
    std::memcpy(to_.data(), from_.data(), copy_bytes());
    return {};
  }
  const cudaError_t e = cudaMemcpyAsync(to_.data(), from_.data(), copy_bytes(),
                                        cudaMemcpyDeviceToDevice, session::get().stream());
  return e == cudaSuccess ? std::string() : cuda_error_text(e, "cudaMemcpyAsync");
}

}  // namespace fusedloss::bench
