// The element-loss tests' shared helpers that are not templates (support.hpp).
#include "support.hpp"

#include <cmath>
#include <cstring>
#include <iomanip>
#include <sstream>

namespace element_loss_tests {

std::string show(double v) {
  std::ostringstream s;
  s << std::setprecision(17) << v;
  return s.str();
}

void expect_all_accepted(const std::vector<double>& got, const std::vector<double>& want,
                         const tolerance& tol, const char* what) {
  ASSERT_EQ(got.size(), want.size()) << what;
  for (size_t i = 0; i < got.size(); ++i) {
    EXPECT_TRUE(tol.accepts(got[i], want[i]))
        << what << "[" << i << "]: got " << show(got[i]) << ", want " << show(want[i]);
  }
}

void expect_values(const std::vector<double>& got, const std::vector<double>& want,
                   const char* what) {
  expect_all_accepted(got, want, tolerance{1e-300, 4e-16}, what);
}

bool same_bits(double a, double b) { return std::memcmp(&a, &b, sizeof a) == 0; }

void expect_bitwise_equal(const std::vector<double>& got, const std::vector<double>& want,
                          const char* what) {
  ASSERT_EQ(got.size(), want.size()) << what;
  for (size_t i = 0; i < got.size(); ++i) {
    EXPECT_TRUE(same_bits(got[i], want[i]))
        << what << "[" << i << "]: " << show(got[i]) << " vs " << show(want[i]);
  }
}

std::vector<float> as_floats(const std::vector<double>& v) { return {v.begin(), v.end()}; }

std::vector<double> hard_targets(std::mt19937_64& rng, size_t count) {
  std::bernoulli_distribution coin(0.5);
  std::vector<double> y(count);
  for (auto& v : y) v = coin(rng) ? 1.0 : 0.0;
  return y;
}

std::vector<double> mixed_targets(std::mt19937_64& rng, size_t count) {
  std::uniform_int_distribution<int> kind(0, 2);
  std::uniform_real_distribution<double> soft(0.05, 0.95);
  std::vector<double> y(count);
  for (auto& v : y) {
    const int k = kind(rng);
    v = k == 2 ? soft(rng) : k;
  }
  return y;
}

double sigmoid(double x) { return 1.0 / (1.0 + std::exp(-x)); }

fusedloss::bce_params bce_params(fusedloss_reduction r) {
  auto p = fusedloss::make_bce_params();
  p.reduction = r;
  return p;
}

fusedloss::sigmoid_focal_params focal_params(double alpha, double gamma, fusedloss_reduction r) {
  auto p = fusedloss::make_sigmoid_focal_params();
  p.alpha = alpha;
  p.gamma = gamma;
  p.reduction = r;
  return p;
}

fusedloss::mse_params mse_params(fusedloss_reduction r) {
  auto p = fusedloss::make_mse_params();
  p.reduction = r;
  return p;
}

const char* name_of(loss_config l) {
  switch (l) {
    case loss_config::bce:
      return "bce";
    case loss_config::sigmoid_focal:
      return "sigmoid_focal_alpha0p25_gamma2";
    case loss_config::sigmoid_focal_gamma_half:
      return "sigmoid_focal_gamma0p5";
    case loss_config::mse:
      break;
  }
  return "mse";
}

void PrintTo(loss_config l, std::ostream* os) { *os << name_of(l); }

}  // namespace element_loss_tests
