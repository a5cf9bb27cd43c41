// A one-line progress bar on stderr: [#####.....] 5/10  2.31 s/step  ETA 11.6 s
#pragma once
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <string>

#include "ldm/core/memory.hpp"

namespace ldm::cli {

class ProgressBar {
 public:
  explicit ProgressBar(std::string label) : label_(std::move(label)), start_(clock::now()), tty_(isatty(2)) {}

  void update(int done, int total) {
    total_ = total;
    const double elapsed = std::chrono::duration<double>(clock::now() - start_).count();
    const double per = done > 0 ? elapsed / done : 0.0;
    const int width = 30, filled = total > 0 ? done * width / total : 0;
    std::string bar = std::string(size_t(filled), '#') + std::string(size_t(width - filled), '.');
    std::fprintf(stderr, "%s%s [%s] %d/%d  %.2f s/step  ETA %.1f s%s", tty_ ? "\r" : "", label_.c_str(), bar.c_str(),
                 done, total, per, per * (total - done), tty_ ? "   " : "\n");
    std::fflush(stderr);
  }
  void finish() {
    if (tty_) std::fprintf(stderr, "\n");
  }
  int total() const { return total_; }

 private:
  using clock = std::chrono::steady_clock;
  std::string label_;
  clock::time_point start_;
  bool tty_;
  int total_ = 0;
};

}  // namespace ldm::cli
