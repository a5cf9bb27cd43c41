// An 8-bit RGB picture to draw on: pixels, rectangles, lines, 5x7 text and float images,
// saved as PNG. What the lessons' pictures (plots, heat maps, image grids) are drawn with.
//
//   Canvas c(320, 200);
//   c.line(10, 190, 310, 10, kBlack);
//   c.text(12, 12, "beta_t", kBlack);
//   c.save("plot.png");
#pragma once
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <string>
#include <vector>

#include "ldm/core/error.hpp"
#include "ldm/core/image.hpp"
#include "ldm/core/tensor.hpp"
#include "ldm/viz/font.hpp"

namespace ldm::viz {

struct Color {
  uint8_t r = 0, g = 0, b = 0;
};
inline constexpr Color kBlack{0, 0, 0}, kWhite{255, 255, 255}, kGray{128, 128, 128}, kLightGray{225, 225, 225};

// matplotlib's "tab10" colours, for series 0, 1, 2, ...
inline Color palette(size_t i) {
  static const Color c[] = {{31, 119, 180}, {255, 127, 14}, {44, 160, 44},   {214, 39, 40},  {148, 103, 189},
                            {140, 86, 75},  {227, 119, 194}, {127, 127, 127}, {188, 189, 34}, {23, 190, 207}};
  return c[i % 10];
}

// Whole numbers as they are, others "%.3g" without the exponent's padding: 1e-04 -> 1e-4.
inline std::string format_number(double v) {
  char buf[32];
  if (v == std::round(v) && std::abs(v) < 1e7)  // whole numbers in full: 1000, not 1e3
    std::snprintf(buf, sizeof buf, "%.0f", v);
  else
    std::snprintf(buf, sizeof buf, "%.3g", v);
  std::string s = buf;
  for (const char* pad : {"e-0", "e+0"}) {
    size_t p = s.find(pad);
    if (p != std::string::npos) s.erase(p + 2, 1);
  }
  size_t p = s.find("e+");
  if (p != std::string::npos) s.erase(p + 1, 1);
  return s;
}

// 859520964 -> "859,520,964"
inline std::string with_commas(int64_t n) {
  std::string s = std::to_string(n < 0 ? -n : n);
  for (int i = int(s.size()) - 3; i > 0; i -= 3) s.insert(size_t(i), ",");
  return n < 0 ? "-" + s : s;
}

class Canvas {
 public:
  Canvas(int width, int height, Color background = kWhite) : w_(width), h_(height) {
    LDM_CHECK(width > 0 && height > 0, "Canvas: size must be positive, got ", width, "x", height);
    px_.resize(size_t(width) * size_t(height) * 3);
    fill_rect(0, 0, width, height, background);
  }
  int width() const { return w_; }
  int height() const { return h_; }
  const std::vector<uint8_t>& pixels() const { return px_; }  // row-major RGB
  Color at(int x, int y) const {
    const uint8_t* p = &px_[(size_t(y) * size_t(w_) + size_t(x)) * 3];
    return {p[0], p[1], p[2]};
  }

  // Drawing outside the canvas is clipped, never an error.
  void set(int x, int y, Color c) {
    if (x < 0 || y < 0 || x >= w_ || y >= h_) return;
    uint8_t* p = &px_[(size_t(y) * size_t(w_) + size_t(x)) * 3];
    p[0] = c.r, p[1] = c.g, p[2] = c.b;
  }
  void fill_rect(int x, int y, int w, int h, Color c) {
    for (int j = std::max(y, 0); j < std::min(y + h, h_); ++j)
      for (int i = std::max(x, 0); i < std::min(x + w, w_); ++i) set(i, j, c);
  }
  void rect(int x, int y, int w, int h, Color c) {  // outline
    fill_rect(x, y, w, 1, c);
    fill_rect(x, y + h - 1, w, 1, c);
    fill_rect(x, y, 1, h, c);
    fill_rect(x + w - 1, y, 1, h, c);
  }
  // A straight line (sampled at every pixel step along its longer axis), `thickness` pixels wide.
  void line(double x0, double y0, double x1, double y1, Color c, int thickness = 1) {
    const double n = std::max({std::abs(x1 - x0), std::abs(y1 - y0), 1.0});
    const int lo = -(thickness - 1) / 2, hi = thickness / 2;
    for (int s = 0; s <= int(std::ceil(n)); ++s) {
      const double t = std::min(s / n, 1.0);
      const int x = int(std::lround(x0 + t * (x1 - x0))), y = int(std::lround(y0 + t * (y1 - y0)));
      for (int dy = lo; dy <= hi; ++dy)
        for (int dx = lo; dx <= hi; ++dx) set(x + dx, y + dy, c);
    }
  }

  // Text with its top-left corner at (x, y); each glyph pixel becomes a scale x scale block.
  void text(int x, int y, const std::string& s, Color c, int scale = 1) {
    for (size_t k = 0; k < s.size(); ++k) {
      const uint8_t* g = glyph(s[k]);
      const int gx = x + int(k) * kCellWidth * scale;
      for (int col = 0; col < kGlyphWidth; ++col)
        for (int row = 0; row < kGlyphRows; ++row)
          if (g[col] >> row & 1) fill_rect(gx + col * scale, y + row * scale, scale, scale, c);
    }
  }
  // The same turned 90 degrees counter-clockwise (reading upwards), starting at (x, y) = its
  // bottom-left corner: for a y-axis label.
  void text_up(int x, int y, const std::string& s, Color c, int scale = 1) {
    for (size_t k = 0; k < s.size(); ++k) {
      const uint8_t* g = glyph(s[k]);
      const int gy = y - int(k) * kCellWidth * scale;
      for (int col = 0; col < kGlyphWidth; ++col)
        for (int row = 0; row < kGlyphRows; ++row)
          if (g[col] >> row & 1) fill_rect(x + row * scale, gy - (col + 1) * scale, scale, scale, c);
    }
  }
  static int text_width(const std::string& s, int scale = 1) {
    return s.empty() ? 0 : (int(s.size()) * kCellWidth - 1) * scale;
  }
  static int text_height(int scale = 1) { return kGlyphHeight * scale; }

  // An RGB image [3, H, W] or [1, 3, H, W] with values in [0, 1] (clamped), each pixel drawn as
  // a scale x scale block, top-left at (x, y).
  void image(const Tensor& img, int x, int y, int scale = 1) {
    LDM_CHECK((img.ndim() == 3 && img.dim(0) == 3) || (img.ndim() == 4 && img.dim(0) == 1 && img.dim(1) == 3),
              "Canvas::image: expected an RGB image [3, H, W] or [1, 3, H, W], got ", img.shape_str());
    const int64_t H = img.dim(-2), W = img.dim(-1), plane = H * W;
    auto to8 = [](float v) { return uint8_t(std::lround(std::clamp(v, 0.0f, 1.0f) * 255.0f)); };
    for (int64_t r = 0; r < H; ++r)
      for (int64_t q = 0; q < W; ++q) {
        const int64_t i = r * W + q;
        fill_rect(x + int(q) * scale, y + int(r) * scale, scale, scale,
                  {to8(img[i]), to8(img[plane + i]), to8(img[2 * plane + i])});
      }
  }
  // Another canvas, top-left at (x, y).
  void blit(const Canvas& src, int x, int y) {
    for (int j = 0; j < src.height(); ++j)
      for (int i = 0; i < src.width(); ++i) set(x + i, y + j, src.at(i, j));
  }

  void save(const std::string& path) const { write_png_rgb8(path, px_, w_, h_); }

 private:
  int w_, h_;
  std::vector<uint8_t> px_;
};

// An RGB image [1, 3, H, W] or [3, H, W] in [0, 1] as a canvas, each pixel scale x scale.
inline Canvas picture(const Tensor& img, int scale = 1) {
  Canvas c(int(img.dim(-1)) * scale, int(img.dim(-2)) * scale);
  c.image(img, 0, 0, scale);
  return c;
}

// Canvases in a grid of `columns`, row by row, each with its caption above it (captions may
// be ""), `pad` pixels apart, on white. Cells are as large as the largest tile.
inline Canvas grid(const std::vector<Canvas>& tiles, const std::vector<std::string>& captions, int columns,
                   int pad = 8) {
  LDM_CHECK(!tiles.empty() && columns > 0, "grid: nothing to lay out");
  LDM_CHECK(captions.empty() || captions.size() == tiles.size(), "grid: ", captions.size(), " captions for ",
            tiles.size(), " tiles");
  int cw = 0, ch = 0;
  bool any_caption = false;
  for (const auto& t : tiles) cw = std::max(cw, t.width()), ch = std::max(ch, t.height());
  for (const auto& s : captions) {
    any_caption |= !s.empty();
    cw = std::max(cw, Canvas::text_width(s));
  }
  const int cap = any_caption ? kCellHeight + 4 : 0;
  const int rows = (int(tiles.size()) + columns - 1) / columns, cols = std::min(columns, int(tiles.size()));
  Canvas g(pad + cols * (cw + pad), pad + rows * (cap + ch + pad));
  for (size_t i = 0; i < tiles.size(); ++i) {
    const int x = pad + int(i % size_t(columns)) * (cw + pad), y = pad + int(i / size_t(columns)) * (cap + ch + pad);
    if (!captions.empty()) g.text(x, y, captions[i], kBlack);
    g.blit(tiles[i], x, y + cap);
  }
  return g;
}

}  // namespace ldm::viz
