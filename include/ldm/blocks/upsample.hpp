// diffusers.models.upsampling.Upsample2D with use_conv: nearest-neighbour x2, then a 3x3 conv.
#pragma once
#include "ldm/nn/conv2d.hpp"
#include "ldm/nn/elementwise.hpp"

namespace ldm {

struct Upsample2D {
  Conv2d conv;

  void load(WeightStore& w, const std::string& prefix, int64_t channels, int64_t out_channels) {
    conv.load(w, join(prefix, "conv"), channels, out_channels, 3, 1, 1);
  }
  // [B, C, H, W] -> [B, out, 2H, 2W]
  Tensor forward(const Tensor& x) const { return conv.forward(upsample_nearest2x(x)); }
};

}  // namespace ldm
