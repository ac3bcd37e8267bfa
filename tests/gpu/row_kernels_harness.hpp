// The harness of the row-loss kernels' tests (test_row_*.cpp): cross-entropy with class-index and
// probability targets and softmax focal, against the CPU reference on the same dtype-rounded
// inputs. One problem (row_case), its inputs, the tolerances, the calls (through the public C API
// where the automatic choice reaches a tier, or forced through kernels::run_row_loss on a
// hand-built row_problem, like host/cuda_dispatch.cpp builds), the outputs and their comparison,
// and the drivers that run a case on the reference and the GPU. Outputs start poisoned (every byte
// 0xFF, a NaN), so a value a kernel fails to write fails the comparison, and padding columns (and,
// in place, the logits' padding) must keep their bytes.
//
// The tests that take more than a few seconds on a GPU (10^6-10^9 logits, and a CPU reference to
// match) are those of test_row_large.cpp and test_row_huge.cpp, which make part of the
// fusedloss_gpu_slow_tests executable (CTest label `slow`); the others are fusedloss_gpu_tests'.
#pragma once

#include <cuda_runtime_api.h>
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <iomanip>
#include <limits>
#include <random>
#include <sstream>
#include <string>
#include <utility>
#include <vector>

#include "checks.hpp"
#include "fusedloss/fusedloss.hpp"
#include "gpu_support.hpp"
#include "row_losses.hpp"

namespace fusedloss::gpu_tests::row_kernels {

using checks::buffer;
using kernels::row_tier;

constexpr double kInf = std::numeric_limits<double>::infinity();
const double kNaN = std::numeric_limits<double>::quiet_NaN();
constexpr int64_t kCounterStart = 7;  // invalid_target_count before a call: calls add to it

// ------------------------------------------------------------------------------------------------
// Tolerances, derived once. The kernels compute in float32 (expf, tanhf, powf, expm1f, each within
// a few float32 ulps; 2^x and log2 on the special-function unit, within 2 ulps and 2^-22.6
// absolute); the reference in double from the same stored inputs, rounding once to the output
// dtype.
//
// t_r, the float32 error budget of row r. The kernels' LSE is max + ln(sum), the sum kept in base 2
// relative to max log2 e rounded (whose rounding error the log takes back out exactly): the final
// addition alone is off by up to half a float32 ulp of |LSE| (2^-24 |LSE|), the log by ~1e-7 and
// its scaling by an ulp of a value below ~20 (~1e-6), and the sum of exponentials by a relative
// error that one thread accumulates over the elements it folds in sequence (rounding errors of
// random sign, ~sqrt(n) 2^-24: ~1e-6 for the up to 1000 elements a thread folds in these tests).
// Every p_j = exp(x_j - LSE) inherits the LSE's absolute error as a relative one (plus the rounding
// of x_j - LSE, < 1e-6 where p_j matters; the warp tier's p_j, a kept exponential over the sum,
// shares the sum's error and not the LSE's), and a soft-capped logit s tanh(x/s) carries a few ulps
// of s. So
//     t_r = 8e-6 + 2^-22 (max(1, |LSE_r|) + softcap)
// bounds both the LSE's absolute error and the relative error of every p_j: a factor 4 over the
// half-ulp terms, ~5 over the accumulated ones. At |LSE| = 1e4 (the +-1e4 and shifted rows) it is
// 2.4e-3: float32 holds an LSE near 1e4 only to 2^-11 = 4.9e-4, which is float32's limit, not
// slack.
constexpr double kBudgetFloor = 8e-6;
inline double row_budget(double lse, double softcap) {
  const double magnitude = std::isfinite(lse) ? std::max(1.0, std::fabs(lse)) : 1.0;
  return kBudgetFloor + std::ldexp(magnitude + softcap, -22);
}
// K_r, the row's coefficient scale. Every gradient is (P p_j - A [j = y] - B c_j) cap'(x_j) with
// |P|, |A|, |B c_j| <= |g_r| W G (1 + 2 lambda |LSE_r|): g_r the row's upstream gradient (the
// mean's 1/D included; 0 for an ignored row or an empty mean, whose gradient is exactly 0), W =
// max(1, largest class weight / alpha), G = 1 + gamma for softmax focal (|alpha m^gamma (1 - gamma
// u r)| <= alpha (1 + gamma)), 1 otherwise. The true-class term P p_y - A cancels (a confident row
// has p_y - 1 ~ 1e-6 while p_y carries an absolute error of t_r), so the absolute error is K_r t_r,
// not a fraction of the largest gradient; the same holds for softmax focal's m^gamma at small m.
//
// Gradient (logits' dtype): |got - want| <= floor + K_r t_r + (ulp + t_r) |want|, ulp one unit in
// the last place of the dtype (2^-23, 2^-10, 2^-7: the float32 gradient and the exact one may round
// to neighbours) and floor float16's subnormal spacing 2^-24 (checks::rounding_tolerance gives
// both). Per-row loss and z-loss (float32): the LSE's absolute error enters additively (lse - x_y,
// lambda LSE^2 with slope 2 lambda LSE, softmax focal's lp with slope <= alpha (1 + gamma)), so
// atol = W G (1 + 2 lambda |LSE_r|) t_r; rtol covers float32's relative errors, the smoothing sum's
// accumulation included (its terms share one sign).
constexpr double kLossRtol = 8e-6;
// LSE (float32): atol t_r.
// Reduced loss and z-loss: every row loss is >= 0 (positive weights), so nothing cancels: the
// per-row bounds are summed and divided by the normaliser, and both sides' final rounding of a
// double sum to float32 adds 2^-23 relative.
const double kReducedRtol = kLossRtol + std::ldexp(1.0, -23);

// ------------------------------------------------------------------------------------------------
// One problem.

enum class loss_kind { cross_entropy, probability, softmax_focal };
// What the logits hold besides uniform values in [-6, 6).
enum class pattern {
  random,
  masked,         // -inf on ~25% of a row's non-target classes (every one on row 0)
  masked_target,  // -inf on the target of every other row
  non_finite,     // per row r % 4: -, a NaN at class 0, a +inf, every logit -inf (then ignored)
  nan_last,       // a NaN at class C - 1 of every row
  extreme,        // +-1e4 on a few classes of each row
  shifted,        // every logit + 1e4
};

// The names a case's description gives (a call's is fusedloss::name's).
const char* name(loss_kind k);
const char* name(pattern p);
using kernels::name;

struct row_case {
  loss_kind kind = loss_kind::cross_entropy;
  int64_t batch = 3;
  int64_t num_classes = 33;
  int64_t spatial = 1;
  int64_t row_padding = 0;    // row_stride = C*S + row_padding (0: the default stride, passed as 0)
  int64_t grad_padding = -1;  // grad_row_stride = C*S + grad_padding; -1: the logits' (passed as 0)
  fusedloss_dtype index_dtype = FUSEDLOSS_INT64;
  bool float32_targets = false;  // probability targets in float32 rather than the logits' dtype
  fusedloss_reduction reduction = FUSEDLOSS_REDUCTION_MEAN;
  fusedloss_empty_mean empty_mean = FUSEDLOSS_EMPTY_MEAN_NAN;
  fusedloss::call call = fusedloss::call::forward_backward;
  bool weight = false;       // cross-entropy's class weights, or softmax focal's alpha
  bool zero_weight = false;  // every weight 0 (the empty mean of a zero total weight)
  int64_t ignore_index = -100;
  double ignored = 0.0;  // fraction of rows whose target is ignore_index
  double invalid = 0.0;  // fraction of rows whose target is neither ignore_index nor a class
  double label_smoothing = 0.0;
  double z_loss = 0.0;
  bool z_loss_out = false;
  double softcap = 0.0;
  double gamma = 2.0;
  bool lse_out = true;     // forward calls write the LSE
  bool saved_lse = false;  // backward reads the forward's LSE (the reference's, on both sides)
  bool loss_out = true;    // forward_backward writes the loss
  float grad_scale = 1.0f;
  bool grad_scale_ptr = false;  // forward_backward also scales by *grad_scale_ptr = 1.5
  bool in_place = false;        // grad_logits == logits
  // Elements logits and gradient start past their 16-byte-aligned allocations: 1 misaligns
  // row 0 (a slice such as x[:, 1:]), and every row with it when the stride is whole vectors.
  int64_t lead = 0;
  pattern logits = pattern::random;
  row_tier tier = row_tier::automatic;  // forced: kernels::run_row_loss on a hand-built problem
  // Rows in [sparse_begin, sparse_end) are ignored and hold cheap logits: large grids at a
  // reference cost of a few rows.
  int64_t sparse_begin = 0;
  int64_t sparse_end = 0;

  std::string describe() const {
    std::ostringstream o;
    o << name(kind) << " N=" << batch << " C=" << num_classes << " S=" << spatial
      << " padding=" << row_padding << "/" << grad_padding << " lead=" << lead
      << " tier=" << name(tier) << " call=" << name(call)
      << " reduction=" << fusedloss_reduction_string(reduction)
      << " empty_mean=" << (empty_mean == FUSEDLOSS_EMPTY_MEAN_ZERO ? "zero" : "nan") << " targets="
      << (kind == loss_kind::probability ? (float32_targets ? "float32" : "logits'")
                                         : fusedloss_dtype_string(index_dtype))
      << " weight=" << weight << (zero_weight ? "(zero)" : "") << " ignore_index=" << ignore_index
      << " ignored=" << ignored << " invalid=" << invalid << " eps=" << label_smoothing
      << " z_loss=" << z_loss << (z_loss_out ? "(out)" : "") << " softcap=" << softcap
      << " gamma=" << gamma << " lse_out=" << lse_out << " saved_lse=" << saved_lse
      << " loss_out=" << loss_out << " scale=" << grad_scale << (grad_scale_ptr ? "*1.5" : "")
      << " in_place=" << in_place << " logits=" << name(logits) << " sparse=[" << sparse_begin
      << ", " << sparse_end << ")";
    return o.str();
  }
};

inline bool index_targets(const row_case& c) { return c.kind != loss_kind::probability; }
inline int64_t rows_of(const row_case& c) { return c.batch * c.spatial; }
inline int64_t stride_of(const row_case& c) { return c.num_classes * c.spatial + c.row_padding; }
inline int64_t grad_stride_of(const row_case& c) {
  return c.in_place || c.grad_padding < 0 ? stride_of(c)
                                          : c.num_classes * c.spatial + c.grad_padding;
}
inline size_t loss_count(const row_case& c) {
  return c.reduction == FUSEDLOSS_REDUCTION_NONE ? static_cast<size_t>(rows_of(c)) : 1;
}
// Element `cls` of row r = (n, s) in an array with sample stride `stride`.
inline size_t at(const row_case& c, int64_t r, int64_t stride, int64_t cls) {
  return static_cast<size_t>((r / c.spatial) * stride + cls * c.spatial + r % c.spatial);
}
inline fusedloss_dtype targets_dtype_of(const row_case& c, fusedloss_dtype dtype) {
  if (index_targets(c)) return c.index_dtype;
  return c.float32_targets ? FUSEDLOSS_FLOAT32 : dtype;
}
inline bool sparse_row(const row_case& c, int64_t r) {
  return r >= c.sparse_begin && r < c.sparse_end;
}

// ------------------------------------------------------------------------------------------------
// Inputs, the same bytes for the reference and the GPU.

struct inputs {
  buffer logits, targets, weight, grad_loss, scale, saved_lse;
  std::vector<double> x;   // the logits as stored (rounded to the dtype), padding included
  std::vector<int64_t> y;  // class-index targets as stored
  int64_t invalid = 0;     // targets neither ignore_index nor in [0, C)
};

inputs make_inputs(const row_case& c, fusedloss_dtype dtype, std::mt19937_64& rng);

// Whether row r adds to the loss and the mean's normaliser (not ignored, not out of range).
bool counted(const row_case& c, const inputs& in, int64_t r);

// The tolerances' per-row quantities (see the top of the file).
struct row_bounds {
  std::vector<double> t;         // t_r
  std::vector<double> scale;     // W G (1 + 2 lambda |LSE_r|)
  std::vector<double> upstream;  // |g_r|; 0 where the gradient is exactly 0
  double normaliser = 0;         // the mean's D
};

row_bounds bounds_of(const row_case& c, const inputs& in);

// ------------------------------------------------------------------------------------------------
// Calls: the public API on either device, or (forced tiers) run_row_loss.

// Where a run's arrays live: host buffers for the reference, device copies for the GPU.
struct bound {
  const void* logits;
  const void* targets;
  const float* weight;
  const float* grad_loss;
  const float* scale;
  float* lse;
  float* loss;
  float* z;
  void* grad;
  int64_t* counter;
};

// The row_problem host/cuda_dispatch.cpp would build for the case's call, with its forced tier.
kernels::row_problem make_problem(const row_case& c, fusedloss_dtype dtype, const bound& b);

::testing::AssertionResult gpu_workspace_bytes(const row_case& c, fusedloss_dtype dtype,
                                               const bound& b, size_t* bytes);

// Enqueues the case's call on `stream`: the public API, or run_row_loss for a forced tier (after
// checking that row_tier_for reports it).
::testing::AssertionResult launch(const row_case& c, fusedloss_dtype dtype, const bound& b,
                                  void* workspace, size_t bytes, cudaStream_t stream);

// ------------------------------------------------------------------------------------------------
// Outputs.

struct outputs {
  buffer loss, lse, z, grad;
  int64_t counter = 0;
};

outputs poisoned_outputs(const row_case& c, fusedloss_dtype dtype);

// The reference's outputs (not in place: the same values; the GPU's padding is checked apart).
outputs run_reference(const row_case& c, fusedloss_dtype dtype, const inputs& in);

// The reference forward's LSE, for a backward that reads it (on both sides).
buffer reference_lse(const row_case& c, fusedloss_dtype dtype, const inputs& in);

// Device copies of a case's inputs and its poisoned outputs.
struct device_arrays {
  size_t lead;  // bytes before the first logit and the first gradient element
  device_buffer logits, targets, weight, grad_loss, scale, lse, loss, z, grad, counter;

  device_arrays(const row_case& c, const inputs& in, fusedloss_dtype dtype)
      : lead(static_cast<size_t>(c.lead) * element_bytes(dtype)),
        logits(in.logits, lead),
        targets(in.targets),
        weight(in.weight),
        grad_loss(in.grad_loss),
        scale(in.scale),
        lse(static_cast<size_t>(rows_of(c)) * sizeof(float)),
        loss(loss_count(c) * sizeof(float)),
        z(loss_count(c) * sizeof(float)),
        grad(c.in_place
                 ? 0
                 : lead + static_cast<size_t>(c.batch * grad_stride_of(c)) * element_bytes(dtype)),
        counter(sizeof(int64_t)) {}

  // Poisons the outputs (in place: restores the logits), loads a saved LSE, sets the counter to
  // kCounterStart, and waits, so that work on any stream sees it.
  void poison(const row_case& c, const inputs& in) {
    for (const device_buffer* b : {&loss, &z, &grad, &lse}) {
      if (b->bytes() > 0) cudaMemset(b->data(), 0xFF, b->bytes());
    }
    if (c.call == fusedloss::call::backward && c.saved_lse && lse.bytes() > 0) {
      cudaMemcpy(lse.data(), in.saved_lse.data(), lse.bytes(), cudaMemcpyHostToDevice);
    }
    if (c.in_place && logits.bytes() > 0) {
      cudaMemcpy(logits.at(lead), in.logits.data(), logits.bytes() - lead, cudaMemcpyHostToDevice);
    }
    const int64_t start = kCounterStart;
    cudaMemcpy(counter.data(), &start, sizeof start, cudaMemcpyHostToDevice);
    cudaDeviceSynchronize();
  }

  bound bind(const row_case& c) const {
    return {logits.at(lead),
            targets.data(),
            c.weight ? static_cast<const float*>(weight.data()) : nullptr,
            static_cast<const float*>(grad_loss.data()),
            static_cast<const float*>(scale.data()),
            static_cast<float*>(lse.data()),
            static_cast<float*>(loss.data()),
            static_cast<float*>(z.data()),
            c.in_place ? logits.at(lead) : grad.at(lead),
            static_cast<int64_t*>(counter.data())};
  }

  // Everything the GPU wrote; the counter is read and cleared through the public API.
  outputs download(const row_case& c, fusedloss_dtype dtype, cudaStream_t stream) const {
    outputs out = poisoned_outputs(c, dtype);
    loss.download(out.loss);
    lse.download(out.lse);
    z.download(out.z);
    (c.in_place ? logits : grad).download(out.grad, lead);
    fusedloss_error err{};
    EXPECT_EQ(fusedloss_read_and_clear_counter(static_cast<int64_t*>(counter.data()),
                                               FUSEDLOSS_DEVICE_CUDA, stream, &out.counter, &err),
              FUSEDLOSS_SUCCESS)
        << err.message;
    int64_t again = -1;
    EXPECT_EQ(fusedloss_read_and_clear_counter(static_cast<int64_t*>(counter.data()),
                                               FUSEDLOSS_DEVICE_CUDA, stream, &again, &err),
              FUSEDLOSS_SUCCESS)
        << err.message;
    EXPECT_EQ(again, 0) << "fusedloss_read_and_clear_counter did not clear the counter";
    return out;
  }
};

// ------------------------------------------------------------------------------------------------
// Comparison.

// Reports values outside their tolerance: the first few in full, then how many in all.
class report {
 public:
  explicit report(std::string what) : what_(std::move(what)) {}
  report(const report&) = delete;
  report& operator=(const report&) = delete;
  ~report() {
    if (failures_ > kShown) ADD_FAILURE() << what_ << ": " << failures_ << " mismatches in all";
  }

  void value(size_t i, double got, double want, const checks::tolerance& t) {
    if (t.accepts(got, want) || ++failures_ > kShown) return;
    ADD_FAILURE() << std::setprecision(9) << what_ << "[" << i << "]: got " << got << ", want "
                  << want << " (atol " << t.atol << ", rtol " << t.rtol << ")";
  }
  void bytes(size_t i, const unsigned char* got, const unsigned char* want, size_t n) {
    if (std::memcmp(got, want, n) == 0 || ++failures_ > kShown) return;
    ADD_FAILURE() << what_ << "[" << i << "]: written, but must keep its bytes";
  }

 private:
  static constexpr int kShown = 5;
  std::string what_;
  int failures_ = 0;
};

void expect_matches(const row_case& c, fusedloss_dtype dtype, const inputs& in, const outputs& want,
                    const outputs& got);

// ------------------------------------------------------------------------------------------------
// Drivers.

struct device_facts {
  int major = 0;
  int sms = 0;
  int shared_optin = 0;  // dynamic shared memory a block may opt into
};

device_facts facts();

bool clusters_available();

// Whether a forced tier can hold the case (run_row_loss refuses it otherwise).
// What a forced tier holds (make_plan's rules): the warp tier, a row of up to 32 lanes x 4 vectors
// when every row is whole 16-byte vectors on 16-byte boundaries, else 32 x 16 elements, and the
// backward from a saved LSE; block and cluster, no saved LSE (they stage what they fold).
bool tier_accepts(const row_case& c, fusedloss_dtype dtype);

// A forced tier the GPU cannot run is refused before anything is launched.
void expect_refused(const kernels::row_problem& p, bool workspace_refused = true);

uint64_t fresh_seed();

// Runs the case on the reference and the GPU and compares every output.
void expect_matches_reference(const row_case& c, fusedloss_dtype dtype);

// One layout per tier, at a size where that tier runs: warp (C = 33), block (C = 4097), cluster
// forced at C = 1000 (where warp would run; refused before sm_90), two_pass forced at C = 1000,
// (N, C, S) with S = 5 (two_pass over strided rows: too few positions for a thread each) and
// spatial forced there. Probability targets and a backward from the saved LSE run two_pass on the
// automatic layouts, and skip the forced on-chip ones, which cannot hold them.
struct layout {
  int64_t num_classes, batch, spatial;
  row_tier tier;
};
constexpr layout kLayouts[] = {{33, 5, 1, row_tier::automatic}, {4097, 3, 1, row_tier::automatic},
                               {1000, 3, 1, row_tier::cluster}, {1000, 4, 1, row_tier::two_pass},
                               {33, 3, 5, row_tier::automatic}, {33, 3, 5, row_tier::spatial}};

void on_every_layout(row_case c, fusedloss_dtype dtype);

constexpr fusedloss_reduction kReductions[] = {FUSEDLOSS_REDUCTION_NONE, FUSEDLOSS_REDUCTION_SUM,
                                               FUSEDLOSS_REDUCTION_MEAN};

std::vector<std::vector<unsigned char>> raw(const device_arrays& dev);

template <class Dtype>
class RowKernels : public ::testing::Test {
 protected:
  static constexpr fusedloss_dtype dtype = Dtype::value;
  void SetUp() override { FUSEDLOSS_REQUIRE_GPU_OR_SKIP(); }
};
TYPED_TEST_SUITE(RowKernels, Dtypes, DtypeNames);

}  // namespace fusedloss::gpu_tests::row_kernels
