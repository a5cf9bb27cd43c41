// Inpainting (pipeline.hpp, inpaint.hpp) against diffusers' StableDiffusionInpaintPipeline, run by
// scripts/make_inpaint_reference.py on the full-size synthetic SD1.5 models: the 9-channel
// inpainting U-Net and the ordinary 4-channel one, with given starting noise and fully seeded
// (--seed S --rng torch-cpu draws what torch.Generator("cpu") draws), through `ldm generate` as a
// user runs it; final latents <= 1e-3 relative L2, image max |diff| <= 4e-3 (as the other
// pipelines). And the pieces on their own, on models/ldm-shapes: the mask as PIL reads it, its
// downsampling, the kept part put back exactly, and the errors. And the 9-channel U-Net written as
// a single file and as a diffusers folder, loaded bit-identical to synthetic:sd15-inpainting's.
#include <catch2/catch.hpp>

#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <nlohmann/json.hpp>

#include "cli_run.hpp"
#include "ldm/core/files.hpp"
#include "ldm/core/image.hpp"
#include "ldm/core/rng_ldm.hpp"
#include "ldm/core/safetensors.hpp"
#include "ldm/core/synth.hpp"
#include "ldm/inpaint.hpp"
#include "ldm/load.hpp"
#include "ldm/pipeline.hpp"
#include "shapes_model.hpp"
#include "pipeline_ref.hpp"
#include "reference.hpp"
#include "test_data.hpp"
#include "tmp_path.hpp"

using namespace ldm;
using ldm::test::shapes_model;
using ldm::test::data_path;
using Catch::Contains;
using ldm::test::Reference;

namespace {

Tensor rgb_of_mask(const Tensor& mask) {  // [1, 1, H, W] -> [1, 3, H, W]
  Tensor r = Tensor::empty({1, 3, mask.dim(2), mask.dim(3)});
  for (int64_t c = 0; c < 3; ++c) std::copy(mask.begin(), mask.end(), r.data() + c * mask.numel());
  return r;
}

}  // namespace

TEST_CASE("inpaint: the mask as PIL reads a picture: luma, then >= 0.5", "[inpaint]") {
  Tensor rgb = Tensor::empty({1, 3, 1, 4});
  const float px[4][3] = {{1, 1, 1}, {0, 0, 0}, {128 / 255.f, 128 / 255.f, 128 / 255.f}, {1, 0, 0}};
  for (int i = 0; i < 4; ++i)
    for (int c = 0; c < 3; ++c) rgb[c * 4 + i] = px[i][c];
  const Tensor m = mask_from_picture(rgb);
  CHECK(m[0] == 1.0f);
  CHECK(m[1] == 0.0f);
  CHECK(m[2] == 1.0f);  // 128 / 255 >= 0.5
  CHECK(m[3] == 0.0f);  // pure red: luma 76
  const Tensor big = Tensor::full({1, 2, 16, 24}, 0.0f);
  Tensor x = big.clone();
  for (int64_t i = 0; i < x.numel(); ++i) x[i] = float(i);
  const Tensor d = downsample_nearest(x, 8);
  REQUIRE(d.shape() == Shape{1, 2, 2, 3});
  CHECK(d[0] == x[0]);
  CHECK(d[1] == x[8]);
  CHECK(d[3] == x[8 * 24]);
  CHECK(d[6] == x[16 * 24]);  // the second channel's first value
}

TEST_CASE("inpaint: a 4-channel model keeps the unmasked latents exactly as the image encodes them", "[inpaint]") {
  const StableDiffusion& sd = shapes_model();
  GenerationParams p;
  p.prompt = "a large red circle at the center on a black background";
  p.scheduler = "euler";
  p.steps = 6;
  p.guidance_scale = 2.0f;
  p.width = p.height = 64;
  p.init_image = Tensor::full({1, 3, 64, 64}, 1.0f);  // white
  p.mask = Tensor::full({1, 1, 64, 64}, 0.0f);
  for (int64_t y = 16; y < 48; ++y)
    for (int64_t x = 16; x < 48; ++x) p.mask[y * 64 + x] = 1.0f;
  p.strength = 1.0f;
  LdmGenerator g1(9), g2(9);
  const GenerationResult r = generate(sd, p, g1);
  // The same draws by hand: the image's latents are the first thing drawn for a 4-channel model.
  auto scheduler = make_scheduler(p.scheduler, sd.scheduler_config);
  const PreparedLatents start = prepare_latents(sd, p, *scheduler, g2);
  REQUIRE(start.image_latents.defined());
  REQUIRE(start.mask.shape() == Shape{1, 1, 8, 8});
  int kept = 0, changed = 0;
  for (int64_t c = 0; c < 4; ++c)
    for (int64_t i = 0; i < 64; ++i) {
      const float got = r.latents[c * 64 + i], want = start.image_latents[c * 64 + i];
      if (start.mask[i] == 0.0f) {
        CHECK(got == want);
        ++kept;
      } else if (got != want) {
        ++changed;
      }
    }
  CHECK(kept == 4 * 48);
  CHECK(changed > 0);
}

TEST_CASE("inpaint: wrong inputs are refused before any work", "[inpaint]") {
  const StableDiffusion& sd = shapes_model();
  GenerationParams p;
  p.prompt = "x";
  p.width = p.height = 64;
  p.mask = Tensor::full({1, 1, 64, 64}, 1.0f);
  LdmGenerator gen(1);
  CHECK_THROWS_WITH(generate(sd, p, gen), Contains("inpainting needs the picture to paint into"));
  p.init_image = Tensor::full({1, 3, 64, 64}, 0.5f);
  p.mask = Tensor::full({1, 1, 64, 56}, 1.0f);
  CHECK_THROWS_WITH(generate(sd, p, gen), Contains("of the init image's size"));
  ldm::test::TmpPath img("init.png"), out("out.png");
  write_png(img.path, nchw_to_nhwc(Tensor::full({1, 3, 64, 64}, 0.5f)));
  const ldm::test::Run r = ldm::test::ldm_run("generate --prompt x --mask " + img.path + " --output " + out.path);
  CHECK(r.status != 0);
  CHECK_THAT(r.err, Contains("--mask goes with --init-image"));
}

TEST_CASE("inpaint: 9- and 4-channel U-Nets through `ldm generate` as diffusers' inpainting pipeline", "[inpaint][full]") {
  LDM_REQUIRE_SHARED(tokenizer, "clip-tokenizer");
  Reference ref(data_path("inpaint_reference.safetensors"));
  for (auto it = ref.cases.begin(); it != ref.cases.end(); ++it) {
    const std::string name = it.key();
    const nlohmann::json& meta = it.value();
    const std::string out = std::string("/tmp/ldm_test_") + name;
    write_png(out + "_init.png", nchw_to_nhwc(ref.get(name, "init_image")));
    write_png(out + "_mask.png", nchw_to_nhwc(rgb_of_mask(ref.get(name, "mask"))));
    std::string cmd = std::string(LDM_CLI) + " generate --model " + meta.at("model").get<std::string>() +
                      " --tokenizer " + tokenizer + " --prompt \"" + meta.at("prompt").get<std::string>() +
                      "\" --negative-prompt \"" + meta.at("negative_prompt").get<std::string>() + "\" --scheduler " +
                      meta.at("scheduler").get<std::string>() + " --steps " + std::to_string(meta.at("steps").get<int>()) +
                      " --guidance " + std::to_string(meta.at("guidance_scale").get<double>()) + " --strength " +
                      std::to_string(meta.at("strength").get<double>()) + " --seed " +
                      std::to_string(meta.at("seed").get<int64_t>()) + " --rng torch-cpu --init-image " + out +
                      "_init.png --mask " + out + "_mask.png --output " + out + ".png --output-tensors " + out +
                      ".safetensors";
    if (meta.at("given_latents").get<bool>()) {
      SafeTensorsWriter w;
      w.add("latents", ref.get(name, "latents"));
      w.save(out + "_latents.safetensors");
      cmd += " --init-latents " + out + "_latents.safetensors";
    }
    INFO(cmd);
    std::printf("  %s\n", cmd.c_str());
    REQUIRE(std::system(cmd.c_str()) == 0);
    SafeTensors got(out + ".safetensors");
    ldm::test::check_pipeline_result(name, got.load("latents"), got.load("image"), ref);
    for (const char* suffix : {".png", ".safetensors", "_init.png", "_mask.png", "_latents.safetensors"})
      std::remove((out + suffix).c_str());
  }
}

TEST_CASE("inpaint: a single-file inpainting checkpoint is told apart by its first convolution", "[inpaint]") {
  ldm::test::TmpPath file("inpainting.safetensors");
  // The smallest file open_model takes as a checkpoint: a tensor of each component. The U-Net's
  // conv_in has 9 input channels, as sd-v1-5-inpainting's.
  write_single_file(file.path, {{Component::UNet, {{"conv_in.weight", {320, 9, 3, 3}}}, nullptr},
                                {Component::VAE, {{"encoder.conv_in.weight", {128, 3, 3, 3}}}, nullptr},
                                {Component::TextEncoder, {{"text_model.final_layer_norm.weight", {768}}}, nullptr}},
                    DType::F32, /*extras=*/false);
  const ModelFiles files = open_model(file.path);
  CHECK(unet_config(files).in_channels == 9);
  CHECK(unet_config(files).block_out_channels == std::vector<int64_t>{320, 640, 1280, 1280});  // the rest: SD1.5's
  CHECK(unet_config(open_model("synthetic:sd15-inpainting")).in_channels == 9);
  CHECK(unet_config(open_model("synthetic:sd15")).in_channels == 4);
}

TEST_CASE("inpaint: a full-size 9-channel U-Net loads from a single file and a diffusers folder", "[inpaint][full]") {
  // Bit-identical to synthetic:sd15-inpainting's, the model the diffusers references ran.
  LDM_REQUIRE_REFERENCE(keys, "sd15_keys.json");
  // The U-Net's tensors of SD1.5, conv_in taking latents + mask + masked-image latents.
  std::vector<TensorSpec> unet = read_key_list(keys, Component::UNet);
  for (TensorSpec& t : unet)
    if (t.name == "conv_in.weight") t.shape = {320, 9, 3, 3};
  // The other components need only be recognisable: this checks the U-Net.
  const std::vector<ComponentWeights> parts = {
      {Component::UNet, unet, nullptr},
      {Component::VAE, {{"encoder.conv_in.weight", {128, 3, 3, 3}}}, nullptr},
      {Component::TextEncoder, {{"text_model.final_layer_norm.weight", {768}}}, nullptr}};

  const Tensor sample = synth::tensor("test.inpaint_sample", {1, 9, 8, 8});
  const Tensor context = synth::tensor("test.context", {1, 77, 768}, 0, 0.5);
  const float t = 981;
  const auto run = [&](const ModelFiles& files) {  // one full-size U-Net in memory at a time
    const UNet2DConditionModel m = load_unet(files);
    REQUIRE(m.config.in_channels == 9);
    return m.forward(sample, t, context);  // [1, 4, 8, 8]
  };
  const Tensor want = run(open_model("synthetic:sd15-inpainting"));
  REQUIRE(want.shape() == Shape{1, 4, 8, 8});
  {
    ldm::test::TmpPath file("sd15_inpainting_f32.safetensors");
    write_single_file(file.path, parts, DType::F32, /*extras=*/false);  // LDM names: in_channels from input_blocks.0.0
    const double d = ldm::test::max_abs_diff(run(open_model(file.path)), want);
    std::printf("  9-channel U-Net, single file F32: max |diff| %.3e (must be 0)\n", d);
    CHECK(d == 0);
  }
  {
    ldm::test::TmpPath dir("sd15_inpainting_folder");
    write_diffusers_folder(dir.path, parts, DType::F32);
    const std::string config_path = dir.path + "/unet/config.json";
    nlohmann::json config = read_json_file(config_path, "U-Net config");
    config["in_channels"] = 9;  // as runwayml/stable-diffusion-inpainting's unet/config.json
    std::ofstream(config_path) << config.dump(2);
    const double d = ldm::test::max_abs_diff(run(open_model(dir.path)), want);
    std::printf("  9-channel U-Net, diffusers folder F32: max |diff| %.3e (must be 0)\n", d);
    CHECK(d == 0);
  }
}
