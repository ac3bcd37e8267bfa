// The process's device state and the timed loop: one stream, one pair of CUDA events, the L2
// flush, the reference copy bandwidth, and the loop that times a row's call once per repeat.
//
// Method:
// - Each repeat is timed alone with a pair of CUDA events around the one call, and reported to
//   Google Benchmark with SetIterationTime (UseManualTime). A fixed number of warm-up launches runs
//   first, outside the timing.
// - Before each repeat, outside the timed region, the L2 is flushed by reading a buffer twice the
//   L2's size (cudaDevAttrL2CacheSize); see l2_flush.cu for why a read and not a write, and why the
//   flush also makes the start event wait for the call to be queued.
// - The reference copy bandwidth is the `copy` row's (cudaMemcpyAsync of kCopyBytes, counted as
//   2 * kCopyBytes moved), or a shorter copy measurement made on first need when that row was
//   filtered out.
// In the CPU mode (mode.hpp) each repeat is timed with the host's clock, without a flush.
#pragma once

#include <benchmark/benchmark.h>
#include <cuda_runtime_api.h>

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <string>

#include "memory.hpp"
#include "mode.hpp"
#include "registry.hpp"

namespace fusedloss::bench {

constexpr int kWarmupLaunches = 3;
/// The flush kernel lasts at least this long, so the host has queued the timed call behind the
/// start event before the event fires (a library call's host work is a few microseconds).
constexpr uint64_t kFlushMinNs = 50'000;

/// The process's device state: one stream, one event pair, the L2 flush buffer, the reference copy
/// bandwidth. Built on first use; `error()` is non-empty when that failed. In the CPU mode it holds
/// only the copy bandwidth, and times with the host's clock.
class session {
 public:
  static session& get() {
    static session s;
    return s;
  }

  const std::string& error() const { return error_; }
  cudaStream_t stream() const { return stream_; }
  int device() const { return device_; }
  const cudaDeviceProp& properties() const { return properties_; }
  size_t l2_bytes() const { return l2_bytes_; }
  size_t flush_bytes() const { return flush_.bytes(); }

  /// Reads twice the L2's size on the stream, outside any timed region.
  cudaError_t flush_l2();

  /// Waits for the stream (nothing to wait for on the CPU).
  cudaError_t synchronize() { return on_cpu() ? cudaSuccess : cudaStreamSynchronize(stream_); }

  /// Flushes L2, then times `call` (which enqueues work on the stream and returns an empty string,
  /// or why it failed) with events. Returns an empty string and the seconds, or the failure. On the
  /// CPU, the wall-clock time of the call.
  template <class Call>
  std::string time_once(Call&& call, double* seconds) {
    if (on_cpu()) {
      const auto start = std::chrono::steady_clock::now();
      std::string why = call();
      *seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
      return why;
    }
    cudaError_t e = flush_l2();
    if (e != cudaSuccess) return cuda_error_text(e, "L2 flush");
    e = cudaEventRecord(start_, stream_);
    if (e != cudaSuccess) return cuda_error_text(e, "cudaEventRecord");
    std::string why = call();
    // Record and wait even after a failed call, so that nothing stays queued.
    e = cudaEventRecord(stop_, stream_);
    if (e == cudaSuccess) e = cudaEventSynchronize(stop_);
    if (!why.empty()) return why;
    if (e != cudaSuccess) return cuda_error_text(e, "timed region");
    float ms = 0;
    e = cudaEventElapsedTime(&ms, start_, stop_);
    if (e != cudaSuccess) return cuda_error_text(e, "cudaEventElapsedTime");
    *seconds = static_cast<double>(ms) * 1e-3;
    return {};
  }

  /// The reference copy bandwidth in bytes per second (read + write), from the copy row when it
  /// ran, else measured now.
  double copy_bandwidth();
  void set_copy_bandwidth(double bytes_per_second) { copy_bandwidth_ = bytes_per_second; }

  /// Frees every device resource (call before main returns: static destructors run after the CUDA
  /// runtime may have been torn down).
  void release();

 private:
  session() { error_ = on_cpu() ? std::string() : init(); }
  ~session() = default;

  std::string init();

  std::string error_;
  int device_ = 0;
  cudaDeviceProp properties_{};
  size_t l2_bytes_ = 0;
  int flush_blocks_ = 1;
  cudaStream_t stream_ = nullptr;
  cudaEvent_t start_ = nullptr;
  cudaEvent_t stop_ = nullptr;
  device_buffer flush_;
  device_buffer sink_;
  double copy_bandwidth_ = 0;
};

/// Runs `call` kWarmupLaunches times (once on the CPU: it only warms the caches), then once per
/// benchmark iteration between an L2 flush and the events (on the CPU, the host's clock); reports
/// that time. Returns the total timed seconds, or a negative value after SkipWithError (the caller
/// then sets no counters).
template <class Call>
double timed_loop(benchmark::State& state, Call&& call) {
  session& s = session::get();
  for (int i = 0; i < (on_cpu() ? 1 : kWarmupLaunches); ++i) {
    if (std::string why = call(); !why.empty()) {
      skip(state, "warm-up: " + why);
      return -1;
    }
  }
  if (const cudaError_t e = s.synchronize(); e != cudaSuccess) {
    skip(state, cuda_error_text(e, "warm-up"));
    return -1;
  }
  double total = 0;
  for (auto _ : state) {
    double seconds = 0;
    if (std::string why = s.time_once(call, &seconds); !why.empty()) {
      skip(state, why);
      return -1;
    }
    state.SetIterationTime(seconds);
    total += seconds;
  }
  return total;
}

/// The reference copy's two buffers of copy_bytes(), `from` holding random floats; call() copies
/// once (cudaMemcpyAsync device to device on the stream, or a memcpy on the CPU).
class copy_buffers {
 public:
  std::string prepare();
  std::string call();

 private:
  device_buffer from_, to_;
};

}  // namespace fusedloss::bench
