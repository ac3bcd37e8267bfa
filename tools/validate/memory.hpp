// `fusedloss validate`: where a call's buffers live. The memory a problem's call is run in, host
// buffers, device buffers, and the CUDA runtime's calls that reach the latter.
#pragma once

#include <cstddef>
#include <deque>
#include <optional>
#include <string>
#include <vector>

#include "checks.hpp"
#include "fusedloss/fusedloss.hpp"
#include "golden.hpp"

namespace fusedloss::validate {

using checks::buffer;

// Host memory for the CPU path, device memory for the CUDA one, so that one problem description
// drives both.
class memory {
 public:
  virtual ~memory() = default;
  virtual fusedloss_device device() const = 0;
  /// A copy of `b` that lives as long as *this; null for an empty buffer.
  virtual void* put(const buffer& b) = 0;
  /// The values now at `p`, which `put` returned.
  virtual std::vector<double> get(const void* p) const = 0;
  /// `bytes` of scratch memory (null for 0).
  virtual void* scratch(size_t bytes) = 0;
};

class host_buffers final : public memory {
 public:
  fusedloss_device device() const override { return FUSEDLOSS_DEVICE_CPU; }
  void* put(const buffer& b) override {
    if (b.size() == 0) return nullptr;
    held_.push_back(b);  // a deque never moves its elements, so the pointer stays valid
    return held_.back().data();
  }
  std::vector<double> get(const void* p) const override {
    for (const buffer& b : held_) {
      if (b.data() == p) return b.values();
    }
    return {};
  }
  void* scratch(size_t bytes) override {
    return bytes == 0 ? nullptr : put(buffer::poisoned(FUSEDLOSS_INT64, (bytes + 7) / 8));
  }

 private:
  std::deque<buffer> held_;
};

// Device memory reached through the golden runner's interface, so that the CUDA runtime is named
// in one place only (gpu_memory below).
class device_buffers final : public memory {
 public:
  explicit device_buffers(const checks::device_memory& api) : api_(api) {}
  device_buffers(const device_buffers&) = delete;
  device_buffers& operator=(const device_buffers&) = delete;
  ~device_buffers() override {
    for (const held& h : held_) api_.release(h.pointer);
  }
  fusedloss_device device() const override { return FUSEDLOSS_DEVICE_CUDA; }
  void* put(const buffer& b) override {
    if (b.size() == 0) return nullptr;
    void* p = allocate(b.size_bytes(), b.dtype(), b.size());
    api_.to_device(p, b.data(), b.size_bytes());
    return p;
  }
  std::vector<double> get(const void* p) const override {
    for (const held& h : held_) {
      if (h.pointer != p) continue;
      buffer out = buffer::poisoned(h.dtype, h.count);
      api_.to_host(out.data(), p, out.size_bytes());
      return out.values();
    }
    return {};
  }
  void* scratch(size_t bytes) override {
    return bytes == 0 ? nullptr : allocate(bytes, FUSEDLOSS_INT64, 0);
  }

 private:
  struct held {
    void* pointer;
    fusedloss_dtype dtype;
    size_t count;
  };
  void* allocate(size_t bytes, fusedloss_dtype dtype, size_t count) {
    held_.push_back({api_.allocate(bytes), dtype, count});
    return held_.back().pointer;
  }
  const checks::device_memory& api_;
  std::vector<held> held_;
};

// The CUDA runtime's memory calls, or nothing and the reason the GPU checks cannot run.
std::optional<checks::device_memory> gpu_memory(std::string& why_not);

}  // namespace fusedloss::validate
