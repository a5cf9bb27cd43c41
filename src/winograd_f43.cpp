// Winograd F(4x4, 3x3): 4x4 outputs of a 3x3 kernel from 36 multiplications instead of 144.
// See include/ldm/nn/winograd.hpp. The same scheme as F(2x2, 3x3) with 6x6 input tiles:
//
//   B^T = | 4  0 -5  0  1  0 |   G = |  1/4    0     0  |   A^T = | 1  1  1  1  1  0 |
//         | 0 -4 -4  1  1  0 |       | -1/6 -1/6  -1/6 |         | 0  1 -1  2 -2  0 |
//         | 0  4 -4 -1  1  0 |       | -1/6  1/6  -1/6 |         | 0  1  1  4  4  0 |
//         | 0 -2 -1  2  1  0 |       | 1/24 1/12   1/6 |         | 0  1 -1  8 -8  1 |
//         | 0  2 -1 -2  1  0 |       | 1/24 -1/12  1/6 |
//         | 0  4  0 -5  0  1 |       |   0    0     1  |
//
//   for each band of tile rows (across the batch):
//     V[k][c][t] = (B^T d B)[k]      all 36 components at once, 16 tiles per vector
//     M[k][O, n] = U[k][O, C] . V[k][C, n]        36 GEMMs (U kept as U[k]^T [C, O], so that
//                                                 packing it is a plain copy, not a transpose)
//     y tiles    = A^T M A + bias
//
// The transforms multiply by small integers and by 1/4, 1/6, 1/12, 1/24 (the last three not
// exact in binary), so it rounds several times more than F(2x2, 3x3) (about 1.4e-6 relative L2
// against a double-precision loop, against 2e-7); tests/test_nn.cpp holds it to the project's
// 1e-5 tolerance for ops.
#include <omp.h>

#include <algorithm>
#include <cstring>
#include <vector>

#include "ldm/core/half.hpp"
#include "ldm/nn/gemm.hpp"
#include "ldm/nn/winograd.hpp"
#include "gemm_kernel.hpp"
#include "scratch.hpp"
#include "v16.hpp"

namespace ldm {
namespace {

using simd::load;
using simd::shuffle;
using simd::store;
using simd::to_float;
using simd::v16;
using simd::v16i;

constexpr float kBt[6][6] = {{4, 0, -5, 0, 1, 0},  {0, -4, -4, 1, 1, 0}, {0, 4, -4, -1, 1, 0},
                             {0, -2, -1, 2, 1, 0}, {0, 2, -1, -2, 1, 0}, {0, 4, 0, -5, 0, 1}};
constexpr float kG[6][3] = {{1.f / 4, 0, 0},
                            {-1.f / 6, -1.f / 6, -1.f / 6},
                            {-1.f / 6, 1.f / 6, -1.f / 6},
                            {1.f / 24, 1.f / 12, 1.f / 6},
                            {1.f / 24, -1.f / 12, 1.f / 6},
                            {0, 0, 1}};
constexpr float kAt[4][6] = {{1, 1, 1, 1, 1, 0}, {0, 1, -1, 2, -2, 0}, {0, 1, 1, 4, 4, 0}, {0, 1, -1, 8, -8, 1}};

// p[s], p[s + 4], ..., p[s + 60]: one column of 16 consecutive tiles' 6x6 inputs (s < 4).
template <int S>
inline v16 gather4(const float* p) {
  constexpr v16i pick = {S, S + 4, S + 8, S + 12, S + 16, S + 20, S + 24, S + 28, 0, 0, 0, 0, 0, 0, 0, 0};
  const v16 lo = shuffle(load(p), load(p + 16), pick);       // lanes 0..7
  const v16 hi = shuffle(load(p + 32), load(p + 48), pick);  // lanes 0..7 of the rest
  return shuffle(lo, hi, v16i{0, 1, 2, 3, 4, 5, 6, 7, 16, 17, 18, 19, 20, 21, 22, 23});
}

// U[k][c][o] = ((G g) G^T)[k] for each 3x3 kernel g = w[o][c], 16 output channels at a time, so
// that each of the 36 components is written 16 values at once, contiguously (a loop over (o, c)
// pairs wrote each value O floats from the last: 2.4 s of an SD1.5 load on the Xeon).
void transform_weights_into(const float* w, int64_t O, int64_t C, float* U) {
  const int64_t OC = O * C;
#pragma omp parallel for schedule(static)
  for (int64_t c = 0; c < C; ++c) {
    for (int64_t o0 = 0; o0 < O; o0 += 16) {
      const int64_t n = std::min<int64_t>(16, O - o0);
      v16 g[9] = {};  // g[r * 3 + s], lane l: output channel o0 + l
      for (int64_t l = 0; l < n; ++l)
        for (int r9 = 0; r9 < 9; ++r9) g[r9][l] = w[((o0 + l) * C + c) * 9 + r9];
      v16 t[6][3];  // G g
      for (int i = 0; i < 6; ++i)
        for (int s = 0; s < 3; ++s) t[i][s] = kG[i][0] * g[s] + kG[i][1] * g[3 + s] + kG[i][2] * g[6 + s];
      for (int i = 0; i < 6; ++i) {  // (G g) G^T, stored transposed: U[k][c][o]
        for (int j = 0; j < 6; ++j) {
          const v16 u = t[i][0] * kG[j][0] + t[i][1] * kG[j][1] + t[i][2] * kG[j][2];
          float* dst = U + (i * 6 + j) * OC + c * O + o0;
          if (n == 16) {
            store(dst, u);
          } else {
            for (int64_t l = 0; l < n; ++l) dst[l] = u[l];
          }
        }
      }
    }
  }
}

// conv3x3_fused (below): U made in the call for blocks of this many output channels (4 A panels)
constexpr int64_t kFusedOutputs = 4 * gemm_kernel::MR;         // 48 output channels with AVX-512
constexpr int64_t kWtStride = (kFusedOutputs + 15) / 16 * 16;  // wt's row, whole groups of 16

struct Geometry {
  int64_t B, C, H, W, tiles_w, tiles_h;
};

// Each tile row of a band keeps its own 6 input rows, zero-padded: slot i (the band's i-th tile
// row, g = b * tiles_h + ty over the batch) holds rows[c][6 i + r][1 + x] = x[b][c][4 ty - 1 + r][x].
// The vector loads of a row's last group of tiles read past its end (lanes that are then
// dropped), so the buffer has slack after the last row.
struct Band {
  std::vector<float> data;
  int64_t rows = 0, width = 0;
  const float* row(int64_t c, int64_t r) const { return data.data() + (c * rows + r) * width; }
};

void fill_band(const Geometry& g, const float* x, int64_t g0, int64_t g1, Band& band) {
  band.rows = 6 * (g1 - g0);
  band.width = 4 * g.tiles_w + 2;
  grow_scratch(band.data, size_t(g.C * band.rows * band.width + 128));
#pragma omp parallel for schedule(static)
  for (int64_t c = 0; c < g.C; ++c) {
    for (int64_t i = 0; i < g1 - g0; ++i) {
      const int64_t b = (g0 + i) / g.tiles_h, ty = (g0 + i) % g.tiles_h;
      for (int r = 0; r < 6; ++r) {
        float* dst = band.data.data() + (c * band.rows + 6 * i + r) * band.width;
        const int64_t y = 4 * ty - 1 + r;
        dst[0] = 0.0f;
        dst[band.width - 1] = 0.0f;
        if (y >= 0 && y < g.H) {
          std::memcpy(dst + 1, x + ((b * g.C + c) * g.H + y) * g.W, size_t(g.W) * sizeof(float));
        } else {
          std::fill(dst + 1, dst + 1 + g.W, 0.0f);
        }
      }
    }
  }
}

// V[k][c][t] for the band's n tiles, t = i * tiles_w + tx.
void input_transform(const Geometry& g, const Band& band, int64_t tile_rows, int64_t n, float* V) {
  const int64_t groups = (g.tiles_w + 15) / 16;
#pragma omp parallel for collapse(3) schedule(static)
  for (int64_t c = 0; c < g.C; ++c) {
    for (int64_t i = 0; i < tile_rows; ++i) {
      for (int64_t q = 0; q < groups; ++q) {
        v16 t[6][6];  // B^T d: t[xi][s]
        for (int xi = 0; xi < 6; ++xi)
          for (int s = 0; s < 6; ++s) t[xi][s] = v16{};
        for (int r = 0; r < 6; ++r) {
          const float* p = band.row(c, 6 * i + r) + 64 * q;  // tile 16q's first column
          const v16 d[6] = {gather4<0>(p),     gather4<1>(p),     gather4<2>(p),
                            gather4<3>(p),     gather4<0>(p + 4), gather4<1>(p + 4)};
          for (int xi = 0; xi < 6; ++xi) {
            const float b = kBt[xi][r];
            if (b == 0.0f) continue;
            for (int s = 0; s < 6; ++s) t[xi][s] += b * d[s];
          }
        }
        const int64_t valid = std::min<int64_t>(16, g.tiles_w - 16 * q);
        float* out = V + c * n + i * g.tiles_w + 16 * q;
        for (int xi = 0; xi < 6; ++xi) {
          for (int nu = 0; nu < 6; ++nu) {  // (B^T d) B
            v16 v{};
            for (int s = 0; s < 6; ++s)
              if (kBt[nu][s] != 0.0f) v += kBt[nu][s] * t[xi][s];
            float* dst = out + (xi * 6 + nu) * g.C * n;
            if (valid == 16) {
              store(dst, v);
            } else {
              float tmp[16];
              store(tmp, v);
              std::copy_n(tmp, valid, dst);
            }
          }
        }
      }
    }
  }
}

// y tiles of the band from M[k][O][n] (+ bias).
void output_transform(const Geometry& g, const float* M, int64_t O, int64_t g0, int64_t tile_rows, int64_t n,
                      const float* bias, float* y) {
  const int64_t groups = (g.tiles_w + 15) / 16;
#pragma omp parallel for collapse(3) schedule(static)
  for (int64_t o = 0; o < O; ++o) {
    for (int64_t i = 0; i < tile_rows; ++i) {
      for (int64_t q = 0; q < groups; ++q) {
        const int64_t valid = std::min<int64_t>(16, g.tiles_w - 16 * q);
        const float* m = M + o * n + i * g.tiles_w + 16 * q;
        v16 s[4][6];  // A^T along xi
        for (int a = 0; a < 4; ++a)
          for (int nu = 0; nu < 6; ++nu) s[a][nu] = v16{};
        for (int xi = 0; xi < 6; ++xi) {
          for (int nu = 0; nu < 6; ++nu) {
            v16 mk;
            if (valid == 16) {
              mk = load(m + (xi * 6 + nu) * O * n);
            } else {
              float tmp[16] = {};
              std::copy_n(m + (xi * 6 + nu) * O * n, valid, tmp);
              mk = load(tmp);
            }
            for (int a = 0; a < 4; ++a)
              if (kAt[a][xi] != 0.0f) s[a][nu] += kAt[a][xi] * mk;
          }
        }
        const int64_t b = (g0 + i) / g.tiles_h, ty = (g0 + i) % g.tiles_h;
        const float bo = bias ? bias[o] : 0.0f;
        for (int a = 0; a < 4; ++a) {
          float tile[4][16];  // tile[col in tile][tile]
          for (int cb = 0; cb < 4; ++cb) {
            v16 v = v16{} + bo;
            for (int nu = 0; nu < 6; ++nu)
              if (kAt[cb][nu] != 0.0f) v += kAt[cb][nu] * s[a][nu];
            store(tile[cb], v);
          }
          float* row = y + ((b * O + o) * g.H + 4 * ty + a) * g.W + 64 * q;
          for (int64_t j = 0; j < valid; ++j)
            for (int cb = 0; cb < 4; ++cb) row[4 * j + cb] = tile[cb][j];
        }
      }
    }
  }
}

// Tile rows per band: V and M up to about 48 MiB each (whole tile rows, at least one), in bands
// of equal size. Bands of many tiles matter because the GEMMs repack U for each band: at 48 MiB
// every U-Net layer at 32x32 latents, batch 2, takes one band (the 1920-channel one needs 35 MB).
int64_t band_tile_rows(const Geometry& g, int64_t O) {
  const int64_t total = g.B * g.tiles_h, target = (int64_t(12) << 20) / (36 * std::max(g.C, O));
  const int64_t rows = std::clamp<int64_t>(target / g.tiles_w, 1, total), bands = (total + rows - 1) / rows;
  return (total + bands - 1) / bands;
}

}  // namespace

std::vector<float> winograd_f43_weights(const float* w, int64_t O, int64_t C) {
  std::vector<float> U(size_t(36 * O * C));
  transform_weights_into(w, O, C, U.data());
  return U;
}

int64_t winograd_f43_scratch_bytes(int64_t B, int64_t C, int64_t H, int64_t W, int64_t O, bool u_in_call) {
  const Geometry g{B, C, H, W, W / 4, H / 4};
  const int64_t rows = band_tile_rows(g, O), n = rows * g.tiles_w;
  const int64_t band = C * 6 * rows * (4 * g.tiles_w + 2) + 128;  // fill_band's padded input rows
  const int64_t transforms = 36 * C * n + 36 * O * n + band;
  if (!u_in_call) return int64_t(sizeof(float)) * transforms + gemm_scratch_bytes(O, n, C);
  // conv3x3_fused: V as B panels, and per thread a block's transposed weights and A panels
  const int64_t kc = gemm_kernel::k_block(C), panels = (std::min(kFusedOutputs, O) + gemm_kernel::MR - 1) / gemm_kernel::MR;
  const int64_t per_thread = 9 * kc * kWtStride + 16 + 6 * panels * kc * gemm_kernel::MR;
  const int64_t n_pad = (n + gemm_kernel::NR - 1) / gemm_kernel::NR * gemm_kernel::NR;
  return int64_t(sizeof(float)) * (transforms + 36 * C * n_pad + per_thread * omp_get_max_threads());
}

namespace {
// The band loop both entry points share: for each band of tile rows (across the batch), its
// input transform V[36][C][n], then gemms(v, m, n) fills M[36][O][n], then the output tiles.
template <typename Gemms>
void for_each_band(const Geometry& g, int64_t O, const float* x, const float* bias, float* y, const Gemms& gemms) {
  const int64_t rows = band_tile_rows(g, O), total_rows = g.B * g.tiles_h;
  // Kept by the calling thread between calls (fresh pages cost more than the work done in
  // them); other threads reach them through these references only.
  thread_local std::vector<float> V_kept, M_kept;
  thread_local Band band_kept;
  std::vector<float>& V = V_kept;
  std::vector<float>& M = M_kept;
  Band& band = band_kept;
  grow_scratch(V, size_t(36 * g.C * rows * g.tiles_w));
  grow_scratch(M, size_t(36 * O * rows * g.tiles_w));
  for (int64_t g0 = 0; g0 < total_rows; g0 += rows) {
    const int64_t g1 = std::min(total_rows, g0 + rows), n = (g1 - g0) * g.tiles_w;
    fill_band(g, x, g0, g1, band);
    input_transform(g, band, g1 - g0, n, V.data());
    gemms(static_cast<const float*>(V.data()), M.data(), n);
    output_transform(g, M.data(), O, g0, g1 - g0, n, bias, y);
  }
}

// U: float, or uint16_t for a transform kept in fp16 (the GEMMs convert it as they pack it).
template <typename TU>
void conv3x3(const float* x, int64_t B, int64_t C, int64_t H, int64_t W, const TU* U, int64_t O, const float* bias,
             float* y) {
  for_each_band(Geometry{B, C, H, W, W / 4, H / 4}, O, x, bias, y, [&](const float* v, float* m, int64_t n) {
    // 36 independent GEMMs, one per thread at a time: no thread waits for another until the
    // last one is done (a GEMM split across the threads would meet at a barrier 36 times).
#pragma omp parallel for schedule(dynamic)
    for (int k = 0; k < 36; ++k)
      gemm_serial(true, false, O, n, C, 1.0f, U + k * O * C, O, v + k * C * n, n, 0.0f, m + k * O * n, n);
  });
}
// The same with U made in the call from the weight: for images under 64x64 (the U-Net's 32x32
// and 16x16 levels), where a kept U would cost 4x the weight's memory for no gain in speed
// (ConvShape::keep_u); nothing is kept. U is made straight in the
// GEMM's packed A-panel layout, for a block of kFusedOutputs output channels and one k block of
// input channels at a time, 6 of its 36 components (one row i of G g) at a time, each used by
// its GEMM right after it is made (in cache). V is packed once per band into B panels that all
// threads read; the threads take blocks of output channels.
//   Vp[k][p][c][16]  = V[k][c][16 p + t]           B panels, once per band
//   per block of output channels o0 .. o0+ob, per k block c0 .. c0+kc:
//     wt[e][o]       = w[o0 + o][c0 * 9 + e]       the block's weights, transposed (o fastest)
//     per row i of G g:  A panels of U[6 i + j][o][c], MR output channels wide, j < 6, then
//                        M[6 i + j][o0 + o, n] (+)= U[6 i + j] . V[6 i + j] over the k block
// (A U made 64 channels at a time and handed to the GEMM to pack spent two thirds of a
// [2, 1280, 16, 16] convolution making and packing U: 49 ms, of which the products 14.)

// wt[e * kWtStride + o] = w[o0 + o][c0 * 9 + e] for e < 9 kc, o < kWtStride (zero for o >= ob):
// 16 x 16 blocks transposed through registers.
template <typename TW>
void transpose_weights(const TW* w, int64_t C, int64_t o0, int64_t ob, int64_t c0, int64_t kc, float* wt) {
  const int64_t row = C * 9, e_total = 9 * kc;
  for (int64_t o = 0; o < kWtStride; o += 16) {
    const int64_t rows = std::clamp<int64_t>(ob - o, 0, 16);
    const TW* src = w + (o0 + o) * row + c0 * 9;
    int64_t e = 0;
    for (; e + 16 <= e_total; e += 16) {
      v16 r[16] = {};
      for (int64_t i = 0; i < rows; ++i) r[i] = load(src + i * row + e);
      gemm_kernel::transpose16(r);
      for (int t = 0; t < 16; ++t) store(wt + (e + t) * kWtStride + o, r[t]);
    }
    for (; e < e_total; ++e)
      for (int64_t i = 0; i < 16; ++i) wt[e * kWtStride + o + i] = i < rows ? to_float(src[i * row + e]) : 0.0f;
  }
}

template <typename TW>
void conv3x3_fused(const float* x, int64_t B, int64_t C, int64_t H, int64_t W, const TW* w, int64_t O,
                   const float* bias, float* y) {
  using gemm_kernel::MR;
  using gemm_kernel::NR;
  const int64_t blocks = (O + kFusedOutputs - 1) / kFusedOutputs, kc_max = gemm_kernel::k_block(C);
  for_each_band(Geometry{B, C, H, W, W / 4, H / 4}, O, x, bias, y, [&](const float* v, float* m, int64_t n) {
    const int64_t n_panels = (n + NR - 1) / NR;
    thread_local std::vector<float> vp_kept;  // the calling thread's; the team reads it
    std::vector<float>& vp = vp_kept;
    grow_scratch(vp, size_t(36 * C * n_panels * NR));
#pragma omp parallel for collapse(2) schedule(static)
    for (int k = 0; k < 36; ++k)
      for (int64_t p = 0; p < n_panels; ++p)
        gemm_kernel::pack_copy_rows<NR>(v + k * C * n + p * NR, n, std::min<int64_t>(NR, n - p * NR), C,
                                        vp.data() + (k * n_panels + p) * C * NR);
#pragma omp parallel for schedule(dynamic)
    for (int64_t blk = 0; blk < blocks; ++blk) {
      thread_local std::vector<float> wt_kept, ap_kept;
      const int64_t o0 = blk * kFusedOutputs, ob = std::min(kFusedOutputs, O - o0), panels = (ob + MR - 1) / MR;
      grow_scratch(wt_kept, size_t(9 * kc_max * kWtStride + 16));  // + 16: a panel's last loads read past its row
      grow_scratch(ap_kept, size_t(6 * panels * kc_max * MR));
      float* wt = wt_kept.data();
      float* ap = ap_kept.data();  // [6][panels][kc][MR]: component j's A panels
      for (int64_t c0 = 0; c0 < C; c0 += kc_max) {
        const int64_t kc = std::min(kc_max, C - c0);
        transpose_weights(w, C, o0, ob, c0, kc, wt);
        for (int i = 0; i < 6; ++i) {
          const float g0r = kG[i][0], g1r = kG[i][1], g2r = kG[i][2];
          for (int64_t q = 0; q < panels; ++q) {
            for (int64_t c = 0; c < kc; ++c) {  // MR output channels (of 16 lanes) at once
              const float* p = wt + c * 9 * kWtStride + q * MR;  // tap s9 = 3 r + s at p + s9 * kWtStride
              const auto tap = [&](int s9) { return load(p + s9 * kWtStride); };
              // t[s] = (G g)[i][s] = sum_r G[i][r] g[r][s]
              const v16 t0 = g0r * tap(0) + g1r * tap(3) + g2r * tap(6);
              const v16 t1 = g0r * tap(1) + g1r * tap(4) + g2r * tap(7);
              const v16 t2 = g0r * tap(2) + g1r * tap(5) + g2r * tap(8);
              for (int j = 0; j < 6; ++j) {
                const v16 u = t0 * kG[j][0] + t1 * kG[j][1] + t2 * kG[j][2];
                std::memcpy(ap + ((j * panels + q) * kc + c) * MR, &u, MR * sizeof(float));
              }
            }
          }
          for (int j = 0; j < 6; ++j) {
            const int k = 6 * i + j;
            gemm_kernel::multiply_panels(ob, n, kc, 1.0f, ap + j * panels * kc * MR, MR * kc,
                                         vp.data() + k * n_panels * C * NR + c0 * NR, C * NR, m + (k * O + o0) * n, n,
                                         NR, c0 == 0 ? 0.0f : 1.0f, gemm_kernel::Bias{});
          }
        }
      }
    }
  });
}
}  // namespace

void winograd_f43_conv3x3_from_weights(const float* x, int64_t B, int64_t C, int64_t H, int64_t W, const float* w,
                                       int64_t O, const float* bias, float* y) {
  conv3x3_fused(x, B, C, H, W, w, O, bias, y);
}
void winograd_f43_conv3x3_from_weights(const float* x, int64_t B, int64_t C, int64_t H, int64_t W, const uint16_t* w,
                                       int64_t O, const float* bias, float* y) {
  conv3x3_fused(x, B, C, H, W, w, O, bias, y);
}

void winograd_f43_conv3x3(const float* x, int64_t B, int64_t C, int64_t H, int64_t W, const float* U, int64_t O,
                          const float* bias, float* y) {
  conv3x3(x, B, C, H, W, U, O, bias, y);
}
void winograd_f43_conv3x3(const float* x, int64_t B, int64_t C, int64_t H, int64_t W, const uint16_t* U, int64_t O,
                          const float* bias, float* y) {
  conv3x3(x, B, C, H, W, U, O, bias, y);
}

}  // namespace ldm
