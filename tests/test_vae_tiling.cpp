// VAE tiling (models/vae_tiling.hpp) against diffusers' AutoencoderKL after enable_tiling(), run
// by scripts/make_vae_tiling_reference.py on synthetic weights: a tiny VAE (tiles of 16 latents,
// edge tiles narrower, a batch of two; float64 truth, relative L2 <= 1e-5) and the SD1.5 VAE on a
// 1024x1024 decode and encode (3x3 tiles of 512; float32 truth, <= 1e-4). Also the tiling itself
// on a stand-in decoder whose answer is known, and the pipeline's and the CLI's use of it.
#include <catch2/catch.hpp>

#include <algorithm>
#include <cstdio>
#include <nlohmann/json.hpp>

#include "ldm/core/rng_ldm.hpp"
#include "ldm/core/safetensors.hpp"
#include "ldm/core/synth.hpp"
#include "ldm/core/weights.hpp"
#include "ldm/load.hpp"
#include "ldm/models/vae_tiling.hpp"
#include "ldm/pipeline.hpp"
#include "cli_run.hpp"
#include "reference.hpp"
#include "synthetic.hpp"
#include "test_data.hpp"

using namespace ldm;
using ldm::test::data_path;
using ldm::test::Reference;
using ldm::test::synthetic;
using ldm::test::require_close;

namespace {

const Reference& tiling_reference() {
  static const Reference ref(data_path("vae_tiling_reference.safetensors"));
  return ref;
}

double rel_l2_of(const Tensor& a, const Tensor& b) { return ldm::test::rel_l2(a, b); }

Shape shape_of(const nlohmann::json& j) { return j.get<std::vector<int64_t>>(); }

// One case of the reference: the VAE from its config, tiled decode and encode of its inputs.
void check_case(const std::string& name, double tol) {
  const Reference& ref = tiling_reference();
  const nlohmann::json& m = ref.meta(name);
  const AutoencoderKL vae = synthetic<AutoencoderKL>("", VAEConfig::from_json(m.at("config")));
  const VaeTiling t = VaeTiling::of(vae.config);
  const Tensor latent = synth::tensor(m.at("latent_key").get<std::string>(), shape_of(m.at("latent_shape")));
  const Tensor image = synth::tensor(m.at("image_key").get<std::string>(), shape_of(m.at("image_shape")));
  REQUIRE(vae_decode_tiles(t, latent));
  REQUIRE(vae_encode_tiles(t, image));
  int tiles = 0;
  const Tensor decoded = tiled_decode(latent, t, [&](const Tensor& z) {
    ++tiles;
    return vae.decode(z);
  });
  require_close(decoded, ref.get(name, "decoded"), tol, name + " tiled decode");
  const DiagonalGaussian q = tiled_encode(image, t, [&](const Tensor& x) {
    ++tiles;
    return vae.encode(x);
  });
  require_close(q.mean, ref.get(name, "mean"), tol, name + " tiled encode: mean");
  require_close(q.logvar, ref.get(name, "logvar"), tol, name + " tiled encode: logvar");
  std::printf("  %s: %d tiles in all\n", name.c_str(), tiles);
}

// A stand-in decoder: each latent becomes an f x f block of its channel-0 value (and channels
// 1, 2 the block's position inside the tile), so blends of equal values must give them back.
Tensor blocks_of(const Tensor& z, int64_t f) {
  const int64_t B = z.dim(0), h = z.dim(2), w = z.dim(3);
  Tensor out = Tensor::empty({B, 1, h * f, w * f});
  for (int64_t b = 0; b < B; ++b)
    for (int64_t y = 0; y < h * f; ++y)
      for (int64_t x = 0; x < w * f; ++x) out.data()[(b * h * f + y) * w * f + x] = z.data()[((b * z.dim(1)) * h + y / f) * w + x / f];
  return out;
}

}  // namespace

TEST_CASE("vae tiling: tiny VAE, decode and encode as diffusers' enable_tiling()", "[vae][tiling]") {
  check_case("tiny", 1e-5);  // ../shared/README.md: tiny models
}

TEST_CASE("vae tiling: SD1.5 VAE, 1024x1024 decode and encode in 3x3 tiles", "[vae][tiling][full]") {
  check_case("full", 1e-4);  // ../shared/README.md: full-size models in float32
}

TEST_CASE("vae tiling: a decoder that copies its input comes back unchanged through the blends", "[vae][tiling]") {
  VAEConfig c;
  c.block_out_channels = {32, 64, 64};  // factor 4
  c.sample_size = 32;                   // tiles of 8 latents, every 6, blended over 8 pixels
  const VaeTiling t = VaeTiling::of(c);
  CHECK(t.factor == 4);
  CHECK(t.latent_tile == 8);
  const Tensor z = synth::tensor("vae_tiling.copy", {2, 4, 19, 27});
  int calls = 0;
  const Tensor got = tiled_decode(z, t, [&](const Tensor& tile) {
    ++calls;
    CHECK(tile.dim(2) <= 8);
    CHECK(tile.dim(3) <= 8);
    return blocks_of(tile, 4);
  });
  CHECK(calls == 4 * 5);  // rows start at 0, 6, 12, 18; columns at 0, 6, ..., 24
  const Tensor want = blocks_of(z, 4);
  REQUIRE(got.shape() == want.shape());
  double worst = 0;
  for (int64_t i = 0; i < want.numel(); ++i) worst = std::max(worst, double(std::abs(got[i] - want[i])));
  CHECK(worst < 1e-6);  // a * (1 - w) + a * w, in float
}

TEST_CASE("vae tiling: a picture of one tile or less is decoded whole", "[vae][tiling]") {
  VAEConfig c;
  c.sample_size = 64;
  const VaeTiling t = VaeTiling::of(c);
  const Tensor z = synth::tensor("vae_tiling.small", {1, 4, 8, 8});
  int calls = 0;
  const Tensor got = tiled_decode(z, t, [&](const Tensor& tile) {
    ++calls;
    CHECK(tile.shape() == z.shape());
    return blocks_of(tile, 8);
  });
  CHECK(calls == 1);
  CHECK(got.shape() == Shape{1, 1, 64, 64});
  CHECK_FALSE(vae_decode_tiles(t, z));
  CHECK(vae_decode_tiles(t, synth::tensor("vae_tiling.wide", {1, 4, 8, 9})));
}

TEST_CASE("vae tiling: generate() tiles by its option, the same tiles as tiled_decode", "[vae][tiling][pipeline]") {
  // models/ldm-shapes' VAE has sample_size 64: a 128x128 picture is 3x3 tiles of 64.
  static const StableDiffusion sd = load_stable_diffusion("models/ldm-shapes");  // tests run in the source folder
  GenerationParams p;
  p.prompt = "a large red circle at the top left on a black background";
  p.scheduler = "euler";
  p.steps = 2;
  p.guidance_scale = 2.0f;
  p.width = p.height = 128;
  CHECK_FALSE(use_vae_tiling(VaeTilingMode::automatic, 128, 128));
  CHECK(use_vae_tiling(VaeTilingMode::automatic, 1024, 1032));
  CHECK_FALSE(use_vae_tiling(VaeTilingMode::off, 4096, 4096));
  auto run = [&](VaeTilingMode mode) {
    p.vae_tiling = mode;
    LdmGenerator gen(3);
    return generate(sd, p, gen);
  };
  const GenerationResult whole = run(VaeTilingMode::off), tiled = run(VaeTilingMode::on);
  REQUIRE(tiled.image.shape() == whole.image.shape());
  CHECK(rel_l2_of(tiled.latents, whole.latents) == 0);  // tiling is the decoder's business only
  Tensor z = whole.latents.clone();
  z.vec() /= float(sd.vae_config.scaling_factor);
  int calls = 0;
  Tensor want = tiled_decode(z, VaeTiling::of(sd.vae_config), [&](const Tensor& x) {
    ++calls;
    return sd.runner->vae_decode(x);
  });
  CHECK(calls == 9);
  for (float& v : want) v = std::clamp(v / 2.0f + 0.5f, 0.0f, 1.0f);
  CHECK(rel_l2_of(tiled.image, nchw_to_nhwc(want)) == 0);
  const double d = rel_l2_of(tiled.image, whole.image);
  std::printf("  ldm-shapes 128x128: tiled vs whole decode, relative L2 %.3e\n", d);
  CHECK(d > 0);  // tiles decoded apart differ from the whole: each tile's GroupNorm statistics and
                 // mid-block attention see only the tile (with tiles of 8 latents, a lot)
}

TEST_CASE("vae tiling: ldm eval vae-decode / vae-encode --vae-tiling run the component tiled", "[vae][tiling][cli]") {
  // models/ldm-shapes' VAE: tiles of 8 latents / 64 pixels. A 20x12 latent is 3 x 2 tiles.
  const ModelFiles files = open_model("models/ldm-shapes");
  const AutoencoderKL vae = load_vae(files);
  const VaeTiling t = VaeTiling::of(vae.config);
  const Tensor latent = synth::tensor("vae_tiling.cli.latent", {1, 4, 20, 12});
  const Tensor image = synth::tensor("vae_tiling.cli.image", {1, 3, 160, 96});
  ldm::test::TmpPath in("vae_tiling_in.safetensors"), out("vae_tiling_out.safetensors");
  {
    SafeTensorsWriter w;
    w.add("latent", latent);
    w.add("image", image);
    w.save(in.path);
  }
  const std::string common = " --model models/ldm-shapes --inputs " + in.path + " --output " + out.path;
  REQUIRE(ldm::test::ldm_run("eval vae-decode --vae-tiling" + common).status == 0);
  const Tensor decoded = SafeTensors(out.path).load("image");
  CHECK(rel_l2_of(decoded, tiled_decode(latent, t, [&](const Tensor& z) { return vae.decode(z); })) < 1e-6);
  REQUIRE(ldm::test::ldm_run("eval vae-decode" + common).status == 0);
  CHECK(rel_l2_of(SafeTensors(out.path).load("image"), vae.decode(latent)) < 1e-6);
  CHECK(rel_l2_of(SafeTensors(out.path).load("image"), decoded) > 1e-3);  // tiled is not whole

  REQUIRE(ldm::test::ldm_run("eval vae-encode --vae-tiling" + common).status == 0);
  const DiagonalGaussian q = tiled_encode(image, t, [&](const Tensor& x) { return vae.encode(x); });
  CHECK(rel_l2_of(SafeTensors(out.path).load("mean"), q.mean) < 1e-6);
  CHECK(rel_l2_of(SafeTensors(out.path).load("logvar"), q.logvar) < 1e-6);

  const ldm::test::Run r = ldm::test::ldm_run("eval unet --vae-tiling" + common);
  CHECK(r.status != 0);
  CHECK_THAT(r.err, Catch::Contains("--vae-tiling goes with vae-decode or vae-encode"));
}
