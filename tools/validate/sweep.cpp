// `fusedloss validate`: the sweep of every loss, its named options (a scalar field set to a
// value, or a change to the params and inputs), their combinations and shapes.
#include "sweep.hpp"

#include <string>
#include <type_traits>
#include <utility>

namespace fusedloss::validate {

namespace {

template <class Params>
option<Params> set(const char* name, double Params::*field, double value) {
  return {name, nullptr, field, value};
}

buffer weights(rng_t& rng, int64_t count) {
  return buffer(FUSEDLOSS_FLOAT32, checks::uniform(rng, count, 0.5, 2));
}

template <class Params>
void element_setup(Params& p, inputs& in, rng_t& rng, const shape& sh) {
  p.numel = sh.elements();
  in.targets = buffer(FUSEDLOSS_FLOAT32, checks::class_indices(rng, sh.elements(), 2));
  if constexpr (std::is_same_v<Params, fusedloss_bce_params>) p.num_classes = sh.c;
  if constexpr (std::is_same_v<Params, fusedloss_mse_params>) {
    in.targets = buffer(FUSEDLOSS_FLOAT32, checks::uniform(rng, sh.elements(), -3, 3));
  }
}

template <class Params>
void row_setup(Params& p, inputs& in, rng_t& rng, const shape& sh) {
  p.batch = sh.n;
  p.num_classes = sh.c;
  p.spatial = sh.s;
  in.targets = buffer(FUSEDLOSS_INT64, checks::class_indices(rng, sh.rows(), sh.c));
}

template <class Params>
void soft_targets(Params&, inputs& in, rng_t& rng, const shape& sh) {
  in.targets = buffer(FUSEDLOSS_FLOAT32, checks::uniform(rng, sh.elements(), 0, 1));
}

// Every third row ignored (never the first, so no sweep shape ends with all rows ignored, whose
// mean is NaN by policy).
template <class Params>
void ignore_rows(Params& p, inputs& in, rng_t&, const shape&) {
  p.ignore_index = -1;
  std::vector<double> t = in.targets.values();
  for (size_t r = 1; r < t.size(); r += 3) t[r] = -1;
  in.targets = buffer(in.targets.dtype(), t);
}

template <class Params>
void row_stride(Params& p, inputs&, rng_t&, const shape& sh) {
  p.row_stride = sh.c * sh.s + 3;
}

template <class Params>
void int32_targets(Params&, inputs& in, rng_t&, const shape&) {
  in.targets = buffer(FUSEDLOSS_INT32, in.targets.values());
}

template <class Params>
void class_weight(Params&, inputs& in, rng_t& rng, const shape& sh) {
  in.weight = weights(rng, sh.c);
}

// Probabilities of each row (n, s) over its C classes, laid out as the logits.
void probability_targets(fusedloss_cross_entropy_params&, inputs& in, rng_t& rng, const shape& sh) {
  std::vector<double> q = checks::uniform(rng, sh.elements(), 0.05, 1);
  for (int64_t n = 0; n < sh.n; ++n) {
    for (int64_t s = 0; s < sh.s; ++s) {
      double sum = 0;
      for (int64_t c = 0; c < sh.c; ++c) sum += q[(n * sh.c + c) * sh.s + s];
      for (int64_t c = 0; c < sh.c; ++c) q[(n * sh.c + c) * sh.s + s] /= sum;
    }
  }
  in.targets = buffer(FUSEDLOSS_FLOAT32, q);
}

using bce_p = fusedloss_bce_params;
using focal_p = fusedloss_sigmoid_focal_params;
using mse_p = fusedloss_mse_params;
using sf_p = fusedloss_softmax_focal_params;

const std::vector<shape> element_shapes = {{1, 1, 1}, {3, 5, 1}, {17, 33, 1}};
const std::vector<shape> row_shapes = {{1, 1, 1}, {3, 5, 1}, {17, 33, 1}, {4, 2, 3}};

const option<bce_p> bce_weight_per_element = {"weight per element",
                                              [](bce_p&, inputs& in, rng_t& rng, const shape& sh) {
                                                in.weight = weights(rng, sh.elements());
                                              }};
const option<bce_p> bce_weight_per_class = {"weight per class",
                                            [](bce_p& p, inputs& in, rng_t& rng, const shape& sh) {
                                              p.weight_layout = FUSEDLOSS_WEIGHT_PER_CLASS;
                                              in.weight = weights(rng, sh.c);
                                            }};
const option<bce_p> bce_pos_weight = {
    "pos_weight",
    [](bce_p&, inputs& in, rng_t& rng, const shape& sh) { in.pos_weight = weights(rng, sh.c); }};
const option<bce_p> bce_soft_targets = {"soft targets", soft_targets<bce_p>};

const loss_sweep<bce_p> bce_sweep = {"bce",
                                     element_setup<bce_p>,
                                     {{},
                                      {bce_weight_per_element},
                                      {bce_weight_per_class},
                                      {bce_pos_weight},
                                      {bce_soft_targets},
                                      {bce_weight_per_class, bce_pos_weight, bce_soft_targets}},
                                     element_shapes};

const loss_sweep<focal_p> sigmoid_focal_sweep = {
    "sigmoid_focal",
    element_setup<focal_p>,
    {{set("gamma 0", &focal_p::gamma, 0), set("alpha -1", &focal_p::alpha, -1)},
     {set("gamma 0.5", &focal_p::gamma, 0.5), set("alpha 0.25", &focal_p::alpha, 0.25)},
     {set("gamma 2", &focal_p::gamma, 2), set("alpha 0.25", &focal_p::alpha, 0.25)},
     {set("gamma 2", &focal_p::gamma, 2), set("alpha -1", &focal_p::alpha, -1)},
     {set("gamma 0.5", &focal_p::gamma, 0.5), {"soft targets", soft_targets<focal_p>}}},
    element_shapes};

const loss_sweep<mse_p> mse_sweep = {"mse", element_setup<mse_p>, {{}}, element_shapes};

const option<ce_p> ce_weight = {"weight", class_weight<ce_p>};
const option<ce_p> ce_ignore = {"ignore_index", ignore_rows<ce_p>};
const option<ce_p> ce_stride = {"row_stride > C*S", row_stride<ce_p>};
const option<ce_p> smoothing = set("label_smoothing 0.1", &ce_p::label_smoothing, 0.1);
const option<ce_p> z_loss = set("z_loss 0.1", &ce_p::z_loss, 0.1);
// Soft-capping is smooth (tanh), and 2 bends logits of [-3, 3] well into its curved part.
const option<ce_p> softcap = set("softcap 2", &ce_p::softcap, 2);
const option<ce_p> probabilities = {"probability targets", probability_targets};

const loss_sweep<ce_p> cross_entropy_sweep = {
    "cross_entropy",
    row_setup<ce_p>,
    {{},
     {ce_weight},
     {ce_ignore},
     {smoothing},
     {z_loss},
     {softcap},
     {ce_stride},
     {{"int32 targets", int32_targets<ce_p>}},
     {ce_weight, ce_ignore, smoothing},
     {ce_weight, ce_ignore, smoothing, z_loss, softcap, ce_stride},
     {probabilities},
     {probabilities, ce_weight},
     {probabilities, smoothing},
     {probabilities, ce_weight, smoothing, z_loss, softcap, ce_stride}},
    row_shapes};

const loss_sweep<sf_p> softmax_focal_sweep = {
    "softmax_focal",
    row_setup<sf_p>,
    {{set("gamma 0", &sf_p::gamma, 0)},
     {set("gamma 0.5", &sf_p::gamma, 0.5)},
     {set("gamma 2", &sf_p::gamma, 2), {"alpha", class_weight<sf_p>}},
     {set("gamma 0.5", &sf_p::gamma, 0.5),
      {"alpha", class_weight<sf_p>},
      {"ignore_index", ignore_rows<sf_p>},
      {"row_stride > C*S", row_stride<sf_p>}}},
    row_shapes};

// Every combination of `sweep` on each of its shapes under each reduction: `build(shape, params,
// inputs, name)` makes the problems of one, named "reduction, option, ...".
template <class Params, class Build>
void sweep_problems(const loss_sweep<Params>& sweep, Params (*make)(), rng_t& rng, Build&& build) {
  for (const auto& combination : sweep.combinations) {
    for (const shape& sh : sweep.shapes) {
      for (const fusedloss_reduction r :
           {FUSEDLOSS_REDUCTION_NONE, FUSEDLOSS_REDUCTION_MEAN, FUSEDLOSS_REDUCTION_SUM}) {
        Params p = make();
        p.reduction = r;
        inputs in;
        sweep.setup(p, in, rng, sh);
        std::string name = fusedloss_reduction_string(r);
        for (const option<Params>& o : combination) {
          if (o.apply != nullptr) o.apply(p, in, rng, sh);
          if (o.field != nullptr) p.*o.field = o.value;
          name += std::string(", ") + o.name;
        }
        build(sh, p, in, std::move(name));
      }
    }
  }
}

template <class Params>
void add_problems(const loss_sweep<Params>& sweep, Params (*make)(), rng_t& rng,
                  std::vector<problem>& out) {
  sweep_problems(sweep, make, rng,
                 [&](const shape& sh, const Params& p, const inputs& in, std::string name) {
                   out.push_back(make_problem(sweep.loss, std::move(name), sh, p, in, rng));
                 });
}

// A linear + cross-entropy shape's (n, c, s) are (N, H, V), so that its name reads NxHxV. Each of
// N, H and V is 33 once, odd sizes that no vector width divides; the finite differences' cost
// grows as (N + V) H * N H V, so no two are 33 at once.
const std::vector<shape> linear_shapes = {{7, 7, 33}, {7, 33, 7}, {33, 7, 7}};

void linear_setup(lce_p& p, inputs& in, rng_t& rng, const shape& sh) {
  p.batch = sh.n;
  p.hidden = sh.c;
  p.num_classes = sh.s;
  in.targets = buffer(FUSEDLOSS_INT64, checks::class_indices(rng, sh.n, sh.s));
}

const option<lce_p> linear_bias = {"bias", [](lce_p&, inputs& in, rng_t& rng, const shape& sh) {
                                     in.linear_bias =
                                         buffer(FUSEDLOSS_FLOAT64, on_grid(rng, sh.s, 0.5));
                                   }};
const option<lce_p> linear_weight = {"weight", [](lce_p&, inputs& in, rng_t& rng, const shape& sh) {
                                       in.weight = weights(rng, sh.s);
                                     }};
const option<lce_p> linear_smoothing = set("label_smoothing 0.1", &lce_p::label_smoothing, 0.1);
const option<lce_p> linear_z_loss = set("z_loss 0.1", &lce_p::z_loss, 0.1);
// The logits are about 1 in magnitude: a cap of 1 bends them well into tanh's curved part.
const option<lce_p> linear_softcap = set("softcap 1", &lce_p::softcap, 1);

const loss_sweep<lce_p> linear_sweep = {"linear_ce",
                                        linear_setup,
                                        {{},
                                         {linear_bias},
                                         {linear_bias, linear_smoothing},
                                         {linear_weight, linear_z_loss},
                                         {linear_bias, linear_softcap},
                                         {linear_bias,
                                          linear_weight,
                                          {"ignore_index", ignore_rows<lce_p>},
                                          linear_smoothing,
                                          linear_z_loss,
                                          linear_softcap}},
                                        linear_shapes};

// The ranks' slices of the 13 classes: uneven, and one class wide for some.
const std::vector<std::vector<int64_t>> shard_widths = {{13}, {9, 4}, {5, 1, 7}, {1, 1, 5, 6}};

}  // namespace

std::vector<problem> all_problems(rng_t& rng) {
  std::vector<problem> out;
  add_problems(bce_sweep, fusedloss::make_bce_params, rng, out);
  add_problems(sigmoid_focal_sweep, fusedloss::make_sigmoid_focal_params, rng, out);
  add_problems(mse_sweep, fusedloss::make_mse_params, rng, out);
  add_problems(cross_entropy_sweep, fusedloss::make_cross_entropy_params, rng, out);
  add_problems(softmax_focal_sweep, fusedloss::make_softmax_focal_params, rng, out);
  return out;
}

std::vector<linear_problem> linear_problems(rng_t& rng) {
  std::vector<linear_problem> out;
  sweep_problems(linear_sweep, fusedloss::make_linear_cross_entropy_params, rng,
                 [&](const shape& sh, const lce_p& p, const inputs& in, std::string name) {
                   out.push_back(make_linear_problem(std::move(name), sh, p, in, rng));
                 });
  return out;
}

const loss_sweep<ce_p> shard_sweep = {"vocab_ce",
                                      row_setup<ce_p>,
                                      {{},
                                       {ce_weight, ce_ignore},
                                       {smoothing, {"int32 targets", int32_targets<ce_p>}},
                                       {z_loss, softcap},
                                       {ce_weight, ce_ignore, smoothing, z_loss, softcap}},
                                      {{9, 13, 1}}};

std::vector<shard_problem> shard_problems(rng_t& rng) {
  std::vector<shard_problem> out;
  sweep_problems(shard_sweep, fusedloss::make_cross_entropy_params, rng,
                 [&](const shape& sh, const ce_p& p, const inputs& in, const std::string& name) {
                   for (const std::vector<int64_t>& widths : shard_widths) {
                     std::string slices;
                     for (const int64_t w : widths) {
                       slices += (slices.empty() ? "" : "+") + std::to_string(w);
                     }
                     out.push_back({name + ", slices " + slices, sh.name(), p, in,
                                    checks::uniform(rng, sh.elements(), -3, 3), widths});
                   }
                 });
  return out;
}

}  // namespace fusedloss::validate
