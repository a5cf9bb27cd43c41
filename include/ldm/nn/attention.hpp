// Scaled dot-product attention, multi-head, without a [tokens x tokens] matrix in memory.
//
//   out = softmax(Q K^T / sqrt(d)) V            per batch item and head (Vaswani et al., eq. 1)
//
// Q [B, Lq, H*d], K and V [B, Lk, H*d] in the layout the projections produce (heads side by
// side in the last dimension, as diffusers before its head_to_batch_dim reshape). Work is
// split over (batch, head, block of kQueryBlock queries): each task holds one
// [kQueryBlock x Lk] score block, so a 4096-token self-attention needs 4 MiB per thread,
// not the 64 MiB per head a full score matrix would.
#pragma once
#include <cmath>
#include <vector>

#include "ldm/core/tensor.hpp"
#include "ldm/nn/activations.hpp"
#include "ldm/nn/gemm.hpp"

namespace ldm {

constexpr int64_t kQueryBlock = 256;

// causal: query i sees keys 0..i only (CLIP's text encoder).
inline Tensor scaled_dot_product_attention(const Tensor& q, const Tensor& k, const Tensor& v, int64_t heads,
                                           bool causal = false) {
  LDM_CHECK(q.ndim() == 3 && k.ndim() == 3 && v.ndim() == 3, "attention: expected [B, L, H*d] tensors, got q ",
            q.shape_str(), ", k ", k.shape_str(), ", v ", v.shape_str());
  const int64_t B = q.dim(0), Lq = q.dim(1), Lk = k.dim(1), D = q.dim(2), Dv = v.dim(2);
  LDM_CHECK(k.dim(0) == B && v.dim(0) == B && v.dim(1) == Lk && k.dim(2) == D, "attention: q ", q.shape_str(),
            ", k ", k.shape_str(), ", v ", v.shape_str(), " do not fit together");
  LDM_CHECK(D % heads == 0 && Dv % heads == 0, "attention: ", D, " features do not split into ", heads, " heads");
  const int64_t d = D / heads, dv = Dv / heads;
  const float scale = 1.0f / std::sqrt(float(d));
  Tensor out = Tensor::empty({B, Lq, Dv});
  const int64_t qblocks = (Lq + kQueryBlock - 1) / kQueryBlock;

#pragma omp parallel
  {
    std::vector<float> scores(size_t(std::min(Lq, kQueryBlock) * Lk));
#pragma omp for collapse(3) schedule(dynamic)
    for (int64_t b = 0; b < B; ++b) {
      for (int64_t h = 0; h < heads; ++h) {
        for (int64_t qb = 0; qb < qblocks; ++qb) {
          const int64_t q0 = qb * kQueryBlock, nq = std::min(kQueryBlock, Lq - q0);
          const float* qp = q.data() + (b * Lq + q0) * D + h * d;
          const float* kp = k.data() + b * Lk * D + h * d;
          const float* vp = v.data() + b * Lk * Dv + h * dv;
          float* op = out.data() + (b * Lq + q0) * Dv + h * dv;
          // S[nq, Lk] = scale * Q K^T
          gemm_serial(false, true, nq, Lk, d, scale, qp, D, kp, D, 0.0f, scores.data(), Lk);
          for (int64_t i = 0; i < nq; ++i) {
            float* row = scores.data() + i * Lk;
            const int64_t visible = causal ? std::min(Lk, q0 + i + 1) : Lk;
            softmax_rows(row, 1, visible);
            std::fill(row + visible, row + Lk, 0.0f);
          }
          // O[nq, dv] = P V
          gemm_serial(false, false, nq, dv, Lk, 1.0f, scores.data(), Lk, vp, Dv, 0.0f, op, Dv);
        }
      }
    }
  }
  return out;
}

}  // namespace ldm
