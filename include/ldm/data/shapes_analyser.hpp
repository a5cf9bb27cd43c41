// Reads a 64x64 picture of the captioned-shapes grammar (include/ldm/data/shapes.hpp) back into
// attributes, and scores pictures against the captions they were drawn from: how we measure
// whether a text-to-image model trained on the dataset draws what its prompt says.
//
//   Analysis a = analyse(rgb);                  // rgb: 64 * 64 * 3 bytes, HWC
//   AccuracyReport r;
//   r.add(truth /* parse_caption(prompt) */, a);
//   std::cout << format_report(r);              // per-attribute accuracy + confusion tables
//
// How a picture is read:
//   background  the median colour of the 252 border pixels; its name is the nearest of the 3
//   colour      pass 1: pixels more than 48 (RGB distance) from that colour; the largest
//               4-connected region of them; the median of its inner pixels (all 4 neighbours in
//               the region) is the shape's colour, named by the nearest of the 8
//   the shape   pass 2: each pixel's coverage alpha = (p - bg).(fg - bg) / |fg - bg|^2, the
//               pixel's place on the line from the background to the shape's colour; the
//               largest region with alpha >= 0.5 is the shape, its bounding box the box
//   kind        how much of its extent it fills: fill = (summed coverage) / (widest row's
//               coverage * tallest column's coverage), over the shape and 2 px around it
//               (unclamped, so noise averages out; a soft edge counts by its coverage).
//               Triangle ~0.5-0.6 (< 0.69), circle ~0.79 (< 0.86), square ~1; the thresholds
//               sit between the ranges measured on clean, 3x3-blurred and +-16-noisy pictures
//   size        the longer extent: small (14-18 px) below 23 px, large (28-34 px) above
//   position    the box centre's cell of the 3x3 grid of thirds of the image
// A region under 40 pixels (less than half the smallest triangle) is "no shape found".
#pragma once
#include <algorithm>
#include <array>
#include <cctype>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <string>
#include <vector>

#include "ldm/data/shapes.hpp"
#include "ldm/viz/canvas.hpp"
#include "ldm/viz/colormap.hpp"

namespace ldm::shapes {

constexpr int kFarFromBackground = 48;  // pass 1: RGB distance
constexpr int kMinShapePixels = 40;
constexpr float kTriangleBelowFill = 0.69f, kCircleBelowFill = 0.86f;
constexpr int kLargeFromSide = 23;  // px

struct Analysis {
  bool found = false;                         // a shape-sized region apart from the background
  PartialSpec read;                           // the background always; colour, shape, size and position when found
  int x0 = 0, y0 = 0, width = 0, height = 0;  // the shape's bounding box, pixels
  int pixels = 0;                             // the shape's pixel count (coverage >= 0.5)
  float extent_x = 0, extent_y = 0;           // its widest row and tallest column, pixels of coverage
  float fill = 0;                             // its coverage / (extent_x * extent_y)
};

namespace detail {

inline int distance2(Rgb a, Rgb b) {
  const int dr = a.r - b.r, dg = a.g - b.g, db = a.b - b.b;
  return dr * dr + dg * dg + db * db;
}

template <size_t N>
int nearest(const NamedColour (&table)[N], Rgb c) {
  int best = 0;
  for (int i = 1; i < int(N); ++i)
    if (distance2(c, table[i].rgb) < distance2(c, table[best].rgb)) best = i;
  return best;
}

inline Rgb pixel(const uint8_t* rgb, int i) { return {rgb[3 * i], rgb[3 * i + 1], rgb[3 * i + 2]}; }

// The per-channel median of the pixels `at` (indices y * 64 + x).
inline Rgb median_colour(const uint8_t* rgb, const std::vector<int>& at) {
  std::array<std::vector<uint8_t>, 3> ch;
  for (int i : at)
    for (int c = 0; c < 3; ++c) ch[size_t(c)].push_back(rgb[3 * i + c]);
  uint8_t m[3];
  for (int c = 0; c < 3; ++c) {
    auto& v = ch[size_t(c)];
    std::nth_element(v.begin(), v.begin() + std::ptrdiff_t(v.size() / 2), v.end());
    m[c] = v[v.size() / 2];
  }
  return {m[0], m[1], m[2]};
}

inline std::vector<int> border_pixels() {
  std::vector<int> at;
  for (int y = 0; y < kImageSize; ++y)
    for (int x = 0; x < kImageSize; ++x)
      if (x == 0 || y == 0 || x == kImageSize - 1 || y == kImageSize - 1) at.push_back(y * kImageSize + x);
  return at;
}

// The largest 4-connected region of `mask` (64 * 64), as pixel indices; empty when none.
inline std::vector<int> largest_region(const std::vector<uint8_t>& mask) {
  std::vector<uint8_t> seen(mask.size(), 0);
  std::vector<int> best, region;
  for (int start = 0; start < kImageSize * kImageSize; ++start) {
    if (!mask[size_t(start)] || seen[size_t(start)]) continue;
    region.assign(1, start);
    seen[size_t(start)] = 1;
    for (size_t k = 0; k < region.size(); ++k) {  // breadth first; `region` is the queue
      const int x = region[k] % kImageSize, y = region[k] / kImageSize;
      const int nx[4] = {x - 1, x + 1, x, x}, ny[4] = {y, y, y - 1, y + 1};
      for (int n = 0; n < 4; ++n) {
        if (nx[n] < 0 || ny[n] < 0 || nx[n] >= kImageSize || ny[n] >= kImageSize) continue;
        const size_t j = size_t(ny[n] * kImageSize + nx[n]);
        if (mask[j] && !seen[j]) seen[j] = 1, region.push_back(int(j));
      }
    }
    if (region.size() > best.size()) best.swap(region);
  }
  return best;
}

// The pixels of `region` whose 4 neighbours are all in it (all of it when none are).
inline std::vector<int> inner_pixels(const std::vector<int>& region) {
  std::vector<uint8_t> in(size_t(kImageSize * kImageSize), 0);
  for (int i : region) in[size_t(i)] = 1;
  std::vector<int> inner;
  for (int i : region) {
    const int x = i % kImageSize, y = i / kImageSize;
    if (x > 0 && y > 0 && x < kImageSize - 1 && y < kImageSize - 1 && in[size_t(i - 1)] && in[size_t(i + 1)] &&
        in[size_t(i - kImageSize)] && in[size_t(i + kImageSize)])
      inner.push_back(i);
  }
  return inner.empty() ? region : inner;
}

// Pass 2's mask: pixels p with (p - bg) . (fg - bg) >= |fg - bg|^2 / 2, i.e. coverage >= 0.5.
inline std::vector<uint8_t> half_coverage_mask(const uint8_t* rgb, Rgb bg, Rgb fg) {
  const int fr = fg.r - bg.r, fgg = fg.g - bg.g, fb = fg.b - bg.b, full = fr * fr + fgg * fgg + fb * fb;
  std::vector<uint8_t> mask(size_t(kImageSize * kImageSize));
  for (int i = 0; i < kImageSize * kImageSize; ++i) {
    const Rgb p = pixel(rgb, i);
    mask[size_t(i)] = 2 * ((p.r - bg.r) * fr + (p.g - bg.g) * fgg + (p.b - bg.b) * fb) >= full;
  }
  return mask;
}

// The shape's pixels and the ring of pixels around them (3x3 dilation), where its soft edge is.
inline std::vector<int> with_ring(const std::vector<int>& shape) {
  constexpr int kRing = 2;
  std::vector<uint8_t> in(size_t(kImageSize * kImageSize), 0);
  for (int i : shape) {
    const int x = i % kImageSize, y = i / kImageSize;
    for (int dy = -kRing; dy <= kRing; ++dy)
      for (int dx = -kRing; dx <= kRing; ++dx)
        if (x + dx >= 0 && y + dy >= 0 && x + dx < kImageSize && y + dy < kImageSize)
          in[size_t((y + dy) * kImageSize + x + dx)] = 1;
  }
  std::vector<int> near;
  for (int i = 0; i < kImageSize * kImageSize; ++i)
    if (in[size_t(i)]) near.push_back(i);
  return near;
}

// Box, extent, fill, kind, size and position of the shape. `shape`: its pixels (coverage >= 0.5);
// the extents and area come from the coverage of every pixel near it, unclamped, so noise
// averages out and a soft edge counts by how much of the pixel it covers.
inline void measure(const uint8_t* rgb, Rgb bg, Rgb fg, const std::vector<int>& shape, Analysis& a) {
  int x_lo = kImageSize, y_lo = kImageSize, x_hi = -1, y_hi = -1;
  for (int i : shape) {
    const int x = i % kImageSize, y = i / kImageSize;
    x_lo = std::min(x_lo, x), x_hi = std::max(x_hi, x), y_lo = std::min(y_lo, y), y_hi = std::max(y_hi, y);
  }
  a.x0 = x_lo, a.y0 = y_lo, a.width = x_hi - x_lo + 1, a.height = y_hi - y_lo + 1;
  a.pixels = int(shape.size());

  const float fr = float(fg.r - bg.r), fgg = float(fg.g - bg.g), fb = float(fg.b - bg.b);
  const float full = fr * fr + fgg * fgg + fb * fb;
  std::vector<float> row(kImageSize, 0.0f), col(kImageSize, 0.0f);  // coverage summed along rows / columns
  for (int i : with_ring(shape)) {
    const Rgb p = pixel(rgb, i);
    const float alpha = (float(p.r - bg.r) * fr + float(p.g - bg.g) * fgg + float(p.b - bg.b) * fb) / full;
    row[size_t(i / kImageSize)] += alpha, col[size_t(i % kImageSize)] += alpha;
  }
  float area = 0;
  for (float v : row) area += v;
  a.extent_x = *std::max_element(row.begin(), row.end());  // the widest row
  a.extent_y = *std::max_element(col.begin(), col.end());  // the tallest column
  a.fill = area / std::max(a.extent_x * a.extent_y, 1.0f);
  a.read.shape = a.fill < kTriangleBelowFill ? kTriangle : a.fill < kCircleBelowFill ? kCircle : kSquare;
  a.read.size = std::max(a.extent_x, a.extent_y) >= float(kLargeFromSide);
  auto third = [](float centre) { return std::min(2, int(centre * 3 / float(kImageSize))); };
  a.read.position = 3 * third(float(a.y0) + 0.5f * float(a.height)) + third(float(a.x0) + 0.5f * float(a.width));
}

}  // namespace detail

// A picture [1, 3, 64, 64] in [0, 1] (read_image's form) as the analyser reads it: 64 * 64 * 3
// bytes, HWC.
inline std::vector<uint8_t> picture_bytes(const Tensor& img) {
  LDM_CHECK(img.shape() == Shape({1, 3, kImageSize, kImageSize}), "the shapes analyser reads 64x64 RGB pictures, got ",
            img.shape_str());
  constexpr int64_t S = int64_t(kImageSize) * kImageSize;
  std::vector<uint8_t> rgb(size_t(3 * S));
  for (int64_t i = 0; i < S; ++i)
    for (int64_t c = 0; c < 3; ++c) rgb[size_t(3 * i + c)] = uint8_t(std::lround(img[c * S + i] * 255.0f));
  return rgb;
}

// Reads rgb[64 * 64 * 3] (HWC) back into attributes (see the top of this file).
inline Analysis analyse(const uint8_t* rgb) {
  using namespace detail;
  Analysis a;
  const Rgb bg = median_colour(rgb, border_pixels());
  a.read.background = nearest(kBackgrounds, bg);
  std::vector<uint8_t> far(size_t(kImageSize * kImageSize));
  for (int i = 0; i < kImageSize * kImageSize; ++i)
    far[size_t(i)] = distance2(pixel(rgb, i), bg) > kFarFromBackground * kFarFromBackground;
  const std::vector<int> region = largest_region(far);
  if (int(region.size()) < kMinShapePixels) return a;
  const Rgb fg = median_colour(rgb, inner_pixels(region));
  if (fg == bg) return a;  // (per-channel medians can meet) no line from one to the other
  const std::vector<int> shape = largest_region(half_coverage_mask(rgb, bg, fg));
  if (int(shape.size()) < kMinShapePixels) return a;
  a.found = true;
  a.read.colour = nearest(kColours, fg);
  measure(rgb, bg, fg, shape, a);
  return a;
}

// ---- scoring pictures against their captions

enum Attribute { kBackgroundAttr, kColourAttr, kShapeAttr, kSizeAttr, kPositionAttr, kNumAttributes };

inline const char* attribute_name(int a) {
  static const char* names[kNumAttributes] = {"background", "colour", "shape", "size", "position"};
  return names[a];
}
// The values' words, index = value.
inline std::vector<std::string> attribute_values(int a) {
  using detail::words_of;
  switch (a) {
    case kBackgroundAttr: return words_of(kBackgrounds);
    case kColourAttr: return words_of(kColours);
    case kShapeAttr: return words_of(kShapeWords);
    case kSizeAttr: return words_of(kSizeWords);
    default: return words_of(kPositionWords);
  }
}
inline int attribute_of(const PartialSpec& p, int a) {
  const int v[kNumAttributes] = {p.background, p.colour, p.shape, p.size, p.position};
  return v[a];
}

// One attribute's confusion table: counts[truth][read], where read == the number of values
// is "none" (no shape found). Only pictures whose caption states the attribute count.
struct Confusion {
  std::vector<std::vector<int64_t>> counts;
  int64_t correct = 0, total = 0;
  double accuracy() const { return total ? double(correct) / double(total) : 0.0; }
};

struct AccuracyReport {
  std::array<Confusion, kNumAttributes> attributes;
  int64_t images = 0, found = 0;
  int64_t captioned = 0, all_right = 0;  // pictures whose caption states something / all of it read back

  AccuracyReport() {
    for (int a = 0; a < kNumAttributes; ++a) {
      const size_t n = attribute_values(a).size();
      attributes[size_t(a)].counts.assign(n, std::vector<int64_t>(n + 1, 0));
    }
  }

  // One picture: `truth` = what its caption states (parse_caption), `got` = analyse(picture).
  // Returns whether every stated attribute was read back.
  bool add(const PartialSpec& truth, const Analysis& got) {
    ++images;
    found += got.found;
    bool any = false, right = true;
    for (int a = 0; a < kNumAttributes; ++a) {
      const int t = attribute_of(truth, a);
      if (t == kUnsaid) continue;
      Confusion& c = attributes[size_t(a)];
      const int n = int(c.counts.size()), r = attribute_of(got.read, a);
      const bool ok = r == t;
      ++c.counts[size_t(t)][size_t(r == kUnsaid ? n : r)];
      ++c.total, c.correct += ok;
      any = true, right &= ok;
    }
    captioned += any, all_right += any && right;
    return right;
  }
};

// What an analysis read, as a caption: "a large red circle at the top on a white background",
// or "no shape on a white background".
inline std::string describe(const Analysis& a) {
  if (!a.found) return std::string("no shape on a ") + kBackgrounds[a.read.background].word + " background";
  return caption_text(a.read);
}

namespace detail {

inline std::string percent(int64_t k, int64_t n) {
  char buf[64];
  std::snprintf(buf, sizeof buf, "%6.2f%% (%lld/%lld)", n ? 100.0 * double(k) / double(n) : 0.0, (long long)k,
                (long long)n);
  return buf;
}

inline std::string pad(const std::string& s, size_t width, bool right) {
  const std::string fill(width > s.size() ? width - s.size() : 0, ' ');
  return right ? fill + s : s + fill;
}

// A column heading: the word, or for values of several words every value's initials in capitals
// ("top left" -> "TL", "top" -> "T"), so that the position table fits 80 columns.
inline std::vector<std::string> column_names(const std::vector<std::string>& values) {
  bool several = false;
  for (const auto& v : values) several |= v.find(' ') != std::string::npos;
  std::vector<std::string> names;
  for (const auto& v : values) {
    std::string initials;
    for (const auto& w : split_words(v)) initials += char(std::toupper(static_cast<unsigned char>(w[0])));
    names.push_back(several ? initials : v);
  }
  names.push_back("none");
  return names;
}

// Rows: the caption's value; columns: what was read back ("none": no shape found).
inline std::string confusion_table(const Confusion& c, const std::vector<std::string>& values) {
  const std::vector<std::string> columns = column_names(values);
  size_t label = 0, cell = 0;
  for (const auto& v : values) label = std::max(label, v.size());
  for (const auto& v : columns) cell = std::max(cell, v.size());
  for (const auto& row : c.counts)
    for (int64_t k : row) cell = std::max(cell, std::to_string(k).size());
  std::string s = pad("", label, false);
  for (const auto& v : columns) s += "  " + pad(v, cell, true);
  s += "\n";
  for (size_t t = 0; t < c.counts.size(); ++t) {
    s += pad(values[t], label, false);
    for (int64_t k : c.counts[t]) s += "  " + pad(k ? std::to_string(k) : ".", cell, true);
    s += "\n";
  }
  return s;
}

}  // namespace detail

// Per-attribute accuracy, then each attribute's confusion table (rows: caption, columns: read).
inline std::string format_report(const AccuracyReport& r) {
  using namespace detail;
  std::string s = "pictures " + std::to_string(r.images) + ", a shape found in " + percent(r.found, r.images) +
                  "\nevery stated attribute read back: " + percent(r.all_right, r.captioned) +
                  " of captioned pictures\n";
  for (int a = 0; a < kNumAttributes; ++a)
    s += pad(attribute_name(a), 11, false) + percent(r.attributes[size_t(a)].correct, r.attributes[size_t(a)].total) +
         "\n";
  for (int a = 0; a < kNumAttributes; ++a)
    s += std::string("\n") + attribute_name(a) + " (rows: caption, columns: read back)\n" +
         confusion_table(r.attributes[size_t(a)], attribute_values(a));
  return s;
}

// The confusion tables as heat maps, one under another: each row normalised (viridis: dark =
// none, yellow = all of the row), the count written in each cell.
inline viz::Canvas confusion_canvas(const AccuracyReport& r) {
  constexpr int kCell = 36, kPad = 10;
  auto columns_of = [](int a) {
    std::vector<std::string> v = attribute_values(a);
    v.push_back("none");
    return v;
  };
  auto header_height = [&](int a) {  // column names are written upwards
    int h = 0;
    for (const auto& v : columns_of(a)) h = std::max(h, viz::Canvas::text_width(v));
    return h;
  };
  int label_w = 0, width = 0, height = kPad;
  for (int a = 0; a < kNumAttributes; ++a) {
    const int n = int(attribute_values(a).size());
    for (const auto& v : attribute_values(a)) label_w = std::max(label_w, viz::Canvas::text_width(v));
    width = std::max(width, (n + 1) * kCell);
    height += viz::kCellHeight + 4 + header_height(a) + 4 + n * kCell + 2 * kPad;
  }
  const int x0 = kPad + label_w + 6;
  viz::Canvas c(x0 + width + kPad, height);
  int y = kPad;
  for (int a = 0; a < kNumAttributes; ++a) {
    const Confusion& conf = r.attributes[size_t(a)];
    const std::vector<std::string> rows = attribute_values(a), columns = columns_of(a);
    c.text(kPad, y, std::string(attribute_name(a)) + ": " + detail::percent(conf.correct, conf.total), viz::kBlack);
    y += viz::kCellHeight + 4 + header_height(a);
    for (size_t j = 0; j < columns.size(); ++j)
      c.text_up(x0 + int(j) * kCell + kCell / 2 - 4, y, columns[j], viz::kBlack);
    y += 4;
    for (size_t t = 0; t < rows.size(); ++t) {
      int64_t row_total = 0;
      for (int64_t k : conf.counts[t]) row_total += k;
      c.text(kPad, y + int(t) * kCell + kCell / 2 - 4, rows[t], viz::kBlack);
      for (size_t j = 0; j < columns.size(); ++j) {
        const int64_t k = conf.counts[t][j];
        const float f = row_total ? float(k) / float(row_total) : 0.0f;
        const int cx = x0 + int(j) * kCell, cy = y + int(t) * kCell;
        c.fill_rect(cx, cy, kCell - 1, kCell - 1, row_total ? viz::viridis(f) : viz::kLightGray);
        const std::string n = std::to_string(k);
        c.text(cx + (kCell - viz::Canvas::text_width(n)) / 2, cy + kCell / 2 - 4, n,
               f > 0.6f ? viz::kBlack : viz::kWhite);
      }
    }
    y += int(rows.size()) * kCell + 2 * kPad;
  }
  return c;
}

}  // namespace ldm::shapes
