// Test helpers for files: a /tmp path removed when the test ends, and a stopwatch.
#pragma once
#include <unistd.h>

#include <chrono>
#include <filesystem>
#include <string>

#include "ldm/core/clock.hpp"

namespace ldm::test {

// A path under /tmp removed (file or folder) when the test ends, pass or fail.
struct TmpPath {
  std::string path;
  explicit TmpPath(const std::string& name) : path("/tmp/ldm_test_" + std::to_string(::getpid()) + "_" + name) {
    std::filesystem::remove_all(path);
  }
  ~TmpPath() { std::filesystem::remove_all(path); }
  operator const std::string&() const { return path; }
};

struct Timer {
  std::chrono::steady_clock::time_point t0 = std::chrono::steady_clock::now();
  double seconds() const { return seconds_since(t0); }
};

}  // namespace ldm::test
