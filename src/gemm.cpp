// CPU GEMM through Eigen. See include/ldm/nn/gemm.hpp.
#include "ldm/nn/gemm.hpp"

#include <Eigen/Core>

namespace ldm {
namespace {

using Mat = Eigen::Matrix<float, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;
using Stride = Eigen::OuterStride<>;
using CMap = Eigen::Map<const Mat, 0, Stride>;
using MMap = Eigen::Map<Mat, 0, Stride>;

template <typename Dst, typename L, typename R>
void multiply(Dst& c, const L& a, const R& b, float alpha, float beta) {
  if (beta == 0.0f) {
    c.noalias() = alpha * (a * b);
  } else {
    if (beta != 1.0f) c *= beta;
    c.noalias() += alpha * (a * b);
  }
}

void run(bool ta, bool tb, int64_t M, int64_t N, int64_t K, float alpha, const float* A, int64_t lda, const float* B,
         int64_t ldb, float beta, float* C, int64_t ldc) {
  MMap c(C, M, N, Stride(ldc));
  // A stored [M, K] (lda >= K), or [K, M] when transposed; likewise B.
  CMap a(A, ta ? K : M, ta ? M : K, Stride(lda));
  CMap b(B, tb ? N : K, tb ? K : N, Stride(ldb));
  if (!ta && !tb) multiply(c, a, b, alpha, beta);
  if (!ta && tb) multiply(c, a, b.transpose(), alpha, beta);
  if (ta && !tb) multiply(c, a.transpose(), b, alpha, beta);
  if (ta && tb) multiply(c, a.transpose(), b.transpose(), alpha, beta);
}

}  // namespace

void gemm(bool ta, bool tb, int64_t M, int64_t N, int64_t K, float alpha, const float* A, int64_t lda, const float* B,
          int64_t ldb, float beta, float* C, int64_t ldc) {
  run(ta, tb, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc);
}

void gemm_serial(bool ta, bool tb, int64_t M, int64_t N, int64_t K, float alpha, const float* A, int64_t lda,
                 const float* B, int64_t ldb, float beta, float* C, int64_t ldc) {
  // Eigen does not nest parallelism: inside an OpenMP parallel region its GEMM runs on the
  // calling thread alone, which is what the callers of gemm_serial want.
  run(ta, tb, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc);
}

}  // namespace ldm
