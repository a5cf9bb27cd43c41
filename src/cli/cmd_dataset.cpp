// `ldm dataset shapes`: writes the captioned-shapes dataset (include/ldm/data/shapes.hpp) as PNGs
// with their captions and a contact sheet, to look at and to train on.
// `ldm dataset analyse`: reads a folder of 64x64 PNGs back (shapes_analyser.hpp) and scores them
// against the captions they were drawn or generated from: per-attribute accuracy and confusion
// tables, the prompt-adherence measure of a model trained on the dataset.
#include <algorithm>
#include <cmath>
#include <cstdio>
#include <exception>
#include <filesystem>
#include <string>
#include <vector>

#include "commands.hpp"
#include "ldm/core/atomic_file.hpp"
#include "ldm/core/clock.hpp"
#include "ldm/core/files.hpp"
#include "ldm/core/image.hpp"
#include "ldm/data/shapes.hpp"
#include "ldm/data/shapes_analyser.hpp"
#include "output_path.hpp"
#include "seed_option.hpp"

namespace ldm::cli {
namespace {

namespace fs = std::filesystem;
using namespace ldm::shapes;

constexpr int64_t kMaxCount = 10'000'000;
constexpr int kSheetImages = 64;  // the contact sheet shows the first 64 pictures, 8 x 8

struct ShapesOptions {
  int64_t count = 0;
  std::string output, seed = "0";  // seed as text: CLI11 would wrap "-1" into 2^64 - 1
  CaptionOptions captions;
};

struct AnalyseOptions {
  std::string input, captions, confusion_png, sheet_png;
  int mismatches = 10;
};

// 000000.png, 000001.png, ...: six digits, more when the count needs them.
std::string file_name(int64_t index, int64_t count) {
  const int digits = std::max<int>(6, int(std::to_string(std::max<int64_t>(count - 1, 0)).size()));
  std::string n = std::to_string(index);
  return std::string(size_t(digits) - std::min(n.size(), size_t(digits)), '0') + n + ".png";
}

void write_text_file(const std::string& path, const std::string& text) {
  AtomicFile f(path);
  f.write(text.data(), text.size());
  f.commit();
}

void make_output_folder(const std::string& dir) {
  std::error_code ec;
  fs::create_directories(dir, ec);
  LDM_CHECK(!ec && fs::is_directory(dir), "--output '", dir, "': cannot make this folder",
            ec ? ": " + ec.message() : std::string(": a file of that name is in the way"));
  check_output_path((fs::path(dir) / "captions.txt").string(), "--output");
}

void run_shapes(const ShapesOptions& o) {
  const uint64_t seed = parse_seed(o.seed, /*allow_random=*/false);
  make_output_folder(o.output);
  const auto t0 = std::chrono::steady_clock::now();
  std::vector<std::string> captions(size_t(o.count)), full(size_t(o.count));
  std::exception_ptr error;
#pragma omp parallel for schedule(dynamic, 16)
  for (int64_t i = 0; i < o.count; ++i) {
    try {
      Example e = example(seed, i, o.captions);
      write_png_rgb8((fs::path(o.output) / file_name(i, o.count)).string(), e.rgb, kImageSize, kImageSize,
                     {{"caption", e.caption}});
      captions[size_t(i)] = std::move(e.caption);
      full[size_t(i)] = full_caption(e.spec);
    } catch (...) {
#pragma omp critical
      if (!error) error = std::current_exception();
    }
  }
  if (error) std::rethrow_exception(error);

  std::string captions_txt, full_txt;
  for (int64_t i = 0; i < o.count; ++i) {
    captions_txt += file_name(i, o.count) + "\t" + captions[size_t(i)] + "\n";
    full_txt += file_name(i, o.count) + "\t" + full[size_t(i)] + "\n";
  }
  write_text_file((fs::path(o.output) / "captions.txt").string(), captions_txt);
  write_text_file((fs::path(o.output) / "full_captions.txt").string(), full_txt);

  std::vector<std::vector<uint8_t>> images;
  std::vector<std::string> labels, sheet_captions;
  for (int64_t i = 0; i < std::min<int64_t>(o.count, kSheetImages); ++i) {
    Example e = example(seed, i, o.captions);
    images.push_back(std::move(e.rgb));
    labels.push_back(file_name(i, o.count));
    sheet_captions.push_back(std::move(e.caption));
  }
  contact_sheet(images, labels, sheet_captions).save((fs::path(o.output) / "contact_sheet.png").string());
  std::fprintf(stderr,
               "wrote %lld pictures (seed %llu) with captions.txt, full_captions.txt and contact_sheet.png to %s "
               "in %.1f s\n",
               (long long)o.count, (unsigned long long)seed, o.output.c_str(), seconds_since(t0));
}

struct CaptionLine {
  std::string file, caption;
  int line;
};

// "FILE<TAB>CAPTION" lines (a line without a tab: a file with the empty caption).
std::vector<CaptionLine> read_captions(const std::string& path) {
  const std::string text = read_file(path, "captions file");
  std::vector<CaptionLine> lines;
  size_t begin = 0;
  for (int n = 1; begin < text.size(); ++n) {
    size_t end = text.find('\n', begin);
    if (end == std::string::npos) end = text.size();
    std::string line = text.substr(begin, end - begin);
    begin = end + 1;
    if (!line.empty() && line.back() == '\r') line.pop_back();
    if (line.empty()) continue;
    const size_t tab = line.find('\t');
    lines.push_back({line.substr(0, tab), tab == std::string::npos ? "" : line.substr(tab + 1), n});
  }
  LDM_CHECK(!lines.empty(), "captions file '", path, "' lists no pictures (expected FILE<TAB>CAPTION lines)");
  return lines;
}

// A picture file as 64 * 64 * 3 bytes (HWC).
std::vector<uint8_t> read_rgb64(const std::string& path) {
  const Tensor img = read_image(path);  // [1, 3, H, W] in [0, 1]
  LDM_CHECK(img.dim(2) == kImageSize && img.dim(3) == kImageSize, "'", path, "' is ", img.dim(3), "x", img.dim(2),
            ": the shapes analyser reads 64x64 pictures");
  return shapes::picture_bytes(img);
}

// --captions, or the folder's full_captions.txt (written by `ldm dataset shapes`), or its captions.txt.
std::string captions_path(const AnalyseOptions& o) {
  if (!o.captions.empty()) return o.captions;
  const fs::path full = fs::path(o.input) / "full_captions.txt";
  return fs::exists(full) ? full.string() : (fs::path(o.input) / "captions.txt").string();
}

void run_analyse(const AnalyseOptions& o) {
  LDM_CHECK(fs::is_directory(o.input), "--input '", o.input, "' is not a folder");
  if (!o.confusion_png.empty()) check_output_path(o.confusion_png, "--confusion-png");
  if (!o.sheet_png.empty()) check_output_path(o.sheet_png, "--sheet-png");
  const std::string path = captions_path(o);
  AccuracyReport report;
  int shown = 0;
  // The sheet: the first 64 pictures, each labelled "N ok" (every stated part read back) or
  // "N x", with its caption under it.
  std::vector<std::vector<uint8_t>> sheet_images;
  std::vector<std::string> sheet_labels, sheet_captions;
  for (const CaptionLine& l : read_captions(path)) {
    PartialSpec truth;
    LDM_CHECK(parse_caption(l.caption, truth), path, " line ", l.line, ": '", l.caption,
              "' does not follow the shapes grammar (a [SIZE] COLOUR SHAPE [at the POSITION] [on a BACKGROUND "
              "background])");
    const fs::path file = fs::path(l.file).is_absolute() ? fs::path(l.file) : fs::path(o.input) / l.file;
    std::vector<uint8_t> rgb = read_rgb64(file.string());
    const Analysis a = analyse(rgb.data());
    const bool right = report.add(truth, a);
    if (!right && shown++ < o.mismatches)
      std::printf("mismatch %s: '%s' read back as '%s'\n", l.file.c_str(), l.caption.c_str(), describe(a).c_str());
    if (!o.sheet_png.empty() && sheet_images.size() < size_t(kSheetImages)) {
      sheet_labels.push_back(std::to_string(sheet_images.size()) + (right ? " ok" : " x"));
      sheet_captions.push_back(l.caption);
      sheet_images.push_back(std::move(rgb));
    }
  }
  if (shown > o.mismatches) std::printf("... and %d more mismatches\n", shown - o.mismatches);
  std::printf("truth from %s\n%s", path.c_str(), format_report(report).c_str());
  if (!o.confusion_png.empty()) {
    confusion_canvas(report).save(o.confusion_png);
    std::printf("wrote %s\n", o.confusion_png.c_str());
  }
  if (!o.sheet_png.empty() && !sheet_images.empty()) {
    contact_sheet(sheet_images, sheet_labels, sheet_captions).save(o.sheet_png);
    std::printf("wrote %s\n", o.sheet_png.c_str());
  }
}

void add_shapes(CLI::App& dataset) {
  static ShapesOptions o;
  auto* c = dataset.add_subcommand(
      "shapes",
      "Write the captioned-shapes dataset: DIR/000000.png ... (64x64 RGB), DIR/captions.txt (one "
      "FILE<TAB>CAPTION line per picture: the training captions, some parts left out, ~10% empty), "
      "DIR/full_captions.txt (the same with every part stated) and DIR/contact_sheet.png (the first 64, "
      "captioned). Example i of a seed is the same on every machine. Grammar: docs/datasets.md");
  c->add_option("--count", o.count, "number of pictures")->required()->check(CLI::Range(int64_t(1), kMaxCount));
  c->add_option("--output", o.output, "folder to write (made if missing)")->required();
  c->add_option("--seed", o.seed, "dataset seed, 0 to 2^64 - 1")->capture_default_str();
  c->add_option("--drop-size", o.captions.drop_size, "probability a caption leaves out the size")
      ->check(CLI::Range(0.0, 1.0))
      ->capture_default_str();
  c->add_option("--drop-position", o.captions.drop_position, "probability a caption leaves out the position")
      ->check(CLI::Range(0.0, 1.0))
      ->capture_default_str();
  c->add_option("--drop-background", o.captions.drop_background, "probability a caption leaves out the background")
      ->check(CLI::Range(0.0, 1.0))
      ->capture_default_str();
  c->add_option("--empty", o.captions.empty, "probability of the empty caption (for classifier-free guidance)")
      ->check(CLI::Range(0.0, 1.0))
      ->capture_default_str();
  c->callback([] { run_shapes(o); });
}

void add_analyse(CLI::App& dataset) {
  static AnalyseOptions o;
  auto* c = dataset.add_subcommand(
      "analyse",
      "Read 64x64 shape pictures back and score them against their captions: per-attribute accuracy "
      "and confusion tables (prompt adherence of a model trained on `ldm dataset shapes`)");
  c->add_option("--input", o.input, "folder of PNGs")->required();
  c->add_option("--captions", o.captions,
                "FILE<TAB>CAPTION lines, the caption or prompt each picture was drawn from; files relative to "
                "--input. Default: INPUT/full_captions.txt if present, else INPUT/captions.txt. Only what a "
                "caption states is scored");
  c->add_option("--confusion-png", o.confusion_png, "also draw the confusion tables as heat maps into this PNG");
  c->add_option("--sheet-png", o.sheet_png,
                "also draw the first 64 pictures into this PNG, each with its caption and whether it read back right");
  c->add_option("--mismatches", o.mismatches, "print at most this many misread pictures")
      ->check(CLI::NonNegativeNumber)
      ->capture_default_str();
  c->callback([] { run_analyse(o); });
}

}  // namespace

void add_dataset(CLI::App& app) {
  auto* dataset = app.add_subcommand("dataset", "Procedural datasets: write one (shapes), or score pictures (analyse)");
  dataset->require_subcommand(1);
  add_shapes(*dataset);
  add_analyse(*dataset);
}

}  // namespace ldm::cli
