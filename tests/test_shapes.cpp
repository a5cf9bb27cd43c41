// The captioned-shapes dataset (include/ldm/data/shapes.hpp) and its read-back analyser
// (shapes_analyser.hpp): determinism, the caption grammar, the geometry, and the analyser
// reading rendered pictures back; then `ldm dataset shapes` and `ldm dataset analyse`.
#include <catch2/catch.hpp>

#include <sys/wait.h>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <set>
#include <sstream>
#include <string>
#include <vector>

#include "ldm/core/image.hpp"
#include "ldm/data/shapes.hpp"
#include "ldm/data/shapes_analyser.hpp"
#include "tmp_path.hpp"

using namespace ldm;
using namespace ldm::shapes;

namespace {

constexpr int kExamples = 2000;

const std::vector<Example>& examples() {  // seed 7, indices 0..1999, default caption options
  static const std::vector<Example> e = [] {
    std::vector<Example> v;
    for (int i = 0; i < kExamples; ++i) v.push_back(example(7, i));
    return v;
  }();
  return e;
}

// FNV-1a over the bytes of `s`, continuing from `h`.
uint64_t fnv1a(const void* data, size_t n, uint64_t h = 0xcbf29ce484222325ull) {
  const auto* p = static_cast<const uint8_t*>(data);
  for (size_t i = 0; i < n; ++i) h = (h ^ p[i]) * 0x100000001b3ull;
  return h;
}

}  // namespace

TEST_CASE("shapes: an example is a pure function of (seed, index)") {
  const Example a = example(3, 41), b = example(3, 41), c = example(3, 42), d = example(4, 41);
  CHECK(a.rgb == b.rgb);
  CHECK(a.caption == b.caption);
  CHECK(a.rgb != c.rgb);
  CHECK(a.rgb != d.rgb);
  // Caption options draw from their own stream: they never change the picture.
  CaptionOptions none;
  none.empty = none.drop_size = none.drop_position = none.drop_background = 0;
  const Example full = example(3, 41, none);
  CHECK(full.rgb == a.rgb);
  CHECK(full.caption == full_caption(a.spec));

  // Pinned: the dataset is the same on every machine and in every later version (a change here
  // is a new dataset, and says so).
  uint64_t h = 0xcbf29ce484222325ull;
  for (int i = 0; i < 100; ++i) {
    const Example e = example(0, i);
    h = fnv1a(e.rgb.data(), e.rgb.size(), h);
    h = fnv1a(e.caption.data(), e.caption.size() + 1, h);
  }
  CHECK(h == 0x81f390bf400fdbb3ull);
  CHECK(example(0, 0).caption == "a small orange square at the left on a black background");
}

TEST_CASE("shapes: Rng's helpers are uniform and in range") {
  Rng r(1);
  std::vector<int> counts(7, 0);
  for (int i = 0; i < 70000; ++i) ++counts[size_t(r.below(7))];
  for (int k : counts) CHECK(std::abs(k - 10000) < 400);  // ~4 sigma
  double sum = 0;
  for (int i = 0; i < 10000; ++i) {
    const double u = r.uniform();
    REQUIRE((u >= 0 && u < 1));
    sum += u;
  }
  CHECK(std::abs(sum / 10000 - 0.5) < 0.012);
}

TEST_CASE("shapes: the grammar: captions parse back, every value occurs, pictures stay inside") {
  std::vector<std::set<int>> seen(kNumAttributes);
  int empty = 0, with_size = 0, with_position = 0, with_background = 0;
  for (const Example& e : examples()) {
    const ShapeSpec& s = e.spec;
    INFO("example " << e.index << ": " << full_caption(s));
    REQUIRE(!(kColours[s.colour].rgb == kBackgrounds[s.background].rgb));
    const SideRange range = s.large ? kLargeSide : kSmallSide;
    REQUIRE((s.side_px >= range.lo && s.side_px <= range.hi));
    const Box b = box_of(s);
    REQUIRE((b.x0 >= 0 && b.y0 >= 0 && b.x0 + b.side <= kImageSize && b.y0 + b.side <= kImageSize));
    // The centre stays within 2 px of its cell's centre, or was moved inward no further than needed.
    const float gx = kGridCentres[s.position % 3], gy = kGridCentres[s.position / 3];
    CHECK((std::abs(s.cx - gx) <= 2 || b.x0 == 0 || b.x0 + b.side == kImageSize));
    CHECK((std::abs(s.cy - gy) <= 2 || b.y0 == 0 || b.y0 + b.side == kImageSize));

    PartialSpec full, said;
    REQUIRE(parse_caption(full_caption(s), full));
    CHECK(full == stated(s));
    REQUIRE(parse_caption(e.caption, said));
    for (int a = 0; a < kNumAttributes; ++a) {
      seen[size_t(a)].insert(attribute_of(stated(s), a));
      const int v = attribute_of(said, a);
      CHECK((v == kUnsaid || v == attribute_of(stated(s), a)));  // a caption never lies
    }
    empty += e.caption.empty();
    with_size += said.size != kUnsaid, with_position += said.position != kUnsaid;
    with_background += said.background != kUnsaid;
  }
  for (int a = 0; a < kNumAttributes; ++a) CHECK(seen[size_t(a)].size() == attribute_values(a).size());
  // Rates: 10% empty; each part kept in 80% of the non-empty 90% = 72% (3-4 sigma bounds).
  CHECK(std::abs(empty - 200) < 55);
  for (int n : {with_size, with_position, with_background}) CHECK(std::abs(n - 1440) < 80);
}

TEST_CASE("shapes: captions") {
  ShapeSpec s;
  s.background = 2, s.colour = 4, s.shape = kTriangle, s.large = false, s.position = 8;
  CHECK(full_caption(s) == "a small blue triangle at the bottom right on a gray background");
  PartialSpec p;
  REQUIRE(parse_caption("a yellow circle", p));
  CHECK(p == PartialSpec{kUnsaid, 2, kCircle, kUnsaid, kUnsaid});
  REQUIRE(parse_caption("  a large white square at the top\ton a black background\r", p));
  CHECK(p == PartialSpec{1, 6, kSquare, 1, 1});
  REQUIRE(parse_caption("a red circle at the top left", p));
  CHECK(p.position == 0);
  REQUIRE(parse_caption("", p));
  CHECK(p == PartialSpec{});
  for (const char* bad : {"a circle", "red circle", "a red", "a red circle at top", "a red circle at the middle",
                          "a red circle on a gray", "a red circle on a pink background", "a red circle please",
                          "a red circle on a gray background at the top", "a small large red circle"}) {
    INFO(bad);
    CHECK_FALSE(parse_caption(bad, p));
  }
}

TEST_CASE("shapes: rendering is anti-aliased and the VAE input is [-1, 1]") {
  ShapeSpec s;
  s.background = 0, s.colour = 7, s.shape = kSquare, s.side_px = 16, s.cx = 32.25f, s.cy = 32;
  std::vector<uint8_t> rgb(kImageBytes);
  render(s, rgb.data());
  auto at = [&](int x, int y) { return int(rgb[size_t(3 * (y * kImageSize + x))]); };
  CHECK(at(30, 30) == 0);    // inside: black
  CHECK(at(0, 0) == 255);    // background
  CHECK(at(24, 30) == 64);   // the left edge x = 24.25 covers 3/4 of column 24: 255 / 4
  CHECK(at(40, 30) == 191);  // the right edge 40.25 covers 1/4 of column 40
  Example e{0, s, "", rgb};
  Tensor x = to_vae_input({e, e});
  CHECK(x.shape() == Shape{2, 3, 64, 64});
  CHECK(x[0] == 1.0f);
  CHECK(x[30 * 64 + 30] == -1.0f);
}

TEST_CASE("shapes: the analyser reads rendered pictures back on every attribute") {
  AccuracyReport r;
  int wrong = 0;
  for (const Example& e : examples()) {
    const Analysis a = analyse(e.rgb.data());
    if (!r.add(stated(e.spec), a) && ++wrong <= 10)
      UNSCOPED_INFO(e.index << ": '" << full_caption(e.spec) << "' side " << e.spec.side_px << " read as '"
                            << describe(a) << "' fill " << a.fill << " box " << a.width << "x" << a.height);
  }
  INFO(format_report(r));
  CHECK(r.found == kExamples);
  CHECK(r.all_right == kExamples);  // 100%: the analyser is exact on the clean dataset
  for (int a = 0; a < kNumAttributes; ++a) CHECK(r.attributes[size_t(a)].accuracy() >= 0.995);
}

TEST_CASE("shapes: the analyser finds nothing in a blank picture; the report counts only what captions state") {
  std::vector<uint8_t> gray(kImageBytes, 128);
  const Analysis blank = analyse(gray.data());
  CHECK_FALSE(blank.found);
  CHECK(blank.read.background == 2);
  CHECK(describe(blank) == "no shape on a gray background");

  AccuracyReport r;
  PartialSpec said;
  REQUIRE(parse_caption("a red circle on a gray background", said));
  CHECK_FALSE(r.add(said, blank));
  CHECK(r.attributes[kBackgroundAttr].correct == 1);
  CHECK(r.attributes[kColourAttr].counts[0][kNumColours] == 1);  // red read as "none"
  CHECK(r.attributes[kSizeAttr].total == 0);                     // not stated: not scored
  CHECK(r.add(PartialSpec{}, blank));                            // the empty caption states nothing
  CHECK(r.images == 2);
  CHECK(r.captioned == 1);
  const std::string text = format_report(r);
  CHECK_THAT(text, Catch::Contains("colour (rows: caption, columns: read back)"));
  const viz::Canvas c = confusion_canvas(r);
  CHECK(c.width() > 100);
}

namespace {

// A 3x3 box blur of rgb (64 * 64 * 3), edges clamped: a soft picture, as a model might draw.
std::vector<uint8_t> blur3(const std::vector<uint8_t>& rgb) {
  std::vector<uint8_t> out(rgb.size());
  for (int y = 0; y < kImageSize; ++y)
    for (int x = 0; x < kImageSize; ++x)
      for (int c = 0; c < 3; ++c) {
        int sum = 0;
        for (int dy = -1; dy <= 1; ++dy)
          for (int dx = -1; dx <= 1; ++dx) {
            const int xx = std::clamp(x + dx, 0, kImageSize - 1), yy = std::clamp(y + dy, 0, kImageSize - 1);
            sum += rgb[size_t(3 * (yy * kImageSize + xx) + c)];
          }
        out[size_t(3 * (y * kImageSize + x) + c)] = uint8_t((sum + 4) / 9);
      }
  return out;
}

// A soft, slightly noisy picture, as a trained model might draw one.
std::vector<uint8_t> soften(const std::vector<uint8_t>& rgb, int noise_amplitude, Rng& noise) {
  std::vector<uint8_t> out = blur3(rgb);
  for (auto& v : out) v = uint8_t(std::clamp(int(v) + noise.below(2 * noise_amplitude + 1) - noise_amplitude, 0, 255));
  return out;
}

}  // namespace

TEST_CASE("shapes: the analyser reads blurred, noisy pictures back") {
  AccuracyReport r;
  Rng noise(11);
  for (int i = 0; i < 500; ++i) {
    const Example e = example(11, i);
    r.add(stated(e.spec), analyse(soften(e.rgb, 12, noise).data()));
  }
  INFO(format_report(r));
  CHECK(r.all_right >= 495);  // 99%
}

// Accuracy as blur and noise grow: ./test_shapes "[.probe]"
TEST_CASE("shapes: probe: the analyser under noise and blur", "[.probe]") {
  for (bool blur : {false, true})
    for (int amp : {0, 8, 16, 24, 32, 48}) {
      AccuracyReport r;
      Rng noise(99);
      for (const Example& e : examples()) {
        std::vector<uint8_t> rgb = blur ? blur3(e.rgb) : e.rgb;
        for (auto& v : rgb) v = uint8_t(std::clamp(int(v) + noise.below(2 * amp + 1) - amp, 0, 255));
        r.add(stated(e.spec), analyse(rgb.data()));
      }
      std::printf("blur %d noise +-%2d: all %.4f colour %.4f shape %.4f size %.4f position %.4f\n", blur, amp,
                  double(r.all_right) / double(r.captioned), r.attributes[1].accuracy(), r.attributes[2].accuracy(),
                  r.attributes[3].accuracy(), r.attributes[4].accuracy());
    }
}

#ifdef LDM_CLI
namespace {

int run_cli(const std::string& args, std::string* out) {
  const std::string log = "/tmp/ldm_test_shapes_" + std::to_string(::getpid()) + ".out";
  const int status = std::system((std::string(LDM_CLI) + " " + args + " > " + log + " 2>&1").c_str());
  std::ifstream f(log);
  std::stringstream ss;
  ss << f.rdbuf();
  *out = ss.str();
  std::filesystem::remove(log);
  return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
}

}  // namespace

TEST_CASE("ldm dataset shapes writes pictures, captions and a contact sheet; ldm dataset analyse reads them back") {
  test::TmpPath dir("shapes");
  std::string out;
  REQUIRE(run_cli("dataset shapes --count 24 --seed 5 --output " + dir.path, &out) == 0);
  INFO(out);
  for (const char* f : {"000000.png", "000023.png", "captions.txt", "full_captions.txt", "contact_sheet.png"})
    CHECK(std::filesystem::exists(dir.path + "/" + f));
  CHECK_FALSE(std::filesystem::exists(dir.path + "/000024.png"));
  std::ifstream captions(dir.path + "/captions.txt");
  std::string line;
  int lines = 0;
  while (std::getline(captions, line)) {
    const Example e = example(5, lines);
    CHECK(line == "0000" + std::string(lines < 10 ? "0" : "") + std::to_string(lines) + ".png\t" + e.caption);
    ++lines;
  }
  CHECK(lines == 24);
  const Tensor img = read_image(dir.path + "/000003.png");  // the bytes of example(5, 3)
  const Example e3 = example(5, 3);
  for (int64_t i = 0; i < 64 * 64; ++i) REQUIRE(img[i] * 255.0f == float(e3.rgb[size_t(3 * i)]));

  REQUIRE(run_cli("dataset analyse --input " + dir.path + " --confusion-png " + dir.path + "/confusion.png" +
                      " --sheet-png " + dir.path + "/sheet.png",
                  &out) == 0);
  CHECK_THAT(out, Catch::Contains("every stated attribute read back: 100.00% (24/24)"));
  CHECK(std::filesystem::exists(dir.path + "/confusion.png"));
  // the sheet: 24 captioned tiles, 8 a row, so 3 rows (each tile 130 px wide plus the grid's margins)
  const Tensor sheet = read_image(dir.path + "/sheet.png");
  CHECK(sheet.dim(3) > 8 * 130);
  CHECK(sheet.dim(2) > 3 * 130);

  // Bad input: a clear error and exit code 1.
  CHECK(run_cli("dataset analyse --input /nonexistent", &out) == 1);
  CHECK_THAT(out, Catch::Contains("error: "));
  std::ofstream(dir.path + "/bad.txt") << "000000.png\ta red thing\n";
  CHECK(run_cli("dataset analyse --input " + dir.path + " --captions " + dir.path + "/bad.txt", &out) == 1);
  CHECK_THAT(out, Catch::Contains("line 1") && Catch::Contains("a red thing"));
}
#endif
