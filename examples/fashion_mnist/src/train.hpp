// One training run: a model (softmax regression or a one-hidden-layer MLP), a loss computed by
// fusedloss, an initialisation, minibatch SGD with momentum or Adam on a cosine schedule, and per
// epoch the train loss, the logit-gradient norm, test accuracy and calibration.
#pragma once

#include <array>
#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "backend.hpp"
#include "data.hpp"

namespace fm {

enum class Model { softmax, mlp };
enum class Loss { ce, ce_ls, focal, sigmoid_mse };
enum class Init { standard, saturated };
enum class Optimizer { sgd, adam };

const char* key(Model m);      // "softmax", "mlp"
const char* key(Loss l);       // "ce", "ce_ls", "focal", "sigmoid_mse"
const char* key(Init i);       // "standard", "saturated"
const char* key(Optimizer o);  // "sgd", "adam"
std::string title(Model m, int hidden);
const char* title(Loss l);

struct Schedule {
  int epochs = 20;
  int batch = 100;
  Optimizer optimizer = Optimizer::sgd;
  float lr = 0.05f;  // peak rate; cosine decay to 0 over all steps
  float momentum = 0.9f;
  int hidden = 256;
  uint64_t seed = 1;
  float saturated_rms = 15;  // RMS of the initial logits under Init::saturated
};

constexpr int kBins = 15;  // equal-width confidence bins of the calibration error

struct Calibration {
  std::array<int64_t, kBins> count{};
  std::array<double, kBins> confidence{};  // sums over the bin's predictions
  std::array<double, kBins> correct{};
  double ece = 0;
};

struct EpochLog {
  int epoch = 0;          // 0: the initial model (a pass over the training set, no updates)
  double train_loss = 0;  // mean over the epoch's samples of the per-sample loss
  double train_acc = 0;   // of the logits the loss saw, before each update
  double grad_norm = 0;   // mean over samples of ||dL_n/dx_n||_2 at the logits x_n
  double test_acc = 0;
  double ece = 0;
  double seconds = 0;       // the epoch's training pass and test evaluation
  double images_per_s = 0;  // of the training pass
};

struct Run {
  Model model = Model::softmax;
  Loss loss = Loss::ce;
  Init init = Init::standard;
  double init_logit_rms = 0;  // over the first 1000 training images, before training
  std::vector<EpochLog> epochs;
  Calibration calibration;  // of the final model on the test set
};

// A split in the backend's memory.
struct DeviceSplit {
  DeviceSplit(Backend& backend, const Split& split);
  int count;
  Buffer<float> images;
  Buffer<int32_t> labels;
  std::vector<int32_t> host_labels;
};

using EpochCallback = std::function<void(const Run&, const EpochLog&)>;

// Trains one model from `schedule.seed`; the same seed gives the same initial weights (before the
// saturated scaling) and the same batch order for every loss.
Run train(Backend& backend, const DeviceSplit& train, const DeviceSplit& test, Model model,
          Loss loss, Init init, const Schedule& schedule, bool progress,
          const EpochCallback& on_epoch);

}  // namespace fm
