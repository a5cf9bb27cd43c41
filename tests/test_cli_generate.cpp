// `ldm generate` on bad input: a clear message and a non-zero exit, never a crash; and a
// prompt over 77 tokens is truncated with a warning, as diffusers does.
#include <catch2/catch.hpp>
#include <cstdlib>
#include <filesystem>
#include <limits>
#include <fstream>

#include "ldm/core/image.hpp"
#include "ldm/core/safetensors.hpp"
#include "cli_run.hpp"
#include "reference.hpp"
#include "tmp_path.hpp"

namespace {

using ldm::test::Run;

// `ldm generate ARGS`; `shell_prefix` runs before it in the same shell (e.g. a ulimit).
Run run(const std::string& args, const std::string& shell_prefix = "") {
  return ldm::test::run_shell(shell_prefix + "exec '" + std::string(LDM_CLI) + "' generate " + args);
}

void expect_error(const std::string& args, const std::string& message) {
  Run r = run(args);
  INFO("ldm generate " << args << "\nstderr: " << r.err);
  CHECK(r.status == 1);  // an error we report, not a crash (a signal gives -1)
  CHECK_THAT(r.err, Catch::Contains("error: ") && Catch::Contains(message));
}

}  // namespace

TEST_CASE("ldm generate: bad input gets a clear error and exit code 1") {
  const std::string p = "--model synthetic:sd15 --prompt cat ";  // SD1.5's sizes: multiples of 64
  expect_error(p + "--scheduler euler_a", "unknown scheduler \"euler_a\"; valid names: pndm");
  expect_error(p + "--width 500", "multiples of 64");
  expect_error(p + "--steps 0", "--steps must be at least 1");
  expect_error("--prompt cat --model /nonexistent/sd15", "/nonexistent/sd15");
  expect_error(p + "--init-image /nonexistent.png", "cannot read image '/nonexistent.png'");
  std::ofstream("/tmp/ldm_test_not_an_image.png") << "not a png";
  expect_error(p + "--init-image /tmp/ldm_test_not_an_image.png", "cannot read image");
  expect_error(p + "--init-image /tmp/ldm_test_not_an_image.png --strength 1.5", "--strength must be in (0, 1]");
  expect_error(p + "--init-image /tmp/ldm_test_not_an_image.png --strength 0", "--strength must be in (0, 1]");
  expect_error(p + "--rng mt", "unknown random generator");
  expect_error(p + "--conv direct --device cuda", "--conv direct is for the CPU path");
  Run missing = run("--width 64");
  CHECK(missing.status != 0);
  CHECK_THAT(missing.err, Catch::Contains("--prompt is required"));
}

TEST_CASE("ldm generate: a prompt over 77 tokens is read whole (A1111's syntax) or truncated with a warning "
          "(--prompt-syntax plain); the PNG carries the parameters", "[full]") {
  LDM_REQUIRE_SHARED(tokenizer, "clip-tokenizer");
  std::string long_prompt;
  for (int i = 0; i < 90; ++i) long_prompt += "red ";
  const std::string args = "--model synthetic:sd15 --tokenizer " + tokenizer + " --prompt \"" + long_prompt +
                           "\" --steps 1 --guidance 1 --width 64 --height 64 --scheduler ddim --output /tmp/ldm_test_long.png";
  Run whole = run(args);  // two chunks of 75 tokens: a context of 154
  INFO(whole.err);
  REQUIRE(whole.status == 0);
  CHECK_THAT(whole.err, !Catch::Contains("truncated"));
  Run r = run(args + " --prompt-syntax plain");
  INFO(r.err);
  REQUIRE(r.status == 0);
  CHECK_THAT(r.err, Catch::Contains("longer than CLIP's 77 tokens and was truncated"));
  CHECK_THAT(r.err, Catch::Contains("peak memory"));
  auto text = ldm::read_png_text("/tmp/ldm_test_long.png");
  CHECK_THAT(text.at("parameters"), Catch::Contains("Steps: 1, Sampler: ddim, CFG scale: 1") &&
                                        Catch::Contains("Size: 64x64, Model: synthetic:sd15"));
}

// Found before the model loads: each of these ran the whole generation (or crashed, or
// wrapped -1 into 2^64 - 1) before.
TEST_CASE("ldm generate: non-finite or absurd numbers, bad seeds, sizes and output paths are refused up front") {
  const std::string p = "--model synthetic:sd15 --prompt cat ";
  for (const char* g : {"nan", "inf", "-inf", "1e30", "-3"})
    expect_error(p + "--guidance " + g, "--guidance must be a number from 0 to 100, got ");
  expect_error(p + "--guidance-rescale nan", "--guidance-rescale must be a number from 0 to 1, got nan");
  expect_error(p + "--guidance-rescale 2", "--guidance-rescale must be a number from 0 to 1, got 2");
  expect_error(p + "--strength nan", "--strength must be in (0, 1], got nan");
  expect_error(p + "--threads -2", "--threads must be a number from 0 to 1024, got -2");
  for (const char* seed : {"-2", "18446744073709551616", "1.5", "abc", "0x10", "' '"})
    expect_error(p + "--seed " + seed,
                 "--seed must be -1 (a random seed) or an integer from 0 to 18446744073709551615, got '");
  expect_error(p + "--width 520 --height 512", "--width and --height must be multiples of 64 from 64 to 4096");
  expect_error(p + "--width 8192 --height 512", "--width and --height must be multiples of 64 from 64 to 4096");
  expect_error(p + "--width 0", "got 0x512");
  expect_error(p + "--steps 1001", "--steps must be at least 1 and at most 1000, got 1001");

  ldm::test::TmpPath dir("generate_paths");
  std::filesystem::create_directories(dir.path);
  const std::string file = dir.path + "/a_file";
  std::ofstream(file) << "x";
  expect_error(p + "--output " + dir.path + "/missing/out.png",
               "--output '" + dir.path + "/missing/out.png': its folder '" + dir.path +
                   "/missing' cannot be used: No such file or directory");
  expect_error(p + "--output " + file + "/out.png", "'" + file + "' is not a folder");
  expect_error(p + "--output " + dir.path, "--output '" + dir.path + "' is a folder: give a file name");
  expect_error(p + "--output-tensors " + dir.path + "/missing/out.safetensors",
               "--output-tensors '" + dir.path + "/missing/out.safetensors': its folder");

  const std::string image = dir.path + "/520x512.png";
  ldm::write_png(image, ldm::Tensor::full({512, 520, 3}, 0.5f), {});
  expect_error(p + "--init-image " + image,
               "--init-image '" + image + "' is 520x512: its width and height must be multiples of 64");
  const std::string small = dir.path + "/64x64.png";
  ldm::write_png(small, ldm::Tensor::full({64, 64, 3}, 0.5f), {});
  expect_error(p + "--init-image " + small + " --strength 0.1 --steps 5", "--strength 0.1 with --steps 5 leaves no denoising step");

  const std::string latents = dir.path + "/latents.safetensors";
  ldm::SafeTensorsWriter w;
  w.add("latents", ldm::Tensor::full({1, 4, 8, 8}, 0.0f));
  w.save(latents);
  expect_error(p + "--init-latents " + latents + " --width 128 --height 128",
               "tensor 'latents' is [1, 4, 8, 8], expected [1, 4, 16, 16] for --batch 1 --width 128 --height 128");
  expect_error(p + "--init-latents " + latents + " --width 64 --height 64 --batch 2", "expected [2, 4, 8, 8]");
  expect_error(p + "--init-latents " + latents + " --init-image " + small, "--init-latents is for txt2img");
  ldm::SafeTensorsWriter nan;
  nan.add("latents", ldm::Tensor::full({1, 4, 8, 8}, std::numeric_limits<float>::quiet_NaN()));
  nan.save(latents);
  expect_error(p + "--init-latents " + latents + " --width 64 --height 64", "holds NaN or infinite values");
}

TEST_CASE("ldm generate: --seed -1 draws a seed, printed and in the PNG; a long negative prompt warns (plain syntax); "
          "--output-tensors failing after the PNG is an error and keeps the old file", "[full]") {
  LDM_REQUIRE_SHARED(tokenizer, "clip-tokenizer");
  ldm::test::TmpPath dir("generate_seed");
  std::filesystem::create_directories(dir.path);
  std::string long_prompt;
  for (int i = 0; i < 90; ++i) long_prompt += "blurry ";
  const std::string base = "--model synthetic:sd15 --tokenizer " + tokenizer +
                           " --prompt cat --prompt-syntax plain --steps 1 --width 64 --height 64 --scheduler ddim ";
  Run r = run(base + "--seed -1 --guidance 2 --batch 2 --negative-prompt \"" + long_prompt + "\" --output " + dir.path +
              "/out.png");
  INFO(r.err);
  REQUIRE(r.status == 0);
  CHECK_THAT(r.err, Catch::Contains("warning: the negative prompt is longer than CLIP's 77 tokens and was truncated"));
  const size_t at = r.err.find("seed: ");
  REQUIRE(at != std::string::npos);
  const std::string seed = r.err.substr(at + 6, r.err.find('\n', at) - at - 6);
  CHECK(seed.find_first_not_of("0123456789") == std::string::npos);
  for (int b = 0; b < 2; ++b)
    CHECK_THAT(ldm::read_png_text(dir.path + "/out-" + std::to_string(b) + ".png").at("parameters"),
               Catch::Contains("Seed: " + seed + ",") &&
                   Catch::Contains("Batch size: 2, Batch pos: " + std::to_string(b)));

  // The PNG (about 13 KB) fits under the file-size limit (40 blocks: 20 KB in dash, 40 KB in bash),
  // the tensors (about 50 KB) do not.
  const std::string tensors = dir.path + "/out.safetensors";
  std::ofstream(tensors) << "earlier tensors";
  r = run(base + "--guidance 1 --output " + dir.path + "/limited.png --output-tensors " + tensors,
          "trap '' XFSZ; ulimit -f 40; ");
  CHECK(r.status == 1);
  CHECK_THAT(r.err, Catch::Contains("the images were written (" + dir.path + "/limited.png) but --output-tensors was not") &&
                        Catch::Contains("File too large"));
  CHECK(std::filesystem::exists(dir.path + "/limited.png"));
  std::ifstream f(tensors);
  std::string old;
  std::getline(f, old);
  CHECK(old == "earlier tensors");
}
