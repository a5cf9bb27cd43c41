// The captioned-shapes dataset of "ldm-shapes", our small text-to-image model: procedural 64x64
// RGB pictures of one filled shape on a uniform background, each with a caption that says what
// is drawn. Example i of seed s is always the same picture and caption, on every machine.
//
//   Example e = example(/*seed=*/0, /*index=*/17, CaptionOptions{});
//   e.caption    "a small blue triangle at the bottom right on a gray background" (or shorter, or "")
//   e.rgb        64 * 64 * 3 bytes, row by row (HWC)
//   Tensor x = to_vae_input({e});   // [1, 3, 64, 64] in [-1, 1]
//
// The grammar (docs/datasets.md):
//   background  white, black, gray
//   colour      red, orange, yellow, green, blue, purple, white, black; never the background's
//   shape       circle; square (axis-aligned); triangle (isosceles, apex up, as wide as tall)
//   size        small: a bounding box 14-18 px a side; large: 28-34 px
//   position    the box's centre at 25 / 50 / 75 % of the side (+-2 px), moved inward just
//               enough to keep the whole shape inside: top left, top, ..., bottom right
//   caption     "a [SIZE] COLOUR SHAPE [at the POSITION] [on a BACKGROUND background]"; each
//               bracketed part is left out with a probability, and the whole caption is empty
//               for ~10% of examples (classifier-free guidance learns from those).
//
// Determinism: every draw comes from splitmix64 streams seeded by (seed, index), with our own
// integer and uniform helpers (no std:: distributions, whose output differs between standard
// libraries). Shape centres are multiples of 1/8 px and the 4x4 supersamples sit at odd
// multiples of 1/8 px, so every coverage test is exact in floating point: no rounding, no FMA
// contraction and no compiler can change a pixel.
#pragma once
#include <algorithm>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <iterator>
#include <string>
#include <vector>

#include "ldm/core/error.hpp"
#include "ldm/core/tensor.hpp"
#include "ldm/viz/canvas.hpp"

namespace ldm::shapes {

constexpr int kImageSize = 64;                            // pixels a side
constexpr int kImageBytes = kImageSize * kImageSize * 3;  // RGB, HWC
constexpr int kUnsaid = -1;                               // an attribute a caption leaves out

struct Rgb {
  uint8_t r = 0, g = 0, b = 0;
};
inline bool operator==(Rgb a, Rgb b) { return a.r == b.r && a.g == b.g && a.b == b.b; }

struct NamedColour {
  const char* word;
  Rgb rgb;
};

// ---- the grammar's tables: index = the value of the attribute, word = its caption word(s)

inline constexpr NamedColour kBackgrounds[] = {
    {"white", {255, 255, 255}}, {"black", {0, 0, 0}}, {"gray", {128, 128, 128}}};
inline constexpr NamedColour kColours[] = {
    {"red", {220, 30, 30}},  {"orange", {245, 140, 20}}, {"yellow", {245, 220, 30}}, {"green", {30, 160, 50}},
    {"blue", {30, 70, 220}}, {"purple", {140, 50, 180}}, {"white", {255, 255, 255}}, {"black", {0, 0, 0}}};
enum ShapeKind { kCircle, kSquare, kTriangle };
inline constexpr const char* kShapeWords[] = {"circle", "square", "triangle"};
inline constexpr const char* kSizeWords[] = {"small", "large"};  // index = ShapeSpec::large
// The 3x3 grid row by row: position p is column p % 3, row p / 3.
inline constexpr const char* kPositionWords[] = {"top left", "top",         "top right", "left",        "center",
                                                 "right",    "bottom left", "bottom",    "bottom right"};

constexpr int kNumBackgrounds = int(std::size(kBackgrounds)), kNumColours = int(std::size(kColours)),
              kNumShapes = int(std::size(kShapeWords)), kNumSizes = int(std::size(kSizeWords)),
              kNumPositions = int(std::size(kPositionWords));

struct SideRange {
  int lo, hi;  // bounding-box side in pixels, both included
};
constexpr SideRange kSmallSide{14, 18}, kLargeSide{28, 34};
constexpr float kGridCentres[3] = {16, 32, 48};  // 25 / 50 / 75 % of 64 px
constexpr int kJitterEighths = 16;               // +-2 px of jitter, in steps of 1/8 px

// ---- random numbers

// splitmix64 (Steele, Lea & Flood 2014): a 64-bit counter through a strong mixer. Small, fast,
// and the same sequence on every platform.
class Rng {
 public:
  explicit Rng(uint64_t seed) : state_(seed) {}

  // The stream of example `index` of `seed`; `stream` keeps apart the draws of one example
  // (0: the picture, 1: the caption), so caption options never change a picture.
  static Rng for_example(uint64_t seed, int64_t index, uint64_t stream) {
    return Rng(mix(mix(mix(seed) ^ uint64_t(index)) ^ stream));
  }

  uint64_t next() { return mix(state_ += kGolden); }

  // Uniform integer in [0, n), n >= 1, exactly (rejection of the top 2^64 mod n values).
  int below(int n) {
    const uint64_t bound = uint64_t(n), reject_below = (0 - bound) % bound;  // 2^64 mod n
    for (;;) {
      const uint64_t x = next();
      if (x >= reject_below) return int(x % bound);
    }
  }
  // Uniform in [0, 1), 53 random bits.
  double uniform() { return double(next() >> 11) * 0x1.0p-53; }
  bool chance(double p) { return uniform() < p; }

 private:
  static constexpr uint64_t kGolden = 0x9E3779B97F4A7C15ull;
  static uint64_t mix(uint64_t z) {  // splitmix64's finaliser
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
  }
  uint64_t state_;
};

// ---- one picture's attributes

struct ShapeSpec {
  int background = 0;  // index into kBackgrounds
  int colour = 0;      // index into kColours; never the background's colour
  int shape = kCircle;
  bool large = false;
  int side_px = 16;        // the bounding box's side in pixels (kSmallSide or kLargeSide)
  int position = 4;        // index into kPositionWords (the grid cell the centre was drawn from)
  float cx = 32, cy = 32;  // the box's centre in pixels; (0, 0) = the image's top-left corner
};

// What a caption says: each attribute a value index, or kUnsaid where the caption leaves it out.
struct PartialSpec {
  int background = kUnsaid, colour = kUnsaid, shape = kUnsaid, size = kUnsaid /* 0 small, 1 large */,
      position = kUnsaid;
};
inline bool operator==(const PartialSpec& a, const PartialSpec& b) {
  return a.background == b.background && a.colour == b.colour && a.shape == b.shape && a.size == b.size &&
         a.position == b.position;
}

// Everything a full caption says about `s`.
inline PartialSpec stated(const ShapeSpec& s) { return {s.background, s.colour, s.shape, int(s.large), s.position}; }

// Draws the attributes of one picture: every value uniform, the colour among those that differ
// from the background, the side uniform in its size's range, the centre jittered by a multiple
// of 1/8 px and clamped so that the box [cx - side/2, cx + side/2] stays inside [0, 64].
inline ShapeSpec random_spec(Rng& rng) {
  ShapeSpec s;
  s.background = rng.below(kNumBackgrounds);
  std::vector<int> colours;  // those that show on this background
  for (int c = 0; c < kNumColours; ++c)
    if (!(kColours[c].rgb == kBackgrounds[s.background].rgb)) colours.push_back(c);
  s.colour = colours[size_t(rng.below(int(colours.size())))];
  s.shape = rng.below(kNumShapes);
  s.large = rng.below(2) == 1;
  const SideRange range = s.large ? kLargeSide : kSmallSide;
  s.side_px = range.lo + rng.below(range.hi - range.lo + 1);
  s.position = rng.below(kNumPositions);
  const float half = 0.5f * float(s.side_px);
  auto place = [&](int cell) {
    const float jitter = float(rng.below(2 * kJitterEighths + 1) - kJitterEighths) / 8.0f;
    return std::clamp(kGridCentres[cell] + jitter, half, float(kImageSize) - half);
  };
  s.cx = place(s.position % 3);
  s.cy = place(s.position / 3);
  return s;
}

// ---- captions

struct CaptionOptions {
  double drop_size = 0.2, drop_position = 0.2, drop_background = 0.2;  // P(the part is left out)
  double empty = 0.1;  // P(the whole caption is ""), for classifier-free guidance
};

// "a [SIZE] COLOUR SHAPE [at the POSITION] [on a BACKGROUND background]" from what `p` states;
// "" when it states nothing. Colour and shape must be stated when anything is.
inline std::string caption_text(const PartialSpec& p) {
  if (p == PartialSpec{}) return "";
  LDM_CHECK(p.colour != kUnsaid && p.shape != kUnsaid, "caption_text: a caption always names the colour and shape");
  std::string s = "a";
  if (p.size != kUnsaid) s += std::string(" ") + kSizeWords[p.size];
  s += std::string(" ") + kColours[p.colour].word + " " + kShapeWords[p.shape];
  if (p.position != kUnsaid) s += std::string(" at the ") + kPositionWords[p.position];
  if (p.background != kUnsaid) s += std::string(" on a ") + kBackgrounds[p.background].word + " background";
  return s;
}

// Every part: "a small blue triangle at the bottom right on a gray background".
inline std::string full_caption(const ShapeSpec& s) { return caption_text(stated(s)); }

// A training caption: empty with probability o.empty, else each bracketed part left out with
// its probability. Always takes four draws from `rng`, whatever the options.
inline std::string caption(const ShapeSpec& s, const CaptionOptions& o, Rng& rng) {
  const bool empty = rng.chance(o.empty), no_size = rng.chance(o.drop_size), no_position = rng.chance(o.drop_position),
             no_background = rng.chance(o.drop_background);
  if (empty) return "";
  PartialSpec p = stated(s);
  if (no_size) p.size = kUnsaid;
  if (no_position) p.position = kUnsaid;
  if (no_background) p.background = kUnsaid;
  return caption_text(p);
}

namespace detail {

inline std::vector<std::string> split_words(const std::string& s) {
  std::vector<std::string> words;
  std::string w;
  for (char c : s + " ") {
    if (c == ' ' || c == '\t' || c == '\r' || c == '\n') {
      if (!w.empty()) words.push_back(w);
      w.clear();
    } else {
      w += c;
    }
  }
  return words;
}

// Reads `words` from position `at`, one grammar part at a time.
struct CaptionReader {
  const std::vector<std::string>& words;
  size_t at = 0;

  bool literal(const char* w) {
    if (at < words.size() && words[at] == w) return ++at, true;
    return false;
  }
  // The index of the entry (one or more words) that comes next, or kUnsaid; the longest match
  // wins ("top left" over "top").
  int one_of(const std::vector<std::string>& entries) {
    int best = kUnsaid;
    size_t best_len = 0;
    for (size_t i = 0; i < entries.size(); ++i) {
      const std::vector<std::string> entry = split_words(entries[i]);
      if (entry.size() <= best_len || at + entry.size() > words.size()) continue;
      if (std::equal(entry.begin(), entry.end(), words.begin() + std::ptrdiff_t(at)))
        best = int(i), best_len = entry.size();
    }
    at += best_len;
    return best;
  }
};

template <size_t N>
std::vector<std::string> words_of(const char* const (&table)[N]) {
  return std::vector<std::string>(table, table + N);
}
template <size_t N>
std::vector<std::string> words_of(const NamedColour (&table)[N]) {
  std::vector<std::string> w;
  for (const NamedColour& c : table) w.push_back(c.word);
  return w;
}

}  // namespace detail

// Caption -> what it states; false when it does not follow the grammar. The empty caption
// (or only white space) states nothing and parses.
inline bool parse_caption(const std::string& text, PartialSpec& out) {
  using detail::words_of;
  const std::vector<std::string> words = detail::split_words(text);
  out = PartialSpec{};
  if (words.empty()) return true;
  detail::CaptionReader r{words};
  PartialSpec p;
  if (!r.literal("a")) return false;
  p.size = r.one_of(words_of(kSizeWords));
  if ((p.colour = r.one_of(words_of(kColours))) == kUnsaid) return false;
  if ((p.shape = r.one_of(words_of(kShapeWords))) == kUnsaid) return false;
  if (r.literal("at") && (!r.literal("the") || (p.position = r.one_of(words_of(kPositionWords))) == kUnsaid))
    return false;
  if (r.literal("on") &&
      (!r.literal("a") || (p.background = r.one_of(words_of(kBackgrounds))) == kUnsaid || !r.literal("background")))
    return false;
  if (r.at != words.size()) return false;
  out = p;
  return true;
}

// ---- pictures

// The shape's bounding box [x0, x0 + side) x [y0, y0 + side), in pixels.
struct Box {
  float x0, y0, side;
};
inline Box box_of(const ShapeSpec& s) {
  const float half = 0.5f * float(s.side_px);
  return {s.cx - half, s.cy - half, float(s.side_px)};
}

// Is the point (x, y) (pixels, y down) inside the shape? Exact for coordinates on the 1/8 grid.
inline bool inside(int shape, const Box& b, float x, float y) {
  const float dx = x - (b.x0 + 0.5f * b.side), dy = y - b.y0;  // from the top-centre
  if (y < b.y0 || y >= b.y0 + b.side) return false;
  switch (shape) {
    case kSquare: return x >= b.x0 && x < b.x0 + b.side;
    case kCircle: {
      const float r = 0.5f * b.side, ry = dy - r;
      return dx * dx + ry * ry < r * r;
    }
    default:  // kTriangle: apex (cx, y0), base from (x0, y0 + side) to (x0 + side, y0 + side)
      return 2.0f * std::abs(dx) < dy;
  }
}

// Draws `s` into rgb[64 * 64 * 3] (HWC): the background, then the shape, anti-aliased by 4x4
// supersamples per pixel (pixel = background + (colour - background) * covered / 16, rounded).
inline void render(const ShapeSpec& s, uint8_t* rgb) {
  const Rgb bg = kBackgrounds[s.background].rgb, fg = kColours[s.colour].rgb;
  for (int i = 0; i < kImageSize * kImageSize; ++i) rgb[3 * i] = bg.r, rgb[3 * i + 1] = bg.g, rgb[3 * i + 2] = bg.b;
  const Box b = box_of(s);
  const int x_lo = std::max(0, int(std::floor(b.x0))), x_hi = std::min(kImageSize, int(std::ceil(b.x0 + b.side)));
  const int y_lo = std::max(0, int(std::floor(b.y0))), y_hi = std::min(kImageSize, int(std::ceil(b.y0 + b.side)));
  auto blend = [](int from, int to, int n) { return uint8_t((from * (16 - n) + to * n + 8) / 16); };
  for (int y = y_lo; y < y_hi; ++y)
    for (int x = x_lo; x < x_hi; ++x) {
      int n = 0;  // supersamples inside, of 16, at (x + (2i + 1) / 8, y + (2j + 1) / 8)
      for (int j = 0; j < 4; ++j)
        for (int i = 0; i < 4; ++i)
          n += inside(s.shape, b, float(x) + float(2 * i + 1) / 8, float(y) + float(2 * j + 1) / 8);
      uint8_t* p = rgb + 3 * (y * kImageSize + x);
      p[0] = blend(bg.r, fg.r, n), p[1] = blend(bg.g, fg.g, n), p[2] = blend(bg.b, fg.b, n);
    }
}

// ---- examples

struct Example {
  int64_t index = 0;
  ShapeSpec spec;
  std::string caption;       // the training caption (may leave parts out, may be "")
  std::vector<uint8_t> rgb;  // 64 * 64 * 3, HWC
};

// Example `index` of `seed`: the picture from stream 0, the caption from stream 1.
inline Example example(uint64_t seed, int64_t index, const CaptionOptions& options = {}) {
  Example e;
  e.index = index;
  Rng spec_rng = Rng::for_example(seed, index, 0), caption_rng = Rng::for_example(seed, index, 1);
  e.spec = random_spec(spec_rng);
  e.caption = caption(e.spec, options, caption_rng);
  e.rgb.resize(kImageBytes);
  render(e.spec, e.rgb.data());
  return e;
}

// A batch of pictures as the VAE encoder takes them: [B, 3, 64, 64] (NCHW), byte / 127.5 - 1,
// so 0 -> -1 and 255 -> 1 exactly.
inline Tensor to_vae_input(const std::vector<Example>& batch) {
  LDM_CHECK(!batch.empty(), "to_vae_input: an empty batch");
  constexpr int64_t S = int64_t(kImageSize) * kImageSize;
  Tensor x = Tensor::empty({int64_t(batch.size()), 3, kImageSize, kImageSize});
  for (size_t b = 0; b < batch.size(); ++b) {
    LDM_CHECK(batch[b].rgb.size() == size_t(kImageBytes), "to_vae_input: example ", batch[b].index, " has ",
              batch[b].rgb.size(), " bytes, not 64 * 64 * 3");
    float* out = x.data() + int64_t(b) * 3 * S;
    for (int64_t i = 0; i < S; ++i)
      for (int c = 0; c < 3; ++c) out[c * S + i] = float(batch[b].rgb[size_t(3 * i + c)]) / 127.5f - 1.0f;
  }
  return x;
}

// ---- a contact sheet

// `text` in lines of at most `width` characters, broken between words.
inline std::vector<std::string> wrap_words(const std::string& text, size_t width) {
  std::vector<std::string> lines;
  for (const std::string& w : detail::split_words(text)) {
    if (!lines.empty() && lines.back().size() + 1 + w.size() <= width)
      lines.back() += " " + w;
    else
      lines.push_back(w);
  }
  return lines;
}

// A grid of 64x64 RGB pictures (HWC bytes), `columns` wide, each scaled x`scale` with its label
// (e.g. the file name) above it and its caption word-wrapped under it ("(empty caption)" in
// gray for ""). At scale 2 a tile is 128 px wide: 21 characters of the 5x7 font a line.
inline viz::Canvas contact_sheet(const std::vector<std::vector<uint8_t>>& images,
                                 const std::vector<std::string>& labels, const std::vector<std::string>& captions,
                                 int columns = 8, int scale = 2) {
  LDM_CHECK(!images.empty() && labels.size() == images.size() && captions.size() == images.size(),
            "contact_sheet: ", images.size(), " images, ", labels.size(), " labels and ", captions.size(), " captions");
  const int side = kImageSize * scale;
  const size_t chars = size_t((side + 1) / viz::kCellWidth);
  std::vector<std::vector<std::string>> lines;
  size_t most_lines = 1;
  for (const std::string& c : captions) {
    lines.push_back(c.empty() ? std::vector<std::string>{"(empty caption)"} : wrap_words(c, chars));
    most_lines = std::max(most_lines, lines.back().size());
  }
  std::vector<viz::Canvas> tiles;
  for (size_t k = 0; k < images.size(); ++k) {
    LDM_CHECK(images[k].size() == size_t(kImageBytes), "contact_sheet: image ", k, " is not 64 * 64 * 3 bytes");
    viz::Canvas t(side + 2, side + 6 + int(most_lines) * viz::kCellHeight);
    t.rect(0, 0, side + 2, side + 2, viz::kLightGray);  // a frame: white pictures on the white sheet
    for (int y = 0; y < kImageSize; ++y)
      for (int x = 0; x < kImageSize; ++x) {
        const uint8_t* p = &images[k][size_t(3 * (y * kImageSize + x))];
        t.fill_rect(1 + x * scale, 1 + y * scale, scale, scale, {p[0], p[1], p[2]});
      }
    const viz::Color ink = captions[k].empty() ? viz::kGray : viz::kBlack;
    for (size_t l = 0; l < lines[k].size(); ++l) t.text(1, side + 6 + int(l) * viz::kCellHeight, lines[k][l], ink);
    tiles.push_back(std::move(t));
  }
  return viz::grid(tiles, labels, columns);
}

}  // namespace ldm::shapes
