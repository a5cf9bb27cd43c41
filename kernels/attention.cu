// Attention on the GPU: out = softmax(Q K^T / sqrt(d)) V per batch item and head, three ways.
//
// Layouts as the CPU's scaled_dot_product_attention (include/ldm/nn/attention.hpp): q [B, Lq, H*d],
// k [B, Lk, H*d], v [B, Lk, H*dv] -> out [B, Lq, H*dv], the heads side by side in the last
// dimension (head h owns columns h*d .. h*d + d - 1). causal: query i sees keys 0..i only.
// Storage f32/f16/bf16, all arithmetic in float (v3: fp16/bf16 products, float sums).
//
// v1_naive (teaching): three plain kernels, one thread per element each.
//     S = scale * Q K^T  -> scratch [B*H, Lq, Lk] float32 in global memory
//     P = softmax_rows(S)   (in place, one block per row)
//     O = P V
//   Simple, but the score matrix costs O(L^2) memory and traffic: 4 * B*H*Lq*Lk bytes, i.e.
//   1 GiB for the U-Net's 64x64 self-attention at batch 2 (2*8*4096*4096 floats), written
//   once and read twice. The point of v2 is to never materialise it.
//
// v2_flash (FlashAttention, Dao et al. 2022, with float math for every storage type):
//   one thread block per (batch, head, tile of BQ queries). The block keeps its Q tile
//   [BQ, d], an output accumulator O [BQ, dv] and per query a running max m and running sum
//   l in shared memory, and walks over the keys in tiles of kFlashKeys = 32:
//       S    = scale * Q K_tile^T                       [BQ, 32]   (masked: -inf)
//       m'   = max(m, rowmax S);  P = exp(S - m')
//       O    = exp(m - m') * O + P V_tile;  l = exp(m - m') * l + rowsum P;  m = m'
//   and at the end writes O / l. The K tile and then the V tile share one buffer. Every
//   buffer is float; BQ (64 down to 1) is the largest that fits kSmemBudget (so two blocks
//   share an SM), else the device's opt-in maximum (227 KiB on sm_90): d = 40 -> 64 queries,
//   d = 160 -> 32, d = 512 -> 8. Scores never reach global memory.
//
// v3_flash_mma (fp16/bf16): v2's algorithm with the two products on tensor cores through
//   nvcuda::wmma 16x16x16 fragments (fp16/bf16 inputs, float accumulators). Each warp owns 16
//   query rows: it computes its S rows [16, BK] = Q K^T, its online softmax (P rounded to the
//   storage type), rescales its O rows (float, shared memory) by exp(m - m') and adds P V.
//   The warps share only the K and V tiles. Head dims are zero-padded to multiples of 16 in
//   shared memory (d = 40 -> 48), so the padding adds nothing to the dot products. Tiles:
//   64 queries (4 warps) x 64 keys for d <= 80, x 32 keys for d = 160, 32 queries x 32 keys
//   for d = 512. fp32 inputs, and head dims too large for any tile, use v2.
#include <mma.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <type_traits>

#include "ldm/cuda/ops.hpp"
#include "runtime.cuh"

namespace ldm::cuda {

const char* attention_impl_name(AttentionImpl impl) {
  switch (impl) {
    case AttentionImpl::v1_naive: return "v1_naive";
    case AttentionImpl::v2_flash: return "v2_flash";
    case AttentionImpl::v3_flash_mma: return "v3_flash_mma";
  }
  return "unknown";
}

namespace {

// The sizes of one call; passed by value to every kernel.
struct AttnShape {
  int64_t B, Lq, Lk, H;  // batch, queries, keys, heads
  int d, dv;             // per-head dims of q/k and of v
  int64_t D, Dv;         // row strides: H*d (q, k) and H*dv (v, out)
  float scale;           // 1/sqrt(d)
  bool causal;
};

__host__ __device__ __forceinline__ int64_t min64(int64_t x, int64_t y) { return x < y ? x : y; }

__device__ __forceinline__ float warp_max(float v) {
  for (int o = 16; o > 0; o >>= 1) v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, o));
  return v;
}
__device__ __forceinline__ float warp_sum(float v) {
  for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
  return v;
}

// Largest dynamic shared memory a block may have on this device (227 KiB on sm_90).
int max_dynamic_smem() {
  static const int bytes = [] {
    int dev = 0, v = 0;
    LDM_CUDA_CHECK(cudaGetDevice(&dev));
    LDM_CUDA_CHECK(cudaDeviceGetAttribute(&v, cudaDevAttrMaxSharedMemoryPerBlockOptin, dev));
    return v;
  }();
  return bytes;
}

// Above 48 KiB a kernel must opt in to dynamic shared memory; done once per kernel, up to the device maximum.
template <typename Kernel>
void allow_max_smem(Kernel kernel) {
  LDM_CUDA_CHECK(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, max_dynamic_smem()));
}

constexpr int kSmemBudget = 100 * 1024;  // per block, so that two blocks fit in an SM's 228 KiB

unsigned grid_capped(int64_t n, int threads) { return unsigned(std::min<int64_t>(ceil_div(n, threads), 1 << 20)); }

// ============================== v1: naive, S in global memory ==============================

// s[bh, i, j] = scale * q_i . k_j (or -inf where the causal mask hides key j from query i).
template <typename T>
__global__ void naive_scores_kernel(const T* __restrict__ q, const T* __restrict__ k, float* __restrict__ s,
                                    AttnShape a) {
  const int64_t n = a.B * a.H * a.Lq * a.Lk;
  for (int64_t idx = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; idx < n; idx += int64_t(gridDim.x) * blockDim.x) {
    const int64_t j = idx % a.Lk, r = idx / a.Lk, i = r % a.Lq, bh = r / a.Lq;
    const int64_t b = bh / a.H, h = bh % a.H;
    if (a.causal && j > i) {
      s[idx] = -INFINITY;
      continue;
    }
    const T* qi = q + (b * a.Lq + i) * a.D + h * a.d;
    const T* kj = k + (b * a.Lk + j) * a.D + h * a.d;
    float acc = 0.0f;
    for (int t = 0; t < a.d; ++t) acc += to_float(qi[t]) * to_float(kj[t]);
    s[idx] = acc * a.scale;
  }
}

// A block-wide max or sum; every thread gets the result. red: >= 32 floats of shared memory.
template <bool kMax>
__device__ float block_reduce(float v, float* red) {
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, nwarps = (blockDim.x + 31) >> 5;
  v = kMax ? warp_max(v) : warp_sum(v);
  if (lane == 0) red[warp] = v;
  __syncthreads();
  float r = kMax ? -INFINITY : 0.0f;
  for (int w = 0; w < nwarps; ++w) r = kMax ? fmaxf(r, red[w]) : r + red[w];
  __syncthreads();  // red is reused by the next call
  return r;
}

// In place softmax of each row of s [rows, Lk]; one block per row. blockDim.x: a multiple of 32.
__global__ void naive_softmax_kernel(float* __restrict__ s, int64_t rows, int64_t Lk) {
  __shared__ float red[32];
  for (int64_t r = blockIdx.x; r < rows; r += gridDim.x) {
    float* row = s + r * Lk;
    float m = -INFINITY;
    for (int64_t j = threadIdx.x; j < Lk; j += blockDim.x) m = fmaxf(m, row[j]);
    m = block_reduce<true>(m, red);  // finite: key 0 is never masked
    float sum = 0.0f;
    for (int64_t j = threadIdx.x; j < Lk; j += blockDim.x) {
      const float e = expf(row[j] - m);
      row[j] = e;
      sum += e;
    }
    sum = block_reduce<false>(sum, red);
    const float inv = 1.0f / sum;
    for (int64_t j = threadIdx.x; j < Lk; j += blockDim.x) row[j] *= inv;
  }
}

// out[b, i, h*dv + c] = sum_j p[bh, i, j] * v[b, j, h*dv + c]; one thread per output element.
template <typename T>
__global__ void naive_pv_kernel(const float* __restrict__ p, const T* __restrict__ v, T* __restrict__ out,
                                AttnShape a) {
  const int64_t n = a.B * a.Lq * a.Dv;
  for (int64_t idx = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; idx < n; idx += int64_t(gridDim.x) * blockDim.x) {
    const int64_t col = idx % a.Dv, r = idx / a.Dv, i = r % a.Lq, b = r / a.Lq;
    const int64_t h = col / a.dv;
    const float* prow = p + ((b * a.H + h) * a.Lq + i) * a.Lk;
    const T* vcol = v + b * a.Lk * a.Dv + col;
    const int64_t keys = a.causal ? min64(a.Lk, i + 1) : a.Lk;  // masked keys have p = 0
    float acc = 0.0f;
    for (int64_t j = 0; j < keys; ++j) acc += prow[j] * to_float(vcol[j * a.Dv]);
    out[idx] = from_float<T>(acc);
  }
}

template <typename T>
void attention_naive(const T* q, const T* k, const T* v, T* out, const AttnShape& a) {
  const int64_t rows = a.B * a.H * a.Lq;
  std::shared_ptr<void> scratch = scratch_alloc(rows * a.Lk * int64_t(sizeof(float)));  // the O(L^2) part
  float* s = static_cast<float*>(scratch.get());
  naive_scores_kernel<T><<<grid_capped(rows * a.Lk, 256), 256, 0, stream()>>>(q, k, s, a);
  LDM_KERNEL_CHECK();
  naive_softmax_kernel<<<unsigned(std::min<int64_t>(rows, 1 << 20)), 256, 0, stream()>>>(s, rows, a.Lk);
  LDM_KERNEL_CHECK();
  naive_pv_kernel<T><<<grid_capped(a.B * a.Lq * a.Dv, 256), 256, 0, stream()>>>(s, v, out, a);
  LDM_KERNEL_CHECK();
  // scratch is released with cudaFreeAsync on the same stream, i.e. after the kernels.
}

// ============================== v2: flash attention, float tiles ==============================

constexpr int kFlashKeys = 32;      // keys per K/V tile: one per lane of a warp
constexpr int kFlashThreads = 256;  // 8 warps

// Shared memory of one v2 block, in floats:
//   Q [BQ, d] | K or V tile [32, ldkv] | O [BQ, dv] | S/P [BQ, 33] | m, l, alpha [BQ] each
// ldkv is odd, so the 32 lanes reading K[j][t] for j = lane hit 32 different banks.
__host__ __device__ inline int flash_ldkv(int d, int dv) { return (d > dv ? d : dv) | 1; }
inline size_t flash_smem_bytes(int d, int dv, int BQ) {
  const size_t f = size_t(BQ) * d + size_t(kFlashKeys) * flash_ldkv(d, dv) + size_t(BQ) * dv +
                   size_t(BQ) * (kFlashKeys + 1) + 3 * size_t(BQ);
  return f * sizeof(float);
}
// The largest query tile that fits the budget, else the device maximum; 0 if none fits.
int flash_block_queries(int d, int dv) {
  for (int bq = 64; bq >= 1; bq /= 2)
    if (flash_smem_bytes(d, dv, bq) <= size_t(kSmemBudget)) return bq;
  for (int bq = 64; bq >= 1; bq /= 2)
    if (flash_smem_bytes(d, dv, bq) <= size_t(max_dynamic_smem())) return bq;
  return 0;
}

// grid (ceil(Lq / BQ), H, B), block kFlashThreads, dynamic shared memory flash_smem_bytes(d, dv, BQ).
template <typename T>
__global__ void __launch_bounds__(kFlashThreads)
    flash_kernel(const T* __restrict__ q, const T* __restrict__ k, const T* __restrict__ v, T* __restrict__ out,
                 AttnShape a, int BQ) {
  extern __shared__ __align__(16) float flash_smem[];
  const int d = a.d, dv = a.dv, ldkv = flash_ldkv(d, dv), lds = kFlashKeys + 1;
  float* Qs = flash_smem;              // [BQ, d]
  float* KVs = Qs + BQ * d;            // [32, ldkv]: the K tile, then the V tile
  float* Os = KVs + kFlashKeys * ldkv;  // [BQ, dv]
  float* Ss = Os + BQ * dv;            // [BQ, lds]: scores, then probabilities
  float* ms = Ss + BQ * lds;           // [BQ] running max
  float* ls = ms + BQ;                 // [BQ] running sum
  float* alphas = ls + BQ;             // [BQ] exp(m_old - m_new) of the current tile

  const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5, nwarps = blockDim.x >> 5;
  const int64_t b = blockIdx.z, h = blockIdx.y, q0 = int64_t(blockIdx.x) * BQ;
  const T* qb = q + b * a.Lq * a.D + h * d;   // query i: qb + i*D
  const T* kb = k + b * a.Lk * a.D + h * d;   // key j:   kb + j*D
  const T* vb = v + b * a.Lk * a.Dv + h * dv;  // value j: vb + j*Dv

  for (int e = tid; e < BQ * d; e += blockDim.x) {
    const int i = e / d, t = e % d;
    Qs[e] = q0 + i < a.Lq ? to_float(qb[(q0 + i) * a.D + t]) : 0.0f;  // rows past Lq: zeros, never written out
  }
  for (int e = tid; e < BQ * dv; e += blockDim.x) Os[e] = 0.0f;
  for (int i = tid; i < BQ; i += blockDim.x) {
    ms[i] = -INFINITY;
    ls[i] = 0.0f;
  }

  // Causal: keys past the tile's last query are hidden from all of its queries.
  const int64_t kend = a.causal ? min64(a.Lk, q0 + BQ) : a.Lk;
  for (int64_t k0 = 0; k0 < kend; k0 += kFlashKeys) {
    __syncthreads();  // Q/O/m/l initialised; the previous tile's P V is done with KVs and Ss
    for (int e = tid; e < kFlashKeys * d; e += blockDim.x) {
      const int j = e / d, t = e % d;
      KVs[j * ldkv + t] = k0 + j < a.Lk ? to_float(kb[(k0 + j) * a.D + t]) : 0.0f;
    }
    __syncthreads();

    // S = scale * Q K^T, one (query, key) pair per thread and step; a warp shares its query.
    for (int e = tid; e < BQ * kFlashKeys; e += blockDim.x) {
      const int i = e / kFlashKeys, j = e % kFlashKeys;
      const int64_t key = k0 + j;
      float s = -INFINITY;
      if (key < a.Lk && !(a.causal && key > q0 + i)) {
        const float* qi = Qs + i * d;
        const float* kj = KVs + j * ldkv;
        float acc = 0.0f;
        for (int t = 0; t < d; ++t) acc += qi[t] * kj[t];
        s = acc * a.scale;
      }
      Ss[i * lds + j] = s;
    }
    __syncthreads();  // S complete; K no longer needed

    // The V tile replaces K, while each warp turns its rows of S into P (online softmax).
    for (int e = tid; e < kFlashKeys * dv; e += blockDim.x) {
      const int j = e / dv, c = e % dv;
      KVs[j * ldkv + c] = k0 + j < a.Lk ? to_float(vb[(k0 + j) * a.Dv + c]) : 0.0f;  // zeros: 0 * garbage = NaN
    }
    for (int i = warp; i < BQ; i += nwarps) {
      float* srow = Ss + i * lds;
      float mx = -INFINITY;
      for (int j = lane; j < kFlashKeys; j += 32) mx = fmaxf(mx, srow[j]);
      mx = warp_max(mx);
      const float m_old = ms[i], m_new = fmaxf(m_old, mx);
      const float m_use = m_new == -INFINITY ? 0.0f : m_new;  // nothing seen yet: exp(-inf - 0) = 0, no NaN
      float sum = 0.0f;
      for (int j = lane; j < kFlashKeys; j += 32) {
        const float p = expf(srow[j] - m_use);
        srow[j] = p;
        sum += p;
      }
      sum = warp_sum(sum);
      const float alpha = expf(m_old - m_use);
      __syncwarp();  // every lane has read ms[i] before lane 0 replaces it
      if (lane == 0) {
        alphas[i] = alpha;
        ls[i] = ls[i] * alpha + sum;
        ms[i] = m_new;
      }
    }
    __syncthreads();  // P, alpha and the V tile ready

    // O = alpha * O + P V, one output element per thread and step.
    for (int e = tid; e < BQ * dv; e += blockDim.x) {
      const int i = e / dv, c = e % dv;
      const float* prow = Ss + i * lds;
      float acc = Os[e] * alphas[i];
      for (int j = 0; j < kFlashKeys; ++j) acc += prow[j] * KVs[j * ldkv + c];
      Os[e] = acc;
    }
  }
  __syncthreads();

  for (int e = tid; e < BQ * dv; e += blockDim.x) {
    const int i = e / dv, c = e % dv;
    if (q0 + i >= a.Lq) continue;
    const float l = ls[i];
    out[(b * a.Lq + q0 + i) * a.Dv + h * dv + c] = from_float<T>(l > 0.0f ? Os[e] / l : 0.0f);
  }
}

template <typename T>
void attention_flash(const T* q, const T* k, const T* v, T* out, const AttnShape& a) {
  const int BQ = flash_block_queries(a.d, a.dv);
  LDM_CHECK(BQ > 0, "attention (v2_flash): head dims d = ", a.d, ", dv = ", a.dv, " need ",
            flash_smem_bytes(a.d, a.dv, 1), " bytes of shared memory, more than the device's ", max_dynamic_smem());
  static const bool opted_in = (allow_max_smem(flash_kernel<T>), true);
  (void)opted_in;
  const dim3 grid(unsigned(ceil_div(a.Lq, BQ)), unsigned(a.H), unsigned(a.B));
  flash_kernel<T><<<grid, kFlashThreads, flash_smem_bytes(a.d, a.dv, BQ), stream()>>>(q, k, v, out, a, BQ);
  LDM_KERNEL_CHECK();
}

// ============================== v3: flash attention on tensor cores ==============================

// Shared memory of one v3 block (byte offsets, each region 128-byte aligned). Leading dimensions
// are padded by 16 bytes (8 halves, 4 floats): wmma needs multiples of 16 bytes, and the skew
// spreads the rows of a fragment over the banks.
//   Q [BQ, ldq] T | K [BK, ldk] T | V [BK, ldv] T | S [BQ, lds] float | P [BQ, ldp] T |
//   O [BQ, ldo] float | m [BQ] | l [BQ]
struct MmaTiles {
  int BQ = 0, BK = 0;  // queries (16 per warp) and keys per tile
  int dp = 0, dvp = 0;  // d and dv rounded up to 16
  int ldq = 0, ldk = 0, ldv = 0, lds = 0, ldp = 0, ldo = 0;
  size_t off_q = 0, off_k = 0, off_v = 0, off_s = 0, off_p = 0, off_o = 0, off_m = 0, off_l = 0, bytes = 0;
};

MmaTiles mma_tiles(int d, int dv, int BQ, int BK) {
  MmaTiles t;
  t.BQ = BQ;
  t.BK = BK;
  t.dp = int(ceil_div(d, 16) * 16);
  t.dvp = int(ceil_div(dv, 16) * 16);
  t.ldq = t.ldk = t.dp + 8;
  t.ldv = t.dvp + 8;
  t.lds = BK + 4;
  t.ldp = BK + 8;
  t.ldo = t.dvp + 4;
  size_t off = 0;
  auto take = [&off](size_t bytes) {
    const size_t at = off;
    off += (bytes + 127) / 128 * 128;
    return at;
  };
  const size_t e = 2;  // bytes of fp16 / bf16
  t.off_q = take(size_t(BQ) * t.ldq * e);
  t.off_k = take(size_t(BK) * t.ldk * e);
  t.off_v = take(size_t(BK) * t.ldv * e);
  t.off_s = take(size_t(BQ) * t.lds * sizeof(float));
  t.off_p = take(size_t(BQ) * t.ldp * e);
  t.off_o = take(size_t(BQ) * t.ldo * sizeof(float));
  t.off_m = take(size_t(BQ) * sizeof(float));
  t.off_l = take(size_t(BQ) * sizeof(float));
  t.bytes = off;
  return t;
}

// The first tiling that fits the budget, else the first that fits the device; BQ = 0 if none does.
MmaTiles choose_mma_tiles(int d, int dv) {
  const int options[][2] = {{64, 64}, {64, 32}, {32, 32}, {16, 32}};
  for (const auto& o : options) {
    const MmaTiles t = mma_tiles(d, dv, o[0], o[1]);
    if (t.bytes <= size_t(kSmemBudget)) return t;
  }
  for (const auto& o : options) {
    const MmaTiles t = mma_tiles(d, dv, o[0], o[1]);
    if (t.bytes <= size_t(max_dynamic_smem())) return t;
  }
  return MmaTiles{};
}

// dst [rows, width_padded] (row stride ld_dst) <- src [valid, width] (row stride ld_src), zeros elsewhere.
// vec: 16-byte copies; needs width, ld_src, ld_dst multiples of 8 and src 16-byte aligned.
template <typename T>
__device__ void load_tile(T* dst, int ld_dst, const T* src, int64_t ld_src, int rows, int64_t valid, int width,
                          int width_padded, bool vec) {
  if (vec) {
    const int chunks = width_padded / 8;
    for (int e = threadIdx.x; e < rows * chunks; e += blockDim.x) {
      const int r = e / chunks, c = (e % chunks) * 8;
      uint4 x = make_uint4(0u, 0u, 0u, 0u);
      if (r < valid && c < width) x = *reinterpret_cast<const uint4*>(src + r * ld_src + c);
      *reinterpret_cast<uint4*>(dst + r * ld_dst + c) = x;
    }
  } else {
    for (int e = threadIdx.x; e < rows * width_padded; e += blockDim.x) {
      const int r = e / width_padded, c = e % width_padded;
      dst[r * ld_dst + c] = (r < valid && c < width) ? src[r * ld_src + c] : from_float<T>(0.0f);
    }
  }
}

// grid (ceil(Lq / BQ), H, B), block 32 * BQ / 16 threads, dynamic shared memory t.bytes. T: __half or bf16.
template <typename T>
__global__ void __launch_bounds__(128)
    flash_mma_kernel(const T* __restrict__ q, const T* __restrict__ k, const T* __restrict__ v, T* __restrict__ out,
                     AttnShape a, MmaTiles t, bool vec) {
  using namespace nvcuda;
  extern __shared__ __align__(128) unsigned char mma_smem[];
  T* Qs = reinterpret_cast<T*>(mma_smem + t.off_q);
  T* Ks = reinterpret_cast<T*>(mma_smem + t.off_k);
  T* Vs = reinterpret_cast<T*>(mma_smem + t.off_v);
  float* Ss = reinterpret_cast<float*>(mma_smem + t.off_s);
  T* Ps = reinterpret_cast<T*>(mma_smem + t.off_p);
  float* Os = reinterpret_cast<float*>(mma_smem + t.off_o);
  float* ms = reinterpret_cast<float*>(mma_smem + t.off_m);
  float* ls = reinterpret_cast<float*>(mma_smem + t.off_l);

  const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5;
  const int BQ = t.BQ, BK = t.BK, r0 = warp * 16;  // this warp's rows: r0 .. r0 + 15
  const int64_t b = blockIdx.z, h = blockIdx.y, q0 = int64_t(blockIdx.x) * BQ;
  const T* qb = q + b * a.Lq * a.D + h * a.d;
  const T* kb = k + b * a.Lk * a.D + h * a.d;
  const T* vb = v + b * a.Lk * a.Dv + h * a.dv;

  load_tile(Qs, t.ldq, qb + q0 * a.D, a.D, BQ, a.Lq - q0, a.d, t.dp, vec);
  for (int e = tid; e < BQ * t.ldo; e += blockDim.x) Os[e] = 0.0f;
  for (int i = tid; i < BQ; i += blockDim.x) {
    ms[i] = -INFINITY;
    ls[i] = 0.0f;
  }

  const int64_t kend = a.causal ? min64(a.Lk, q0 + BQ) : a.Lk;
  for (int64_t k0 = 0; k0 < kend; k0 += BK) {
    __syncthreads();  // Q/O/m/l initialised; every warp is done with the previous K and V tiles
    load_tile(Ks, t.ldk, kb + k0 * a.D, a.D, BK, a.Lk - k0, a.d, t.dp, vec);
    load_tile(Vs, t.ldv, vb + k0 * a.Dv, a.Dv, BK, a.Lk - k0, a.dv, t.dvp, vec);
    __syncthreads();

    // S[r0.., :] = Q[r0.., :] K^T: K row-major [BK, dp] is K^T column-major.
    for (int n0 = 0; n0 < BK; n0 += 16) {
      wmma::fragment<wmma::accumulator, 16, 16, 16, float> acc;
      wmma::fill_fragment(acc, 0.0f);
      for (int kk = 0; kk < t.dp; kk += 16) {
        wmma::fragment<wmma::matrix_a, 16, 16, 16, T, wmma::row_major> fa;
        wmma::fragment<wmma::matrix_b, 16, 16, 16, T, wmma::col_major> fb;
        wmma::load_matrix_sync(fa, Qs + r0 * t.ldq + kk, t.ldq);
        wmma::load_matrix_sync(fb, Ks + n0 * t.ldk + kk, t.ldk);
        wmma::mma_sync(acc, fa, fb, acc);
      }
      wmma::store_matrix_sync(Ss + r0 * t.lds + n0, acc, t.lds, wmma::mem_row_major);
    }
    __syncwarp();

    // Online softmax of the warp's 16 rows; P in the storage type for the second product.
    for (int r = 0; r < 16; ++r) {
      const int i = r0 + r;
      const int64_t qi = q0 + i;
      float* srow = Ss + i * t.lds;
      float mx = -INFINITY;
      for (int j = lane; j < BK; j += 32) {
        const int64_t key = k0 + j;
        const float s = (key >= a.Lk || (a.causal && key > qi)) ? -INFINITY : srow[j] * a.scale;
        srow[j] = s;
        mx = fmaxf(mx, s);
      }
      mx = warp_max(mx);
      const float m_old = ms[i], m_new = fmaxf(m_old, mx);
      const float m_use = m_new == -INFINITY ? 0.0f : m_new;
      float sum = 0.0f;
      for (int j = lane; j < BK; j += 32) {
        const T p = from_float<T>(__expf(srow[j] - m_use));
        Ps[i * t.ldp + j] = p;
        sum += to_float(p);  // the sum of the weights as they are multiplied
      }
      sum = warp_sum(sum);
      const float alpha = __expf(m_old - m_use);
      __syncwarp();  // every lane has read ms[i] before lane 0 replaces it
      if (lane == 0) {
        ls[i] = ls[i] * alpha + sum;
        ms[i] = m_new;
      }
      for (int c = lane; c < t.dvp; c += 32) Os[i * t.ldo + c] *= alpha;
    }
    __syncwarp();  // P and the rescaled O rows visible to the whole warp

    // O[r0.., :] += P[r0.., :] V
    for (int n0 = 0; n0 < t.dvp; n0 += 16) {
      wmma::fragment<wmma::accumulator, 16, 16, 16, float> acc;
      wmma::load_matrix_sync(acc, Os + r0 * t.ldo + n0, t.ldo, wmma::mem_row_major);
      for (int kk = 0; kk < BK; kk += 16) {
        wmma::fragment<wmma::matrix_a, 16, 16, 16, T, wmma::row_major> fa;
        wmma::fragment<wmma::matrix_b, 16, 16, 16, T, wmma::row_major> fb;
        wmma::load_matrix_sync(fa, Ps + r0 * t.ldp + kk, t.ldp);
        wmma::load_matrix_sync(fb, Vs + kk * t.ldv + n0, t.ldv);
        wmma::mma_sync(acc, fa, fb, acc);
      }
      wmma::store_matrix_sync(Os + r0 * t.ldo + n0, acc, t.ldo, wmma::mem_row_major);
    }
  }
  __syncwarp();  // the warp's last O stores visible to all its lanes

  for (int r = 0; r < 16; ++r) {
    const int i = r0 + r;
    const int64_t qi = q0 + i;
    if (qi >= a.Lq) break;
    const float l = ls[i], inv = l > 0.0f ? 1.0f / l : 0.0f;
    T* orow = out + (b * a.Lq + qi) * a.Dv + h * a.dv;
    for (int c = lane; c < a.dv; c += 32) orow[c] = from_float<T>(Os[i * t.ldo + c] * inv);
  }
}

// false when no tiling fits (the caller then uses v2).
template <typename T>
bool attention_flash_mma(const T* q, const T* k, const T* v, T* out, const AttnShape& a) {
  const MmaTiles t = choose_mma_tiles(a.d, a.dv);
  if (t.BQ == 0) return false;
  static const bool opted_in = (allow_max_smem(flash_mma_kernel<T>), true);
  (void)opted_in;
  const bool vec = a.d % 8 == 0 && a.dv % 8 == 0 && a.D % 8 == 0 && a.Dv % 8 == 0 && aligned16(q) && aligned16(k) &&
                   aligned16(v);
  const dim3 grid(unsigned(ceil_div(a.Lq, t.BQ)), unsigned(a.H), unsigned(a.B));
  flash_mma_kernel<T><<<grid, 32 * (t.BQ / 16), t.bytes, stream()>>>(q, k, v, out, a, t, vec);
  LDM_KERNEL_CHECK();
  return true;
}

}  // namespace

// ============================== the op ==============================

DeviceTensor attention(const DeviceTensor& q, const DeviceTensor& k, const DeviceTensor& v, int64_t heads, bool causal,
                       AttentionImpl impl) {
  LDM_CHECK(q.ndim() == 3 && k.ndim() == 3 && v.ndim() == 3, "cuda::attention: expected [B, L, H*d] tensors, got q ",
            q.shape_str(), ", k ", k.shape_str(), ", v ", v.shape_str());
  const int64_t B = q.dim(0), Lq = q.dim(1), Lk = k.dim(1), D = q.dim(2), Dv = v.dim(2);
  LDM_CHECK(k.dim(0) == B && v.dim(0) == B && v.dim(1) == Lk && k.dim(2) == D, "cuda::attention: q ", q.shape_str(),
            ", k ", k.shape_str(), ", v ", v.shape_str(), " do not fit together");
  LDM_CHECK(q.dtype() == k.dtype() && q.dtype() == v.dtype(), "cuda::attention: q, k, v have dtypes ",
            dtype_name(q.dtype()), ", ", dtype_name(k.dtype()), ", ", dtype_name(v.dtype()));
  LDM_CHECK(heads > 0 && D % heads == 0 && Dv % heads == 0 && D > 0, "cuda::attention: ", D, " and ", Dv,
            " features do not split into ", heads, " heads");
  LDM_CHECK(Lk > 0, "cuda::attention: no keys to attend to (k ", k.shape_str(), ")");
  LDM_CHECK(B <= 65535 && heads <= 65535, "cuda::attention: batch ", B, " or heads ", heads,
            " over the grid limit 65535");
  DeviceTensor out = DeviceTensor::empty({B, Lq, Dv}, q.dtype());
  if (out.numel() == 0) return out;

  AttnShape a{};
  a.B = B;
  a.Lq = Lq;
  a.Lk = Lk;
  a.H = heads;
  a.d = int(D / heads);
  a.dv = int(Dv / heads);
  a.D = D;
  a.Dv = Dv;
  a.scale = 1.0f / std::sqrt(float(a.d));
  a.causal = causal;

  LDM_DISPATCH_DTYPE(q.dtype(), T, {
    const T* qp = q.ptr<T>();
    const T* kp = k.ptr<T>();
    const T* vp = v.ptr<T>();
    T* op = out.ptr<T>();
    switch (impl) {
      case AttentionImpl::v1_naive: attention_naive<T>(qp, kp, vp, op, a); break;
      case AttentionImpl::v2_flash: attention_flash<T>(qp, kp, vp, op, a); break;
      case AttentionImpl::v3_flash_mma:
        if constexpr (std::is_same_v<T, float>) {
          attention_flash<T>(qp, kp, vp, op, a);  // no fp32 tensor-core path (TF32 would break parity)
        } else {
          if (!attention_flash_mma<T>(qp, kp, vp, op, a)) attention_flash<T>(qp, kp, vp, op, a);
        }
        break;
    }
  });
  return out;
}

}  // namespace ldm::cuda
