// The VAE stages on the GPU: DownEncoderBlock2D, UpDecoderBlock2D, UNetMidBlock2D (resnet ->
// single-head attention -> resnet). Twins of include/ldm/blocks/vae_blocks.hpp.
//
// forward takes its input by value: a caller that moves it in (h = block.forward(std::move(h)))
// lets the first resnet's output replace it, so a 512x512 decode holds few full-size
// activations at once (each [1, 128..256, 512, 512] is 128-256 MiB in fp32).
#pragma once
#include <optional>
#include <string>
#include <vector>

#include "ldm/blocks/vae_blocks.hpp"
#include "ldm/cuda/attention_blocks.hpp"
#include "ldm/cuda/conv_blocks.hpp"

namespace ldm::cuda {

// resnets (no time embedding), then a stride-2 conv with the asymmetric pad unless last.
struct DownEncoderBlock2D {
  std::vector<ResnetBlock2D> resnets;
  std::optional<Downsample2D> downsampler;

  void upload(const ldm::DownEncoderBlock2D& m, DType dtype) {
    upload_all(resnets, m.resnets, dtype);
    upload_optional(downsampler, m.downsampler, dtype);
  }
  void load(WeightStore& w, const std::string& prefix, int64_t in_channels, int64_t out_channels, int64_t num_layers,
            bool add_downsample, int64_t groups, DType dtype) {
    load_via_cpu<ldm::DownEncoderBlock2D>(*this, dtype, w, prefix, in_channels, out_channels, num_layers,
                                          add_downsample, groups);
  }
  // [B, in, H, W] -> [B, out, H/2, W/2]  (H, W without downsampler)
  DeviceTensor forward(DeviceTensor h) const {
    for (const auto& r : resnets) h = r.forward(h);
    if (downsampler) h = downsampler->forward(h);
    return h;
  }
};

// resnets (no time embedding), then nearest x2 + conv unless last.
struct UpDecoderBlock2D {
  std::vector<ResnetBlock2D> resnets;
  std::optional<Upsample2D> upsampler;

  void upload(const ldm::UpDecoderBlock2D& m, DType dtype) {
    upload_all(resnets, m.resnets, dtype);
    upload_optional(upsampler, m.upsampler, dtype);
  }
  void load(WeightStore& w, const std::string& prefix, int64_t in_channels, int64_t out_channels, int64_t num_layers,
            bool add_upsample, int64_t groups, DType dtype) {
    load_via_cpu<ldm::UpDecoderBlock2D>(*this, dtype, w, prefix, in_channels, out_channels, num_layers, add_upsample,
                                        groups);
  }
  // [B, in, H, W] -> [B, out, 2H, 2W]  (H, W without upsampler)
  DeviceTensor forward(DeviceTensor h) const {
    for (const auto& r : resnets) h = r.forward(h);
    if (upsampler) h = upsampler->forward(h);
    return h;
  }
};

// h = resnets.0(x); h = attentions.0(h); h = resnets.1(h)
struct UNetMidBlock2D {
  std::vector<ResnetBlock2D> resnets;    // 2
  std::vector<VAEAttention> attentions;  // 1

  void upload(const ldm::UNetMidBlock2D& m, DType dtype) {
    upload_all(resnets, m.resnets, dtype);
    upload_all(attentions, m.attentions, dtype);
  }
  void load(WeightStore& w, const std::string& prefix, int64_t channels, int64_t groups, DType dtype) {
    load_via_cpu<ldm::UNetMidBlock2D>(*this, dtype, w, prefix, channels, groups);
  }
  // [B, C, H, W] -> same
  DeviceTensor forward(DeviceTensor h) const {
    LDM_CHECK(!resnets.empty(), "cuda::UNetMidBlock2D: forward called before load()");
    h = resnets[0].forward(h);
    for (size_t i = 0; i < attentions.size(); ++i) {
      h = attentions[i].forward(h);  // self-attention over the H*W pixels
      h = resnets[i + 1].forward(h);
    }
    return h;
  }
};

}  // namespace ldm::cuda
