// Scaled dot-product attention, multi-head, without a [tokens x tokens] matrix in memory.
//
//   out = softmax(Q K^T / sqrt(d)) V            per batch item and head (Vaswani et al., eq. 1)
//
// Q [B, Lq, H*d], K and V [B, Lk, H*d] in the layout the projections produce (heads side by
// side in the last dimension, as diffusers before its head_to_batch_dim reshape). Work is
// split over (batch, head, block of kQueryBlock queries). Each task computes the transposed
// score block S^T [Lk, kQueryBlock] (2 MiB per thread at 4096 keys), a softmax down its
// columns (vectorised across the queries, Eigen's vectorised exp), and O = P V, dividing by
// the softmax sums at the end (on [nq, dv], not on the scores). K is transposed once per head
// up front, so that every GEMM here packs its operands by plain row copies. The block size
// trades the score block's cache footprint against repacking K and V once per block: on a
// Zen 4 core 128 queries ran 13% faster than 64 and the same as 256 (docs/performance.md).
#pragma once
#include <cmath>
#include <limits>
#include <vector>

#include "ldm/core/tensor.hpp"
#include "ldm/nn/activations.hpp"  // not needed here; kept for the files that reach it through this one
#include "ldm/nn/gemm.hpp"

namespace ldm {

constexpr int64_t kQueryBlock = 128;

// causal: query i sees keys 0..i only (CLIP's text encoder).
inline Tensor scaled_dot_product_attention(const Tensor& q, const Tensor& k, const Tensor& v, int64_t heads,
                                           bool causal = false) {
  LDM_CHECK(q.ndim() == 3 && k.ndim() == 3 && v.ndim() == 3, "attention: expected [B, L, H*d] tensors, got q ",
            q.shape_str(), ", k ", k.shape_str(), ", v ", v.shape_str());
  const int64_t B = q.dim(0), Lq = q.dim(1), Lk = k.dim(1), D = q.dim(2), Dv = v.dim(2);
  LDM_CHECK(k.dim(0) == B && v.dim(0) == B && v.dim(1) == Lk && k.dim(2) == D, "attention: q ", q.shape_str(), ", k ",
            k.shape_str(), ", v ", v.shape_str(), " do not fit together");
  LDM_CHECK(heads > 0 && D % heads == 0 && Dv % heads == 0, "attention: ", D, " features do not split into ", heads,
            " heads");
  LDM_CHECK(Lk > 0, "attention: no keys to attend to (k ", k.shape_str(), ")");
  const int64_t d = D / heads, dv = Dv / heads;
  const float scale = 1.0f / std::sqrt(float(d));
  Tensor out = Tensor::empty({B, Lq, Dv});
  const int64_t qblocks = (Lq + kQueryBlock - 1) / kQueryBlock;

  // kt[b, h] = K_h^T [d, Lk]
  std::vector<float> kt(size_t(B * heads * d * Lk));
#pragma omp parallel for collapse(2) if (B * Lk * D > (1 << 15))
  for (int64_t b = 0; b < B; ++b)
    for (int64_t h = 0; h < heads; ++h)
      for (int64_t j = 0; j < Lk; ++j)
        for (int64_t t = 0; t < d; ++t)
          kt[size_t(((b * heads + h) * d + t) * Lk + j)] = k[(b * Lk + j) * D + h * d + t];

#pragma omp parallel
  {
    // 64-byte aligned, so that (nq a multiple of 16) every row starts a vector: no scalar prologue in Eigen's exp.
    std::shared_ptr<float> st_buf = alloc_floats(Lk * std::min(Lq, kQueryBlock));
    Eigen::ArrayXf mx(kQueryBlock), sum(kQueryBlock);
#pragma omp for collapse(3) schedule(dynamic)
    for (int64_t b = 0; b < B; ++b) {
      for (int64_t h = 0; h < heads; ++h) {
        for (int64_t qb = 0; qb < qblocks; ++qb) {
          const int64_t q0 = qb * kQueryBlock, nq = std::min(kQueryBlock, Lq - q0);
          const int64_t keys = causal ? std::min(Lk, q0 + nq) : Lk;  // later keys are masked for every query here
          const float* qp = q.data() + (b * Lq + q0) * D + h * d;    // Q block [nq, d], row stride D
          const float* ktp = kt.data() + (b * heads + h) * d * Lk;   // K^T [d, Lk]
          const float* vp = v.data() + b * Lk * Dv + h * dv;         // V [Lk, dv], row stride Dv
          float* op = out.data() + (b * Lq + q0) * Dv + h * dv;      // O block [nq, dv], row stride Dv
          float* st = st_buf.get();                                  // S^T [keys, nq]
          auto row = [&](int64_t j) { return Eigen::Map<Eigen::ArrayXf>(st + j * nq, nq); };

          // S^T[keys, nq] = scale * K Q^T
          gemm_serial(true, true, keys, nq, d, scale, ktp, Lk, qp, D, 0.0f, st, nq);
          if (causal) {  // key j is hidden from queries q0 + i < j
            for (int64_t j = q0 + 1; j < keys; ++j)
              std::fill(st + j * nq, st + j * nq + (j - q0), -std::numeric_limits<float>::infinity());
          }
          // Softmax down each column: P^T = exp(S^T - max), sums kept for the end.
          auto m = mx.head(nq), s = sum.head(nq);
          m = row(0);
          for (int64_t j = 1; j < keys; ++j) m = m.max(row(j));
          s.setZero();
          for (int64_t j = 0; j < keys; ++j) {
            auto r = row(j);
            r = (r - m).exp();
            s += r;
          }
          // O[nq, dv] = P V / sums
          gemm_serial(true, false, nq, dv, keys, 1.0f, st, nq, vp, Dv, 0.0f, op, Dv);
          for (int64_t i = 0; i < nq; ++i) Eigen::Map<Eigen::ArrayXf>(op + i * Dv, dv) *= 1.0f / s[i];
        }
      }
    }
  }
  return out;
}

}  // namespace ldm
