#include "train.hpp"

#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <fusedloss/fusedloss.hpp>
#include <numeric>
#include <random>

namespace fm {

const char* key(Model m) { return m == Model::softmax ? "softmax" : "mlp"; }
const char* key(Init i) { return i == Init::standard ? "standard" : "saturated"; }
const char* key(Optimizer o) { return o == Optimizer::sgd ? "sgd" : "adam"; }
const char* key(Loss l) {
  switch (l) {
    case Loss::ce:
      return "ce";
    case Loss::ce_ls:
      return "ce_ls";
    case Loss::focal:
      return "focal";
    default:
      return "sigmoid_mse";
  }
}
const char* title(Loss l) {
  switch (l) {
    case Loss::ce:
      return "cross-entropy";
    case Loss::ce_ls:
      return "cross-entropy, smoothing 0.1";
    case Loss::focal:
      return "softmax focal, gamma 2";
    default:
      return "sigmoid + MSE";
  }
}
std::string title(Model m, int hidden) {
  return m == Model::softmax ? "softmax regression"
                             : "MLP, " + std::to_string(hidden) + " ReLU hidden units";
}

DeviceSplit::DeviceSplit(Backend& backend, const Split& split)
    : count(split.count),
      images(backend, split.images.size()),
      labels(backend, split.labels.size()),
      host_labels(split.labels) {
  images.upload(split.images);
  labels.upload(split.labels);
}

namespace {

using clock_type = std::chrono::steady_clock;
double seconds_since(clock_type::time_point t) {
  return std::chrono::duration<double>(clock_type::now() - t).count();
}

constexpr int kEvalChunk = 1000;
constexpr double kPi = 3.14159265358979323846;

// Dense layers with ReLU between them; all parameters (and their gradients and optimiser state)
// in one buffer each, so the optimiser is one call.
class Net {
 public:
  Net(Backend& be, Model model, int hidden, int capacity) : be_(be) {
    std::vector<int> widths = {kPixels};
    if (model == Model::mlp) widths.push_back(hidden);
    widths.push_back(kClasses);
    size_t offset = 0;
    for (size_t l = 0; l + 1 < widths.size(); ++l) {
      layers_.push_back(
          {widths[l], widths[l + 1], offset, offset + size_t(widths[l]) * widths[l + 1]});
      offset = layers_.back().b + widths[l + 1];
    }
    size_ = offset;
    params_ = Buffer<float>(be, size_);
    grads_ = Buffer<float>(be, size_);
    state1_ = Buffer<float>(be, size_);
    state2_ = Buffer<float>(be, size_);
    for (const Layer& layer : layers_) {
      acts_.emplace_back(be, size_t(capacity) * layer.out);
      deltas_.emplace_back(be, size_t(capacity) * layer.out);
    }
  }

  // He-normal weights for hidden layers, LeCun-normal for the output layer, zero biases.
  std::vector<float> initial_params(uint64_t seed) const {
    std::vector<float> p(size_, 0.0f);
    std::mt19937_64 rng(seed);
    for (size_t l = 0; l < layers_.size(); ++l) {
      const bool last = l + 1 == layers_.size();
      std::normal_distribution<float> normal(0.0f, std::sqrt((last ? 1.0f : 2.0f) / layers_[l].in));
      for (size_t i = 0; i < size_t(layers_[l].in) * layers_[l].out; ++i)
        p[layers_[l].w + i] = normal(rng);
    }
    return p;
  }
  void scale_output_weights(std::vector<float>& p, float factor) const {
    const Layer& last = layers_.back();
    for (size_t i = 0; i < size_t(last.in) * last.out; ++i) p[last.w + i] *= factor;
  }
  void set_params(const std::vector<float>& p) { params_.upload(p); }

  // The logits of `rows` inputs; they stay valid until the next forward.
  const float* forward(const float* x, int rows) {
    const float* in = x;
    for (size_t l = 0; l < layers_.size(); ++l) {
      const Layer& L = layers_[l];
      float* out = acts_[l].get();
      be_.gemm(false, false, rows, L.out, L.in, 1.0f, in, L.in, params_.get() + L.w, L.out, 0.0f,
               out, L.out);
      be_.add_bias(out, params_.get() + L.b, rows, L.out);
      if (l + 1 < layers_.size()) be_.relu(out, size_t(rows) * L.out);
      in = out;
    }
    return acts_.back().get();
  }

  // Parameter gradients of the batch mean, from the per-sample gradients at the logits.
  void backward(const float* x, const float* grad_logits, int rows) {
    const float scale = 1.0f / rows;
    const float* delta = grad_logits;
    for (size_t l = layers_.size(); l-- > 0;) {
      const Layer& L = layers_[l];
      const float* in = l == 0 ? x : acts_[l - 1].get();
      be_.gemm(true, false, L.in, L.out, rows, scale, in, L.in, delta, L.out, 0.0f,
               grads_.get() + L.w, L.out);
      be_.column_sum(delta, rows, L.out, scale, grads_.get() + L.b);
      if (l > 0) {
        float* prev = deltas_[l - 1].get();
        be_.gemm(false, true, rows, L.in, L.out, 1.0f, delta, L.out, params_.get() + L.w, L.out,
                 0.0f, prev, L.in);
        be_.relu_backward(prev, acts_[l - 1].get(), size_t(rows) * L.in);
        delta = prev;
      }
    }
  }

  void step(const Schedule& s, float lr, int64_t t) {
    if (s.optimizer == Optimizer::sgd) {
      be_.sgd_step(params_.get(), state1_.get(), grads_.get(), size_, lr, s.momentum);
    } else {
      const float b1 = 0.9f, b2 = 0.999f;
      be_.adam_step(params_.get(), state1_.get(), state2_.get(), grads_.get(), size_, lr, b1, b2,
                    1e-8f, 1.0f - std::pow(b1, float(t)), 1.0f - std::pow(b2, float(t)));
    }
  }

 private:
  struct Layer {
    int in, out;
    size_t w, b;  // offsets in the parameter buffer; W is in x out, row-major
  };
  Backend& be_;
  std::vector<Layer> layers_;
  size_t size_ = 0;
  Buffer<float> params_, grads_, state1_, state2_;
  std::vector<Buffer<float>> acts_, deltas_;
};

// The loss and its per-sample gradient at the logits, from one fusedloss forward_backward call.
// Reduction sum with grad_scale 1: `loss()` holds the batch's sum of per-sample losses and row n of
// the gradient is dL_n/dx_n itself (Net::backward applies the 1/B of the batch mean). For sigmoid +
// MSE, fusedloss computes sum_c (s_c - y_c)^2 on s = sigmoid(x) against the one-hot y, and the
// factor s (1 - s) of the chain rule is applied here afterwards.
class LossStep {
 public:
  LossStep(Backend& be, Loss loss, int capacity)
      : be_(be),
        loss_(loss),
        value_(be, 1),
        sigmoid_(be, loss == Loss::sigmoid_mse ? size_t(capacity) * kClasses : 0),
        one_hot_(be, loss == Loss::sigmoid_mse ? size_t(capacity) * kClasses : 0) {}

  const float* loss() const { return value_.get(); }

  void operator()(const float* logits, const int32_t* labels, int rows, float* grad) {
    switch (loss_) {
      case Loss::ce:
      case Loss::ce_ls: {
        auto p = fusedloss::make_cross_entropy_params();
        fill_row(p, logits, labels, rows, grad);
        p.label_smoothing = loss_ == Loss::ce_ls ? 0.1 : 0.0;
        run(p);
        break;
      }
      case Loss::focal: {
        auto p = fusedloss::make_softmax_focal_params();
        fill_row(p, logits, labels, rows, grad);
        p.gamma = 2.0;
        run(p);
        break;
      }
      case Loss::sigmoid_mse: {
        const size_t n = size_t(rows) * kClasses;
        be_.sigmoid(logits, sigmoid_.get(), n);
        be_.one_hot(labels, one_hot_.get(), rows, kClasses);
        auto p = fusedloss::make_mse_params();
        p.device = be_.loss_device();
        p.numel = int64_t(n);
        p.logits = sigmoid_.get();
        p.logits_dtype = FUSEDLOSS_FLOAT32;
        p.targets = one_hot_.get();
        p.targets_dtype = FUSEDLOSS_FLOAT32;
        p.reduction = FUSEDLOSS_REDUCTION_SUM;
        p.loss = value_.get();
        p.grad_logits = grad;  // dL/ds
        run(p);
        be_.sigmoid_backward(grad, sigmoid_.get(), n);  // dL/dx = dL/ds * s (1 - s)
        break;
      }
    }
  }

 private:
  template <class Params>
  void fill_row(Params& p, const float* logits, const int32_t* labels, int rows, float* grad) {
    p.device = be_.loss_device();
    p.batch = rows;
    p.num_classes = kClasses;
    p.logits = logits;
    p.logits_dtype = FUSEDLOSS_FLOAT32;
    p.targets = labels;
    p.targets_dtype = FUSEDLOSS_INT32;
    p.reduction = FUSEDLOSS_REDUCTION_SUM;
    p.loss = value_.get();
    p.grad_logits = grad;
  }
  template <class Params>
  void run(const Params& p) {
    const size_t bytes = fusedloss::workspace_size(p);
    if (bytes > workspace_.size()) workspace_ = Buffer<uint8_t>(be_, bytes);
    fusedloss::forward_backward(p, {workspace_.get(), bytes}, be_.stream());
  }

  Backend& be_;
  Loss loss_;
  Buffer<float> value_, sigmoid_, one_hot_;
  Buffer<uint8_t> workspace_;
};

// Class probabilities of one row of logits: the softmax, or for sigmoid + MSE the sigmoid outputs
// normalised to sum 1 (computed as the softmax of log sigmoid(x), so saturated rows stay finite).
void probabilities(Loss loss, const float* x, double* p) {
  double z[kClasses], max = -INFINITY, sum = 0;
  for (int c = 0; c < kClasses; ++c) {
    z[c] = loss == Loss::sigmoid_mse
               ? -(std::max(-double(x[c]), 0.0) + std::log1p(std::exp(-std::fabs(double(x[c])))))
               : double(x[c]);
    max = std::max(max, z[c]);
  }
  for (int c = 0; c < kClasses; ++c) sum += p[c] = std::exp(z[c] - max);
  for (int c = 0; c < kClasses; ++c) p[c] /= sum;
}

struct Evaluation {
  double accuracy;
  Calibration calibration;
};

Evaluation evaluate(Backend& be, Net& net, const DeviceSplit& test, Loss loss) {
  std::vector<float> logits(size_t(test.count) * kClasses);
  for (int start = 0; start < test.count; start += kEvalChunk) {
    const int rows = std::min(kEvalChunk, test.count - start);
    const float* out = net.forward(test.images.get() + size_t(start) * kPixels, rows);
    be.download(logits.data() + size_t(start) * kClasses, out,
                size_t(rows) * kClasses * sizeof(float));
  }
  Evaluation e{};
  int64_t correct = 0;
  for (int n = 0; n < test.count; ++n) {
    double p[kClasses];
    probabilities(loss, logits.data() + size_t(n) * kClasses, p);
    const int best = int(std::max_element(p, p + kClasses) - p);
    const bool hit = best == test.host_labels[n];
    correct += hit;
    const int bin = std::min(kBins - 1, int(p[best] * kBins));
    e.calibration.count[bin] += 1;
    e.calibration.confidence[bin] += p[best];
    e.calibration.correct[bin] += hit;
  }
  e.accuracy = double(correct) / test.count;
  for (int b = 0; b < kBins; ++b)
    e.calibration.ece +=
        std::fabs(e.calibration.correct[b] - e.calibration.confidence[b]) / test.count;
  return e;
}

}  // namespace

Run train(Backend& be, const DeviceSplit& train, const DeviceSplit& test, Model model, Loss loss,
          Init init, const Schedule& s, bool progress, const EpochCallback& on_epoch) {
  const int capacity = std::max(s.batch, kEvalChunk);
  Net net(be, model, s.hidden, capacity);
  LossStep loss_step(be, loss, capacity);
  Buffer<float> x(be, size_t(capacity) * kPixels), grad(be, size_t(capacity) * kClasses);
  Buffer<int32_t> y(be, capacity), index(be, train.count);
  Buffer<double> stats(be, 3);
  Run run;
  run.model = model;
  run.loss = loss;
  run.init = init;

  // Initialise, and measure (and for the saturated start, set) the RMS of the initial logits.
  std::vector<float> params = net.initial_params(s.seed * 1000003 + uint64_t(model));
  net.set_params(params);
  const int probe = std::min(kEvalChunk, train.count);
  auto logit_rms = [&] {
    const std::vector<float> z = [&] {
      std::vector<float> v(size_t(probe) * kClasses);
      be.download(v.data(), net.forward(train.images.get(), probe), v.size() * sizeof(float));
      return v;
    }();
    double sq = 0;
    for (float v : z) sq += double(v) * v;
    return std::sqrt(sq / z.size());
  };
  run.init_logit_rms = logit_rms();
  if (init == Init::saturated) {
    net.scale_output_weights(params, float(s.saturated_rms / run.init_logit_rms));
    net.set_params(params);
    run.init_logit_rms = logit_rms();
  }

  const int steps_per_epoch = (train.count + s.batch - 1) / s.batch;
  const int64_t total_steps = int64_t(steps_per_epoch) * s.epochs;
  int64_t step = 0;
  std::vector<int32_t> order(train.count);
  std::iota(order.begin(), order.end(), 0);
  const bool tty = progress && isatty(STDERR_FILENO);
  const std::string tag = std::string(key(model)) + "/" + key(init) + "/" + key(loss);

  for (int epoch = 0; epoch <= s.epochs; ++epoch) {
    const auto start = clock_type::now();
    // Epoch 0 measures the initial model over the training set in file order, without updates.
    if (epoch > 0) std::shuffle(order.begin(), order.end(), std::mt19937_64(s.seed * 7919 + epoch));
    index.upload(order);
    const double zeros[3] = {0, 0, 0};
    stats.upload(zeros, 3);
    auto last_print = clock_type::now();
    for (int b = 0; b < steps_per_epoch; ++b) {
      const int first = b * s.batch, rows = std::min(s.batch, train.count - first);
      be.gather_rows(train.images.get(), train.labels.get(), index.get() + first, rows, kPixels,
                     x.get(), y.get());
      const float* logits = net.forward(x.get(), rows);
      loss_step(logits, y.get(), rows, grad.get());
      be.accumulate_stats(loss_step.loss(), logits, grad.get(), y.get(), rows, kClasses,
                          stats.get());
      if (epoch > 0) {
        net.backward(x.get(), grad.get(), rows);
        ++step;
        const float lr =
            float(0.5 * s.lr * (1 + std::cos(kPi * double(step - 1) / double(total_steps))));
        net.step(s, lr, step);
      }
      if (tty && std::chrono::duration<double>(clock_type::now() - last_print).count() > 0.25) {
        last_print = clock_type::now();
        const std::vector<double> t = stats.download(3);
        const double seen = first + rows;
        std::fprintf(stderr,
                     "\r\033[K  %-26s epoch %2d/%d  %5.1f%%  loss %.4f  acc %5.2f%%  %8.0f img/s",
                     tag.c_str(), epoch, s.epochs, 100.0 * seen / train.count, t[0] / seen,
                     100.0 * t[2] / seen, seen / seconds_since(start));
      }
    }
    const std::vector<double> t = stats.download(3);
    EpochLog log;
    log.epoch = epoch;
    log.images_per_s = train.count / seconds_since(start);
    log.train_loss = t[0] / train.count;
    log.grad_norm = t[1] / train.count;
    log.train_acc = t[2] / train.count;
    const Evaluation e = evaluate(be, net, test, loss);
    log.test_acc = e.accuracy;
    log.ece = e.calibration.ece;
    log.seconds = seconds_since(start);
    run.calibration = e.calibration;
    run.epochs.push_back(log);
    if (tty) std::fprintf(stderr, "\r\033[K");
    if (on_epoch) on_epoch(run, log);
  }
  return run;
}

}  // namespace fm
