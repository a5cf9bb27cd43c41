// The backward of every block against float64 PyTorch autograd of diffusers' modules on
// synthetic weights (tests/data/grad_blocks.safetensors, scripts/make_grad_reference_models.py):
// the forward with saved activations within 1e-5 relative L2, the input gradients and every
// parameter's gradient within 1e-4, the attention key bias's gradient zero by symmetry.
#include "grad_reference.hpp"
#include "ldm/blocks/downsample.hpp"
#include "ldm/blocks/resnet_block.hpp"
#include "ldm/blocks/timestep_embedding.hpp"
#include "ldm/blocks/transformer_2d.hpp"
#include "ldm/blocks/upsample.hpp"
#include "ldm/core/weights.hpp"

using namespace ldm;
using ldm::test::get;
using ldm::test::grad_ref;
using ldm::test::synthetic;
using ldm::test::kBlockGradTol;
using ldm::test::kBlockOutTol;
using ldm::test::require_close;

namespace {

const nlohmann::json& ctor(const std::string& c) { return grad_ref().meta(c).at("ctor"); }

}  // namespace

TEST_CASE("blocks backward: TimestepEmbedding", "[blocks][backward]") {
  const std::string c = "time_mlp";
  auto m = synthetic<TimestepEmbedding>("", int64_t(ctor(c).at("in_channels")), int64_t(ctor(c).at("time_embed_dim")));
  TimestepEmbedding::Saved s;
  require_close(m.forward(get(c, "x"), s), get(c, "out"), kBlockOutTol, c + ".out");
  require_close(m.backward(s, get(c, "grad_out")), get(c, "grad.x"), kBlockGradTol, c + ".grad.x");
  test::check_parameter_grads(c, parameters_of(m));
}

TEST_CASE("blocks backward: ResnetBlock2D, with a time embedding and a shortcut, and without", "[blocks][backward]") {
  for (const std::string c : {"resnet_unet", "resnet_vae"}) {
    const auto& k = ctor(c);
    const bool temb = !k.at("temb_channels").is_null();
    auto m = synthetic<ResnetBlock2D>("", int64_t(k.at("in_channels")), int64_t(k.at("out_channels")),
                                      temb ? int64_t(k.at("temb_channels")) : int64_t(0), int64_t(k.at("groups")),
                                      float(k.at("eps")));
    ResnetBlock2D::Saved s;
    const Tensor t = temb ? get(c, "temb") : Tensor();
    require_close(m.forward(get(c, "x"), t, s), get(c, "out"), kBlockOutTol, c + ".out");
    Tensor dtemb;
    require_close(m.backward(s, get(c, "grad_out"), &dtemb), get(c, "grad.x"), kBlockGradTol, c + ".grad.x");
    if (temb) require_close(dtemb, get(c, "grad.temb"), kBlockGradTol, c + ".grad.temb");
    CHECK(!s.x.defined());  // the backward consumed what the forward saved
    test::check_parameter_grads(c, parameters_of(m));
  }
}

TEST_CASE("blocks backward: Attention, self and cross", "[blocks][backward]") {
  for (const std::string c : {"self_attention", "cross_attention"}) {
    const auto& k = ctor(c);
    const bool cross = k.contains("cross_attention_dim");
    auto m = synthetic<Attention>("", int64_t(k.at("query_dim")), cross ? int64_t(k.at("cross_attention_dim")) : int64_t(0),
                                  int64_t(k.at("heads")), int64_t(k.at("dim_head")));
    Attention::Saved s;
    const Tensor ctx = cross ? get(c, "context") : Tensor();
    require_close(m.forward(get(c, "x"), ctx, s), get(c, "out"), kBlockOutTol, c + ".out");
    Tensor dctx;
    require_close(m.backward(s, get(c, "grad_out"), &dctx), get(c, "grad.x"), kBlockGradTol, c + ".grad.x");
    if (cross) require_close(dctx, get(c, "grad.context"), kBlockGradTol, c + ".grad.context");
    test::check_parameter_grads(c, parameters_of(m));
  }
}

TEST_CASE("blocks backward: the VAE mid-block attention (key bias gradient zero by symmetry)", "[blocks][backward]") {
  const std::string c = "vae_attention";
  auto m = synthetic<VAEAttention>("", int64_t(ctor(c).at("query_dim")), int64_t(ctor(c).at("norm_num_groups")),
                                   float(ctor(c).at("eps")));
  VAEAttention::Saved s;
  require_close(m.forward(get(c, "x"), s), get(c, "out"), kBlockOutTol, c + ".out");
  require_close(m.backward(s, get(c, "grad_out")), get(c, "grad.x"), kBlockGradTol, c + ".grad.x");
  test::check_parameter_grads(c, parameters_of(m));
  CHECK(m.attn.to_k.grad_bias.defined());  // checked against zero by check_parameter_grads
}

TEST_CASE("blocks backward: BasicTransformerBlock", "[blocks][backward]") {
  const std::string c = "transformer_block";
  const auto& k = ctor(c);
  auto m = synthetic<BasicTransformerBlock>("", int64_t(k.at("dim")), int64_t(k.at("num_attention_heads")),
                                            int64_t(k.at("attention_head_dim")), int64_t(k.at("cross_attention_dim")));
  BasicTransformerBlock::Saved s;
  require_close(m.forward(get(c, "x"), get(c, "context"), s), get(c, "out"), kBlockOutTol, c + ".out");
  Tensor dctx;
  require_close(m.backward(s, get(c, "grad_out"), &dctx), get(c, "grad.x"), kBlockGradTol, c + ".grad.x");
  require_close(dctx, get(c, "grad.context"), kBlockGradTol, c + ".grad.context");
  test::check_parameter_grads(c, parameters_of(m));
}

TEST_CASE("blocks backward: Transformer2DModel", "[blocks][backward]") {
  const std::string c = "spatial_transformer";
  const auto& k = ctor(c);
  auto m = synthetic<Transformer2DModel>("", int64_t(k.at("in_channels")), int64_t(k.at("num_attention_heads")),
                                         int64_t(k.at("attention_head_dim")), int64_t(k.at("cross_attention_dim")),
                                         int64_t(k.at("norm_num_groups")), int64_t(1));
  Transformer2DModel::Saved s;
  require_close(m.forward(get(c, "x"), get(c, "context"), s), get(c, "out"), kBlockOutTol, c + ".out");
  Tensor dctx;
  require_close(m.backward(s, get(c, "grad_out"), &dctx), get(c, "grad.x"), kBlockGradTol, c + ".grad.x");
  require_close(dctx, get(c, "grad.context"), kBlockGradTol, c + ".grad.context");
  test::check_parameter_grads(c, parameters_of(m));
}

TEST_CASE("blocks backward: Downsample2D (both paddings) and Upsample2D", "[blocks][backward]") {
  for (const std::string c : {"downsample_pad1", "downsample_pad0"}) {
    auto m = synthetic<Downsample2D>("", int64_t(ctor(c).at("channels")), int64_t(ctor(c).at("out_channels")),
                                     int(ctor(c).at("padding")));
    const Tensor x = get(c, "x");
    require_close(m.forward(x), get(c, "out"), kBlockOutTol, c + ".out");
    require_close(m.backward(x, get(c, "grad_out")), get(c, "grad.x"), kBlockGradTol, c + ".grad.x");
    test::check_parameter_grads(c, parameters_of(m));
  }
  const std::string c = "upsample";
  auto m = synthetic<Upsample2D>("", int64_t(ctor(c).at("channels")), int64_t(ctor(c).at("out_channels")));
  const Tensor x = get(c, "x");
  require_close(m.forward(x), get(c, "out"), kBlockOutTol, c + ".out");
  require_close(m.backward(x, get(c, "grad_out")), get(c, "grad.x"), kBlockGradTol, c + ".grad.x");
  test::check_parameter_grads(c, parameters_of(m));
}
