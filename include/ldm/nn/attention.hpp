// Scaled dot-product attention, multi-head, without a [tokens x tokens] matrix in memory.
//
//   out = softmax(Q K^T / sqrt(d)) V            per batch item and head (Vaswani et al., eq. 1)
//
// Q [B, Lq, H*d], K and V [B, Lk, H*d] in the layout the projections produce (heads side by
// side in the last dimension, as diffusers before its head_to_batch_dim reshape). Work is
// split over (batch, head, block of queries). Each task computes the transposed score block
// S^T [Lk, queries] (1 MiB per thread at 4096 keys and 64 queries), a softmax down its columns
// (vectorised across 16 queries, Eigen's vectorised exp), and O = P V, dividing by the softmax
// sums at the end (on [nq, dv], not on the scores). The backward below recomputes the scores
// the same way in blocks of kQueryBlock queries: on a Zen 4 core 128 queries ran 13% faster
// than 64 and the same as 256 (docs/performance.md).
#pragma once
#include <cmath>
#include <limits>
#include <vector>

#include "ldm/core/op_profile.hpp"
#include "ldm/core/tensor.hpp"
#include "ldm/nn/activations.hpp"  // not needed here; kept for the files that reach it through this one
#include "ldm/nn/gemm.hpp"

namespace ldm {

constexpr int64_t kQueryBlock = 128;

// causal: query i sees keys 0..i only (CLIP's text encoder). Defined in src/attention.cpp: it
// multiplies the GEMM's packed panels directly (K and V packed once per head, the scores
// written in the layout the second product reads), which the public gemm calls cannot.
Tensor scaled_dot_product_attention(const Tensor& q, const Tensor& k, const Tensor& v, int64_t heads,
                                    bool causal = false);

// Backward of scaled_dot_product_attention, as memory-bounded as the forward (FlashAttention's
// backward, Dao et al. 2022, alg. 4): saves q, k, v only; the probabilities are recomputed one
// block of queries at a time, so no [Lq x Lk] matrix exists. Per batch item, head and block,
// with P^T [keys, nq] the normalised softmax of S^T = scale K Q^T:
//   dV[keys, dv] += P^T dO                       dP^T[keys, nq] = V dO^T
//   dS^T = P^T (dP^T - rowsum_i)  with rowsum_i = sum_j P_ij dP_ij  (softmax's backward)
//   dQ[nq, d] = scale dS K                       dK[keys, d] += scale dS^T Q
// Masked scores have P = 0, so they pass no gradient. dK and dV sum over the query blocks of
// one (batch, head), so its blocks run in order on one thread; the threads share (batch, head).
struct AttentionGrad {
  Tensor q, k, v;  // shapes of q, k, v
};
inline AttentionGrad scaled_dot_product_attention_backward(const Tensor& q, const Tensor& k, const Tensor& v,
                                                           const Tensor& dout, int64_t heads, bool causal = false) {
  LDM_CHECK(q.ndim() == 3 && k.ndim() == 3 && v.ndim() == 3, "attention_backward: expected [B, L, H*d] tensors, got q ",
            q.shape_str(), ", k ", k.shape_str(), ", v ", v.shape_str());
  const int64_t B = q.dim(0), Lq = q.dim(1), Lk = k.dim(1), D = q.dim(2), Dv = v.dim(2);
  LDM_CHECK(k.dim(0) == B && v.dim(0) == B && v.dim(1) == Lk && k.dim(2) == D, "attention_backward: q ",
            q.shape_str(), ", k ", k.shape_str(), ", v ", v.shape_str(), " do not fit together");
  LDM_CHECK(heads > 0 && D % heads == 0 && Dv % heads == 0, "attention_backward: ", D, " features do not split into ",
            heads, " heads");
  LDM_CHECK(dout.shape() == Shape({B, Lq, Dv}), "attention_backward: gradient ", dout.shape_str(),
            " does not match the output [", B, ", ", Lq, ", ", Dv, "]");
  const int64_t d = D / heads, dv = Dv / heads;
  const float scale = 1.0f / std::sqrt(float(d));
  AttentionGrad g{Tensor::empty(q.shape()), Tensor(k.shape()), Tensor(v.shape())};  // dK, dV accumulate from zero
  const int64_t qblocks = (Lq + kQueryBlock - 1) / kQueryBlock;

#pragma omp parallel
  {
    std::shared_ptr<float> pt_buf = alloc_floats(Lk * std::min(Lq, kQueryBlock));
    std::shared_ptr<float> dpt_buf = alloc_floats(Lk * std::min(Lq, kQueryBlock));
    Eigen::ArrayXf mx(kQueryBlock), sum(kQueryBlock), rowsum(kQueryBlock);
#pragma omp for collapse(2) schedule(dynamic)
    for (int64_t b = 0; b < B; ++b) {
      for (int64_t h = 0; h < heads; ++h) {
        for (int64_t qb = 0; qb < qblocks; ++qb) {
          const int64_t q0 = qb * kQueryBlock, nq = std::min(kQueryBlock, Lq - q0);
          const int64_t keys = causal ? std::min(Lk, q0 + nq) : Lk;
          const float* qp = q.data() + (b * Lq + q0) * D + h * d;       // Q block [nq, d], row stride D
          const float* kp = k.data() + b * Lk * D + h * d;              // K [Lk, d], row stride D
          const float* vp = v.data() + b * Lk * Dv + h * dv;            // V [Lk, dv], row stride Dv
          const float* dop = dout.data() + (b * Lq + q0) * Dv + h * dv;  // dO block [nq, dv], row stride Dv
          float* dqp = g.q.data() + (b * Lq + q0) * D + h * d;
          float* dkp = g.k.data() + b * Lk * D + h * d;
          float* dvp = g.v.data() + b * Lk * Dv + h * dv;
          float* pt = pt_buf.get();    // P^T [keys, nq]
          float* dpt = dpt_buf.get();  // dP^T, then dS^T [keys, nq]
          auto row = [nq](float* m, int64_t j) { return Eigen::Map<Eigen::ArrayXf>(m + j * nq, nq); };

          // P^T: the forward's scores and softmax, normalised here
          gemm_serial(false, true, keys, nq, d, scale, kp, D, qp, D, 0.0f, pt, nq);
          if (causal) {
            for (int64_t j = q0 + 1; j < keys; ++j)
              std::fill(pt + j * nq, pt + j * nq + (j - q0), -std::numeric_limits<float>::infinity());
          }
          auto m = mx.head(nq), s = sum.head(nq), rs = rowsum.head(nq);
          m = row(pt, 0);
          for (int64_t j = 1; j < keys; ++j) m = m.max(row(pt, j));
          s.setZero();
          for (int64_t j = 0; j < keys; ++j) {
            auto r = row(pt, j);
            r = (r - m).exp();
            s += r;
          }
          s = 1.0f / s;
          for (int64_t j = 0; j < keys; ++j) row(pt, j) *= s;

          // dV[keys, dv] += P^T dO;  dP^T[keys, nq] = V dO^T
          gemm_serial(false, false, keys, dv, nq, 1.0f, pt, nq, dop, Dv, 1.0f, dvp, Dv);
          gemm_serial(false, true, keys, nq, dv, 1.0f, vp, Dv, dop, Dv, 0.0f, dpt, nq);
          // dS^T = P^T (dP^T - rowsum)
          rs.setZero();
          for (int64_t j = 0; j < keys; ++j) rs += row(pt, j) * row(dpt, j);
          for (int64_t j = 0; j < keys; ++j) row(dpt, j) = row(pt, j) * (row(dpt, j) - rs);
          // dQ[nq, d] = scale dS K;  dK[keys, d] += scale dS^T Q
          gemm_serial(true, false, nq, d, keys, scale, dpt, nq, kp, D, 0.0f, dqp, D);
          gemm_serial(false, false, keys, d, nq, scale, dpt, nq, qp, D, 1.0f, dkp, D);
        }
      }
    }
  }
  return g;
}

}  // namespace ldm
