// conv2d on the GPU: torch.nn.Conv2d (groups 1, dilation 1, asymmetric padding), three ways.
//
//   y[b, o, oy, ox] = bias[o] + sum_{c, i, j} w[o, c, i, j] * x[b, c, oy*s - pad.top + i, ox*s - pad.left + j]
//
// with x read as 0 outside the image; Ho = (H + top + bottom - kh) / s + 1, likewise Wo.
// As a matrix product (the view every fast convolution takes), per image b:
//   y_b[O, P] = W[O, K] * col_b[K, P],   K = C*kh*kw taps, P = Ho*Wo output pixels,
//   col_b[(c, i, j), (oy, ox)] = x[b, c, oy*s - top + i, ox*s - left + j]    ("im2col")
// W is the weight tensor itself ([O, C, kh, kw] row-major is [O, K]).
//
// v1_direct: one thread per output element, looping over C x kh x kw. Simple and slow: every
//   input pixel is re-read from global memory by each of the O output channels and kh*kw taps.
//
// v2_implicit_gemm: the GEMM above, tiled like gemm.cu's kernels, but the B operand col is
//   never stored: each 16 x 64 tile of col is gathered into shared memory straight from x
//   while the block runs. Columns are numbered across the batch (n = b*P + p), so one launch
//   covers all images. A 256-thread block computes a 64 (channels) x 64 (pixels) tile of y,
//   each thread 4 x 4 outputs in registers. Each thread always loads the same column of the
//   col tile, so it decodes its pixel (b, oy, ox) once, not once per element.
//
// im2col_cublas (production): materialise col, but only for a slab of output pixels at a
//   time, so that the scratch buffer stays under ~64 MiB (a 3x3 conv on the VAE's
//   [1, 128, 512, 512] would need 1.2 GB of col in fp32), then one cuBLAS GEMM per slab. When
//   whole images fit, a slab is several images: col is [nb, K, P] and one strided-batched
//   GEMM (W shared, stride 0) writes nb images of y. A 1x1, stride-1, unpadded convolution
//   needs no col at all: x_b [C, H*W] already is col_b, a single batched GEMM over the input.
//   The bias is broadcast into y first and the GEMMs accumulate on top of it (beta = 1).
#include <algorithm>
#include <climits>

#include "ldm/cuda/ops.hpp"
#include "runtime.cuh"

namespace ldm::cuda {

const char* conv_impl_name(ConvImpl impl) {
  switch (impl) {
    case ConvImpl::v1_direct: return "v1_direct";
    case ConvImpl::v2_implicit_gemm: return "v2_implicit_gemm";
    case ConvImpl::im2col_cublas: return "im2col_cublas";
  }
  return "?";
}

namespace {

// The sizes of one convolution (mirrors ldm::detail::conv_shape of include/ldm/nn/conv2d.hpp).
struct ConvDims {
  int64_t B, C, H, W, O, kh, kw, Ho, Wo, P, K;
  int stride, top, left;
};

ConvDims conv_dims(const DeviceTensor& x, const DeviceTensor& w, const DeviceTensor& bias, int stride, Padding pad) {
  LDM_CHECK(x.ndim() == 4, "conv2d: expected a 4-d input [B, C, H, W], got ", x.shape_str());
  LDM_CHECK(w.ndim() == 4, "conv2d: expected a 4-d weight [O, C, kh, kw], got ", w.shape_str());
  LDM_CHECK(stride >= 1, "conv2d: stride must be at least 1, got ", stride);
  LDM_CHECK(pad.top >= 0 && pad.left >= 0 && pad.bottom >= 0 && pad.right >= 0, "conv2d: negative padding (",
            pad.top, ", ", pad.left, ", ", pad.bottom, ", ", pad.right, ")");
  ConvDims d{};
  d.B = x.dim(0), d.C = x.dim(1), d.H = x.dim(2), d.W = x.dim(3);
  d.O = w.dim(0), d.kh = w.dim(2), d.kw = w.dim(3);
  LDM_CHECK(w.dim(1) == d.C, "conv2d: weight ", w.shape_str(), " expects ", w.dim(1), " input channels, got input ",
            x.shape_str());
  LDM_CHECK(d.H + pad.top + pad.bottom >= d.kh && d.W + pad.left + pad.right >= d.kw, "conv2d: input ",
            x.shape_str(), " too small for a ", d.kh, "x", d.kw, " kernel");
  d.Ho = (d.H + pad.top + pad.bottom - d.kh) / stride + 1;
  d.Wo = (d.W + pad.left + pad.right - d.kw) / stride + 1;
  d.P = d.Ho * d.Wo;
  d.K = d.C * d.kh * d.kw;
  d.stride = stride, d.top = pad.top, d.left = pad.left;
  LDM_CHECK(w.dtype() == x.dtype(), "conv2d: input is ", dtype_name(x.dtype()), ", weight ", dtype_name(w.dtype()));
  if (bias.defined()) {
    LDM_CHECK(bias.numel() == d.O, "conv2d: bias ", bias.shape_str(), " does not match ", d.O, " output channels");
    LDM_CHECK(bias.dtype() == x.dtype(), "conv2d: input is ", dtype_name(x.dtype()), ", bias ",
              dtype_name(bias.dtype()));
  }
  return d;
}

// ---- v1: one thread per output element ----------------------------------------------------
template <typename T>
__global__ void conv_v1_direct_kernel(ConvDims d, const T* __restrict__ x, const T* __restrict__ w,
                                      const T* __restrict__ bias, T* __restrict__ y) {
  const int64_t idx = int64_t(blockIdx.x) * blockDim.x + threadIdx.x;  // over y [B, O, Ho, Wo]
  if (idx >= d.B * d.O * d.P) return;
  const int64_t ox = idx % d.Wo, oy = idx / d.Wo % d.Ho, o = idx / d.P % d.O, b = idx / (d.P * d.O);
  float acc = bias ? to_float<T>(bias[o]) : 0.0f;
  for (int64_t c = 0; c < d.C; ++c) {
    const T* xc = x + (b * d.C + c) * d.H * d.W;
    const T* wc = w + (o * d.C + c) * d.kh * d.kw;
    for (int64_t i = 0; i < d.kh; ++i) {
      const int64_t iy = oy * d.stride - d.top + i;
      if (iy < 0 || iy >= d.H) continue;
      for (int64_t j = 0; j < d.kw; ++j) {
        const int64_t ix = ox * d.stride - d.left + j;
        if (ix < 0 || ix >= d.W) continue;
        acc += to_float<T>(wc[i * d.kw + j]) * to_float<T>(xc[iy * d.W + ix]);
      }
    }
  }
  y[idx] = from_float<T>(acc);
}

// ---- v2: implicit GEMM, col tiles gathered into shared memory ------------------------------
// GEMM view over the whole batch: y[O, N] = W[O, K] col[K, N], N = B*P, column n = b*P + p.
// grid (ceil(N / 64), ceil(O / 64)), 256 threads as 16 x 16, each 4 x 4 outputs.
constexpr int kCM = 64, kCN = 64, kCK = 16, kCT = 4, kConvThreads = 256;
static_assert((kCM / kCT) * (kCN / kCT) == kConvThreads, "one thread per 4x4 sub-tile");
static_assert(kConvThreads % kCN == 0 && kCM * kCK % kConvThreads == 0 && kCN * kCK % kConvThreads == 0,
              "tile loads divide evenly");

template <typename T>
__global__ void __launch_bounds__(kConvThreads)
    conv_v2_implicit_gemm_kernel(ConvDims d, const T* __restrict__ x, const T* __restrict__ w,
                                 const T* __restrict__ bias, T* __restrict__ y) {
  __shared__ float Ws[kCK][kCM + 4];  // Ws[k][m] = W[o0 + m, k0 + k] (transposed; padded rows)
  __shared__ float Xs[kCK][kCN];      // Xs[k][n] = col[k0 + k, n0 + n]
  const int t = threadIdx.x;
  const int ty = t / (kCN / kCT), tx = t % (kCN / kCT);
  const int64_t o0 = int64_t(blockIdx.y) * kCM, n0 = int64_t(blockIdx.x) * kCN;
  const int64_t N = d.B * d.P, khw = d.kh * d.kw;

  // The column of Xs this thread fills (the same for every K step, as 256 % 64 == 0) and the
  // first of its rows; decode its output pixel once: image b, output position (oy, ox).
  const int xn = t % kCN, xk0 = t / kCN;
  const int64_t gn = n0 + xn;
  const bool col_valid = gn < N;
  const int64_t b = col_valid ? gn / d.P : 0, p = col_valid ? gn % d.P : 0;
  const int64_t iy0 = p / d.Wo * d.stride - d.top, ix0 = p % d.Wo * d.stride - d.left;
  const T* xb = x + b * d.C * d.H * d.W;

  float acc[kCT][kCT];
#pragma unroll
  for (int i = 0; i < kCT; ++i)
#pragma unroll
    for (int j = 0; j < kCT; ++j) acc[i][j] = 0.0f;

  for (int64_t k0 = 0; k0 < d.K; k0 += kCK) {
    // 1. Weight tile, 64 x 16, 4 elements per thread; consecutive threads read along k
    //    (rows of W are contiguous).
#pragma unroll
    for (int r = 0; r < kCM * kCK / kConvThreads; ++r) {
      const int idx = t + r * kConvThreads, m = idx / kCK, k = idx % kCK;
      const int64_t go = o0 + m, gk = k0 + k;
      Ws[k][m] = (go < d.O && gk < d.K) ? to_float<T>(w[go * d.K + gk]) : 0.0f;
    }
    // 2. col tile, 16 x 64, gathered from x: row k of col is tap (c, i, j); 0 in the padding.
#pragma unroll
    for (int r = 0; r < kCN * kCK / kConvThreads; ++r) {
      const int k = xk0 + r * (kConvThreads / kCN);
      const int64_t gk = k0 + k;
      float v = 0.0f;
      if (col_valid && gk < d.K) {
        const int64_t c = gk / khw, i = gk % khw / d.kw, j = gk % d.kw;
        const int64_t iy = iy0 + i, ix = ix0 + j;
        if (iy >= 0 && iy < d.H && ix >= 0 && ix < d.W) v = to_float<T>(xb[(c * d.H + iy) * d.W + ix]);
      }
      Xs[k][xn] = v;
    }
    __syncthreads();
    // 3. Outer products from shared memory into the 4 x 4 register tile.
#pragma unroll
    for (int kk = 0; kk < kCK; ++kk) {
      float a[kCT], bv[kCT];
#pragma unroll
      for (int i = 0; i < kCT; ++i) a[i] = Ws[kk][ty + i * (kCM / kCT)];
#pragma unroll
      for (int j = 0; j < kCT; ++j) bv[j] = Xs[kk][tx + j * (kCN / kCT)];
#pragma unroll
      for (int i = 0; i < kCT; ++i)
#pragma unroll
        for (int j = 0; j < kCT; ++j) acc[i][j] += a[i] * bv[j];
    }
    __syncthreads();
  }
  // 4. Scatter the tile to y [B, O, P] (+ bias), skipping rows/columns outside it.
#pragma unroll
  for (int j = 0; j < kCT; ++j) {
    const int64_t n = n0 + tx + j * (kCN / kCT);
    if (n >= N) continue;
    const int64_t nb = n / d.P, np = n % d.P;
#pragma unroll
    for (int i = 0; i < kCT; ++i) {
      const int64_t o = o0 + ty + i * (kCM / kCT);
      if (o >= d.O) continue;
      const float bo = bias ? to_float<T>(bias[o]) : 0.0f;
      y[(nb * d.O + o) * d.P + np] = from_float<T>(acc[i][j] + bo);
    }
  }
}

// ---- im2col + cuBLAS ----------------------------------------------------------------------
// col[bb, k, q] = x[b0 + bb, c, iy, ix] for the slab's output pixels p = p0 + q (q < np) of
// images b0 .. b0 + nb - 1; k = (c, i, j). grid (nb * K, ceil(np / 256)): block row
// blockIdx.x is one row (bb, k) of col, decoded once per block; its threads run along the
// row, so the writes are coalesced (and, for stride 1, so are the reads along an input row).
// Index arithmetic is 32-bit: a slab holds at most 64 MiB of col.
template <typename T>
__global__ void im2col_kernel(ConvDims d, const T* __restrict__ x, int64_t b0, int64_t p0, int np,
                              T* __restrict__ col) {
  const int q = blockIdx.y * blockDim.x + threadIdx.x;
  if (q >= np) return;
  const int row = blockIdx.x, K = int(d.K), khw = int(d.kh * d.kw), kw = int(d.kw);
  const int bb = row / K, k = row % K, c = k / khw, i = k % khw / kw, j = k % kw;
  const int p = int(p0) + q, Wo = int(d.Wo), oy = p / Wo, ox = p - oy * Wo;
  const int iy = oy * d.stride - d.top + i, ix = ox * d.stride - d.left + j;
  T v = from_float<T>(0.0f);
  if (iy >= 0 && iy < d.H && ix >= 0 && ix < d.W) v = x[(((b0 + bb) * d.C + c) * d.H + iy) * d.W + ix];
  col[int64_t(row) * np + q] = v;
}

// y[b, o, p] = bias[o]: the GEMMs then add W col on top (beta = 1).
// grid (B * O, ceil(P / 256)): one block row per (b, o) plane.
template <typename T>
__global__ void broadcast_channels_kernel(T* __restrict__ y, const T* __restrict__ bias, int64_t O, int64_t P) {
  const int64_t p = int64_t(blockIdx.y) * blockDim.x + threadIdx.x;
  if (p < P) y[int64_t(blockIdx.x) * P + p] = bias[blockIdx.x % O];
}

constexpr int64_t kColBudgetBytes = int64_t(64) << 20;  // the largest col buffer a conv allocates

void conv_im2col_cublas(const ConvDims& d, const DeviceTensor& x, const DeviceTensor& w, const DeviceTensor& bias,
                        DeviceTensor& y, bool pointwise) {
  const DType dt = x.dtype();
  const int64_t elt = dtype_bytes(dt);
  float beta = 0.0f;
  if (bias.defined()) {
    const int64_t gy = ceil_div(d.P, 256);
    LDM_CHECK(d.B * d.O <= INT_MAX && gy <= 65535, "conv2d: output ", y.shape_str(), " too large for the bias grid");
    const dim3 grid(unsigned(d.B * d.O), unsigned(gy));
    LDM_DISPATCH_DTYPE(dt, T, {
      broadcast_channels_kernel<T><<<grid, 256, 0, stream()>>>(y.ptr<T>(), bias.ptr<T>(), d.O, d.P);
      LDM_KERNEL_CHECK();
    });
    beta = 1.0f;
  }
  if (pointwise) {  // y_b[O, P] = W[O, C] x_b[C, P] for every b: one strided-batched GEMM
    gemm(false, false, d.O, d.P, d.C, 1.0f, w.data(), std::max<int64_t>(1, d.C), x.data(), d.P, beta, y.data(), d.P,
         dt, GemmImpl::cublas, d.B, 0, d.C * d.P, d.O * d.P);
    return;
  }
  // Slab sizes: whole images (nb of them) when at least one fits the budget, else np pixels of
  // one image, a multiple of 64 (the GEMM likes aligned, round column blocks).
  const int64_t image_bytes = std::max<int64_t>(1, d.K * d.P * elt);
  int64_t nb = 1, np = d.P;
  if (image_bytes <= kColBudgetBytes) {
    nb = std::min<int64_t>(d.B, kColBudgetBytes / image_bytes);
  } else {
    np = std::max<int64_t>(64, kColBudgetBytes / (d.K * elt) / 64 * 64);
    np = std::min(np, d.P);
  }
  // 32-bit index arithmetic in im2col_kernel, grid y <= 65535: both hold for a 64 MiB slab.
  LDM_CHECK(nb * d.K * np <= INT_MAX && ceil_div(np, 256) <= 65535 && d.P <= INT_MAX && d.H * d.W <= INT_MAX,
            "conv2d (im2col_cublas): input of ", d.B, "x", d.C, "x", d.H, "x", d.W, " too large");
  auto col = scratch_alloc(nb * d.K * np * elt);  // freed in stream order after the last GEMM
  char* yb = static_cast<char*>(y.data());
  for (int64_t b0 = 0; b0 < d.B; b0 += nb) {
    const int64_t cb = std::min(nb, d.B - b0);
    for (int64_t p0 = 0; p0 < d.P; p0 += np) {
      const int64_t cp = std::min(np, d.P - p0);
      const dim3 grid(unsigned(cb * d.K), unsigned(ceil_div(cp, 256)));
      if (cb * d.K > 0) {
        LDM_DISPATCH_DTYPE(dt, T, {
          im2col_kernel<T><<<grid, 256, 0, stream()>>>(d, x.ptr<T>(), b0, p0, int(cp), static_cast<T*>(col.get()));
          LDM_KERNEL_CHECK();
        });
      }
      // y[b0 + bb, :, p0 : p0 + cp] (ldc P) = W[O, K] col[bb] [K, cp], for bb < cb.
      void* c = yb + (b0 * d.O * d.P + p0) * elt;
      gemm(false, false, d.O, cp, d.K, 1.0f, w.data(), std::max<int64_t>(1, d.K), col.get(), cp, beta, c, d.P, dt,
           GemmImpl::cublas, cb, 0, d.K * cp, d.O * d.P);
    }
  }
}

}  // namespace

DeviceTensor conv2d(const DeviceTensor& x, const DeviceTensor& weight, const DeviceTensor& bias, int stride,
                    Padding pad, ConvImpl impl) {
  const ConvDims d = conv_dims(x, weight, bias, stride, pad);
  DeviceTensor y = DeviceTensor::empty({d.B, d.O, d.Ho, d.Wo}, x.dtype());
  if (y.numel() == 0) return y;
  const bool pointwise =
      d.kh == 1 && d.kw == 1 && stride == 1 && pad.top == 0 && pad.left == 0 && pad.bottom == 0 && pad.right == 0;
  switch (impl) {
    case ConvImpl::v1_direct: {
      LDM_DISPATCH_DTYPE(x.dtype(), T, {
        conv_v1_direct_kernel<T><<<grid_1d(y.numel()), 256, 0, stream()>>>(
            d, x.ptr<T>(), weight.ptr<T>(), bias.defined() ? bias.ptr<T>() : nullptr, y.ptr<T>());
        LDM_KERNEL_CHECK();
      });
      break;
    }
    case ConvImpl::v2_implicit_gemm: {
      const int64_t gy = ceil_div(d.O, kCM);
      LDM_CHECK(gy <= 65535, "conv2d (v2_implicit_gemm): ", d.O, " output channels exceed the grid");
      const dim3 grid(unsigned(ceil_div(d.B * d.P, kCN)), unsigned(gy));
      LDM_DISPATCH_DTYPE(x.dtype(), T, {
        conv_v2_implicit_gemm_kernel<T><<<grid, kConvThreads, 0, stream()>>>(
            d, x.ptr<T>(), weight.ptr<T>(), bias.defined() ? bias.ptr<T>() : nullptr, y.ptr<T>());
        LDM_KERNEL_CHECK();
      });
      break;
    }
    case ConvImpl::im2col_cublas:
    default:
      conv_im2col_cublas(d, x, weight, bias, y, pointwise);
      break;
  }
  return y;
}

}  // namespace ldm::cuda
