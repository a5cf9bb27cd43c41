// torch.nn.Conv2d (groups = 1, dilation = 1) as im2col + GEMM, in bounded memory.
//
// For each image, out[O, P] = W[O, C*kh*kw] * col[C*kh*kw, P] + b, P = Ho*Wo output pixels.
// The col matrix of a whole image can be huge (a 3x3 conv on [1,128,512,512] would need
// 1.2 GB), so it is built for a tile of output pixels at a time, sized to kMaxScratchBytes.
// A 1x1 stride-1 convolution needs no col matrix at all: the input already is [C, H*W].
#pragma once
#include <algorithm>
#include <string>
#include <vector>

#include "ldm/core/weights.hpp"
#include "ldm/nn/gemm.hpp"

namespace ldm {

struct Padding {
  int top = 0, left = 0, bottom = 0, right = 0;
  static Padding same(int p) { return {p, p, p, p}; }
};

constexpr int64_t kConvMaxScratchBytes = 32ll << 20;  // 32 MiB of im2col per convolution

// x [B, C, H, W], weight [O, C, kh, kw], bias [O] or undefined -> [B, O, Ho, Wo]
inline Tensor conv2d(const Tensor& x, const Tensor& weight, const Tensor& bias, int stride, Padding pad) {
  LDM_CHECK(x.ndim() == 4, "conv2d: expected a 4-d input [B, C, H, W], got ", x.shape_str());
  const int64_t B = x.dim(0), C = x.dim(1), H = x.dim(2), W = x.dim(3);
  const int64_t O = weight.dim(0), kh = weight.dim(2), kw = weight.dim(3);
  LDM_CHECK(weight.dim(1) == C, "conv2d: weight ", weight.shape_str(), " expects ", weight.dim(1),
            " input channels, got input ", x.shape_str());
  const int64_t Ho = (H + pad.top + pad.bottom - kh) / stride + 1;
  const int64_t Wo = (W + pad.left + pad.right - kw) / stride + 1;
  LDM_CHECK(Ho > 0 && Wo > 0, "conv2d: input ", x.shape_str(), " too small for a ", kh, "x", kw, " kernel");
  const int64_t P = Ho * Wo, K = C * kh * kw;
  Tensor y = Tensor::empty({B, O, Ho, Wo});

  const bool pointwise = kh == 1 && kw == 1 && stride == 1 && pad.top == 0 && pad.left == 0 && pad.bottom == 0 &&
                         pad.right == 0;
  // Output pixels per tile: whole output rows, as many as fit the scratch budget.
  const int64_t tile = pointwise ? P : std::clamp<int64_t>(kConvMaxScratchBytes / (4 * K) / Wo, 1, Ho) * Wo;
  std::vector<float> col(pointwise ? 0 : size_t(K * tile));

  for (int64_t b = 0; b < B; ++b) {
    const float* xb = x.data() + b * C * H * W;
    float* yb = y.data() + b * O * P;
    if (bias.defined()) {
#pragma omp parallel for if (O * P > (1 << 15))
      for (int64_t o = 0; o < O; ++o) std::fill(yb + o * P, yb + (o + 1) * P, bias[o]);
    }
    const float beta = bias.defined() ? 1.0f : 0.0f;
    if (pointwise) {
      gemm(false, false, O, P, C, 1.0f, weight.data(), C, xb, P, beta, yb, P);
      continue;
    }
    for (int64_t p0 = 0; p0 < P; p0 += tile) {
      const int64_t n = std::min(tile, P - p0);
      // col[(c, i, j), p] = x[c, oy*stride - top + i, ox*stride - left + j], zero outside
      const int64_t oy0 = p0 / Wo, rows = n / Wo;
#pragma omp parallel for if (K * n > (1 << 15))
      for (int64_t k = 0; k < K; ++k) {
        const int64_t c = k / (kh * kw), i = (k / kw) % kh, j = k % kw;
        const float* xc = xb + c * H * W;
        // ox range whose input column ix = ox*stride - left + j lies inside [0, W)
        auto floor_div = [](int64_t a, int64_t d) { return a >= 0 ? a / d : -((-a + d - 1) / d); };
        const int64_t ox_lo = std::clamp<int64_t>(-floor_div(j - pad.left, stride), 0, Wo);
        const int64_t ox_hi = std::clamp<int64_t>(floor_div(W - 1 + pad.left - j, stride) + 1, ox_lo, Wo);
        for (int64_t r = 0; r < rows; ++r) {
          float* dst = col.data() + k * n + r * Wo;
          const int64_t iy = (oy0 + r) * stride - pad.top + i;
          if (iy < 0 || iy >= H) {
            std::fill(dst, dst + Wo, 0.0f);
            continue;
          }
          const float* src = xc + iy * W - pad.left + j;
          std::fill(dst, dst + ox_lo, 0.0f);
          if (stride == 1) {
            std::copy(src + ox_lo, src + ox_hi, dst + ox_lo);
          } else {
            for (int64_t ox = ox_lo; ox < ox_hi; ++ox) dst[ox] = src[ox * stride];
          }
          std::fill(dst + ox_hi, dst + Wo, 0.0f);
        }
      }
      gemm(false, false, O, n, K, 1.0f, weight.data(), K, col.data(), n, beta, yb + p0, P);
    }
  }
  return y;
}

struct Conv2d {
  Tensor weight;  // [out, in, k, k]
  Tensor bias;    // [out]
  int stride = 1;
  Padding padding;

  void load(WeightStore& w, const std::string& prefix, int64_t in, int64_t out, int64_t kernel, int stride_ = 1,
            int pad = 0, bool has_bias = true) {
    weight = w.get(join(prefix, "weight"), {out, in, kernel, kernel});
    if (has_bias) bias = w.get(join(prefix, "bias"), {out});
    stride = stride_;
    padding = Padding::same(pad);
  }
  int64_t in_channels() const { return weight.dim(1); }
  int64_t out_channels() const { return weight.dim(0); }

  // [B, in, H, W] -> [B, out, Ho, Wo]
  Tensor forward(const Tensor& x) const { return conv2d(x, weight, bias, stride, padding); }
};

}  // namespace ldm
