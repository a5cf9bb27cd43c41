// CPU GEMM: packed panels and a register-tile micro-kernel (the GotoBLAS / BLIS scheme).
// See include/ldm/nn/gemm.hpp for the contract.
//
//   (A and B packed once up front, shared by all tasks, where several tasks would pack them)
//   for each (row block, column block) of C, spread over the OpenMP threads:
//     for each block of KC along K:
//       pack op(A)[rows, k block] into MR-row panels   (each k step: MR values, contiguous)
//       pack op(B)[k block, cols] into NR-column panels (each k step: NR values, contiguous)
//       for each pair of NR panels of B (stays in L1), for each MR panel of A (from L2):
//         C[MR x 2NR tile] (+)= A panel * B panels, the tile held in registers
//
// Packing does the transposes, the zero padding of edge panels and makes every inner-loop load
// contiguous, so one micro-kernel serves all four op(A)/op(B) cases. The micro-kernel uses GCC
// vector extensions, which compile to AVX-512 (16 floats) with -march=native on a CPU that
// has it, and to two AVX2 or four SSE registers elsewhere; the tile shape is chosen so the
// accumulators fit the register file either way. Each of the tile's outputs is one FMA chain
// over k, in order, per KC block, whatever the tile's shape.
#include "ldm/nn/gemm.hpp"

#include <omp.h>

#include <algorithm>
#include <cstring>
#include <type_traits>
#include <vector>

#include "gemm_kernel.hpp"
#include "scratch.hpp"

namespace ldm {
namespace {

using namespace gemm_kernel;

constexpr int64_t MB = 256;   // rows per task: its packed A block (256 KiB) stays in L2
constexpr int64_t NB = 1024;  // columns per task: its packed B block (1 MiB) streams from L2/L3
constexpr int64_t kSharedBMax = int64_t(4) << 20;  // floats (16 MiB) of B packed once per call
constexpr int64_t kSharedAMax = int64_t(4) << 20;  // and of A

// Element (i, k) of op(A) is A[i*lda + k], or A[k*lda + i] when transposed; likewise op(B)(k, j).
// T: float, or uint16_t for a matrix kept in fp16 (converted as it is packed).
template <typename T>
struct Operand {
  const T* p;
  int64_t ld;
  bool trans;
};

// op(A)[i0 : i0+MR, k0 : k0+kc] -> dst[k * MR + i], rows past M zero.
template <typename T>
void pack_a_panel(const Operand<T>& A, int64_t M, int64_t i0, int64_t k0, int64_t kc, float* dst) {
  const int64_t m = std::min<int64_t>(MR, M - i0);
  if (A.trans) {
    pack_copy_rows<MR>(A.p + k0 * A.ld + i0, A.ld, m, kc, dst);
  } else {
    pack_interleave_rows<MR>(A.p + i0 * A.ld + k0, A.ld, m, kc, dst);
  }
}

// op(B)[k0 : k0+kc, j0 : j0+NR] -> dst[k * NR + j], columns past N zero.
template <typename T>
void pack_b_panel(const Operand<T>& B, int64_t N, int64_t j0, int64_t k0, int64_t kc, float* dst) {
  const int64_t n = std::min<int64_t>(NR, N - j0);
  if (B.trans) {
    pack_interleave_rows<NR>(B.p + j0 * B.ld + k0, B.ld, n, kc, dst);
  } else {
    pack_copy_rows<NR>(B.p + k0 * B.ld + j0, B.ld, n, kc, dst);
  }
}

// Splits `total` into about `parts` blocks, each a multiple of `unit` and at most `max_block`.
int64_t block_size(int64_t total, int64_t unit, int64_t max_block, int64_t parts) {
  const int64_t units = (total + unit - 1) / unit;
  const int64_t count = std::max((total + max_block - 1) / max_block, std::min(parts, units));
  return (units + count - 1) / count * unit;
}

// Tasks: a grid of row x column blocks of C, about 8 per thread (when C is large enough), so
// that handing them out dynamically leaves no thread idle for long.
struct Tasks {
  int64_t mb, nb, rows, cols;
};
// A wide C (N >= 1024) gives every thread column blocks enough: its rows are then not split
// further than MB requires, since each row block packs B again (a [256, 1280] x [1280, 10240]
// product would read its 52 MB of weights twice).
//
// A narrow C (N <= 256: a convolution at 8x8, [1280, 2 x 64] from weights of 1280 x 11520) is
// split in rows only, finely: each column block would pack all of A (59 MB there) again.
Tasks make_tasks(int64_t M, int64_t N, int threads) {
  Tasks t{};
  if (threads > 1 && N <= 256) {
    t.mb = block_size(M, MR, MB, 8 * threads);
    t.rows = (M + t.mb - 1) / t.mb;
    t.nb = block_size(N, NR * kPanels, NB, 1);
    t.cols = (N + t.nb - 1) / t.nb;
    return t;
  }
  t.mb = block_size(M, MR, MB, threads > 1 && N < 1024 ? 2 : 1);
  t.rows = (M + t.mb - 1) / t.mb;
  t.nb = block_size(N, NR * kPanels, NB, threads > 1 ? (8 * threads + t.rows - 1) / t.rows : 1);
  t.cols = (N + t.nb - 1) / t.nb;
  return t;
}

// All panels of an operand packed up front into buf, for the tasks to share: panel p (`width`
// rows of A or columns of B) of K block k0 at buf + k0 * padded + p * width * kc, where padded
// is the operand's rows or columns rounded up to whole panels. pack(k0, kc, p * width, dst)
// writes one panel. buf is the calling thread's (thread_local in run), reached by the team here.
template <typename PackPanel>
const float* pack_all_panels(int64_t K, int64_t kc_max, int64_t padded, int64_t width, int threads,
                             const PackPanel& pack, std::vector<float>& buf) {
  float* const dst = grow_scratch(buf, size_t(K * padded));
  const int64_t panels = padded / width, kblocks = (K + kc_max - 1) / kc_max;
#pragma omp parallel for collapse(2) schedule(static) num_threads(threads) if (threads > 1)
  for (int64_t kb = 0; kb < kblocks; ++kb) {
    for (int64_t p = 0; p < panels; ++p) {
      const int64_t k0 = kb * kc_max, kc = std::min(kc_max, K - k0);
      pack(k0, kc, p * width, dst + k0 * padded + p * width * kc);
    }
  }
  return dst;
}

// pack_b(k0, kc, j0, dst) writes the B panel of columns j0 .. j0+NR, rows k0 .. k0+kc.
template <typename TA, typename PackB>
void run(int64_t M, int64_t N, int64_t K, float alpha, const Operand<TA>& A, const PackB& pack_b, float beta, float* C,
         int64_t ldc, int threads, Bias bias = {}) {
  if (M <= 0 || N <= 0) return;
  if (K <= 0 || alpha == 0.0f) {  // C = beta * C + bias
    for (int64_t i = 0; i < M; ++i)
      for (int64_t j = 0; j < N; ++j)
        C[i * ldc + j] = (beta == 0.0f ? 0.0f : beta * C[i * ldc + j]) + (bias.rows ? bias.rows[i] : 0.0f) +
                         (bias.cols ? bias.cols[j] : 0.0f);
    return;
  }
  const int64_t kc_max = k_block(K);
  const Tasks t = make_tasks(M, N, threads);

  // Where several row blocks would each pack the same B panels (tall C: the linear layers over
  // 8192 tokens pack their weights 32 times), B is packed once, up front, when it is small;
  // likewise A where several column blocks would each pack it (a short, wide C: the linear
  // layers over 512 tokens pack their input 8-10 times). Buffers kept across calls.
  thread_local std::vector<float> packed_b_kept, packed_a_kept;
  const int64_t n_pad = (N + NR - 1) / NR * NR, m_pad = (M + MR - 1) / MR * MR;
  const float* const shared_b =
      t.rows >= 3 && K * n_pad <= kSharedBMax ? pack_all_panels(K, kc_max, n_pad, NR, threads, pack_b, packed_b_kept)
                                              : nullptr;
  const auto pack_a = [&](int64_t k0, int64_t kc, int64_t i0, float* dst) { pack_a_panel(A, M, i0, k0, kc, dst); };
  const float* const shared_a =
      t.cols >= 2 && K * m_pad <= kSharedAMax ? pack_all_panels(K, kc_max, m_pad, MR, threads, pack_a, packed_a_kept)
                                              : nullptr;

  // Each task owns its block of C through all of K: the threads never wait for each other
  // (one barrier, at the end), which matters on a machine shared with other processes. The
  // price is packing a block of A once per column block and (unless shared above) of B once
  // per row block.
#pragma omp parallel for collapse(2) schedule(dynamic) num_threads(threads) if (threads > 1)
  for (int64_t rt = 0; rt < t.rows; ++rt) {
    for (int64_t ct = 0; ct < t.cols; ++ct) {
      thread_local std::vector<float> a_block, b_block;  // packed panels, reused across calls
      grow_scratch(a_block, size_t(t.mb * kc_max));
      grow_scratch(b_block, size_t(t.nb * kc_max));
      const int64_t i0 = rt * t.mb, i_end = std::min(M, i0 + t.mb);
      const int64_t j0 = ct * t.nb, j_end = std::min(N, j0 + t.nb);
      for (int64_t k0 = 0; k0 < K; k0 += kc_max) {
        const int64_t kc = std::min(kc_max, K - k0);
        const bool first = k0 == 0;  // later K blocks accumulate onto the first
        const float beta_k = first ? beta : 1.0f;
        if (!shared_a)
          for (int64_t i = i0; i < i_end; i += MR) pack_a_panel(A, M, i, k0, kc, a_block.data() + (i - i0) * kc);
        if (!shared_b)
          for (int64_t j = j0; j < j_end; j += NR) pack_b(k0, kc, j, b_block.data() + (j - j0) * kc);
        // Each pair of B panels (32 KiB) stays in L1 while it meets every A panel of the block
        // (in L2). Panels lie NR * kc floats apart in both layouts.
        const float* a_panels = shared_a ? shared_a + k0 * m_pad + i0 * kc : a_block.data();
        const float* b_panels = shared_b ? shared_b + k0 * n_pad + j0 * kc : b_block.data();
        const Bias block_bias{first && bias.rows ? bias.rows + i0 : nullptr,
                              first && bias.cols ? bias.cols + j0 : nullptr};
        multiply_panels(i_end - i0, j_end - j0, kc, alpha, a_panels, MR * kc, b_panels, NR * kc,
                        C + i0 * ldc + j0, ldc, NR, beta_k, block_bias);
      }
    }
  }
}

template <typename TA, typename TB>
void run_matrices(bool ta, bool tb, int64_t M, int64_t N, int64_t K, float alpha, const TA* A, int64_t lda,
                  const TB* B, int64_t ldb, float beta, float* C, int64_t ldc, int threads, Bias bias = {}) {
  const Operand<TB> b{B, ldb, tb};
  auto pack_b = [&](int64_t k0, int64_t kc, int64_t j0, float* dst) { pack_b_panel(b, N, j0, k0, kc, dst); };
  run(M, N, K, alpha, Operand<TA>{A, lda, ta}, pack_b, beta, C, ldc, threads, bias);
}

// Small products are not worth waking the thread team for.
int threads_for(int64_t M, int64_t N, int64_t K) {
  return omp_in_parallel() || double(M) * N * K < 4e6 ? 1 : omp_get_max_threads();
}

// C[M, N] = A[M, K] W[N, K]^T + bias[N] for a handful of rows (the U-Net's time embedding: 2
// rows against weights of 1280 x 1280): packing W into panels, a transpose of all of it, cost
// more than the products (1.5 ms a layer on one thread; Xeon). Here dot products straight off
// W's rows, 16 of K's lanes at a time, the threads taking blocks of W's rows: the layer reads its
// weight once, at memory speed. Each row of C is summed the same way for any M up to kFewRows.
constexpr int64_t kFewRows = 4;

template <typename TW>
void few_rows_times_wt(int64_t M, int64_t N, int64_t K, const float* A, int64_t lda, const TW* W, int64_t ldw,
                       const float* bias, float* C, int64_t ldc) {
  const bool threaded = !omp_in_parallel() && N * K >= (int64_t(1) << 18);
#pragma omp parallel for schedule(static) if (threaded)
  for (int64_t n = 0; n < N; ++n) {
    const TW* w = W + n * ldw;
    for (int64_t m = 0; m < M; ++m) {
      const float* a = A + m * lda;
      v16 acc[4] = {};  // four chains, so that the FMAs do not wait on each other
      int64_t k = 0;
      for (; k + 64 <= K; k += 64)
        for (int c = 0; c < 4; ++c) acc[c] += load(a + k + 16 * c) * load(w + k + 16 * c);
      for (; k + 16 <= K; k += 16) acc[0] += load(a + k) * load(w + k);
      if (k < K) acc[1] += load_first(a + k, int(K - k)) * load_first(w + k, int(K - k));
      const v16 sum = (acc[0] + acc[1]) + (acc[2] + acc[3]);
      float s = 0.0f;
      for (int l = 0; l < 16; ++l) s += sum[l];
      C[m * ldc + n] = bias ? s + bias[n] : s;
    }
  }
}

template <typename TW>
void linear_product(int64_t M, int64_t N, int64_t K, const float* A, int64_t lda, const TW* W, int64_t ldw,
                    const float* bias, float* C, int64_t ldc) {
  if (M <= kFewRows && K > 0) {
    few_rows_times_wt(M, N, K, A, lda, W, ldw, bias, C, ldc);
    return;
  }
  run_matrices(false, true, M, N, K, 1.0f, A, lda, W, ldw, 0.0f, C, ldc, threads_for(M, N, K), Bias{nullptr, bias});
}

}  // namespace

int64_t gemm_scratch_bytes(int64_t M, int64_t N, int64_t K) {
  if (K <= 0) return 0;
  const int threads = omp_get_max_threads();
  const Tasks t = make_tasks(M, N, threads);
  return int64_t(sizeof(float)) * (t.mb + t.nb) * k_block(K) * threads;
}

void gemm(bool ta, bool tb, int64_t M, int64_t N, int64_t K, float alpha, const float* A, int64_t lda, const float* B,
          int64_t ldb, float beta, float* C, int64_t ldc) {
  run_matrices(ta, tb, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc, threads_for(M, N, K));
}

void gemm_serial(bool ta, bool tb, int64_t M, int64_t N, int64_t K, float alpha, const float* A, int64_t lda,
                 const float* B, int64_t ldb, float beta, float* C, int64_t ldc) {
  run_matrices(ta, tb, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc, 1);
}

void gemm_bias(int64_t M, int64_t N, int64_t K, const float* A, int64_t lda, const float* W, int64_t ldw,
               const float* bias, float* C, int64_t ldc) {
  linear_product(M, N, K, A, lda, W, ldw, bias, C, ldc);
}

void gemm_packed_b(int64_t M, int64_t N, int64_t K, const float* A, int64_t lda, const GemmPackB& pack_b,
                   const float* row_bias, float* C, int64_t ldc) {
  run(M, N, K, 1.0f, Operand<float>{A, lda, false}, pack_b, 0.0f, C, ldc, threads_for(M, N, K),
      Bias{row_bias, nullptr});
}

void gemm_bias(bool ta, bool tb, int64_t M, int64_t N, int64_t K, const float* A, int64_t lda, const float* B,
               int64_t ldb, const float* row_bias, const float* col_bias, float* C, int64_t ldc) {
  run_matrices(ta, tb, M, N, K, 1.0f, A, lda, B, ldb, 0.0f, C, ldc, threads_for(M, N, K), Bias{row_bias, col_bias});
}

// ---- one operand in fp16

void gemm_bias(bool ta, bool tb, int64_t M, int64_t N, int64_t K, const float* A, int64_t lda, const uint16_t* B,
               int64_t ldb, const float* row_bias, const float* col_bias, float* C, int64_t ldc) {
  run_matrices(ta, tb, M, N, K, 1.0f, A, lda, B, ldb, 0.0f, C, ldc, threads_for(M, N, K), Bias{row_bias, col_bias});
}

void gemm_bias(bool ta, bool tb, int64_t M, int64_t N, int64_t K, const uint16_t* A, int64_t lda, const float* B,
               int64_t ldb, const float* row_bias, const float* col_bias, float* C, int64_t ldc) {
  run_matrices(ta, tb, M, N, K, 1.0f, A, lda, B, ldb, 0.0f, C, ldc, threads_for(M, N, K), Bias{row_bias, col_bias});
}

void gemm_serial(bool ta, bool tb, int64_t M, int64_t N, int64_t K, float alpha, const uint16_t* A, int64_t lda,
                 const float* B, int64_t ldb, float beta, float* C, int64_t ldc) {
  run_matrices(ta, tb, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc, 1);
}

void gemm_bias(int64_t M, int64_t N, int64_t K, const float* A, int64_t lda, const uint16_t* W, int64_t ldw,
               const float* bias, float* C, int64_t ldc) {
  linear_product(M, N, K, A, lda, W, ldw, bias, C, ldc);
}

void gemm_packed_b(int64_t M, int64_t N, int64_t K, const uint16_t* A, int64_t lda, const GemmPackB& pack_b,
                   const float* row_bias, float* C, int64_t ldc) {
  run(M, N, K, 1.0f, Operand<uint16_t>{A, lda, false}, pack_b, 0.0f, C, ldc, threads_for(M, N, K),
      Bias{row_bias, nullptr});
}

}  // namespace ldm
