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

  // Training: saves the input x (the upsampled copy, 4x its size, is recomputed).
  // dy [B, out, 2H, 2W] -> dx [B, C, H, W].
  Tensor backward(const Tensor& x, const Tensor& dy) {
    return upsample_nearest2x_backward(conv.backward(upsample_nearest2x(x), dy));
  }
  void parameters(const std::string& prefix, std::vector<Parameter>& out) {
    conv.parameters(join(prefix, "conv"), out);
  }
};

}  // namespace ldm
