// The harness of vocabulary-parallel cross-entropy's GPU tests (test_vocab_parallel_*.cpp), of
// the shard calls on the GPU. W ranks (W in 1..4, uneven slices, some one class wide) are
// simulated in one process: each rank's partial runs on the GPU, the summaries' MAX and SUM
// all-reduces run on the host (in float32, in rank order, as a collective would), and rescale and
// finish run on the GPU again. The results are compared with
//   (a) the same steps on the CPU path (the double-precision reference, host buffers), and
//   (b) the whole-row reference fusedloss_cross_entropy_forward_backward on the concatenated
//       logits: loss, LSE, z-loss and the concatenated gradient.
// Outputs start poisoned (every byte 0xFF, a NaN), so a value a kernel fails to write fails the
// comparison, and padding columns (in place: the logits' own padding) must keep their bytes.
#pragma once

#include <gtest/gtest.h>

#include <cstdint>
#include <limits>
#include <numeric>
#include <random>
#include <sstream>
#include <string>
#include <vector>

#include "checks.hpp"
#include "fusedloss/fusedloss.h"
#include "gpu_support.hpp"

namespace fusedloss::gpu_tests::vocab_parallel {

using checks::buffer;

const double kNaN = std::numeric_limits<double>::quiet_NaN();
constexpr int64_t kCounterStart = 7;  // invalid_target_count before finish: finish adds to it
constexpr int kFields = FUSEDLOSS_SHARD_SUMMARY_FIELDS;

// ------------------------------------------------------------------------------------------------
// One problem.

struct vp_case {
  int64_t batch = 12;
  std::vector<int64_t> widths = {9, 1, 14, 13};  // the ranks' slices, in vocabulary order
  int64_t row_padding = 0;                       // row_stride = width + row_padding (0: default)
  int64_t lead = 0;        // elements the logits start past their aligned allocation (GPU)
  int64_t grad_lead = -1;  // the gradient's; -1: lead
  fusedloss_dtype index_dtype = FUSEDLOSS_INT64;
  fusedloss_reduction reduction = FUSEDLOSS_REDUCTION_MEAN;
  fusedloss_empty_mean empty_mean = FUSEDLOSS_EMPTY_MEAN_NAN;
  bool weight = false;
  int64_t ignore_index = -100;
  double ignored = 0.0;  // fraction of rows whose target is ignore_index
  double invalid = 0.0;  // fraction of rows whose target is out of [0, V) and not ignore_index
  double label_smoothing = 0.0;
  double z_loss = 0.0;
  bool z_loss_out = false;
  double softcap = 0.0;
  bool lse_out = true;
  bool loss_out = true;
  bool grad = true;  // finish writes the gradient (else: loss only)
  float grad_scale = 1.0f;
  bool grad_scale_ptr = false;  // also times *grad_scale_ptr = 1.5
  bool in_place = false;        // grad_logits == logits
  // Row 1: a NaN in the last rank's slice; row 2: a +inf in rank 0's; row 3: every logit of the
  // last rank's slice -inf; row 4: -inf on a third of its classes, the target's too.
  bool non_finite = false;

  int64_t vocab() const { return std::accumulate(widths.begin(), widths.end(), int64_t{0}); }
  int ranks() const { return static_cast<int>(widths.size()); }
  int64_t start(int k) const {
    return std::accumulate(widths.begin(), widths.begin() + k, int64_t{0});
  }
  int64_t stride(int k) const { return widths[static_cast<size_t>(k)] + row_padding; }
  size_t loss_count() const {
    return reduction == FUSEDLOSS_REDUCTION_NONE ? static_cast<size_t>(batch) : 1;
  }
  std::string describe() const {
    std::ostringstream o;
    o << "N=" << batch << " widths={";
    for (size_t k = 0; k < widths.size(); ++k) o << (k ? "," : "") << widths[k];
    o << "} padding=" << row_padding << " lead=" << lead << "/" << grad_lead
      << " targets=" << fusedloss_dtype_string(index_dtype)
      << " reduction=" << fusedloss_reduction_string(reduction)
      << " empty_mean=" << (empty_mean == FUSEDLOSS_EMPTY_MEAN_ZERO ? "zero" : "nan")
      << " weight=" << weight << " ignore_index=" << ignore_index << " ignored=" << ignored
      << " invalid=" << invalid << " eps=" << label_smoothing << " z_loss=" << z_loss
      << (z_loss_out ? "(out)" : "") << " softcap=" << softcap << " lse_out=" << lse_out
      << " loss_out=" << loss_out << " grad=" << grad << " scale=" << grad_scale
      << (grad_scale_ptr ? "*1.5" : "") << " in_place=" << in_place << " non_finite=" << non_finite;
    return o.str();
  }
};

// The whole problem's inputs, rounded to their dtypes once; the ranks' slices are cut from them.
struct inputs {
  std::vector<double> x;  // (N, V), as stored
  std::vector<int64_t> y;
  std::vector<double> w;  // V class weights (1 without weight)
  buffer targets;
  int64_t invalid = 0;
};

inputs make_inputs(const vp_case& c, fusedloss_dtype dtype, std::mt19937_64& rng);

// Rank k's slice of the logits (padding NaN: a kernel that reads it turns its row NaN).
buffer slice_logits(const vp_case& c, const inputs& in, fusedloss_dtype dtype, int k);

// ------------------------------------------------------------------------------------------------
// The shard calls of every rank on one device, with the all-reduces on the host.

struct rank_outputs {
  buffer summary_partial;  // after partial, before any all-reduce
  buffer loss, lse, z, grad;
  int64_t counter = 0;
  fusedloss_status finish = FUSEDLOSS_SUCCESS;
};

struct shard_run {
  std::vector<rank_outputs> ranks;
  std::string failure;  // a refused call, or empty
};

shard_run run_shards(const vp_case& c, const inputs& in, fusedloss_dtype dtype, bool gpu);

// ------------------------------------------------------------------------------------------------
// Comparisons.

// Expects got ~ want element by element, naming the first few mismatches; `extra_atol`, when
// given, adds an absolute allowance per element.
void expect_close(const std::vector<double>& got, const std::vector<double>& want,
                  const checks::tolerance& tol, const std::string& what,
                  const std::vector<double>& extra_atol = {});

// Rank k's gradient rows (without padding).
std::vector<double> rows_of(const vp_case& c, const buffer& g, int k);

// Runs the case on both paths and the whole-row reference, and compares everything.
void check_case(const vp_case& c, fusedloss_dtype dtype, uint64_t seed);

template <class Dtype>
class VocabParallelKernels : public ::testing::Test {};
TYPED_TEST_SUITE(VocabParallelKernels, Dtypes, DtypeNames);

const fusedloss_reduction kReductions[] = {FUSEDLOSS_REDUCTION_NONE, FUSEDLOSS_REDUCTION_MEAN,
                                           FUSEDLOSS_REDUCTION_SUM};

}  // namespace fusedloss::gpu_tests::vocab_parallel
