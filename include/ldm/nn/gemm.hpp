// GEMM: the one matrix multiply every linear layer, convolution and attention goes through.
//
//   C[M, N] = alpha * op(A)[M, K] * op(B)[K, N] + beta * C        (row-major, leading dims given)
//
// op(X) is X or X^T. The CPU path is Eigen's blocked, vectorised GEMM (OpenMP threads over
// the blocks), compiled once in src/gemm.cpp so the rest of the library stays light to build.
#pragma once
#include <cstdint>

namespace ldm {

void gemm(bool trans_a, bool trans_b, int64_t M, int64_t N, int64_t K, float alpha, const float* A, int64_t lda,
          const float* B, int64_t ldb, float beta, float* C, int64_t ldc);

// For callers inside an OpenMP parallel region (one GEMM per thread); runs on the calling thread.
void gemm_serial(bool trans_a, bool trans_b, int64_t M, int64_t N, int64_t K, float alpha, const float* A,
                 int64_t lda, const float* B, int64_t ldb, float beta, float* C, int64_t ldc);

}  // namespace ldm
