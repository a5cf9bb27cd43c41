// A synthetic picture for lessons that need an image when the user gives none: sky gradient,
// sun, hills, a red mug on a checkered table. Smooth regions, sharp edges, fine checks and
// saturated colours, so that what a VAE or the noise does to each is easy to see.
// Drawn in normalised coordinates, so any size gives the same scene (2x2 supersampled).
#pragma once
#include <algorithm>
#include <cmath>

#include "ldm/core/error.hpp"
#include "ldm/core/tensor.hpp"

namespace ldm::viz {

// -> [1, 3, height, width] in [0, 1]
inline Tensor test_pattern(int64_t height, int64_t width) {
  LDM_CHECK(height > 0 && width > 0, "test_pattern: size must be positive, got ", height, "x", width);
  struct RGB {
    float r, g, b;
  };
  auto mix = [](RGB a, RGB b, float t) { return RGB{a.r + t * (b.r - a.r), a.g + t * (b.g - a.g), a.b + t * (b.b - a.b)}; };
  const float kPi = 3.14159265f;
  // The colour at (u, v) in [0, 1)^2, v downwards.
  auto scene = [&](float u, float v) -> RGB {
    // Table: checks of 1/8 of the width, below v = 0.8.
    if (v >= 0.8f) {
      const bool odd = (int(std::floor(u * 8)) + int(std::floor((v - 0.8f) * 16))) % 2 != 0;
      return odd ? RGB{0.55f, 0.36f, 0.2f} : RGB{0.93f, 0.86f, 0.72f};
    }
    // Mug: body, rim and handle ring.
    const bool body = u >= 0.2f && u <= 0.42f && v >= 0.5f && v < 0.8f;
    const float hr = std::hypot(u - 0.42f, v - 0.64f);
    const bool handle = u > 0.42f && hr >= 0.05f && hr <= 0.08f;
    if (body || handle) {
      const float shade = body ? 0.75f + 0.25f * std::sin(kPi * (u - 0.2f) / 0.22f) : 0.8f;
      return {0.85f * shade, 0.08f * shade, 0.1f * shade};
    }
    // Hills below a wavy horizon, darker further down.
    const float horizon = 0.6f + 0.06f * std::sin(2 * kPi * 1.5f * u);
    if (v >= horizon) return mix({0.3f, 0.65f, 0.3f}, {0.12f, 0.4f, 0.15f}, (v - horizon) / (0.8f - horizon));
    // Sun with a soft glow, on the sky gradient.
    RGB sky = mix({0.3f, 0.5f, 0.85f}, {0.85f, 0.9f, 0.97f}, v / horizon);
    const float d = std::hypot(u - 0.75f, v - 0.22f);
    if (d < 0.1f) return {1.0f, 0.85f, 0.25f};
    return mix({1.0f, 0.9f, 0.5f}, sky, std::min(1.0f, (d - 0.1f) / 0.08f));
  };
  Tensor img = Tensor::empty({1, 3, height, width});
  const int64_t plane = height * width;
  for (int64_t y = 0; y < height; ++y)
    for (int64_t x = 0; x < width; ++x) {
      RGB acc{0, 0, 0};
      for (int s = 0; s < 4; ++s) {
        const RGB c = scene((float(x) + 0.25f + 0.5f * float(s % 2)) / float(width),
                            (float(y) + 0.25f + 0.5f * float(s / 2)) / float(height));
        acc.r += c.r / 4, acc.g += c.g / 4, acc.b += c.b / 4;
      }
      img[y * width + x] = acc.r;
      img[plane + y * width + x] = acc.g;
      img[2 * plane + y * width + x] = acc.b;
    }
  return img;
}

}  // namespace ldm::viz
