// What the benchmarks share: the mode (CUDA device or CPU reference), a session (device, stream,
// events, L2 flush), buffers, random inputs, the reference copy bandwidth, and the timed loop that
// reports bytes and GB/s.
//
// Method (STYLE.md, "Tests and benchmarks"; the device notes' METHOD.md):
// - Each repeat is timed alone with a pair of CUDA events around the one call, and reported to
//   Google Benchmark with SetIterationTime (UseManualTime). A fixed number of warm-up launches runs
//   first, outside the timing.
// - Before each repeat, outside the timed region, the L2 is flushed by reading a buffer twice the
//   L2's size (cudaDevAttrL2CacheSize); see l2_flush.cu for why a read and not a write, and why the
//   flush also makes the start event wait for the call to be queued.
// - Inputs are random and non-zero (never zeros: they hide bugs and can run faster than real data),
//   generated on the host once per process from a counter-based hash and copied to the device once
//   per (dtype, size).
// - `bytes` is what must move: each input read once and each output written once, counted per
//   repeat with kIsIterationInvariantRate and decimal prefixes (kIs1000), so that it prints as
//   bytes per second in powers of 1000 (the report shows it as GB/s).
// - `frac_of_copy` divides that by the device-to-device copy bandwidth measured in the same
//   process: the `copy` row (cudaMemcpyAsync of kCopyBytes, counted as 2 * kCopyBytes moved), or a
//   shorter copy measurement made on first need when that row was filtered out.
//
// The CPU mode (main picks it: FUSEDLOSS_BENCH_DEVICE=cpu, or no usable CUDA device) runs the same
// rows through the same calls on FUSEDLOSS_DEVICE_CPU, the double-precision reference: buffers are
// host memory, each case's N is halved until N * C <= kCpuMaxElements (its label says the size
// run), each repeat is timed with std::chrono::steady_clock (no L2 flush), every row has MinTime
// kCpuMinTime, and the `copy` row is a memcpy of kCpuCopyBytes (the largest row's one float32
// array: cache-resident, as the rows' data is). It checks that every row builds and runs; its times
// are the reference's, not the kernels'.
#pragma once

#include <benchmark/benchmark.h>
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime_api.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <limits>
#include <string>
#include <utility>
#include <vector>

#include "cuda_support.hpp"
#include "fusedloss/fusedloss.h"
#include "l2_flush.hpp"

namespace fusedloss::bench {

constexpr int kWarmupLaunches = 3;
/// The flush kernel lasts at least this long, so the host has queued the timed call behind the
/// start event before the event fires (a library call's host work is a few microseconds).
constexpr uint64_t kFlushMinNs = 50'000;
/// The copy row's buffer size: as large as the largest element benchmark's one array (2^28 f32).
constexpr size_t kCopyBytes = size_t{1} << 30;

/// The CPU mode's bound on a case's elements, its MinTime per row, and its copy row's size.
constexpr int64_t kCpuMaxElements = int64_t{1} << 18;
constexpr double kCpuMinTime = 0.01;
constexpr size_t kCpuCopyBytes = size_t{kCpuMaxElements} * sizeof(float);

/// Whether the rows run on the CPU reference (set by main before anything else; never changed).
inline bool& on_cpu() {
  static bool cpu = false;
  return cpu;
}

inline fusedloss_device run_device() {
  return on_cpu() ? FUSEDLOSS_DEVICE_CPU : FUSEDLOSS_DEVICE_CUDA;
}

inline size_t copy_bytes() { return on_cpu() ? kCpuCopyBytes : kCopyBytes; }

/// N of an (N, C) case as run: as given on the GPU; on the CPU halved until N * C <=
/// kCpuMaxElements (or N is 1).
inline int64_t run_batch(int64_t batch, int64_t classes) {
  while (on_cpu() && batch > 1 && batch * classes > kCpuMaxElements) batch /= 2;
  return batch;
}

/// A label's size: `full` on the GPU; on the CPU also the size run (N x C, or N when C is 1).
inline std::string size_label(const std::string& full, int64_t batch, int64_t classes) {
  if (!on_cpu()) return full;
  const std::string n = std::to_string(run_batch(batch, classes));
  return full + ", run at " + (classes > 1 ? n + " x " + std::to_string(classes) : n) +
         " on the CPU reference";
}

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

using checks::cuda_error_text;
using checks::why_no_gpu;

/// How many benchmark runs failed (SkipWithError through skip()); main's exit status.
inline int& failures() {
  static int count = 0;
  return count;
}

/// Marks the running benchmark as failed, saying why, and counts it.
inline void skip(benchmark::State& state, const std::string& why) {
  ++failures();
  state.SkipWithError(why.c_str());
}

// ------------------------------------------------------------------------------------------------
// Memory of the device the rows run on: CUDA device memory, or host memory in the CPU mode. The
// calls return the CUDA runtime's error codes in both modes.

/// cudaMemcpy, or a memcpy on the CPU.
inline cudaError_t copy_memory(void* to, const void* from, size_t bytes, cudaMemcpyKind kind) {
  if (!on_cpu()) return cudaMemcpy(to, from, bytes, kind);
  if (bytes > 0) std::memcpy(to, from, bytes);
  return cudaSuccess;
}

/// cudaMemset, or a memset on the CPU.
inline cudaError_t fill_memory(void* to, int byte, size_t bytes) {
  if (!on_cpu()) return cudaMemset(to, byte, bytes);
  if (bytes > 0) std::memset(to, byte, bytes);
  return cudaSuccess;
}

/// cudaDeviceSynchronize: a copy from pageable memory may return before its DMA lands, and the
/// benchmarks' stream does not wait for the legacy default stream by itself. Nothing on the CPU.
inline cudaError_t wait_for_device() { return on_cpu() ? cudaSuccess : cudaDeviceSynchronize(); }

/// Memory of the device the rows run on (host memory in the CPU mode), freed on destruction.
class device_buffer {
 public:
  device_buffer() = default;
  device_buffer(const device_buffer&) = delete;
  device_buffer& operator=(const device_buffer&) = delete;
  ~device_buffer() { reset(); }

  /// Replaces the buffer by `bytes` of new, uninitialised memory.
  cudaError_t allocate(size_t bytes) {
    reset();
    if (bytes == 0) return cudaSuccess;
    host_ = on_cpu();
    data_ = host_ ? std::malloc(bytes) : nullptr;
    cudaError_t e = host_ ? cudaSuccess : cudaMalloc(&data_, bytes);
    if (e == cudaSuccess && data_ == nullptr) e = cudaErrorMemoryAllocation;
    if (e != cudaSuccess) {
      data_ = nullptr;
      if (!host_) cudaGetLastError();
      return e;
    }
    bytes_ = bytes;
    return cudaSuccess;
  }
  void reset() {
    if (data_ != nullptr && host_) std::free(data_);
    if (data_ != nullptr && !host_) cudaFree(data_);
    data_ = nullptr;
    bytes_ = 0;
  }
  void* data() const { return data_; }
  size_t bytes() const { return bytes_; }

 private:
  void* data_ = nullptr;
  size_t bytes_ = 0;
  bool host_ = false;
};

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
  cudaError_t flush_l2() {
    return launch_l2_flush(flush_.data(), flush_.bytes(), kFlushMinNs,
                           static_cast<int*>(sink_.data()), flush_blocks_, stream_);
  }

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
  void release() {
    flush_.reset();
    sink_.reset();
    if (start_ != nullptr) cudaEventDestroy(start_);
    if (stop_ != nullptr) cudaEventDestroy(stop_);
    if (stream_ != nullptr) cudaStreamDestroy(stream_);
    start_ = stop_ = nullptr;
    stream_ = nullptr;
    if (error_.empty()) error_ = "session released";
  }

 private:
  session() { error_ = on_cpu() ? std::string() : init(); }
  ~session() = default;

  std::string init() {
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
    if ((e = cudaEventCreate(&start_)) != cudaSuccess ||
        (e = cudaEventCreate(&stop_)) != cudaSuccess)
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

// ------------------------------------------------------------------------------------------------
// Random inputs

/// Uniform in [0, 1) from the index alone (splitmix64), so that any prefix is the same values.
inline float unit_value(uint64_t stream, uint64_t i) {
  uint64_t z = (i + 1) * 0x9E3779B97F4A7C15ull ^ (stream * 0xD1B54A32D192ED03ull);
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
  z ^= z >> 31;
  return static_cast<float>(z >> 40) * (1.0f / 16777216.0f);  // 24 bits
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
  void grow(int64_t n) {
    const size_t have = logits_.size();
    if (static_cast<size_t>(n) <= have) return;
    logits_.resize(static_cast<size_t>(n));
    targets_.resize(static_cast<size_t>(n));
    for (size_t i = have; i < logits_.size(); ++i) {
      float x = 8.0f * unit_value(1, i) - 4.0f;
      if (std::fabs(x) < 1.0f / 1024) x = 0.5f;
      logits_[i] = x;
      targets_[i] = 1.0f / 64 + (62.0f / 64) * unit_value(2, i);
    }
  }
  std::vector<float> logits_, targets_;
};

inline size_t dtype_bytes(fusedloss_dtype dtype) { return dtype == FUSEDLOSS_FLOAT32 ? 4 : 2; }

inline const char* dtype_label(fusedloss_dtype dtype) { return fusedloss_dtype_string(dtype); }

/// Copies n floats to the device's memory as `dtype` (float32, float16 or bfloat16), in slices.
inline cudaError_t upload(const float* values, int64_t n, fusedloss_dtype dtype, void* device) {
  if (dtype == FUSEDLOSS_FLOAT32)
    return copy_memory(device, values, static_cast<size_t>(n) * sizeof(float),
                       cudaMemcpyHostToDevice);
  constexpr int64_t kSlice = int64_t{1} << 24;
  std::vector<uint16_t> staging(static_cast<size_t>(std::min(n, kSlice)));
  for (int64_t from = 0; from < n; from += kSlice) {
    const int64_t count = std::min(kSlice, n - from);
    for (int64_t i = 0; i < count; ++i) {
      const float v = values[from + i];
      if (dtype == FUSEDLOSS_BFLOAT16) {
        const __nv_bfloat16 b = __float2bfloat16_rn(v);
        std::memcpy(&staging[static_cast<size_t>(i)], &b, 2);
      } else {
        const __half h = __float2half_rn(v);
        std::memcpy(&staging[static_cast<size_t>(i)], &h, 2);
      }
    }
    const cudaError_t e = copy_memory(static_cast<uint16_t*>(device) + from, staging.data(),
                                      static_cast<size_t>(count) * 2, cudaMemcpyHostToDevice);
    if (e != cudaSuccess) return e;
  }
  return cudaSuccess;
}

/// upload() and then wait_for_device().
inline cudaError_t upload_and_wait(const float* values, int64_t n, fusedloss_dtype dtype,
                                   void* device) {
  const cudaError_t e = upload(values, n, dtype, device);
  return e != cudaSuccess ? e : wait_for_device();
}

/// Device copies of the first `numel` logits and targets in `dtype`, plus a gradient buffer of the
/// same size. One set lives at a time: asking for another frees the last one first.
class device_inputs {
 public:
  static device_inputs& get() {
    static device_inputs d;
    return d;
  }

  std::string prepare(fusedloss_dtype dtype, int64_t numel) {
    if (ready_ && dtype == dtype_ && numel == numel_) return {};
    release();
    const size_t bytes = static_cast<size_t>(numel) * dtype_bytes(dtype);
    host_values& host = host_values::get();
    cudaError_t e = logits_.allocate(bytes);
    if (e == cudaSuccess) e = targets_.allocate(bytes);
    if (e == cudaSuccess) e = grad_.allocate(bytes);
    if (e != cudaSuccess)
      return cuda_error_text(e, "allocating 3 x " + std::to_string(bytes) + " bytes");
    e = upload(host.logits(numel), numel, dtype, logits_.data());
    if (e == cudaSuccess) e = upload(host.targets(numel), numel, dtype, targets_.data());
    // The gradient is written by every fused call; start it non-zero all the same.
    if (e == cudaSuccess) e = fill_memory(grad_.data(), 0x3c, bytes);
    if (e == cudaSuccess) e = wait_for_device();
    if (e != cudaSuccess) return cuda_error_text(e, "uploading the inputs");
    dtype_ = dtype;
    numel_ = numel;
    ready_ = true;
    return {};
  }

  void release() {
    ready_ = false;
    logits_.reset();
    targets_.reset();
    grad_.reset();
  }

  const void* logits() const { return logits_.data(); }
  const void* targets() const { return targets_.data(); }
  void* grad() const { return grad_.data(); }

 private:
  bool ready_ = false;
  fusedloss_dtype dtype_ = FUSEDLOSS_FLOAT32;
  int64_t numel_ = 0;
  device_buffer logits_, targets_, grad_;
};

// ------------------------------------------------------------------------------------------------
// The timed loop and its counters

/// Sets `bytes` (a rate over the manual time, decimal) and `frac_of_copy` for a run of
/// `state.iterations()` repeats that took `seconds` in all and moved `bytes_per_repeat` each.
inline void set_counters(benchmark::State& state, double bytes_per_repeat, double seconds,
                         double copy_bytes_per_second) {
  state.counters["bytes"] = benchmark::Counter(
      bytes_per_repeat, benchmark::Counter::kIsIterationInvariantRate, benchmark::Counter::kIs1000);
  const double achieved =
      seconds > 0 ? bytes_per_repeat * static_cast<double>(state.iterations()) / seconds : 0.0;
  state.counters["frac_of_copy"] = copy_bytes_per_second > 0
                                       ? achieved / copy_bytes_per_second
                                       : std::numeric_limits<double>::quiet_NaN();
}

/// One loss's entry points in the C ABI, so that one template runs any loss.
template <class Params>
struct loss_api {
  void (*init)(Params*);
  fusedloss_status (*workspace_size)(const Params*, size_t*, fusedloss_error*);
  fusedloss_status (*forward)(const Params*, void*, size_t, void*, fusedloss_error*);
  fusedloss_status (*backward)(const Params*, void*, size_t, void*, fusedloss_error*);
  fusedloss_status (*forward_backward)(const Params*, void*, size_t, void*, fusedloss_error*);
};

#define FUSEDLOSS_BENCH_API(name)                                                                  \
  ::fusedloss::bench::loss_api<fusedloss_##name##_params> {                                        \
    fusedloss_##name##_params_init, fusedloss_##name##_workspace_size, fusedloss_##name##_forward, \
        fusedloss_##name##_backward, fusedloss_##name##_forward_backward                           \
  }

/// "function: status (message)", for a row that fails on a call's status.
inline std::string status_text(const char* function, fusedloss_status s,
                               const fusedloss_error& err) {
  std::string text = std::string(function) + ": " + fusedloss_status_string(s);
  if (err.message[0] != '\0') text += std::string(" (") + err.message + ")";
  return text;
}

/// Allocates the workspace `p`'s calls need, as the C ABI's `workspace_size` call for them says;
/// on failure fails the row and returns false.
template <class Params>
bool allocate_workspace(benchmark::State& state,
                        fusedloss_status (*workspace_size)(const Params*, size_t*,
                                                           fusedloss_error*),
                        const Params& p, device_buffer& workspace) {
  fusedloss_error err{};
  size_t bytes = 0;
  if (const fusedloss_status st = workspace_size(&p, &bytes, &err); st != FUSEDLOSS_SUCCESS) {
    skip(state, status_text("workspace_size", st, err));
    return false;
  }
  if (const cudaError_t e = workspace.allocate(bytes); e != cudaSuccess) {
    skip(state, cuda_error_text(e, "allocating the workspace"));
    return false;
  }
  return true;
}

/// Reads the loss the timed calls left at `loss` (the device's memory) into the row's `loss`
/// counter.
/// The mean loss of random inputs is finite: anything else means the timed call is broken, and
/// fails the row (false: set no more counters).
inline bool record_loss(benchmark::State& state, const float* loss) {
  float value = 0;
  if (const cudaError_t e = copy_memory(&value, loss, sizeof value, cudaMemcpyDeviceToHost);
      e != cudaSuccess) {
    skip(state, cuda_error_text(e, "reading the loss"));
    return false;
  }
  if (!std::isfinite(value)) {
    skip(state, "the loss is not finite (" + std::to_string(value) + ")");
    return false;
  }
  state.counters["loss"] = value;
  return true;
}

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
  std::string prepare() {
    const int64_t n = static_cast<int64_t>(copy_bytes() / sizeof(float));
    cudaError_t e = from_.allocate(copy_bytes());
    if (e == cudaSuccess) e = to_.allocate(copy_bytes());
    if (e == cudaSuccess)
      e = upload_and_wait(host_values::get().logits(n), n, FUSEDLOSS_FLOAT32, from_.data());
    return e == cudaSuccess ? std::string() : cuda_error_text(e, "copy buffers");
  }
  std::string call() {
    if (on_cpu()) {
      std::memcpy(to_.data(), from_.data(), copy_bytes());
      return {};
    }
    const cudaError_t e = cudaMemcpyAsync(to_.data(), from_.data(), copy_bytes(),
                                          cudaMemcpyDeviceToDevice, session::get().stream());
    return e == cudaSuccess ? std::string() : cuda_error_text(e, "cudaMemcpyAsync");
  }

 private:
  device_buffer from_, to_;
};

inline double session::copy_bandwidth() {
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

// ------------------------------------------------------------------------------------------------
// The row losses' rows (row_losses.cpp), for main

/// Registers the row-loss rows. Call after registering the copy row (and the element rows), so that
/// the copy stays the first row and the reference of those after it.
void register_row_benchmarks();
/// Frees the row rows' inputs: call after the benchmarks, before session::release().
void release_row_inputs();

}  // namespace fusedloss::bench
