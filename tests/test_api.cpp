// The API's contract outside the formulas: defaults, statuses, the C++ layer's exceptions, and bad
// input. Every refused argument must return FUSEDLOSS_INVALID_ARGUMENT naming it, and leave every
// output buffer exactly as it was (they are poisoned beforehand and compared byte for byte).
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <functional>
#include <limits>
#include <string>
#include <vector>

#include "checks.hpp"
#include "fusedloss/fusedloss.hpp"

namespace {

using fusedloss::checks::buffer;

constexpr int64_t kRows = 3;
constexpr int64_t kClasses = 4;
constexpr int64_t kElements = kRows * kClasses;

// Valid inputs and poisoned outputs for one small problem, shared by every loss's params.
struct problem {
  buffer logits{FUSEDLOSS_FLOAT32, {0.5, -1, 2, 0.25, -0.75, 1.5, 3, -2, 0.1, 0.2, -0.3, 1}};
  buffer soft_targets{FUSEDLOSS_FLOAT32, {1, 0, 0.5, 0, 1, 1, 0, 0.25, 0, 1, 0, 0}};
  buffer class_targets{FUSEDLOSS_INT64, {2, 0, 3}};
  std::vector<float> weight = std::vector<float>(kElements, 0.5f);
  buffer grad_loss{FUSEDLOSS_FLOAT32, std::vector<double>(kElements, 1.0)};
  buffer loss = buffer::poisoned(FUSEDLOSS_FLOAT32, kElements);
  buffer lse = buffer::poisoned(FUSEDLOSS_FLOAT32, kRows);
  buffer z_loss = buffer::poisoned(FUSEDLOSS_FLOAT32, kRows);
  buffer grad = buffer::poisoned(FUSEDLOSS_FLOAT32, kElements);

  bool outputs_untouched() const {
    for (const buffer* b : {&loss, &lse, &z_loss, &grad}) {
      const auto* bytes = static_cast<const unsigned char*>(b->data());
      for (size_t i = 0; i < b->size() * sizeof(float); ++i) {
        if (bytes[i] != 0xFF) return false;
      }
    }
    return true;
  }

  template <class Params>
  void fill_common(Params& p) {
    p.logits = logits.data();
    p.loss = loss.data();
    p.grad_logits = grad.data();
    p.grad_loss = grad_loss.data();
    p.reduction = FUSEDLOSS_REDUCTION_NONE;
  }

  template <class Params>
  void fill_elements(Params& p) {
    fill_common(p);
    p.numel = kElements;
    p.targets = soft_targets.data();
  }

  template <class Params>
  void fill_rows(Params& p) {
    fill_common(p);
    p.batch = kRows;
    p.num_classes = kClasses;
    p.targets = class_targets.data();
    p.lse = lse.data();
  }

  fusedloss_bce_params bce() {
    auto p = fusedloss::make_bce_params();
    fill_elements(p);
    p.weight = weight.data();
    p.num_classes = kClasses;
    p.pos_weight = weight.data();
    return p;
  }
  fusedloss_sigmoid_focal_params sigmoid_focal() {
    auto p = fusedloss::make_sigmoid_focal_params();
    fill_elements(p);
    return p;
  }
  fusedloss_mse_params mse() {
    auto p = fusedloss::make_mse_params();
    fill_elements(p);
    return p;
  }
  fusedloss_cross_entropy_params cross_entropy() {
    auto p = fusedloss::make_cross_entropy_params();
    fill_rows(p);
    p.weight = weight.data();
    p.z_loss_out = z_loss.data();
    return p;
  }
  fusedloss_softmax_focal_params softmax_focal() {
    auto p = fusedloss::make_softmax_focal_params();
    fill_rows(p);
    p.alpha = weight.data();
    return p;
  }
};

// Stores an int that is no enumerator into an enum field, as a C caller can (a C++ cast to the enum
// type of a value outside its range would itself be undefined).
template <class Enum>
void store_raw(Enum& field, int value) {
  std::memcpy(&field, &value, sizeof value);
}

// The three calls of a loss, as C function pointers, so one test body serves every call.
template <class Params>
using c_call = fusedloss_status (*)(const Params*, void*, size_t, void*, fusedloss_error*);

template <class Params>
struct calls {
  c_call<Params> forward, backward, forward_backward;
};

const calls<fusedloss_bce_params> kBce{fusedloss_bce_forward, fusedloss_bce_backward,
                                       fusedloss_bce_forward_backward};
const calls<fusedloss_sigmoid_focal_params> kSigmoidFocal{fusedloss_sigmoid_focal_forward,
                                                          fusedloss_sigmoid_focal_backward,
                                                          fusedloss_sigmoid_focal_forward_backward};
const calls<fusedloss_mse_params> kMse{fusedloss_mse_forward, fusedloss_mse_backward,
                                       fusedloss_mse_forward_backward};
const calls<fusedloss_cross_entropy_params> kCrossEntropy{fusedloss_cross_entropy_forward,
                                                          fusedloss_cross_entropy_backward,
                                                          fusedloss_cross_entropy_forward_backward};
const calls<fusedloss_softmax_focal_params> kSoftmaxFocal{fusedloss_softmax_focal_forward,
                                                          fusedloss_softmax_focal_backward,
                                                          fusedloss_softmax_focal_forward_backward};

// Runs every call on the params `make` builds, changed by `spoil`, and expects each call to refuse
// them naming `argument`, with every output untouched. The unspoiled params must pass (so the test
// proves the one change is what is refused).
template <class Params>
void expect_refused(Params (problem::*make)(), const calls<Params>& c,
                    const std::function<void(Params&)>& spoil, const char* argument) {
  SCOPED_TRACE(std::string("argument ") + argument);
  for (auto fn : {c.forward, c.backward, c.forward_backward}) {
    problem valid;
    Params good = (valid.*make)();
    fusedloss_error err;
    ASSERT_EQ(fn(&good, nullptr, 0, nullptr, &err), FUSEDLOSS_SUCCESS) << err.message;

    problem spoiled;
    Params bad = (spoiled.*make)();
    spoil(bad);
    std::memset(&err, 0, sizeof err);
    EXPECT_EQ(fn(&bad, nullptr, 0, nullptr, &err), FUSEDLOSS_INVALID_ARGUMENT);
    EXPECT_EQ(err.status, FUSEDLOSS_INVALID_ARGUMENT);
    ASSERT_NE(err.argument, nullptr);
    EXPECT_STREQ(err.argument, argument);
    EXPECT_NE(std::string(err.message).find(argument), std::string::npos) << err.message;
    EXPECT_TRUE(spoiled.outputs_untouched());
  }
}

// The checks every loss shares, on its own params type.
template <class Params>
void expect_common_refusals(Params (problem::*make)(), const calls<Params>& c) {
  expect_refused<Params>(
      make, c, [](Params& p) { p.struct_size -= 8; }, "struct_size");
  expect_refused<Params>(
      make, c, [](Params& p) { store_raw(p.device, 7); }, "device");
  expect_refused<Params>(
      make, c, [](Params& p) { p.logits_dtype = FUSEDLOSS_INT32; }, "logits_dtype");
  expect_refused<Params>(
      make, c, [](Params& p) { store_raw(p.logits_dtype, 42); }, "logits_dtype");
  expect_refused<Params>(
      make, c, [](Params& p) { store_raw(p.targets_dtype, 42); }, "targets_dtype");
  expect_refused<Params>(
      make, c, [](Params& p) { store_raw(p.reduction, 3); }, "reduction");
  expect_refused<Params>(
      make, c, [](Params& p) { store_raw(p.empty_mean, 2); }, "empty_mean");
  expect_refused<Params>(
      make, c, [](Params& p) { p.logits = nullptr; }, "logits");
  expect_refused<Params>(
      make, c, [](Params& p) { p.targets = nullptr; }, "targets");
  // Of two bad arrays the first a caller passes is named: the logits before the targets.
  expect_refused<Params>(
      make, c,
      [](Params& p) {
        p.logits = nullptr;
        p.targets = nullptr;
      },
      "logits");
  // Logits of float64 run on the CPU only.
  expect_refused<Params>(
      make, c,
      [](Params& p) {
        p.device = FUSEDLOSS_DEVICE_CUDA;
        p.logits_dtype = FUSEDLOSS_FLOAT64;
        if (p.targets_dtype == FUSEDLOSS_FLOAT32) p.targets_dtype = FUSEDLOSS_FLOAT64;
      },
      "logits_dtype");
}

template <class Params>
void expect_output_refusals(Params (problem::*make)(), const calls<Params>& c) {
  problem pr;
  fusedloss_error err;
  Params p = (pr.*make)();
  p.loss = nullptr;
  EXPECT_EQ(c.forward(&p, nullptr, 0, nullptr, &err), FUSEDLOSS_INVALID_ARGUMENT);
  EXPECT_STREQ(err.argument, "loss");
  EXPECT_EQ(c.forward_backward(&p, nullptr, 0, nullptr, &err), FUSEDLOSS_SUCCESS)
      << "forward_backward's loss is optional";

  problem pr2;
  p = (pr2.*make)();
  p.grad_logits = nullptr;
  EXPECT_EQ(c.backward(&p, nullptr, 0, nullptr, &err), FUSEDLOSS_INVALID_ARGUMENT);
  EXPECT_STREQ(err.argument, "grad_logits");
  EXPECT_EQ(c.forward_backward(&p, nullptr, 0, nullptr, &err), FUSEDLOSS_INVALID_ARGUMENT);
  EXPECT_STREQ(err.argument, "grad_logits");
  EXPECT_TRUE(pr2.outputs_untouched());

  p = (pr2.*make)();
  p.grad_loss = nullptr;
  EXPECT_EQ(c.backward(&p, nullptr, 0, nullptr, &err), FUSEDLOSS_INVALID_ARGUMENT);
  EXPECT_STREQ(err.argument, "grad_loss");
  EXPECT_TRUE(pr2.outputs_untouched());

  EXPECT_EQ(c.forward(nullptr, nullptr, 0, nullptr, &err), FUSEDLOSS_INVALID_ARGUMENT);
  EXPECT_STREQ(err.argument, "p");
}

TEST(BadInput, Bce) {
  using P = fusedloss_bce_params;
  expect_common_refusals<P>(&problem::bce, kBce);
  expect_output_refusals<P>(&problem::bce, kBce);
  expect_refused<P>(
      &problem::bce, kBce, [](P& p) { p.numel = -1; }, "numel");
  expect_refused<P>(
      &problem::bce, kBce, [](P& p) { p.targets_dtype = FUSEDLOSS_INT64; }, "targets_dtype");
  expect_refused<P>(
      &problem::bce, kBce, [](P& p) { p.targets_dtype = FUSEDLOSS_FLOAT16; }, "targets_dtype");
  expect_refused<P>(
      &problem::bce, kBce, [](P& p) { store_raw(p.weight_layout, 5); }, "weight_layout");
  expect_refused<P>(
      &problem::bce, kBce, [](P& p) { p.num_classes = 5; }, "num_classes");
  expect_refused<P>(
      &problem::bce, kBce, [](P& p) { p.num_classes = 0; }, "num_classes");
  expect_refused<P>(
      &problem::bce, kBce,
      [](P& p) {
        p.pos_weight = nullptr;
        p.weight_layout = FUSEDLOSS_WEIGHT_PER_CLASS;
        p.num_classes = -2;
      },
      "num_classes");
}

TEST(BadInput, SigmoidFocal) {
  using P = fusedloss_sigmoid_focal_params;
  expect_common_refusals<P>(&problem::sigmoid_focal, kSigmoidFocal);
  expect_output_refusals<P>(&problem::sigmoid_focal, kSigmoidFocal);
  expect_refused<P>(
      &problem::sigmoid_focal, kSigmoidFocal, [](P& p) { p.numel = -5; }, "numel");
  expect_refused<P>(
      &problem::sigmoid_focal, kSigmoidFocal, [](P& p) { p.gamma = -0.5; }, "gamma");
  expect_refused<P>(
      &problem::sigmoid_focal, kSigmoidFocal, [](P& p) { p.gamma = INFINITY; }, "gamma");
  expect_refused<P>(
      &problem::sigmoid_focal, kSigmoidFocal, [](P& p) { p.gamma = NAN; }, "gamma");
  expect_refused<P>(
      &problem::sigmoid_focal, kSigmoidFocal, [](P& p) { p.alpha = NAN; }, "alpha");
}

TEST(BadInput, Mse) {
  using P = fusedloss_mse_params;
  expect_common_refusals<P>(&problem::mse, kMse);
  expect_output_refusals<P>(&problem::mse, kMse);
  expect_refused<P>(
      &problem::mse, kMse, [](P& p) { p.numel = -1; }, "numel");
}

// Checks of the (N, C, S) layout shared by both row losses.
template <class Params>
void expect_row_refusals(Params (problem::*make)(), const calls<Params>& c) {
  constexpr int64_t big = std::numeric_limits<int64_t>::max() / 2;
  expect_refused<Params>(
      make, c, [](Params& p) { p.batch = -1; }, "batch");
  expect_refused<Params>(
      make, c, [](Params& p) { p.num_classes = -1; }, "num_classes");
  expect_refused<Params>(
      make, c, [](Params& p) { p.num_classes = 0; }, "num_classes");
  expect_refused<Params>(
      make, c, [](Params& p) { p.spatial = -1; }, "spatial");
  expect_refused<Params>(
      make, c, [](Params& p) { p.row_stride = kClasses - 1; }, "row_stride");
  expect_refused<Params>(
      make, c, [](Params& p) { p.row_stride = -4; }, "row_stride");
  expect_refused<Params>(
      make, c, [](Params& p) { p.grad_row_stride = 2; }, "grad_row_stride");
  expect_refused<Params>(
      make, c, [](Params& p) { p.row_stride = big; }, "row_stride");
  expect_refused<Params>(
      make, c, [](Params& p) { p.spatial = big; }, "spatial");
  expect_refused<Params>(
      make, c,
      [](Params& p) {
        p.num_classes = 1;
        p.spatial = big;
      },
      "batch");
  // In place needs the gradient laid out exactly as the logits.
  expect_refused<Params>(
      make, c,
      [](Params& p) {
        p.grad_logits = const_cast<void*>(p.logits);
        p.row_stride = kClasses;
        p.grad_row_stride = kClasses + 1;
        p.batch = 2;
      },
      "grad_row_stride");
  expect_refused<Params>(
      make, c, [](Params& p) { p.targets_dtype = FUSEDLOSS_BFLOAT16; }, "targets_dtype");
}

TEST(BadInput, CrossEntropy) {
  using P = fusedloss_cross_entropy_params;
  expect_common_refusals<P>(&problem::cross_entropy, kCrossEntropy);
  expect_output_refusals<P>(&problem::cross_entropy, kCrossEntropy);
  expect_row_refusals<P>(&problem::cross_entropy, kCrossEntropy);
  for (double eps : {-0.1, 1.5, double(NAN)}) {
    expect_refused<P>(
        &problem::cross_entropy, kCrossEntropy, [eps](P& p) { p.label_smoothing = eps; },
        "label_smoothing");
  }
  for (double z : {-1e-4, double(NAN), double(INFINITY)}) {
    expect_refused<P>(
        &problem::cross_entropy, kCrossEntropy, [z](P& p) { p.z_loss = z; }, "z_loss");
  }
  for (double s : {-30.0, double(NAN), double(INFINITY)}) {
    expect_refused<P>(
        &problem::cross_entropy, kCrossEntropy, [s](P& p) { p.softcap = s; }, "softcap");
  }
}

TEST(BadInput, SoftmaxFocal) {
  using P = fusedloss_softmax_focal_params;
  expect_common_refusals<P>(&problem::softmax_focal, kSoftmaxFocal);
  expect_output_refusals<P>(&problem::softmax_focal, kSoftmaxFocal);
  expect_row_refusals<P>(&problem::softmax_focal, kSoftmaxFocal);
  expect_refused<P>(
      &problem::softmax_focal, kSoftmaxFocal, [](P& p) { p.targets_dtype = FUSEDLOSS_FLOAT32; },
      "targets_dtype");
  expect_refused<P>(
      &problem::softmax_focal, kSoftmaxFocal, [](P& p) { p.gamma = -1; }, "gamma");
}

TEST(BadInput, WorkspaceQueryAndCounter) {
  problem pr;
  auto p = pr.cross_entropy();
  fusedloss_error err;
  EXPECT_EQ(fusedloss_cross_entropy_workspace_size(&p, nullptr, &err), FUSEDLOSS_INVALID_ARGUMENT);
  EXPECT_STREQ(err.argument, "bytes");
  p.struct_size = 1;
  size_t bytes = 0;
  EXPECT_EQ(fusedloss_cross_entropy_workspace_size(&p, &bytes, &err), FUSEDLOSS_INVALID_ARGUMENT);
  EXPECT_STREQ(err.argument, "struct_size");

  int64_t value = 0;
  EXPECT_EQ(fusedloss_read_and_clear_counter(nullptr, FUSEDLOSS_DEVICE_CPU, nullptr, &value, &err),
            FUSEDLOSS_INVALID_ARGUMENT);
  EXPECT_STREQ(err.argument, "counter");
  int64_t counter = 5;
  EXPECT_EQ(
      fusedloss_read_and_clear_counter(&counter, FUSEDLOSS_DEVICE_CPU, nullptr, nullptr, &err),
      FUSEDLOSS_INVALID_ARGUMENT);
  EXPECT_STREQ(err.argument, "value");
  EXPECT_EQ(counter, 5);
}

TEST(Api, DefaultsArePyTorchs) {
  const auto bce = fusedloss::make_bce_params();
  EXPECT_EQ(bce.struct_size, sizeof bce);
  EXPECT_EQ(bce.device, FUSEDLOSS_DEVICE_CPU);
  EXPECT_EQ(bce.reduction, FUSEDLOSS_REDUCTION_MEAN);
  EXPECT_EQ(bce.empty_mean, FUSEDLOSS_EMPTY_MEAN_NAN);
  EXPECT_EQ(bce.weight, nullptr);
  EXPECT_EQ(bce.pos_weight, nullptr);
  EXPECT_EQ(bce.grad_scale, 1.0f);

  const auto focal = fusedloss::make_sigmoid_focal_params();
  EXPECT_EQ(focal.alpha, 0.25);
  EXPECT_EQ(focal.gamma, 2.0);
  EXPECT_EQ(focal.reduction, FUSEDLOSS_REDUCTION_NONE);

  const auto ce = fusedloss::make_cross_entropy_params();
  EXPECT_EQ(ce.ignore_index, -100);
  EXPECT_EQ(ce.label_smoothing, 0.0);
  EXPECT_EQ(ce.z_loss, 0.0);
  EXPECT_EQ(ce.softcap, 0.0);
  EXPECT_EQ(ce.spatial, 1);
  EXPECT_EQ(ce.targets_dtype, FUSEDLOSS_INT64);
  EXPECT_EQ(ce.reduction, FUSEDLOSS_REDUCTION_MEAN);

  const auto sfocal = fusedloss::make_softmax_focal_params();
  EXPECT_EQ(sfocal.ignore_index, -100);
  EXPECT_EQ(sfocal.gamma, 2.0);
  EXPECT_EQ(sfocal.alpha, nullptr);
}

TEST(Api, SuccessClearsTheErrorAndTheCppLayerThrows) {
  problem pr;
  auto p = pr.cross_entropy();
  fusedloss_error err;
  std::strcpy(err.message, "stale");
  err.argument = "stale";
  ASSERT_EQ(fusedloss_cross_entropy_forward(&p, nullptr, 0, nullptr, &err), FUSEDLOSS_SUCCESS);
  EXPECT_EQ(err.status, FUSEDLOSS_SUCCESS);
  EXPECT_EQ(err.argument, nullptr);
  EXPECT_STREQ(err.message, "");

  p.label_smoothing = 2;
  try {
    fusedloss::forward(p);
    FAIL() << "expected fusedloss::error";
  } catch (const fusedloss::error& e) {
    EXPECT_EQ(e.status(), FUSEDLOSS_INVALID_ARGUMENT);
    EXPECT_STREQ(e.argument(), "label_smoothing");
    EXPECT_NE(std::string(e.what()).find("invalid argument"), std::string::npos) << e.what();
  }
  EXPECT_EQ(fusedloss::workspace_size(pr.mse()), 0u);
}

TEST(Api, Names) {
  EXPECT_STREQ(fusedloss_status_string(FUSEDLOSS_SUCCESS), "success");
  EXPECT_STREQ(fusedloss_status_string(FUSEDLOSS_INVALID_ARGUMENT), "invalid argument");
  EXPECT_STREQ(fusedloss_status_string(FUSEDLOSS_INVALID_TARGET), "invalid target");
  EXPECT_STREQ(fusedloss_status_string(FUSEDLOSS_NOT_IMPLEMENTED), "not implemented");
  EXPECT_STREQ(fusedloss_status_string(FUSEDLOSS_CUDA_ERROR), "CUDA error");
  EXPECT_STREQ(fusedloss_status_string(fusedloss_status(7)), "unknown status");
  EXPECT_STREQ(fusedloss_dtype_string(FUSEDLOSS_BFLOAT16), "bfloat16");
  EXPECT_STREQ(fusedloss_dtype_string(FUSEDLOSS_INT32), "int32");
  EXPECT_STREQ(fusedloss_dtype_string(fusedloss_dtype(7)), "unknown");
  EXPECT_STREQ(fusedloss_reduction_string(FUSEDLOSS_REDUCTION_SUM), "sum");
  EXPECT_STREQ(fusedloss_reduction_string(fusedloss_reduction(3)), "unknown");
  EXPECT_STREQ(fusedloss::name(fusedloss::call::forward_backward), "forward_backward");
  EXPECT_STREQ(fusedloss::name(fusedloss::shard_step::rescale), "rescale");
}

// The C++ layer's table reaches each loss's own C functions, call by call.
TEST(Api, TableOfEntryPoints) {
  using fusedloss::call;
  using fusedloss::entry_point;
  using P = fusedloss_softmax_focal_params;
  EXPECT_STREQ(fusedloss::c_api<P>::name, "softmax_focal");
  EXPECT_EQ(fusedloss::c_api<P>::workspace_size, &fusedloss_softmax_focal_workspace_size);
  EXPECT_EQ(entry_point<P>(call::forward), &fusedloss_softmax_focal_forward);
  EXPECT_EQ(entry_point<P>(call::backward), &fusedloss_softmax_focal_backward);
  EXPECT_EQ(entry_point<P>(call::forward_backward), &fusedloss_softmax_focal_forward_backward);
  EXPECT_EQ(entry_point<fusedloss_linear_cross_entropy_params>(call::backward),
            &fusedloss_linear_cross_entropy_backward);
  EXPECT_EQ(entry_point(fusedloss::shard_step::partial), &fusedloss_cross_entropy_shard_partial);
  EXPECT_EQ(entry_point(fusedloss::shard_step::rescale), &fusedloss_cross_entropy_shard_rescale);
  EXPECT_EQ(entry_point(fusedloss::shard_step::finish), &fusedloss_cross_entropy_shard_finish);
  EXPECT_EQ(fusedloss::make_bce_params().struct_size, sizeof(fusedloss_bce_params));
}

// A build without CUDA says so on the CUDA path and never falls back to the CPU silently; a build
// with it goes to the device (a CUDA error when there is none). An empty problem needs no buffers,
// so no host pointer is refused for its memory space and the test runs with or without a GPU.
TEST(Api, CudaPathWithoutCudaSaysSo) {
  auto p = fusedloss::make_cross_entropy_params();
  p.device = FUSEDLOSS_DEVICE_CUDA;
  p.reduction = FUSEDLOSS_REDUCTION_NONE;
  fusedloss_error err;
  size_t bytes = 0;
  const fusedloss_status query = fusedloss_cross_entropy_workspace_size(&p, &bytes, &err);
  const fusedloss_status call = fusedloss_cross_entropy_forward(&p, nullptr, 0, nullptr, &err);
  if (fusedloss_built_with_cuda()) {
    EXPECT_NE(query, FUSEDLOSS_NOT_IMPLEMENTED);
    EXPECT_NE(call, FUSEDLOSS_NOT_IMPLEMENTED);
  } else {
    EXPECT_EQ(query, FUSEDLOSS_NOT_IMPLEMENTED);
    EXPECT_EQ(call, FUSEDLOSS_NOT_IMPLEMENTED);
    EXPECT_STREQ(err.argument, "device");
    EXPECT_NE(std::string(err.message).find("built without CUDA"), std::string::npos);
  }
}

// The CUDA kernels keep double partials in the workspace, so on the CUDA path a workspace that is
// not 8-byte aligned is refused before anything else touches it, on every machine (the alignment
// is checked before the memory space, which needs a device). The problem is empty, so no other
// argument is refused for its memory space. The CPU reference ignores the workspace (fusedloss.h),
// so there the same pointer is no reason to refuse a call.
TEST(BadInput, MisalignedWorkspaceOnTheCudaPath) {
  alignas(8) unsigned char storage[64];
  for (const int offset : {1, 4}) {
    SCOPED_TRACE("workspace offset " + std::to_string(offset));
    void* misaligned = storage + offset;
    fusedloss_error err;

    auto ce = fusedloss::make_cross_entropy_params();
    ce.device = FUSEDLOSS_DEVICE_CUDA;
    ce.reduction = FUSEDLOSS_REDUCTION_NONE;
    for (auto fn :
         {kCrossEntropy.forward, kCrossEntropy.backward, kCrossEntropy.forward_backward}) {
      std::memset(&err, 0, sizeof err);
      EXPECT_EQ(fn(&ce, misaligned, 32, nullptr, &err), FUSEDLOSS_INVALID_ARGUMENT);
      EXPECT_EQ(err.status, FUSEDLOSS_INVALID_ARGUMENT);
      ASSERT_NE(err.argument, nullptr);
      EXPECT_STREQ(err.argument, "workspace");
      EXPECT_NE(std::string(err.message).find("8-byte aligned"), std::string::npos) << err.message;
    }
    auto bce = fusedloss::make_bce_params();
    bce.device = FUSEDLOSS_DEVICE_CUDA;
    bce.reduction = FUSEDLOSS_REDUCTION_NONE;
    EXPECT_EQ(fusedloss_bce_forward_backward(&bce, misaligned, 32, nullptr, &err),
              FUSEDLOSS_INVALID_ARGUMENT);
    EXPECT_STREQ(err.argument, "workspace");

    // The CPU reference on a real problem: the same workspace is accepted and its bytes untouched.
    problem pr;
    auto p = pr.cross_entropy();
    std::memset(storage, 0xA5, sizeof storage);
    EXPECT_EQ(kCrossEntropy.forward_backward(&p, misaligned, 32, nullptr, &err), FUSEDLOSS_SUCCESS)
        << err.message;
    for (const unsigned char b : storage) EXPECT_EQ(b, 0xA5);
  }
}

TEST(Api, CounterReadAndClearOnTheCpu) {
  int64_t counter = 7;
  EXPECT_EQ(fusedloss::read_and_clear_counter(&counter, FUSEDLOSS_DEVICE_CPU), 7);
  EXPECT_EQ(counter, 0);
}

}  // namespace

namespace {

// The upstream-gradient scaling: a no-op at exactly 1, one rounded multiply otherwise, and its bad
// input refused with the argument named and the data untouched.
TEST(ScaleInPlace, MultipliesOrLeavesAlone) {
  for (fusedloss_dtype dtype : {FUSEDLOSS_FLOAT64, FUSEDLOSS_FLOAT32, FUSEDLOSS_BFLOAT16}) {
    SCOPED_TRACE(fusedloss_dtype_string(dtype));
    const std::vector<double> values = {1.5, -2.25, 3.0e-3, 7.0};
    buffer data(dtype, values);
    const buffer one(FUSEDLOSS_BFLOAT16, {1.0});
    fusedloss::scale_in_place(data.data(), dtype, 4, one.data(), FUSEDLOSS_BFLOAT16,
                              FUSEDLOSS_DEVICE_CPU);
    EXPECT_EQ(data.values(), buffer(dtype, values).values());

    const buffer half(FUSEDLOSS_FLOAT32, {-0.5});
    fusedloss::scale_in_place(data.data(), dtype, 4, half.data(), FUSEDLOSS_FLOAT32,
                              FUSEDLOSS_DEVICE_CPU);
    // Halving is exact in every dtype, so the result is the stored value times -0.5 exactly.
    const std::vector<double> rounded = buffer(dtype, values).values();
    for (size_t i = 0; i < values.size(); ++i) EXPECT_EQ(data[i], -0.5 * rounded[i]);
  }
}

TEST(ScaleInPlace, BadInputIsRefused) {
  buffer data(FUSEDLOSS_FLOAT32, {1.0, 2.0});
  const buffer scale(FUSEDLOSS_FLOAT32, {3.0});
  fusedloss_error err;
  const auto refused = [&](fusedloss_status s, const char* argument) {
    EXPECT_EQ(s, FUSEDLOSS_INVALID_ARGUMENT);
    EXPECT_STREQ(err.argument, argument);
    EXPECT_EQ(data[0], 1.0);
    EXPECT_EQ(data[1], 2.0);
  };
  refused(fusedloss_scale_in_place(nullptr, FUSEDLOSS_FLOAT32, 2, scale.data(), FUSEDLOSS_FLOAT32,
                                   FUSEDLOSS_DEVICE_CPU, nullptr, &err),
          "data");
  refused(fusedloss_scale_in_place(data.data(), FUSEDLOSS_FLOAT32, 2, nullptr, FUSEDLOSS_FLOAT32,
                                   FUSEDLOSS_DEVICE_CPU, nullptr, &err),
          "scale");
  refused(fusedloss_scale_in_place(data.data(), FUSEDLOSS_FLOAT32, -1, scale.data(),
                                   FUSEDLOSS_FLOAT32, FUSEDLOSS_DEVICE_CPU, nullptr, &err),
          "numel");
  refused(fusedloss_scale_in_place(data.data(), FUSEDLOSS_INT64, 2, scale.data(), FUSEDLOSS_FLOAT32,
                                   FUSEDLOSS_DEVICE_CPU, nullptr, &err),
          "dtype");
  refused(fusedloss_scale_in_place(data.data(), FUSEDLOSS_FLOAT32, 2, scale.data(), FUSEDLOSS_INT32,
                                   FUSEDLOSS_DEVICE_CPU, nullptr, &err),
          "scale_dtype");
  refused(fusedloss_scale_in_place(data.data(), FUSEDLOSS_FLOAT64, 2, scale.data(),
                                   FUSEDLOSS_FLOAT32, FUSEDLOSS_DEVICE_CUDA, nullptr, &err),
          "dtype");
}

}  // namespace
