// The viridis colour map (matplotlib's default; van der Walt & Smith 2015, CC0) and heat maps
// of 2-d float arrays drawn with it. Viridis is perceptually uniform and reads correctly in
// grey scale: dark purple = low, yellow = high.
//
//   Canvas c = heatmap(latent.data() + ch * h * w, h, w, /*scale=*/4);   // one latent channel
#pragma once
#include <algorithm>
#include <cmath>
#include <cstdio>
#include <utility>

#include "ldm/viz/canvas.hpp"

namespace ldm::viz {

// viridis(t), t in [0, 1] (clamped): linear interpolation between 17 entries of matplotlib's
// 256-entry table (entries 0, 16, ..., 240 and 255), within 1/255 of the full table.
inline Color viridis(float t) {
  static const float pos[17] = {0,         16 / 255.f,  32 / 255.f,  48 / 255.f,  64 / 255.f,  80 / 255.f,
                                96 / 255.f, 112 / 255.f, 128 / 255.f, 144 / 255.f, 160 / 255.f, 176 / 255.f,
                                192 / 255.f, 208 / 255.f, 224 / 255.f, 240 / 255.f, 1};
  static const float rgb[17][3] = {
      {0.267004f, 0.004874f, 0.329415f}, {0.282327f, 0.094955f, 0.417331f}, {0.278826f, 0.175490f, 0.483397f},
      {0.258965f, 0.251537f, 0.524736f}, {0.229739f, 0.322361f, 0.545706f}, {0.199430f, 0.387607f, 0.554642f},
      {0.172719f, 0.448791f, 0.557885f}, {0.149039f, 0.508051f, 0.557250f}, {0.127568f, 0.566949f, 0.550556f},
      {0.120638f, 0.625828f, 0.533488f}, {0.157851f, 0.683765f, 0.501686f}, {0.246070f, 0.738910f, 0.452024f},
      {0.369214f, 0.788888f, 0.382914f}, {0.515992f, 0.831158f, 0.294279f}, {0.678489f, 0.863742f, 0.189503f},
      {0.845561f, 0.887322f, 0.099702f}, {0.993248f, 0.906157f, 0.143936f}};
  t = std::isfinite(t) ? std::clamp(t, 0.0f, 1.0f) : 0.0f;
  int i = 0;
  while (i < 15 && t > pos[i + 1]) ++i;
  const float f = (t - pos[i]) / (pos[i + 1] - pos[i]);
  auto mix = [&](int k) { return uint8_t(std::lround(255.0f * (rgb[i][k] + f * (rgb[i + 1][k] - rgb[i][k])))); };
  return {mix(0), mix(1), mix(2)};
}

// Smallest and largest finite value of v[0..n).
inline std::pair<float, float> min_max(const float* v, int64_t n) {
  float lo = INFINITY, hi = -INFINITY;
  for (int64_t i = 0; i < n; ++i)
    if (std::isfinite(v[i])) lo = std::min(lo, v[i]), hi = std::max(hi, v[i]);
  return lo <= hi ? std::make_pair(lo, hi) : std::make_pair(0.0f, 1.0f);
}

// A rows x cols array (row-major) as a viridis picture, each value a scale x scale block:
// lo maps to dark purple, hi to yellow. lo == hi (a constant array) draws the middle colour.
inline Canvas heatmap(const float* v, int rows, int cols, float lo, float hi, int scale = 1) {
  Canvas c(cols * scale, rows * scale);
  const float span = hi - lo;
  for (int r = 0; r < rows; ++r)
    for (int q = 0; q < cols; ++q) {
      const float t = span > 0 ? (v[r * cols + q] - lo) / span : 0.5f;
      c.fill_rect(q * scale, r * scale, scale, scale, viridis(t));
    }
  return c;
}
// The same, scaled to the array's own range.
inline Canvas heatmap(const float* v, int rows, int cols, int scale = 1) {
  auto [lo, hi] = min_max(v, int64_t(rows) * cols);
  return heatmap(v, rows, cols, lo, hi, scale);
}

// A vertical colour bar `height` pixels tall with lo at the bottom and hi at the top, and
// the two values written beside it.
inline Canvas colorbar(float lo, float hi, int height, int bar_width = 12) {
  char a[32], b[32];
  std::snprintf(a, sizeof a, "%.3g", double(lo));
  std::snprintf(b, sizeof b, "%.3g", double(hi));
  const int label = std::max(Canvas::text_width(a), Canvas::text_width(b));
  Canvas c(bar_width + 4 + label, height);
  for (int y = 0; y < height; ++y) c.fill_rect(0, y, bar_width, 1, viridis(1.0f - float(y) / float(height - 1)));
  c.rect(0, 0, bar_width, height, kBlack);
  c.text(bar_width + 4, 0, b, kBlack);
  c.text(bar_width + 4, height - Canvas::text_height(), a, kBlack);
  return c;
}

}  // namespace ldm::viz
