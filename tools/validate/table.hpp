// `fusedloss validate`: verdicts, the settings of a run, and the validator that judges every
// check against its tolerance and prints the table, one row per check.
#pragma once

#include <cstdint>
#include <exception>
#include <string>
#include <vector>

#include "problems.hpp"

namespace fusedloss::validate {

/// The largest finite |x| of `values` (0 when none is finite).
double max_abs(const std::vector<double>& values);

struct verdict {
  double max_error = 0;
  tolerance tol{0, 0};
  bool pass = true;
  double excess = 0;  // the largest |got - want| / (atol + rtol |want|); infinite where it fails
  std::string note;   // why it failed, when the numbers alone do not say
};

// The verdict to report of two: a failure over a pass, else the closer call.
verdict worse(const verdict& a, const verdict& b);

struct label {
  std::string check, loss, options, shape, dtype;
};

// Where the golden files are: beside an installed tool (<prefix>/share/fusedloss/golden for
// <prefix>/bin/fusedloss), else in the source tree the build was made from.
std::string default_golden_dir();

struct settings {
  std::string device = "auto";
  std::string golden_dir = default_golden_dir();
  double tolerance_scale = 1;
  double perturb = 0;
  uint64_t seed = 0;
};

class validator {
 public:
  explicit validator(const settings& s) : s_(s) {}
  const settings& options() const { return s_; }

  // Every tolerance of the sweep goes through here, so that --tolerance-scale reaches them all.
  // `bounds`, when given, adds an absolute bound of each element's own to tol's atol; the row
  // reports the largest sum.
  verdict judge(const std::vector<double>& got, const std::vector<double>& want, tolerance tol,
                const std::vector<double>& bounds = {}) const;

  // What the backend under test returned, made wrong on purpose by --perturb.
  outputs under_test(outputs o) const;

  // Runs one check and prints its row. A call that throws fails the check.
  template <class Check>
  void check(const label& l, Check&& body) {
    try {
      const verdict v = body();
      print(l, &v, v.pass ? "pass" : "FAIL" + (v.note.empty() ? "" : " (" + v.note + ")"));
      ++(v.pass ? passed_ : failed_);
    } catch (const std::exception& e) {
      fail(l, e.what());
    }
  }

  void fail(const label& l, const std::string& why);
  void header() const;
  int finish(double seconds) const;

 private:
  static void row(const std::string& check, const std::string& loss, const std::string& options,
                  const std::string& shape, const std::string& dtype, const std::string& error,
                  const std::string& tol, const std::string& result);
  void print(const label& l, const verdict* v, const std::string& result) const;

  settings s_;
  int passed_ = 0, failed_ = 0;
};

}  // namespace fusedloss::validate
