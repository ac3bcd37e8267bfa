// `fusedloss validate`: the sweep, every loss's combinations of named options on its shapes under
// each reduction, as the problems the checks run.
#pragma once

#include <vector>

#include "linear.hpp"
#include "problems.hpp"
#include "shards.hpp"

namespace fusedloss::validate {

// A named option: a scalar field set to a value, or a function that changes the params and inputs.
template <class Params>
struct option {
  const char* name;
  void (*apply)(Params&, inputs&, rng_t&, const shape&) = nullptr;
  double Params::*field = nullptr;
  double value = 0;
};

template <class Params>
struct loss_sweep {
  const char* loss;
  void (*setup)(Params&, inputs&, rng_t&, const shape&);  // sizes and default targets
  std::vector<std::vector<option<Params>>> combinations;
  std::vector<shape> shapes;
};

/// Every element and row loss's problems.
std::vector<problem> all_problems(rng_t& rng);

/// Fused linear + cross-entropy's problems.
std::vector<linear_problem> linear_problems(rng_t& rng);

/// The whole rows' options of vocabulary-parallel cross-entropy, each over 1 to 4 ranks.
extern const loss_sweep<ce_p> shard_sweep;

/// Vocabulary-parallel cross-entropy's problems.
std::vector<shard_problem> shard_problems(rng_t& rng);

}  // namespace fusedloss::validate
