// UNet2DConditionModel against diffusers: the tiny U-Net of ref_blocks.safetensors at relative
// L2 <= 1e-5, the full-size SD1.5 U-Net of ref_unet_full.safetensors at <= 1e-4 (one synthetic
// model, loaded once, serves both full-size cases), the config.json reader and the errors.
#include <catch2/catch.hpp>

#include <chrono>
#include <cstdio>
#include <fstream>
#include <map>

#include "ldm/core/clock.hpp"
#include "ldm/core/memory.hpp"
#include "ldm/models/unet.hpp"
#include "reference.hpp"

using namespace ldm;
using ldm::test::Reference;
using ldm::test::require_close;

namespace {

// Synthetic values, but only under the names and shapes of a real checkpoint's key list, so
// that loading also checks every key name and shape (and, with finish(true), that none is left).
class KeyedSyntheticSource : public WeightSource {
 public:
  explicit KeyedSyntheticSource(std::map<std::string, Shape> keys) : keys_(std::move(keys)) {}
  static std::shared_ptr<KeyedSyntheticSource> from_json(const nlohmann::json& shapes) {
    std::map<std::string, Shape> keys;
    for (const auto& [k, v] : shapes.items()) keys[k] = v.get<Shape>();
    return std::make_shared<KeyedSyntheticSource>(std::move(keys));
  }
  bool has(const std::string& name) const override { return keys_.count(name) != 0; }
  Shape shape(const std::string& name) const override { return keys_.at(name); }
  Tensor load(const std::string& name, const Shape& expected) const override { return synth::param(name, expected); }
  std::vector<std::string> names() const override {
    std::vector<std::string> r;
    for (const auto& kv : keys_) r.push_back(kv.first);
    return r;
  }
  std::string describe() const override { return "synthetic weights under the reference key list"; }
  int64_t total_numel() const {
    int64_t n = 0;
    for (const auto& kv : keys_) n += numel_of(kv.second);
    return n;
  }

 private:
  std::map<std::string, Shape> keys_;
};

Tensor run_timed(const UNet2DConditionModel& unet, const Tensor& x, float t, const Tensor& c, const char* what) {
  auto t0 = std::chrono::steady_clock::now();
  Tensor out = unet.forward(x, t, c);
  std::printf("  %-40s forward %.2f s\n", what, seconds_since(t0));
  return out;
}

// The full-size synthetic SD1.5 U-Net (3.4 GB of float32), built on first use and shared by
// every full-size case of this file.
const UNet2DConditionModel& full_unet() {
  static const UNet2DConditionModel model = [] {
    auto t0 = std::chrono::steady_clock::now();
    std::ifstream f(ldm::test::reference_path("sd15_keys.json"));
    auto keys = KeyedSyntheticSource::from_json(nlohmann::json::parse(f).at("diffusers").at("unet"));
    WeightStore w(keys);
    UNet2DConditionModel m;
    m.load(w, "", UNetConfig{});
    w.finish(/*check_unexpected=*/true);
    REQUIRE(m.num_parameters() == keys->total_numel());
    std::printf("  full-size U-Net: %.1fM parameters, loaded in %.2f s\n", double(m.num_parameters()) / 1e6,
                seconds_since(t0));
    return m;
  }();
  return model;
}

// A small config with SD1.5's four levels (sizes must be multiples of 8), for the input checks.
UNetConfig four_level_tiny() {
  UNetConfig c;
  c.block_out_channels = {32, 32, 32, 32};
  c.cross_attention_dim = 16;
  return c;
}

}  // namespace

TEST_CASE("unet: UNetConfig from a diffusers config.json") {
  const auto sd15 = nlohmann::json::parse(R"({
    "_class_name": "UNet2DConditionModel", "_diffusers_version": "0.6.0", "act_fn": "silu",
    "attention_head_dim": 8, "block_out_channels": [320, 640, 1280, 1280], "center_input_sample": false,
    "cross_attention_dim": 768, "down_block_types": ["CrossAttnDownBlock2D", "CrossAttnDownBlock2D",
    "CrossAttnDownBlock2D", "DownBlock2D"], "downsample_padding": 1, "flip_sin_to_cos": true, "freq_shift": 0,
    "in_channels": 4, "layers_per_block": 2, "mid_block_scale_factor": 1, "norm_eps": 1e-05, "norm_num_groups": 32,
    "out_channels": 4, "sample_size": 64, "up_block_types": ["UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D",
    "CrossAttnUpBlock2D"], "class_embed_type": null, "num_attention_heads": null})");
  UNetConfig c = UNetConfig::from_json(sd15);
  CHECK(c.block_out_channels == std::vector<int64_t>{320, 640, 1280, 1280});
  CHECK(c.attention_head_dim == std::vector<int64_t>{8, 8, 8, 8});
  CHECK(c.layers_per_block == std::vector<int64_t>{2, 2, 2, 2});
  CHECK(c.cross_attention_dim == 768);
  CHECK(c.time_embed_dim() == 1280);
  CHECK(c.size_multiple() == 8);
  CHECK_FALSE(c.use_linear_projection);

  // SD2.x: heads per block as a list, linear projections, OpenCLIP context
  auto sd2 = sd15;
  sd2["attention_head_dim"] = {5, 10, 20, 20};
  sd2["use_linear_projection"] = true;
  sd2["cross_attention_dim"] = 1024;
  c = UNetConfig::from_json(sd2);
  CHECK(c.attention_head_dim == std::vector<int64_t>{5, 10, 20, 20});
  CHECK(c.use_linear_projection);

  // Unsupported variants are refused by name.
  auto sdxl = sd15;
  sdxl["addition_embed_type"] = "text_time";
  CHECK_THROWS_WITH(UNetConfig::from_json(sdxl), Catch::Contains("addition_embed_type"));
  auto bad = sd15;
  bad["down_block_types"][0] = "SimpleCrossAttnDownBlock2D";
  CHECK_THROWS_WITH(UNetConfig::from_json(bad), Catch::Contains("SimpleCrossAttnDownBlock2D"));
  bad = sd15;
  bad["attention_head_dim"] = {8, 8};
  CHECK_THROWS_WITH(UNetConfig::from_json(bad), Catch::Contains("attention_head_dim has 2 entries for 4 blocks"));
  bad = sd15;
  bad["norm_eps"] = "small";
  CHECK_THROWS_WITH(UNetConfig::from_json(bad), Catch::Contains("\"norm_eps\" must be a finite number"));
}

TEST_CASE("unet: tiny U-Net (2 levels, 32/64 channels) against diffusers") {
  LDM_REQUIRE_REFERENCE(path, "ref_blocks.safetensors");
  Reference ref(path);
  const auto& meta = ref.meta("tiny_unet");
  UNetConfig cfg = UNetConfig::from_json(meta.at("config"));
  auto keys = KeyedSyntheticSource::from_json(meta.at("weights"));
  WeightStore w(keys);
  UNet2DConditionModel unet;
  unet.load(w, "", cfg);
  w.finish(/*check_unexpected=*/true);
  CHECK(unet.num_parameters() == keys->total_numel());

  const float t = ref.get("tiny_unet", "timestep")[0];
  REQUIRE(t == meta.at("timestep").get<float>());
  Tensor out = unet.forward(ref.get("tiny_unet", "sample"), t, ref.get("tiny_unet", "context"));
  require_close(out, ref.get("tiny_unet", "out"), 1e-5, "tiny_unet");
}

TEST_CASE("unet: use_linear_projection (SD2.x layout) loads 2-d proj weights, same function") {
  // synth.param depends on the name and fan-in only, so a Linear [inner, C] gets the values of
  // the 1x1 conv [inner, C, 1, 1]: the linear-projection model must reproduce tiny_unet.
  LDM_REQUIRE_REFERENCE(path, "ref_blocks.safetensors");
  Reference ref(path);
  UNetConfig cfg = UNetConfig::from_json(ref.meta("tiny_unet").at("config"));
  cfg.use_linear_projection = true;
  std::map<std::string, Shape> keys;
  for (const auto& [k, v] : ref.meta("tiny_unet").at("weights").items()) {
    Shape s = v.get<Shape>();
    if (k.find(".proj_in.weight") != std::string::npos || k.find(".proj_out.weight") != std::string::npos) s.resize(2);
    keys[k] = s;
  }
  WeightStore w(std::make_shared<KeyedSyntheticSource>(keys));
  UNet2DConditionModel unet;
  unet.load(w, "", cfg);
  w.finish(true);
  Tensor out = unet.forward(ref.get("tiny_unet", "sample"), 500.0f, ref.get("tiny_unet", "context"));
  require_close(out, ref.get("tiny_unet", "out"), 1e-5, "tiny_unet (use_linear_projection)");
}

TEST_CASE("unet: helpful errors for bad inputs and weights") {
  UNetConfig cfg = four_level_tiny();
  WeightStore w(std::make_shared<SyntheticSource>());
  UNet2DConditionModel unet;
  unet.load(w, "", cfg);
  w.finish();
  Tensor ctx({1, 5, 16});

  CHECK_NOTHROW(unet.forward(Tensor({1, 4, 16, 8}), 10.0f, ctx));
  CHECK_THROWS_WITH(unet.forward(Tensor({1, 3, 16, 16}), 10.0f, ctx),
                    Catch::Contains("expected latents with 4 channels, got [1, 3, 16, 16]"));
  CHECK_THROWS_WITH(unet.forward(Tensor({1, 4, 12, 16}), 10.0f, ctx),
                    Catch::Contains("must be multiples of 8") && Catch::Contains("got 12x16"));
  CHECK_THROWS_WITH(unet.forward(Tensor({1, 4, 4, 16}), 10.0f, ctx), Catch::Contains("multiples of 8"));
  CHECK_THROWS_WITH(unet.forward(Tensor({1, 4, 16, 16}), 10.0f, Tensor({2, 5, 16})),
                    Catch::Contains("expected text embeddings [1, L, 16]"));
  CHECK_THROWS_WITH(unet.forward(Tensor({1, 4, 16, 16}), 10.0f, Tensor({1, 5, 768})),
                    Catch::Contains("expected text embeddings [1, L, 16], got [1, 5, 768]"));
  CHECK_THROWS_WITH(unet.forward(Tensor({2, 4, 16, 16}), std::vector<float>{1, 2, 3}, Tensor({2, 5, 16})),
                    Catch::Contains("3 timesteps for a batch of 2"));
  CHECK_THROWS_WITH(UNet2DConditionModel{}.forward(Tensor({1, 4, 16, 16}), 1.0f, ctx),
                    Catch::Contains("before load()"));
  // An empty batch reached a division by zero (SIGFPE) in the first resnet block.
  CHECK_THROWS_WITH(unet.forward(Tensor({0, 4, 16, 16}), 10.0f, Tensor({0, 5, 16})),
                    Catch::Contains("the batch of latents [0, 4, 16, 16] is empty"));
  CHECK_THROWS_WITH(unet.forward(Tensor({1, 4, 16, 16}), std::vector<float>{}, ctx),
                    Catch::Contains("0 timesteps for a batch of 1"));
  CHECK_THROWS_WITH(unet.forward(Tensor({1, 4, 16, 16}), 10.0f, Tensor({1, 0, 16})),
                    Catch::Contains("the text embeddings [1, 0, 16] have no tokens"));

  // A checkpoint of another model: every missing tensor is named.
  WeightStore empty(std::make_shared<MapSource>(std::map<std::string, Tensor>{}));
  UNet2DConditionModel other;
  other.load(empty, "", cfg);
  CHECK_THROWS_WITH(empty.finish(), Catch::Contains("missing") && Catch::Contains("conv_in.weight [32, 4, 3, 3]"));
}

TEST_CASE("unet: per-sample timesteps equal separate runs") {
  UNetConfig cfg = four_level_tiny();
  WeightStore w(std::make_shared<SyntheticSource>());
  UNet2DConditionModel unet;
  unet.load(w, "", cfg);
  // 16x16, not 8x8: at a 1x1 bottleneck the group norms see 1-2 values per group and amplify
  // rounding; batch 2 vs 1 changes GEMM shapes, hence summation order, so not bit-equal.
  Tensor x = synth::tensor("x", {2, 4, 16, 16}), c = synth::tensor("c", {2, 3, 16});
  Tensor both = unet.forward(x, std::vector<float>{10.0f, 700.0f}, c);
  Tensor first = unet.forward(x.slice0(0, 1), 10.0f, c.slice0(0, 1));
  Tensor second = unet.forward(x.slice0(1, 2), 700.0f, c.slice0(1, 2));
  require_close(both.slice0(0, 1).clone(), first, 1e-5, "batch item 0 (t=10)");
  require_close(both.slice0(1, 2).clone(), second, 1e-5, "batch item 1 (t=700)");
}

void check_full_case(const char* name) {
  LDM_REQUIRE_REFERENCE(path, "ref_unet_full.safetensors");
  Reference ref(path);
  const UNet2DConditionModel& unet = full_unet();
  const float t = ref.get(name, "timestep")[0];
  Tensor out = run_timed(unet, ref.get(name, "sample"), t, ref.get(name, "context"), name);
  require_close(out, ref.get(name, "out"), 1e-4, name);
  // Activations beside the 3.2 GiB of weights: skips are kept, everything else freed early.
  const double weights_gib = double(unet.num_parameters()) * 4 / (1 << 30);
  std::printf("  %-40s peak RSS %.2f GiB (weights %.2f GiB)\n", name, peak_rss_gb(), weights_gib);
  CHECK(peak_rss_gb() - weights_gib < 2.0);
}

TEST_CASE("unet: full-size SD1.5 U-Net, 64x64 batch 2 at t=981 (one CFG step at 512x512)", "[full]") {
  check_full_case("unet_64");
}

TEST_CASE("unet: full-size SD1.5 U-Net, 32x32 batch 1 at t=1", "[full]") { check_full_case("unet_32"); }

TEST_CASE("unet: full-size SD1.5 U-Net has 859,520,964 parameters", "[full]") {
  LDM_REQUIRE_REFERENCE(path, "ref_unet_full.safetensors");
  CHECK(full_unet().num_parameters() == 859520964);
}
