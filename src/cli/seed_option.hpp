// --seed as text: CLI11 would wrap "-1" into 2^64 - 1, so the commands take the text and parse it
// here, refusing (not wrapping) anything outside [0, 2^64 - 1].
#pragma once
#include <charconv>
#include <cstdint>
#include <random>
#include <string>

#include "ldm/core/error.hpp"

namespace ldm::cli {

// `allow_random`: "-1" draws a random seed, as in Stable Diffusion web UIs (`ldm generate`);
// commands whose output must be reproducible (`ldm dataset`) take integers only.
inline uint64_t parse_seed(const std::string& text, bool allow_random) {
  if (allow_random && text == "-1") {
    std::random_device rd;
    return uint64_t(rd()) << 32 | uint64_t(rd());
  }
  uint64_t seed = 0;
  const char* end = text.data() + text.size();
  const auto [stop, ec] = std::from_chars(text.data(), end, seed);
  LDM_CHECK(!text.empty() && ec == std::errc() && stop == end, "--seed must be ",
            allow_random ? "-1 (a random seed) or " : "", "an integer from 0 to 18446744073709551615, got '", text, "'");
  return seed;
}

}  // namespace ldm::cli
