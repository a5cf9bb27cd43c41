// The convolutional blocks on the GPU: TimestepEmbedding, ResnetBlock2D, Downsample2D,
// Upsample2D. Twins of include/ldm/blocks/{timestep_embedding,resnet_block,downsample,
// upsample}.hpp (read those for the diffusers formulas); weights come from the CPU blocks
// (cuda/modules.hpp explains upload / load).
#pragma once
#include <optional>
#include <string>

#include "ldm/blocks/downsample.hpp"
#include "ldm/blocks/resnet_block.hpp"
#include "ldm/blocks/timestep_embedding.hpp"
#include "ldm/blocks/upsample.hpp"
#include "ldm/cuda/modules.hpp"

namespace ldm::cuda {

// linear_1 -> SiLU -> linear_2. The sinusoidal embedding in front of it is the op
// cuda::timestep_embedding (the U-Net's time_proj, no weights).
struct TimestepEmbedding {
  Linear linear_1, linear_2;

  void upload(const ldm::TimestepEmbedding& m, DType dtype) {
    linear_1.upload(m.linear_1, dtype);
    linear_2.upload(m.linear_2, dtype);
  }
  void load(WeightStore& w, const std::string& prefix, int64_t in_channels, int64_t time_embed_dim, DType dtype) {
    load_via_cpu<ldm::TimestepEmbedding>(*this, dtype, w, prefix, in_channels, time_embed_dim);
  }
  // [N, in] -> [N, time_embed_dim]
  DeviceTensor forward(const DeviceTensor& x) const {
    DeviceTensor h = linear_1.forward(x);
    silu_(h);
    return linear_2.forward(h);
  }
};

// h = conv1(silu(norm1(x))) + time_emb_proj(silu(temb))[:, :, None, None]
// h = conv2(silu(norm2(h)));  out = shortcut(x) + h
struct ResnetBlock2D {
  GroupNorm norm1, norm2;
  Conv2d conv1, conv2;
  std::optional<Linear> time_emb_proj;  // absent in the VAE
  std::optional<Conv2d> conv_shortcut;  // present when in_channels != out_channels

  void upload(const ldm::ResnetBlock2D& m, DType dtype) {
    norm1.upload(m.norm1, dtype);
    conv1.upload(m.conv1, dtype);
    upload_optional(time_emb_proj, m.time_emb_proj, dtype);
    norm2.upload(m.norm2, dtype);
    conv2.upload(m.conv2, dtype);
    upload_optional(conv_shortcut, m.conv_shortcut, dtype);
  }
  // temb_channels 0: no time embedding.
  void load(WeightStore& w, const std::string& prefix, int64_t in_channels, int64_t out_channels,
            int64_t temb_channels, int64_t groups, float eps, DType dtype) {
    load_via_cpu<ldm::ResnetBlock2D>(*this, dtype, w, prefix, in_channels, out_channels, temb_channels, groups, eps);
  }

  // x [B, in, H, W], temb [B, temb_channels] (or undefined) -> [B, out, H, W]
  DeviceTensor forward(const DeviceTensor& x, const DeviceTensor& temb = DeviceTensor()) const {
    DeviceTensor h = conv1.forward(norm1.forward(x, /*fuse_silu=*/true));  // [B, out, H, W]
    if (time_emb_proj) {
      LDM_CHECK(temb.defined(), "cuda::ResnetBlock2D: this block needs a time embedding");
      LDM_CHECK(temb.ndim() == 2 && temb.dim(0) == x.dim(0), "cuda::ResnetBlock2D: expected temb [", x.dim(0),
                ", C] for input ", x.shape_str(), ", got ", temb.shape_str());
      add_channel_bias_(h, time_emb_proj->forward(silu(temb)));  // + [B, out, 1, 1]
    }
    h = conv2.forward(norm2.forward(h, /*fuse_silu=*/true));
    add_(h, conv_shortcut ? conv_shortcut->forward(x) : x);
    return h;
  }
};

// 3x3 stride-2 conv; the VAE's padding=0 form pads only right and bottom (set by the CPU load).
struct Downsample2D {
  Conv2d conv;

  void upload(const ldm::Downsample2D& m, DType dtype) { conv.upload(m.conv, dtype); }
  void load(WeightStore& w, const std::string& prefix, int64_t channels, int64_t out_channels, int padding,
            DType dtype) {
    load_via_cpu<ldm::Downsample2D>(*this, dtype, w, prefix, channels, out_channels, padding);
  }
  // [B, C, H, W] -> [B, out, H/2, W/2]
  DeviceTensor forward(const DeviceTensor& x) const { return conv.forward(x); }
};

// nearest-neighbour x2, then a 3x3 conv
struct Upsample2D {
  Conv2d conv;

  void upload(const ldm::Upsample2D& m, DType dtype) { conv.upload(m.conv, dtype); }
  void load(WeightStore& w, const std::string& prefix, int64_t channels, int64_t out_channels, DType dtype) {
    load_via_cpu<ldm::Upsample2D>(*this, dtype, w, prefix, channels, out_channels);
  }
  // [B, C, H, W] -> [B, out, 2H, 2W]
  DeviceTensor forward(const DeviceTensor& x) const { return conv.forward(upsample_nearest2x(x)); }
};

}  // namespace ldm::cuda
