// The row-loss tests' shared helpers that are not templates (support.hpp).
#include "support.hpp"

namespace row_loss_tests {

void expect_identical(const std::vector<double>& got, const std::vector<double>& want,
                      const char* what) {
  ASSERT_EQ(got.size(), want.size()) << what;
  EXPECT_EQ(checks::max_abs_error(got, want), 0.0) << what;
}

void expect_close(const std::vector<double>& got, const std::vector<double>& want,
                  const checks::tolerance& tol, const char* what) {
  ASSERT_EQ(got.size(), want.size()) << what;
  for (size_t i = 0; i < got.size(); ++i) {
    EXPECT_TRUE(tol.accepts(got[i], want[i]))
        << what << "[" << i << "]: got " << got[i] << ", want " << want[i];
  }
}

double dot(const std::vector<double>& a, const std::vector<double>& b) {
  double s = 0;
  for (size_t i = 0; i < a.size(); ++i) s += a[i] * b[i];
  return s;
}

std::vector<float> to_float(const std::vector<double>& v) { return {v.begin(), v.end()}; }

std::string name_of(const shape& s) {
  std::string name = "n" + std::to_string(s.batch) + "_c" + std::to_string(s.classes) + "_s" +
                     std::to_string(s.spatial);
  if (s.row_stride != 0) name += "_stride" + std::to_string(s.row_stride);
  if (s.grad_row_stride != 0) name += "_grad" + std::to_string(s.grad_row_stride);
  return name;
}

void PrintTo(const dtype_reduction& c, std::ostream* os) {
  *os << names::join({fusedloss_dtype_string(c.dtype), fusedloss_reduction_string(c.reduction)});
}

std::vector<dtype_reduction> with_every_reduction(std::initializer_list<fusedloss_dtype> dtypes) {
  std::vector<dtype_reduction> cases;
  for (const fusedloss_dtype dtype : dtypes) {
    for (const fusedloss_reduction reduction : kReductions) cases.push_back({dtype, reduction});
  }
  return cases;
}

std::vector<double> random_probabilities(const ce_params& p, std::mt19937_64& rng) {
  const int64_t C = p.num_classes, S = p.spatial;
  std::vector<double> q = checks::uniform(rng, p.batch * C * S, 0, 1);
  for (int64_t n = 0; n < p.batch; ++n) {
    for (int64_t s = 0; s < S; ++s) {
      double sum = 0;
      for (int64_t c = 0; c < C; ++c) sum += q[(n * C + c) * S + s];
      for (int64_t c = 0; c < C; ++c) q[(n * C + c) * S + s] /= sum;
    }
  }
  return q;
}

}  // namespace row_loss_tests
