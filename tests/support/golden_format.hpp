// What the golden files' reader (golden.cpp) and runner (golden_run.cpp) share: the names the
// format gives the library's enumerations, and its numbers.
#pragma once

#include <cstdint>
#include <map>
#include <string>

#include "fusedloss/fusedloss.h"

namespace fusedloss::checks::golden_format {

/// The dtypes by the names fusedloss_dtype_string gives them.
const std::map<std::string, fusedloss_dtype>& dtype_names();
/// The reductions by fusedloss_reduction_string's names.
const std::map<std::string, fusedloss_reduction>& reduction_names();
/// The empty-mean policies: nan, zero.
const std::map<std::string, fusedloss_empty_mean>& empty_mean_names();
/// BCE's weight layouts: per_element, per_class.
const std::map<std::string, fusedloss_weight_layout>& weight_layout_names();
/// Whether `s` is a number strtod reads in full (nan and the infinities included), stored in `v`.
bool parse_real(const std::string& s, double& v);
/// Whether `s` is an integer strtoll reads in full, stored in `v`.
bool parse_integer(const std::string& s, int64_t& v);

}  // namespace fusedloss::checks::golden_format
