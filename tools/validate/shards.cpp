// `fusedloss validate`: the shard calls of vocabulary-parallel cross-entropy over several ranks,
// the all-reduces between them done on the host, and the whole rows' call they are checked
// against.
#include "shards.hpp"

#include <algorithm>
#include <cmath>
#include <stdexcept>

namespace fusedloss::validate {

namespace {

// Odd ranks' rows are one element longer than their slice (row_stride > num_classes), so that
// strides are exercised and padding the gradient must not write sits between rows.
int64_t shard_padding(size_t rank) { return int64_t(rank % 2); }

}  // namespace

outputs shards(const shard_problem& sp, memory& m, fusedloss_dtype dtype, const upstream& up) {
  const int64_t n = sp.base.batch, vocab = sp.base.num_classes;
  const size_t world = sp.widths.size();
  const fusedloss_dtype loss_dtype = loss_dtype_of(dtype);
  const void* targets = m.put(sp.in.targets);
  const float* scale = floats(m, buffer(FUSEDLOSS_FLOAT32, {up.grad_scale_in_memory}));
  const std::vector<double> weight = sp.in.weight.values();
  std::vector<fusedloss::cross_entropy_shard_params> ranks;
  std::vector<fusedloss::workspace> workspaces;
  std::vector<int64_t> starts;
  int64_t start = 0;
  for (size_t k = 0; k < world; start += sp.widths[k], ++k) {
    const int64_t width = sp.widths[k], stride = width + shard_padding(k);
    std::vector<double> shard(n * stride, NAN);
    for (int64_t r = 0; r < n; ++r) {
      for (int64_t c = 0; c < width; ++c) shard[r * stride + c] = sp.logits[r * vocab + start + c];
    }
    auto p = fusedloss::make_cross_entropy_shard_params();
    p.device = m.device();
    p.batch = n;
    p.num_classes = width;
    p.vocab_start = start;
    p.vocab_size = vocab;
    p.row_stride = stride;
    p.logits = m.put(buffer(dtype, shard));
    p.logits_dtype = dtype;
    p.targets = targets;
    p.targets_dtype = sp.in.targets.dtype();
    if (!weight.empty()) {
      p.weight = floats(
          m, buffer(FUSEDLOSS_FLOAT32, {weight.begin() + start, weight.begin() + start + width}));
    }
    p.ignore_index = sp.base.ignore_index;
    p.label_smoothing = sp.base.label_smoothing;
    p.z_loss = sp.base.z_loss;
    p.softcap = sp.base.softcap;
    p.reduction = sp.base.reduction;
    p.empty_mean = sp.base.empty_mean;
    p.summary = m.put(buffer::poisoned(loss_dtype, FUSEDLOSS_SHARD_SUMMARY_FIELDS * n));
    p.loss = m.put(buffer::poisoned(loss_dtype, sp.loss_count()));
    p.lse = m.put(buffer::poisoned(loss_dtype, n));
    p.grad_logits = m.put(buffer::poisoned(dtype, n * stride));
    p.grad_scale = up.grad_scale;
    p.grad_scale_ptr = scale;
    fusedloss::workspace ws{nullptr, fusedloss::workspace_size(p)};
    ws.data = m.scratch(ws.bytes);
    ranks.push_back(p);
    workspaces.push_back(ws);
    starts.push_back(start);
  }
  const auto step = [&](fusedloss::shard_step s) {
    for (size_t k = 0; k < world; ++k) fusedloss::run(ranks[k], s, workspaces[k]);
  };
  // The collectives, here on the host: in rank order and in the summaries' dtype, each addition
  // rounded as a collective's is; every rank receives the same values.
  const auto all_reduce = [&](int first, int fields, bool max) {
    std::vector<std::vector<double>> summaries(world);
    for (size_t k = 0; k < world; ++k) summaries[k] = m.get(ranks[k].summary);
    for (int64_t i = first * n; i < (first + fields) * n; ++i) {
      double v = max ? -INFINITY : 0.0;
      for (const std::vector<double>& s : summaries) {
        const double x = s[i];
        if (max) {
          v = std::isnan(v) || std::isnan(x) ? NAN : std::max(v, x);  // a NaN sticks
        } else {
          v = loss_dtype == FUSEDLOSS_FLOAT32 ? double(float(v) + float(x)) : v + x;
        }
      }
      for (std::vector<double>& s : summaries) s[i] = v;
    }
    for (size_t k = 0; k < world; ++k) ranks[k].summary = m.put(buffer(loss_dtype, summaries[k]));
  };
  step(fusedloss::shard_step::partial);
  all_reduce(FUSEDLOSS_SHARD_SUMMARY_MAX, 1, true);
  step(fusedloss::shard_step::rescale);
  all_reduce(FUSEDLOSS_SHARD_SUMMARY_SUM_EXP, FUSEDLOSS_SHARD_SUMMARY_SUMMED, false);
  step(fusedloss::shard_step::finish);

  outputs out{m.get(ranks[0].loss), std::vector<double>(n * vocab), m.get(ranks[0].lse)};
  std::vector<double> padding;
  for (size_t k = 0; k < world; ++k) {
    // finish computes them from the same summaries alone: the same bits on every rank.
    if (checks::max_abs_error(m.get(ranks[k].loss), out.loss) != 0 ||
        checks::max_abs_error(m.get(ranks[k].lse), out.lse) != 0) {
      throw std::runtime_error(format("rank %zu's loss or LSE differs from rank 0's", k));
    }
    const std::vector<double> g = m.get(ranks[k].grad_logits);
    const int64_t width = sp.widths[k], stride = ranks[k].row_stride;
    for (int64_t r = 0; r < n; ++r) {
      for (int64_t c = 0; c < stride; ++c) {
        const double x = g[r * stride + c];
        if (c < width) {
          out.grad[r * vocab + starts[k] + c] = x;
        } else {
          padding.push_back(x);
        }
      }
    }
  }
  out.grad.insert(out.grad.end(), padding.begin(), padding.end());
  return out;
}

outputs whole_rows(const shard_problem& sp, memory& m, fusedloss_dtype dtype, const upstream& up) {
  ce_p p = sp.base;
  p.device = m.device();
  attach(p, sp.in, m);
  p.logits = m.put(buffer(dtype, sp.logits));
  p.logits_dtype = dtype;
  const fusedloss_dtype loss_dtype = loss_dtype_of(dtype);
  p.loss = m.put(buffer::poisoned(loss_dtype, sp.loss_count()));
  p.lse = m.put(buffer::poisoned(loss_dtype, p.batch));
  p.grad_logits = m.put(buffer::poisoned(dtype, sp.logits.size()));
  outputs out =
      run_call(m, p, call::forward_backward, loss_dtype, up, [&] { return m.get(p.grad_logits); });
  out.lse = m.get(p.lse);
  for (size_t k = 0; k < sp.widths.size(); ++k) {
    out.grad.insert(out.grad.end(), size_t(sp.base.batch * shard_padding(k)), NAN);
  }
  return out;
}

}  // namespace fusedloss::validate
