// GEMM: the one matrix multiply every linear layer, convolution and attention goes through.
//
//   C[M, N] = alpha * op(A)[M, K] * op(B)[K, N] + beta * C        (row-major, leading dims given)
//
// op(X) is X or X^T. The CPU path is a packed-panel GEMM with a register-tile micro-kernel
// (AVX-512 where the CPU has it), OpenMP threads over blocks of C, compiled once in
// src/gemm.cpp; docs/performance.md compares it with OpenBLAS and PyTorch. beta == 0 never
// reads C. Each element of C is one in-order sum over K (in blocks of 256), whatever the
// thread count, so gemm and gemm_serial agree bit for bit.
#pragma once
#include <cstdint>
#include <functional>

namespace ldm {

void gemm(bool trans_a, bool trans_b, int64_t M, int64_t N, int64_t K, float alpha, const float* A, int64_t lda,
          const float* B, int64_t ldb, float beta, float* C, int64_t ldc);

// For callers inside an OpenMP parallel region (one GEMM per thread); runs on the calling thread.
void gemm_serial(bool trans_a, bool trans_b, int64_t M, int64_t N, int64_t K, float alpha, const float* A,
                 int64_t lda, const float* B, int64_t ldb, float beta, float* C, int64_t ldc);

// torch.nn.Linear's product, with the bias added as C is written (no separate pass over C):
// C[M, N] = A[M, K] W[N, K]^T + bias[N], bias may be null.
void gemm_bias(int64_t M, int64_t N, int64_t K, const float* A, int64_t lda, const float* W, int64_t ldw,
               const float* bias, float* C, int64_t ldc);

// C[M, N] = op(A)[M, K] op(B)[K, N] + row_bias[M] + col_bias[N] (either may be null), one of A
// and B in fp16 or neither (see below). A 1x1 convolution over token-major images ([H*W, C]
// rather than [C, H*W]) is such a product: Conv2d::forward_to_tokens, forward_from_tokens.
void gemm_bias(bool trans_a, bool trans_b, int64_t M, int64_t N, int64_t K, const float* A, int64_t lda,
               const float* B, int64_t ldb, const float* row_bias, const float* col_bias, float* C, int64_t ldc);
void gemm_bias(bool trans_a, bool trans_b, int64_t M, int64_t N, int64_t K, const float* A, int64_t lda,
               const uint16_t* B, int64_t ldb, const float* row_bias, const float* col_bias, float* C, int64_t ldc);
void gemm_bias(bool trans_a, bool trans_b, int64_t M, int64_t N, int64_t K, const uint16_t* A, int64_t lda,
               const float* B, int64_t ldb, const float* row_bias, const float* col_bias, float* C, int64_t ldc);

// C[M, N] = A[M, K] B[K, N] + row_bias[M] (may be null), where B is computed rather than stored:
// a convolution builds its im2col matrix panel by panel as the GEMM consumes it, never whole in
// memory. pack_b(k0, kc, j0, dst) must write B[k0 + k, j0 + j] to dst[k * kGemmPanelWidth + j]
// for k < kc and j < kGemmPanelWidth, zero where j0 + j >= N; it is called from several threads.
constexpr int kGemmPanelWidth = 16;
using GemmPackB = std::function<void(int64_t k0, int64_t kc, int64_t j0, float* dst)>;
void gemm_packed_b(int64_t M, int64_t N, int64_t K, const float* A, int64_t lda, const GemmPackB& pack_b,
                   const float* row_bias, float* C, int64_t ldc);

// The same products with one matrix in IEEE fp16 (HalfTensor's storage): each element is
// converted to float, exactly, as the GEMM packs it, so a layer whose weights are kept in fp16
// (--fp16-weights) needs no float32 copy of them. A: a convolution's weight [O, K] or Winograd
// transform; W: a linear layer's weight. Same results, bit for bit, as the float32 calls given
// the converted matrix.
void gemm_serial(bool trans_a, bool trans_b, int64_t M, int64_t N, int64_t K, float alpha, const uint16_t* A,
                 int64_t lda, const float* B, int64_t ldb, float beta, float* C, int64_t ldc);
void gemm_bias(int64_t M, int64_t N, int64_t K, const float* A, int64_t lda, const uint16_t* W, int64_t ldw,
               const float* bias, float* C, int64_t ldc);
void gemm_packed_b(int64_t M, int64_t N, int64_t K, const uint16_t* A, int64_t lda, const GemmPackB& pack_b,
                   const float* row_bias, float* C, int64_t ldc);

// Bytes of packed panels a call of this size allocates, over all the threads that run it
// (each thread keeps its buffers for its next call).
int64_t gemm_scratch_bytes(int64_t M, int64_t N, int64_t K);

}  // namespace ldm
