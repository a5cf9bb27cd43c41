// Winograd F(2x2, 3x3) convolution: see include/ldm/nn/winograd.hpp for the algorithm.
//
//   U[k][o][c]  = (G g G^T)[k]                      16 x O x C, once per call
//   for each chunk of tiles:
//     for k in 0..15:  M[k][O, chunk] = U[k] . V_k    (V_k's panels computed as the GEMM packs)
//     y tiles          = A^T M A + bias
//
// Tiles are numbered across the batch, row by row: tile t = (b, ty, tx), its outputs
// y[b, :, 2ty .. 2ty+1, 2tx .. 2tx+1], its input d = x[b, :, 2ty-1 .. 2ty+2, 2tx-1 .. 2tx+2]
// (zero outside the image: the padding). A GEMM panel is 16 consecutive tiles, all in one tile
// row because the tiles per row (W / 2) are a multiple of 16, so each panel row is a vector op.
#include "ldm/nn/winograd.hpp"

#include <omp.h>

#include <algorithm>
#include <cstring>
#include <vector>

#include "ldm/nn/gemm.hpp"
#include "scratch.hpp"
#include "v16.hpp"

namespace ldm {
namespace {

using simd::load;
using simd::shuffle;
using simd::store;
using simd::v16;
using simd::v16i;

static_assert(kGemmPanelWidth == 16, "a GEMM panel is 16 tiles, one v16");

// p[0], p[2], ..., p[30]: every other float of 32.
inline v16 load_even(const float* p) {
  return shuffle(load(p), load(p + 16), v16i{0, 2, 4, 6, 8, 10, 12, 14, 16, 18, 20, 22, 24, 26, 28, 30});
}

// Row xi of B^T has two non-zeros: V row xi = sa * d[ra] + sb * d[rb] (and the same along columns).
struct Pair {
  int a, b;
  float sa, sb;
};
constexpr Pair kBt[4] = {{0, 2, 1.f, -1.f}, {1, 2, 1.f, 1.f}, {1, 2, -1.f, 1.f}, {1, 3, 1.f, -1.f}};

// U[k][o][c] = (G g G^T)[k / 4][k % 4] for each 3x3 kernel g = w[o][c].
void transform_weights_into(const float* w, int64_t O, int64_t C, float* U) {
  const int64_t OC = O * C;
#pragma omp parallel for schedule(static)
  for (int64_t oc = 0; oc < OC; ++oc) {
    const float* g = w + oc * 9;  // g[r * 3 + s]
    float t[4][3];                // G g
    for (int s = 0; s < 3; ++s) {
      const float g0 = g[s], g1 = g[3 + s], g2 = g[6 + s];
      t[0][s] = g0;
      t[1][s] = 0.5f * (g0 + g1 + g2);
      t[2][s] = 0.5f * (g0 - g1 + g2);
      t[3][s] = g2;
    }
    for (int i = 0; i < 4; ++i) {  // (G g) G^T
      const float u[4] = {t[i][0], 0.5f * (t[i][0] + t[i][1] + t[i][2]), 0.5f * (t[i][0] - t[i][1] + t[i][2]),
                          t[i][2]};
      for (int j = 0; j < 4; ++j) U[(i * 4 + j) * OC + oc] = u[j];
    }
  }
}

struct Geometry {
  int64_t C, H, W, tiles_w;
};

// The input rows a band of tile rows [ty0, ty1) of one image reads, zero-padded on every side:
// band[c][r][1 + x] = x[c][2 ty0 - 1 + r][x], r < 2 (ty1 - ty0) + 2, row length W + 4 (one zero
// column on the left, three on the right: the vector loads of the last panel read two past the
// padded tile). With the padding explicit, packing a panel needs no bounds checks.
struct Band {
  std::vector<float> data;
  int64_t rows = 0, width = 0;
  const float* row(int64_t c, int64_t r) const { return data.data() + (c * rows + r) * width; }
};

void fill_band(const Geometry& g, const float* image, int64_t ty0, int64_t ty1, Band& band) {
  band.rows = 2 * (ty1 - ty0) + 2;
  band.width = g.W + 4;
  grow_scratch(band.data, size_t(g.C * band.rows * band.width));
#pragma omp parallel for schedule(static)
  for (int64_t c = 0; c < g.C; ++c) {
    for (int64_t r = 0; r < band.rows; ++r) {
      float* dst = band.data.data() + (c * band.rows + r) * band.width;
      const int64_t y = 2 * ty0 - 1 + r;
      std::fill(dst, dst + band.width, 0.0f);
      if (y >= 0 && y < g.H) std::memcpy(dst + 1, image + (c * g.H + y) * g.W, size_t(g.W) * sizeof(float));
    }
  }
}

// Panel of V_k (k = 4 xi + nu): dst[c * 16 + j] = V_k[k0 + c, tile t0 + j] for kc channels, t0
// counted from the band's first tile.
void pack_v_panel(const Geometry& g, const Band& band, int xi, int nu, int64_t t0, int64_t k0, int64_t kc,
                  float* dst) {
  const int64_t ty = t0 / g.tiles_w, x0 = 2 * (t0 % g.tiles_w);  // band row / column of the tile's corner
  const Pair row = kBt[xi], col = kBt[nu];
  for (int64_t c = 0; c < kc; ++c) {
    // Column s of tile j's input is band column x0 + 2 j + s.
    const float* ra_row = band.row(k0 + c, 2 * ty + row.a) + x0;
    const float* rb_row = band.row(k0 + c, 2 * ty + row.b) + x0;
    const v16 ra = col.sa * load_even(ra_row + col.a) + col.sb * load_even(ra_row + col.b);
    const v16 rb = col.sa * load_even(rb_row + col.a) + col.sb * load_even(rb_row + col.b);
    store(dst + c * 16, row.sa * ra + row.sb * rb);
  }
}

// Output tiles t .. t+15 of channel o (t counted from the band's first tile, ty0) from
// M[k][o][t] (ldm = tiles in the band): y_image[o, 2 ty .. 2 ty + 1, 2 tx .. 2 tx + 31] = A^T M A + bias.
void output_tiles(const Geometry& g, const float* M, int64_t O, int64_t ldm, int64_t o, int64_t t, int64_t ty0,
                  float bias, float* y_image) {
  const int64_t plane = O * ldm;
  const float* m = M + o * ldm + t;
  v16 s[2][4];  // A^T along xi: s[a][nu]
  for (int nu = 0; nu < 4; ++nu) {
    const v16 m0 = load(m + (0 * 4 + nu) * plane), m1 = load(m + (1 * 4 + nu) * plane);
    const v16 m2 = load(m + (2 * 4 + nu) * plane), m3 = load(m + (3 * 4 + nu) * plane);
    s[0][nu] = m0 + m1 + m2;
    s[1][nu] = m1 - m2 - m3;
  }
  const int64_t ty = ty0 + t / g.tiles_w, tx0 = t % g.tiles_w;
  float* out = y_image + (o * g.H + 2 * ty) * g.W + 2 * tx0;
  for (int a = 0; a < 2; ++a) {  // then along nu, and the two columns of each tile interleaved
    const v16 y0 = s[a][0] + s[a][1] + s[a][2] + bias;
    const v16 y1 = s[a][1] - s[a][2] - s[a][3] + bias;
    store(out + a * g.W, shuffle(y0, y1, v16i{0, 16, 1, 17, 2, 18, 3, 19, 4, 20, 5, 21, 6, 22, 7, 23}));
    store(out + a * g.W + 16,
          shuffle(y0, y1, v16i{8, 24, 9, 25, 10, 26, 11, 27, 12, 28, 13, 29, 14, 30, 15, 31}));
  }
}

}  // namespace

// Tile rows per band: M for a band is about 16 MiB (at least one tile row).
int64_t band_tile_rows(int64_t H, int64_t W, int64_t O) {
  const int64_t tiles_w = W / 2, target = (int64_t(4) << 20) / (16 * O);
  return std::clamp<int64_t>(target / tiles_w, 1, H / 2);
}

int64_t winograd_scratch_bytes(int64_t B, int64_t C, int64_t H, int64_t W, int64_t O) {
  (void)B;
  const int64_t rows = band_tile_rows(H, W, O), tiles = rows * (W / 2);
  return int64_t(sizeof(float)) * (16 * O * tiles + C * (2 * rows + 2) * (W + 4)) + gemm_scratch_bytes(O, tiles, C);
}

std::vector<float> winograd_weights(const float* w, int64_t O, int64_t C) {
  std::vector<float> U(size_t(16 * O * C));
  transform_weights_into(w, O, C, U.data());
  return U;
}

namespace {
// U: float, or uint16_t for a transform kept in fp16 (the GEMMs convert it as they pack it).
template <typename TU>
void conv3x3(const float* x, int64_t B, int64_t C, int64_t H, int64_t W, const TU* U, int64_t O, const float* bias,
             float* y) {
  const Geometry g{C, H, W, W / 2};
  const int64_t tiles_h = H / 2, rows = band_tile_rows(H, W, O);
  // Kept by the calling thread between calls, like the GEMM's panels (fresh pages cost more than
  // the work done in them here). Other threads reach them through these references only.
  thread_local std::vector<float> M_kept;
  thread_local Band band_kept;
  std::vector<float>& M = M_kept;
  Band& band = band_kept;
  grow_scratch(M, size_t(16 * O * rows * g.tiles_w));
  float* const m = M.data();
  for (int64_t b = 0; b < B; ++b) {
    const float* image = x + b * C * H * W;
    float* y_image = y + b * O * H * W;
    for (int64_t ty0 = 0; ty0 < tiles_h; ty0 += rows) {
      const int64_t ty1 = std::min(tiles_h, ty0 + rows), n = (ty1 - ty0) * g.tiles_w;  // n % 16 == 0
      fill_band(g, image, ty0, ty1, band);
      // 16 independent GEMMs, one per thread at a time (gemm_packed_b runs on the calling
      // thread inside a parallel region): no barrier between them.
#pragma omp parallel for schedule(dynamic)
      for (int k = 0; k < 16; ++k) {
        const int xi = k / 4, nu = k % 4;
        auto pack = [&g, &band, xi, nu](int64_t k0, int64_t kc, int64_t j0, float* dst) {
          pack_v_panel(g, band, xi, nu, j0, k0, kc, dst);
        };
        gemm_packed_b(O, n, C, U + k * O * C, C, pack, nullptr, m + k * O * n, n);
      }
      const int64_t groups = n / 16;
#pragma omp parallel for collapse(2) schedule(static)
      for (int64_t o = 0; o < O; ++o)
        for (int64_t q = 0; q < groups; ++q) output_tiles(g, m, O, n, o, q * 16, ty0, bias ? bias[o] : 0.0f, y_image);
    }
  }
}
}  // namespace

void winograd_conv3x3(const float* x, int64_t B, int64_t C, int64_t H, int64_t W, const float* U, int64_t O,
                      const float* bias, float* y) {
  conv3x3(x, B, C, H, W, U, O, bias, y);
}
void winograd_conv3x3(const float* x, int64_t B, int64_t C, int64_t H, int64_t W, const uint16_t* U, int64_t O,
                      const float* bias, float* y) {
  conv3x3(x, B, C, H, W, U, O, bias, y);
}

// ---- the weight gradient (winograd.hpp): channels-last transforms, 16 GEMMs over tiles

namespace {

// t = x [B, C, H, W] as [B, H + 2p, W + 2p, C] with a zero border of p; C a multiple of 16.
// Each output pixel's 16-channel groups are written whole, from 16 input rows read side by side.
void to_nhwc(const float* x, int64_t B, int64_t C, int64_t H, int64_t W, int64_t p, std::vector<float>& t) {
  const int64_t Hp = H + 2 * p, Wp = W + 2 * p;
  t.resize(size_t(B * Hp * Wp * C));
#pragma omp parallel for collapse(2) schedule(static)
  for (int64_t b = 0; b < B; ++b)
    for (int64_t yp = 0; yp < Hp; ++yp) {
      float* row = t.data() + (b * Hp + yp) * Wp * C;  // row[xp * C + c]
      const int64_t y = yp - p;
      if (y < 0 || y >= H) {
        std::fill(row, row + Wp * C, 0.0f);
        continue;
      }
      std::fill(row, row + p * C, 0.0f);
      std::fill(row + (p + W) * C, row + Wp * C, 0.0f);
      for (int64_t c0 = 0; c0 < C; c0 += 16) {
        const float* src = x + ((b * C + c0) * H + y) * W;  // src[cc * H * W + i]: channel c0 + cc
        for (int64_t i = 0; i < W; ++i) {
          float* dst = row + (p + i) * C + c0;
          for (int cc = 0; cc < 16; ++cc) dst[cc] = src[cc * H * W + i];
        }
      }
    }
}

// V[k][j][c0 .. c0 + 15] = (B^T d B)[k] for tile j, d the 4x4 input window at `d0` (channels-last,
// row stride `row`): B^T's rows are (d0 - d2, d1 + d2, d2 - d1, d1 - d3), along rows then columns.
inline void input_transform(const float* d0, int64_t row, int64_t C, float* V, int64_t plane) {
  v16 t[4][4];
  for (int s = 0; s < 4; ++s) {
    const v16 d0s = load(d0 + s * C), d1s = load(d0 + row + s * C);
    const v16 d2s = load(d0 + 2 * row + s * C), d3s = load(d0 + 3 * row + s * C);
    t[0][s] = d0s - d2s;
    t[1][s] = d1s + d2s;
    t[2][s] = d2s - d1s;
    t[3][s] = d1s - d3s;
  }
  for (int xi = 0; xi < 4; ++xi) {
    store(V + (xi * 4 + 0) * plane, t[xi][0] - t[xi][2]);
    store(V + (xi * 4 + 1) * plane, t[xi][1] + t[xi][2]);
    store(V + (xi * 4 + 2) * plane, t[xi][2] - t[xi][1]);
    store(V + (xi * 4 + 3) * plane, t[xi][1] - t[xi][3]);
  }
}

// dM[k][j][o0 .. o0 + 15] = (A dY A^T)[k] for the 2x2 output gradient at `g` (channels-last, row
// stride `row`): A's rows are (1, 0), (1, 1), (1, -1), (0, -1).
inline void output_grad_transform(const float* g, int64_t row, int64_t O, float* dM, int64_t plane) {
  const v16 y00 = load(g), y01 = load(g + O), y10 = load(g + row), y11 = load(g + row + O);
  const v16 r[4][2] = {{y00, y01}, {y00 + y10, y01 + y11}, {y00 - y10, y01 - y11}, {-y10, -y11}};
  for (int a = 0; a < 4; ++a) {
    store(dM + (a * 4 + 0) * plane, r[a][0]);
    store(dM + (a * 4 + 1) * plane, r[a][0] + r[a][1]);
    store(dM + (a * 4 + 2) * plane, r[a][0] - r[a][1]);
    store(dM + (a * 4 + 3) * plane, -r[a][1]);
  }
}

}  // namespace

void winograd_conv3x3_grad_weight(const float* x, const float* dy, int64_t B, int64_t C, int64_t H, int64_t W,
                                  int64_t O, float* grad_w) {
  const int64_t tiles_w = W / 2, tiles_image = (H / 2) * tiles_w, T = B * tiles_image;
  // Kept by the calling thread between calls, as the forward keeps its buffers (fresh pages
  // cost more than the transposes and transforms done in them); other threads reach them
  // through these references only.
  thread_local std::vector<float> xt_kept, gt_kept, v_kept, dm_kept, du_kept;
  std::vector<float>&xt = xt_kept, &gt = gt_kept, &V = v_kept, &dM = dm_kept, &dU = du_kept;
  to_nhwc(x, B, C, H, W, 1, xt);   // [B, H + 2, W + 2, C]
  to_nhwc(dy, B, O, H, W, 0, gt);  // [B, H, W, O]
  // Chunks of tiles as even as they go, each at most ~32 MiB of V and dM (but 256 tiles at
  // least: every chunk's GEMMs read and write all of dU, so a short chunk costs as much as a long one).
  const int64_t fit = std::max<int64_t>(256, (int64_t(8) << 20) / (16 * (C + O)));
  const int64_t chunks = (T + fit - 1) / fit, n_max = (T + chunks - 1) / chunks;
  V.resize(size_t(16 * n_max * C));
  dM.resize(size_t(16 * n_max * O));
  dU.assign(size_t(16 * O * C), 0.0f);
  for (int64_t t0 = 0; t0 < T; t0 += n_max) {
    const int64_t n = std::min(n_max, T - t0);  // V[k][n][C], dM[k][n][O]: tile-major, channels contiguous
#pragma omp parallel for schedule(static)
    for (int64_t j = 0; j < n; ++j) {
      const int64_t t = t0 + j, b = t / tiles_image, ty = t % tiles_image / tiles_w, tx = t % tiles_w;
      // Input rows 2 ty - 1 .. 2 ty + 2 are padded rows 2 ty .. 2 ty + 3; the same for columns.
      const float* d0 = xt.data() + ((b * (H + 2) + 2 * ty) * (W + 2) + 2 * tx) * C;
      for (int64_t c = 0; c < C; c += 16) input_transform(d0 + c, (W + 2) * C, C, V.data() + j * C + c, n * C);
      const float* g = gt.data() + ((b * H + 2 * ty) * W + 2 * tx) * O;
      for (int64_t o = 0; o < O; o += 16) output_grad_transform(g + o, W * O, O, dM.data() + j * O + o, n * O);
    }
#pragma omp parallel for schedule(dynamic)
    for (int k = 0; k < 16; ++k)  // dU_k[O, C] += dM_k[n, O]^T . V_k[n, C]
      gemm_serial(true, false, O, C, n, 1.0f, dM.data() + k * n * O, O, V.data() + k * n * C, C, 1.0f,
                  dU.data() + k * O * C, C);
  }
  // grad_w[o, c] += G^T dU G: G^T's rows are (1, 1/2, 1/2, 0), (0, 1/2, -1/2, 0), (0, 1/2, 1/2, 1).
  const int64_t OC = O * C;
#pragma omp parallel for schedule(static)
  for (int64_t oc = 0; oc < OC; ++oc) {
    float u[4][4], t[3][4];
    for (int k = 0; k < 16; ++k) u[k / 4][k % 4] = dU[k * OC + oc];
    for (int j = 0; j < 4; ++j) {
      t[0][j] = u[0][j] + 0.5f * (u[1][j] + u[2][j]);
      t[1][j] = 0.5f * (u[1][j] - u[2][j]);
      t[2][j] = 0.5f * (u[1][j] + u[2][j]) + u[3][j];
    }
    float* g = grad_w + oc * 9;
    for (int r = 0; r < 3; ++r) {
      g[r * 3 + 0] += t[r][0] + 0.5f * (t[r][1] + t[r][2]);
      g[r * 3 + 1] += 0.5f * (t[r][1] - t[r][2]);
      g[r * 3 + 2] += 0.5f * (t[r][1] + t[r][2]) + t[r][3];
    }
  }
}

}  // namespace ldm
