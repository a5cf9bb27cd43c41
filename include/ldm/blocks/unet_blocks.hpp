// diffusers.models.unets.unet_2d_blocks: CrossAttnDownBlock2D / DownBlock2D, UNetMidBlock2DCrossAttn,
// CrossAttnUpBlock2D / UpBlock2D — the stages of the SD1.5 U-Net (Rombach et al. 2022, fig. 3).
//
// A down block runs resnets (each followed by a spatial transformer in the CrossAttn variant),
// keeps every output as a skip for the decoder, then halves the resolution. An up block
// concatenates one skip onto its input before each resnet, then doubles the resolution.
// The plain and CrossAttn variants differ only in whether `attentions` is empty, so each pair
// is one struct here (the U-Net holds its blocks in one vector, any order of types).
#pragma once
#include <optional>
#include <string>
#include <vector>

#include "ldm/blocks/downsample.hpp"
#include "ldm/blocks/resnet_block.hpp"
#include "ldm/blocks/transformer_2d.hpp"
#include "ldm/blocks/upsample.hpp"

namespace ldm {

// What every U-Net block shares: time-embedding width, normalisation, attention shape.
struct UNetBlockArgs {
  int64_t temb_channels = 1280;        // block_out_channels[0] * 4
  int64_t groups = 32;                 // norm_num_groups
  float eps = 1e-5f;                   // norm_eps (the resnets; the transformers' norm uses 1e-6)
  int64_t heads = 8;                   // attention heads of this block (head dim = channels / heads)
  int64_t cross_attention_dim = 768;   // CLIP ViT-L/14 hidden size
  int64_t transformer_layers = 1;      // BasicTransformerBlocks per Transformer2DModel
  bool use_linear_projection = false;  // SD2.x: proj_in / proj_out are Linear, not 1x1 conv
};

// Transformer2DModel as the U-Net builds it. With use_linear_projection the checkpoint holds
// proj_in / proj_out as Linear weights [inner, C]; a Linear over the channels of each pixel is
// the same map as a 1x1 convolution, so they are loaded 2-d and viewed as [inner, C, 1, 1].
inline void load_unet_transformer(Transformer2DModel& m, WeightStore& w, const std::string& prefix, int64_t channels,
                                  const UNetBlockArgs& a) {
  LDM_CHECK(channels % a.heads == 0, "U-Net: ", channels, " channels do not split into ", a.heads,
            " attention heads (check attention_head_dim in the config)");
  const int64_t dim_head = channels / a.heads;
  m.use_linear_projection = a.use_linear_projection;
  if (!a.use_linear_projection) {
    m.load(w, prefix, channels, a.heads, dim_head, a.cross_attention_dim, a.groups, a.transformer_layers);
    return;
  }
  const int64_t inner = a.heads * dim_head;
  m.norm.load(w, join(prefix, "norm"), channels, a.groups, 1e-6f);
  m.proj_in.weight = w.get(join(prefix, "proj_in.weight"), {inner, channels}).reshape({inner, channels, 1, 1});
  m.proj_in.bias = w.get(join(prefix, "proj_in.bias"), {inner});
  m.transformer_blocks.resize(size_t(a.transformer_layers));
  for (int64_t i = 0; i < a.transformer_layers; ++i)
    m.transformer_blocks[size_t(i)].load(w, join(prefix, "transformer_blocks." + std::to_string(i)), inner, a.heads,
                                         dim_head, a.cross_attention_dim);
  m.proj_out.weight = w.get(join(prefix, "proj_out.weight"), {channels, inner}).reshape({channels, inner, 1, 1});
  m.proj_out.bias = w.get(join(prefix, "proj_out.bias"), {channels});
}

// CrossAttnDownBlock2D (with attentions) or DownBlock2D (attentions empty).
struct UNetDownBlock {
  std::vector<ResnetBlock2D> resnets;
  std::vector<Transformer2DModel> attentions;
  std::optional<Downsample2D> downsampler;  // downsamplers.0, absent in the last block

  void load(WeightStore& w, const std::string& prefix, int64_t in_channels, int64_t out_channels, int64_t num_layers,
            bool cross_attention, bool add_downsample, int downsample_padding, const UNetBlockArgs& a) {
    resnets.resize(size_t(num_layers));
    attentions.resize(cross_attention ? size_t(num_layers) : 0);
    for (int64_t i = 0; i < num_layers; ++i) {
      const std::string n = std::to_string(i);
      resnets[size_t(i)].load(w, join(prefix, "resnets." + n), i == 0 ? in_channels : out_channels, out_channels,
                              a.temb_channels, a.groups, a.eps);
      if (cross_attention)
        load_unet_transformer(attentions[size_t(i)], w, join(prefix, "attentions." + n), out_channels, a);
    }
    if (add_downsample) {
      downsampler.emplace();
      downsampler->load(w, join(prefix, "downsamplers.0"), out_channels, out_channels, downsample_padding);
    }
  }

  // h [B, in, H, W] -> [B, out, H/2, W/2] (H, W without a downsampler); appends every
  // intermediate output to `skips` for the up blocks.
  Tensor forward(Tensor h, const Tensor& temb, const Tensor& context, std::vector<Tensor>& skips) const {
    for (size_t i = 0; i < resnets.size(); ++i) {
      h = resnets[i].forward(h, temb);                                 // [B, out, H, W]
      if (!attentions.empty()) h = attentions[i].forward(h, context);  // [B, out, H, W]
      skips.push_back(h);
    }
    if (downsampler) {
      h = downsampler->forward(h);  // [B, out, H/2, W/2]
      skips.push_back(h);
    }
    return h;
  }

  // Training: each layer's saved inputs (the skips themselves are the next layers' inputs).
  struct Saved {
    std::vector<ResnetBlock2D::Saved> resnets;
    std::vector<Transformer2DModel::Saved> attentions;
    Tensor down_x;  // the downsampler's input [B, out, H, W]
  };
  Tensor forward(Tensor h, const Tensor& temb, const Tensor& context, std::vector<Tensor>& skips, Saved& s) const {
    s.resnets.resize(resnets.size());
    s.attentions.resize(attentions.size());
    for (size_t i = 0; i < resnets.size(); ++i) {
      h = resnets[i].forward(h, temb, s.resnets[i]);                                   // [B, out, H, W]
      if (!attentions.empty()) h = attentions[i].forward(h, context, s.attentions[i]);  // [B, out, H, W]
      skips.push_back(h);
    }
    if (downsampler) {
      s.down_x = h;
      h = downsampler->forward(h);  // [B, out, H/2, W/2]
      skips.push_back(h);
    }
    return h;
  }
  // dy [B, out, H/2, W/2] -> dx [B, in, H, W]. Every output the forward pushed onto `skips` has
  // its gradient at the back of `dskips` (the up blocks' backwards put them there), popped here
  // and added to the gradient that flows back through the block. Frees `s`.
  Tensor backward(Saved& s, const Tensor& dy, std::vector<Tensor>& dskips, Tensor* dtemb, Tensor* dcontext) {
    Tensor d = dy.clone();
    auto add_skip = [&] {
      LDM_CHECK(!dskips.empty(), "U-Net down block backward: no skip gradient left (down and up blocks do not match)");
      add_(d, dskips.back());
      dskips.pop_back();
    };
    if (downsampler) {
      add_skip();
      d = downsampler->backward(s.down_x, d);  // [B, out, H, W]
    }
    for (size_t i = resnets.size(); i-- > 0;) {
      add_skip();
      if (!attentions.empty()) d = attentions[i].backward(s.attentions[i], d, dcontext);
      d = resnets[i].backward(s.resnets[i], d, dtemb);  // [B, in or out, H, W]
    }
    s = Saved();
    return d;
  }

  void parameters(const std::string& prefix, std::vector<Parameter>& out) {
    for (size_t i = 0; i < resnets.size(); ++i) {
      resnets[i].parameters(join(prefix, "resnets." + std::to_string(i)), out);
      if (!attentions.empty()) attentions[i].parameters(join(prefix, "attentions." + std::to_string(i)), out);
    }
    if (downsampler) downsampler->parameters(join(prefix, "downsamplers.0"), out);
  }
};

// UNetMidBlock2DCrossAttn: resnet, then (transformer, resnet) per layer, at the lowest resolution.
struct UNetMidBlock2DCrossAttn {
  std::vector<ResnetBlock2D> resnets;          // num_layers + 1
  std::vector<Transformer2DModel> attentions;  // num_layers

  void load(WeightStore& w, const std::string& prefix, int64_t channels, const UNetBlockArgs& a,
            int64_t num_layers = 1) {
    resnets.resize(size_t(num_layers + 1));
    attentions.resize(size_t(num_layers));
    resnets[0].load(w, join(prefix, "resnets.0"), channels, channels, a.temb_channels, a.groups, a.eps);
    for (int64_t i = 0; i < num_layers; ++i) {
      load_unet_transformer(attentions[size_t(i)], w, join(prefix, "attentions." + std::to_string(i)), channels, a);
      resnets[size_t(i + 1)].load(w, join(prefix, "resnets." + std::to_string(i + 1)), channels, channels,
                                  a.temb_channels, a.groups, a.eps);
    }
  }

  // [B, C, H, W] -> same
  Tensor forward(Tensor h, const Tensor& temb, const Tensor& context) const {
    h = resnets[0].forward(h, temb);
    for (size_t i = 0; i < attentions.size(); ++i) {
      h = attentions[i].forward(h, context);
      h = resnets[i + 1].forward(h, temb);
    }
    return h;
  }

  // Training.
  struct Saved {
    std::vector<ResnetBlock2D::Saved> resnets;
    std::vector<Transformer2DModel::Saved> attentions;
  };
  Tensor forward(Tensor h, const Tensor& temb, const Tensor& context, Saved& s) const {
    s.resnets.resize(resnets.size());
    s.attentions.resize(attentions.size());
    h = resnets[0].forward(h, temb, s.resnets[0]);
    for (size_t i = 0; i < attentions.size(); ++i) {
      h = attentions[i].forward(h, context, s.attentions[i]);
      h = resnets[i + 1].forward(h, temb, s.resnets[i + 1]);
    }
    return h;
  }
  // dy [B, C, H, W] -> dx, same shape. Frees `s`.
  Tensor backward(Saved& s, Tensor d, Tensor* dtemb, Tensor* dcontext) {
    for (size_t i = attentions.size(); i-- > 0;) {
      d = resnets[i + 1].backward(s.resnets[i + 1], d, dtemb);
      d = attentions[i].backward(s.attentions[i], d, dcontext);
    }
    d = resnets[0].backward(s.resnets[0], d, dtemb);
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

// CrossAttnUpBlock2D (with attentions) or UpBlock2D (attentions empty). Resnet i takes the
// running features (prev_output_channels for the first, out_channels after) concatenated with
// one skip: the last resnet's skip comes from the down block below (in_channels), the others
// from the down block at the same level (out_channels).
struct UNetUpBlock {
  std::vector<ResnetBlock2D> resnets;
  std::vector<Transformer2DModel> attentions;
  std::optional<Upsample2D> upsampler;  // upsamplers.0, absent in the last block

  void load(WeightStore& w, const std::string& prefix, int64_t in_channels, int64_t out_channels,
            int64_t prev_output_channels, int64_t num_layers, bool cross_attention, bool add_upsample,
            const UNetBlockArgs& a) {
    resnets.resize(size_t(num_layers));
    attentions.resize(cross_attention ? size_t(num_layers) : 0);
    for (int64_t i = 0; i < num_layers; ++i) {
      const std::string n = std::to_string(i);
      const int64_t skip_channels = i == num_layers - 1 ? in_channels : out_channels;
      const int64_t resnet_in = i == 0 ? prev_output_channels : out_channels;
      resnets[size_t(i)].load(w, join(prefix, "resnets." + n), resnet_in + skip_channels, out_channels, a.temb_channels,
                              a.groups, a.eps);
      if (cross_attention)
        load_unet_transformer(attentions[size_t(i)], w, join(prefix, "attentions." + n), out_channels, a);
    }
    if (add_upsample) {
      upsampler.emplace();
      upsampler->load(w, join(prefix, "upsamplers.0"), out_channels, out_channels);
    }
  }

  // h [B, prev, H, W] -> [B, out, 2H, 2W] (H, W without an upsampler); pops one skip per resnet
  // from the back of `skips`, so each is freed as soon as it has been used.
  Tensor forward(Tensor h, const Tensor& temb, const Tensor& context, std::vector<Tensor>& skips) const {
    for (size_t i = 0; i < resnets.size(); ++i) {
      LDM_CHECK(!skips.empty(), "U-Net up block: no skip connection left (down and up blocks do not match)");
      h = cat_channels(h, skips.back());  // [B, C + C_skip, H, W]
      skips.pop_back();
      h = resnets[i].forward(h, temb);                                 // [B, out, H, W]
      if (!attentions.empty()) h = attentions[i].forward(h, context);  // [B, out, H, W]
    }
    if (upsampler) h = upsampler->forward(h);  // [B, out, 2H, 2W]
    return h;
  }

  // Training: each layer's saved inputs, and how many channels of each concatenation were
  // the running features (the rest were the skip).
  struct Saved {
    std::vector<ResnetBlock2D::Saved> resnets;
    std::vector<Transformer2DModel::Saved> attentions;
    std::vector<int64_t> h_channels;
    Tensor up_x;  // the upsampler's input [B, out, H, W]
  };
  Tensor forward(Tensor h, const Tensor& temb, const Tensor& context, std::vector<Tensor>& skips, Saved& s) const {
    s.resnets.resize(resnets.size());
    s.attentions.resize(attentions.size());
    s.h_channels.resize(resnets.size());
    for (size_t i = 0; i < resnets.size(); ++i) {
      LDM_CHECK(!skips.empty(), "U-Net up block: no skip connection left (down and up blocks do not match)");
      s.h_channels[i] = h.dim(1);
      h = cat_channels(h, skips.back());  // [B, C + C_skip, H, W]
      skips.pop_back();
      h = resnets[i].forward(h, temb, s.resnets[i]);                                   // [B, out, H, W]
      if (!attentions.empty()) h = attentions[i].forward(h, context, s.attentions[i]);  // [B, out, H, W]
    }
    if (upsampler) {
      s.up_x = h;
      h = upsampler->forward(h);  // [B, out, 2H, 2W]
    }
    return h;
  }
  // dy [B, out, 2H, 2W] -> dx [B, prev, H, W]; pushes each skip's gradient onto `dskips`, in the
  // reverse order of the forward's pops, so that dskips ends up in the order of `skips`. Frees `s`.
  Tensor backward(Saved& s, Tensor d, std::vector<Tensor>& dskips, Tensor* dtemb, Tensor* dcontext) {
    if (upsampler) d = upsampler->backward(s.up_x, d);  // [B, out, H, W]
    for (size_t i = resnets.size(); i-- > 0;) {
      if (!attentions.empty()) d = attentions[i].backward(s.attentions[i], d, dcontext);
      auto [dh, dskip] = split_channels(resnets[i].backward(s.resnets[i], d, dtemb), s.h_channels[i]);
      dskips.push_back(std::move(dskip));  // [B, C_skip, H, W]
      d = std::move(dh);                   // [B, C, H, W]
    }
    s = Saved();
    return d;
  }

  void parameters(const std::string& prefix, std::vector<Parameter>& out) {
    for (size_t i = 0; i < resnets.size(); ++i) {
      resnets[i].parameters(join(prefix, "resnets." + std::to_string(i)), out);
      if (!attentions.empty()) attentions[i].parameters(join(prefix, "attentions." + std::to_string(i)), out);
    }
    if (upsampler) upsampler->parameters(join(prefix, "upsamplers.0"), out);
  }
};

// ---- parameter counts (sum of numel; an absent bias counts 0)
inline int64_t num_params(const Linear& m) { return m.weight_numel() + m.bias.numel(); }
inline int64_t num_params(const Conv2d& m) { return m.weight_numel() + m.bias.numel(); }
inline int64_t num_params(const GroupNorm& m) { return m.weight.numel() + m.bias.numel(); }
inline int64_t num_params(const LayerNorm& m) { return m.weight.numel() + m.bias.numel(); }
inline int64_t num_params(const Attention& m) {
  return num_params(m.to_q) + num_params(m.to_k) + num_params(m.to_v) + num_params(m.to_out_0);
}
inline int64_t num_params(const BasicTransformerBlock& m) {
  return num_params(m.norm1) + num_params(m.attn1) + num_params(m.norm2) + num_params(m.attn2) + num_params(m.norm3) +
         num_params(m.ff.net_0_proj) + num_params(m.ff.net_2);
}
inline int64_t num_params(const Transformer2DModel& m) {
  int64_t n = num_params(m.norm) + num_params(m.proj_in) + num_params(m.proj_out);
  for (const auto& b : m.transformer_blocks) n += num_params(b);
  return n;
}
inline int64_t num_params(const ResnetBlock2D& m) {
  return num_params(m.norm1) + num_params(m.conv1) + num_params(m.norm2) + num_params(m.conv2) +
         (m.time_emb_proj ? num_params(*m.time_emb_proj) : 0) + (m.conv_shortcut ? num_params(*m.conv_shortcut) : 0);
}
template <typename Block>
int64_t num_params_of_stage(const Block& b) {
  int64_t n = 0;
  for (const auto& r : b.resnets) n += num_params(r);
  for (const auto& t : b.attentions) n += num_params(t);
  return n;
}
inline int64_t num_params(const UNetDownBlock& b) {
  return num_params_of_stage(b) + (b.downsampler ? num_params(b.downsampler->conv) : 0);
}
inline int64_t num_params(const UNetMidBlock2DCrossAttn& b) { return num_params_of_stage(b); }
inline int64_t num_params(const UNetUpBlock& b) {
  return num_params_of_stage(b) + (b.upsampler ? num_params(b.upsampler->conv) : 0);
}

}  // namespace ldm
