// Benchmarks of the element losses' CUDA calls (BCE with logits, sigmoid focal, MSE), and the
// device-to-device copy that each result is compared with.
//
// Rows: `copy` first (its bandwidth is the reference), then for each shape (2^24 elements, a
// detection-like 100000 anchors x 80 classes, 2^28 elements), dtype (float32, bfloat16, float16),
// loss and call (forward_backward, the fused training call; forward), with reduction mean and
// targets in the logits' dtype. Bytes that must move, per call:
// - forward_backward: logits read + targets read + gradient written = 3 * numel * sizeof(dtype);
// - forward: logits read + targets read = 2 * numel * sizeof(dtype);
// the 4-byte loss and the per-block partial sums in the workspace are left out (a few KB).
// See bench_support.hpp for the timing method. Without a CUDA device the binary says so and exits 0
// (1 when FUSEDLOSS_REQUIRE_GPU is set, as the GPU tests do).
#include <cinttypes>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <vector>

#include "bench_support.hpp"
#include "fusedloss/fusedloss.h"

namespace fusedloss::bench {
namespace {

enum class loss_kind { bce, sigmoid_focal, mse };
enum class which_call { forward_backward, forward };

const char* loss_name(loss_kind k) {
  switch (k) {
    case loss_kind::bce:
      return "bce";
    case loss_kind::sigmoid_focal:
      return "sigmoid_focal";
    default:
      return "mse";
  }
}

const char* call_name(which_call c) {
  return c == which_call::forward_backward ? "forward_backward" : "forward";
}

struct shape {
  const char* name;   // in the benchmark's name: no regex metacharacters
  const char* label;  // for people
  int64_t numel;
  int64_t classes;  // C of the (M / C, C) view; 1 when there is none
};

const shape kShapes[] = {
    {"n16777216", "2^24", int64_t{1} << 24, 1},
    {"det100000x80", "100000x80", int64_t{100000} * 80, 80},
    {"n268435456", "2^28", int64_t{1} << 28, 1},
};

constexpr fusedloss_dtype kDtypes[] = {FUSEDLOSS_FLOAT32, FUSEDLOSS_BFLOAT16, FUSEDLOSS_FLOAT16};
constexpr loss_kind kLosses[] = {loss_kind::bce, loss_kind::sigmoid_focal, loss_kind::mse};
constexpr which_call kCalls[] = {which_call::forward_backward, which_call::forward};

struct element_case {
  loss_kind kind;
  fusedloss_dtype dtype;
  which_call call;
  shape where;

  std::string name() const {
    return std::string(loss_name(kind)) + "/" + dtype_label(dtype) + "/" + call_name(call) + "/" +
           where.name;
  }
  std::string label() const {
    return std::string(loss_name(kind)) + " " + dtype_label(dtype) + " " + call_name(call) + " " +
           where.label;
  }
  double bytes() const {
    const int arrays = call == which_call::forward_backward ? 3 : 2;
    return static_cast<double>(arrays) * static_cast<double>(where.numel) *
           static_cast<double>(dtype_bytes(dtype));
  }
};

std::string status_text(const char* function, fusedloss_status s, const fusedloss_error& err) {
  std::string text = std::string(function) + ": " + fusedloss_status_string(s);
  if (err.message[0] != '\0') text += std::string(" (") + err.message + ")";
  return text;
}

// One loss's entry points, so that one template runs all three.
template <class Params>
struct loss_api {
  void (*init)(Params*);
  fusedloss_status (*workspace_size)(const Params*, size_t*, fusedloss_error*);
  fusedloss_status (*forward)(const Params*, void*, size_t, void*, fusedloss_error*);
  fusedloss_status (*forward_backward)(const Params*, void*, size_t, void*, fusedloss_error*);
};

void set_classes(fusedloss_bce_params& p, int64_t classes) { p.num_classes = classes; }
template <class Params>
void set_classes(Params&, int64_t) {}

template <class Params>
void run_element(benchmark::State& state, const element_case& c, const loss_api<Params>& api) {
  session& s = session::get();
  state.SetLabel(c.label());
  if (!s.error().empty()) {
    skip(state, s.error());
    return;
  }
  device_inputs& in = device_inputs::get();
  if (std::string why = in.prepare(c.dtype, c.where.numel); !why.empty()) {
    skip(state, why);
    return;
  }
  device_buffer loss;
  if (const cudaError_t e = loss.allocate(sizeof(float)); e != cudaSuccess) {
    skip(state, cuda_error_text(e, "cudaMalloc of the loss"));
    return;
  }

  Params p;
  api.init(&p);
  p.device = FUSEDLOSS_DEVICE_CUDA;
  p.numel = c.where.numel;
  set_classes(p, c.where.classes);
  p.logits = in.logits();
  p.logits_dtype = c.dtype;
  p.targets = in.targets();
  p.targets_dtype = c.dtype;
  p.reduction = FUSEDLOSS_REDUCTION_MEAN;
  p.loss = loss.data();
  p.grad_logits = c.call == which_call::forward_backward ? in.grad() : nullptr;

  fusedloss_error err{};
  size_t workspace_bytes = 0;
  if (const fusedloss_status st = api.workspace_size(&p, &workspace_bytes, &err);
      st != FUSEDLOSS_SUCCESS) {
    skip(state, status_text("workspace_size", st, err));
    return;
  }
  device_buffer workspace;
  if (const cudaError_t e = workspace.allocate(workspace_bytes); e != cudaSuccess) {
    skip(state, cuda_error_text(e, "cudaMalloc of the workspace"));
    return;
  }

  const auto function = c.call == which_call::forward_backward ? api.forward_backward : api.forward;
  const char* function_name = call_name(c.call);
  const auto call = [&]() -> std::string {
    const fusedloss_status st = function(&p, workspace.data(), workspace.bytes(), s.stream(), &err);
    return st == FUSEDLOSS_SUCCESS ? std::string() : status_text(function_name, st, err);
  };

  const double seconds = timed_loop(state, call);
  if (seconds < 0) return;

  if (!record_loss(state, static_cast<const float*>(loss.data()))) return;
  set_counters(state, c.bytes(), seconds, s.copy_bandwidth());
}

void element_benchmark(benchmark::State& state, const element_case& c) {
  switch (c.kind) {
    case loss_kind::bce:
      run_element(
          state, c,
          loss_api<fusedloss_bce_params>{fusedloss_bce_params_init, fusedloss_bce_workspace_size,
                                         fusedloss_bce_forward, fusedloss_bce_forward_backward});
      break;
    case loss_kind::sigmoid_focal:
      run_element(state, c,
                  loss_api<fusedloss_sigmoid_focal_params>{
                      fusedloss_sigmoid_focal_params_init, fusedloss_sigmoid_focal_workspace_size,
                      fusedloss_sigmoid_focal_forward, fusedloss_sigmoid_focal_forward_backward});
      break;
    default:
      run_element(
          state, c,
          loss_api<fusedloss_mse_params>{fusedloss_mse_params_init, fusedloss_mse_workspace_size,
                                         fusedloss_mse_forward, fusedloss_mse_forward_backward});
  }
}

// The reference: cudaMemcpyAsync device to device of kCopyBytes, counted as read + write.
void copy_benchmark(benchmark::State& state) {
  session& s = session::get();
  state.SetLabel("device-to-device copy " + std::to_string(kCopyBytes >> 20) + " MiB");
  if (!s.error().empty()) {
    skip(state, s.error());
    return;
  }
  // Leave room: the copy's two buffers need not coexist with the element inputs.
  device_inputs::get().release();
  device_buffer from, to;
  cudaError_t e = from.allocate(kCopyBytes);
  if (e == cudaSuccess) e = to.allocate(kCopyBytes);
  const int64_t n = static_cast<int64_t>(kCopyBytes / sizeof(float));
  if (e == cudaSuccess)
    e = upload_and_wait(host_values::get().logits(n), n, FUSEDLOSS_FLOAT32, from.data());
  if (e != cudaSuccess) {
    skip(state, cuda_error_text(e, "copy buffers"));
    return;
  }
  const auto copy = [&]() -> std::string {
    const cudaError_t ce =
        cudaMemcpyAsync(to.data(), from.data(), kCopyBytes, cudaMemcpyDeviceToDevice, s.stream());
    return ce == cudaSuccess ? std::string() : cuda_error_text(ce, "cudaMemcpyAsync");
  };
  const double seconds = timed_loop(state, copy);
  if (seconds <= 0) return;
  const double bytes = 2.0 * static_cast<double>(kCopyBytes);
  // The last run of this row is the one reported, and the reference for the rows after it.
  s.set_copy_bandwidth(bytes * static_cast<double>(state.iterations()) / seconds);
  set_counters(state, bytes, seconds, s.copy_bandwidth());
}

void register_benchmarks() {
  benchmark::RegisterBenchmark("copy", copy_benchmark)
      ->UseManualTime()
      ->Unit(benchmark::kMicrosecond);
  for (const shape& where : kShapes) {
    for (fusedloss_dtype dtype : kDtypes) {
      for (loss_kind kind : kLosses) {
        for (which_call call : kCalls) {
          const element_case c{kind, dtype, call, where};
          benchmark::RegisterBenchmark(
              c.name().c_str(), [c](benchmark::State& state) { element_benchmark(state, c); })
              ->UseManualTime()
              ->Unit(benchmark::kMicrosecond);
        }
      }
    }
  }
  register_row_benchmarks();  // bench/row_losses.cpp: after the copy and element rows
}

void add_context() {
  const session& s = session::get();
  const cudaDeviceProp& prop = s.properties();
  int runtime = 0, driver = 0;
  cudaRuntimeGetVersion(&runtime);
  cudaDriverGetVersion(&driver);
  benchmark::AddCustomContext("gpu", prop.name);
  benchmark::AddCustomContext("gpu_sms", std::to_string(prop.multiProcessorCount));
  benchmark::AddCustomContext("gpu_memory_bytes", std::to_string(prop.totalGlobalMem));
  benchmark::AddCustomContext("gpu_l2_bytes", std::to_string(s.l2_bytes()));
  benchmark::AddCustomContext("l2_flush_bytes", std::to_string(s.flush_bytes()));
  benchmark::AddCustomContext("cuda_runtime", std::to_string(runtime));
  benchmark::AddCustomContext("cuda_driver", std::to_string(driver));
  benchmark::AddCustomContext("copy_bytes", std::to_string(kCopyBytes));
  benchmark::AddCustomContext("bytes_counter",
                              "bytes that must move per call (inputs read once, outputs written "
                              "once), per second of event time, decimal");
}

}  // namespace
}  // namespace fusedloss::bench

int main(int argc, char** argv) {
  using namespace fusedloss::bench;
  benchmark::Initialize(&argc, argv);
  if (benchmark::ReportUnrecognizedArguments(argc, argv)) return 1;
  if (!fusedloss_built_with_cuda()) {
    std::fprintf(stderr,
                 "fusedloss_bench: this fusedloss was built without CUDA: nothing to time\n");
    return std::getenv("FUSEDLOSS_REQUIRE_GPU") != nullptr ? 1 : 0;
  }
  session& s = session::get();
  if (!s.error().empty()) {
    std::fprintf(
        stderr, "fusedloss_bench: %s: no benchmark can run, none was run%s\n", s.error().c_str(),
        std::getenv("FUSEDLOSS_REQUIRE_GPU") != nullptr ? " (FUSEDLOSS_REQUIRE_GPU is set: failing)"
                                                        : "");
    return std::getenv("FUSEDLOSS_REQUIRE_GPU") != nullptr ? 1 : 0;
  }
  add_context();
  register_benchmarks();
  benchmark::RunSpecifiedBenchmarks();
  device_inputs::get().release();
  release_row_inputs();
  s.release();
  benchmark::Shutdown();
  if (failures() > 0) {
    std::fprintf(stderr, "fusedloss_bench: %d benchmark run(s) failed (see error_message)\n",
                 failures());
    return 1;
  }
  return 0;
}
