// `fusedloss validate`: problems, one loss with its options on one shape and reduction, and the
// pieces that run one of their calls in either memory (the upstream gradient, the inputs besides
// the logits, the outputs read back); with the names every part of the tool shares.
#pragma once

#include <cinttypes>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <random>
#include <string>
#include <type_traits>
#include <utility>
#include <vector>

#include "checks.hpp"
#include "fusedloss/fusedloss.hpp"
#include "memory.hpp"

namespace fusedloss::validate {

using checks::loss_dtype_of;
using checks::tolerance;
using rng_t = std::mt19937_64;

using lce_p = fusedloss_linear_cross_entropy_params;
using ce_p = fusedloss_cross_entropy_params;

/// printf's formatting into a string, of at most 511 characters.
std::string format(const char* fmt, ...) __attribute__((format(printf, 1, 2)));

struct shape {
  int64_t n, c, s;
  std::string name() const {
    return s == 1 ? format("%" PRId64 "x%" PRId64, n, c)
                  : format("%" PRId64 "x%" PRId64 "x%" PRId64, n, c, s);
  }
  int64_t rows() const { return n * s; }
  int64_t elements() const { return n * c * s; }
};

// The upstream gradient: backward's grad_loss, or forward_backward's grad_scale times the float
// behind grad_scale_ptr.
struct upstream {
  std::vector<double> grad_loss;
  float grad_scale = 1;
  float grad_scale_in_memory = 1;
};

struct outputs {
  std::vector<double> loss, grad;
  std::vector<double> lse = {};  // the vocabulary-parallel checks' only
};

// Inputs besides the logits, kept on the host and put into the call's memory for every call.
struct inputs {
  buffer targets;
  buffer weight;       // BCE's and cross-entropy's weight, softmax focal's alpha
  buffer pos_weight;   // BCE only
  buffer linear_bias;  // linear + cross-entropy only: the bias's starting values, when it has one
};

/// `b` put into `m`, as the float pointer the params take.
const float* floats(memory& m, const buffer& b);

/// Puts `in` into `m` and points `p`'s inputs besides the logits at it.
void attach(fusedloss_bce_params& p, const inputs& in, memory& m);
template <class Params>
void attach(Params& p, const inputs& in, memory& m) {
  p.targets = m.put(in.targets);
  p.targets_dtype = in.targets.dtype();
  if constexpr (std::is_same_v<Params, fusedloss_cross_entropy_params> ||
                std::is_same_v<Params, fusedloss_linear_cross_entropy_params>)
    p.weight = floats(m, in.weight);
  if constexpr (std::is_same_v<Params, fusedloss_softmax_focal_params>)
    p.alpha = floats(m, in.weight);
}

template <class Params>
constexpr bool is_row_loss = std::is_same_v<Params, fusedloss_cross_entropy_params> ||
                             std::is_same_v<Params, fusedloss_softmax_focal_params>;

struct problem {
  std::string loss, options, shape;
  fusedloss_reduction reduction;
  std::vector<double> logits;  // the layout the call reads, row padding included
  std::vector<bool> padding;   // logits the loss never reads (row_stride > C*S)
  size_t losses;               // loss values under none: rows or elements
  size_t terms;                // logits that enter one loss value: C for row losses, else 1
  std::function<outputs(memory&, call, fusedloss_dtype, const std::vector<double>& logits,
                        const upstream&)>
      run;
  size_t loss_count() const { return reduction == FUSEDLOSS_REDUCTION_NONE ? losses : 1; }
};

// Runs call `kind` of `p`, whose inputs and outputs are already in `m`: backward with upstream
// gradient `up.grad_loss`, forward_backward with it split over grad_scale and *grad_scale_ptr.
// `gradient` reads back what the call wrote of the gradient.
template <class Params>
outputs run_call(memory& m, Params p, call kind, fusedloss_dtype loss_dtype, const upstream& up,
                 const std::function<std::vector<double>()>& gradient) {
  fusedloss::workspace ws{nullptr, fusedloss::workspace_size(p)};
  ws.data = m.scratch(ws.bytes);
  switch (kind) {
    case call::forward:
      fusedloss::forward(p, ws);
      return outputs{m.get(p.loss), {}};
    case call::backward:
      p.grad_loss = m.put(buffer(loss_dtype, up.grad_loss));
      fusedloss::backward(p, ws);
      return outputs{{}, gradient()};
    case call::forward_backward:
      p.grad_scale = up.grad_scale;
      p.grad_scale_ptr = floats(m, buffer(FUSEDLOSS_FLOAT32, {up.grad_scale_in_memory}));
      fusedloss::forward_backward(p, ws);
      return outputs{m.get(p.loss), gradient()};
  }
  return outputs{};
}

template <class Params>
problem make_problem(std::string loss, std::string options, const shape& sh, const Params& base,
                     const inputs& in, rng_t& rng) {
  problem pr{std::move(loss), std::move(options), sh.name(), base.reduction, {}, {}, 0, 1, {}};
  if constexpr (is_row_loss<Params>) {
    const int64_t extent = base.num_classes * base.spatial;
    const int64_t stride = base.row_stride != 0 ? base.row_stride : extent;
    pr.padding.resize(base.batch * stride);
    for (size_t i = 0; i < pr.padding.size(); ++i) pr.padding[i] = int64_t(i) % stride >= extent;
    pr.losses = base.batch * base.spatial;
    pr.terms = base.num_classes;
  } else {
    pr.padding.assign(base.numel, false);
    pr.losses = base.numel;
  }
  // [-3, 3]: every loss is smooth and well conditioned there, so finite differences are meaningful.
  pr.logits = checks::uniform(rng, pr.padding.size(), -3, 3);
  const size_t losses = pr.losses;
  pr.run = [base, in, losses](memory& m, call kind, fusedloss_dtype dtype,
                              const std::vector<double>& logits, const upstream& up) {
    Params p = base;
    p.device = m.device();
    attach(p, in, m);
    p.logits = m.put(buffer(dtype, logits));
    p.logits_dtype = dtype;
    const fusedloss_dtype loss_dtype = loss_dtype_of(dtype);
    p.loss =
        m.put(buffer::poisoned(loss_dtype, p.reduction == FUSEDLOSS_REDUCTION_NONE ? losses : 1));
    // Poisoned, so that a gradient the call fails to write (or padding it writes) shows up.
    p.grad_logits = m.put(buffer::poisoned(dtype, logits.size()));
    return run_call(m, p, kind, loss_dtype, up, [&] { return m.get(p.grad_logits); });
  };
  return pr;
}

}  // namespace fusedloss::validate
