// The golden files of tests/golden/ (written by make_golden.py from PyTorch in float64, an oracle
// that shares no code with the library), replayed on the CPU through the public C API: every case,
// every call, every output within one unit in the last place of its dtype.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <functional>
#include <set>
#include <string>
#include <vector>

#include "golden.hpp"

namespace fusedloss::checks {
namespace {

// The golden files of the source tree the suite was built from, or of FUSEDLOSS_GOLDEN_DIR when
// set (a build run on another machine, where the source tree sits elsewhere).
std::string golden_path(const std::string& loss) {
  const char* dir = std::getenv("FUSEDLOSS_GOLDEN_DIR");
  return std::string(dir != nullptr ? dir : FUSEDLOSS_GOLDEN_DIR) + "/" + loss + ".golden";
}

double real(const golden_case& c, const char* key, double fallback) {
  const std::string v = c.scalar(key);
  return v.empty() ? fallback : std::stod(v);
}

bool any_value(const golden_case& c, const char* array, const std::function<bool(double)>& pred) {
  const auto it = c.arrays.find(array);
  return it != c.arrays.end() && std::any_of(it->second.begin(), it->second.end(), pred);
}

/// The file's cases, all of the loss it is named for.
std::vector<golden_case> load(const std::string& loss) {
  std::vector<golden_case> cases;
  EXPECT_NO_THROW(cases = read_golden_file(golden_path(loss)));
  EXPECT_FALSE(cases.empty()) << golden_path(loss) << " has no cases";
  for (const golden_case& c : cases) EXPECT_EQ(c.loss, loss) << "case " << c.name;
  return cases;
}

/// Counts the cases meeting `pred`; coverage asks for at least one of each.
class coverage {
 public:
  explicit coverage(const std::vector<golden_case>& cases) : cases_(cases) {}
  void expect(const std::string& what, const std::function<bool(const golden_case&)>& pred) const {
    const auto n = std::count_if(cases_.begin(), cases_.end(), pred);
    EXPECT_GT(n, 0) << "no golden case covers: " << what;
  }
  void expect_scalar(const char* key, const std::string& value) const {
    expect(std::string(key) + " " + value,
           [&](const golden_case& c) { return c.scalar(key) == value; });
  }
  /// Every reduction and every logits dtype.
  void expect_reductions_and_dtypes() const {
    for (const char* r : {"none", "mean", "sum"}) expect_scalar("reduction", r);
    for (const char* d : {"float32", "float16", "bfloat16", "float64"}) {
      expect_scalar("logits_dtype", d);
    }
  }
  /// Logits of +-1e4 (or more, finite), -inf, +inf and NaN.
  void expect_special_logits() const {
    const std::pair<const char*, std::function<bool(double)>> kinds[] = {
        {"|logit| >= 1e4", [](double v) { return std::isfinite(v) && std::fabs(v) >= 1e4; }},
        {"-inf logit", [](double v) { return std::isinf(v) && v < 0; }},
        {"+inf logit", [](double v) { return std::isinf(v) && v > 0; }},
        {"NaN logit", [](double v) { return std::isnan(v); }}};
    for (const auto& kind : kinds) {
      const auto& pred = kind.second;  // a structured binding cannot be captured before C++20
      expect(kind.first, [&pred](const golden_case& c) { return any_value(c, "logits", pred); });
    }
  }
  void expect_empty(const char* size_key) const {
    for (const char* em : {"nan", "zero"}) {
      expect(std::string(size_key) + " 0, mean, empty_mean " + em, [&](const golden_case& c) {
        return c.scalar(size_key) == "0" && c.scalar("reduction") == "mean" &&
               c.scalar("empty_mean", "nan") == em;
      });
    }
  }

 private:
  const std::vector<golden_case>& cases_;
};

void expect_all_pass(const std::string& loss) {
  const std::vector<golden_case> cases = load(loss);
  int compared = 0;
  for (const golden_case& c : cases) {
    SCOPED_TRACE("case " + c.name + " (" + c.file + ":" + std::to_string(c.line) + ")");
    std::vector<golden_result> results;
    try {
      results = run_golden_case(c, FUSEDLOSS_DEVICE_CPU);
    } catch (const std::exception& e) {
      ADD_FAILURE() << e.what();
      continue;
    }
    EXPECT_FALSE(results.empty());
    for (const golden_result& r : results) {
      ++compared;
      EXPECT_TRUE(r.pass) << r.call << " " << r.output << ": " << r.detail << " (max error "
                          << r.max_error << ", tolerance abs " << r.tol.atol << " rel "
                          << r.tol.rtol << ")";
    }
  }
  EXPECT_GT(compared, 0);
}

TEST(Golden, BCE) { expect_all_pass("bce"); }
TEST(Golden, SigmoidFocal) { expect_all_pass("sigmoid_focal"); }
TEST(Golden, MSE) { expect_all_pass("mse"); }
TEST(Golden, CrossEntropy) { expect_all_pass("cross_entropy"); }
TEST(Golden, SoftmaxFocal) { expect_all_pass("softmax_focal"); }

TEST(GoldenCoverage, BCE) {
  const auto cases = load("bce");
  const coverage cov(cases);
  cov.expect_reductions_and_dtypes();
  cov.expect_empty("numel");
  cov.expect_scalar("targets_dtype", "float32");
  cov.expect("targets in the logits' dtype (not float32)", [](const golden_case& c) {
    return c.scalar("logits_dtype") != "float32" &&
           c.scalar("targets_dtype") == c.scalar("logits_dtype");
  });
  cov.expect("weight per element", [](const golden_case& c) {
    return c.arrays.count("weight") && c.scalar("weight_layout", "per_element") == "per_element";
  });
  cov.expect("weight per class", [](const golden_case& c) {
    return c.arrays.count("weight") && c.scalar("weight_layout") == "per_class";
  });
  cov.expect("pos_weight", [](const golden_case& c) { return c.arrays.count("pos_weight") != 0; });
  cov.expect("soft targets", [](const golden_case& c) {
    return any_value(c, "targets", [](double y) { return y > 0 && y < 1; });
  });
  cov.expect_special_logits();
}

TEST(GoldenCoverage, SigmoidFocal) {
  const auto cases = load("sigmoid_focal");
  const coverage cov(cases);
  cov.expect_reductions_and_dtypes();
  cov.expect_empty("numel");
  for (double gamma : {0.0, 0.5, 2.0}) {
    cov.expect("gamma " + std::to_string(gamma),
               [gamma](const golden_case& c) { return real(c, "gamma", 2.0) == gamma; });
  }
  cov.expect("alpha 0.25", [](const golden_case& c) { return real(c, "alpha", 0.25) == 0.25; });
  cov.expect("alpha < 0", [](const golden_case& c) { return real(c, "alpha", 0.25) < 0; });
  cov.expect("soft targets", [](const golden_case& c) {
    return any_value(c, "targets", [](double y) { return y > 0 && y < 1; });
  });
  cov.expect("saturated logits (|x| = 100) with gamma in (0, 1)", [](const golden_case& c) {
    const double gamma = real(c, "gamma", 2.0);
    return gamma > 0 && gamma < 1 && any_value(c, "logits", [](double x) { return x == 100; }) &&
           any_value(c, "logits", [](double x) { return x == -100; });
  });
}

TEST(GoldenCoverage, MSE) {
  const auto cases = load("mse");
  const coverage cov(cases);
  cov.expect_reductions_and_dtypes();
  cov.expect_empty("numel");
}

TEST(GoldenCoverage, CrossEntropy) {
  const auto cases = load("cross_entropy");
  const coverage cov(cases);
  const auto index = [](const golden_case& c) {
    return c.scalar("targets_dtype") == "int32" || c.scalar("targets_dtype") == "int64";
  };
  const auto ignored_rows = [](const golden_case& c) {
    const double ii = real(c, "ignore_index", -100);
    return any_value(c, "targets", [ii](double t) { return t == ii; });
  };
  cov.expect_reductions_and_dtypes();
  cov.expect_empty("batch");
  cov.expect_scalar("targets_dtype", "int32");
  cov.expect_scalar("targets_dtype", "int64");
  cov.expect("z_loss", [](const golden_case& c) {
    return real(c, "z_loss", 0) > 0 && c.arrays.count("expect_z_loss");
  });
  cov.expect("softcap", [](const golden_case& c) { return real(c, "softcap", 0) > 0; });
  for (double eps : {0.1, 1.0}) {
    cov.expect("label_smoothing " + std::to_string(eps),
               [eps](const golden_case& c) { return real(c, "label_smoothing", 0) == eps; });
  }
  cov.expect("weight", [](const golden_case& c) { return c.arrays.count("weight") != 0; });
  cov.expect("ignored rows (ignore_index -100)", [&](const golden_case& c) {
    return index(c) && !c.scalars.count("ignore_index") && ignored_rows(c);
  });
  cov.expect("ignored rows (a non-default ignore_index)", [&](const golden_case& c) {
    return index(c) && c.scalars.count("ignore_index") && ignored_rows(c);
  });
  cov.expect("spatial > 1", [](const golden_case& c) { return real(c, "spatial", 1) > 1; });
  cov.expect("row_stride > C * S", [](const golden_case& c) {
    return real(c, "row_stride", 0) > real(c, "num_classes", 0) * real(c, "spatial", 1);
  });
  cov.expect("C = 1", [](const golden_case& c) { return c.scalar("num_classes") == "1"; });
  cov.expect("C >= 1000", [](const golden_case& c) { return real(c, "num_classes", 0) >= 1000; });
  for (const char* em : {"nan", "zero"}) {
    cov.expect(std::string("all rows ignored, mean, empty_mean ") + em, [&](const golden_case& c) {
      const double ii = real(c, "ignore_index", -100);
      const auto& t = c.arrays.at("targets");
      return index(c) && !t.empty() && c.scalar("reduction") == "mean" &&
             c.scalar("empty_mean", "nan") == em &&
             std::all_of(t.begin(), t.end(), [ii](double v) { return v == ii; });
    });
  }
  cov.expect_special_logits();
  // -inf on a non-target class (with and without smoothing) and on the target.
  const auto neg_inf_at = [&](const golden_case& c, bool on_target) {
    if (!index(c)) return false;
    const auto n = static_cast<int64_t>(real(c, "batch", 0));
    const auto classes = static_cast<int64_t>(real(c, "num_classes", 0));
    const auto s = static_cast<int64_t>(real(c, "spatial", 1));
    const auto stride = static_cast<int64_t>(real(c, "row_stride", 0)) > 0
                            ? static_cast<int64_t>(real(c, "row_stride", 0))
                            : classes * s;
    const auto& x = c.arrays.at("logits");
    const auto& t = c.arrays.at("targets");
    for (int64_t row = 0; row < n * s; ++row) {
      const auto target = static_cast<int64_t>(t[row]);
      if (target < 0 || target >= classes) continue;
      for (int64_t k = 0; k < classes; ++k) {
        const double v = x[(row / s) * stride + k * s + row % s];
        if (v == -INFINITY && (k == target) == on_target) return true;
      }
    }
    return false;
  };
  cov.expect("-inf on a non-target class, label_smoothing 0", [&](const golden_case& c) {
    return real(c, "label_smoothing", 0) == 0 && neg_inf_at(c, false);
  });
  cov.expect("-inf on a non-target class, label_smoothing > 0", [&](const golden_case& c) {
    return real(c, "label_smoothing", 0) > 0 && neg_inf_at(c, false);
  });
  cov.expect("-inf on the target", [&](const golden_case& c) { return neg_inf_at(c, true); });
  cov.expect("zero total weight", [&](const golden_case& c) {
    const auto w = c.arrays.find("weight");
    if (!index(c) || w == c.arrays.end() || c.scalar("reduction") != "mean") return false;
    const double ii = real(c, "ignore_index", -100);
    double total = 0;
    bool any = false;
    for (double t : c.arrays.at("targets")) {
      if (t == ii) continue;
      any = true;
      total += w->second.at(static_cast<size_t>(t));
    }
    return any && total == 0;
  });
  cov.expect("probability targets", [&](const golden_case& c) { return !index(c); });
  cov.expect("probability targets with weight and label_smoothing", [&](const golden_case& c) {
    return !index(c) && c.arrays.count("weight") && real(c, "label_smoothing", 0) > 0;
  });
  cov.expect("probability targets in float32 with other logits", [&](const golden_case& c) {
    return !index(c) && c.scalar("targets_dtype") == "float32" &&
           c.scalar("logits_dtype") != "float32";
  });
  cov.expect("probability targets in the logits' dtype", [&](const golden_case& c) {
    return !index(c) && c.scalar("logits_dtype") != "float32" &&
           c.scalar("targets_dtype") == c.scalar("logits_dtype");
  });
}

TEST(GoldenCoverage, SoftmaxFocal) {
  const auto cases = load("softmax_focal");
  const coverage cov(cases);
  cov.expect_reductions_and_dtypes();
  cov.expect_empty("batch");
  for (double gamma : {0.0, 0.5, 2.0}) {
    cov.expect("gamma " + std::to_string(gamma),
               [gamma](const golden_case& c) { return real(c, "gamma", 2.0) == gamma; });
  }
  cov.expect("alpha vector", [](const golden_case& c) { return c.arrays.count("weight") != 0; });
  cov.expect("ignored rows", [](const golden_case& c) {
    const double ii = real(c, "ignore_index", -100);
    return any_value(c, "targets", [ii](double t) { return t == ii; });
  });
  cov.expect("a non-default ignore_index",
             [](const golden_case& c) { return c.scalars.count("ignore_index") != 0; });
  cov.expect("spatial > 1", [](const golden_case& c) { return real(c, "spatial", 1) > 1; });
  cov.expect("row_stride > C * S", [](const golden_case& c) {
    return real(c, "row_stride", 0) > real(c, "num_classes", 0) * real(c, "spatial", 1);
  });
}

// The runner catches a wrong value: the same case with one expected value moved by 1e-5 relative
// fails in the output it was moved in, and only there.
TEST(GoldenRunner, CatchesAWrongValue) {
  const auto cases = read_golden_file(golden_path("cross_entropy"));
  const auto it = std::find_if(cases.begin(), cases.end(), [](const golden_case& c) {
    return c.scalar("reduction") == "none" && c.arrays.count("expect_lse") &&
           c.arrays.at("expect_loss").size() > 1;
  });
  ASSERT_NE(it, cases.end());
  for (const char* output : {"loss", "lse", "grad"}) {
    SCOPED_TRACE(output);
    golden_case c = *it;
    auto& want = c.arrays.at(std::string("expect_") + output);
    const size_t i = want.size() / 2;
    ASSERT_TRUE(std::isfinite(want[i]) && want[i] != 0);
    want[i] *= 1 + 1e-5;
    int failed = 0;
    for (const golden_result& r : run_golden_case(c, FUSEDLOSS_DEVICE_CPU)) {
      if (!r.pass) {
        ++failed;
        EXPECT_EQ(r.output, output) << r.call << ": " << r.detail;
      }
    }
    // forward and forward_backward compare the loss and LSE; backward alone the gradient (the fused
    // gradient is not compared under none).
    EXPECT_EQ(failed, std::string(output) == "grad" ? 1 : 2);
  }
}

// The reader refuses what it cannot read, naming the file and line.
TEST(GoldenReader, RefusesMalformedInput) {
  const std::string path = ::testing::TempDir() + "fusedloss_malformed.golden";
  const auto refuses = [&path](const std::string& text, const std::string& needle) {
    {
      std::FILE* f = std::fopen(path.c_str(), "w");
      ASSERT_NE(f, nullptr);
      std::fputs(text.c_str(), f);
      std::fclose(f);
    }
    try {
      read_golden_file(path);
      ADD_FAILURE() << "accepted:\n" << text;
    } catch (const std::runtime_error& e) {
      EXPECT_NE(std::string(e.what()).find(needle), std::string::npos) << e.what();
    }
  };
  const std::string arrays =
      "logits 1 0.5\ntargets 1 1\ngrad_loss 1 1\nexpect_loss 1 0.4\nexpect_grad 1 -0.3\n";
  refuses("case a\nloss mse\n" + arrays, ":7:");                    // no end
  refuses("case a\nloss mse\nlogits 2 0.5\n", ":3:");               // count mismatch
  refuses("case a\nloss mse\nlogits 1 x\n", ":3:");                 // bad number
  refuses("case a\nloss nope\n", ":2:");                            // unknown loss
  refuses("case a\nloss mse\nreduction avg\n", ":3:");              // bad option value
  refuses("case a\nloss mse\nbogus 1\n", ":3:");                    // unknown key
  refuses("case a\nloss mse\nend\n", ":3:");                        // arrays missing
  refuses("case a\n" + arrays + "end\n", ":7:");                    // no loss
  refuses("case a\nloss mse\n" + arrays + "end\ncase a\n", ":9:");  // repeated name
  std::remove(path.c_str());
}

TEST(GoldenReader, ReadsSpecialNumbers) {
  const std::string path = ::testing::TempDir() + "fusedloss_special.golden";
  std::FILE* f = std::fopen(path.c_str(), "w");
  ASSERT_NE(f, nullptr);
  std::fputs(
      "# comment\n\ncase s\nloss mse\nreduction none\nnumel 3\nlogits 3 nan inf -inf\n"
      "targets 3 0 1e-05 -0.0\ngrad_loss 3 1 1 1\nexpect_loss 3 nan inf inf\n"
      "expect_grad 3 nan inf -inf\nend\n",
      f);
  std::fclose(f);
  const auto cases = read_golden_file(path);
  std::remove(path.c_str());
  ASSERT_EQ(cases.size(), 1u);
  const auto& x = cases[0].arrays.at("logits");
  EXPECT_TRUE(std::isnan(x[0]));
  EXPECT_EQ(x[1], INFINITY);
  EXPECT_EQ(x[2], -INFINITY);
  EXPECT_EQ(cases[0].arrays.at("targets")[1], 1e-05);
  EXPECT_EQ(cases[0].scalar("numel"), "3");
  EXPECT_EQ(cases[0].line, 3);
}

}  // namespace
}  // namespace fusedloss::checks
