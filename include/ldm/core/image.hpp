// Images in and out: PNG/JPEG reading (stb_image), PNG writing with text chunks (stb_image_write
// plus tEXt chunks, where Stable Diffusion tools keep the generation parameters).
//
// In memory an image is float RGB: [B, 3, H, W] in [0, 1] (NCHW, as the VAE wants it after
// x * 2 - 1), or [B, H, W, 3] (HWC, as diffusers' output_type="np").
#pragma once
#include <map>
#include <string>
#include <vector>

#include "ldm/core/tensor.hpp"

namespace ldm {

// The largest image read_image takes: an 8K photo fits, a decompression bomb does not.
constexpr int kMaxImageSide = 16384;
constexpr int64_t kMaxImagePixels = int64_t(1) << 25;  // 33.5 Mpixels

// Reads PNG, JPEG, BMP, ... as RGB. -> [1, 3, H, W] in [0, 1]
Tensor read_image(const std::string& path);

// [H, W, 3] or [1, H, W, 3] in [0, 1] -> 8-bit PNG (rounded as diffusers' numpy_to_pil:
// (x * 255).round()), with each `text` entry as a tEXt chunk.
void write_png(const std::string& path, const Tensor& hwc, const std::map<std::string, std::string>& text = {});

// 8-bit RGB pixels -> PNG, for plots and colour maps.
void write_png_rgb8(const std::string& path, const std::vector<uint8_t>& rgb, int width, int height,
                    const std::map<std::string, std::string>& text = {});

// [B, 3, H, W] -> [B, H, W, 3] and back.
Tensor nchw_to_nhwc(const Tensor& x);
Tensor nhwc_to_nchw(const Tensor& x);

// The tEXt chunks of a PNG file (for tests and for reading parameters back).
std::map<std::string, std::string> read_png_text(const std::string& path);

}  // namespace ldm
