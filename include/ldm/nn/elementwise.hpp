// Small tensor operations the blocks need: adds, scaling, channel concatenation, layout
// changes between images [B, C, H, W] and token sequences [B, H*W, C], nearest upsampling.
#pragma once
#include <algorithm>

#include "ldm/core/tensor.hpp"

namespace ldm {

// a += b (same shape)
inline void add_(Tensor& a, const Tensor& b) {
  LDM_CHECK(a.shape() == b.shape(), "add: shapes ", a.shape_str(), " and ", b.shape_str(), " differ");
  a.vec() += b.vec();
}
inline Tensor add(const Tensor& a, const Tensor& b) {
  Tensor r = a.clone();
  add_(r, b);
  return r;
}
inline void scale_(Tensor& a, float s) { a.vec() *= s; }

// x [B, C, H, W] += v [B, C] broadcast over pixels (the time embedding added in a resnet)
inline void add_channel_bias_(Tensor& x, const Tensor& v) {
  const int64_t B = x.dim(0), C = x.dim(1), S = x.numel() / (B * C);
  LDM_CHECK(v.numel() == B * C, "add_channel_bias: ", v.shape_str(), " does not fit ", x.shape_str());
#pragma omp parallel for if (x.numel() > (1 << 15))
  for (int64_t bc = 0; bc < B * C; ++bc) Eigen::Map<Eigen::ArrayXf>(x.data() + bc * S, S) += v[bc];
}

// [B, C1, H, W] ++ [B, C2, H, W] -> [B, C1 + C2, H, W]  (torch.cat(dim=1), the U-Net skips)
inline Tensor cat_channels(const Tensor& a, const Tensor& b) {
  const int64_t B = a.dim(0), S = a.numel() / (B * a.dim(1));
  LDM_CHECK(b.dim(0) == B && b.numel() / (B * b.dim(1)) == S, "cat_channels: ", a.shape_str(), " and ", b.shape_str(),
            " differ in batch or size");
  Shape s = a.shape();
  s[1] = a.dim(1) + b.dim(1);
  Tensor r = Tensor::empty(s);
  const int64_t na = a.dim(1) * S, nb = b.dim(1) * S;
  for (int64_t i = 0; i < B; ++i) {
    std::copy(a.data() + i * na, a.data() + (i + 1) * na, r.data() + i * (na + nb));
    std::copy(b.data() + i * nb, b.data() + (i + 1) * nb, r.data() + i * (na + nb) + na);
  }
  return r;
}

// [B, C, H, W] -> [B, H*W, C]
inline Tensor image_to_tokens(const Tensor& x) {
  const int64_t B = x.dim(0), C = x.dim(1), S = x.dim(2) * x.dim(3);
  Tensor r = Tensor::empty({B, S, C});
  for (int64_t b = 0; b < B; ++b)
    r.slice0(b, b + 1).matrix(S, C) = x.slice0(b, b + 1).matrix(C, S).transpose();
  return r;
}

// [B, H*W, C] -> [B, C, H, W]
inline Tensor tokens_to_image(const Tensor& t, int64_t H, int64_t W) {
  const int64_t B = t.dim(0), S = t.dim(1), C = t.dim(2);
  LDM_CHECK(S == H * W, "tokens_to_image: ", S, " tokens are not a ", H, "x", W, " image");
  Tensor r = Tensor::empty({B, C, H, W});
  for (int64_t b = 0; b < B; ++b)
    r.slice0(b, b + 1).matrix(C, S) = t.slice0(b, b + 1).matrix(S, C).transpose();
  return r;
}

// Nearest-neighbour x2: [B, C, H, W] -> [B, C, 2H, 2W]  (F.interpolate(scale_factor=2, mode="nearest"))
inline Tensor upsample_nearest2x(const Tensor& x) {
  const int64_t BC = x.dim(0) * x.dim(1), H = x.dim(2), W = x.dim(3);
  Tensor r = Tensor::empty({x.dim(0), x.dim(1), 2 * H, 2 * W});
#pragma omp parallel for if (x.numel() > (1 << 15))
  for (int64_t c = 0; c < BC; ++c) {
    const float* s = x.data() + c * H * W;
    float* d = r.data() + c * 4 * H * W;
    for (int64_t y = 0; y < H; ++y) {
      float* row = d + 2 * y * 2 * W;
      for (int64_t xx = 0; xx < W; ++xx) row[2 * xx] = row[2 * xx + 1] = s[y * W + xx];
      std::copy(row, row + 2 * W, row + 2 * W);
    }
  }
  return r;
}

}  // namespace ldm
