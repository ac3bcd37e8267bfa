// The golden files of golden.hpp: their reader (the runner is golden_run.cpp).
#include "golden.hpp"

#include <algorithm>
#include <cerrno>
#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <set>
#include <sstream>
#include <stdexcept>
#include <type_traits>
#include <utility>

#include "golden_format.hpp"

namespace fusedloss::checks {

namespace {

// ------------------------------------------------------------------------------------------------
// Vocabulary of the format

enum class value_kind { dtype, reduction, empty_mean, weight_layout, integer, real };

const std::map<std::string, value_kind>& scalar_keys() {
  static const std::map<std::string, value_kind> keys = {
      {"logits_dtype", value_kind::dtype},
      {"targets_dtype", value_kind::dtype},
      {"reduction", value_kind::reduction},
      {"empty_mean", value_kind::empty_mean},
      {"weight_layout", value_kind::weight_layout},
      {"numel", value_kind::integer},
      {"num_classes", value_kind::integer},
      {"batch", value_kind::integer},
      {"spatial", value_kind::integer},
      {"row_stride", value_kind::integer},
      {"ignore_index", value_kind::integer},
      {"label_smoothing", value_kind::real},
      {"z_loss", value_kind::real},
      {"softcap", value_kind::real},
      {"alpha", value_kind::real},
      {"gamma", value_kind::real},
  };
  return keys;
}

const std::set<std::string>& array_names() {
  static const std::set<std::string> names = {"logits",     "targets",       "weight",
                                              "pos_weight", "grad_loss",     "expect_loss",
                                              "expect_lse", "expect_z_loss", "expect_grad"};
  return names;
}

const std::set<std::string>& loss_names() {
  static const std::set<std::string> names = {"bce", "sigmoid_focal", "mse", "cross_entropy",
                                              "softmax_focal"};
  return names;
}

// Names as the library spells them (fusedloss_*_string), mapped back to the enums.
template <class Enum>
std::map<std::string, Enum> names_of(const char* (*spell)(Enum), int count) {
  std::map<std::string, Enum> names;
  for (int v = 0; v < count; ++v) names[spell(static_cast<Enum>(v))] = static_cast<Enum>(v);
  return names;
}

}  // namespace

namespace golden_format {

const std::map<std::string, fusedloss_dtype>& dtype_names() {
  static const auto names = names_of(fusedloss_dtype_string, FUSEDLOSS_INT64 + 1);
  return names;
}

const std::map<std::string, fusedloss_reduction>& reduction_names() {
  static const auto names = names_of(fusedloss_reduction_string, FUSEDLOSS_REDUCTION_SUM + 1);
  return names;
}

const std::map<std::string, fusedloss_empty_mean>& empty_mean_names() {
  static const std::map<std::string, fusedloss_empty_mean> names = {
      {"nan", FUSEDLOSS_EMPTY_MEAN_NAN}, {"zero", FUSEDLOSS_EMPTY_MEAN_ZERO}};
  return names;
}

const std::map<std::string, fusedloss_weight_layout>& weight_layout_names() {
  static const std::map<std::string, fusedloss_weight_layout> names = {
      {"per_element", FUSEDLOSS_WEIGHT_PER_ELEMENT}, {"per_class", FUSEDLOSS_WEIGHT_PER_CLASS}};
  return names;
}

bool parse_real(const std::string& s, double& v) {
  if (s.empty()) return false;
  char* end = nullptr;
  v = std::strtod(s.c_str(), &end);
  return end == s.c_str() + s.size();
}

bool parse_integer(const std::string& s, int64_t& v) {
  if (s.empty()) return false;
  char* end = nullptr;
  errno = 0;
  const long long r = std::strtoll(s.c_str(), &end, 10);
  if (errno == ERANGE || end != s.c_str() + s.size()) return false;
  v = static_cast<int64_t>(r);
  return true;
}

}  // namespace golden_format

using namespace golden_format;

namespace {

bool valid_scalar(value_kind kind, const std::string& v) {
  double d;
  int64_t i;
  switch (kind) {
    case value_kind::dtype:
      return dtype_names().count(v) != 0;
    case value_kind::reduction:
      return reduction_names().count(v) != 0;
    case value_kind::empty_mean:
      return empty_mean_names().count(v) != 0;
    case value_kind::weight_layout:
      return weight_layout_names().count(v) != 0;
    case value_kind::integer:
      return parse_integer(v, i);
    case value_kind::real:
      return parse_real(v, d);
  }
  return false;
}

[[noreturn]] void malformed(const std::string& path, int line, const std::string& what) {
  throw std::runtime_error(path + ":" + std::to_string(line) + ": " + what);
}

}  // namespace

std::string golden_case::scalar(const std::string& key, const std::string& fallback) const {
  const auto it = scalars.find(key);
  return it == scalars.end() ? fallback : it->second;
}

std::vector<golden_case> read_golden_file(const std::string& path) {
  std::ifstream in(path);
  if (!in) throw std::runtime_error(path + ": cannot open");
  std::vector<golden_case> cases;
  std::set<std::string> names;
  golden_case current;
  bool open = false;
  std::string text;
  int line = 0;
  while (std::getline(in, text)) {
    ++line;
    std::istringstream tokens(text);
    std::string key;
    if (!(tokens >> key) || key[0] == '#') continue;  // blank line or comment
    std::vector<std::string> rest;
    for (std::string t; tokens >> t;) rest.push_back(std::move(t));

    if (!open) {
      if (key != "case") malformed(path, line, "expected 'case <name>', found '" + key + "'");
      if (rest.size() != 1) malformed(path, line, "'case' takes one name without spaces");
      if (!names.insert(rest[0]).second) malformed(path, line, "repeated case name " + rest[0]);
      current = golden_case{};
      current.name = rest[0];
      current.file = path;
      current.line = line;
      open = true;
      continue;
    }
    const std::string where = "case " + current.name + ": ";
    if (key == "case") malformed(path, line, where + "'case' before 'end'");
    if (key == "end") {
      if (!rest.empty()) malformed(path, line, where + "'end' takes nothing");
      if (current.loss.empty()) malformed(path, line, where + "no 'loss' line");
      for (const char* required :
           {"logits", "targets", "grad_loss", "expect_loss", "expect_grad"}) {
        if (!current.arrays.count(required)) {
          malformed(path, line, where + "no '" + required + "' array");
        }
      }
      cases.push_back(std::move(current));
      open = false;
      continue;
    }
    if (key == "loss") {
      if (!current.loss.empty()) malformed(path, line, where + "repeated 'loss'");
      if (rest.size() != 1 || !loss_names().count(rest[0])) {
        malformed(path, line, where + "unknown loss '" + (rest.empty() ? "" : rest[0]) + "'");
      }
      current.loss = rest[0];
      continue;
    }
    if (const auto it = scalar_keys().find(key); it != scalar_keys().end()) {
      if (rest.size() != 1) malformed(path, line, where + "'" + key + "' takes one value");
      if (!valid_scalar(it->second, rest[0])) {
        malformed(path, line, where + "bad value '" + rest[0] + "' for '" + key + "'");
      }
      if (!current.scalars.emplace(key, rest[0]).second) {
        malformed(path, line, where + "repeated '" + key + "'");
      }
      continue;
    }
    if (array_names().count(key)) {
      int64_t count = -1;
      if (rest.empty() || !parse_integer(rest[0], count) || count < 0) {
        malformed(path, line, where + "'" + key + "' needs a count");
      }
      if (static_cast<int64_t>(rest.size()) - 1 != count) {
        malformed(path, line,
                  where + "'" + key + "' says " + std::to_string(count) + " values, has " +
                      std::to_string(rest.size() - 1));
      }
      std::vector<double> values(static_cast<size_t>(count));
      for (size_t i = 0; i < values.size(); ++i) {
        if (!parse_real(rest[i + 1], values[i])) {
          malformed(path, line, where + "bad number '" + rest[i + 1] + "' in '" + key + "'");
        }
      }
      if (!current.arrays.emplace(key, std::move(values)).second) {
        malformed(path, line, where + "repeated '" + key + "'");
      }
      continue;
    }
    malformed(path, line, where + "unknown key '" + key + "'");
  }
  if (open) malformed(path, line, "case " + current.name + ": no 'end' before the end of the file");
  return cases;
}

}  // namespace fusedloss::checks
