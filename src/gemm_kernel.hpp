// The GEMM's register-tile micro-kernel and its packed layouts (internal to src/): used by
// src/gemm.cpp for every product, and by src/attention.cpp, which packs K and V once per head
// and multiplies the packed panels directly.
//
// Layouts. An A panel holds MR rows of op(A) for kc steps of k: a[k * MR + i]. A B panel holds
// NR columns of op(B): b[k * NR + j]. Both run over k contiguously, so the panels of a whole K
// can be packed once and any k block [k0, k0 + kc) taken as the panel plus k0 * MR (or NR).
#pragma once
#include <algorithm>
#include <cstdint>
#include <cstring>
#include <type_traits>

#include "ldm/nn/gemm.hpp"
#include "v16.hpp"

namespace ldm::gemm_kernel {

using simd::load;
using simd::load_first;
using simd::shuffle;
using simd::store;
using simd::to_float;
using simd::v16;
using simd::v16i;

#if defined(__AVX512F__)
// 12 rows x 2 panels: 24 accumulator registers of the 32 zmm, 2 for B. Per k step 24 FMAs
// against 2 vector loads and 12 broadcasts: the Xeon's two FMA ports stay fed (a 16 x 16 tile,
// 17 loads per 16 FMAs, ran at 55-59% of its peak there, this one at 90%).
constexpr int MR = 12;
constexpr int kPanels = 2;
#elif defined(__AVX__)
constexpr int MR = 4;  // a v16 is two ymm registers: 8 accumulators of the 16
constexpr int kPanels = 1;
#else
constexpr int MR = 2;  // a v16 is four xmm registers: 8 accumulators of the 16
constexpr int kPanels = 1;
#endif
constexpr int NR = kGemmPanelWidth;  // one v16 per row of a panel
static_assert(NR == 16, "the micro-kernel holds a row of a panel in one v16");
constexpr int64_t KC = 256;  // a pair of B panels, 2 x KC x NR floats = 32 KiB, stays in L1

// Bias added to a tile of C on the first K block: row_bias[i] along rows (a convolution's
// per-channel bias), col_bias[j] along columns (a linear layer's); either may be null.
struct Bias {
  const float* rows;
  const float* cols;
};

// C[m x n] = alpha * acc + bias + beta * C for one panel's column of accumulators (acc[i] is
// row i), m <= R, n <= NR. beta == 0 never reads C (it may hold garbage or NaN).
template <int R = MR>
void write_panel(const v16* acc, float* c, int64_t ldc, int m, int n, float alpha, float beta, Bias bias) {
  float tile[R * NR];  // an edge tile goes through memory, to write only the n valid columns
  float* out = n == NR ? c : tile;
  const int64_t ld = n == NR ? ldc : NR;
  v16 col_bias{};
  if (bias.cols) {
    if (n == NR) {
      col_bias = load(bias.cols);
    } else {
      for (int j = 0; j < n; ++j) col_bias[j] = bias.cols[j];
    }
  }
#pragma GCC unroll 16
  for (int i = 0; i < R; ++i) {
    if (i >= m) break;
    v16 v = alpha * acc[i];
    if (bias.rows) v += bias.rows[i];
    if (bias.cols) v += col_bias;
    if (n == NR && beta != 0.0f) v += beta * load(c + i * ldc);
    store(out + i * ld, v);
  }
  if (n == NR) return;
  for (int i = 0; i < m; ++i) {
    float* ci = c + i * ldc;
    for (int j = 0; j < n; ++j) ci[j] = beta == 0.0f ? tile[i * NR + j] : tile[i * NR + j] + beta * ci[j];
  }
}

// C[m x n] = alpha * (A panel [kc x R] . P B panels [kc x NR], panel p at b + p * b_stride)
// + bias + beta * C, for m <= R, (P - 1) * NR < n <= P * NR. Row i of C's part for panel p
// starts at c + i * ldc + p * c_panel (c_panel = NR in a row-major C; attention writes its
// scores as B panels instead). The loops over i and p have compile-time bounds, fully
// unrolled, so that acc[][] lives in registers. R, the rows of an A panel, is MR but for
// attention's P V at heads of 40 features (panels of 10 rows: no padded rows to multiply).
template <int P, int R = MR>
void micro_kernel(int64_t kc, const float* a, const float* b, int64_t b_stride, float* c, int64_t ldc,
                  int64_t c_panel, int m, int n, float alpha, float beta, Bias bias) {
  // The tile of C is written (and read, beta != 0) after the k loop: start fetching its lines
  // now, so that the stores do not wait on memory (C is often far larger than the caches).
#pragma GCC unroll 16
  for (int i = 0; i < R; ++i)
#pragma GCC unroll 4
    for (int p = 0; p < P; ++p) __builtin_prefetch(c + i * ldc + p * c_panel, 1);
  v16 acc[P][R];
#pragma GCC unroll 4
  for (int p = 0; p < P; ++p)
#pragma GCC unroll 16
    for (int i = 0; i < R; ++i) acc[p][i] = v16{};
  for (int64_t k = 0; k < kc; ++k) {
    v16 bk[P];
#pragma GCC unroll 4
    for (int p = 0; p < P; ++p) bk[p] = load(b + p * b_stride + k * NR);
#pragma GCC unroll 16
    for (int i = 0; i < R; ++i) {
      const float aik = a[k * R + i];
#pragma GCC unroll 4
      for (int p = 0; p < P; ++p) acc[p][i] += aik * bk[p];
    }
  }
#pragma GCC unroll 4
  for (int p = 0; p < P; ++p) {
    const Bias panel_bias{bias.rows, bias.cols ? bias.cols + p * NR : nullptr};
    write_panel<R>(acc[p], c + p * c_panel, ldc, m, std::min(NR, n - p * NR), alpha, beta, panel_bias);
  }
}

// C[M, N] = alpha * A B + bias + beta * C over one k block of kc steps, from packed panels:
// A panel r (rows r*R ...) at a + r * a_stride, B panel p (columns p*NR ...) at b + p * b_stride,
// C[i, p*NR + j] at c + i * ldc + p * c_panel + j; bias.rows / bias.cols indexed from row 0 and
// column 0 of this C. Pairs of B panels meet every A panel in turn (the pair stays in L1).
template <int R = MR>
void multiply_panels(int64_t M, int64_t N, int64_t kc, float alpha, const float* a, int64_t a_stride, const float* b,
                     int64_t b_stride, float* c, int64_t ldc, int64_t c_panel, float beta, Bias bias) {
  for (int64_t j = 0; j < N; j += NR * kPanels) {
    const int n = int(std::min<int64_t>(NR * kPanels, N - j));
    const float* b_pair = b + (j / NR) * b_stride;
    for (int64_t i = 0; i < M; i += R) {
      const int m = int(std::min<int64_t>(R, M - i));
      const float* a_panel = a + (i / R) * a_stride;
      float* c_tile = c + i * ldc + (j / NR) * c_panel;
      const Bias tile_bias{bias.rows ? bias.rows + i : nullptr, bias.cols ? bias.cols + j : nullptr};
      if (n > NR * (kPanels - 1)) {
        micro_kernel<kPanels, R>(kc, a_panel, b_pair, b_stride, c_tile, ldc, c_panel, m, n, alpha, beta, tile_bias);
      } else {  // the last, lone panel of an odd count
        micro_kernel<1, R>(kc, a_panel, b_pair, b_stride, c_tile, ldc, c_panel, m, n, alpha, beta, tile_bias);
      }
    }
  }
}

// In-register transpose of a 16 x 16 block: four butterfly stages, each swapping the
// off-diagonal b x b sub-blocks of every 2b x 2b block (b = 8, 4, 2, 1). For rows x = r[i] and
// y = r[i + b], in each group of 2b lanes: r[i] gets the low b lanes of x then of y (`lo`),
// r[i + b] the high b lanes of x then of y (`hi`).
template <int b>
void transpose_stage(v16* r, v16i lo, v16i hi) {
  for (int i = 0; i < 16; ++i) {
    if (i & b) continue;
    const v16 x = r[i], y = r[i + b];
    r[i] = shuffle(x, y, lo);
    r[i + b] = shuffle(x, y, hi);
  }
}
inline void transpose16(v16* r) {
  transpose_stage<8>(r, v16i{0, 1, 2, 3, 4, 5, 6, 7, 16, 17, 18, 19, 20, 21, 22, 23},
                     v16i{8, 9, 10, 11, 12, 13, 14, 15, 24, 25, 26, 27, 28, 29, 30, 31});
  transpose_stage<4>(r, v16i{0, 1, 2, 3, 16, 17, 18, 19, 8, 9, 10, 11, 24, 25, 26, 27},
                     v16i{4, 5, 6, 7, 20, 21, 22, 23, 12, 13, 14, 15, 28, 29, 30, 31});
  transpose_stage<2>(r, v16i{0, 1, 16, 17, 4, 5, 20, 21, 8, 9, 24, 25, 12, 13, 28, 29},
                     v16i{2, 3, 18, 19, 6, 7, 22, 23, 10, 11, 26, 27, 14, 15, 30, 31});
  transpose_stage<1>(r, v16i{0, 16, 2, 18, 4, 20, 6, 22, 8, 24, 10, 26, 12, 28, 14, 30},
                     v16i{1, 17, 3, 19, 5, 21, 7, 23, 9, 25, 11, 27, 13, 29, 15, 31});
}

// A W-wide panel of `rows` (<= W) rows of a row-major matrix, k along each row:
// dst[k * W + r] = src[r * ld + k] for k < kc, zero for r >= rows. (op(A) = A, op(B) = B^T.)
template <int W, typename T>
void pack_interleave_rows(const T* src, int64_t ld, int64_t rows, int64_t kc, float* dst) {
  if constexpr (W <= 16) {  // 16 x 16 blocks through registers, W lanes of each kept
    for (int64_t k = 0; k < kc; k += 16) {
      const int n = int(std::min<int64_t>(16, kc - k));  // under 16 in the last block only
      v16 r[16] = {};
      for (int64_t i = 0; i < rows; ++i) {
        // Rows far apart (a convolution's weights, 46 KB at 1280 x 3 x 3 inputs) are more
        // streams than the hardware prefetcher follows: fetch each row 4 lines ahead. A direct
        // 8x8 convolution, which packs its 59 MB weight from memory, 19.4 -> 16.3 ms (Xeon).
        // The last, partial block by masked loads (attention's K at 40 features).
        __builtin_prefetch(src + i * ld + k + 64);
        r[i] = n == 16 ? load(src + i * ld + k) : load_first(src + i * ld + k, n);
      }
      transpose16(r);
      for (int t = 0; t < n; ++t) std::memcpy(dst + (k + t) * W, &r[t], W * sizeof(float));
    }
  } else {
    for (int64_t k = 0; k < kc; ++k)
      for (int64_t i = 0; i < W; ++i) dst[k * W + i] = i < rows ? to_float(src[i * ld + k]) : 0.0f;
  }
}

// A W-wide panel of `cols` (<= W) columns of a row-major matrix, k down the rows:
// dst[k * W + j] = src[k * ld + j], zero for j >= cols. (op(A) = A^T, op(B) = B.)
template <int W, typename T>
void pack_copy_rows(const T* src, int64_t ld, int64_t cols, int64_t kc, float* dst) {
  if constexpr (std::is_same_v<T, uint16_t> && W <= 16) {  // fp16: a row converted at a time, lanes past cols zero
    for (int64_t k = 0; k < kc; ++k) {
      const v16 v = load_first(src + k * ld, int(cols));
      std::memcpy(dst + k * W, &v, W * sizeof(float));
    }
    return;
  }
  if constexpr (std::is_same_v<T, float>) {
    if (cols == W) {  // a fixed-size copy the compiler inlines (one vector move when W = 16)
      for (int64_t k = 0; k < kc; ++k) std::memcpy(dst + k * W, src + k * ld, W * sizeof(float));
      return;
    }
  }
  for (int64_t k = 0; k < kc; ++k) {
    for (int64_t j = 0; j < cols; ++j) dst[k * W + j] = to_float(src[k * ld + j]);
    std::fill(dst + k * W + cols, dst + (k + 1) * W, 0.0f);
  }
}

// K blocks of (nearly) equal size, at most KC each.
inline int64_t k_block(int64_t K) {
  const int64_t blocks = (K + KC - 1) / KC;
  return (K + blocks - 1) / blocks;
}

}  // namespace ldm::gemm_kernel
