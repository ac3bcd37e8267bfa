// Linear + cross-entropy in double, the plain way: the whole (N, V) product, cross-entropy's
// reference on it, then the gradient's two products and its column sum. It shares nothing with
// the CUDA path's chunks but the cross-entropy reference it is checked against anyway.
#include <cstdint>
#include <vector>

#include "dtype.hpp"
#include "reference/reference.hpp"

namespace fusedloss::reference {

int64_t linear_cross_entropy(const fusedloss_linear_cross_entropy_params& p, call c) {
  const int64_t n = p.batch, h = p.hidden, v = p.num_classes;
  const fusedloss_dtype dtype = p.input_dtype;
  const fusedloss_dtype loss_dtype = host::loss_dtype(dtype);
  const auto x = [&](int64_t r, int64_t k) {
    return host::load(p.input, dtype, r * p.input_row_stride + k);
  };
  const auto w = [&](int64_t cls, int64_t k) {
    return host::load(p.linear_weight, dtype, cls * h + k);
  };

  std::vector<double> logits(static_cast<size_t>(n * v));
  for (int64_t r = 0; r < n; ++r) {
    for (int64_t cls = 0; cls < v; ++cls) {
      double z = p.linear_bias != nullptr ? host::load(p.linear_bias, dtype, cls) : 0.0;
      for (int64_t k = 0; k < h; ++k) z += x(r, k) * w(cls, k);
      logits[r * v + cls] = z;
    }
  }

  // Cross-entropy's reference on the float64 logits, its outputs in float64 buffers that are
  // stored in the loss dtype afterwards.
  const bool none = p.reduction == FUSEDLOSS_REDUCTION_NONE;
  const int64_t loss_count = none ? n : 1;
  std::vector<double> loss(loss_count), z_loss(loss_count), lse(n), upstream(loss_count);
  std::vector<double> grad(c == call::forward ? 0 : static_cast<size_t>(n * v));
  if (c == call::backward) {
    for (int64_t i = 0; i < loss_count; ++i) upstream[i] = host::load(p.grad_loss, loss_dtype, i);
  }
  fusedloss_cross_entropy_params q{};
  q.struct_size = sizeof q;
  q.device = FUSEDLOSS_DEVICE_CPU;
  q.batch = n;
  q.num_classes = v;
  q.spatial = 1;
  q.row_stride = v;
  q.grad_row_stride = v;
  q.logits = logits.data();
  q.logits_dtype = FUSEDLOSS_FLOAT64;
  q.targets = p.targets;
  q.targets_dtype = p.targets_dtype;
  q.weight = p.weight;
  q.ignore_index = p.ignore_index;
  q.label_smoothing = p.label_smoothing;
  q.z_loss = p.z_loss;
  q.softcap = p.softcap;
  q.reduction = p.reduction;
  q.empty_mean = p.empty_mean;
  q.loss = loss.data();
  q.lse = c == call::backward ? nullptr : lse.data();
  q.z_loss_out = z_loss.data();
  q.grad_logits = grad.empty() ? nullptr : grad.data();
  q.grad_loss = upstream.data();
  q.grad_scale = p.grad_scale;
  q.grad_scale_ptr = p.grad_scale_ptr;
  q.invalid_target_count = p.invalid_target_count;
  const int64_t invalid = cross_entropy(q, c);

  if (c != call::backward) {
    for (int64_t i = 0; i < loss_count; ++i) {
      if (p.loss != nullptr) host::store(p.loss, loss_dtype, i, loss[i]);
      if (p.z_loss_out != nullptr) host::store(p.z_loss_out, loss_dtype, i, z_loss[i]);
    }
    if (p.lse != nullptr) {
      for (int64_t r = 0; r < n; ++r) host::store(p.lse, loss_dtype, r, lse[r]);
    }
  }
  if (c == call::forward) return invalid;

  if (p.grad_input != nullptr) {
    for (int64_t r = 0; r < n; ++r) {
      for (int64_t k = 0; k < h; ++k) {
        double g = 0;
        for (int64_t cls = 0; cls < v; ++cls) g += grad[r * v + cls] * w(cls, k);
        host::store(p.grad_input, dtype, r * p.grad_input_row_stride + k, g);
      }
    }
  }
  const auto accumulate = [&](void* out, int64_t i, double g) {
    if (p.accumulate_grad_linear != 0) g += host::load(out, p.grad_linear_dtype, i);
    host::store(out, p.grad_linear_dtype, i, g);
  };
  if (p.grad_linear_weight != nullptr) {
    for (int64_t cls = 0; cls < v; ++cls) {
      for (int64_t k = 0; k < h; ++k) {
        double g = 0;
        for (int64_t r = 0; r < n; ++r) g += grad[r * v + cls] * x(r, k);
        accumulate(p.grad_linear_weight, cls * h + k, g);
      }
    }
  }
  if (p.grad_linear_bias != nullptr) {
    for (int64_t cls = 0; cls < v; ++cls) {
      double g = 0;
      for (int64_t r = 0; r < n; ++r) g += grad[r * v + cls];
      accumulate(p.grad_linear_bias, cls, g);
    }
  }
  return invalid;
}

}  // namespace fusedloss::reference
