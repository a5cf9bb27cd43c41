// The backward of the three models against float64 PyTorch autograd of diffusers / transformers
// on synthetic weights (tests/data/grad_blocks.safetensors, scripts/make_grad_reference_models.py),
// on the tiny configs of ref_blocks.safetensors and on a second config of each with other group
// counts, head counts and widths: outputs within 1e-5 relative L2, the input gradients and every
// parameter's gradient (under its diffusers / transformers name) within 1e-4.
#include <chrono>
#include <fstream>
#include <map>

#include "grad_reference.hpp"
#include "ldm/core/weights.hpp"
#include "ldm/models/clip_text.hpp"
#include "ldm/models/unet.hpp"
#include "ldm/models/vae.hpp"
#include "ldm/train/checkpoint.hpp"
#include "tmp_path.hpp"

using namespace ldm;
using ldm::test::get;
using ldm::test::grad_ref;
using ldm::test::grad_config;
using ldm::test::synthetic;
using ldm::test::kBlockGradTol;
using ldm::test::kBlockOutTol;
using ldm::test::require_close;

namespace {


// parameters() against a diffusers file's key list {name: shape} (../shared/reference/sd15_keys.json):
// the same names, each with its shape.
void require_checkpoint_names(const std::vector<Parameter>& params, const nlohmann::json& keys, const std::string& what) {
  std::map<std::string, Shape> want, got;
  for (const auto& [k, v] : keys.items()) want[k] = v.get<Shape>();
  for (const auto& p : params) got[p.name] = p.value->shape();
  INFO(what << ": parameters() lists " << got.size() << " tensors, the diffusers file " << want.size());
  for (const auto& [k, s] : want) {
    INFO(k);
    CHECK((got.count(k) && got.at(k) == s));
  }
  CHECK(got.size() == want.size());
}

nlohmann::json sd15_keys() {
  std::ifstream f(test::reference_path("sd15_keys.json"));
  return nlohmann::json::parse(f).at("diffusers");
}

}  // namespace

TEST_CASE("models backward: UNet2DConditionModel, one timestep per batch item", "[models][backward]") {
  // unet_linear: SD2.x's use_linear_projection, proj_in / proj_out gradients [out, in] as in its file
  for (const std::string c : {"unet_tiny", "unet_b", "unet_linear"}) {
    auto unet = synthetic<UNet2DConditionModel>("", UNetConfig::from_json(grad_config(c)));
    const Tensor sample = get(c, "sample"), context = get(c, "context"), ts = get(c, "timesteps");
    const std::vector<float> t(ts.begin(), ts.end());
    REQUIRE(t.size() == size_t(sample.dim(0)));
    UNet2DConditionModel::Saved s;
    const Tensor out = unet.forward(sample, t, context, s);
    require_close(out, get(c, "out"), kBlockOutTol, c + ".out");
    const UNet2DConditionModel::Grad g = unet.backward(s, get(c, "grad_out"));
    require_close(g.sample, get(c, "grad.sample"), kBlockGradTol, c + ".grad.sample");
    require_close(g.context, get(c, "grad.context"), kBlockGradTol, c + ".grad.context");
    std::vector<Parameter> params = parameters_of(unet);
    test::check_parameter_grads(c, params);

    // Time (not a test): the best of 3 inference forwards, saving forwards and backwards.
    double t_inf = 1e9, t_fwd = 1e9, t_bwd = 1e9;
    for (int i = 0; i < 3; ++i) {
      auto t0 = std::chrono::steady_clock::now();
      unet.forward(sample, t, context);
      t_inf = std::min(t_inf, seconds_since(t0));
      t0 = std::chrono::steady_clock::now();
      unet.forward(sample, t, context, s);
      t_fwd = std::min(t_fwd, seconds_since(t0));
      t0 = std::chrono::steady_clock::now();
      unet.backward(s, get(c, "grad_out"));
      t_bwd = std::min(t_bwd, seconds_since(t0));
    }
    std::printf("%s: forward %.4f s, forward saving activations %.4f s, backward %.4f s (%.2fx the forward)\n",
                c.c_str(), t_inf, t_fwd, t_bwd, t_bwd / t_inf);
  }
}

TEST_CASE("models backward: a training checkpoint keeps a Linear proj_in in its checkpoint shape [out, in]",
          "[models][backward][checkpoint]") {
  const std::string c = "unet_linear", name = "down_blocks.0.attentions.0.proj_in.weight";
  auto unet = synthetic<UNet2DConditionModel>("", UNetConfig::from_json(grad_config(c)));
  std::vector<Parameter> params = parameters_of(unet);
  AdamW opt;
  EMAModel ema;
  for (Parameter& p : params) p.grad->vec().setConstant(0.01f);
  opt.step(params);
  ema.step(params);
  const Tensor before = params[0].value->clone();
  test::TmpPath path("linear_projection_checkpoint.safetensors");
  save_training_checkpoint(path, params, 1, opt, &ema, nullptr);
  const SafeTensors f(path);
  for (const std::string& key : {name, "adamw.m." + name, "ema." + name}) {
    INFO(key);
    CHECK(f.info(key).shape == Shape{16, 16});
  }
  AdamW opt2;
  EMAModel ema2;
  auto unet2 = synthetic<UNet2DConditionModel>("", UNetConfig::from_json(grad_config(c)));
  std::vector<Parameter> params2 = parameters_of(unet2);
  CHECK(load_training_checkpoint(path, params2, opt2, &ema2, nullptr) == 1);
  for (size_t i = 0; i < params.size(); ++i) {
    INFO(params[i].name);
    REQUIRE(params2[i].value->shape() == params[i].value->shape());  // [16, 16, 1, 1] in use
    CHECK(params2[i].value->vec() == params[i].value->vec());
    CHECK(ema2.shadow_params.at(params[i].name).shape() == params[i].value->shape());
  }
  CHECK(before.vec() == params[0].value->vec());
}

TEST_CASE("models backward: a wrong gradient shape, and a second backward without a forward, are errors",
          "[models][backward]") {
  const std::string c = "unet_b";
  auto unet = synthetic<UNet2DConditionModel>("", UNetConfig::from_json(grad_config(c)));
  const Tensor ts = get(c, "timesteps");
  UNet2DConditionModel::Saved s;
  const std::vector<float> t(ts.begin(), ts.end());
  unet.forward(get(c, "sample"), t, get(c, "context"), s);
  CHECK_THROWS_WITH(unet.backward(s, Tensor({2, 3, 4, 4})),
                    Catch::Contains("the output's gradient [2, 3, 4, 4] must have the output's shape [2, 3, 8, 8]"));
  unet.backward(s, get(c, "grad_out"));
  CHECK_THROWS_WITH(unet.backward(s, get(c, "grad_out")), Catch::Contains("no saved activations"));
}

TEST_CASE("models backward: AutoencoderKL encoder (+quant_conv) and decoder (+post_quant_conv)", "[models][backward]") {
  for (const std::string v : {"vae_tiny", "vae_b"}) {
    auto vae = synthetic<AutoencoderKL>("", VAEConfig::from_json(grad_config(v + "_encode")));
    const std::vector<Parameter> params = parameters_of(vae);

    const std::string e = v + "_encode";
    AutoencoderKL::EncodeSaved es;
    const DiagonalGaussian post = vae.encode(get(e, "image"), es);
    require_close(post.mean, get(e, "mean"), kBlockOutTol, e + ".mean");
    require_close(post.logvar, get(e, "logvar"), kBlockOutTol, e + ".logvar");
    const Tensor dimage = vae.encode_backward(es, {get(e, "grad_mean"), get(e, "grad_logvar")});
    require_close(dimage, get(e, "grad.image"), kBlockGradTol, e + ".grad.image");
    test::check_parameter_grads(e, parameters_under(params, AutoencoderKL::encoder_prefixes()));

    const std::string d = v + "_decode";
    AutoencoderKL::DecodeSaved ds;
    require_close(vae.decode(get(d, "latent"), ds), get(d, "out"), kBlockOutTol, d + ".out");
    require_close(vae.decode_backward(ds, get(d, "grad_out")), get(d, "grad.latent"), kBlockGradTol,
                  d + ".grad.latent");
    test::check_parameter_grads(d, parameters_under(params, AutoencoderKL::decoder_prefixes()));

    // The saved activations are consumed: a second backward needs a second forward.
    CHECK_THROWS_WITH(vae.encode_backward(es, {get(e, "grad_mean"), get(e, "grad_logvar")}),
                      Catch::Contains("encode_backward: no saved activations"));
    CHECK_THROWS_WITH(vae.decode_backward(ds, get(d, "grad_out")),
                      Catch::Contains("decode_backward: no saved activations"));
  }
}

TEST_CASE("models backward: CLIPTextModel from last_hidden_state", "[models][backward]") {
  for (const std::string c : {"clip_tiny", "clip_b"}) {
    auto clip = synthetic<CLIPTextModel>("text_model", CLIPTextConfig::from_json(grad_config(c)));
    const std::vector<int64_t> ids = grad_ref().file.load_i64(c + ".input_ids");
    CLIPTextModel::Saved s;
    require_close(clip.forward(ids, 2, s), get(c, "last_hidden_state"), kBlockOutTol, c + ".last_hidden_state");
    clip.backward(s, get(c, "grad_last_hidden_state"));
    test::check_parameter_grads(c, parameters_of(clip, "text_model"));
    CHECK_THROWS_WITH(clip.backward(s, get(c, "grad_last_hidden_state")), Catch::Contains("no saved activations"));
  }
}

// The full-size SD1.5 U-Net (3.4 GB of synthetic weights, as much again of gradients) at a 16x16
// latent, batch 1. The reference (grad_unet_sd15.safetensors, `make_grad_reference_models.py
// --sd15`, 7 GB in float64) stores the input gradients and a few parameters' gradients only.
TEST_CASE("models backward: the SD1.5 U-Net at 16x16", "[models][backward][slow][full]") {
  const std::string f = __FILE__;
  const test::Reference ref(f.substr(0, f.rfind('/')) + "/data/grad_unet_sd15.safetensors");
  const std::string c = "unet_sd15";
  auto unet = synthetic<UNet2DConditionModel>("", UNetConfig::from_json(ref.meta(c).at("config")));
  const Tensor ts = ref.get(c, "timesteps");
  UNet2DConditionModel::Saved s;
  auto t0 = std::chrono::steady_clock::now();
  require_close(unet.forward(ref.get(c, "sample"), std::vector<float>(ts.begin(), ts.end()), ref.get(c, "context"), s),
                ref.get(c, "out"), kBlockOutTol, c + ".out");
  const double t_fwd = seconds_since(t0);
  t0 = std::chrono::steady_clock::now();
  const UNet2DConditionModel::Grad g = unet.backward(s, ref.get(c, "grad_out"));
  const double t_bwd = seconds_since(t0);
  require_close(g.sample, ref.get(c, "grad.sample"), kBlockGradTol, c + ".grad.sample");
  require_close(g.context, ref.get(c, "grad.context"), kBlockGradTol, c + ".grad.context");
  const auto& stored = ref.meta(c).at("parameters");
  REQUIRE(stored.size() > 10);
  int checked = 0;
  for (const Parameter& p : parameters_of(unet)) {
    if (std::find(stored.begin(), stored.end(), p.name) == stored.end()) continue;
    require_close(*p.grad, ref.get(c, "grad." + p.name), kBlockGradTol, c + ".grad." + p.name);
    ++checked;
  }
  CHECK(checked == int(stored.size()));
  if (!test::reference_path("sd15_keys.json").empty())
    require_checkpoint_names(parameters_of(unet), sd15_keys().at("unet"), "SD1.5 U-Net");
  std::printf("%s: forward saving activations %.2f s, backward %.2f s\n", c.c_str(), t_fwd, t_bwd);
}

TEST_CASE("models backward: parameters() of the SD1.5 VAE and CLIP are the diffusers files' tensors", "[models]") {
  LDM_REQUIRE_REFERENCE(path, "sd15_keys.json");
  const nlohmann::json keys = sd15_keys();
  {
    auto vae = synthetic<AutoencoderKL>("", VAEConfig{});
    require_checkpoint_names(parameters_of(vae), keys.at("vae"), "SD1.5 VAE");
  }
  auto clip = synthetic<CLIPTextModel>("text_model", CLIPTextConfig{});
  require_checkpoint_names(parameters_of(clip, "text_model"), keys.at("text_encoder"), "SD1.5 CLIP text encoder");
}
