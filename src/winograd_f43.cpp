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
#include <type_traits>
#include <vector>

#if defined(__AVX512F__)
#include <immintrin.h>
#endif

#include "ldm/core/half.hpp"
#include "ldm/nn/gemm.hpp"
#include "ldm/nn/winograd.hpp"
#include "v16.hpp"

namespace ldm {
namespace {

using simd::load;
using simd::shuffle;
using simd::store;
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
  band.data.resize(size_t(g.C * band.rows * band.width + 128));
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

int64_t winograd_f43_scratch_bytes(int64_t B, int64_t C, int64_t H, int64_t W, int64_t O) {
  const Geometry g{B, C, H, W, W / 4, H / 4};
  const int64_t rows = band_tile_rows(g, O), n = rows * g.tiles_w;
  const int64_t band = C * 6 * rows * (4 * g.tiles_w + 2) + 128;  // fill_band's padded input rows
  return int64_t(sizeof(float)) * (36 * C * n + 36 * O * n + band) + gemm_scratch_bytes(O, n, C);
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
  V.resize(size_t(36 * g.C * rows * g.tiles_w));
  M.resize(size_t(36 * O * rows * g.tiles_w));
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
// The same with U made in the call from the weight, for kFusedOutputs output channels at a
// time and 6 of its 36 components (one row i of G g) at a time, each 6 x kFusedOutputs x C
// values used by their 6 GEMMs right after they are made (in cache): for small images (the
// U-Net's 16x16 level), where a kept U would cost 4x the weight's memory; nothing is kept.
// The threads take blocks of output channels; V (all tiles' input transforms) is shared.
//   wt[s][o][c] = w[o0 + o][c][s]                 the block's weights, 9 planes (one copy)
//   for each row i of G g:  Ui[j][o][c] = ((G g)[i] G^T)[j] for j < 6, then the 6 GEMMs
//                           M[6 i + j][o0 + o, n] = Ui[j] . V[6 i + j]
constexpr int64_t kFusedOutputs = 64;

float to_float(float v) { return v; }
float to_float(uint16_t v) { return fp16_to_float(v); }

template <typename TW>
void conv3x3_fused(const float* x, int64_t B, int64_t C, int64_t H, int64_t W, const TW* w, int64_t O,
                   const float* bias, float* y) {
  const int64_t blocks = (O + kFusedOutputs - 1) / kFusedOutputs, c16 = C / 16 * 16;
  for_each_band(Geometry{B, C, H, W, W / 4, H / 4}, O, x, bias, y, [&](const float* v, float* m, int64_t n) {
#pragma omp parallel for schedule(dynamic)
    for (int64_t blk = 0; blk < blocks; ++blk) {
      thread_local std::vector<float> wt_kept, ui_kept;
      const int64_t o0 = blk * kFusedOutputs, ob = std::min(kFusedOutputs, O - o0);
      wt_kept.resize(size_t(9 * kFusedOutputs * C));
      ui_kept.resize(size_t(6 * kFusedOutputs * C));
      float* wt = wt_kept.data();  // [9][ob][C]
      float* ui = ui_kept.data();  // [6][ob][C]
      for (int64_t o = 0; o < ob; ++o) {
        const TW* src = w + (o0 + o) * C * 9;
        int64_t c = 0;
#if defined(__AVX512F__)
        if constexpr (std::is_same_v<TW, float>) {  // 16 channels' tap s9 at a time: a stride-9 gather
          const __m512i taps = _mm512_mullo_epi32(_mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15),
                                                  _mm512_set1_epi32(9));
          for (; c < c16; c += 16)
            for (int s9 = 0; s9 < 9; ++s9)
              _mm512_storeu_ps(wt + (s9 * ob + o) * C + c, _mm512_i32gather_ps(taps, src + c * 9 + s9, 4));
        } else {  // fp16: 32-bit gathers at 2-byte steps, the low half of each is the value; they read
                  // 2 bytes past the value, so not for the weight's last 16 channels
          const __m512i taps = _mm512_mullo_epi32(_mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15),
                                                  _mm512_set1_epi32(9));
          const int64_t end = o0 + o == O - 1 ? (C - 1) / 16 * 16 : c16;
          for (; c < end; c += 16)
            for (int s9 = 0; s9 < 9; ++s9) {
              const __m512i bits = _mm512_i32gather_epi32(taps, src + c * 9 + s9, 2);
              _mm512_storeu_ps(wt + (s9 * ob + o) * C + c, _mm512_cvtph_ps(_mm512_cvtepi32_epi16(bits)));
            }
        }
#endif
        for (; c < C; ++c)
          for (int s9 = 0; s9 < 9; ++s9) wt[(s9 * ob + o) * C + c] = to_float(src[c * 9 + s9]);
      }
      for (int i = 0; i < 6; ++i) {
        const float g0r = kG[i][0], g1r = kG[i][1], g2r = kG[i][2];
        for (int64_t o = 0; o < ob; ++o) {
          const float* p[9];
          for (int s9 = 0; s9 < 9; ++s9) p[s9] = wt + (s9 * ob + o) * C;
          float* dst = ui + o * C;
          auto row = [&](auto t0, auto t1, auto t2, int64_t c, auto store_j) {
            for (int j = 0; j < 6; ++j) store_j(j, c, t0 * kG[j][0] + t1 * kG[j][1] + t2 * kG[j][2]);
          };
          int64_t c = 0;
          for (; c < c16; c += 16) {  // t[s] = (G g)[i][s] = sum_r G[i][r] g[r][s], 16 channels at once
            const v16 t0 = g0r * load(p[0] + c) + g1r * load(p[3] + c) + g2r * load(p[6] + c);
            const v16 t1 = g0r * load(p[1] + c) + g1r * load(p[4] + c) + g2r * load(p[7] + c);
            const v16 t2 = g0r * load(p[2] + c) + g1r * load(p[5] + c) + g2r * load(p[8] + c);
            row(t0, t1, t2, c, [&](int j, int64_t cc, v16 u) { store(dst + j * ob * C + cc, u); });
          }
          for (; c < C; ++c) {
            const float t0 = g0r * p[0][c] + g1r * p[3][c] + g2r * p[6][c];
            const float t1 = g0r * p[1][c] + g1r * p[4][c] + g2r * p[7][c];
            const float t2 = g0r * p[2][c] + g1r * p[5][c] + g2r * p[8][c];
            row(t0, t1, t2, c, [&](int j, int64_t cc, float u) { dst[j * ob * C + cc] = u; });
          }
        }
        for (int j = 0; j < 6; ++j) {
          const int k = 6 * i + j;
          gemm_serial(false, false, ob, n, C, 1.0f, ui + j * ob * C, C, v + k * C * n, n, 0.0f, m + (k * O + o0) * n,
                      n);
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
