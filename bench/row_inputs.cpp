// The row rows' inputs (row_inputs.hpp): values from inputs.hpp's hash, generated in slices on
// the host's threads.
#include "row_inputs.hpp"

#include <cuda_bf16.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <thread>
#include <vector>

#include "inputs.hpp"

namespace fusedloss::bench {
namespace {

/// Whether row r's target is ignore_index in the ignored copy: every tenth row.
bool ignored_row(int64_t r) { return r % 10 == 1; }

/// Logit i: the sum of two 24-bit uniforms from one hash, scaled to [-4, 4] (triangular, so
/// normal-ish), never 0.
float logit_value(uint64_t i) {
  const uint64_t z = mix(11, i);
  const float a = static_cast<float>(z >> 40) * (1.0f / 16777216.0f);
  const float b = static_cast<float>((z >> 16) & 0xFFFFFFu) * (1.0f / 16777216.0f);
  const float x = 4.0f * (a + b - 1.0f);
  return std::fabs(x) < 1.0f / 1024 ? 0.5f : x;
}

/// Runs body(from, to) over [0, n) split across the host's threads.
template <class Body>
void parallel_for(int64_t n, const Body& body) {
  const int64_t threads =
      std::clamp<int64_t>(static_cast<int64_t>(std::thread::hardware_concurrency()), 1, 16);
  const int64_t chunk = (n + threads - 1) / threads;
  std::vector<std::thread> pool;
  for (int64_t from = chunk; from < n; from += chunk)
    pool.emplace_back([&body, from, to = std::min(n, from + chunk)] { body(from, to); });
  body(0, std::min(n, chunk));
  for (std::thread& t : pool) t.join();
}

/// Writes logits [from, from + count) in `dtype` to `out`.
void fill_logits(fusedloss_dtype dtype, int64_t from, int64_t count, void* out) {
  parallel_for(count, [&](int64_t begin, int64_t end) {
    for (int64_t i = begin; i < end; ++i) {
      const float v = logit_value(static_cast<uint64_t>(from + i));
      if (dtype == FUSEDLOSS_FLOAT32) {
        static_cast<float*>(out)[i] = v;
      } else {
        const __nv_bfloat16 b = __float2bfloat16_rn(v);
        std::memcpy(static_cast<uint16_t*>(out) + i, &b, 2);
      }
    }
  });
}

}  // namespace

std::string row_inputs::prepare(fusedloss_dtype dtype, int64_t batch, int64_t classes) {
  if (ready_ && dtype == dtype_ && batch == batch_ && classes == classes_) return {};
  release();
  device_inputs::get().release();
  const int64_t numel = batch * classes;
  const size_t bytes = static_cast<size_t>(numel) * dtype_bytes(dtype);
  cudaError_t e = logits_.allocate(bytes);
  if (e == cudaSuccess) e = grad_.allocate(bytes);
  if (e == cudaSuccess) e = targets_.allocate(static_cast<size_t>(batch) * sizeof(int64_t));
  if (e == cudaSuccess) e = ignored_.allocate(targets_.bytes());
  if (e == cudaSuccess) e = lse_.allocate(static_cast<size_t>(batch) * sizeof(float));
  if (e == cudaSuccess) e = loss_.allocate(sizeof(float));
  if (e == cudaSuccess) e = grad_loss_.allocate(sizeof(float));
  if (e != cudaSuccess)
    return cuda_error_text(e, "allocating 2 x " + std::to_string(bytes) + " bytes and the rows");

  // Logits in slices of 2^26 values, generated in the dtype and copied.
  constexpr int64_t kSlice = int64_t{1} << 26;
  const size_t width = dtype_bytes(dtype);
  std::vector<unsigned char> staging(static_cast<size_t>(std::min(numel, kSlice)) * width);
  for (int64_t from = 0; from < numel && e == cudaSuccess; from += kSlice) {
    const int64_t count = std::min(kSlice, numel - from);
    fill_logits(dtype, from, count, staging.data());
    e = copy_memory(static_cast<unsigned char*>(logits_.data()) + static_cast<size_t>(from) * width,
                    staging.data(), static_cast<size_t>(count) * width, cudaMemcpyHostToDevice);
  }
  std::vector<int64_t> targets(static_cast<size_t>(batch)), ignored(targets.size());
  for (int64_t r = 0; r < batch; ++r) {
    targets[static_cast<size_t>(r)] =
        static_cast<int64_t>(mix(12, static_cast<uint64_t>(r)) % static_cast<uint64_t>(classes));
    ignored[static_cast<size_t>(r)] = ignored_row(r) ? -100 : targets[static_cast<size_t>(r)];
  }
  const float one = 1.0f;
  if (e == cudaSuccess)
    e = copy_memory(targets_.data(), targets.data(), targets_.bytes(), cudaMemcpyHostToDevice);
  if (e == cudaSuccess)
    e = copy_memory(ignored_.data(), ignored.data(), ignored_.bytes(), cudaMemcpyHostToDevice);
  if (e == cudaSuccess)
    e = copy_memory(grad_loss_.data(), &one, sizeof one, cudaMemcpyHostToDevice);
  // The outputs are written by the calls; start them non-zero all the same.
  if (e == cudaSuccess) e = fill_memory(grad_.data(), 0x3c, bytes);
  if (e == cudaSuccess) e = fill_memory(lse_.data(), 0x3c, lse_.bytes());
  if (e == cudaSuccess) e = fill_memory(loss_.data(), 0x3c, loss_.bytes());
  if (e == cudaSuccess) e = wait_for_device();
  if (e != cudaSuccess) return cuda_error_text(e, "uploading the row inputs");
  dtype_ = dtype;
  batch_ = batch;
  classes_ = classes;
  ready_ = true;
  return {};
}

void row_inputs::release() {
  ready_ = false;
  logits_.reset();
  grad_.reset();
  targets_.reset();
  ignored_.reset();
  lse_.reset();
  loss_.reset();
  grad_loss_.reset();
}

}  // namespace fusedloss::bench
