#include "report.hpp"

#include <algorithm>
#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <set>
#include <sstream>
#include <stdexcept>

namespace fm {
namespace {

std::FILE* open_or_throw(const std::string& path) {
  std::FILE* f = std::fopen(path.c_str(), "w");
  if (f == nullptr) throw std::runtime_error(path + ": " + std::strerror(errno));
  return f;
}

std::string fmt(const char* format, double v) {
  char buf[64];
  std::snprintf(buf, sizeof buf, format, v);
  return buf;
}

const char* color(Loss l) {
  switch (l) {
    case Loss::ce:
      return "#1f77b4";
    case Loss::ce_ls:
      return "#2ca02c";
    case Loss::focal:
      return "#ff7f0e";
    default:
      return "#d62728";
  }
}

std::string block_name(const Run& r, const char* what) {
  return std::string("$") + what + "_" + key(r.model) + "_" + key(r.init) + "_" + key(r.loss);
}

}  // namespace

MetricsCsv::MetricsCsv(const std::string& path) : f_(open_or_throw(path)) {
  std::fprintf(f_,
               "model,init,loss,epoch,train_loss,train_acc,grad_norm,test_acc,ece,seconds,"
               "images_per_s\n");
}
MetricsCsv::~MetricsCsv() { std::fclose(f_); }
void MetricsCsv::add(const Run& r, const EpochLog& e) {
  std::fprintf(f_, "%s,%s,%s,%d,%.6g,%.6f,%.6g,%.4f,%.6f,%.3f,%.0f\n", key(r.model), key(r.init),
               key(r.loss), e.epoch, e.train_loss, e.train_acc, e.grad_norm, e.test_acc, e.ece,
               e.seconds, e.images_per_s);
  std::fflush(f_);
}

void write_calibration_csv(const std::string& path, const std::vector<Run>& runs) {
  std::FILE* f = open_or_throw(path);
  std::fprintf(f, "model,init,loss,bin,lower,upper,count,mean_confidence,accuracy\n");
  for (const Run& r : runs)
    for (int b = 0; b < kBins; ++b) {
      const Calibration& c = r.calibration;
      const double n = double(c.count[b]);
      std::fprintf(f, "%s,%s,%s,%d,%.4f,%.4f,%lld,%.4f,%.4f\n", key(r.model), key(r.init),
                   key(r.loss), b, double(b) / kBins, double(b + 1) / kBins, (long long)c.count[b],
                   n > 0 ? c.confidence[b] / n : 0.0, n > 0 ? c.correct[b] / n : 0.0);
    }
  std::fclose(f);
}

std::string summary_table(const std::vector<Run>& runs, int hidden) {
  std::ostringstream s;
  s << "| model | init | loss | test accuracy | ECE (15 bins) | logit-grad norm at start | "
       "epoch 1 | last epoch |\n"
    << "| --- | --- | --- | ---: | ---: | ---: | ---: | ---: |\n";
  for (const Run& r : runs) {
    const EpochLog& last = r.epochs.back();
    s << "| " << title(r.model, hidden) << " | " << key(r.init) << " | " << title(r.loss) << " | "
      << fmt("%.2f%%", 100 * last.test_acc) << " | " << fmt("%.4f", last.ece) << " | "
      << fmt("%.3g", r.epochs[0].grad_norm) << " | "
      << fmt("%.3g", r.epochs.size() > 1 ? r.epochs[1].grad_norm : 0.0) << " | "
      << fmt("%.3g", last.grad_norm) << " |\n";
  }
  return s.str();
}

bool render_plots(const std::string& dir, const std::vector<Run>& runs, int hidden) {
  std::set<Model> models;
  std::set<Loss> losses;
  std::set<Init> inits;
  for (const Run& r : runs) {
    models.insert(r.model);
    losses.insert(r.loss);
    inits.insert(r.init);
  }
  const std::string path = dir + "/plots.gp";
  std::ofstream gp(path);
  gp << "# Written by fashion_mnist with its data inline: `gnuplot plots.gp` in this directory\n"
     << "# redraws accuracy.png, grad_norm.png and reliability_*.png.\n"
     << "set grid lc rgb '#dddddd'\nset border lc rgb '#555555'\n"
     << "set style fill solid 0.55 border lc rgb '#333333'\n";
  for (const Run& r : runs) {
    gp << block_name(r, "epochs") << " << EOD\n";
    for (const EpochLog& e : r.epochs)
      gp << e.epoch << ' ' << 100 * e.test_acc << ' ' << e.grad_norm << '\n';
    int64_t total = 0;
    for (int64_t c : r.calibration.count) total += c;
    gp << "EOD\n" << block_name(r, "bins") << " << EOD\n";
    for (int b = 0; b < kBins; ++b)
      if (r.calibration.count[b] > 0)
        gp << (b + 0.5) / kBins << ' ' << r.calibration.correct[b] / r.calibration.count[b] << ' '
           << r.calibration.confidence[b] / r.calibration.count[b] << ' ' << r.calibration.count[b]
           << ' ' << double(r.calibration.count[b]) / total << '\n';
    gp << "EOD\n";
  }

  size_t epochs = 0;
  for (const Run& r : runs) epochs = std::max(epochs, r.epochs.size() - 1);
  // Accuracy and gradient norm per epoch: a column per model, a row per y range, one colour per
  // loss, solid for the standard start and dashed for the saturated one.
  struct Row {
    const char* yrange;
    bool key;
    const char* note;
  };
  auto per_epoch = [&](const char* file, const char* heading, const char* ylabel, int column,
                       bool log, const std::vector<Row>& rows) {
    gp << "set terminal pngcairo size 1500," << 80 + 500 * rows.size()
       << " font 'DejaVu Sans,12' linewidth 1.5 enhanced\n"
       << "set output '" << file << "'\nset multiplot layout " << rows.size() << ","
       << models.size() << " title '" << heading << "' font ',14'\n"
       << "set xlabel 'epoch'\nset ylabel '" << ylabel << "'\nset xrange [0:*]\n"
       << "set key samplen 6 font ',10' opaque\nset xtics " << (epochs <= 10 ? 1 : 5) << "\n"
       << (log ? "set logscale y\nset format y '10^{%L}'\nset key top right\n"
               : "set format y '%g'\nset key bottom right\n");
    for (const Row& row : rows)
      for (Model m : models) {
        gp << "set yrange " << row.yrange << "\nset " << (row.key ? "" : "no") << "key\n"
           << "set title '" << title(m, hidden) << row.note << "'\nplot ";
        bool first = true;
        for (const Run& r : runs) {
          if (r.model != m) continue;
          gp << (first ? "" : ", \\\n     ") << block_name(r, "epochs") << " using 1:" << column
             << " with linespoints pt 7 ps 0.5 lw 2 lc rgb '" << color(r.loss) << "' dt "
             << (r.init == Init::standard ? "1" : "(12,6)") << " title '" << title(r.loss) << ", "
             << key(r.init) << " init'";
          first = false;
        }
        gp << "\n";
      }
    gp << "unset multiplot\nunset logscale y\nset format y '%g'\nset autoscale\nset xtics "
          "autofreq\n";
  };
  per_epoch("accuracy.png", "Fashion-MNIST test accuracy per epoch (epoch 0: the initial model)",
            "test accuracy (%)", 2, false, {{"[0:100]", true, ""}, {"[70:92]", false, " (zoom)"}});
  per_epoch("grad_norm.png",
            "Mean per-sample L2 norm of dLoss/dlogits per epoch (epoch 0: the initial model)",
            "mean ||dL_n/dx_n||_2", 3, true, {{"[*:100]", true, ""}});

  // Reliability diagrams, one file per loss: a row per init, a column per model.
  for (Loss l : losses) {
    gp << "set terminal pngcairo size " << 560 * models.size() + 100 << ","
       << 480 * inits.size() + 60 << " font 'DejaVu Sans,11' linewidth 1.5 enhanced\n"
       << "set output 'reliability_" << key(l) << ".png'\n"
       << "set multiplot layout " << inits.size() << "," << models.size()
       << " title 'Reliability on the test set: " << title(l)
       << " (15 equal-width confidence bins)' font ',13'\n"
       << "set xrange [0:1]\nset yrange [0:1]\nset size ratio -1\nset boxwidth " << 0.9 / kBins
       << "\nset xlabel 'confidence'\nset ylabel 'accuracy'\n"
       << "set key top left font ',9' samplen 2\n";
    for (Init i : inits)
      for (Model m : models) {
        const Run* run = nullptr;
        for (const Run& r : runs)
          if (r.model == m && r.loss == l && r.init == i) run = &r;
        if (run == nullptr) {
          gp << "set multiplot next\n";
          continue;
        }
        const std::string bins = block_name(*run, "bins");
        gp << "set title \"" << title(m, hidden) << ", " << key(i) << " init\\n"
           << fmt("accuracy %.2f%%", 100 * run->epochs.back().test_acc)
           << fmt(", ECE %.4f", run->calibration.ece) << "\"\n"
           << "plot " << bins << " using 1:2 with boxes lc rgb '" << color(l)
           << "' title 'accuracy in bin', \\\n     " << bins << " using 1:5:(" << 0.3 / kBins
           << ") with boxes fs solid 0.8 noborder lc rgb '#555555' title 'share of test images', "
              "\\\n     "
           << bins
           << " using 1:3 with points pt 7 ps 0.8 lc rgb 'black' title 'mean confidence', \\\n"
           << "     x with lines dt 2 lc rgb '#777777' title 'perfect calibration'\n";
      }
    gp << "unset multiplot\nset size noratio\nset autoscale\n";
  }
  gp.close();
  if (!gp) {
    std::fprintf(stderr, "warning: could not write %s\n", path.c_str());
    return false;
  }
  const std::string command = "cd '" + dir + "' && gnuplot plots.gp";
  if (std::system(command.c_str()) != 0) {
    std::fprintf(stderr,
                 "warning: gnuplot failed or is missing (apt-get install gnuplot-nox); the data "
                 "are in %s, and `%s` draws the plots\n",
                 path.c_str(), command.c_str());
    return false;
  }
  return true;
}

}  // namespace fm
