// scaled_dot_product_attention's forward (include/ldm/nn/attention.hpp describes it), run on the
// GEMM's packed panels (src/gemm_kernel.hpp) so that nothing is packed twice:
//
//   per (batch, head), once:   K  [Lk, d]   as A panels (MR keys each, k along d)
//                              V^T [dv, Lk] as A panels (VR features each, k along the keys)
//   per block of nq queries:   Q^T [d, nq]  as B panels (NR queries each)
//     S^T [keys, nq] = scale log2(e) K Q^T   written as B panels: the next product reads them as they are
//     P^T = 2^(S^T - max) in place, the sums per query kept          (each row of a panel: 16 queries)
//     O^T [dv, nq]   = V^T P^T               then O = O^T^T / sums
//
// The products block k as gemm does, so each score and output is one FMA chain per k block,
// as gemm_serial sums it. The softmax is taken in base 2 (the log2 e folded into the scores'
// scale) with its own 2^x (exp2_nonpositive): against e^x by Eigen the U-Net's error to its
// references moved 7.161e-6 -> 7.235e-6 (unet_64) and 4.208e-6 -> 4.220e-6 (unet_32), the VAE's
// and CLIP's by under 1e-7. Work is split over (batch, head, block of queries).
#include <algorithm>
#include <cmath>
#include <cstring>
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
//   A panel r (rows r*R ...) at a + r * a_stride, its step k at + k * R;
//   B panel p (columns p*NR ...) at b + p * b_stride, its step k at + k * NR;
//   C[i, p*NR + j] at c + i * ldc + p * c_panel + j.
// k is blocked as gemm blocks it (k_block(K); beta 0 on the first block, 1 after), so each
// output is the sum gemm computes from the same operands. Runs on the calling thread.
template <int R>
void packed_product(int64_t M, int64_t N, int64_t K, float alpha, const float* a, int64_t a_stride, const float* b,
                    int64_t b_stride, float* c, int64_t ldc, int64_t c_panel) {
  if (K <= 0) {  // an empty sum
    for (int64_t i = 0; i < M; ++i)
      for (int64_t j = 0; j < N; ++j) c[i * ldc + (j / NR) * c_panel + j % NR] = 0.0f;
    return;
  }
  const int64_t kc_max = k_block(K);
  for (int64_t k0 = 0; k0 < K; k0 += kc_max) {
    multiply_panels<R>(M, N, std::min(kc_max, K - k0), alpha, a + k0 * R, a_stride, b + k0 * NR, b_stride, c, ldc,
                       c_panel, k0 == 0 ? 0.0f : 1.0f, Bias{});
  }
}

// Rows per panel of V^T: MR, or 10 where MR = 12 and heads of dv features would multiply
// more than 4% padded rows (SD1.5's 40, 80 and 160; not the VAE's 512). A 10-row tile runs
// ~4% slower per FMA than the 12-row one but does no padded work: at 40 features P V does 48
// rows' work for 40 with 12 (Xeon, bench_ops' 4096-token call, paired: 211 -> 200, 200 -> 192 ms).
int value_rows(int64_t dv) {
  if (MR != 12) return MR;
  return (round_up(dv, 12) - dv) * 25 > dv ? 10 : 12;
}

// 2^x for x <= 0, per lane; 0 below -125 (the weight of a key 87 nats under the query's best,
// which weighs 1: no float sum can tell it from 0, and P V never meets a denormal) and for a
// masked -inf; NaN stays NaN. 2^x = 2^n 2^f with n = round(x), f in [-1/2, 1/2]: 2^f by a
// degree-6 polynomial (relative error 1e-7, under 1 ulp: fitted to 2^f, coefficients rounded
// to float), times 2^n. With AVX-512, n by one rounding instruction and 2^n p with the lanes
// under -125 zeroed by one masked scalef: 10 vector operations, the same results as the
// portable form's 14 (rounding by a 1.5 x 2^23 shifter, 2^n added to the exponent bits,
// clamp and select), which made the 4096-token softmax's exp pass about a sixth of its products'
// time. (Eigen's exp, ~20 operations, was 28 ms of bench_ops' 199 ms call; Xeon.)
inline v16 exp2_polynomial(v16 f) {
  v16 p = 1.5345812e-4f * f + 1.3399932e-3f;
  p = p * f + 9.6184891e-3f;
  p = p * f + 5.5503286e-2f;
  p = p * f + 2.4022646e-1f;
  p = p * f + 6.9314718e-1f;
  return p * f + 1.0f;
}

inline v16 exp2_nonpositive(v16 x) {
#if defined(__AVX512F__)
  __m512 xm;
  std::memcpy(&xm, &x, sizeof x);
  const __mmask16 kept = _mm512_cmp_ps_mask(xm, _mm512_set1_ps(-125.0f), _CMP_NLT_UQ);  // x >= -125 or NaN
  const __m512 n = _mm512_roundscale_ps(xm, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
  v16 nv;
  std::memcpy(&nv, &n, sizeof n);
  const v16 p = exp2_polynomial(x - nv);
  __m512 pm;
  std::memcpy(&pm, &p, sizeof p);
  const __m512 r = _mm512_maskz_scalef_ps(kept, pm, n);
  v16 out;
  std::memcpy(&out, &r, sizeof r);
  return out;
#else
  const v16i out_of_range = x < -125.0f;
  x = out_of_range ? -125.0f : x;
  const v16 shifter = v16{} + 12582912.0f;  // 1.5 * 2^23: x + shifter holds round(x) in its low bits
  const v16 r = x + shifter;
  v16 p = exp2_polynomial(x - (r - shifter));
  v16i bits, n;
  std::memcpy(&bits, &p, sizeof p);
  std::memcpy(&n, &r, sizeof r);
  bits += n << 23;  // the shifter's own bits shift out of the word
  bits = out_of_range ? 0 : bits;
  std::memcpy(&p, &bits, sizeof p);
  return p;
#endif
}

// The forward for shapes the caller has checked, into out [B, Lq, Dv]; VR rows per V^T panel.
template <int VR>
void attend(const Tensor& q, const Tensor& k, const Tensor& v, int64_t heads, bool causal, Tensor& out) {
  const int64_t B = q.dim(0), Lq = q.dim(1), Lk = k.dim(1), D = q.dim(2), Dv = v.dim(2);
  const int64_t d = D / heads, dv = Dv / heads;
  // Scores in base 2: softmax(s) = 2^(s log2 e - max) / sum, the log2 e taken into the scale.
  const float scale = float(1.4426950408889634 / std::sqrt(double(d)));

  // Per (batch, head): K as A panels [Lk_pad / MR][d][MR], V^T as A panels [dv_pad / VR][Lk][VR].
  const int64_t lk_pad = round_up(Lk, MR), dv_pad = round_up(dv, VR);
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
      for (int64_t r = 0; r * VR < dv; ++r)
        pack_copy_rows<VR>(vp + r * VR, Dv, std::min<int64_t>(VR, dv - r * VR), Lk, va + r * VR * Lk);
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

          for (int64_t p = 0; p * NR < nq; ++p)
            pack_interleave_rows<NR>(qp + p * NR * D, D, std::min<int64_t>(NR, nq - p * NR), d, qa + p * NR * d);
          // S^T[keys, nq_pad] = scale * K Q^T (in base 2), as B panels (panel p at st + p * NR * Lk)
          packed_product<MR>(keys, nq_pad, d, scale, ka, MR * d, qa, NR * d, st, NR, NR * Lk);
          for (int64_t p = 0; p * NR < nq_pad; ++p) {
            float* panel = st + p * NR * Lk;
            if (causal) {  // key j is hidden from queries q0 + p*NR + i < j
              for (int64_t j = q0 + p * NR + 1; j < keys; ++j)
                std::fill_n(panel + j * NR, std::min<int64_t>(NR, j - q0 - p * NR),
                            -std::numeric_limits<float>::infinity());
            }
            // Softmax down each query's column (a row of the panel holds NR queries): P^T =
            // 2^(S^T - max), the sums kept for the end.
            v16 m = load(panel), s = v16{};
            for (int64_t j = 1; j < keys; ++j) {
              const v16 r = load(panel + j * NR);
              m = r > m ? r : m;
            }
            for (int64_t j = 0; j < keys; ++j) {
              const v16 r = exp2_nonpositive(load(panel + j * NR) - m);
              store(panel + j * NR, r);
              s += r;
            }
            store(sums + p * NR, s);
          }
          // O^T[dv, nq_pad] = V^T P^T;  O = O^T^T / sums
          packed_product<VR>(dv, nq_pad, keys, 1.0f, va, VR * Lk, st, NR * Lk, ot, nq_pad, NR);
          for (int64_t i = 0; i < nq; ++i) {
            const float inv = 1.0f / sums[i];
            for (int64_t j = 0; j < dv; ++j) op[i * Dv + j] = ot[j * nq_pad + i] * inv;
          }
        }
      }
    }
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
  const int64_t dv = Dv / heads;
  const OpTimer timer(
      "attention",
      [&] { return "[" + std::to_string(B) + ", " + std::to_string(Lq) + " x " + std::to_string(Lk) + ", " +
                   std::to_string(D) + "] " + std::to_string(heads) + " heads"; },
      2.0 * double(B) * double(Lq) * double(Lk) * double(D + Dv));  // Q K^T and P V
  Tensor out = Tensor::empty({B, Lq, Dv});
  if (Lq == 0) return out;
  if (value_rows(dv) == 10) {
    attend<10>(q, k, v, heads, causal, out);
  } else {
    attend<MR>(q, k, v, heads, causal, out);
  }
  return out;
}

}  // namespace ldm
