// Benchmarks of the element losses' CUDA calls (BCE with logits, sigmoid focal, MSE), and the
// device-to-device copy that each result is compared with; main(), which picks the mode (CUDA, or
// the CPU reference: see mode.hpp).
//
// Rows: `copy` first (its bandwidth is the reference), then for each shape (2^24 elements, a
// detection-like 100000 anchors x 80 classes, 2^28 elements), dtype (float32, bfloat16, float16),
// loss and call (forward_backward, the fused training call; forward), then the element cases of
// bench/compare.py, forward_backward in float32 and bfloat16: sigmoid_focal at 2^20 anchors x 80
// classes (det1048576x80) and multi-label bce at 65536 x 1024 (multilabel65536x1024). All with
// reduction mean and soft targets in the logits' dtype (compare.py's focal case sums, and its
// targets are 0 or 1: the same bytes). Bytes that must move, per call:
// - forward_backward: logits read + targets read + gradient written = 3 * numel * sizeof(dtype);
// - forward: logits read + targets read = 2 * numel * sizeof(dtype);
// the 4-byte loss and the per-block partial sums in the workspace are left out (a few KB).
// See session.hpp for the timing method. With FUSEDLOSS_BENCH_DEVICE=cpu, or without a usable CUDA
// device, the same rows run on the CPU reference at small sizes (mode.hpp); without a
// device and with FUSEDLOSS_REQUIRE_GPU set (as gpu-check.sh runs it) or
// FUSEDLOSS_BENCH_DEVICE=cuda, the binary exits 1 instead.
#include <cinttypes>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <vector>

#include "calls.hpp"
#include "counters.hpp"
#include "fusedloss/fusedloss.hpp"
#include "inputs.hpp"
#include "memory.hpp"
#include "mode.hpp"
#include "registry.hpp"
#include "session.hpp"

namespace fusedloss::bench {
namespace {

enum class loss_kind { bce, sigmoid_focal, mse };

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
constexpr call kCalls[] = {call::forward_backward, call::forward};

struct element_case {
  loss_kind kind;
  fusedloss_dtype dtype;
  fusedloss::call call;
  shape where;

  /// The elements run: where.numel on the GPU, fewer rows of where.classes on the CPU.
  int64_t numel() const {
    return run_batch(where.numel / where.classes, where.classes) * where.classes;
  }
  std::string name() const {
    return std::string(loss_name(kind)) + "/" + dtype_label(dtype) + "/" + fusedloss::name(call) +
           "/" + where.name;
  }
  std::string label() const {
    return std::string(loss_name(kind)) + " " + dtype_label(dtype) + " " + fusedloss::name(call) +
           " " + size_label(where.label, where.numel / where.classes, where.classes);
  }
  double bytes() const {
    const int arrays = call == fusedloss::call::forward_backward ? 3 : 2;
    return static_cast<double>(arrays) * static_cast<double>(numel()) *
           static_cast<double>(dtype_bytes(dtype));
  }
};

void set_classes(fusedloss_bce_params& p, int64_t classes) { p.num_classes = classes; }
template <class Params>
void set_classes(Params&, int64_t) {}

template <class Params>
void run_element(benchmark::State& state, const element_case& c) {
  session& s = session::get();
  state.SetLabel(c.label());
  if (!s.error().empty()) {
    skip(state, s.error());
    return;
  }
  device_inputs& in = device_inputs::get();
  if (std::string why = in.prepare(c.dtype, c.numel()); !why.empty()) {
    skip(state, why);
    return;
  }
  device_buffer loss;
  if (const cudaError_t e = loss.allocate(sizeof(float)); e != cudaSuccess) {
    skip(state, cuda_error_text(e, "allocating the loss"));
    return;
  }

  Params p;
  c_api<Params>::init(&p);
  p.device = run_device();
  p.numel = c.numel();
  set_classes(p, c.where.classes);
  p.logits = in.logits();
  p.logits_dtype = c.dtype;
  p.targets = in.targets();
  p.targets_dtype = c.dtype;
  p.reduction = FUSEDLOSS_REDUCTION_MEAN;
  p.loss = loss.data();
  p.grad_logits = c.call == call::forward_backward ? in.grad() : nullptr;

  device_buffer workspace;
  if (!allocate_workspace(state, p, workspace)) return;
  fusedloss_error err{};

  const std::vector<c_step<Params>> steps = {step_of<Params>(c.call)};
  const double seconds =
      timed_loop(state, [&] { return call_in_order(steps, p, workspace, s.stream(), &err); });
  if (seconds < 0) return;

  if (!record_loss(state, static_cast<const float*>(loss.data()))) return;
  set_counters(state, c.bytes(), seconds, s.copy_bandwidth());
}

void element_benchmark(benchmark::State& state, const element_case& c) {
  switch (c.kind) {
    case loss_kind::bce:
      run_element<bce_params>(state, c);
      break;
    case loss_kind::sigmoid_focal:
      run_element<sigmoid_focal_params>(state, c);
      break;
    default:
      run_element<mse_params>(state, c);
  }
}

// The reference: cudaMemcpyAsync device to device of kCopyBytes (a memcpy of kCpuCopyBytes on the
// CPU), counted as read + write.
void copy_benchmark(benchmark::State& state) {
  session& s = session::get();
  state.SetLabel(on_cpu() ? "host memcpy " + std::to_string(copy_bytes() >> 10) + " KiB"
                          : "device-to-device copy " + std::to_string(copy_bytes() >> 20) + " MiB");
  if (!s.error().empty()) {
    skip(state, s.error());
    return;
  }
  // Leave room: the copy's two buffers need not coexist with the element inputs.
  device_inputs::get().release();
  copy_buffers buffers;
  if (std::string why = buffers.prepare(); !why.empty()) {
    skip(state, why);
    return;
  }
  const double seconds = timed_loop(state, [&] { return buffers.call(); });
  if (seconds <= 0) return;
  const double bytes = 2.0 * static_cast<double>(copy_bytes());
  // The last run of this row is the one reported, and the reference for the rows after it.
  s.set_copy_bandwidth(bytes * static_cast<double>(state.iterations()) / seconds);
  set_counters(state, bytes, seconds, s.copy_bandwidth());
}

void add_element(const element_case& c) {
  register_timed(c.name(), [c](benchmark::State& state) { element_benchmark(state, c); });
}

void register_benchmarks() {
  register_timed("copy", copy_benchmark);
  for (const shape& where : kShapes) {
    for (fusedloss_dtype dtype : kDtypes) {
      for (loss_kind kind : kLosses) {
        for (call which : kCalls) add_element({kind, dtype, which, where});
      }
    }
  }
  // bench/compare.py's element cases.
  const shape detection{"det1048576x80", "2^20x80", int64_t{80} << 20, 80};
  const shape multilabel{"multilabel65536x1024", "65536x1024", int64_t{1} << 26, 1024};
  for (fusedloss_dtype dtype : {FUSEDLOSS_FLOAT32, FUSEDLOSS_BFLOAT16}) {
    add_element({loss_kind::sigmoid_focal, dtype, call::forward_backward, detection});
    add_element({loss_kind::bce, dtype, call::forward_backward, multilabel});
  }
  register_row_benchmarks();  // bench/row_losses.cpp: after the copy and element rows
}

void add_context(const std::string& why_cpu) {
  benchmark::AddCustomContext("copy_bytes", std::to_string(copy_bytes()));
  if (on_cpu()) {
    benchmark::AddCustomContext("device", "cpu");
    benchmark::AddCustomContext("why_cpu", why_cpu);
    benchmark::AddCustomContext("cpu_max_elements", std::to_string(kCpuMaxElements));
    benchmark::AddCustomContext("bytes_counter",
                                "bytes that must move per call (inputs read once, outputs written "
                                "once), per second of wall-clock time, decimal");
    return;
  }
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
  benchmark::AddCustomContext("device", "cuda");
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
  // The mode: FUSEDLOSS_BENCH_DEVICE=cpu asks for the CPU reference; without a usable device the
  // binary falls back to it, unless FUSEDLOSS_REQUIRE_GPU is set or FUSEDLOSS_BENCH_DEVICE=cuda.
  const char* asked = std::getenv("FUSEDLOSS_BENCH_DEVICE");
  const std::string device = asked != nullptr ? asked : "";
  if (!device.empty() && device != "cpu" && device != "cuda") {
    std::fprintf(stderr, "fusedloss_bench: FUSEDLOSS_BENCH_DEVICE=%s: expected cpu or cuda\n",
                 device.c_str());
    return 1;
  }
  const bool require_gpu = device == "cuda" || std::getenv("FUSEDLOSS_REQUIRE_GPU") != nullptr;
  const std::string why_cpu = device == "cpu"                ? "FUSEDLOSS_BENCH_DEVICE=cpu"
                              : !fusedloss_built_with_cuda() ? "fusedloss was built without CUDA"
                                                             : why_no_gpu();
  if (!why_cpu.empty() && device != "cpu" && require_gpu) {
    std::fprintf(stderr, "fusedloss_bench: %s, and a GPU is required: none was run\n",
                 why_cpu.c_str());
    return 1;
  }
  on_cpu() = !why_cpu.empty();
  if (on_cpu())
    std::fprintf(stderr, "fusedloss_bench: %s: timing the CPU reference at small sizes\n",
                 why_cpu.c_str());
  session& s = session::get();
  if (!s.error().empty()) {
    std::fprintf(stderr, "fusedloss_bench: %s: no benchmark can run, none was run%s\n",
                 s.error().c_str(), require_gpu ? " (a GPU is required: failing)" : "");
    return require_gpu ? 1 : 0;
  }
  add_context(why_cpu);
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
