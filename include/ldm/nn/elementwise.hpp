// Small tensor operations the blocks need: adds, scaling, channel concatenation, layout
// changes between images [B, C, H, W] and token sequences [B, H*W, C], nearest upsampling;
// and their backwards (image_to_tokens and tokens_to_image are each other's).
#pragma once
#include <algorithm>
#include <utility>

#include "ldm/core/tensor.hpp"

namespace ldm {

// These run between the model's GEMMs, which use every thread: one done on the calling thread
// alone leaves the others waiting (serial adds, copies and transposes were ~3% of an SD1.5
// U-Net step's time on 2 cores). So each spreads its work over the threads in chunks.
constexpr int64_t kElementwiseChunk = int64_t(1) << 14;

// a += b (same shape)
inline void add_(Tensor& a, const Tensor& b) {
  LDM_CHECK(a.shape() == b.shape(), "add: shapes ", a.shape_str(), " and ", b.shape_str(), " differ");
  const int64_t n = a.numel();
  float* pa = a.data();
  const float* pb = b.data();
#pragma omp parallel for schedule(static) if (n > 2 * kElementwiseChunk)
  for (int64_t c = 0; c < n; c += kElementwiseChunk) {
    const int64_t len = std::min(kElementwiseChunk, n - c);
    Eigen::Map<Eigen::ArrayXf>(pa + c, len) += Eigen::Map<const Eigen::ArrayXf>(pb + c, len);
  }
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
  // chunk c of image i's na + nb values: from a below na, from b after
#pragma omp parallel for collapse(2) schedule(static) if (B * (na + nb) > 2 * kElementwiseChunk)
  for (int64_t i = 0; i < B; ++i) {
    for (int64_t c = 0; c < na + nb; c += kElementwiseChunk) {
      const int64_t end = std::min(na + nb, c + kElementwiseChunk);
      float* dst = r.data() + i * (na + nb);
      if (c < na) std::copy(a.data() + i * na + c, a.data() + i * na + std::min(na, end), dst + c);
      if (end > na) {
        const int64_t from = std::max(c, na);
        std::copy(b.data() + i * nb + from - na, b.data() + i * nb + end - na, dst + from);
      }
    }
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

// y[b] [C, R] = x[b] [R, C]^T for each of B matrices, in 64 x 64 tiles (in L1) spread over the threads.
inline void transpose_each(const float* x, int64_t B, int64_t R, int64_t C, float* y) {
  using RowMajor = Eigen::Matrix<float, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;
  using Stride = Eigen::OuterStride<>;
  constexpr int64_t T = 64;
  const int64_t row_tiles = (R + T - 1) / T, col_tiles = (C + T - 1) / T;
#pragma omp parallel for collapse(3) schedule(static) if (B * R * C > 2 * kElementwiseChunk)
  for (int64_t b = 0; b < B; ++b) {
    for (int64_t i = 0; i < row_tiles; ++i) {
      for (int64_t j = 0; j < col_tiles; ++j) {
        const int64_t r0 = i * T, c0 = j * T, rows = std::min(T, R - r0), cols = std::min(T, C - c0);
        const Eigen::Map<const RowMajor, 0, Stride> src(x + (b * R + r0) * C + c0, rows, cols, Stride(C));
        Eigen::Map<RowMajor, 0, Stride> dst(y + (b * C + c0) * R + r0, cols, rows, Stride(R));
        dst = src.transpose();
      }
    }
  }
}

// [B, C, H, W] -> [B, H*W, C]
inline Tensor image_to_tokens(const Tensor& x) {
  const int64_t B = x.dim(0), C = x.dim(1), S = x.dim(2) * x.dim(3);
  Tensor r = Tensor::empty({B, S, C});
  transpose_each(x.data(), B, C, S, r.data());
  return r;
}

// [B, H*W, C] -> [B, C, H, W]
inline Tensor tokens_to_image(const Tensor& t, int64_t H, int64_t W) {
  const int64_t B = t.dim(0), S = t.dim(1), C = t.dim(2);
  LDM_CHECK(S == H * W, "tokens_to_image: ", S, " tokens are not a ", H, "x", W, " image");
  Tensor r = Tensor::empty({B, C, H, W});
  transpose_each(t.data(), B, S, C, r.data());
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
