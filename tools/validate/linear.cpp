// `fusedloss validate`: fused linear + cross-entropy's problems, and its calls, with the default
// workspace or with one that splits the rows into chunks.
#include "linear.hpp"

#include <cmath>
#include <stdexcept>

namespace fusedloss::validate {

namespace {

// Smallest to largest: the budget of a chunk of one row (the query refuses every budget below it)
// and the workspace of one chunk of every row; a third of the way between them splits the rows into
// about three chunks of balanced size. The query alone tells where the first lies.
size_t split_budget(lce_p p) {
  p.max_workspace_bytes = 0;
  const size_t whole = fusedloss::workspace_size(p);
  size_t refused = 0, accepted = whole;  // 0 asks for the default budget, so it is never tried
  while (accepted - refused > 1) {
    const size_t middle = refused + (accepted - refused) / 2;
    p.max_workspace_bytes = middle;
    size_t bytes = 0;
    fusedloss_error e;
    const bool fits =
        fusedloss_linear_cross_entropy_workspace_size(&p, &bytes, &e) == FUSEDLOSS_SUCCESS;
    (fits ? accepted : refused) = middle;
  }
  p.max_workspace_bytes = accepted + (whole - accepted) / 3;
  if (p.batch > 1 && fusedloss::workspace_size(p) >= whole) {
    throw std::runtime_error(
        format("max_workspace_bytes %zu holds every row in one chunk", p.max_workspace_bytes));
  }
  return p.max_workspace_bytes;
}

}  // namespace

std::vector<double> on_grid(rng_t& rng, size_t count, double bound) {
  std::vector<double> v = checks::uniform(rng, count, -bound, bound);
  for (double& x : v) x = std::round(x * 1024) / 1024;
  return v;
}

outputs run_linear(const lce_p& base, const inputs& in, memory& m, call kind, fusedloss_dtype dtype,
                   const std::vector<double>& values, const upstream& up, bool split) {
  lce_p p = base;
  const size_t n = p.batch, h = p.hidden, v = p.num_classes;
  const bool bias = in.linear_bias.size() != 0;
  const auto part = [&](size_t first, size_t count) {
    return buffer(dtype,
                  std::vector<double>(values.begin() + first, values.begin() + first + count));
  };
  p.device = m.device();
  attach(p, in, m);
  p.input = m.put(part(0, n * h));
  p.input_dtype = dtype;
  p.linear_weight = m.put(part(n * h, v * h));
  p.linear_bias = bias ? m.put(part((n + v) * h, v)) : nullptr;
  const fusedloss_dtype loss_dtype = loss_dtype_of(dtype);
  p.grad_linear_dtype = loss_dtype;  // below float64: float32, the default
  p.loss = m.put(buffer::poisoned(loss_dtype, p.reduction == FUSEDLOSS_REDUCTION_NONE ? n : 1));
  p.grad_input = m.put(buffer::poisoned(dtype, n * h));
  p.grad_linear_weight = m.put(buffer::poisoned(loss_dtype, v * h));
  p.grad_linear_bias = bias ? m.put(buffer::poisoned(loss_dtype, v)) : nullptr;
  if (split) p.max_workspace_bytes = split_budget(p);
  return run_call(m, p, kind, loss_dtype, up, [&] {
    std::vector<double> g = m.get(p.grad_input);
    for (const void* rest : {p.grad_linear_weight, p.grad_linear_bias}) {
      if (rest == nullptr) continue;
      const std::vector<double> more = m.get(rest);
      g.insert(g.end(), more.begin(), more.end());
    }
    return g;
  });
}

linear_problem make_linear_problem(std::string options, const shape& sh, const lce_p& base,
                                   const inputs& in, rng_t& rng) {
  const int64_t n = base.batch, h = base.hidden, v = base.num_classes;
  linear_problem lp{
      {"linear_ce", options, sh.name(), base.reduction, {}, {}, size_t(n), size_t(v), {}},
      {},
      base,
      in};
  // Logits of magnitude about 1 (the weight scaled by 2 / sqrt(H)), where cross-entropy is smooth
  // and well conditioned.
  std::vector<double>& values = lp.pr.logits;
  values = on_grid(rng, n * h, 1);
  const std::vector<double> w = on_grid(rng, v * h, 2 / std::sqrt(double(h)));
  const std::vector<double> b = in.linear_bias.values();
  values.insert(values.end(), w.begin(), w.end());
  values.insert(values.end(), b.begin(), b.end());
  lp.pr.padding.assign(values.size(), false);
  lp.pr.run = [base, in](memory& m, call kind, fusedloss_dtype dtype, const std::vector<double>& x,
                         const upstream& up) {
    return run_linear(base, in, m, kind, dtype, x, up, false);
  };
  ce_p ce = fusedloss::make_cross_entropy_params();
  ce.batch = n;
  ce.num_classes = v;
  ce.ignore_index = base.ignore_index;
  ce.label_smoothing = base.label_smoothing;
  ce.z_loss = base.z_loss;
  ce.softcap = base.softcap;
  ce.reduction = base.reduction;
  ce.empty_mean = base.empty_mean;
  lp.whole = make_problem("cross_entropy", std::move(options), shape{n, v, 1}, ce, in, rng);
  return lp;
}

}  // namespace fusedloss::validate
