// The CUDA path's memory-space and alignment checks, which only a device can exercise: a workspace
// in pageable host memory, a device workspace that is not 8-byte aligned (the kernels keep double
// partials there) and another device's memory are refused naming the argument, and nothing is
// written. Each refusal has a control that differs from it in that one pointer and is accepted.
#include <cuda_runtime_api.h>
#include <gtest/gtest.h>

#include <string>
#include <vector>

#include "checks.hpp"
#include "fusedloss/fusedloss.h"
#include "gpu_support.hpp"

namespace {

using fusedloss::checks::buffer;
using fusedloss::gpu_tests::device_buffer;

constexpr int64_t kRows = 3;
constexpr int64_t kClasses = 4;
constexpr int64_t kElements = kRows * kClasses;

// A BCE sum and a cross-entropy mean over the same small problem on the current device: both
// reductions keep their partials in the workspace, so both need one. Outputs start poisoned.
struct device_problem {
  const buffer logits_host{FUSEDLOSS_FLOAT32,
                           {0.5, -1, 2, 0.25, -0.75, 1.5, 3, -2, 0.1, 0.2, -0.3, 1}};
  device_buffer logits{logits_host};
  device_buffer soft_targets{buffer(FUSEDLOSS_FLOAT32, {1, 0, 0.5, 0, 1, 1, 0, 0.25, 0, 1, 0, 0})};
  device_buffer class_targets{buffer(FUSEDLOSS_INT64, {2, 0, 3})};
  const buffer poisoned_loss = buffer::poisoned(FUSEDLOSS_FLOAT32, 1);
  const buffer poisoned_grad = buffer::poisoned(FUSEDLOSS_FLOAT32, kElements);
  device_buffer loss{poisoned_loss};
  device_buffer grad{poisoned_grad};

  fusedloss_bce_params bce() const {
    fusedloss_bce_params p;
    fusedloss_bce_params_init(&p);
    p.device = FUSEDLOSS_DEVICE_CUDA;
    p.reduction = FUSEDLOSS_REDUCTION_SUM;
    p.numel = kElements;
    p.logits = logits.data();
    p.targets = soft_targets.data();
    p.loss = loss.data();
    p.grad_logits = grad.data();
    return p;
  }

  fusedloss_cross_entropy_params cross_entropy() const {
    fusedloss_cross_entropy_params p;
    fusedloss_cross_entropy_params_init(&p);
    p.device = FUSEDLOSS_DEVICE_CUDA;
    p.batch = kRows;
    p.num_classes = kClasses;
    p.logits = logits.data();
    p.targets = class_targets.data();
    p.loss = loss.data();
    p.grad_logits = grad.data();
    return p;
  }

  bool outputs_untouched() const {
    return loss.raw() == raw(poisoned_loss) && grad.raw() == raw(poisoned_grad);
  }
  bool outputs_written() const {
    return loss.raw() != raw(poisoned_loss) && grad.raw() != raw(poisoned_grad);
  }

 private:
  static std::vector<unsigned char> raw(const buffer& b) {
    const auto* bytes = static_cast<const unsigned char*>(b.data());
    return {bytes, bytes + b.size_bytes()};
  }
};

size_t workspace_bytes(const fusedloss_bce_params& p) {
  size_t bytes = 0;
  fusedloss_error err;
  EXPECT_EQ(fusedloss_bce_workspace_size(&p, &bytes, &err), FUSEDLOSS_SUCCESS) << err.message;
  return bytes;
}
size_t workspace_bytes(const fusedloss_cross_entropy_params& p) {
  size_t bytes = 0;
  fusedloss_error err;
  EXPECT_EQ(fusedloss_cross_entropy_workspace_size(&p, &bytes, &err), FUSEDLOSS_SUCCESS)
      << err.message;
  return bytes;
}

fusedloss_status forward_backward(const fusedloss_bce_params& p, void* workspace, size_t bytes,
                                  fusedloss_error* err) {
  return fusedloss_bce_forward_backward(&p, workspace, bytes, nullptr, err);
}
fusedloss_status forward_backward(const fusedloss_cross_entropy_params& p, void* workspace,
                                  size_t bytes, fusedloss_error* err) {
  return fusedloss_cross_entropy_forward_backward(&p, workspace, bytes, nullptr, err);
}

// Expects the fused call on `p` with `workspace` (`bytes` long) to be refused naming `argument`,
// with `message_part` in its message and the outputs untouched.
template <class Params>
void expect_refused(const device_problem& d, const Params& p, void* workspace, size_t bytes,
                    const char* argument, const std::string& message_part) {
  fusedloss_error err{};
  EXPECT_EQ(forward_backward(p, workspace, bytes, &err), FUSEDLOSS_INVALID_ARGUMENT);
  ASSERT_NE(err.argument, nullptr);
  EXPECT_STREQ(err.argument, argument);
  EXPECT_NE(std::string(err.message).find(message_part), std::string::npos) << err.message;
  FUSEDLOSS_CUDA_OK(cudaDeviceSynchronize());
  EXPECT_TRUE(d.outputs_untouched());
}

template <class Params>
void expect_accepted(const device_problem& d, const Params& p, void* workspace, size_t bytes) {
  fusedloss_error err{};
  EXPECT_EQ(forward_backward(p, workspace, bytes, &err), FUSEDLOSS_SUCCESS) << err.message;
  FUSEDLOSS_CUDA_OK(cudaDeviceSynchronize());
  EXPECT_TRUE(d.outputs_written());
}

// Runs check(d, p, bytes) on a fresh problem of each loss family (BCE, cross-entropy), `bytes` its
// workspace size, which their reductions make nonzero.
template <class Check>
void on_each_loss(const Check& check) {
  const auto run = [&](const auto make) {
    device_problem d;
    const auto p = make(d);
    const size_t bytes = workspace_bytes(p);
    ASSERT_GE(bytes, sizeof(double));  // at least one block's partial
    check(d, p, bytes);
  };
  run([](const device_problem& d) { return d.bce(); });
  run([](const device_problem& d) { return d.cross_entropy(); });
}

TEST(MemorySpace, HostWorkspaceIsRefusedOnTheCudaPath) {
  FUSEDLOSS_REQUIRE_GPU_OR_SKIP();
  on_each_loss([](const device_problem& d, const auto& p, size_t bytes) {
    std::vector<double> host(bytes / sizeof(double) + 1);  // aligned: refused for its space alone
    expect_refused(d, p, host.data(), bytes, "workspace", "pageable host memory");
    device_buffer workspace(bytes);
    expect_accepted(d, p, workspace.data(), bytes);
  });
}

TEST(MemorySpace, MisalignedDeviceWorkspaceIsRefused) {
  FUSEDLOSS_REQUIRE_GPU_OR_SKIP();
  on_each_loss([](const device_problem& d, const auto& p, size_t bytes) {
    device_buffer workspace(bytes + 8);
    auto* base = static_cast<unsigned char*>(workspace.data());
    for (const int offset : {4, 1}) {  // float-aligned, byte-aligned: neither holds a double
      SCOPED_TRACE("offset " + std::to_string(offset));
      expect_refused(d, p, base + offset, bytes, "workspace", "8-byte aligned");
    }
    expect_accepted(d, p, base + 8, bytes);
  });
}

// A device workspace one double short, or none, is refused naming the workspace and the size the
// call needs (the row losses find it out while planning the call they then run).
TEST(MemorySpace, ShortWorkspaceIsRefused) {
  FUSEDLOSS_REQUIRE_GPU_OR_SKIP();
  on_each_loss([](const device_problem& d, const auto& p, size_t bytes) {
    device_buffer workspace(bytes);
    const std::string needs = "the call needs " + std::to_string(bytes);
    expect_refused(d, p, workspace.data(), bytes - sizeof(double), "workspace", needs);
    expect_refused(d, p, nullptr, 0, "workspace", needs);
    expect_accepted(d, p, workspace.data(), bytes);
  });
}

// On the CPU path every device pointer is refused; of the arrays the first one named is the logits,
// the first array a caller passes (the element losses' test of this runs in
// test_element_bad_input.cpp).
TEST(MemorySpace, CpuPathNamesTheLogitsFirst) {
  FUSEDLOSS_REQUIRE_GPU_OR_SKIP();
  device_problem d;
  auto p = d.cross_entropy();
  p.device = FUSEDLOSS_DEVICE_CPU;
  expect_refused(d, p, nullptr, 0, "logits", "device memory, but the call runs on the CPU");
}

// Restores the current device when the test ends, whichever way.
class current_device_guard {
 public:
  current_device_guard() { cudaGetDevice(&device_); }
  ~current_device_guard() { cudaSetDevice(device_); }
  current_device_guard(const current_device_guard&) = delete;
  current_device_guard& operator=(const current_device_guard&) = delete;

 private:
  int device_ = 0;
};

// Calls run on the current device, so memory of another one is refused (a kernel would fault on it
// without peer access, which the call cannot see), naming both devices. It needs two GPUs and skips
// on one; its suite's name lets a one-GPU run filter it out (gtest's -MemorySpaceMultiGpu.*).
TEST(MemorySpaceMultiGpu, AnotherDevicesMemoryIsRefused) {
  FUSEDLOSS_REQUIRE_GPU_OR_SKIP();
  int count = 0;
  FUSEDLOSS_CUDA_OK(cudaGetDeviceCount(&count));
  if (count < 2) GTEST_SKIP() << "needs two CUDA devices, this machine has " << count;
  const current_device_guard guard;
  FUSEDLOSS_CUDA_OK(cudaSetDevice(0));
  device_problem d;
  const auto p = d.cross_entropy();
  const size_t bytes = workspace_bytes(p);
  ASSERT_GT(bytes, 0u);
  device_buffer workspace(bytes);

  FUSEDLOSS_CUDA_OK(cudaSetDevice(1));
  const device_buffer other_logits(d.logits_host);
  const device_buffer other_workspace(bytes);
  FUSEDLOSS_CUDA_OK(cudaSetDevice(0));

  auto on_other = p;
  on_other.logits = other_logits.data();
  const std::string devices = "CUDA device 1, but the call runs on device 0";
  expect_refused(d, on_other, workspace.data(), bytes, "logits", devices);
  expect_refused(d, p, other_workspace.data(), bytes, "workspace", devices);
  expect_accepted(d, p, workspace.data(), bytes);
}

}  // namespace
