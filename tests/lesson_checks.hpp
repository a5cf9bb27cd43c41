// Checks shared by the lesson smoke tests: a scratch folder per lesson, the pictures a lesson
// wrote (there, non-empty, under the 200 KB a lesson README may carry), and the tiny models and
// tokenizer they run on.
#pragma once
#include <catch2/catch.hpp>
#include <filesystem>
#include <string>
#include <vector>

#include "../lessons/09_train_step/lesson.hpp"
#include "ldm/models/clip_tokenizer.hpp"

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

// Lesson 9's tiny models (VAE f = 8, U-Net 32/64 channels, CLIP 2 x 32), built once.
inline lessons::train_step::Models& tiny_lesson_models() {
  static lessons::train_step::Models m = lessons::train_step::tiny_models();
  return m;
}

// A CLIP tokenizer in memory: letters only, no merges (every word splits into its letters).
inline CLIPTokenizer letter_tokenizer() {
  CLIPTokenizer::Vocab v{{"<|startoftext|>", 0}, {"<|endoftext|>", 1}};
  for (char c = 'a'; c <= 'z'; ++c) {
    v[std::string(1, c)] = int(v.size());
    v[std::string(1, c) + "</w>"] = int(v.size());
  }
  return CLIPTokenizer(v, {});
}

}  // namespace ldm::test
