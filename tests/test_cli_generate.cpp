// `ldm generate` on bad input: a clear message and a non-zero exit, never a crash; and a
// prompt over 77 tokens is truncated with a warning, as diffusers does.
#include <catch2/catch.hpp>
#include <cstdlib>
#include <fstream>
#include <sstream>
#include <sys/wait.h>

#include "ldm/core/image.hpp"
#include "reference.hpp"

namespace {

struct Run {
  int exit_code;
  std::string err;
};

Run run(const std::string& args) {
  const std::string log = "/tmp/ldm_test_cli_generate.err";
  const int status = std::system((std::string(LDM_CLI) + " generate " + args + " > /dev/null 2> " + log).c_str());
  std::ifstream f(log);
  std::stringstream ss;
  ss << f.rdbuf();
  return {WIFEXITED(status) ? WEXITSTATUS(status) : -1, ss.str()};
}

void expect_error(const std::string& args, const std::string& message) {
  Run r = run(args);
  INFO("ldm generate " << args << "\nstderr: " << r.err);
  CHECK(r.exit_code == 1);  // an error we report, not a crash (a signal gives -1)
  CHECK_THAT(r.err, Catch::Contains("error: ") && Catch::Contains(message));
}

}  // namespace

TEST_CASE("ldm generate: bad input gets a clear error and exit code 1") {
  const std::string p = "--prompt cat ";
  expect_error(p + "--scheduler euler_a", "unknown scheduler \"euler_a\"; valid names: pndm");
  expect_error(p + "--width 500", "multiples of 8");
  expect_error(p + "--steps 0", "--steps must be at least 1");
  expect_error(p + "--model /nonexistent/sd15", "/nonexistent/sd15");
  expect_error(p + "--init-image /nonexistent.png", "cannot read image '/nonexistent.png'");
  std::ofstream("/tmp/ldm_test_not_an_image.png") << "not a png";
  expect_error(p + "--init-image /tmp/ldm_test_not_an_image.png", "cannot read image");
  expect_error(p + "--init-image /tmp/ldm_test_not_an_image.png --strength 1.5", "--strength must be in (0, 1]");
  expect_error(p + "--init-image /tmp/ldm_test_not_an_image.png --strength 0", "--strength must be in (0, 1]");
  expect_error(p + "--rng mt", "unknown random generator");
  expect_error(p + "--conv direct --device cuda", "--conv direct is for the CPU path");
  Run missing = run("--width 64");
  CHECK(missing.exit_code != 0);
  CHECK_THAT(missing.err, Catch::Contains("--prompt is required"));
}

TEST_CASE("ldm generate: a prompt over 77 tokens is truncated with a warning; the PNG carries the parameters") {
  LDM_REQUIRE_SHARED(tokenizer, "clip-tokenizer");
  std::string long_prompt;
  for (int i = 0; i < 90; ++i) long_prompt += "red ";
  Run r = run("--model synthetic:sd15 --tokenizer " + tokenizer + " --prompt \"" + long_prompt +
              "\" --steps 1 --guidance 1 --width 64 --height 64 --scheduler ddim --output /tmp/ldm_test_long.png");
  INFO(r.err);
  REQUIRE(r.exit_code == 0);
  CHECK_THAT(r.err, Catch::Contains("longer than CLIP's 77 tokens and was truncated"));
  CHECK_THAT(r.err, Catch::Contains("peak memory"));
  auto text = ldm::read_png_text("/tmp/ldm_test_long.png");
  CHECK_THAT(text.at("parameters"), Catch::Contains("Steps: 1, Sampler: ddim, CFG scale: 1") &&
                                        Catch::Contains("Size: 64x64, Model: synthetic:sd15"));
}
