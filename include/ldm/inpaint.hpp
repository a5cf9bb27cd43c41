// The pieces of inpainting, as diffusers' StableDiffusionInpaintPipeline has them (pipeline.hpp
// puts them together):
//
//   mask      a picture, white = repaint: grayscale as PIL's convert("L"), then 1 where >= 0.5, else 0
//   masked    the init image (in [-1, 1]) with the part to repaint set to 0: image * (mask < 0.5)
//   9-channel U-Net (an inpainting checkpoint): its input is [z_t (4); mask at the latents' size (1);
//             the masked image's latents (4)], the mask taken by nearest neighbour (each 8x8
//             block's top-left pixel, torch's interpolate)
//   4-channel U-Net (any model): after each step the part to keep is put back, as the init
//             image's latents noised to the next step's level with the starting noise:
//             z = (1 - mask) * add_noise(z_image, noise, t_next) + mask * z    (z_image itself after the last)
#pragma once
#include <cmath>
#include <vector>

#include "ldm/core/tensor.hpp"

namespace ldm {

// An RGB picture [1, 3, H, W] in [0, 1] (8-bit values) -> the mask [1, 1, H, W] of 0 and 1.
inline Tensor mask_from_picture(const Tensor& rgb) {
  LDM_CHECK(rgb.ndim() == 4 && rgb.dim(0) == 1 && (rgb.dim(1) == 3 || rgb.dim(1) == 1),
            "inpainting mask: expected a picture [1, 3 or 1, H, W], got ", rgb.shape_str());
  const int64_t n = rgb.dim(2) * rgb.dim(3);
  Tensor m = Tensor::empty({1, 1, rgb.dim(2), rgb.dim(3)});
  auto byte = [](float v) { return int64_t(std::lround(std::fmin(std::fmax(v, 0.0f), 1.0f) * 255.0f)); };
  for (int64_t i = 0; i < n; ++i) {
    int64_t l;
    if (rgb.dim(1) == 1) {
      l = byte(rgb[i]);
    } else {  // PIL's ITU-R 601-2 luma, in its fixed point: L = (19595 R + 38470 G + 7471 B + 0x8000) >> 16
      l = (19595 * byte(rgb[i]) + 38470 * byte(rgb[n + i]) + 7471 * byte(rgb[2 * n + i]) + 0x8000) >> 16;
    }
    m[i] = float(l) / 255.0f >= 0.5f ? 1.0f : 0.0f;
  }
  return m;
}

// image [1, C, H, W] * (mask < 0.5): the part to repaint set to 0 (gray in [-1, 1]).
inline Tensor masked_image(const Tensor& image, const Tensor& mask) {
  const int64_t n = mask.numel();
  LDM_CHECK(image.numel() == image.dim(1) * n, "inpainting: the mask ", mask.shape_str(), " does not fit the image ",
            image.shape_str());
  Tensor r = image.clone();
  for (int64_t c = 0; c < image.dim(1); ++c)
    for (int64_t i = 0; i < n; ++i)
      if (!(mask[i] < 0.5f)) r[c * n + i] = 0.0f;
  return r;
}

// [B, C, H, W] -> [B, C, H/f, W/f], each f x f block's top-left value (torch interpolate, nearest).
inline Tensor downsample_nearest(const Tensor& x, int64_t f) {
  const int64_t BC = x.dim(0) * x.dim(1), H = x.dim(2), W = x.dim(3), h = H / f, w = W / f;
  Tensor r = Tensor::empty({x.dim(0), x.dim(1), h, w});
  for (int64_t p = 0; p < BC; ++p)
    for (int64_t y = 0; y < h; ++y)
      for (int64_t q = 0; q < w; ++q) r[(p * h + y) * w + q] = x[(p * H + y * f) * W + q * f];
  return r;
}

// [B, C_k, h, w] for each k -> [B, sum C_k, h, w].
inline Tensor cat_channels(const std::vector<Tensor>& parts) {
  const int64_t B = parts[0].dim(0), hw = parts[0].dim(2) * parts[0].dim(3);
  int64_t C = 0;
  for (const Tensor& t : parts) {
    LDM_CHECK(t.dim(0) == B && t.dim(2) * t.dim(3) == hw, "cat_channels: ", t.shape_str(), " does not fit ",
              parts[0].shape_str());
    C += t.dim(1);
  }
  Tensor r = Tensor::empty({B, C, parts[0].dim(2), parts[0].dim(3)});
  float* out = r.data();
  for (int64_t b = 0; b < B; ++b)
    for (const Tensor& t : parts) {
      const int64_t per = t.dim(1) * hw;
      std::copy(t.data() + b * per, t.data() + (b + 1) * per, out);
      out += per;
    }
  return r;
}

// z = (1 - mask) * kept + mask * z, mask [B, 1, h, w] over every channel of z [B, C, h, w].
inline void keep_unmasked(Tensor& z, const Tensor& kept, const Tensor& mask) {
  const int64_t B = z.dim(0), C = z.dim(1), hw = z.dim(2) * z.dim(3);
  for (int64_t b = 0; b < B; ++b)
    for (int64_t c = 0; c < C; ++c)
      for (int64_t i = 0; i < hw; ++i) {
        const float m = mask[b * hw + i];
        float& v = z[(b * C + c) * hw + i];
        v = (1.0f - m) * kept[(b * C + c) * hw + i] + m * v;
      }
}

}  // namespace ldm
