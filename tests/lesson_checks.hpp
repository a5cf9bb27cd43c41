// Checks shared by the lesson smoke tests: a scratch folder per lesson, and the pictures a
// lesson wrote (there, non-empty, under the 200 KB a lesson README may carry).
#pragma once
#include <catch2/catch.hpp>
#include <filesystem>
#include <string>
#include <vector>

namespace ldm::test {

inline std::string out_dir(const char* lesson) {
  const std::filesystem::path p = std::filesystem::temp_directory_path() / "ldm_test_lessons" / lesson;
  std::filesystem::create_directories(p);
  return p.string();
}

inline void require_pictures(const std::vector<std::string>& paths, size_t expected) {
  REQUIRE(paths.size() == expected);
  for (const auto& p : paths) {
    INFO(p);
    REQUIRE(std::filesystem::exists(p));
    REQUIRE(std::filesystem::file_size(p) > 100);
    REQUIRE(std::filesystem::file_size(p) < 200 * 1024);
  }
}

}  // namespace ldm::test
