// Small tensor operations the blocks need: adds, scaling, channel concatenation, layout
// changes between images [B, C, H, W] and token sequences [B, H*W, C], nearest upsampling;
// and their backwards (image_to_tokens and tokens_to_image are each other's).
#pragma once
#include <algorithm>
#include <utility>

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

// Backward of add_channel_bias_ for v: dy [B, C, H, W] -> dv [B, C], dy summed over each channel's
// pixels (the gradient of x is dy itself). Saves nothing.
inline Tensor channel_sums(const Tensor& dy) {
  const int64_t B = dy.dim(0), C = dy.dim(1), S = dy.numel() / (B * C);
  Tensor dv = Tensor::empty({B, C});
  dv.vec() = dy.matrix(B * C, S).rowwise().sum();
  return dv;
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

// Backward of cat_channels (and the forward of torch.split(dim=1) in two): [B, C1 + C2, H, W] ->
// ([B, C1, H, W], [B, C2, H, W]), the first C1 channels and the rest. Saves nothing but C1.
inline std::pair<Tensor, Tensor> split_channels(const Tensor& x, int64_t c1) {
  LDM_CHECK(x.ndim() >= 2 && c1 >= 0 && c1 <= x.dim(1), "split_channels: cannot take ", c1, " channels off ",
            x.shape_str());
  const int64_t B = x.dim(0), C = x.dim(1), S = x.numel() / std::max<int64_t>(B * C, 1);
  Shape sa = x.shape(), sb = x.shape();
  sa[1] = c1;
  sb[1] = C - c1;
  Tensor a = Tensor::empty(sa), b = Tensor::empty(sb);
  const int64_t na = c1 * S, nb = (C - c1) * S;
  for (int64_t i = 0; i < B; ++i) {
    std::copy_n(x.data() + i * (na + nb), na, a.data() + i * na);
    std::copy_n(x.data() + i * (na + nb) + na, nb, b.data() + i * nb);
  }
  return {a, b};
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

// Backward of upsample_nearest2x: dy [B, C, 2H, 2W] -> dx [B, C, H, W], each input pixel's
// gradient the sum over the 2x2 block it was copied to. Saves nothing.
inline Tensor upsample_nearest2x_backward(const Tensor& dy) {
  LDM_CHECK(dy.ndim() == 4 && dy.dim(2) % 2 == 0 && dy.dim(3) % 2 == 0,
            "upsample_nearest2x_backward: expected [B, C, 2H, 2W], got ", dy.shape_str());
  const int64_t BC = dy.dim(0) * dy.dim(1), H = dy.dim(2) / 2, W = dy.dim(3) / 2;
  Tensor dx = Tensor::empty({dy.dim(0), dy.dim(1), H, W});
#pragma omp parallel for if (dy.numel() > (1 << 15))
  for (int64_t c = 0; c < BC; ++c) {
    const float* s = dy.data() + c * 4 * H * W;
    float* d = dx.data() + c * H * W;
    for (int64_t y = 0; y < H; ++y) {
      const float* r0 = s + 2 * y * 2 * W;
      const float* r1 = r0 + 2 * W;
      for (int64_t xx = 0; xx < W; ++xx) d[y * W + xx] = (r0[2 * xx] + r0[2 * xx + 1]) + (r1[2 * xx] + r1[2 * xx + 1]);
    }
  }
  return dx;
}

}  // namespace ldm
