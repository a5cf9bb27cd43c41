// Padding of a convolution's input, per side (torch pads symmetrically; the SD VAE's stride-2
// downsampler pads only bottom and right). Shared by the CPU conv2d and the CUDA one.
#pragma once

namespace ldm {

struct Padding {
  int top = 0, left = 0, bottom = 0, right = 0;
  static Padding same(int p) { return {p, p, p, p}; }
};

}  // namespace ldm
