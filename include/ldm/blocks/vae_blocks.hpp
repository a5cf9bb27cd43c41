// diffusers.models.unets.unet_2d_blocks.DownEncoderBlock2D, UpDecoderBlock2D and UNetMidBlock2D,
// in the form the KL-VAE (diffusers.models.autoencoders.vae.Encoder / Decoder) builds them:
// resnets without a time embedding (GroupNorm eps 1e-6), a VAE downsample with the asymmetric
// pad (padding=0), and a mid block of resnet -> single-head attention -> resnet.
//
// forward takes its input by value: a caller that moves it in (h = block.forward(std::move(h)))
// lets the block free it as soon as the first resnet is done. At 512x512 an activation is
// 128-256 MiB, so this is what keeps a decode within a small memory budget.
#pragma once
#include <optional>
#include <vector>

#include "ldm/blocks/attention.hpp"
#include "ldm/blocks/downsample.hpp"
#include "ldm/blocks/resnet_block.hpp"
#include "ldm/blocks/upsample.hpp"

namespace ldm {

constexpr float kVAENormEps = 1e-6f;  // every GroupNorm of the VAE (resnet_eps, attention eps, conv_norm_out)

// num_layers resnets (in -> out, then out -> out), then a stride-2 conv unless last.
struct DownEncoderBlock2D {
  std::vector<ResnetBlock2D> resnets;
  std::optional<Downsample2D> downsampler;  // downsamplers.0, absent in the last block

  void load(WeightStore& w, const std::string& prefix, int64_t in_channels, int64_t out_channels, int64_t num_layers,
            bool add_downsample, int64_t groups) {
    resnets.resize(size_t(num_layers));
    for (int64_t i = 0; i < num_layers; ++i)
      resnets[size_t(i)].load(w, join(prefix, "resnets." + std::to_string(i)), i == 0 ? in_channels : out_channels,
                              out_channels, /*temb_channels=*/0, groups, kVAENormEps);
    if (add_downsample) {
      downsampler.emplace();
      downsampler->load(w, join(prefix, "downsamplers.0"), out_channels, out_channels, /*padding=*/0);
    }
  }

  // [B, in, H, W] -> [B, out, H/2, W/2]  (H, W without downsampler)
  Tensor forward(Tensor h) const {
    for (const auto& r : resnets) h = r.forward(h);  // [B, out, H, W]
    if (downsampler) h = downsampler->forward(h);    // [B, out, H/2, W/2]
    return h;
  }

  // Training.
  struct Saved {
    std::vector<ResnetBlock2D::Saved> resnets;
    Tensor down_x;  // the downsampler's input [B, out, H, W]
  };
  Tensor forward(Tensor h, Saved& s) const {
    s.resnets.resize(resnets.size());
    for (size_t i = 0; i < resnets.size(); ++i) h = resnets[i].forward(h, Tensor(), s.resnets[i]);
    if (downsampler) {
      s.down_x = h;
      h = downsampler->forward(h);
    }
    return h;
  }
  // dy [B, out, H/2, W/2] -> dx [B, in, H, W]. Frees `s`.
  Tensor backward(Saved& s, Tensor d) {
    if (downsampler) d = downsampler->backward(s.down_x, d);
    for (size_t i = resnets.size(); i-- > 0;) d = resnets[i].backward(s.resnets[i], d);
    s = Saved();
    return d;
  }
  void parameters(const std::string& prefix, std::vector<Parameter>& out) {
    for (size_t i = 0; i < resnets.size(); ++i)
      resnets[i].parameters(join(prefix, "resnets." + std::to_string(i)), out);
    if (downsampler) downsampler->parameters(join(prefix, "downsamplers.0"), out);
  }
};

// num_layers resnets (in -> out, then out -> out), then nearest x2 + conv unless last.
struct UpDecoderBlock2D {
  std::vector<ResnetBlock2D> resnets;
  std::optional<Upsample2D> upsampler;  // upsamplers.0, absent in the last block

  void load(WeightStore& w, const std::string& prefix, int64_t in_channels, int64_t out_channels, int64_t num_layers,
            bool add_upsample, int64_t groups) {
    resnets.resize(size_t(num_layers));
    for (int64_t i = 0; i < num_layers; ++i)
      resnets[size_t(i)].load(w, join(prefix, "resnets." + std::to_string(i)), i == 0 ? in_channels : out_channels,
                              out_channels, /*temb_channels=*/0, groups, kVAENormEps);
    if (add_upsample) {
      upsampler.emplace();
      upsampler->load(w, join(prefix, "upsamplers.0"), out_channels, out_channels);
    }
  }

  // [B, in, H, W] -> [B, out, 2H, 2W]  (H, W without upsampler)
  Tensor forward(Tensor h) const {
    for (const auto& r : resnets) h = r.forward(h);  // [B, out, H, W]
    if (upsampler) h = upsampler->forward(h);        // [B, out, 2H, 2W]
    return h;
  }

  // Training.
  struct Saved {
    std::vector<ResnetBlock2D::Saved> resnets;
    Tensor up_x;  // the upsampler's input [B, out, H, W]
  };
  Tensor forward(Tensor h, Saved& s) const {
    s.resnets.resize(resnets.size());
    for (size_t i = 0; i < resnets.size(); ++i) h = resnets[i].forward(h, Tensor(), s.resnets[i]);
    if (upsampler) {
      s.up_x = h;
      h = upsampler->forward(h);
    }
    return h;
  }
  // dy [B, out, 2H, 2W] -> dx [B, in, H, W]. Frees `s`.
  Tensor backward(Saved& s, Tensor d) {
    if (upsampler) d = upsampler->backward(s.up_x, d);
    for (size_t i = resnets.size(); i-- > 0;) d = resnets[i].backward(s.resnets[i], d);
    s = Saved();
    return d;
  }
  void parameters(const std::string& prefix, std::vector<Parameter>& out) {
    for (size_t i = 0; i < resnets.size(); ++i)
      resnets[i].parameters(join(prefix, "resnets." + std::to_string(i)), out);
    if (upsampler) upsampler->parameters(join(prefix, "upsamplers.0"), out);
  }
};

// The VAE's UNetMidBlock2D (temb None, one attention layer with a single head of all channels):
//   h = resnets.0(x); h = attentions.0(h); h = resnets.1(h)
struct UNetMidBlock2D {
  std::vector<ResnetBlock2D> resnets;    // 2
  std::vector<VAEAttention> attentions;  // 1

  void load(WeightStore& w, const std::string& prefix, int64_t channels, int64_t groups) {
    resnets.resize(2);
    attentions.resize(1);
    resnets[0].load(w, join(prefix, "resnets.0"), channels, channels, 0, groups, kVAENormEps);
    attentions[0].load(w, join(prefix, "attentions.0"), channels, groups, kVAENormEps);
    resnets[1].load(w, join(prefix, "resnets.1"), channels, channels, 0, groups, kVAENormEps);
  }

  // [B, C, H, W] -> same
  Tensor forward(Tensor h) const {
    h = resnets[0].forward(h);
    for (size_t i = 0; i < attentions.size(); ++i) {
      h = attentions[i].forward(h);  // self-attention over the H*W pixels
      h = resnets[i + 1].forward(h);
    }
    return h;
  }

  // Training.
  struct Saved {
    std::vector<ResnetBlock2D::Saved> resnets;
    std::vector<VAEAttention::Saved> attentions;
  };
  Tensor forward(Tensor h, Saved& s) const {
    s.resnets.resize(resnets.size());
    s.attentions.resize(attentions.size());
    h = resnets[0].forward(h, Tensor(), s.resnets[0]);
    for (size_t i = 0; i < attentions.size(); ++i) {
      h = attentions[i].forward(h, s.attentions[i]);
      h = resnets[i + 1].forward(h, Tensor(), s.resnets[i + 1]);
    }
    return h;
  }
  // dy [B, C, H, W] -> dx, same shape. Frees `s`.
  Tensor backward(Saved& s, Tensor d) {
    for (size_t i = attentions.size(); i-- > 0;) {
      d = resnets[i + 1].backward(s.resnets[i + 1], d);
      d = attentions[i].backward(s.attentions[i], d);
    }
    d = resnets[0].backward(s.resnets[0], d);
    s = Saved();
    return d;
  }
  void parameters(const std::string& prefix, std::vector<Parameter>& out) {
    resnets[0].parameters(join(prefix, "resnets.0"), out);
    for (size_t i = 0; i < attentions.size(); ++i) {
      attentions[i].parameters(join(prefix, "attentions." + std::to_string(i)), out);
      resnets[i + 1].parameters(join(prefix, "resnets." + std::to_string(i + 1)), out);
    }
  }
};

}  // namespace ldm
