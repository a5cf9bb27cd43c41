// The U-Net stages on the GPU: CrossAttnDownBlock2D / DownBlock2D (UNetDownBlock),
// UNetMidBlock2DCrossAttn, CrossAttnUpBlock2D / UpBlock2D (UNetUpBlock). Twins of
// include/ldm/blocks/unet_blocks.hpp, which explains the skip connections; the block
// arguments (UNetBlockArgs) and the checkpoint layout come from there unchanged.
#pragma once
#include <optional>
#include <string>
#include <vector>

#include "ldm/blocks/unet_blocks.hpp"
#include "ldm/cuda/attention_blocks.hpp"
#include "ldm/cuda/conv_blocks.hpp"

namespace ldm::cuda {

// resnets (each followed by a spatial transformer when `attentions` is not empty), every
// output kept as a skip, then a stride-2 conv unless last.
struct UNetDownBlock {
  std::vector<ResnetBlock2D> resnets;
  std::vector<Transformer2DModel> attentions;
  std::optional<Downsample2D> downsampler;

  void upload(const ldm::UNetDownBlock& m, DType dtype) {
    upload_all(resnets, m.resnets, dtype);
    upload_all(attentions, m.attentions, dtype);
    upload_optional(downsampler, m.downsampler, dtype);
  }
  void load(WeightStore& w, const std::string& prefix, int64_t in_channels, int64_t out_channels, int64_t num_layers,
            bool cross_attention, bool add_downsample, int downsample_padding, const UNetBlockArgs& a, DType dtype) {
    load_via_cpu<ldm::UNetDownBlock>(*this, dtype, w, prefix, in_channels, out_channels, num_layers, cross_attention,
                                     add_downsample, downsample_padding, a);
  }

  // h [B, in, H, W] -> [B, out, H/2, W/2] (H, W without a downsampler); appends to `skips`.
  DeviceTensor forward(DeviceTensor h, const DeviceTensor& temb, const DeviceTensor& context,
                       std::vector<DeviceTensor>& skips) const {
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
};

// resnet, then (transformer, resnet) per layer, at the lowest resolution.
struct UNetMidBlock2DCrossAttn {
  std::vector<ResnetBlock2D> resnets;          // num_layers + 1
  std::vector<Transformer2DModel> attentions;  // num_layers

  void upload(const ldm::UNetMidBlock2DCrossAttn& m, DType dtype) {
    upload_all(resnets, m.resnets, dtype);
    upload_all(attentions, m.attentions, dtype);
  }
  void load(WeightStore& w, const std::string& prefix, int64_t channels, const UNetBlockArgs& a, int64_t num_layers,
            DType dtype) {
    load_via_cpu<ldm::UNetMidBlock2DCrossAttn>(*this, dtype, w, prefix, channels, a, num_layers);
  }

  // [B, C, H, W] -> same
  DeviceTensor forward(DeviceTensor h, const DeviceTensor& temb, const DeviceTensor& context) const {
    LDM_CHECK(!resnets.empty(), "cuda::UNetMidBlock2DCrossAttn: forward called before load()");
    h = resnets[0].forward(h, temb);
    for (size_t i = 0; i < attentions.size(); ++i) {
      h = attentions[i].forward(h, context);
      h = resnets[i + 1].forward(h, temb);
    }
    return h;
  }
};

// Each resnet eats the running features concatenated with one skip (popped from the back);
// then nearest x2 + conv unless last.
struct UNetUpBlock {
  std::vector<ResnetBlock2D> resnets;
  std::vector<Transformer2DModel> attentions;
  std::optional<Upsample2D> upsampler;

  void upload(const ldm::UNetUpBlock& m, DType dtype) {
    upload_all(resnets, m.resnets, dtype);
    upload_all(attentions, m.attentions, dtype);
    upload_optional(upsampler, m.upsampler, dtype);
  }
  void load(WeightStore& w, const std::string& prefix, int64_t in_channels, int64_t out_channels,
            int64_t prev_output_channels, int64_t num_layers, bool cross_attention, bool add_upsample,
            const UNetBlockArgs& a, DType dtype) {
    load_via_cpu<ldm::UNetUpBlock>(*this, dtype, w, prefix, in_channels, out_channels, prev_output_channels,
                                   num_layers, cross_attention, add_upsample, a);
  }

  // h [B, prev, H, W] -> [B, out, 2H, 2W] (H, W without an upsampler); pops one skip per
  // resnet, so each is freed as soon as it has been used.
  DeviceTensor forward(DeviceTensor h, const DeviceTensor& temb, const DeviceTensor& context,
                       std::vector<DeviceTensor>& skips) const {
    for (size_t i = 0; i < resnets.size(); ++i) {
      LDM_CHECK(!skips.empty(), "cuda::UNetUpBlock: no skip connection left (down and up blocks do not match)");
      h = cat_channels(h, skips.back());  // [B, C + C_skip, H, W]
      skips.pop_back();
      h = resnets[i].forward(h, temb);                                 // [B, out, H, W]
      if (!attentions.empty()) h = attentions[i].forward(h, context);  // [B, out, H, W]
    }
    if (upsampler) h = upsampler->forward(h);  // [B, out, 2H, 2W]
    return h;
  }
};

}  // namespace ldm::cuda
