// Full SD1.5 pipelines at full size on synthetic weights, against diffusers:
//  - ref_pipeline_full: DDIM, PNDM, Euler, DPM++ 2M; 10 steps, CFG 7.5, 256x256, given latents
//    (run through the library);
//  - ref_pipeline_seeded: every random draw from the seed as diffusers with a CPU generator
//    (run through the `ldm generate` command line, as a user would: --seed S --rng torch-cpu).
// Tolerances (../shared/README.md): final latents relative L2 <= 1e-3, image max |diff| <= 4e-3.
#include <catch2/catch.hpp>
#include <cstdlib>

#include "ldm/core/image.hpp"
#include "ldm/core/rng.hpp"
#include "ldm/load.hpp"
#include "pipeline_ref.hpp"
#include "reference.hpp"

using namespace ldm;
using ldm::test::check_pipeline_result;
using ldm::test::Reference;

namespace {

// One full-size synthetic SD1.5, shared by every case of this file.
const StableDiffusion& synthetic_sd15() {
  static const StableDiffusion sd = [] {
    LoadOptions o;
    o.tokenizer_dir = ldm::shared_path("clip-tokenizer");  // the cases first REQUIRE it
    return load_stable_diffusion("synthetic:sd15", o);
  }();
  return sd;
}

}  // namespace

TEST_CASE("pipeline: txt2img with given latents, four samplers (ref_pipeline_full)", "[full]") {
  LDM_REQUIRE_REFERENCE(path, "ref_pipeline_full.safetensors");
  LDM_REQUIRE_SHARED(tokenizer, "clip-tokenizer");
  Reference ref(path);
  const StableDiffusion& sd = synthetic_sd15();
  for (const std::string& name : ldm::test::pipeline_full_cases()) {
    const GenerationParams p = ldm::test::pipeline_case_params(ref, name);
    LdmGenerator unused(0);
    GenerationResult r = generate(sd, p, unused, nullptr, /*keep_step_latents=*/true);
    ldm::test::print_step_errors(name, r.step_latents, ref);
    check_pipeline_result(name, r.latents, r.image, ref);
  }
}

TEST_CASE("pipeline: seeded txt2img and img2img through `ldm generate --rng torch-cpu` (ref_pipeline_seeded)", "[full]") {
  LDM_REQUIRE_REFERENCE(path, "ref_pipeline_seeded.safetensors");
  LDM_REQUIRE_SHARED(tokenizer, "clip-tokenizer");
  Reference ref(path);
  for (const char* name : {"seed_txt2img_ddim", "seed_txt2img_euler_a", "seed_img2img_ddim"}) {
    const auto& meta = ref.meta(name);
    const std::string out = std::string("/tmp/ldm_test_") + name;
    std::string cmd = std::string(LDM_CLI) + " generate --model synthetic:sd15 --tokenizer " + tokenizer +
                      " --prompt \"" + meta.at("prompt").get<std::string>() + "\" --negative-prompt \"" +
                      meta.at("negative_prompt").get<std::string>() + "\" --scheduler " +
                      meta.at("scheduler").get<std::string>() + " --steps " + std::to_string(meta.at("steps").get<int>()) +
                      " --guidance " + std::to_string(meta.at("guidance_scale").get<double>()) + " --width " +
                      std::to_string(meta.at("width").get<int>()) + " --height " +
                      std::to_string(meta.at("height").get<int>()) + " --seed " +
                      std::to_string(meta.at("seed").get<int64_t>()) + " --rng torch-cpu --output " + out +
                      ".png --output-tensors " + out + ".safetensors";
    if (meta.at("kind") == "img2img") {
      // The case's init image is exactly 8-bit: a PNG carries it losslessly.
      write_png(out + "_init.png", nchw_to_nhwc(ref.get(name, "init_image")));
      cmd += " --init-image " + out + "_init.png --strength " + std::to_string(meta.at("strength").get<double>());
    }
    INFO(cmd);
    REQUIRE(std::system(cmd.c_str()) == 0);
    SafeTensors got(out + ".safetensors");
    check_pipeline_result(name, got.load("latents"), got.load("image"), ref);
    Tensor png = read_image(out + ".png");  // the PNG is the 8-bit rounding of the image tensor
    CHECK(ldm::test::max_abs_diff(nchw_to_nhwc(png), got.load("image")) <= 0.5 / 255 + 1e-6);
    CHECK(read_png_text(out + ".png").at("parameters").find("Seed: " + std::to_string(meta.at("seed").get<int64_t>())) !=
          std::string::npos);
    for (const char* suffix : {".png", ".safetensors", "_init.png"}) std::remove((out + suffix).c_str());
  }
}
