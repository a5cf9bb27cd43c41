// Every single-block case of ref_blocks.safetensors (diffusers, float64 truth) at relative
// L2 <= 1e-5. Weights are synth.param(key) with key relative to the block under test.
#include <catch2/catch.hpp>

#include "ldm/blocks/attention.hpp"
#include "ldm/blocks/downsample.hpp"
#include "ldm/blocks/resnet_block.hpp"
#include "ldm/blocks/timestep_embedding.hpp"
#include "ldm/blocks/transformer_2d.hpp"
#include "ldm/blocks/transformer_block.hpp"
#include "ldm/blocks/upsample.hpp"
#include "ldm/guidance.hpp"
#include "reference.hpp"
#include "synthetic.hpp"

using namespace ldm;
using ldm::test::Reference;
using ldm::test::require_close;

namespace {
constexpr double kBlockTol = 1e-5;  // ../shared/README.md: blocks
using ldm::test::synthetic_weights;
}  // namespace

TEST_CASE("blocks: get_timestep_embedding (flip_sin_to_cos, shift 0)") {
  LDM_REQUIRE_REFERENCE(path, "ref_blocks.safetensors");
  Reference ref(path);
  Tensor t = ref.get("timestep_embedding", "timesteps");
  Tensor out = get_timestep_embedding(std::vector<float>(t.begin(), t.end()), 320, true, 0.0f);
  require_close(out, ref.get("timestep_embedding", "out"), kBlockTol, "timestep_embedding");
}

TEST_CASE("blocks: TimestepEmbedding MLP") {
  LDM_REQUIRE_REFERENCE(path, "ref_blocks.safetensors");
  Reference ref(path);
  auto w = synthetic_weights();
  TimestepEmbedding m;
  m.load(w, "", 320, 1280);
  require_close(m.forward(ref.get("time_mlp", "x")), ref.get("time_mlp", "out"), kBlockTol, "time_mlp");
}

TEST_CASE("blocks: GroupNorm") {
  LDM_REQUIRE_REFERENCE(path, "ref_blocks.safetensors");
  Reference ref(path);
  auto w = synthetic_weights();
  GroupNorm m;
  m.load(w, "", 64, 32, 1e-5f);
  require_close(m.forward(ref.get("group_norm", "x")), ref.get("group_norm", "out"), kBlockTol, "group_norm");
}

TEST_CASE("blocks: ResnetBlock2D with time embedding and 1x1 shortcut (U-Net)") {
  LDM_REQUIRE_REFERENCE(path, "ref_blocks.safetensors");
  Reference ref(path);
  auto w = synthetic_weights();
  ResnetBlock2D m;
  m.load(w, "", 64, 128, 256, 32, 1e-5f);
  REQUIRE(m.conv_shortcut.has_value());
  require_close(m.forward(ref.get("resnet_unet", "x"), ref.get("resnet_unet", "temb")), ref.get("resnet_unet", "out"),
                kBlockTol, "resnet_unet");
}

TEST_CASE("blocks: ResnetBlock2D without time embedding (VAE, eps 1e-6)") {
  LDM_REQUIRE_REFERENCE(path, "ref_blocks.safetensors");
  Reference ref(path);
  auto w = synthetic_weights();
  ResnetBlock2D m;
  m.load(w, "", 64, 64, 0, 32, 1e-6f);
  require_close(m.forward(ref.get("resnet_vae", "x")), ref.get("resnet_vae", "out"), kBlockTol, "resnet_vae");
}

TEST_CASE("blocks: Downsample2D, U-Net padding=1 and VAE padding=0 (asymmetric pad)") {
  LDM_REQUIRE_REFERENCE(path, "ref_blocks.safetensors");
  Reference ref(path);
  for (auto [name, pad] : {std::pair<const char*, int>{"downsample_unet", 1}, {"downsample_vae", 0}}) {
    auto w = synthetic_weights();
    Downsample2D m;
    m.load(w, "", 64, 64, pad);
    require_close(m.forward(ref.get(name, "x")), ref.get(name, "out"), kBlockTol, name);
  }
}

TEST_CASE("blocks: Upsample2D (nearest x2 + conv)") {
  LDM_REQUIRE_REFERENCE(path, "ref_blocks.safetensors");
  Reference ref(path);
  auto w = synthetic_weights();
  Upsample2D m;
  m.load(w, "", 64, 64);
  require_close(m.forward(ref.get("upsample", "x")), ref.get("upsample", "out"), kBlockTol, "upsample");
}

TEST_CASE("blocks: Attention, cross and self, multi-head") {
  LDM_REQUIRE_REFERENCE(path, "ref_blocks.safetensors");
  Reference ref(path);
  {
    auto w = synthetic_weights();
    Attention m;
    m.load(w, "", 64, 32, 2, 32);
    require_close(m.forward(ref.get("cross_attention", "x"), ref.get("cross_attention", "context")),
                  ref.get("cross_attention", "out"), kBlockTol, "cross_attention");
  }
  {
    auto w = synthetic_weights();
    Attention m;
    m.load(w, "", 64, 0, 2, 32);
    require_close(m.forward(ref.get("self_attention", "x")), ref.get("self_attention", "out"), kBlockTol, "self_attention");
  }
}

TEST_CASE("blocks: VAE attention (group norm, one head, residual)") {
  LDM_REQUIRE_REFERENCE(path, "ref_blocks.safetensors");
  Reference ref(path);
  auto w = synthetic_weights();
  VAEAttention m;
  m.load(w, "", 64, 32, 1e-6f);
  require_close(m.forward(ref.get("vae_attention", "x")), ref.get("vae_attention", "out"), kBlockTol, "vae_attention");
}

TEST_CASE("blocks: BasicTransformerBlock (self-attn, cross-attn, GEGLU feed-forward)") {
  LDM_REQUIRE_REFERENCE(path, "ref_blocks.safetensors");
  Reference ref(path);
  auto w = synthetic_weights();
  BasicTransformerBlock m;
  m.load(w, "", 64, 2, 32, 32);
  require_close(m.forward(ref.get("transformer_block", "x"), ref.get("transformer_block", "context")),
                ref.get("transformer_block", "out"), kBlockTol, "transformer_block");
}

TEST_CASE("blocks: Transformer2DModel with 1x1 conv proj_in / proj_out") {
  LDM_REQUIRE_REFERENCE(path, "ref_blocks.safetensors");
  Reference ref(path);
  auto w = synthetic_weights();
  Transformer2DModel m;
  m.load(w, "", 64, 2, 32, 32);
  require_close(m.forward(ref.get("spatial_transformer", "x"), ref.get("spatial_transformer", "context")),
                ref.get("spatial_transformer", "out"), kBlockTol, "spatial_transformer");
}

TEST_CASE("guidance: rescale_noise_cfg") {
  LDM_REQUIRE_REFERENCE(path, "ref_blocks.safetensors");
  Reference ref(path);
  Tensor out = rescale_noise_cfg(ref.get("rescale_noise_cfg", "noise_cfg"), ref.get("rescale_noise_cfg", "noise_pred_text"),
                                 0.7f);
  require_close(out, ref.get("rescale_noise_cfg", "out"), kBlockTol, "rescale_noise_cfg");
}

TEST_CASE("guidance: classifier-free guidance combines [uncond; text]") {
  Tensor pred = Tensor::from({2, 2}, {1, 2, 3, 6});
  Tensor g = classifier_free_guidance(pred, 7.5f);
  CHECK(g.shape() == Shape{1, 2});
  CHECK(g[0] == Approx(1 + 7.5 * 2));
  CHECK(g[1] == Approx(2 + 7.5 * 4));
}
