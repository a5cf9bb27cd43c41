// Fitting a user's picture to the size a lesson runs at: crop the centre square, then resample
// with a triangle (bilinear) filter widened to the scale factor when shrinking, as PIL's
// Image.resize(..., BILINEAR) does, so that a downscaled photo does not alias.
#pragma once
#include <algorithm>
#include <cmath>
#include <vector>

#include "ldm/core/error.hpp"
#include "ldm/core/tensor.hpp"

namespace ldm::viz {

// One axis: out[i] = sum_j w_ij in[j * stride], for n_out samples from n_in.
inline void resample_line(const float* in, int64_t n_in, int64_t stride_in, float* out, int64_t n_out,
                          int64_t stride_out) {
  const double scale = double(n_in) / double(n_out), support = std::max(scale, 1.0);
  for (int64_t i = 0; i < n_out; ++i) {
    const double center = (double(i) + 0.5) * scale;
    const int64_t lo = std::max<int64_t>(0, int64_t(std::floor(center - support)));
    const int64_t hi = std::min<int64_t>(n_in, int64_t(std::ceil(center + support)));
    double acc = 0, wsum = 0;
    for (int64_t j = lo; j < hi; ++j) {
      const double w = std::max(0.0, 1.0 - std::abs((double(j) + 0.5 - center) / support));
      acc += w * in[j * stride_in], wsum += w;
    }
    out[i * stride_out] = float(wsum > 0 ? acc / wsum : in[std::min(int64_t(center), n_in - 1) * stride_in]);
  }
}

// [B, C, H, W] -> [B, C, size, size]: the centre square, resampled.
inline Tensor center_crop_resize(const Tensor& img, int64_t size) {
  LDM_CHECK(img.ndim() == 4, "center_crop_resize: expected [B, C, H, W], got ", img.shape_str());
  LDM_CHECK(size > 0, "center_crop_resize: size must be positive, got ", size);
  const int64_t B = img.dim(0), C = img.dim(1), H = img.dim(2), W = img.dim(3), side = std::min(H, W);
  const int64_t y0 = (H - side) / 2, x0 = (W - side) / 2;
  Tensor out = Tensor::empty({B, C, size, size});
  std::vector<float> tmp(size_t(side * size));  // rows of the crop, resampled along x
  for (int64_t p = 0; p < B * C; ++p) {
    const float* src = img.data() + p * H * W + y0 * W + x0;
    for (int64_t y = 0; y < side; ++y) resample_line(src + y * W, side, 1, tmp.data() + y * size, size, 1);
    float* dst = out.data() + p * size * size;
    for (int64_t x = 0; x < size; ++x) resample_line(tmp.data() + x, side, size, dst + x, size, size);
  }
  return out;
}

}  // namespace ldm::viz
