// diffusers.models.autoencoders.autoencoder_kl.AutoencoderKL: the KL-regularised autoencoder
// of latent diffusion (Rombach et al. 2022, sec. 3.1), SD1.5's "first stage". An image
// [B, 3, H, W] in [-1, 1] maps to a diagonal Gaussian over latents [B, 4, H/8, W/8]
// (encode), and a latent maps back to an image (decode).
//
//   encode: moments = quant_conv(encoder(x));  mean, logvar = moments.chunk(2, dim=1)
//   decode: image   = decoder(post_quant_conv(z))
//
// The diffusion model works on z * scaling_factor (about unit variance, so that the noise
// schedule fits the latents as it fits images in [-1, 1]). That scaling is the pipeline's
// job, not decode's:  image = vae.decode(latents / scaling_factor).
//
// Loading follows the WeightStore pattern: load() asks for every tensor, the caller then
// calls w.finish() to hear about anything missing or mis-shaped, all at once:
//   WeightStore w(std::make_shared<SafeTensorsSource>("vae/diffusion_pytorch_model.safetensors"));
//   AutoencoderKL vae;
//   vae.load(w, "", VAEConfig::from_json(config_json));
//   w.finish(true);
#pragma once
#include <cmath>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "ldm/core/config_json.hpp"
#include "ldm/blocks/vae_blocks.hpp"
#include "ldm/nn/activations.hpp"

namespace ldm {

// Defaults are the SD1.5 vae/config.json (runwayml/stable-diffusion-v1-5).
struct VAEConfig {
  int64_t in_channels = 3;                                         // RGB image in
  int64_t out_channels = 3;                                        // RGB image out
  std::vector<int64_t> block_out_channels = {128, 256, 512, 512};  // per resolution; f = 2^(n-1) = 8
  int64_t layers_per_block = 2;                                    // resnets per encoder block (decoder: + 1)
  int64_t latent_channels = 4;                                     // z channels
  int64_t norm_num_groups = 32;                                    // GroupNorm groups everywhere
  double scaling_factor = 0.18215;  // z * scaling_factor has ~unit variance (applied by the pipeline)
  int64_t sample_size = 512;        // image size the VAE was trained at

  // Spatial factor between image and latent: 8 for SD1.5.
  int64_t downscale_factor() const { return int64_t(1) << (block_out_channels.size() - 1); }

  // Fills the fields present in a diffusers vae/config.json on top of the SD1.5 defaults, and
  // rejects the variants this implementation does not build (other block types, activations,
  // no quant convs, no mid-block attention). Other keys (force_upcast, _class_name, ...) are ignored.
  // `what` names the file in errors.
  static VAEConfig from_json(const nlohmann::json& j, const std::string& what = "VAE config");

  // Every field within its range, before anything is allocated.
  void validate(const std::string& what = "VAE config") const {
    namespace lim = config_limits;
    check_config_range(what, "number of block_out_channels", int64_t(block_out_channels.size()), int64_t(1),
                       lim::kBlocks);
    check_config_range(what, "block_out_channels", block_out_channels, int64_t(1), lim::kWidth);
    check_config_range(what, "in_channels", in_channels, int64_t(1), lim::kIO);
    check_config_range(what, "out_channels", out_channels, int64_t(1), lim::kIO);
    check_config_range(what, "latent_channels", latent_channels, int64_t(1), lim::kIO);
    check_config_range(what, "layers_per_block", layers_per_block, int64_t(1), lim::kLayers);
    check_config_range(what, "norm_num_groups", norm_num_groups, int64_t(1), lim::kWidth);
    check_config_range(what, "sample_size", sample_size, int64_t(1), lim::kSize);
    check_config_range(what, "scaling_factor", scaling_factor, 1e-6, 1e6);
    for (size_t i = 0; i < block_out_channels.size(); ++i)
      LDM_CHECK(block_out_channels[i] % norm_num_groups == 0, what, ": block_out_channels[", i, "] = ",
                block_out_channels[i], " must be a multiple of norm_num_groups = ", norm_num_groups);
  }
};

inline VAEConfig VAEConfig::from_json(const nlohmann::json& j, const std::string& what) {
  LDM_CHECK(j.is_object(), what, ": expected a JSON object, got ", j.type_name());
  VAEConfig c;
  auto read = [&](const char* key, auto& field) { read_config(j, key, field, what); };
  read("in_channels", c.in_channels);
  read("out_channels", c.out_channels);
  read("block_out_channels", c.block_out_channels);
  read("layers_per_block", c.layers_per_block);
  read("latent_channels", c.latent_channels);
  read("norm_num_groups", c.norm_num_groups);
  read("scaling_factor", c.scaling_factor);
  read("sample_size", c.sample_size);

  // What the SD1.x/2.x KL-VAE is; anything else is a different model.
  auto require = [&](const char* key, const nlohmann::json& want) {
    auto it = j.find(key);
    if (it == j.end() || it->is_null()) return;
    LDM_CHECK(*it == want, what, ": ", key, " = ", it->dump(), " is not supported (this AutoencoderKL builds ",
              want.dump(), ")");
  };
  const size_t n = c.block_out_channels.size();
  require("down_block_types", std::vector<std::string>(n, "DownEncoderBlock2D"));
  require("up_block_types", std::vector<std::string>(n, "UpDecoderBlock2D"));
  require("act_fn", "silu");
  require("use_quant_conv", true);
  require("use_post_quant_conv", true);
  require("mid_block_add_attention", true);
  c.validate(what);
  return c;
}

// The posterior q(z | x) = N(mean, exp(logvar)), per latent element
// (diffusers.models.autoencoders.vae.DiagonalGaussianDistribution).
struct DiagonalGaussian {
  Tensor mean, logvar;  // [B, latent_channels, h, w]; logvar clamped to [-30, 20]

  // moments [B, 2*C, h, w] -> mean = channels [0, C), logvar = channels [C, 2C)
  static DiagonalGaussian from_moments(const Tensor& moments) {
    LDM_CHECK(moments.ndim() == 4 && moments.dim(1) % 2 == 0, "DiagonalGaussian: expected moments [B, 2C, h, w], got ",
              moments.shape_str());
    const int64_t B = moments.dim(0), C = moments.dim(1) / 2, n = C * moments.dim(2) * moments.dim(3);
    DiagonalGaussian g;
    g.mean = Tensor::empty({B, C, moments.dim(2), moments.dim(3)});
    g.logvar = Tensor::empty(g.mean.shape());
    for (int64_t b = 0; b < B; ++b) {
      const float* m = moments.data() + b * 2 * n;
      std::copy(m, m + n, g.mean.data() + b * n);
      std::transform(m + n, m + 2 * n, g.logvar.data() + b * n, [](float v) { return std::clamp(v, -30.0f, 20.0f); });
    }
    return g;
  }

  // exp(0.5 * logvar)
  Tensor std() const {
    Tensor s = Tensor::empty(logvar.shape());
    s.vec() = (0.5f * logvar.vec().array()).exp().matrix();
    return s;
  }
  // mean + std * noise, noise ~ N(0, 1) of the latent's shape (the pipeline's generator draws it)
  Tensor sample(const Tensor& noise) const {
    LDM_CHECK(noise.shape() == mean.shape(), "DiagonalGaussian::sample: noise ", noise.shape_str(),
              " must have the latent's shape ", mean.shape_str());
    Tensor z = std();
    z.vec() = (z.vec().array() * noise.vec().array() + mean.vec().array()).matrix();
    return z;
  }
  // The most likely latent: the mean.
  Tensor mode() const { return mean.clone(); }

  // diffusers' kl() to N(0, I): per sample, 0.5 * sum over [C, h, w] of (mean^2 + var - 1 - logvar) -> [B]
  Tensor kl() const {
    const int64_t B = mean.dim(0), n = mean.numel() / B;
    Tensor out = Tensor::empty({B});
    for (int64_t b = 0; b < B; ++b) {
      Eigen::Map<const Eigen::ArrayXf> m(mean.data() + b * n, n), lv(logvar.data() + b * n, n);
      out[b] = float(0.5 * (m.square() + lv.exp() - 1.0f - lv).cast<double>().sum());
    }
    return out;
  }

  // Backwards, to the mean and the (clamped) logvar; from_moments_backward carries them to the moments.
  struct Grad {
    Tensor mean, logvar;  // [B, C, h, w]
  };
  // sample(noise): saves the noise. dz -> dmean = dz, dlogvar = dz * 0.5 * std * noise
  Grad sample_backward(const Tensor& noise, const Tensor& dz) const {
    LDM_CHECK(noise.shape() == mean.shape() && dz.shape() == mean.shape(), "DiagonalGaussian::sample_backward: noise ",
              noise.shape_str(), " and gradient ", dz.shape_str(), " must have the latent's shape ", mean.shape_str());
    Grad g{dz.clone(), std()};
    g.logvar.vec() = (0.5f * g.logvar.vec().array() * noise.vec().array() * dz.vec().array()).matrix();
    return g;
  }
  // kl(): dkl [B] -> dmean = dkl * mean, dlogvar = dkl * 0.5 * (var - 1)
  Grad kl_backward(const Tensor& dkl) const {
    const int64_t B = mean.dim(0), n = mean.numel() / B;
    LDM_CHECK(dkl.numel() == B, "DiagonalGaussian::kl_backward: expected one gradient per sample (", B, "), got ",
              dkl.shape_str());
    Grad g{Tensor::empty(mean.shape()), Tensor::empty(mean.shape())};
    for (int64_t b = 0; b < B; ++b) {
      Eigen::Map<const Eigen::ArrayXf> m(mean.data() + b * n, n), lv(logvar.data() + b * n, n);
      Eigen::Map<Eigen::ArrayXf>(g.mean.data() + b * n, n) = dkl[b] * m;
      Eigen::Map<Eigen::ArrayXf>(g.logvar.data() + b * n, n) = dkl[b] * 0.5f * (lv.exp() - 1.0f);
    }
    return g;
  }
  // from_moments: saves the moments [B, 2C, h, w]. The logvar's gradient passes the clamp only
  // where the moment lay strictly inside (-30, 20): torch.clamp with scalar bounds gives 0 at a
  // bound itself (checked on torch 2.15, tests/test_nn_backward.cpp plants a logvar of 20).
  static Tensor from_moments_backward(const Tensor& moments, const Grad& g) {
    const int64_t B = moments.dim(0), n = moments.numel() / (2 * B);
    LDM_CHECK(g.mean.numel() == B * n && g.logvar.numel() == B * n, "DiagonalGaussian::from_moments_backward: ",
              "gradients ", g.mean.shape_str(), " and ", g.logvar.shape_str(), " do not fit moments ",
              moments.shape_str());
    Tensor d = Tensor::empty(moments.shape());
    for (int64_t b = 0; b < B; ++b) {
      const float* m = moments.data() + b * 2 * n;
      std::copy_n(g.mean.data() + b * n, n, d.data() + b * 2 * n);
      for (int64_t i = 0; i < n; ++i)
        d[b * 2 * n + n + i] = m[n + i] > -30.0f && m[n + i] < 20.0f ? g.logvar[b * n + i] : 0.0f;
    }
    return d;
  }
};

// diffusers.models.autoencoders.vae.Encoder (double_z): image -> Gaussian moments.
struct Encoder {
  Conv2d conv_in;
  std::vector<DownEncoderBlock2D> down_blocks;
  UNetMidBlock2D mid_block;
  GroupNorm conv_norm_out;
  Conv2d conv_out;

  void load(WeightStore& w, const std::string& prefix, const VAEConfig& c) {
    const auto& ch = c.block_out_channels;
    const int64_t n = int64_t(ch.size()), G = c.norm_num_groups;
    conv_in.load(w, join(prefix, "conv_in"), c.in_channels, ch[0], 3, 1, 1);
    down_blocks.resize(size_t(n));
    for (int64_t i = 0; i < n; ++i)
      down_blocks[size_t(i)].load(w, join(prefix, "down_blocks." + std::to_string(i)), ch[size_t(i == 0 ? 0 : i - 1)],
                                  ch[size_t(i)], c.layers_per_block, /*add_downsample=*/i < n - 1, G);
    mid_block.load(w, join(prefix, "mid_block"), ch.back(), G);
    conv_norm_out.load(w, join(prefix, "conv_norm_out"), ch.back(), G, kVAENormEps);
    conv_out.load(w, join(prefix, "conv_out"), ch.back(), 2 * c.latent_channels, 3, 1, 1);
  }

  // [B, 3, H, W] -> [B, 2*latent_channels, H/8, W/8]   (SD1.5 channel counts below)
  Tensor forward(const Tensor& x) const {
    Tensor h = conv_in.forward(x);                                        // [B, 128, H, W]
    for (const auto& down : down_blocks) h = down.forward(std::move(h));  // [B, 512, H/8, W/8]
    h = mid_block.forward(std::move(h));                                  // [B, 512, H/8, W/8]
    h = conv_norm_out.forward(h, /*fuse_silu=*/true);                     // conv_norm_out, conv_act
    return conv_out.forward(h);                                           // [B, 8, H/8, W/8]
  }

  // Training.
  struct Saved {
    Tensor x;  // [B, 3, H, W]
    std::vector<DownEncoderBlock2D::Saved> down_blocks;
    UNetMidBlock2D::Saved mid_block;
    Tensor h;  // conv_norm_out's input [B, 512, H/8, W/8]
  };
  Tensor forward(const Tensor& x, Saved& s) const {
    s.x = x;
    s.down_blocks.resize(down_blocks.size());
    Tensor h = conv_in.forward(x);
    for (size_t i = 0; i < down_blocks.size(); ++i) h = down_blocks[i].forward(std::move(h), s.down_blocks[i]);
    s.h = mid_block.forward(std::move(h), s.mid_block);
    return conv_out.forward(conv_norm_out.forward(s.h, /*fuse_silu=*/true));
  }
  // d moments [B, 8, H/8, W/8] -> d x [B, 3, H, W]. Frees `s`.
  Tensor backward(Saved& s, const Tensor& dy) {
    Tensor d = conv_norm_out.backward(s.h, conv_out.backward(conv_norm_out.forward(s.h, true), dy), true);
    s.h = Tensor();
    d = mid_block.backward(s.mid_block, std::move(d));
    for (size_t i = down_blocks.size(); i-- > 0;) d = down_blocks[i].backward(s.down_blocks[i], std::move(d));
    d = conv_in.backward(s.x, d);
    s = Saved();
    return d;
  }
  void parameters(const std::string& prefix, std::vector<Parameter>& out) {
    conv_in.parameters(join(prefix, "conv_in"), out);
    for (size_t i = 0; i < down_blocks.size(); ++i)
      down_blocks[i].parameters(join(prefix, "down_blocks." + std::to_string(i)), out);
    mid_block.parameters(join(prefix, "mid_block"), out);
    conv_norm_out.parameters(join(prefix, "conv_norm_out"), out);
    conv_out.parameters(join(prefix, "conv_out"), out);
  }
};

// diffusers.models.autoencoders.vae.Decoder: latent -> image. Its up blocks run the channel
// list in reverse (512, 512, 256, 128), each with layers_per_block + 1 resnets.
struct Decoder {
  Conv2d conv_in;
  UNetMidBlock2D mid_block;
  std::vector<UpDecoderBlock2D> up_blocks;
  GroupNorm conv_norm_out;
  Conv2d conv_out;

  void load(WeightStore& w, const std::string& prefix, const VAEConfig& c) {
    const std::vector<int64_t> rev(c.block_out_channels.rbegin(), c.block_out_channels.rend());
    const int64_t n = int64_t(rev.size()), G = c.norm_num_groups;
    conv_in.load(w, join(prefix, "conv_in"), c.latent_channels, rev[0], 3, 1, 1);
    mid_block.load(w, join(prefix, "mid_block"), rev[0], G);
    up_blocks.resize(size_t(n));
    for (int64_t i = 0; i < n; ++i)
      up_blocks[size_t(i)].load(w, join(prefix, "up_blocks." + std::to_string(i)), rev[size_t(i == 0 ? 0 : i - 1)],
                                rev[size_t(i)], c.layers_per_block + 1, /*add_upsample=*/i < n - 1, G);
    conv_norm_out.load(w, join(prefix, "conv_norm_out"), rev.back(), G, kVAENormEps);
    conv_out.load(w, join(prefix, "conv_out"), rev.back(), c.out_channels, 3, 1, 1);
    allow_auto_f43();
  }

  // Under ConvAlgo::automatic, the 3x3 convolutions with at least 128 channels in and out may use
  // Winograd F(4x4, 3x3) (nn/conv_algo.hpp): SD1.5's decode 64 -> 512 takes 9.2 -> 6.7 s on the
  // 2-core AMD EPYC, for 0.57 GB of kept transformed weights (half that in fp16 with fp16 weights). Smaller
  // decoders (ldm-shapes': 32-64 channels) keep F(2x2) as before, in inference and training.
  void allow_auto_f43() {
    auto set = [](Conv2d& c) { c.auto_f43 = c.in_channels() >= 128 && c.out_channels() >= 128; };
    for (auto& r : mid_block.resnets) set(r.conv1), set(r.conv2);
    for (auto& b : up_blocks) {
      for (auto& r : b.resnets) set(r.conv1), set(r.conv2);
      if (b.upsampler) set(b.upsampler->conv);
    }
  }

  // [B, 4, h, w] -> [B, 3, 8h, 8w]   (SD1.5 channel counts below)
  Tensor forward(const Tensor& z) const {
    Tensor h = conv_in.forward(z);                                  // [B, 512, h, w]
    h = mid_block.forward(std::move(h));                            // [B, 512, h, w]
    for (const auto& up : up_blocks) h = up.forward(std::move(h));  // [B, 128, 8h, 8w]
    h = conv_norm_out.forward(h, /*fuse_silu=*/true);               // conv_norm_out, conv_act
    return conv_out.forward(h);                                     // [B, 3, 8h, 8w]
  }

  // Training.
  struct Saved {
    Tensor z;  // [B, 4, h, w]
    UNetMidBlock2D::Saved mid_block;
    std::vector<UpDecoderBlock2D::Saved> up_blocks;
    Tensor h;  // conv_norm_out's input [B, 128, 8h, 8w]
  };
  Tensor forward(const Tensor& z, Saved& s) const {
    s.z = z;
    s.up_blocks.resize(up_blocks.size());
    Tensor h = mid_block.forward(conv_in.forward(z), s.mid_block);
    for (size_t i = 0; i < up_blocks.size(); ++i) h = up_blocks[i].forward(std::move(h), s.up_blocks[i]);
    s.h = h;
    return conv_out.forward(conv_norm_out.forward(h, /*fuse_silu=*/true));
  }
  // d image [B, 3, 8h, 8w] -> d z [B, 4, h, w]. Frees `s`.
  Tensor backward(Saved& s, const Tensor& dy) {
    Tensor d = conv_norm_out.backward(s.h, conv_out.backward(conv_norm_out.forward(s.h, true), dy), true);
    s.h = Tensor();
    for (size_t i = up_blocks.size(); i-- > 0;) d = up_blocks[i].backward(s.up_blocks[i], std::move(d));
    d = mid_block.backward(s.mid_block, std::move(d));
    d = conv_in.backward(s.z, d);
    s = Saved();
    return d;
  }
  void parameters(const std::string& prefix, std::vector<Parameter>& out) {
    conv_in.parameters(join(prefix, "conv_in"), out);
    mid_block.parameters(join(prefix, "mid_block"), out);
    for (size_t i = 0; i < up_blocks.size(); ++i)
      up_blocks[i].parameters(join(prefix, "up_blocks." + std::to_string(i)), out);
    conv_norm_out.parameters(join(prefix, "conv_norm_out"), out);
    conv_out.parameters(join(prefix, "conv_out"), out);
  }
};

struct AutoencoderKL {
  VAEConfig config;
  Encoder encoder;
  Decoder decoder;
  Conv2d quant_conv;       // 1x1, 2*latent -> 2*latent
  Conv2d post_quant_conv;  // 1x1, latent -> latent

  // The checkpoint-name prefixes of the two halves (train/parameter.hpp parameters_under): the
  // image -> latent half, and the latent -> image half a decoder-only fine-tune trains.
  static std::vector<std::string> encoder_prefixes() { return {"encoder.", "quant_conv."}; }
  static std::vector<std::string> decoder_prefixes() { return {"decoder.", "post_quant_conv."}; }

  // Asks `w` for every tensor under `prefix` ("" for a vae/ folder file, "first_stage_model"
  // style prefixes need a name mapping first); call w.finish() afterwards.
  void load(WeightStore& w, const std::string& prefix, const VAEConfig& c = VAEConfig{}) {
    c.validate();
    config = c;
    encoder.load(w, join(prefix, "encoder"), c);
    decoder.load(w, join(prefix, "decoder"), c);
    quant_conv.load(w, join(prefix, "quant_conv"), 2 * c.latent_channels, 2 * c.latent_channels, 1);
    post_quant_conv.load(w, join(prefix, "post_quant_conv"), c.latent_channels, c.latent_channels, 1);
  }

  // image [B, 3, H, W] in [-1, 1] -> q(z | image) over [B, 4, H/8, W/8]
  DiagonalGaussian encode(const Tensor& image) const {
    LDM_CHECK(image.ndim() == 4 && image.dim(1) == config.in_channels, "AutoencoderKL::encode: expected an image [B, ",
              config.in_channels, ", H, W] with values in [-1, 1], got ", image.shape_str());
    const int64_t f = config.downscale_factor();
    LDM_CHECK(image.dim(0) > 0, "AutoencoderKL::encode: the batch ", image.shape_str(), " is empty");
    LDM_CHECK(image.dim(2) >= f && image.dim(3) >= f, "AutoencoderKL::encode: the image ", image.shape_str(),
              " is smaller than the VAE's downscale factor ", f);
    Tensor moments = per_image(image, [this](const Tensor& x) {
      return quant_conv.forward(encoder.forward(x));  // [1, 8, H/8, W/8]
    });
    return DiagonalGaussian::from_moments(moments);  // [B, 4, H/8, W/8] twice
  }

  // latent [B, 4, h, w], already divided by scaling_factor -> image [B, 3, 8h, 8w], about [-1, 1]
  Tensor decode(const Tensor& latent) const {
    LDM_CHECK(
        latent.ndim() == 4 && latent.dim(1) == config.latent_channels, "AutoencoderKL::decode: expected a latent [B, ",
        config.latent_channels, ", h, w], got ", latent.shape_str(),
        latent.ndim() == 4 && latent.dim(1) == config.in_channels ? " (an image? decode takes latents; use encode)"
                                                                  : "");
    LDM_CHECK(latent.dim(0) > 0, "AutoencoderKL::decode: the batch ", latent.shape_str(), " is empty");
    LDM_CHECK(latent.dim(2) > 0 && latent.dim(3) > 0, "AutoencoderKL::decode: the latent ", latent.shape_str(),
              " has no pixels");
    return per_image(latent, [this](const Tensor& z) {
      return decoder.forward(post_quant_conv.forward(z));  // [1, 3, 8h, 8w]
    });
  }

  // ---- training: the whole batch at once (no per-image slicing), activations kept for backward
  struct EncodeSaved {
    Encoder::Saved encoder;
    Tensor h;        // quant_conv's input [B, 2 latent, h, w]
    Tensor moments;  // [B, 2 latent, h, w], before the logvar clamp
  };
  // image [B, 3, H, W] -> q(z | image), as encode.
  DiagonalGaussian encode(const Tensor& image, EncodeSaved& s) const {
    LDM_CHECK(image.ndim() == 4 && image.dim(1) == config.in_channels && image.dim(0) > 0, "AutoencoderKL::encode: ",
              "expected an image [B, ", config.in_channels, ", H, W], got ", image.shape_str());
    const int64_t f = config.downscale_factor();
    LDM_CHECK(image.dim(2) >= f && image.dim(3) >= f, "AutoencoderKL::encode: the image ", image.shape_str(),
              " is smaller than the VAE's downscale factor ", f);
    s.h = encoder.forward(image, s.encoder);
    s.moments = quant_conv.forward(s.h);
    return DiagonalGaussian::from_moments(s.moments);
  }
  // Gradients of the mean and the (clamped) logvar -> d image [B, 3, H, W]; the encoder's and
  // quant_conv's parameter gradients accumulate. Frees `s`.
  Tensor encode_backward(EncodeSaved& s, const DiagonalGaussian::Grad& g) {
    LDM_CHECK(s.moments.defined(), "AutoencoderKL::encode_backward: no saved activations (run encode(image, saved) ",
              "first, once per backward)");
    const Tensor dm = DiagonalGaussian::from_moments_backward(s.moments, g);  // [B, 2 latent, h, w]
    const Tensor dx = encoder.backward(s.encoder, quant_conv.backward(s.h, dm));
    s = EncodeSaved();
    return dx;
  }

  struct DecodeSaved {
    Tensor z;  // post_quant_conv's input [B, latent, h, w]
    Decoder::Saved decoder;
  };
  // latent [B, 4, h, w] -> image [B, 3, 8h, 8w], as decode.
  Tensor decode(const Tensor& latent, DecodeSaved& s) const {
    LDM_CHECK(latent.ndim() == 4 && latent.dim(1) == config.latent_channels && latent.dim(0) > 0,
              "AutoencoderKL::decode: expected a latent [B, ", config.latent_channels, ", h, w], got ",
              latent.shape_str());
    s.z = latent;
    return decoder.forward(post_quant_conv.forward(latent), s.decoder);
  }
  // d image [B, 3, 8h, 8w] -> d latent [B, 4, h, w]; the decoder's and post_quant_conv's
  // parameter gradients accumulate. Frees `s`.
  Tensor decode_backward(DecodeSaved& s, const Tensor& dimage) {
    LDM_CHECK(s.z.defined(), "AutoencoderKL::decode_backward: no saved activations (run decode(latent, saved) ",
              "first, once per backward)");
    const Tensor dz = post_quant_conv.backward(s.z, decoder.backward(s.decoder, dimage));
    s = DecodeSaved();
    return dz;
  }

  // Every parameter under its diffusers name: encoder.*, decoder.*, quant_conv.*, post_quant_conv.*
  void parameters(const std::string& prefix, std::vector<Parameter>& out) {
    encoder.parameters(join(prefix, "encoder"), out);
    decoder.parameters(join(prefix, "decoder"), out);
    quant_conv.parameters(join(prefix, "quant_conv"), out);
    post_quant_conv.parameters(join(prefix, "post_quant_conv"), out);
  }

 private:
  // f on each image of the batch, results stacked: [B, ...] -> [B, ...]. One image at a time
  // (diffusers' enable_slicing) keeps the peak memory of a 512x512 decode (~0.7 GiB of
  // activations) independent of the batch size, at no cost in speed: every layer treats
  // the images of a batch independently, and the convolutions loop over them anyway.
  template <typename F>
  static Tensor per_image(const Tensor& x, F f) {
    Tensor out;
    for (int64_t b = 0; b < x.dim(0); ++b) {
      Tensor y = f(x.slice0(b, b + 1));
      if (!out.defined()) {
        Shape s = y.shape();
        s[0] = x.dim(0);
        out = Tensor::empty(s);
      }
      std::copy(y.begin(), y.end(), out.slice0(b, b + 1).begin());
    }
    return out;
  }
};

}  // namespace ldm
