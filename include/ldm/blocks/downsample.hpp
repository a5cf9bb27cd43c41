// diffusers.models.downsampling.Downsample2D with use_conv: a 3x3 stride-2 convolution.
// padding=1 (U-Net) pads one pixel on every side; padding=0 (VAE encoder) pads only right
// and bottom (F.pad(x, (0, 1, 0, 1))), the asymmetric pad of the original LDM code.
#pragma once
#include "ldm/nn/conv2d.hpp"

namespace ldm {

struct Downsample2D {
  Conv2d conv;

  void load(WeightStore& w, const std::string& prefix, int64_t channels, int64_t out_channels, int padding = 1) {
    conv.load(w, join(prefix, "conv"), channels, out_channels, 3, 2, padding);
    if (padding == 0) conv.padding = Padding{0, 0, 1, 1};
  }
  // [B, C, H, W] -> [B, out, H/2, W/2]
  Tensor forward(const Tensor& x) const { return conv.forward(x); }

  // Training: saves the input x. dy [B, out, H/2, W/2] -> dx [B, C, H, W].
  Tensor backward(const Tensor& x, const Tensor& dy) { return conv.backward(x, dy); }
  void parameters(const std::string& prefix, std::vector<Parameter>& out) {
    conv.parameters(join(prefix, "conv"), out);
  }
};

}  // namespace ldm
