// scaled_dot_product_attention's forward (include/ldm/nn/attention.hpp describes it), run on the
// GEMM's packed panels (src/gemm_kernel.hpp) so that nothing is packed twice:
//
//   per (batch, head), once:   K  [Lk, d]   as A panels (MR keys each, k along d)
//                              V^T [dv, Lk] as A panels (MR features each, k along the keys)
//   per block of nq queries:   Q^T [d, nq]  as B panels (NR queries each)
//     S^T [keys, nq] = scale K Q^T      written as B panels: the next product reads them as they are
//     P^T = exp(S^T - max) in place, the sums per query kept          (each row of a panel: 16 queries)
//     O^T [dv, nq]   = V^T P^T          then O = O^T^T / sums
//
// The products block k as gemm does, so every score and output is the same sum that
// gemm_serial gives on the same operands (the form this function had before: S^T = scale K Q^T,
// O = P V): bit for bit at the U-Net's shapes (checked against the old form: 4096 and 1024
// tokens, 77 keys, heads of 40-160). Where the scores take several k blocks (the VAE's one head
// of 512) the compiler fuses the scale into the second block's sum differently (1.3e-7 apart),
// and a causal block of 77 queries no longer has a scalar tail in its exp (2.4e-7). Work is
// split over (batch, head, block of queries), as before.
#include <algorithm>
#include <cmath>
#include <limits>
#include <memory>
#include <string>

#include "gemm_kernel.hpp"
#include "ldm/nn/attention.hpp"

namespace ldm {
namespace {

using namespace gemm_kernel;

// Queries per task: the score panels, keys x kBlockQueries floats (1 MiB at 4096 keys), stay in
// a 2 MiB L2. On the Xeon the U-Net's 4096-token call took 185-191 ms with 64, 202 with 128
// (2 MiB of scores), 190-202 with 32.
constexpr int64_t kBlockQueries = 64;

int64_t round_up(int64_t n, int64_t m) { return (n + m - 1) / m * m; }

// C[M, N] = alpha * op(A) op(B) from whole packed panels over k = 0 .. K:
//   A panel r (rows r*MR ...) at a + r * a_stride, its step k at + k * MR;
//   B panel p (columns p*NR ...) at b + p * b_stride, its step k at + k * NR;
//   C[i, p*NR + j] at c + i * ldc + p * c_panel + j.
// k is blocked as gemm blocks it (k_block(K); beta 0 on the first block, 1 after), so each
// output is the sum gemm computes from the same operands. Runs on the calling thread.
void packed_product(int64_t M, int64_t N, int64_t K, float alpha, const float* a, int64_t a_stride, const float* b,
                    int64_t b_stride, float* c, int64_t ldc, int64_t c_panel) {
  if (K <= 0) {  // an empty sum
    for (int64_t i = 0; i < M; ++i)
      for (int64_t j = 0; j < N; ++j) c[i * ldc + (j / NR) * c_panel + j % NR] = 0.0f;
    return;
  }
  const int64_t kc_max = k_block(K);
  for (int64_t k0 = 0; k0 < K; k0 += kc_max) {
    multiply_panels(M, N, std::min(kc_max, K - k0), alpha, a + k0 * MR, a_stride, b + k0 * NR, b_stride, c, ldc,
                    c_panel, k0 == 0 ? 0.0f : 1.0f, Bias{});
  }
}

}  // namespace

Tensor scaled_dot_product_attention(const Tensor& q, const Tensor& k, const Tensor& v, int64_t heads, bool causal) {
  LDM_CHECK(q.ndim() == 3 && k.ndim() == 3 && v.ndim() == 3, "attention: expected [B, L, H*d] tensors, got q ",
            q.shape_str(), ", k ", k.shape_str(), ", v ", v.shape_str());
  const int64_t B = q.dim(0), Lq = q.dim(1), Lk = k.dim(1), D = q.dim(2), Dv = v.dim(2);
  LDM_CHECK(k.dim(0) == B && v.dim(0) == B && v.dim(1) == Lk && k.dim(2) == D, "attention: q ", q.shape_str(), ", k ",
            k.shape_str(), ", v ", v.shape_str(), " do not fit together");
  LDM_CHECK(heads > 0 && D % heads == 0 && Dv % heads == 0, "attention: ", D, " features do not split into ", heads,
            " heads");
  LDM_CHECK(Lk > 0, "attention: no keys to attend to (k ", k.shape_str(), ")");
  const int64_t d = D / heads, dv = Dv / heads;
  const OpTimer timer(
      "attention",
      [&] { return "[" + std::to_string(B) + ", " + std::to_string(Lq) + " x " + std::to_string(Lk) + ", " +
                   std::to_string(D) + "] " + std::to_string(heads) + " heads"; },
      2.0 * double(B) * double(Lq) * double(Lk) * double(D + Dv));  // Q K^T and P V
  const float scale = 1.0f / std::sqrt(float(d));
  Tensor out = Tensor::empty({B, Lq, Dv});
  if (Lq == 0) return out;

  // Per (batch, head): K as A panels [Lk_pad / MR][d][MR], V^T as A panels [dv_pad / MR][Lk][MR].
  const int64_t lk_pad = round_up(Lk, MR), dv_pad = round_up(dv, MR);
  const int64_t k_size = lk_pad * d, v_size = dv_pad * Lk;
  const std::shared_ptr<float> k_panels = alloc_floats(B * heads * k_size);
  const std::shared_ptr<float> v_panels = alloc_floats(B * heads * v_size);
#pragma omp parallel for collapse(2) if (B * Lk * D > (1 << 15))
  for (int64_t b = 0; b < B; ++b) {
    for (int64_t h = 0; h < heads; ++h) {
      const float* kp = k.data() + b * Lk * D + h * d;   // K [Lk, d], row stride D
      const float* vp = v.data() + b * Lk * Dv + h * dv;  // V [Lk, dv], row stride Dv
      float* ka = k_panels.get() + (b * heads + h) * k_size;
      float* va = v_panels.get() + (b * heads + h) * v_size;
      for (int64_t r = 0; r * MR < Lk; ++r)
        pack_interleave_rows<MR>(kp + r * MR * D, D, std::min<int64_t>(MR, Lk - r * MR), d, ka + r * MR * d);
      for (int64_t r = 0; r * MR < dv; ++r)
        pack_copy_rows<MR>(vp + r * MR, Dv, std::min<int64_t>(MR, dv - r * MR), Lk, va + r * MR * Lk);
    }
  }

  const int64_t block = std::min(Lq, kBlockQueries), nq_pad_max = round_up(block, NR);
  const int64_t qblocks = (Lq + block - 1) / block;
#pragma omp parallel
  {
    const std::shared_ptr<float> q_buf = alloc_floats(d * nq_pad_max);    // Q^T as B panels [nq_pad / NR][d][NR]
    const std::shared_ptr<float> s_buf = alloc_floats(Lk * nq_pad_max);   // S^T, then P^T: [nq_pad / NR][Lk][NR]
    const std::shared_ptr<float> o_buf = alloc_floats(dv * nq_pad_max);   // O^T [dv, nq_pad]
    const std::shared_ptr<float> sum_buf = alloc_floats(nq_pad_max);      // softmax sums per query
#pragma omp for collapse(3) schedule(dynamic)
    for (int64_t b = 0; b < B; ++b) {
      for (int64_t h = 0; h < heads; ++h) {
        for (int64_t qb = 0; qb < qblocks; ++qb) {
          const int64_t q0 = qb * block, nq = std::min(block, Lq - q0), nq_pad = round_up(nq, NR);
          const int64_t keys = causal ? std::min(Lk, q0 + nq) : Lk;  // later keys are masked for every query here
          const float* qp = q.data() + (b * Lq + q0) * D + h * d;    // Q block [nq, d], row stride D
          float* op = out.data() + (b * Lq + q0) * Dv + h * dv;      // O block [nq, dv], row stride Dv
          const float* ka = k_panels.get() + (b * heads + h) * k_size;
          const float* va = v_panels.get() + (b * heads + h) * v_size;
          float *qa = q_buf.get(), *st = s_buf.get(), *ot = o_buf.get(), *sums = sum_buf.get();
          using Lanes = Eigen::Map<Eigen::Array<float, NR, 1>>;  // one row of a panel: NR queries

          for (int64_t p = 0; p * NR < nq; ++p)
            pack_interleave_rows<NR>(qp + p * NR * D, D, std::min<int64_t>(NR, nq - p * NR), d, qa + p * NR * d);
          // S^T[keys, nq_pad] = scale * K Q^T, as B panels (panel p at st + p * NR * Lk)
          packed_product(keys, nq_pad, d, scale, ka, MR * d, qa, NR * d, st, NR, NR * Lk);
          for (int64_t p = 0; p * NR < nq_pad; ++p) {
            float* panel = st + p * NR * Lk;
            if (causal) {  // key j is hidden from queries q0 + p*NR + i < j
              for (int64_t j = q0 + p * NR + 1; j < keys; ++j)
                std::fill_n(panel + j * NR, std::min<int64_t>(NR, j - q0 - p * NR),
                            -std::numeric_limits<float>::infinity());
            }
            // Softmax down each query's column: P^T = exp(S^T - max), the sums kept for the end.
            Eigen::Array<float, NR, 1> m = Lanes(panel), s = Eigen::Array<float, NR, 1>::Zero();
            for (int64_t j = 1; j < keys; ++j) m = m.max(Lanes(panel + j * NR));
            for (int64_t j = 0; j < keys; ++j) {
              Lanes r(panel + j * NR);
              r = (r - m).exp();
              s += r;
            }
            Lanes(sums + p * NR) = s;
          }
          // O^T[dv, nq_pad] = V^T P^T;  O = O^T^T / sums
          packed_product(dv, nq_pad, keys, 1.0f, va, MR * Lk, st, NR * Lk, ot, nq_pad, NR);
          for (int64_t i = 0; i < nq; ++i) {
            const float inv = 1.0f / sums[i];
            for (int64_t j = 0; j < dv; ++j) op[i * Dv + j] = ot[j * nq_pad + i] * inv;
          }
        }
      }
    }
  }
  return out;
}

}  // namespace ldm
