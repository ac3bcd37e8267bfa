/* The public header compiles as C99, and every loss's calls are reachable from C. Each loss runs
 * forward_backward on a small CPU problem and must produce a finite loss and a written gradient;
 * a refused call must name its argument. */
#include <math.h>
#include <stdio.h>
#include <string.h>

#include "fusedloss/fusedloss.h"

static int failures = 0;

static void expect(int ok, const char* what) {
  if (!ok) {
    fprintf(stderr, "FAILED: %s\n", what);
    ++failures;
  }
}

/* Takes the status rather than the call: C leaves the order of argument evaluation open, so the
 * loss must be read after the call has returned. */
static void expect_written(fusedloss_status s, float loss, const float* grad, int count,
                           const char* what) {
  int i;
  expect(s == FUSEDLOSS_SUCCESS, what);
  expect(isfinite(loss), what);
  for (i = 0; i < count; ++i) expect(isfinite(grad[i]), what);
}

int main(void) {
  const float logits[6] = {0.5f, -1.0f, 2.0f, 0.25f, -0.75f, 1.5f};
  const float probabilities[6] = {1.0f, 0.0f, 0.0f, 0.5f, 0.0f, 0.5f};
  const int64_t classes[2] = {2, 0};
  float grad[6];
  float loss = NAN;
  size_t bytes = 1;
  fusedloss_status status;
  fusedloss_error err;

  fusedloss_bce_params bce;
  fusedloss_sigmoid_focal_params focal;
  fusedloss_mse_params mse;
  fusedloss_cross_entropy_params ce;
  fusedloss_softmax_focal_params sfocal;
  fusedloss_cross_entropy_shard_params shard;
  float summary[FUSEDLOSS_SHARD_SUMMARY_FIELDS * 2];

  expect(fusedloss_version() == FUSEDLOSS_VERSION, "the library's version is the header's");
  expect(FUSEDLOSS_VERSION == FUSEDLOSS_VERSION_MAJOR * 10000 + FUSEDLOSS_VERSION_MINOR * 100 +
                                  FUSEDLOSS_VERSION_PATCH,
         "FUSEDLOSS_VERSION encodes major.minor.patch");

  fusedloss_bce_params_init(&bce);
  bce.numel = 6;
  bce.logits = logits;
  bce.targets = probabilities;
  bce.loss = &loss;
  bce.grad_logits = grad;
  expect(fusedloss_bce_workspace_size(&bce, &bytes, &err) == FUSEDLOSS_SUCCESS && bytes == 0,
         "bce workspace is 0 on the CPU");
  memset(grad, 0xFF, sizeof grad);
  status = fusedloss_bce_forward_backward(&bce, NULL, 0, NULL, &err);
  expect_written(status, loss, grad, 6, "bce");

  fusedloss_sigmoid_focal_params_init(&focal);
  focal.numel = 6;
  focal.logits = logits;
  focal.targets = probabilities;
  focal.reduction = FUSEDLOSS_REDUCTION_SUM;
  focal.loss = &loss;
  focal.grad_logits = grad;
  memset(grad, 0xFF, sizeof grad);
  status = fusedloss_sigmoid_focal_forward_backward(&focal, NULL, 0, NULL, &err);
  expect_written(status, loss, grad, 6, "sigmoid focal");

  fusedloss_mse_params_init(&mse);
  mse.numel = 6;
  mse.logits = logits;
  mse.targets = probabilities;
  mse.loss = &loss;
  mse.grad_logits = grad;
  memset(grad, 0xFF, sizeof grad);
  status = fusedloss_mse_forward_backward(&mse, NULL, 0, NULL, &err);
  expect_written(status, loss, grad, 6, "mse");

  fusedloss_cross_entropy_params_init(&ce);
  ce.batch = 2;
  ce.num_classes = 3;
  ce.logits = logits;
  ce.targets = classes;
  ce.label_smoothing = 0.1;
  ce.loss = &loss;
  ce.grad_logits = grad;
  memset(grad, 0xFF, sizeof grad);
  status = fusedloss_cross_entropy_forward_backward(&ce, NULL, 0, NULL, &err);
  expect_written(status, loss, grad, 6, "cross-entropy, class indices");
  ce.targets = probabilities;
  ce.targets_dtype = FUSEDLOSS_FLOAT32;
  memset(grad, 0xFF, sizeof grad);
  status = fusedloss_cross_entropy_forward_backward(&ce, NULL, 0, NULL, &err);
  expect_written(status, loss, grad, 6, "cross-entropy, probabilities");

  fusedloss_softmax_focal_params_init(&sfocal);
  sfocal.batch = 2;
  sfocal.num_classes = 3;
  sfocal.logits = logits;
  sfocal.targets = classes;
  sfocal.loss = &loss;
  sfocal.grad_logits = grad;
  memset(grad, 0xFF, sizeof grad);
  status = fusedloss_softmax_focal_forward_backward(&sfocal, NULL, 0, NULL, &err);
  expect_written(status, loss, grad, 6, "softmax focal");

  /* One rank holding the whole vocabulary: the shard calls give cross-entropy's loss. */
  fusedloss_cross_entropy_shard_params_init(&shard);
  shard.batch = 2;
  shard.num_classes = 3;
  shard.vocab_size = 3;
  shard.logits = logits;
  shard.targets = classes;
  shard.summary = summary;
  shard.loss = &loss;
  shard.grad_logits = grad;
  memset(grad, 0xFF, sizeof grad);
  status = fusedloss_cross_entropy_shard_partial(&shard, NULL, 0, NULL, &err);
  if (status == FUSEDLOSS_SUCCESS) {
    status = fusedloss_cross_entropy_shard_rescale(&shard, NULL, 0, NULL, &err);
  }
  if (status == FUSEDLOSS_SUCCESS) {
    status = fusedloss_cross_entropy_shard_finish(&shard, NULL, 0, NULL, &err);
  }
  expect_written(status, loss, grad, 6, "cross-entropy shard calls");

  sfocal.gamma = -1.0;
  expect(
      fusedloss_softmax_focal_forward(&sfocal, NULL, 0, NULL, &err) == FUSEDLOSS_INVALID_ARGUMENT,
      "a negative gamma is refused");
  expect(err.argument != NULL && strcmp(err.argument, "gamma") == 0, "the refusal names gamma");

  if (failures == 0) printf("C ABI: every loss reachable from C\n");
  return failures == 0 ? 0 : 1;
}
