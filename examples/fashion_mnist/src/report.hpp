// What a set of runs leaves behind: metrics.csv (one row per run and epoch), calibration.csv (the
// final reliability bins), summary.md (the table) and, through gnuplot, the PNG plots.
#pragma once

#include <cstdio>
#include <string>
#include <vector>

#include "train.hpp"

namespace fm {

// metrics.csv, written row by row as the epochs finish.
class MetricsCsv {
 public:
  explicit MetricsCsv(const std::string& path);
  ~MetricsCsv();
  void add(const Run& run, const EpochLog& e);

 private:
  std::FILE* f_;
};

void write_calibration_csv(const std::string& path, const std::vector<Run>& runs);
// The Markdown table of final accuracy, ECE and logit-gradient norms.
std::string summary_table(const std::vector<Run>& runs, int hidden);
// Writes `dir`/plots.gp (data inline) and runs gnuplot on it; false (with a warning) if it fails.
bool render_plots(const std::string& dir, const std::vector<Run>& runs, int hidden);

}  // namespace fm
