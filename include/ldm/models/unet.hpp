// diffusers.models.unets.unet_2d_condition.UNet2DConditionModel: the SD1.5 denoiser
// eps_theta(z_t, t, c) (Rombach et al. 2022, eq. 2), 860M parameters.
//
//   t    -> sinusoidal embedding -> MLP                       temb [B, 1280]
//   z_t  -> conv_in -> 4 down blocks (keeping every output as a skip)
//        -> mid block -> 4 up blocks (each resnet eats one skip) -> norm, SiLU, conv_out
// The spatial transformers of the CrossAttn blocks attend to the text c (CLIP [B, 77, 768]).
// At 64x64 latents (512x512 images) the four levels run at 64, 32, 16 and 8 pixels with
// 320, 640, 1280 and 1280 channels.
//
//   UNet2DConditionModel unet;
//   WeightStore w(std::make_shared<SafeTensorsSource>("unet/diffusion_pytorch_model.safetensors"));
//   unet.load(w, "", UNetConfig::from_json(config_json));
//   w.finish();
//   Tensor eps = unet.forward(latents /*[2, 4, 64, 64]*/, 981.0f, text /*[2, 77, 768]*/);
#pragma once
#include <algorithm>
#include <limits>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "ldm/core/config_json.hpp"
#include "ldm/blocks/timestep_embedding.hpp"
#include "ldm/blocks/unet_blocks.hpp"

namespace ldm {

// Defaults are the SD1.5 unet/config.json. Per-block lists have one entry per down block
// (the up blocks use them reversed).
struct UNetConfig {
  int64_t sample_size = 64;          // latent size trained at (512 px / 8); informative only
  int64_t in_channels = 4;           // latent channels
  int64_t out_channels = 4;          // predicted noise has the latent's shape
  bool center_input_sample = false;  // sample = 2 * sample - 1 first
  bool flip_sin_to_cos = true;       // timestep embedding is [cos, sin]
  float freq_shift = 0.0f;           // downscale_freq_shift of the timestep frequencies
  std::vector<std::string> down_block_types = {"CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D",
                                               "DownBlock2D"};
  std::vector<std::string> up_block_types = {"UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D",
                                             "CrossAttnUpBlock2D"};
  std::vector<int64_t> block_out_channels = {320, 640, 1280, 1280};
  std::vector<int64_t> layers_per_block = {2, 2, 2, 2};  // resnets per down block (up blocks: + 1)
  int downsample_padding = 1;
  int64_t norm_num_groups = 32;
  float norm_eps = 1e-5f;
  int64_t cross_attention_dim = 768;  // CLIP ViT-L/14 hidden size (SD2.x: 1024, OpenCLIP ViT-H)
  // The number of attention HEADS per block, despite the name: diffusers passes
  // attention_head_dim as num_attention_heads (a historical misnomer kept for config.json
  // compatibility). SD1.5: 8 heads of 40/80/160/160; SD2.x: [5, 10, 20, 20], heads of 64.
  std::vector<int64_t> attention_head_dim = {8, 8, 8, 8};
  bool use_linear_projection = false;  // SD2.x: Linear proj_in / proj_out in the transformers
  std::vector<int64_t> transformer_layers_per_block = {1, 1, 1, 1};
  bool upcast_attention = false;  // SD2.1: softmax in float32; this CPU path is float32 anyway

  int64_t num_blocks() const { return int64_t(block_out_channels.size()); }
  int64_t time_embed_dim() const { return block_out_channels.at(0) * 4; }
  // Height and width must be multiples of this: each down block but the last halves them.
  int64_t size_multiple() const { return int64_t(1) << (num_blocks() - 1); }

  // Fields present override the SD1.5 defaults; `what` names the file in errors.
  static UNetConfig from_json(const nlohmann::json& j, const std::string& what = "U-Net config");
  // Every field within its range and the per-block lists consistent, before anything is allocated.
  void validate(const std::string& what = "U-Net config") const;
};

struct UNet2DConditionModel {
  using Config = UNetConfig;
  Config config;
  Conv2d conv_in;
  TimestepEmbedding time_embedding;  // time_proj (the sinusoidal embedding) has no weights
  std::vector<UNetDownBlock> down_blocks;
  UNetMidBlock2DCrossAttn mid_block;
  std::vector<UNetUpBlock> up_blocks;
  GroupNorm conv_norm_out;
  Conv2d conv_out;

  void load(WeightStore& w, const std::string& prefix, const UNetConfig& cfg = UNetConfig{}) {
    cfg.validate();
    config = cfg;
    const auto& ch = cfg.block_out_channels;
    const int64_t n = cfg.num_blocks();
    UNetBlockArgs a;
    a.temb_channels = cfg.time_embed_dim();
    a.groups = cfg.norm_num_groups;
    a.eps = cfg.norm_eps;
    a.cross_attention_dim = cfg.cross_attention_dim;
    a.use_linear_projection = cfg.use_linear_projection;

    conv_in.load(w, join(prefix, "conv_in"), cfg.in_channels, ch[0], 3, 1, 1);
    time_embedding.load(w, join(prefix, "time_embedding"), ch[0], cfg.time_embed_dim());

    down_blocks.resize(size_t(n));
    for (int64_t i = 0; i < n; ++i) {
      a.heads = cfg.attention_head_dim[size_t(i)];
      a.transformer_layers = cfg.transformer_layers_per_block[size_t(i)];
      down_blocks[size_t(i)].load(w, join(prefix, "down_blocks." + std::to_string(i)),
                                  i == 0 ? ch[0] : ch[size_t(i - 1)], ch[size_t(i)], cfg.layers_per_block[size_t(i)],
                                  cfg.down_block_types[size_t(i)] == "CrossAttnDownBlock2D",
                                  /*add_downsample=*/i < n - 1, cfg.downsample_padding, a);
    }

    a.heads = cfg.attention_head_dim.back();
    a.transformer_layers = cfg.transformer_layers_per_block.back();
    mid_block.load(w, join(prefix, "mid_block"), ch.back(), a);

    // Up block i works at the level of down block r = n-1-i, coming from the level below it.
    up_blocks.resize(size_t(n));
    for (int64_t i = 0; i < n; ++i) {
      const size_t r = size_t(n - 1 - i);
      a.heads = cfg.attention_head_dim[r];
      a.transformer_layers = cfg.transformer_layers_per_block[r];
      up_blocks[size_t(i)].load(w, join(prefix, "up_blocks." + std::to_string(i)), /*in=*/ch[r == 0 ? 0 : r - 1],
                                /*out=*/ch[r], /*prev_output=*/ch[std::min(r + 1, size_t(n - 1))],
                                cfg.layers_per_block[r] + 1, cfg.up_block_types[size_t(i)] == "CrossAttnUpBlock2D",
                                /*add_upsample=*/i < n - 1, a);
    }

    conv_norm_out.load(w, join(prefix, "conv_norm_out"), ch[0], cfg.norm_num_groups, cfg.norm_eps);
    conv_out.load(w, join(prefix, "conv_out"), ch[0], cfg.out_channels, 3, 1, 1);
    allow_auto_f43();
  }

  // Under ConvAlgo::automatic, the resnets' and upsamplers' 3x3 convolutions may use Winograd
  // F(4x4, 3x3) (nn/conv_algo.hpp): the U-Net's convolutions at 64x64 latents run 2.4-3.4x
  // faster than direct ones, for 0.27 GB of kept transformed weights (half in fp16 with fp16
  // weights); at 32x32 and 16x16 about 3x and 2.5x faster with the transform made in each call
  // (nothing kept); at 8x8 F(4x4) does not fit and they stay direct.
  void allow_auto_f43() {
    for_each_conv3x3(*this, [](Conv2d& c) { c.auto_f43 = true; });
  }

  // Lets the kept Winograd transforms go (remade by the next forward): for a U-Net not in use
  // (CpuModelRunner, while the VAE decodes).
  void drop_kept_transforms() const {
    for_each_conv3x3(*this, [](const Conv2d& c) { c.drop_kept_transform(); });
  }

  // f(conv) for the 3x3 convolutions that may keep a Winograd transform: the resnets' and the
  // upsamplers' (the others have too few channels, or stride 2).
  template <typename Self, typename F>
  static void for_each_conv3x3(Self& self, const F& f) {
    for (auto& b : self.down_blocks)
      for (auto& r : b.resnets) f(r.conv1), f(r.conv2);
    for (auto& r : self.mid_block.resnets) f(r.conv1), f(r.conv2);
    for (auto& b : self.up_blocks) {
      for (auto& r : b.resnets) f(r.conv1), f(r.conv2);
      if (b.upsampler) f(b.upsampler->conv);
    }
  }

  // sample [B, in, H, W] (H, W multiples of 8 for SD1.5), timesteps: one per batch item or a
  // single one for all, context [B, L, cross_attention_dim] -> predicted noise [B, out, H, W]
  Tensor forward(const Tensor& sample, const std::vector<float>& timesteps, const Tensor& context) const {
    check_inputs(sample, timesteps, context);
    const int64_t B = sample.dim(0);

    // 1. time: sinusoidal embedding of t, then the MLP
    std::vector<float> t = timesteps.size() == 1 ? std::vector<float>(size_t(B), timesteps[0]) : timesteps;
    Tensor t_emb = get_timestep_embedding(t, config.block_out_channels[0], config.flip_sin_to_cos,
                                          config.freq_shift);  // [B, 320]
    Tensor temb = time_embedding.forward(t_emb);               // [B, 1280]

    // 2. pre-process
    Tensor h = sample;
    if (config.center_input_sample) {
      h = sample.clone();
      h.vec().array() = 2.0f * h.vec().array() - 1.0f;
    }
    h = conv_in.forward(h);  // [B, 320, H, W]

    // 3. down, keeping every intermediate output as a skip (12 for SD1.5). At 64x64:
    //    [B, 320, 64, 64] -> [B, 320, 32, 32] -> [B, 640, 16, 16] -> [B, 1280, 8, 8] -> [B, 1280, 8, 8]
    std::vector<Tensor> skips{h};
    for (const auto& block : down_blocks) h = block.forward(h, temb, context, skips);

    // 4. mid
    h = mid_block.forward(h, temb, context);  // [B, 1280, H/8, W/8]

    // 5. up, each resnet concatenating the latest remaining skip on the channels:
    //    [B, 1280, 8, 8] -> [B, 1280, 16, 16] -> [B, 1280, 32, 32] -> [B, 640, 64, 64] -> [B, 320, 64, 64]
    for (const auto& block : up_blocks) h = block.forward(h, temb, context, skips);

    // 6. post-process
    h = conv_norm_out.forward(h, /*fuse_silu=*/true);  // [B, 320, H, W]
    return conv_out.forward(h);                        // [B, 4, H, W]
  }
  Tensor forward(const Tensor& sample, float timestep, const Tensor& context) const {
    return forward(sample, std::vector<float>{timestep}, context);
  }

  // ---- training: forward with saved activations, then backward (a vector-Jacobian product)
  struct Saved {
    TimestepEmbedding::Saved time_embedding;
    Tensor temb;  // [B, time_embed_dim]
    Tensor x;     // conv_in's input [B, in, H, W]
    std::vector<UNetDownBlock::Saved> down_blocks;
    UNetMidBlock2DCrossAttn::Saved mid_block;
    std::vector<UNetUpBlock::Saved> up_blocks;
    Tensor h;        // conv_norm_out's input [B, C0, H, W] (conv_out's input is recomputed from it)
    Tensor context;  // for its shape: a U-Net without cross-attention gives it a zero gradient
  };
  // As forward, keeping what backward needs in `s`. timesteps: one per batch item (training
  // draws one for each) or one for all.
  Tensor forward(const Tensor& sample, const std::vector<float>& timesteps, const Tensor& context, Saved& s) const {
    check_inputs(sample, timesteps, context);
    const int64_t B = sample.dim(0);
    std::vector<float> t = timesteps.size() == 1 ? std::vector<float>(size_t(B), timesteps[0]) : timesteps;
    const Tensor t_emb = get_timestep_embedding(t, config.block_out_channels[0], config.flip_sin_to_cos,
                                                config.freq_shift);  // [B, C0]
    s.temb = time_embedding.forward(t_emb, s.time_embedding);       // [B, 4 C0]
    s.x = sample, s.context = context;
    if (config.center_input_sample) {
      s.x = sample.clone();
      s.x.vec().array() = 2.0f * s.x.vec().array() - 1.0f;
    }
    Tensor h = conv_in.forward(s.x);  // [B, C0, H, W]
    std::vector<Tensor> skips{h};
    s.down_blocks.resize(down_blocks.size());
    s.up_blocks.resize(up_blocks.size());
    for (size_t i = 0; i < down_blocks.size(); ++i)
      h = down_blocks[i].forward(h, s.temb, context, skips, s.down_blocks[i]);
    h = mid_block.forward(h, s.temb, context, s.mid_block);
    for (size_t i = 0; i < up_blocks.size(); ++i) h = up_blocks[i].forward(h, s.temb, context, skips, s.up_blocks[i]);
    s.h = h;
    return conv_out.forward(conv_norm_out.forward(h, /*fuse_silu=*/true));  // [B, out, H, W]
  }

  struct Grad {
    Tensor sample;   // [B, in, H, W]
    Tensor context;  // [B, L, cross_attention_dim]
  };
  // d out [B, out, H, W] -> gradients of the sample and the context; every parameter's gradient
  // accumulates (train/parameter.hpp). The timesteps get none. Frees `s` as it goes.
  Grad backward(Saved& s, const Tensor& dout) {
    LDM_CHECK(s.h.defined(), "UNet2DConditionModel::backward: no saved activations (run forward(..., saved) first, ",
              "once per backward)");
    const Shape want{s.h.dim(0), config.out_channels, s.h.dim(2), s.h.dim(3)};
    LDM_CHECK(dout.shape() == want, "UNet2DConditionModel::backward: the output's gradient ", dout.shape_str(),
              " must have the output's shape ", shape_str(want));
    Tensor dtemb, dcontext;
    Tensor d = conv_norm_out.backward(s.h, conv_out.backward(conv_norm_out.forward(s.h, true), dout), true);
    s.h = Tensor();
    std::vector<Tensor> dskips;  // filled by the up blocks in the order of the forward's skips
    for (size_t i = up_blocks.size(); i-- > 0;) d = up_blocks[i].backward(s.up_blocks[i], d, dskips, &dtemb, &dcontext);
    d = mid_block.backward(s.mid_block, d, &dtemb, &dcontext);
    for (size_t i = down_blocks.size(); i-- > 0;)
      d = down_blocks[i].backward(s.down_blocks[i], d, dskips, &dtemb, &dcontext);
    LDM_CHECK(dskips.size() == 1, "UNet2DConditionModel::backward: ", dskips.size(), " skip gradients left, expected ",
              "conv_in's one (down and up blocks do not match)");
    add_(d, dskips[0]);  // conv_in's output was the first skip as well
    Grad g;
    g.sample = conv_in.backward(s.x, d);  // [B, in, H, W]
    if (config.center_input_sample) scale_(g.sample, 2.0f);
    time_embedding.backward(s.time_embedding, dtemb);  // the sinusoidal embedding before it has no parameters
    g.context = dcontext.defined() ? dcontext : Tensor(s.context.shape());  // no cross-attention block
    s = Saved();
    return g;
  }

  // Every parameter under its diffusers name (conv_in.weight, time_embedding.linear_1.weight, ...).
  void parameters(const std::string& prefix, std::vector<Parameter>& out) {
    conv_in.parameters(join(prefix, "conv_in"), out);
    time_embedding.parameters(join(prefix, "time_embedding"), out);
    for (size_t i = 0; i < down_blocks.size(); ++i)
      down_blocks[i].parameters(join(prefix, "down_blocks." + std::to_string(i)), out);
    mid_block.parameters(join(prefix, "mid_block"), out);
    for (size_t i = 0; i < up_blocks.size(); ++i)
      up_blocks[i].parameters(join(prefix, "up_blocks." + std::to_string(i)), out);
    conv_norm_out.parameters(join(prefix, "conv_norm_out"), out);
    conv_out.parameters(join(prefix, "conv_out"), out);
  }

  // Sum of the sizes of every weight tensor (859,520,964 for SD1.5).
  int64_t num_parameters() const {
    int64_t n = num_params(conv_in) + num_params(time_embedding.linear_1) + num_params(time_embedding.linear_2) +
                num_params(mid_block) + num_params(conv_norm_out) + num_params(conv_out);
    for (const auto& b : down_blocks) n += num_params(b);
    for (const auto& b : up_blocks) n += num_params(b);
    return n;
  }

 private:
  void check_inputs(const Tensor& sample, const std::vector<float>& timesteps, const Tensor& context) const {
    LDM_CHECK(conv_in.loaded(), "UNet2DConditionModel: forward called before load()");
    LDM_CHECK(sample.ndim() == 4, "UNet2DConditionModel: expected latents [B, ", config.in_channels, ", H, W], got ",
              sample.shape_str());
    const int64_t B = sample.dim(0), H = sample.dim(2), W = sample.dim(3), m = config.size_multiple();
    LDM_CHECK(B > 0, "UNet2DConditionModel: the batch of latents ", sample.shape_str(), " is empty");
    LDM_CHECK(sample.dim(1) == config.in_channels, "UNet2DConditionModel: expected latents with ", config.in_channels,
              " channels, got ", sample.shape_str(), " (pass the VAE latents, not the image)");
    LDM_CHECK(H > 0 && W > 0 && H % m == 0 && W % m == 0, "UNet2DConditionModel: latent height and width must be ",
              "multiples of ", m, " (the U-Net halves them ", config.num_blocks() - 1, " times), got ", H, "x", W,
              "; for SD1.5 choose an image size that is a multiple of ", 8 * m, " pixels");
    LDM_CHECK(timesteps.size() == 1 || int64_t(timesteps.size()) == B, "UNet2DConditionModel: got ", timesteps.size(),
              " timesteps for a batch of ", B, " (give one, or one per sample)");
    LDM_CHECK(context.ndim() == 3 && context.dim(0) == B && context.dim(2) == config.cross_attention_dim,
              "UNet2DConditionModel: expected text embeddings [", B, ", L, ", config.cross_attention_dim, "], got ",
              context.shape_str(), " (the batch must match the latents': for classifier-free guidance stack the ",
              "unconditional and the text embeddings)");
    LDM_CHECK(context.dim(1) > 0, "UNet2DConditionModel: the text embeddings ", context.shape_str(), " have no tokens");
  }
};

// ---- config.json

inline void UNetConfig::validate(const std::string& what) const {
  namespace lim = config_limits;
  const int64_t n = num_blocks();
  check_config_range(what, "number of block_out_channels", n, int64_t(1), lim::kBlocks);
  auto per_block = [&](const auto& v, const char* name) {
    LDM_CHECK(int64_t(v.size()) == n, what, ": ", name, " has ", v.size(), " entries for ", n,
              " blocks (one per block_out_channels entry)");
  };
  per_block(layers_per_block, "layers_per_block");
  per_block(attention_head_dim, "attention_head_dim");
  per_block(transformer_layers_per_block, "transformer_layers_per_block");
  per_block(down_block_types, "down_block_types");
  per_block(up_block_types, "up_block_types");
  check_config_range(what, "block_out_channels", block_out_channels, int64_t(1), lim::kWidth);
  check_config_range(what, "layers_per_block", layers_per_block, int64_t(1), lim::kLayers);
  check_config_range(what, "attention_head_dim", attention_head_dim, int64_t(1), lim::kWidth);
  check_config_range(what, "transformer_layers_per_block", transformer_layers_per_block, int64_t(1), lim::kLayers);
  check_config_range(what, "sample_size", sample_size, int64_t(1), lim::kSize);
  check_config_range(what, "in_channels", in_channels, int64_t(1), lim::kIO);
  check_config_range(what, "out_channels", out_channels, int64_t(1), lim::kIO);
  check_config_range(what, "cross_attention_dim", cross_attention_dim, int64_t(1), lim::kWidth);
  check_config_range(what, "downsample_padding", downsample_padding, 0, 1);
  check_config_range(what, "norm_num_groups", norm_num_groups, int64_t(1), lim::kWidth);
  check_config_range(what, "norm_eps", norm_eps, std::numeric_limits<float>::min(), 1.0f);
  // The timestep embedding divides by half its width minus the shift (0 or 1 in diffusers' models).
  check_config_range(what, "freq_shift", freq_shift, 0.0f, 1.0f);
  LDM_CHECK(float(block_out_channels[0] / 2) > freq_shift, what, ": block_out_channels[0] = ", block_out_channels[0],
            " is too small for a timestep embedding with freq_shift ", freq_shift);
  for (const auto& t : down_block_types)
    LDM_CHECK(t == "CrossAttnDownBlock2D" || t == "DownBlock2D", what, ": down block type \"", t,
              "\" is not supported (use CrossAttnDownBlock2D or DownBlock2D)");
  for (const auto& t : up_block_types)
    LDM_CHECK(t == "CrossAttnUpBlock2D" || t == "UpBlock2D", what, ": up block type \"", t,
              "\" is not supported (use CrossAttnUpBlock2D or UpBlock2D)");
  for (int64_t i = 0; i < n; ++i) {
    const int64_t c = block_out_channels[size_t(i)], heads = attention_head_dim[size_t(i)];
    LDM_CHECK(c % norm_num_groups == 0, what, ": block_out_channels[", i, "] = ", c,
              " channels do not split into norm_num_groups = ", norm_num_groups);
    // Level i has attention in its down block, its up block (n-1-i) or, for the last, the mid block.
    const bool attention = down_block_types[size_t(i)] == "CrossAttnDownBlock2D" ||
                           up_block_types[size_t(n - 1 - i)] == "CrossAttnUpBlock2D" || i == n - 1;
    LDM_CHECK(!attention || c % heads == 0, what, ": block_out_channels[", i, "] = ", c,
              " channels do not split into attention_head_dim[", i, "] = ", heads, " attention heads");
  }
}

inline UNetConfig UNetConfig::from_json(const nlohmann::json& j, const std::string& what) {
  LDM_CHECK(j.is_object(), what, ": expected a JSON object, got ", j.type_name());
  UNetConfig c;
  auto read = [&](const char* key, auto& field) { read_config(j, key, field, what); };
  // A number means the same value for every block; a list gives one per block.
  auto read_per_block = [&](const char* key, std::vector<int64_t>& field) {
    auto it = j.find(key);
    if (it == j.end() || it->is_null()) return;
    if (it->is_number()) {
      int64_t v = 0;
      read(key, v);
      field.assign(c.block_out_channels.size(), v);
    } else {
      read(key, field);
    }
  };
  // Features of other diffusers U-Nets (SDXL, class conditioning, ...) that this one lacks:
  // refuse them rather than compute something else.
  auto require = [&](const char* key, const nlohmann::json& expected) {
    auto it = j.find(key);
    if (it == j.end() || it->is_null() || *it == expected) return;
    LDM_FAIL(what, ": ", key, " = ", it->dump(), " is not supported (only ", expected.dump(),
             ", the SD1.x/2.x U-Net)");
  };
  for (const char* key :
       {"class_embed_type", "addition_embed_type", "encoder_hid_dim", "encoder_hid_dim_type", "time_cond_proj_dim",
        "timestep_post_act", "num_class_embeds", "time_embedding_dim", "time_embedding_act_fn", "cross_attention_norm",
        "addition_time_embed_dim", "projection_class_embeddings_input_dim", "num_attention_heads",
        "reverse_transformer_layers_per_block"})
    require(key, nullptr);
  require("act_fn", "silu");
  require("mid_block_type", "UNetMidBlock2DCrossAttn");
  require("time_embedding_type", "positional");
  require("resnet_time_scale_shift", "default");
  require("attention_type", "default");
  require("only_cross_attention", false);
  require("dual_cross_attention", false);
  require("resnet_skip_time_act", false);
  require("class_embeddings_concat", false);
  require("conv_in_kernel", 3);
  require("conv_out_kernel", 3);
  require("mid_block_scale_factor", 1);
  require("resnet_out_scale_factor", 1);
  auto it = j.find("cross_attention_dim");
  LDM_CHECK(it == j.end() || !it->is_array(), what, ": a per-block cross_attention_dim is not supported");

  // block_out_channels first: it sets how many entries the per-block fields have.
  read("block_out_channels", c.block_out_channels);
  const size_t n = c.block_out_channels.size();
  c.layers_per_block.assign(n, 2);
  c.attention_head_dim.assign(n, 8);
  c.transformer_layers_per_block.assign(n, 1);
  read("sample_size", c.sample_size);
  read("in_channels", c.in_channels);
  read("out_channels", c.out_channels);
  read("center_input_sample", c.center_input_sample);
  read("flip_sin_to_cos", c.flip_sin_to_cos);
  read("freq_shift", c.freq_shift);
  read("down_block_types", c.down_block_types);
  read("up_block_types", c.up_block_types);
  read_per_block("layers_per_block", c.layers_per_block);
  read("downsample_padding", c.downsample_padding);
  read("norm_num_groups", c.norm_num_groups);
  read("norm_eps", c.norm_eps);
  read("cross_attention_dim", c.cross_attention_dim);
  read_per_block("attention_head_dim", c.attention_head_dim);
  read("use_linear_projection", c.use_linear_projection);
  read_per_block("transformer_layers_per_block", c.transformer_layers_per_block);
  read("upcast_attention", c.upcast_attention);
  c.validate(what);
  return c;
}

}  // namespace ldm
