// Files a user names (include/ldm/core/files.hpp): every reader refuses a FIFO, a folder or a
// device at once, with an error naming the file (a FIFO used to block the process forever),
// and JSON/text reads name the file and the cause.
#include <sys/stat.h>

#include <catch2/catch.hpp>
#include <filesystem>
#include <fstream>
#include <string>

#include "ldm/core/checkpoint.hpp"
#include "ldm/core/files.hpp"
#include "ldm/core/image.hpp"
#include "ldm/core/safetensors.hpp"
#include "ldm/models/clip_tokenizer.hpp"
#include "tmp_path.hpp"

using namespace ldm;
using Catch::Contains;
namespace fs = std::filesystem;
using ldm::test::TmpPath;
using ldm::test::Timer;

namespace {

// A folder holding a FIFO named `name`; nothing ever writes to it, so a reader that opens it
// for reading blocks until the test is killed.
struct FifoDir {
  TmpPath dir;
  std::string fifo;
  explicit FifoDir(const std::string& name) : dir("fifo_dir"), fifo(dir.path + "/" + name) {
    fs::create_directories(dir.path);
    REQUIRE(::mkfifo(fifo.c_str(), 0600) == 0);
  }
};

void write_text(const std::string& path, const std::string& text) { std::ofstream(path, std::ios::binary) << text; }

}  // namespace

TEST_CASE("files: check_regular_file, open_regular_file and read_file say what a path is instead") {
  FifoDir d("pipe");
  CHECK_THROWS_WITH(check_regular_file(d.fifo, "image"), Contains("image '" + d.fifo + "' is a FIFO (named pipe)") &&
                                                             Contains("not a regular file"));
  CHECK_THROWS_WITH(check_regular_file(d.dir.path, "image"), Contains("is a folder, not a regular file"));
  CHECK_THROWS_WITH(check_regular_file("/dev/null", "image"), Contains("is a device, not a regular file"));
  CHECK_THROWS_WITH(check_regular_file(d.dir.path + "/absent.png", "image"),
                    Contains("cannot read image '" + d.dir.path + "/absent.png': No such file or directory"));
  uint64_t size = 0;
  CHECK_THROWS_WITH(open_regular_file(d.fifo, "safetensors file", &size), Contains("is a FIFO (named pipe)"));
  CHECK_THROWS_WITH(read_file(d.fifo, "config"), Contains("config '" + d.fifo + "' is a FIFO"));

  const std::string text = d.dir.path + "/text.txt";
  write_text(text, "hello");
  CHECK(read_file(text, "text") == "hello");
  CHECK_THROWS_WITH(read_file(text, "merges file", 4), Contains("is 5 bytes, more than the 4 such a file can have"));
}

TEST_CASE("files: every reader refuses a FIFO at once instead of blocking") {
  Timer t;
  SECTION("safetensors: a checkpoint, --inputs, --init-latents") {
    FifoDir d("model.safetensors");
    CHECK_THROWS_WITH(SafeTensors(d.fifo), Contains("safetensors file '" + d.fifo + "' is a FIFO"));
    CHECK_THROWS_WITH(open_model(d.fifo), Contains("model '" + d.fifo + "' is a FIFO"));
  }
  SECTION("images: --init-image, PNG text chunks") {
    FifoDir d("init.png");
    CHECK_THROWS_WITH(read_image(d.fifo), Contains("image '" + d.fifo + "' is a FIFO"));
    CHECK_THROWS_WITH(read_png_text(d.fifo), Contains("PNG file '" + d.fifo + "' is a FIFO"));
  }
  SECTION("tokenizer files: vocab.json, merges.txt") {
    FifoDir d("vocab.json");
    CHECK_THROWS_WITH(CLIPTokenizer(d.dir.path), Contains("CLIP tokenizer file '" + d.fifo + "' is a FIFO"));
    fs::remove(d.fifo);
    write_text(d.fifo, R"({"a</w>": 0, "<|startoftext|>": 1, "<|endoftext|>": 2})");
    REQUIRE(::mkfifo((d.dir.path + "/merges.txt").c_str(), 0600) == 0);
    CHECK_THROWS_WITH(CLIPTokenizer(d.dir.path), Contains("merges.txt' is a FIFO"));
  }
  SECTION("a diffusers folder: model_index.json, a component's config.json or weights") {
    TmpPath dir("fifo_pipeline");
    write_diffusers_folder(dir, {{Component::UNet, {{"conv_in.bias", {320}}}, nullptr},
                                 {Component::VAE, {{"conv_in.bias", {128}}}, nullptr},
                                 {Component::TextEncoder, {{"text_model.final_layer_norm.bias", {768}}}, nullptr}});
    REQUIRE_NOTHROW(open_model(dir));
    for (const std::string name : {"model_index.json", "unet/config.json", "vae/diffusion_pytorch_model.safetensors"}) {
      const std::string p = dir.path + "/" + name, keep = p + ".keep";
      fs::rename(p, keep);
      REQUIRE(::mkfifo(p.c_str(), 0600) == 0);
      CHECK_THROWS_WITH(open_model(dir), Contains("'" + p + "' is a FIFO (named pipe), not a regular file"));
      fs::remove(p);
      fs::rename(keep, p);
    }
  }
  CHECK(t.seconds() < 10);
}

TEST_CASE("files: JSON files name the file and the cause, not a bare json.exception") {
  TmpPath dir("json_files");
  fs::create_directories(dir.path);
  const std::string p = dir.path + "/config.json";
  write_text(p, "{\"in_channels\": 4,\n  oops}");
  CHECK_THROWS_WITH(read_json_file(p, "unet config"), Contains("unet config '" + p + "' is not valid JSON: parse error at line 2") &&
                                                          !Contains("json.exception"));
  CHECK_THROWS_WITH(read_json_file(dir.path + "/absent.json", "unet config"), Contains("No such file"));
  write_text(p, "");
  CHECK_THROWS_WITH(read_json_file(p, "unet config"), Contains("is not valid JSON") && !Contains("json.exception"));
}
