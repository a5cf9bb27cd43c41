// Tests that skip honestly. A test case that cannot check anything (no ../shared) calls
// ldm::test::skip (LDM_REQUIRE_REFERENCE and LDM_REQUIRE_SHARED do), and its executable then
// exits with 77 (tests/catch_main.cpp), which CTest reports as "Skipped" (SKIP_RETURN_CODE in
// CMakeLists.txt), never "Passed", even when its other cases ran; a failure still fails. With
// LDM_REQUIRE_SHARED=1 in the environment (scripts/test.sh sets it under CI) a skip is a failure.
#pragma once
#include <catch2/catch.hpp>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <vector>

#include "ldm/core/shared_dir.hpp"

namespace ldm::test {

// The test cases that skipped something in this run, once each.
inline std::vector<std::string>& skipped_cases() {
  static std::vector<std::string> names;
  return names;
}

inline bool shared_required() {
  const char* e = std::getenv("LDM_REQUIRE_SHARED");
  return e && *e && std::string(e) != "0";
}

// Records that the running test case could not check `what` (a sentence: what is missing and
// how to provide it); the caller then returns, or goes on with what it can check.
inline void skip(const std::string& what) {
  if (shared_required()) FAIL(what << " (LDM_REQUIRE_SHARED is set: a missing ../shared is a failure)");
  const std::string name = Catch::getResultCapture().getCurrentTestName();
  auto& names = skipped_cases();
  if (names.empty() || names.back() != name) names.push_back(name);
  WARN("skipped: " << what);
}

// The exit code of a test executable given Catch's count of failed assertions: 1 if any (not
// the count, lest 77 failures read as a skip), else 77 if anything was skipped, else 0.
inline int exit_code(int failed) {
  if (failed != 0) return 1;
  if (skipped_cases().empty()) return 0;
  std::printf("SKIPPED: %zu test case(s) could not check everything (no ../shared):\n", skipped_cases().size());
  for (const auto& n : skipped_cases()) std::printf("  %s\n", n.c_str());
  return 77;
}

}  // namespace ldm::test

// `path_var` = shared_path(relative), or the calling test returns as skipped.
#define LDM_REQUIRE_SHARED(path_var, relative)                                                          \
  const std::string path_var = ::ldm::shared_path(relative);                                           \
  if (path_var.empty()) {                                                                               \
    ::ldm::test::skip(std::string("../shared/") + (relative) + " not found (looked in '" +             \
                      ::ldm::shared_dir() + "'; set LDM_SHARED to the shared folder)");                 \
    return;                                                                                             \
  }
