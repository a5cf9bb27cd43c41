// What a training run shows while it runs and leaves behind: one progress line per log interval
// on stderr (step, loss, learning rate, steps/s, ETA), a CSV of every step's loss, and the loss
// curve as a PNG (raw loss and its running mean), redrawn at each log interval.
//
//   TrainLog log(run_dir, "unet", total_steps, first_step);
//   log.step(k, loss, lr, grad_norm);        // after optimizer step k (0-based)
//   log.print(k, extra);                     // "unet  1200/6000  loss 0.0712 (mean 0.0741) ..."
#pragma once
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <fstream>
#include <string>
#include <vector>

#include "ldm/core/error.hpp"
#include "ldm/core/files.hpp"
#include "ldm/viz/plot.hpp"

namespace ldm::cli {

class TrainLog {
 public:
  // Appends to <dir>/<name>_loss.csv (a resumed run continues the file; rows past first_step,
  // left by a run that stopped after its last checkpoint, are dropped).
  TrainLog(const std::string& dir, const std::string& name, int64_t total_steps, int64_t first_step)
      : name_(name), csv_path_(dir + "/" + name + "_loss.csv"), png_path_(dir + "/" + name + "_loss.png"),
        total_(total_steps), first_(first_step), start_(clock::now()) {
    read_previous();
    std::ofstream out(csv_path_, std::ios::trunc);
    out << "step,loss,lr,grad_norm\n";
    for (size_t i = 0; i < steps_.size(); ++i) out << steps_[i] << ',' << losses_[i] << ",,\n";
    csv_.open(csv_path_, std::ios::app);
    LDM_CHECK(csv_.good(), "cannot write the training log '", csv_path_, "'");
  }

  void step(int64_t k, double loss, double lr, double grad_norm) {
    steps_.push_back(double(k));
    losses_.push_back(loss);
    csv_ << k << ',' << loss << ',' << lr << ',' << grad_norm << '\n';
    last_lr_ = lr;
    last_grad_norm_ = grad_norm;
  }

  // Mean loss of the last n steps.
  double recent_mean(size_t n = 100) const {
    const size_t m = std::min(n, losses_.size());
    double s = 0;
    for (size_t i = losses_.size() - m; i < losses_.size(); ++i) s += losses_[i];
    return m ? s / double(m) : 0.0;
  }

  // One line on stderr after step k (0-based) and the curve redrawn; `extra` is appended.
  void print(int64_t k, const std::string& extra = "") {
    const double elapsed = std::chrono::duration<double>(clock::now() - start_).count();
    const double done = double(k + 1 - first_), rate = elapsed > 0 ? done / elapsed : 0.0;
    const double eta = rate > 0 ? double(total_ - k - 1) / rate : 0.0;
    std::fprintf(stderr, "%s %6lld/%lld  loss %.4f (mean %.4f)  lr %.2e  |g| %.3g  %.2f steps/s  %s  ETA %s%s\n",
                 name_.c_str(), (long long)(k + 1), (long long)total_, losses_.empty() ? 0.0 : losses_.back(),
                 recent_mean(), last_lr_, last_grad_norm_, rate, clock_str(elapsed).c_str(), clock_str(eta).c_str(),
                 extra.empty() ? "" : ("  " + extra).c_str());
    std::fflush(stderr);
    csv_.flush();
    plot_curve();
  }

  static std::string clock_str(double s) {
    char buf[32];
    const long t = long(s + 0.5);
    std::snprintf(buf, sizeof buf, "%ld:%02ld:%02ld", t / 3600, t / 60 % 60, t % 60);
    return buf;
  }

 private:
  using clock = std::chrono::steady_clock;

  void read_previous() {
    std::ifstream in(csv_path_);
    std::string line;
    std::getline(in, line);  // header
    while (std::getline(in, line)) {
      long long k = 0;
      double loss = 0;
      if (std::sscanf(line.c_str(), "%lld,%lf", &k, &loss) == 2 && k < first_) {
        steps_.push_back(double(k));
        losses_.push_back(loss);
      }
    }
  }

  void plot_curve() const {
    if (losses_.size() < 2) return;
    std::vector<double> mean(losses_.size());
    double acc = losses_[0];
    for (size_t i = 0; i < losses_.size(); ++i) mean[i] = acc = i ? 0.98 * acc + 0.02 * losses_[i] : acc;
    viz::Series raw("loss", steps_, losses_), smooth("running mean", steps_, mean);
    raw.color = viz::Color{200, 200, 220};
    viz::PlotOptions o;
    o.title = name_ + " training loss";
    o.x_label = "step";
    o.y_label = "loss";
    o.log_y = true;
    viz::plot({raw, smooth}, o).save(png_path_);
  }

  std::string name_, csv_path_, png_path_;
  int64_t total_, first_;
  clock::time_point start_;
  std::ofstream csv_;
  std::vector<double> steps_, losses_;
  double last_lr_ = 0, last_grad_norm_ = 0;
};

}  // namespace ldm::cli
