// torch.nn.Conv2d (groups = 1, dilation = 1) as an implicit-im2col GEMM, in bounded memory.
//
// For each image, out[O, P] = W[O, C*kh*kw] * col[C*kh*kw, P] + b, P = Ho*Wo output pixels,
// col[(c, i, j), p] being the input pixel under kernel tap (i, j) of output pixel p. The col
// matrix of a whole image can be huge (a 3x3 conv on [1,128,512,512] would need 1.2 GB), so
// it is never built: the GEMM asks for it 16 pixels x 256 taps at a time (gemm_packed_b) and
// the panel is copied straight from the input rows. A 1x1 stride-1 convolution needs no col
// matrix at all: the input already is [C, H*W].
#pragma once
#include <algorithm>
#include <cstring>
#include <memory>
#include <string>
#include <vector>

#include "ldm/core/op_profile.hpp"
#include "ldm/core/weights.hpp"
#include "ldm/nn/conv_algo.hpp"
#include "ldm/nn/gemm.hpp"
#include "ldm/nn/grad.hpp"
#include "ldm/train/parameter.hpp"
#include "ldm/nn/padding.hpp"
#include "ldm/nn/winograd.hpp"

namespace ldm {

namespace detail {

// Sizes of one convolution, checked.
// Winograd from this many input and output channels: with fewer, the transforms cost more than
// the multiplications they save.
constexpr int64_t kWinogradMinChannels = 32;

struct ConvShape {
  int64_t B, C, H, W, O, kh, kw, Ho, Wo, P, K;
  bool pointwise;  // 1x1, stride 1, no padding: the input already is the [C, H*W] col matrix
  bool batched;    // small images (the U-Net's 8x8 and 16x16): one GEMM for the whole batch,
                   // so that the weights are packed once, not once per image
  bool same3x3;    // 3x3, stride 1, padding 1: the output has the input's size, and the data
                   // gradient is itself such a convolution (of the flipped, transposed kernel)
  bool winograd;   // same3x3 with enough channels: where Winograd may run, either way
  ConvAlgo algo;   // what the forward runs: direct, f23 or f43 (Winograd, winograd.hpp)
  bool keep_u;     // Winograd with its transform U made once and kept (Conv2d); else F(4x4) on
                   // images under 64x64 makes U in the call, straight into the GEMM's panels
                   // (winograd_f43_conv3x3_from_weights): nothing kept, and as fast or faster
                   // there (the U-Net's 32x32 level: 1.0 GB less kept)
};

// The sizes, and the algorithm that runs for `asked` (nn/conv_algo.hpp). auto_f43: under
// ConvAlgo::automatic, the caller keeps F(4x4)'s 4x-sized transform (Conv2d::auto_f43).
inline ConvShape conv_shape(const Shape& x, const Shape& w, int stride, Padding pad,
                            ConvAlgo asked = ConvAlgo::automatic, bool auto_f43 = false) {
  LDM_CHECK(x.size() == 4, "conv2d: expected a 4-d input [B, C, H, W], got ", shape_str(x));
  LDM_CHECK(w.size() == 4, "conv2d: expected a 4-d weight [O, C, kh, kw], got ", shape_str(w));
  LDM_CHECK(stride >= 1, "conv2d: stride must be at least 1, got ", stride);
  ConvShape s{};
  s.B = x[0], s.C = x[1], s.H = x[2], s.W = x[3], s.O = w[0], s.kh = w[2], s.kw = w[3];
  LDM_CHECK(w[1] == s.C, "conv2d: weight ", shape_str(w), " expects ", w[1], " input channels, got input ",
            shape_str(x));
  s.Ho = (s.H + pad.top + pad.bottom - s.kh) / stride + 1;
  s.Wo = (s.W + pad.left + pad.right - s.kw) / stride + 1;
  LDM_CHECK(s.H + pad.top + pad.bottom >= s.kh && s.W + pad.left + pad.right >= s.kw && s.Ho > 0 && s.Wo > 0,
            "conv2d: input ", shape_str(x), " too small for a ", s.kh, "x", s.kw, " kernel");
  s.P = s.Ho * s.Wo;
  s.K = s.C * s.kh * s.kw;
  s.pointwise = s.kh == 1 && s.kw == 1 && stride == 1 && pad.top == 0 && pad.left == 0 && pad.bottom == 0 &&
                pad.right == 0;
  s.batched = !s.pointwise && s.B > 1 && s.P < 1024;
  s.same3x3 = s.kh == 3 && s.kw == 3 && stride == 1 && pad.top == 1 && pad.left == 1 && pad.bottom == 1 &&
              pad.right == 1;
  // The one eligibility rule of Winograd: a same3x3 convolution with enough channels (with few,
  // the transforms' memory traffic outweighs the saved multiplications), on images whose sides
  // the tiles divide.
  s.winograd = s.same3x3 && s.C >= kWinogradMinChannels && s.O >= kWinogradMinChannels;
  const bool f23 = s.winograd && winograd_fits(s.H, s.W), f43 = s.winograd && winograd_f43_fits(s.H, s.W);
  const ConvAlgo f23_or_direct = f23 ? ConvAlgo::f23 : ConvAlgo::direct;
  switch (asked) {
    case ConvAlgo::direct: s.algo = ConvAlgo::direct; break;
    case ConvAlgo::f23: s.algo = f23_or_direct; break;
    case ConvAlgo::f43: s.algo = f43 ? ConvAlgo::f43 : f23_or_direct; break;
    case ConvAlgo::automatic:
      // F(4x4) where the owner allows it: from 32x32 up; below only where F(2x2) does not fit
      // (the U-Net's 16x16 level), instead of the direct convolution. U is kept from 64x64 up
      // and made in the call below (keep_u).
      s.algo = f43 && auto_f43 && ((s.H >= 32 && s.W >= 32) || !f23) ? ConvAlgo::f43 : f23_or_direct;
      break;
  }
  // Made in the call, U costs about the products' time again over all tiles' V; kept, it is
  // packed for the GEMMs in each call. Measured on the Xeon (bench_models --profile, batch 2):
  // at 32x32 made-in-call was 0-10% faster per layer (and keeps nothing: 1.0 GB for SD1.5's
  // U-Net), at 64x64 15-25% slower, on the VAE's 64x64 level (512 channels) 8% slower.
  s.keep_u = s.algo == ConvAlgo::f23 || (s.algo == ConvAlgo::f43 && s.H >= 64 && s.W >= 64);
  return s;
}

// One GEMM panel of the im2col matrix of images x [.., C, H, W], whose columns are output pixels
// numbered across the images (b * P + p), `n_total` of them: dst[k * 16 + j] = col[k0 + k, p0 + j],
// zero past n_total (see gemm_packed_b).
inline void im2col_panel(const ConvShape& s, const float* x, int stride, Padding pad, int64_t n_total, int64_t k0,
                         int64_t kc, int64_t p0, float* dst) {
  constexpr int64_t kW = kGemmPanelWidth;
  // The panel's pixels as runs along one output row (one run when Wo is a multiple of 16).
  struct Run {
    const float* image;
    int64_t oy, ox, col, len;  // output row, first output column, first panel column, length
  };
  Run runs[kW];
  int nruns = 0;
  const int64_t n = std::min(kW, n_total - p0);
  for (int64_t col = 0; col < n;) {
    const int64_t p = p0 + col, b = p / s.P, oy = p % s.P / s.Wo, ox = p % s.Wo;
    const int64_t len = std::min(n - col, s.Wo - ox);
    runs[nruns++] = {x + b * s.C * s.H * s.W, oy, ox, col, len};
    col += len;
  }
  // Row k of col is kernel tap (c, i, j), k = (c * kh + i) * kw + j; stepped, not divided.
  int64_t c = k0 / (s.kh * s.kw), i = k0 / s.kw % s.kh, j = k0 % s.kw;
  for (int64_t k = 0; k < kc; ++k) {
    float* d = dst + k * kW;
    for (int r = 0; r < nruns; ++r) {
      const Run& u = runs[r];
      float* o = d + u.col;
      const int64_t iy = u.oy * stride - pad.top + i, ix0 = u.ox * stride - pad.left + j;
      if (iy < 0 || iy >= s.H) {
        std::fill(o, o + u.len, 0.0f);
        continue;
      }
      const float* src = u.image + (c * s.H + iy) * s.W;
      if (stride == 1 && ix0 >= 0 && ix0 + u.len <= s.W) {  // the common case: a plain copy
        if (u.len == kW) {
          std::memcpy(o, src + ix0, kW * sizeof(float));
        } else {
          std::copy_n(src + ix0, u.len, o);
        }
        continue;
      }
      for (int64_t t = 0; t < u.len; ++t) {  // strided, or touching the padding
        const int64_t ix = ix0 + t * stride;
        o[t] = ix >= 0 && ix < s.W ? src[ix] : 0.0f;
      }
    }
    std::fill(d + n, d + kW, 0.0f);
    if (++j == s.kw) {
      j = 0;
      if (++i == s.kh) i = 0, ++c;
    }
  }
}

}  // namespace detail

// Working memory conv2d allocates besides its output: the GEMM's packed panels, and for a
// small-image batch the GEMM's output [O, B*P] before it is spread over the images.
inline int64_t conv2d_scratch_bytes(const Shape& x, const Shape& weight, int stride, Padding pad,
                                    ConvAlgo algo = ConvAlgo::automatic) {
  const detail::ConvShape s = detail::conv_shape(x, weight, stride, pad, algo);
  if (s.algo == ConvAlgo::f43) return winograd_f43_scratch_bytes(s.B, s.C, s.H, s.W, s.O, !s.keep_u);
  if (s.algo == ConvAlgo::f23) return winograd_scratch_bytes(s.B, s.C, s.H, s.W, s.O);
  if (s.batched) return int64_t(sizeof(float)) * s.O * s.B * s.P + gemm_scratch_bytes(s.O, s.B * s.P, s.K);
  return gemm_scratch_bytes(s.O, s.P, s.pointwise ? s.C : s.K);
}

namespace detail {
// The direct convolution (im2col panels into the GEMM) of x into y [B, O, Ho, Wo]; w: the
// weight [O, K] as float, or as fp16 (uint16_t), which the GEMM converts as it packs it.
template <typename T>
void conv2d_direct(const ConvShape& s, const float* x, const T* w, const float* b_o, int stride, Padding pad,
                   float* y) {
  // col panels of the images from x0 on, n pixels in all
  auto col_of = [&](const float* x0, int64_t n) {
    return [&s, x0, n, stride, pad](int64_t k0, int64_t kc, int64_t p0, float* dst) {
      detail::im2col_panel(s, x0, stride, pad, n, k0, kc, p0, dst);
    };
  };
  // panels of one image [C, P] itself, for a pointwise convolution
  auto pointwise_of = [&](const float* xb) {
    return [&s, xb](int64_t k0, int64_t kc, int64_t p0, float* dst) {
      constexpr int64_t kW = kGemmPanelWidth;
      const int64_t n = std::min(kW, s.P - p0);
      for (int64_t k = 0; k < kc; ++k) {
        const float* src = xb + (k0 + k) * s.P + p0;
        if (n == kW) {
          std::memcpy(dst + k * kW, src, kW * sizeof(float));
        } else {
          std::copy_n(src, n, dst + k * kW);
          std::fill(dst + k * kW + n, dst + (k + 1) * kW, 0.0f);
        }
      }
    };
  };

  if (s.batched) {  // out[O, B*P] = W[O, K] col[K, B*P], then each image's columns to y[b]
    const int64_t N = s.B * s.P;
    std::vector<float> out(size_t(s.O * N));
    gemm_packed_b(s.O, N, s.K, w, s.K, col_of(x, N), b_o, out.data(), N);
    for (int64_t b = 0; b < s.B; ++b)
      for (int64_t o = 0; o < s.O; ++o)
        std::copy_n(out.data() + o * N + b * s.P, s.P, y + (b * s.O + o) * s.P);
    return;
  }
  for (int64_t b = 0; b < s.B; ++b) {
    const float* xb = x + b * s.C * s.H * s.W;  // [C, H, W]
    float* yb = y + b * s.O * s.P;               // [O, P]
    if (s.pointwise) {  // y[O, P] = W[O, C] x[C, P] + b, B panels copied from x's rows
      gemm_packed_b(s.O, s.P, s.C, w, s.C, pointwise_of(xb), b_o, yb, s.P);
    } else {  // y[O, P] = W[O, K] col[K, P] + b
      gemm_packed_b(s.O, s.P, s.K, w, s.K, col_of(xb, s.P), b_o, yb, s.P);
    }
  }
}
}  // namespace detail

// x [B, C, H, W], weight [O, C, kh, kw], bias [O] or undefined -> [B, O, Ho, Wo].
// algo: see nn/conv_algo.hpp (here `automatic` never takes F(4x4)). winograd_u: the Winograd
// transform of weight for the algorithm that runs, when the caller keeps it (Conv2d does);
// else made here (F(4x4) under 64x64: in blocks of output channels as the GEMMs use them).
inline Tensor conv2d(const Tensor& x, const Tensor& weight, const Tensor& bias, int stride, Padding pad,
                     ConvAlgo algo = ConvAlgo::automatic, const std::vector<float>* winograd_u = nullptr) {
  const detail::ConvShape s = detail::conv_shape(x.shape(), weight.shape(), stride, pad, algo);
  LDM_CHECK(!bias.defined() || bias.numel() == s.O, "conv2d: bias ", bias.shape_str(), " does not match ", s.O,
            " output channels");
  Tensor y = Tensor::empty({s.B, s.O, s.Ho, s.Wo});
  const float* b_o = bias.defined() ? bias.data() : nullptr;  // added to row o of each GEMM's output
  if (s.algo == ConvAlgo::f43 && !winograd_u && !s.keep_u) {
    winograd_f43_conv3x3_from_weights(x.data(), s.B, s.C, s.H, s.W, weight.data(), s.O, b_o, y.data());
    return y;
  }
  if (s.algo != ConvAlgo::direct) {
    const bool f43 = s.algo == ConvAlgo::f43;
    std::vector<float> made;
    if (!winograd_u) made = f43 ? winograd_f43_weights(weight.data(), s.O, s.C) : winograd_weights(weight.data(), s.O, s.C);
    const float* u = winograd_u ? winograd_u->data() : made.data();
    if (f43) {
      winograd_f43_conv3x3(x.data(), s.B, s.C, s.H, s.W, u, s.O, b_o, y.data());
    } else {
      winograd_conv3x3(x.data(), s.B, s.C, s.H, s.W, u, s.O, b_o, y.data());
    }
    return y;
  }
  detail::conv2d_direct(s, x.data(), weight.data(), b_o, stride, pad, y.data());
  return y;
}

// The same with the weight kept in fp16 (a Conv2d loaded with keep_fp16): the direct
// convolution reads it through the GEMM, converted as it is packed; Winograd runs on
// winograd_u, the transform kept in fp16, or without one on a float32 copy made for this call.
inline Tensor conv2d(const Tensor& x, const HalfTensor& weight, const Tensor& bias, int stride, Padding pad,
                     ConvAlgo algo = ConvAlgo::automatic, const std::vector<uint16_t>* winograd_u = nullptr) {
  const detail::ConvShape s = detail::conv_shape(x.shape(), weight.shape, stride, pad, algo);
  const bool from_weights = s.algo == ConvAlgo::f43 && !winograd_u && !s.keep_u;  // F(4x4), U made in the call
  if (s.algo != ConvAlgo::direct && !winograd_u && !from_weights)
    return conv2d(x, weight.to_float(), bias, stride, pad, algo);
  LDM_CHECK(!bias.defined() || bias.numel() == s.O, "conv2d: bias ", bias.shape_str(), " does not match ", s.O,
            " output channels");
  Tensor y = Tensor::empty({s.B, s.O, s.Ho, s.Wo});
  const float* b_o = bias.defined() ? bias.data() : nullptr;
  if (from_weights) {
    winograd_f43_conv3x3_from_weights(x.data(), s.B, s.C, s.H, s.W, weight.data.get(), s.O, b_o, y.data());
  } else if (s.algo == ConvAlgo::f43) {
    winograd_f43_conv3x3(x.data(), s.B, s.C, s.H, s.W, winograd_u->data(), s.O, b_o, y.data());
  } else if (s.algo == ConvAlgo::f23) {
    winograd_conv3x3(x.data(), s.B, s.C, s.H, s.W, winograd_u->data(), s.O, b_o, y.data());
  } else {
    detail::conv2d_direct(s, x.data(), weight.data.get(), b_o, stride, pad, y.data());
  }
  return y;
}

// Backward of conv2d. With col = im2col(x) [K, P] per image:
//   grad_weight[O, K] += dy[O, P] col^T[P, K]      grad_bias[O] += dy summed over pixels
//   dx = the transposed convolution of dy: for a 3x3, stride-1, padding-1 convolution that is
//        itself such a convolution, of dy with the weight flipped and its in/out swapped,
//        W'[c, o, i, j] = W[o, c, 2 - i, 2 - j], so it runs through conv2d's fast paths
//        (Winograd, batched GEMM); otherwise dcol[K, P] = W^T[K, O] dy[O, P] and col2im
//        adds each tap's value back to the input pixel it was read from.
// The GEMMs see several images at once when the images are small (the U-Net's 8x8: one
// reduction over B*P pixels instead of B rank-64 updates), and one image in pixel chunks when
// they are large; either way the col block is at most kConvBackwardChunk bytes.
namespace detail {

constexpr int64_t kConvBackwardChunk = 8 << 20;  // bytes of one [K, n] col block (and one dcol)

// The output pixels ox in [0, Wo) whose tap j reads an input column inside [0, W):
// 0 <= ox * stride - left + j < W.
inline void valid_columns(const ConvShape& s, int stride, Padding pad, int64_t j, int64_t& lo, int64_t& hi) {
  const int64_t a = pad.left - j;                   // ox * stride >= a
  lo = a <= 0 ? 0 : (a + stride - 1) / stride;
  const int64_t b = s.W - 1 + pad.left - j;         // ox * stride <= b
  hi = b < 0 ? 0 : std::min(s.Wo, b / stride + 1);
  lo = std::min(lo, hi);
}

// col[k, t] (row stride ld) = the input pixel under kernel tap k = (c, i, j) of output pixel
// p0 + t, t < n, zero in the padding. xb [C, H, W] one image. Row by row of the output, so the
// inner loop is a straight (stride 1: contiguous) copy.
inline void im2col_rows(const ConvShape& s, const float* xb, int stride, Padding pad, int64_t p0, int64_t n,
                        float* col, int64_t ld) {
#pragma omp parallel for schedule(static) if (s.K * n > (1 << 15))
  for (int64_t k = 0; k < s.K; ++k) {
    const int64_t c = k / (s.kh * s.kw), i = k / s.kw % s.kh, j = k % s.kw;
    const float* plane = xb + c * s.H * s.W;
    float* d = col + k * ld;
    int64_t lo, hi;
    valid_columns(s, stride, pad, j, lo, hi);
    for (int64_t t = 0; t < n;) {
      const int64_t p = p0 + t, oy = p / s.Wo, ox0 = p % s.Wo, len = std::min(s.Wo - ox0, n - t);
      const int64_t iy = oy * stride - pad.top + i;
      float* row = d + t - ox0;  // row[ox] for ox in [ox0, ox0 + len)
      if (iy < 0 || iy >= s.H) {
        std::fill(row + ox0, row + ox0 + len, 0.0f);
      } else {
        const float* src = plane + iy * s.W - pad.left + j;  // src[ox * stride]
        const int64_t a = std::max(lo, ox0), e = std::min(hi, ox0 + len);
        for (int64_t ox = ox0; ox < std::min(a, ox0 + len); ++ox) row[ox] = 0.0f;
        if (stride == 1) {
          if (e > a) std::copy(src + a, src + e, row + a);
        } else {
          for (int64_t ox = a; ox < e; ++ox) row[ox] = src[ox * stride];
        }
        for (int64_t ox = std::max(e, ox0); ox < ox0 + len; ++ox) row[ox] = 0.0f;
      }
      t += len;
    }
  }
}

// The transpose of im2col_rows: dxb [C, H, W] += dcol [K, n] (row stride ld) at the pixels the
// taps read. One task per input channel: its kh*kw rows of dcol are the only ones that add to its plane.
inline void col2im_add(const ConvShape& s, const float* dcol, int stride, Padding pad, int64_t p0, int64_t n,
                       float* dxb, int64_t ld) {
#pragma omp parallel for schedule(static) if (s.K * n > (1 << 15))
  for (int64_t c = 0; c < s.C; ++c) {
    float* plane = dxb + c * s.H * s.W;
    for (int64_t i = 0; i < s.kh; ++i) {
      for (int64_t j = 0; j < s.kw; ++j) {
        const float* d = dcol + ((c * s.kh + i) * s.kw + j) * ld;
        int64_t lo, hi;
        valid_columns(s, stride, pad, j, lo, hi);
        for (int64_t t = 0; t < n;) {
          const int64_t p = p0 + t, oy = p / s.Wo, ox0 = p % s.Wo, len = std::min(s.Wo - ox0, n - t);
          const int64_t iy = oy * stride - pad.top + i;
          if (iy >= 0 && iy < s.H) {
            const float* row = d + t - ox0;
            float* dst = plane + iy * s.W - pad.left + j;  // dst[ox * stride]
            const int64_t a = std::max(lo, ox0), e = std::min(hi, ox0 + len);
            for (int64_t ox = a; ox < e; ++ox) dst[ox * stride] += row[ox];
          }
          t += len;
        }
      }
    }
  }
}

// W [O, C, 3, 3] -> W' [C, O, 3, 3], W'[c, o, i, j] = W[o, c, 2 - i, 2 - j]: the weight of the
// transposed 3x3 convolution.
inline Tensor flipped_transposed_3x3(const Tensor& w) {
  const int64_t O = w.dim(0), C = w.dim(1);
  Tensor t = Tensor::empty({C, O, 3, 3});
  for (int64_t o = 0; o < O; ++o)
    for (int64_t c = 0; c < C; ++c)
      for (int64_t k = 0; k < 9; ++k) t[(c * O + o) * 9 + k] = w[(o * C + c) * 9 + (8 - k)];
  return t;
}

}  // namespace detail

// Saves the input x [B, C, H, W]. dy [B, O, Ho, Wo] -> dx [B, C, H, W]; grad_weight [O, C, kh, kw]
// and grad_bias [O] (null: the layer has no bias) accumulate. A 3x3 stride-1 pad-1 convolution
// takes Winograd's road both ways unless `algo` is direct: dx as the forward convolution of dy
// with the flipped, transposed weight, dW by the transforms' adjoint (winograd.hpp); any other
// convolution, or ConvAlgo::direct, takes the im2col GEMMs.
inline Tensor conv2d_backward(const Tensor& x, const Tensor& weight, const Tensor& dy, int stride, Padding pad,
                              Tensor& grad_weight, Tensor* grad_bias, ConvAlgo algo = ConvAlgo::automatic) {
  const detail::ConvShape s = detail::conv_shape(x.shape(), weight.shape(), stride, pad);
  LDM_CHECK(dy.shape() == Shape({s.B, s.O, s.Ho, s.Wo}), "conv2d_backward: gradient ", dy.shape_str(),
            " does not match the output [", s.B, ", ", s.O, ", ", s.Ho, ", ", s.Wo, "] of input ", x.shape_str());
  float* gw = grad_buffer(grad_weight, weight.shape()).data();  // [O, K]
  if (grad_bias) {
    Tensor& gb = grad_buffer(*grad_bias, {s.O});
    for (int64_t b = 0; b < s.B; ++b)
      gb.vec() += dy.slice0(b, b + 1).matrix(s.O, s.P).rowwise().sum();
  }
  const float* w = weight.data();
  if (s.pointwise) {  // x itself is col [C, P]
    Tensor dx = Tensor::empty(x.shape());
    for (int64_t b = 0; b < s.B; ++b) {
      const float* xb = x.data() + b * s.C * s.P;
      const float* dyb = dy.data() + b * s.O * s.P;
      gemm(false, true, s.O, s.C, s.P, 1.0f, dyb, s.P, xb, s.P, 1.0f, gw, s.C);             // gw[O, C] += dy x^T
      gemm(true, false, s.C, s.P, s.O, 1.0f, w, s.C, dyb, s.P, 0.0f, dx.data() + b * s.C * s.P, s.P);  // dx = W^T dy
    }
    return dx;
  }
  const bool transposed_is_conv = s.same3x3;
  Tensor dx = transposed_is_conv ? conv2d(dy, detail::flipped_transposed_3x3(weight), Tensor(), 1, pad, algo)
                                 : Tensor(x.shape());  // zeros: col2im adds into it
  if (s.winograd && algo != ConvAlgo::direct && winograd_grad_weight_fits(s.H, s.W, s.C, s.O) &&
      winograd_grad_weight_pays(s.B, s.C, s.H, s.W, s.O)) {
    winograd_conv3x3_grad_weight(x.data(), dy.data(), s.B, s.C, s.H, s.W, s.O, gw);
    return dx;
  }

  // Blocks of (images [b0, b0 + g), pixels [p0, p0 + n)): g images whole when an image's col is
  // small, else one image in pixel chunks.
  const int64_t chunk = std::max<int64_t>(16, detail::kConvBackwardChunk / int64_t(sizeof(float) * s.K));
  const int64_t g_max = std::clamp<int64_t>(chunk / s.P, 1, s.B), n_max = std::min(chunk, s.P);  // col: only what is used
  std::vector<float> col(size_t(s.K * n_max * g_max)), dcol, dyblock;
  if (!transposed_is_conv) dcol.resize(col.size());
  for (int64_t b0 = 0; b0 < s.B; b0 += g_max) {
    const int64_t g = std::min(g_max, s.B - b0);
    for (int64_t p0 = 0; p0 < s.P; p0 += n_max) {
      const int64_t n = std::min(n_max, s.P - p0), ld = g * n;  // the block's columns: image-major
      const float* dyp;                                          // dy of the block [O, ld]
      if (g == 1) {
        dyp = dy.data() + b0 * s.O * s.P + p0;
      } else {
        dyblock.resize(size_t(s.O * ld));
        for (int64_t q = 0; q < g; ++q)
          for (int64_t o = 0; o < s.O; ++o)
            std::copy_n(dy.data() + ((b0 + q) * s.O + o) * s.P, s.P, dyblock.data() + o * ld + q * s.P);
        dyp = dyblock.data();
      }
      const int64_t ldy = g == 1 ? s.P : ld;
      for (int64_t q = 0; q < g; ++q)
        detail::im2col_rows(s, x.data() + (b0 + q) * s.C * s.H * s.W, stride, pad, p0, n, col.data() + q * n, ld);
      gemm(false, true, s.O, s.K, ld, 1.0f, dyp, ldy, col.data(), ld, 1.0f, gw, s.K);  // gw[O, K] += dy col^T
      if (transposed_is_conv) continue;
      gemm(true, false, s.K, ld, s.O, 1.0f, w, s.K, dyp, ldy, 0.0f, dcol.data(), ld);  // dcol[K, ld] = W^T dy
      for (int64_t q = 0; q < g; ++q)
        detail::col2im_add(s, dcol.data() + q * n, stride, pad, p0, n, dx.data() + (b0 + q) * s.C * s.H * s.W, ld);
    }
  }
  return dx;
}

struct Conv2d {
  Tensor weight;          // [out, in, k, k]
  Tensor bias;            // [out]
  HalfTensor weight_f16;  // the weight kept as fp16 instead (WeightStore::keep_fp16)
  int stride = 1;
  Padding padding;
  ConvAlgo algo = ConvAlgo::automatic;  // set by load() from WeightStore::conv_algo (nn/conv_algo.hpp)
  // Under ConvAlgo::automatic, may keep F(4x4, 3x3)'s transform, 4x the weight's size (set by
  // the U-Net on its resnets and upsamplers, the VAE decoder on its wide layers).
  bool auto_f43 = false;

  void load(WeightStore& w, const std::string& prefix, int64_t in, int64_t out, int64_t kernel, int stride_ = 1,
            int pad = 0, bool has_bias = true) {
    if (w.keep_fp16()) {
      weight_f16 = w.get_half(join(prefix, "weight"), {out, in, kernel, kernel});
    } else {
      weight = w.get(join(prefix, "weight"), {out, in, kernel, kernel});
    }
    if (has_bias) bias = w.get(join(prefix, "bias"), {out});
    stride = stride_;
    padding = Padding::same(pad);
    algo = w.conv_algo();
  }
  const Shape& weight_shape() const { return weight.defined() ? weight.shape() : weight_f16.shape; }
  int64_t in_channels() const { return weight_shape().at(1); }
  int64_t out_channels() const { return weight_shape().at(0); }
  bool loaded() const { return weight.defined() || weight_f16.defined(); }
  // The weight as float32 (converted from fp16 for this call when stored so).
  Tensor weights() const { return weight.defined() ? weight : weight_f16.to_float(); }
  int64_t weight_numel() const { return numel_of(weight_shape()); }
  const float* bias_data() const { return bias.defined() ? bias.data() : nullptr; }

  // [B, in, H, W] -> [B, out, Ho, Wo]
  Tensor forward(const Tensor& x) const {
    // Winograd's transformed weights are made once and kept (in fp16 for fp16 weights).
    const detail::ConvShape s = detail::conv_shape(x.shape(), weight_shape(), stride, padding, algo, auto_f43);
    const OpTimer timer(
        s.pointwise ? "conv1x1" : !s.same3x3 ? "conv" : s.algo == ConvAlgo::f43 ? "conv3x3 f43"
                                                    : s.algo == ConvAlgo::f23 ? "conv3x3 f23" : "conv3x3 direct",
        [&] {
          return x.shape_str() + " -> " + std::to_string(s.O) + (s.same3x3 || s.pointwise ? "" : " k" +
                 std::to_string(s.kh) + " /" + std::to_string(stride)) + (weight.defined() ? "" : " fp16");
        },
        2.0 * double(s.B) * double(s.O) * double(s.P) * double(s.K));
    const int tile = s.algo == ConvAlgo::f43 ? 4 : 2;
    if (s.algo == ConvAlgo::f43 && !s.keep_u) {  // U made in the call from the weight, nothing kept
      return weight.defined() ? conv2d(x, weight, bias, stride, padding, s.algo)
                              : conv2d(x, weight_f16, bias, stride, padding, s.algo);
    }
    if (!weight.defined()) {  // fp16 weights: read through the GEMM; a Winograd transform kept in fp16 too
      if (s.algo != ConvAlgo::direct &&
          (!winograd_u_f16 || winograd_tile != tile || winograd_source != weight_f16.data.get())) {
        const Tensor w = weight_f16.to_float();
        const std::vector<float> u = tile == 4 ? winograd_f43_weights(w.data(), s.O, s.C)
                                               : winograd_weights(w.data(), s.O, s.C);
        auto u16 = std::make_shared<std::vector<uint16_t>>(u.size());
        const int64_t n = int64_t(u.size());
#pragma omp parallel for if (n > (1 << 16))
        for (int64_t i = 0; i < n; ++i) (*u16)[size_t(i)] = float_to_fp16(u[size_t(i)]);
        winograd_u_f16 = std::move(u16);
        winograd_tile = tile;
        winograd_source = weight_f16.data.get();
      }
      return conv2d(x, weight_f16, bias, stride, padding, s.algo, winograd_u_f16.get());
    }
    if (s.algo == ConvAlgo::direct) return conv2d(x, weight, bias, stride, padding, s.algo);
    if (!winograd_u || winograd_tile != tile || winograd_source != weight.data()) {
      winograd_u = std::make_shared<const std::vector<float>>(tile == 4 ? winograd_f43_weights(weight.data(), s.O, s.C)
                                                                        : winograd_weights(weight.data(), s.O, s.C));
      winograd_tile = tile;
      winograd_source = weight.data();
      // A weight viewed in a mapped file is not read again while the transform is kept: its
      // pages go (0.27 GB of kept transforms replace 0.07 GB of SD1.5's U-Net weights at 512x512).
      release_file_pages(weight.data(), size_t(weight.numel()) * sizeof(float));
    }
    return conv2d(x, weight, bias, stride, padding, s.algo, winograd_u.get());
  }

  // A 1x1 convolution (stride 1, no padding) that reads or writes token-major images, the
  // transformer's proj_in and proj_out:
  //   forward_to_tokens(x)          = image_to_tokens(forward(x))          [B, in, H, W] -> [B, H*W, out]
  //   forward_from_tokens(t, H, W)  = forward(tokens_to_image(t, H, W))    [B, H*W, in] -> [B, out, H, W]
  // bit for bit, each one product per image, the transpose taken by the GEMM's packing instead of
  // a pass of its own (the U-Net's time outside its ops 107 -> 72 ms a step; Xeon).
  Tensor forward_to_tokens(const Tensor& x) const {
    const detail::ConvShape s = detail::conv_shape(x.shape(), weight_shape(), stride, padding, algo);
    LDM_CHECK(s.pointwise, "conv2d: forward_to_tokens needs a 1x1 convolution of stride 1 without padding");
    const OpTimer timer(
        "conv1x1", [&] { return x.shape_str() + " -> " + std::to_string(s.O) + " tokens"; },
        2.0 * double(s.B) * double(s.O) * double(s.P) * double(s.C));
    Tensor t = Tensor::empty({s.B, s.P, s.O});
    for (int64_t b = 0; b < s.B; ++b) {  // t[b] [P, O] = x[b]^T W^T + bias, x[b] [C, P]
      const float* xb = x.data() + b * s.C * s.P;
      float* tb = t.data() + b * s.P * s.O;
      if (weight.defined()) {
        gemm_bias(true, true, s.P, s.O, s.C, xb, s.P, weight.data(), s.C, nullptr, bias_data(), tb, s.O);
      } else {
        gemm_bias(true, true, s.P, s.O, s.C, xb, s.P, weight_f16.data.get(), s.C, nullptr, bias_data(), tb, s.O);
      }
    }
    return t;
  }
  Tensor forward_from_tokens(const Tensor& t, int64_t H, int64_t W) const {
    LDM_CHECK(t.ndim() == 3 && t.dim(1) == H * W, "conv2d: forward_from_tokens expects [B, ", H * W, ", C] tokens of a ",
              H, "x", W, " image, got ", t.shape_str());
    const detail::ConvShape s =
        detail::conv_shape({t.dim(0), t.dim(2), H, W}, weight_shape(), stride, padding, algo);
    LDM_CHECK(s.pointwise, "conv2d: forward_from_tokens needs a 1x1 convolution of stride 1 without padding");
    const OpTimer timer(
        "conv1x1", [&] { return t.shape_str() + " tokens -> " + std::to_string(s.O); },
        2.0 * double(s.B) * double(s.O) * double(s.P) * double(s.C));
    Tensor y = Tensor::empty({s.B, s.O, H, W});
    for (int64_t b = 0; b < s.B; ++b) {  // y[b] [O, P] = W t[b]^T + bias, t[b] [P, C]
      const float* tk = t.data() + b * s.P * s.C;
      float* yb = y.data() + b * s.O * s.P;
      if (weight.defined()) {
        gemm_bias(false, true, s.O, s.P, s.C, weight.data(), s.C, tk, s.C, bias_data(), nullptr, yb, s.P);
      } else {
        gemm_bias(false, true, s.O, s.P, s.C, weight_f16.data.get(), s.C, tk, s.C, bias_data(), nullptr, yb, s.P);
      }
    }
    return y;
  }

  // Lets the kept Winograd transform go; the next forward makes it again.
  void drop_kept_transform() const {
    winograd_u.reset();
    winograd_u_f16.reset();
    winograd_source = nullptr;
  }

  Tensor grad_weight, grad_bias;  // [out, in, k, k], [out]: accumulated by backward (nn/grad.hpp)

  // Saves the input x. dy [B, out, Ho, Wo] -> dx [B, in, H, W] (conv2d_backward).
  // Drops the kept Winograd transform: the optimizer step that follows a backward changes the
  // weight in place, and the next forward must transform the new one.
  Tensor backward(const Tensor& x, const Tensor& dy) {
    winograd_u.reset();
    return conv2d_backward(x, weights(), dy, stride, padding, grad_weight, bias.defined() ? &grad_bias : nullptr,
                           algo);
  }

  // weight, bias (when it has one), as load() reads them (train/parameter.hpp). Whoever changes
  // the weight in place other than after a backward (which drops it) must drop winograd_u too.
  // `weight_stored`: the checkpoint's shape of the weight when not [O, C, kh, kw] (a Linear run
  // as a 1x1 convolution is stored [O, C]).
  void parameters(const std::string& prefix, std::vector<Parameter>& out, const Shape& weight_stored = {}) {
    add_parameter(out, join(prefix, "weight"), weight, grad_weight, weight_stored);
    if (bias.defined()) add_parameter(out, join(prefix, "bias"), bias, grad_bias);
  }

  // Winograd-transformed weights of F(winograd_tile x winograd_tile, 3x3), made on the first
  // call that uses them. Not synchronised: call a model from one thread at a time (its ops use
  // all the cores).
  // It is remade when the weight's storage changes (a new tensor) and after each backward.
  mutable std::shared_ptr<const std::vector<float>> winograd_u;
  // With fp16 weights, the transform is kept in fp16 (converted as the GEMMs pack it): F(4x4)'s
  // is then 2x the fp16 weight instead of 4x.
  mutable std::shared_ptr<const std::vector<uint16_t>> winograd_u_f16;
  mutable int winograd_tile = 0;
  mutable const void* winograd_source = nullptr;  // the weight's storage the transform was made from
};

}  // namespace ldm
