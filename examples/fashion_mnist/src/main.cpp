// fashion_mnist: softmax regression and a one-hidden-layer MLP on Fashion-MNIST, trained with every
// loss and its gradient from fusedloss (cross-entropy, with label smoothing 0.1, softmax focal with
// gamma 2, and sigmoid + MSE on one-hot targets), from a standard and from a saturated start.
// Run with --help for the flags; --ci runs the short checked training that CI runs.
#include <sys/stat.h>

#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fusedloss/fusedloss.hpp>
#include <initializer_list>
#include <sstream>
#include <stdexcept>
#include <string>
#include <vector>

#include "backend.hpp"
#include "data.hpp"
#include "report.hpp"
#include "train.hpp"

namespace {

using namespace fm;

struct Options {
  std::string device = "auto";
  std::string data = kDefaultDataDir;
  std::string out = "results";
  std::vector<Model> models = {Model::softmax, Model::mlp};
  std::vector<Loss> losses = {Loss::ce, Loss::ce_ls, Loss::focal, Loss::sigmoid_mse};
  std::vector<Init> inits = {Init::standard, Init::saturated};
  Schedule schedule;
  int train_count = 0, test_count = 0;  // 0: all
  bool ci = false, plots = true, progress = true, lr_given = false;
};

const char* const kUsage = R"(usage: fashion_mnist [options]

Trains softmax regression and a one-hidden-layer MLP on Fashion-MNIST with each loss from
fusedloss (one fused forward_backward call per minibatch gives the loss and its gradient at the
logits), from a standard and a saturated initialisation, and writes metrics.csv, calibration.csv,
summary.md and PNG plots (through gnuplot) to --out.

  --device auto|cpu|cuda  where to train (auto: CUDA when a device is usable)      [auto]
  --data DIR              the IDX files   [/usr/share/datasets/fashion-mnist]
  --out DIR               results directory (created)                           [results]
  --models LIST           softmax,mlp                                       [softmax,mlp]
  --losses LIST           ce,ce_ls,focal,sigmoid_mse                                [all]
  --inits LIST            standard,saturated                                        [both]
  --epochs N              epochs per run                                              [20]
  --batch N               minibatch size                                             [100]
  --optimizer sgd|adam    SGD with momentum, or Adam                                  [sgd]
  --lr X                  peak learning rate of both models, cosine decay to 0
                          [sgd: 0.01 softmax regression, 0.05 MLP; adam: 0.001]
  --momentum X            SGD momentum                                               [0.9]
  --hidden N              MLP hidden units                                           [256]
  --seed N                weights and batch order                                      [1]
  --saturated-rms X       RMS of the initial logits of the saturated start            [15]
  --train N, --test N     use a seeded random subset of N images (0: all)              [0]
  --no-plots              skip gnuplot
  --quiet                 no progress line
  --ci                    the CI check: softmax regression on 10000/2000 images for 3 epochs,
                          cross-entropy from both starts and sigmoid + MSE from the saturated
                          one; exits 1 unless cross-entropy's test accuracy is >= 0.70 (chance:
                          0.10) and sigmoid + MSE's logit-gradient norm from the saturated start
                          is below cross-entropy's from the same start, at the start and in epoch 1
)";

template <class T>
std::vector<T> parse_list(const std::string& text, std::initializer_list<T> all, const char* flag) {
  std::vector<T> out;
  std::stringstream ss(text);
  std::string item;
  while (std::getline(ss, item, ',')) {
    bool found = false;
    for (T v : all)
      if (item == key(v)) {
        out.push_back(v);
        found = true;
      }
    if (!found) throw std::invalid_argument(std::string(flag) + ": unknown value '" + item + "'");
  }
  if (out.empty()) throw std::invalid_argument(std::string(flag) + ": empty list");
  return out;
}

// The peak learning rate of a model's runs: the same for every loss and start.
float learning_rate(const Options& o, Model m) {
  if (o.lr_given) return o.schedule.lr;
  if (o.schedule.optimizer == Optimizer::adam) return 0.001f;
  return m == Model::softmax ? 0.01f : 0.05f;
}

Options parse(int argc, char** argv) {
  Options o;
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    auto value = [&]() -> std::string {
      if (i + 1 >= argc) throw std::invalid_argument(a + ": missing value");
      return argv[++i];
    };
    auto number = [&]() {
      const std::string v = value();
      char* end = nullptr;
      const double d = std::strtod(v.c_str(), &end);
      if (end == v.c_str() || *end != '\0') throw std::invalid_argument(a + ": not a number: " + v);
      return d;
    };
    if (a == "--help" || a == "-h") {
      std::fputs(kUsage, stdout);
      std::exit(0);
    } else if (a == "--device") {
      o.device = value();
      if (o.device != "auto" && o.device != "cpu" && o.device != "cuda")
        throw std::invalid_argument("--device: auto, cpu or cuda");
    } else if (a == "--data")
      o.data = value();
    else if (a == "--out")
      o.out = value();
    else if (a == "--models")
      o.models = parse_list(value(), {Model::softmax, Model::mlp}, "--models");
    else if (a == "--losses")
      o.losses =
          parse_list(value(), {Loss::ce, Loss::ce_ls, Loss::focal, Loss::sigmoid_mse}, "--losses");
    else if (a == "--inits")
      o.inits = parse_list(value(), {Init::standard, Init::saturated}, "--inits");
    else if (a == "--epochs")
      o.schedule.epochs = int(number());
    else if (a == "--batch")
      o.schedule.batch = int(number());
    else if (a == "--optimizer")
      o.schedule.optimizer =
          parse_list(value(), {Optimizer::sgd, Optimizer::adam}, "--optimizer")[0];
    else if (a == "--lr")
      o.schedule.lr = float(number()), o.lr_given = true;
    else if (a == "--momentum")
      o.schedule.momentum = float(number());
    else if (a == "--hidden")
      o.schedule.hidden = int(number());
    else if (a == "--seed")
      o.schedule.seed = uint64_t(number());
    else if (a == "--saturated-rms")
      o.schedule.saturated_rms = float(number());
    else if (a == "--train")
      o.train_count = int(number());
    else if (a == "--test")
      o.test_count = int(number());
    else if (a == "--no-plots")
      o.plots = false;
    else if (a == "--quiet")
      o.progress = false;
    else if (a == "--ci")
      o.ci = true;
    else
      throw std::invalid_argument("unknown option " + a + " (--help lists them)");
  }
  if (o.ci) {
    o.models = {Model::softmax};
    o.train_count = 10000;
    o.test_count = 2000;
    o.schedule.epochs = 3;
    o.plots = false;
  }
  if (o.schedule.epochs < 1 || o.schedule.batch < 1 || o.schedule.hidden < 1 || o.schedule.lr <= 0)
    throw std::invalid_argument("--epochs, --batch, --hidden and --lr must be positive");
  return o;
}

std::string fmt_g(double v) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "%g", v);
  return buf;
}

std::unique_ptr<Backend> choose_backend(const std::string& device) {
#ifdef FM_WITH_CUDA
  std::string why;
  const bool usable = device != "cpu" && cuda_usable(&why);
  if (device == "cuda" && !usable) throw std::runtime_error("--device cuda: " + why);
  if (usable) return make_cuda_backend();
  if (device == "auto") std::printf("no GPU path (%s): training on the CPU\n", why.c_str());
#else
  if (device == "cuda")
    throw std::runtime_error(
        "--device cuda: this build has no GPU path (the CUDA toolkit was not "
        "found when it was configured)");
#endif
  return make_cpu_backend();
}

// CI: cross-entropy learns, and sigmoid + MSE's logit gradient from the saturated start is the
// smaller one, at the start and over the first epoch.
int ci_checks(const std::vector<Run>& runs) {
  auto find = [&](Loss l, Init i) -> const Run& {
    for (const Run& r : runs)
      if (r.loss == l && r.init == i) return r;
    throw std::logic_error("CI run missing");
  };
  const Run& ce = find(Loss::ce, Init::standard);
  const Run& ce_sat = find(Loss::ce, Init::saturated);
  const Run& mse_sat = find(Loss::sigmoid_mse, Init::saturated);
  int failures = 0;
  auto check = [&](bool ok, const std::string& what) {
    std::printf("CI %s: %s\n", ok ? "pass" : "FAIL", what.c_str());
    failures += !ok;
  };
  const double acc = ce.epochs.back().test_acc;
  check(acc >= 0.70, "softmax regression + cross-entropy test accuracy " + std::to_string(acc) +
                         " >= 0.70 (chance 0.10)");
  for (int e : {0, 1}) {
    const double m = mse_sat.epochs[e].grad_norm, c = ce_sat.epochs[e].grad_norm;
    check(m < c, "saturated start, epoch " + std::to_string(e) +
                     ": sigmoid + MSE logit-gradient norm " + std::to_string(m) +
                     " < cross-entropy's " + std::to_string(c));
  }
  return failures == 0 ? 0 : 1;
}

}  // namespace

int main(int argc, char** argv) {
  Options opt;
  try {
    opt = parse(argc, argv);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "fashion_mnist: %s\n", e.what());
    return 2;
  }
  try {
    Dataset data = load_fashion_mnist(opt.data);
    data.train = subset(data.train, opt.train_count, opt.schedule.seed);
    data.test = subset(data.test, opt.test_count, opt.schedule.seed + 1);
    std::unique_ptr<Backend> backend = choose_backend(opt.device);
    if (mkdir(opt.out.c_str(), 0755) != 0 && errno != EEXIST)
      throw std::runtime_error(opt.out + ": " + std::strerror(errno));

    const Schedule& s = opt.schedule;
    std::printf(
        "fashion_mnist: %d train / %d test images (pixels standardised: mean %.4f, std %.4f)\n"
        "device %s; fusedloss %d%s\n"
        "schedule: %d epochs, batch %d, %s%s, peak lr %g (softmax regression) / %g (MLP), "
        "cosine decay; seed %llu; MLP hidden %d; saturated start: initial logit RMS %g\n",
        data.train.count, data.test.count, data.mean, data.stddev, backend->name().c_str(),
        FUSEDLOSS_VERSION, fusedloss_built_with_cuda() ? " (with CUDA)" : " (CPU only)", s.epochs,
        s.batch, key(s.optimizer),
        s.optimizer == Optimizer::sgd ? (" with momentum " + fmt_g(s.momentum)).c_str() : "",
        learning_rate(opt, Model::softmax), learning_rate(opt, Model::mlp),
        (unsigned long long)s.seed, s.hidden, s.saturated_rms);

    const DeviceSplit train_set(*backend, data.train), test_set(*backend, data.test);
    MetricsCsv csv(opt.out + "/metrics.csv");
    std::vector<Run> runs;
    auto plan = [&](Model m, Init i, Loss l) {
      if (opt.ci && !(l == Loss::ce || (l == Loss::sigmoid_mse && i == Init::saturated))) return;
      Schedule model_schedule = s;
      model_schedule.lr = learning_rate(opt, m);
      runs.push_back(train(*backend, train_set, test_set, m, l, i, model_schedule, opt.progress,
                           [&](const Run& r, const EpochLog& e) {
                             if (e.epoch == 0)
                               std::printf("\n== %s, %s init (initial logit RMS %.3g), %s\n",
                                           title(m, s.hidden).c_str(), key(i), r.init_logit_rms,
                                           title(l));
                             std::printf(
                                 "  epoch %2d  loss %.4f  train acc %6.2f%%  test acc %6.2f%%"
                                 "  |dL/dx| %.3e  ECE %.4f  %7.0f img/s  %.2f s\n",
                                 e.epoch, e.train_loss, 100 * e.train_acc, 100 * e.test_acc,
                                 e.grad_norm, e.ece, e.images_per_s, e.seconds);
                             std::fflush(stdout);
                             csv.add(r, e);
                           }));
    };
    for (Model m : opt.models)
      for (Init i : opt.inits)
        for (Loss l : opt.losses) plan(m, i, l);

    write_calibration_csv(opt.out + "/calibration.csv", runs);
    const std::string table = summary_table(runs, s.hidden);
    if (std::FILE* f = std::fopen((opt.out + "/summary.md").c_str(), "w")) {
      std::fputs(table.c_str(), f);
      std::fclose(f);
    }
    std::printf("\n%s", table.c_str());
    if (opt.plots && render_plots(opt.out, runs, s.hidden))
      std::printf("plots: %s/{accuracy,grad_norm,reliability_*}.png\n", opt.out.c_str());
    return opt.ci ? ci_checks(runs) : 0;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "fashion_mnist: %s\n", e.what());
    return 1;
  }
}
