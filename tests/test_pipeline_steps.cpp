// The pipeline's steps one by one (pipeline.hpp: check_inputs, encode_prompt, prepare_latents,
// denoise, decode_latents), on the shipped models/ldm-shapes (64x64, a few steps: milliseconds):
// called in turn by hand they give generate()'s picture bit for bit, each returns the shapes its
// comment states, and check_inputs refuses bad parameters before any network runs. The numbers
// themselves are checked against diffusers through generate() in test_pipeline.cpp.
#include <catch2/catch.hpp>

#include <cstring>

#include "ldm/core/rng_ldm.hpp"
#include "ldm/load.hpp"
#include "ldm/pipeline.hpp"
#include "reference.hpp"
#include "shapes_model.hpp"

using namespace ldm;
using ldm::test::same_bits;
using ldm::test::shapes_model;

namespace {

GenerationParams small_params() {
  GenerationParams p;
  p.prompt = "a large red circle at the top left on a black background";
  p.negative_prompt = "a blue square";
  p.scheduler = "euler-a";  // ancestral: the loop draws noise too, so the generator's order is checked
  p.steps = 4;
  p.guidance_scale = 2.0f;
  p.width = p.height = 64;
  p.batch = 2;
  return p;
}

// A runner that counts its calls, around the model's own.
struct CountingRunner : ModelRunner {
  std::shared_ptr<ModelRunner> inner;
  int calls = 0;
  explicit CountingRunner(std::shared_ptr<ModelRunner> r) : inner(std::move(r)) {}
  std::string device() const override { return inner->device(); }
  Tensor encode_text(const std::vector<int64_t>& ids, int64_t b, int skip) override {
    ++calls;
    return inner->encode_text(ids, b, skip);
  }
  Tensor unet(const Tensor& x, float t, const Tensor& c) override {
    ++calls;
    return inner->unet(x, t, c);
  }
  Tensor vae_decode(const Tensor& z) override {
    ++calls;
    return inner->vae_decode(z);
  }
  DiagonalGaussian vae_encode(const Tensor& x) override {
    ++calls;
    return inner->vae_encode(x);
  }
};

}  // namespace

TEST_CASE("pipeline steps: called in turn they give generate()'s result bit for bit", "[pipeline]") {
  const StableDiffusion& sd = shapes_model();
  for (bool img2img : {false, true}) {
    GenerationParams p = small_params();
    if (img2img) {
      p.init_image = Tensor::full({1, 3, 64, 64}, 0.25f);
      p.strength = 0.5f;
    }
    LdmGenerator g1(11), g2(11);
    const GenerationResult whole = generate(sd, p, g1);

    check_inputs(sd, p);
    const Tensor context = encode_prompt(sd, p);
    const int64_t D = sd.text_encoder_config.hidden_size;
    CHECK(context.shape() == Shape{2 * p.batch, 77, D});  // [negative x B; prompt x B]
    auto scheduler = make_scheduler(p.scheduler, sd.scheduler_config);
    PreparedLatents start = prepare_latents(sd, p, *scheduler, g2);
    CHECK(start.latents.shape() == Shape{p.batch, 4, 8, 8});
    CHECK(start.timesteps.size() == size_t(img2img ? 2 : 4));  // img2img: the last strength x steps
    std::vector<Tensor> steps;
    const size_t n = start.timesteps.size();
    const Tensor z0 = denoise(sd, p, *scheduler, context, start, g2, nullptr, &steps);
    CHECK(steps.size() == n);
    const Tensor image = decode_latents(sd, z0);
    CHECK(image.shape() == Shape{p.batch, 64, 64, 3});

    CHECK(same_bits(z0, whole.latents));
    CHECK(same_bits(image, whole.image));
  }
}

TEST_CASE("pipeline steps: encode_prompt without guidance is the prompt's context, once per image", "[pipeline]") {
  const StableDiffusion& sd = shapes_model();
  GenerationParams p = small_params();
  p.guidance_scale = 1.0f;
  const Tensor context = encode_prompt(sd, p);
  REQUIRE(context.shape() == Shape{p.batch, 77, sd.text_encoder_config.hidden_size});
  const Tensor one = encode_text_prompt(sd, p.prompt, {}, p.prompt_syntax, p.clip_skip);
  CHECK(same_bits(context.slice0(0, 1), one));
  CHECK(same_bits(context.slice0(1, 2), one));
}

TEST_CASE("pipeline steps: check_inputs refuses bad parameters before any network runs", "[pipeline]") {
  const StableDiffusion& loaded = shapes_model();
  auto counting = std::make_shared<CountingRunner>(loaded.runner);
  StableDiffusion sd = loaded;
  sd.runner = counting;
  auto refused = [&](GenerationParams p, const std::string& message) {
    LdmGenerator gen(1);
    CHECK_THROWS_WITH(generate(sd, p, gen), Catch::Contains(message));
  };
  GenerationParams p = small_params();
  p.steps = 0;
  refused(p, "steps must be at least 1");
  p = small_params();
  p.batch = 0;
  refused(p, "batch must be at least 1");
  p = small_params();
  p.width = 60;
  refused(p, "multiples of 8");
  p = small_params();
  p.init_image = Tensor::full({1, 3, 64, 64}, 0.5f);
  p.strength = 0.0f;
  refused(p, "strength must be in (0, 1]");
  p.strength = 0.5f;
  p.init_image = Tensor::full({1, 3, 60, 64}, 0.5f);
  refused(p, "not a multiple of 8");
  CHECK(counting->calls == 0);

  StableDiffusion empty;
  LdmGenerator gen(1);
  CHECK_THROWS_WITH(generate(empty, small_params(), gen), Catch::Contains("no models loaded"));
}
