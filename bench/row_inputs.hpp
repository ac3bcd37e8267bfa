// The row rows' inputs: the device's buffers of one (shape, dtype), generated in that dtype on the
// host's threads and uploaded. Logits are a triangular distribution on [-4, 4] (the sum of two
// uniforms), never 0; targets are int64 class indices uniform in [0, C), and a second copy with
// every tenth row's target (rows 1, 11, 21, ...) at ignore_index (-100).
#pragma once

#include <cstdint>
#include <string>

#include "fusedloss/fusedloss.h"
#include "memory.hpp"

namespace fusedloss::bench {

/// The device's buffers of one (shape, dtype): logits, gradient, int64 targets (and the same with
/// ignored rows), per-row LSE, the loss, and grad_loss = 1 for the backward call. One set lives at
/// a time; preparing one frees the element benchmarks' inputs first.
class row_inputs {
 public:
  static row_inputs& get() {
    static row_inputs r;
    return r;
  }

  /// Makes the set of (dtype, batch, classes) the one held; empty, or why it failed.
  std::string prepare(fusedloss_dtype dtype, int64_t batch, int64_t classes);
  void release();

  const void* logits() const { return logits_.data(); }
  void* grad() const { return grad_.data(); }
  const void* targets() const { return targets_.data(); }
  const void* ignored_targets() const { return ignored_.data(); }
  void* lse() const { return lse_.data(); }
  void* loss() const { return loss_.data(); }
  const void* grad_loss() const { return grad_loss_.data(); }

 private:
  bool ready_ = false;
  fusedloss_dtype dtype_ = FUSEDLOSS_FLOAT32;
  int64_t batch_ = 0, classes_ = 0;
  device_buffer logits_, grad_, targets_, ignored_, lse_, loss_, grad_loss_;
};

}  // namespace fusedloss::bench
