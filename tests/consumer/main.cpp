// MSE of one element through the installed headers and library: (3 - 1)^2 = 4, gradient 2 * 2.
#include <cstdio>

#include "fusedloss/fusedloss.hpp"

int main() {
  const float prediction = 3.0f, target = 1.0f;
  float loss = 0.0f, grad = 0.0f;
  auto p = fusedloss::make_mse_params();
  p.numel = 1;
  p.logits = &prediction;
  p.targets = &target;
  p.loss = &loss;
  p.grad_logits = &grad;
  fusedloss::forward_backward(p);
  std::printf("loss %g grad %g\n", loss, grad);
  return loss == 4.0f && grad == 4.0f ? 0 : 1;
}
