// GroupNorm on the GPU (CPU twin: include/ldm/nn/group_norm.hpp), two versions.
//
// x [B, C, S] (S = the product of the trailing dimensions, e.g. H*W) with C split into G
// groups of Cg = C / G channels. In this layout the Cg * S values of group g of sample b are
// one contiguous run of n = Cg * S values, starting at (b * G + g) * n. For each run:
//   mean = sum x / n,  var = sum (x - mean)^2 / n  (biased, as torch),  rstd = 1 / sqrt(var + eps)
//   y[c, s] = (x[c, s] - mean) * rstd * weight[c] + bias[c]     (then SiLU if fuse_silu)
//
// v1_naive: one thread per (sample, group) does everything serially: a pass for the mean, a
//   pass for the centred variance, a pass to normalise. Statistics are accumulated in double:
//   a single float accumulator summing tens of thousands of values would lose digits. Only
//   B * G threads (64 for SD1.5) for millions of values: slow, but plainly correct.
//
// v2_block_reduce (production): one block of 512 threads per (sample, group).
//   Pass 1, statistics. Each thread walks the run with a stride of 512 packs (one Pack = 16
//   bytes: 4 floats or 8 halves, one load instruction) and keeps Welford statistics
//   (count, mean, M2 = sum of squared deviations from the mean) in registers. A pack's own
//   statistics are computed exactly in registers and folded in with Chan's merge
//     n = na + nb,  d = mean_b - mean_a,  mean = mean_a + d nb / n,  M2 = M2a + M2b + d^2 na nb / n
//   which never subtracts two large sums (unlike sum(x^2) - n mean^2), so a large mean does not
//   cancel away the variance. The 512 partial results are merged the same way: across each
//   warp with shuffles (5 steps), then the 16 warp results through shared memory.
//   Pass 2 re-reads the run (it was just read, so mostly from L2), normalises, applies the
//   per-channel affine and the optional SiLU, and stores.
//   Float arithmetic throughout; the pack path needs S % V == 0 and 16-byte aligned x and y,
//   otherwise the same kernel runs with packs of one element.
#include <cmath>
#include <cstdint>

#include "ldm/cuda/ops.hpp"
#include "runtime.cuh"

namespace ldm::cuda {

const char* group_norm_impl_name(GroupNormImpl impl) {
  switch (impl) {
    case GroupNormImpl::v1_naive: return "v1_naive";
    case GroupNormImpl::v2_block_reduce: return "v2_block_reduce";
  }
  return "?";
}

namespace {

__device__ __forceinline__ float silu_f(float y) { return y / (1.0f + expf(-y)); }

// ---- v1: one thread per (sample, group) ---------------------------------------------------
template <typename T>
__global__ void group_norm_v1_kernel(const T* x, const T* weight, const T* bias, T* y, int64_t BG, int64_t G,
                                     int64_t Cg, int64_t S, float eps, bool fuse_silu) {
  const int64_t bg = int64_t(blockIdx.x) * blockDim.x + threadIdx.x;
  if (bg >= BG) return;
  const int64_t n = Cg * S, g = bg % G;
  const T* xg = x + bg * n;
  T* yg = y + bg * n;
  double sum = 0;
  for (int64_t i = 0; i < n; ++i) sum += double(to_float(xg[i]));
  const double mean = sum / double(n);
  double sq = 0;
  for (int64_t i = 0; i < n; ++i) {
    const double d = double(to_float(xg[i])) - mean;
    sq += d * d;
  }
  const double rstd = 1.0 / sqrt(sq / double(n) + double(eps));
  for (int64_t cl = 0; cl < Cg; ++cl) {
    const int64_t c = g * Cg + cl;
    const float w = to_float(weight[c]), b = to_float(bias[c]);
    for (int64_t s = 0; s < S; ++s) {
      const int64_t i = cl * S + s;
      float v = float((double(to_float(xg[i])) - mean) * rstd) * w + b;
      if (fuse_silu) v = silu_f(v);
      yg[i] = from_float<T>(v);
    }
  }
}

// ---- v2: one block per (sample, group) -------------------------------------------------------
constexpr int kThreads = 512;  // 16 warps
constexpr int kWarps = kThreads / 32;

struct Stats {
  float n, mean, m2;  // count, mean, sum of squared deviations from the mean
};

// Chan et al.: statistics of the union of two disjoint sets from those of each.
__device__ __forceinline__ void merge(Stats& a, const Stats& b) {
  if (b.n == 0.0f) return;
  if (a.n == 0.0f) {
    a = b;
    return;
  }
  const float n = a.n + b.n, d = b.mean - a.mean, wb = b.n / n;
  a.mean += d * wb;
  a.m2 += b.m2 + d * d * a.n * wb;  // d^2 na nb / n
  a.n = n;
}

__device__ __forceinline__ Stats warp_merge(Stats s) {
#pragma unroll
  for (int offset = 16; offset > 0; offset >>= 1) {
    Stats o;
    o.n = __shfl_xor_sync(0xffffffffu, s.n, offset);
    o.mean = __shfl_xor_sync(0xffffffffu, s.mean, offset);
    o.m2 = __shfl_xor_sync(0xffffffffu, s.m2, offset);
    merge(s, o);
  }
  return s;
}

template <typename T, int V>
__global__ void __launch_bounds__(kThreads) group_norm_v2_kernel(const T* x, const T* weight, const T* bias, T* y,
                                                                  int64_t G, int64_t Cg, int64_t S, float eps,
                                                                  bool fuse_silu) {
  __shared__ Stats warp_stats[kWarps];
  __shared__ float s_mean, s_rstd;
  const int64_t bg = blockIdx.x, g = bg % G, n = Cg * S, packs = n / V;
  const T* xg = x + bg * n;
  T* yg = y + bg * n;

  // Pass 1: Welford statistics per thread, one pack at a time.
  Stats st{0.0f, 0.0f, 0.0f};
  for (int64_t p = threadIdx.x; p < packs; p += kThreads) {
    const Pack<T, V> a = reinterpret_cast<const Pack<T, V>*>(xg)[p];
    float v[V], pm = 0.0f;
#pragma unroll
    for (int k = 0; k < V; ++k) {
      v[k] = to_float(a.v[k]);
      pm += v[k];
    }
    pm *= 1.0f / float(V);
    float pm2 = 0.0f;
#pragma unroll
    for (int k = 0; k < V; ++k) pm2 += (v[k] - pm) * (v[k] - pm);
    merge(st, Stats{float(V), pm, pm2});
  }

  // Merge the 512 partial statistics: within each warp, then across the warps.
  st = warp_merge(st);
  const int lane = threadIdx.x % 32, warp = threadIdx.x / 32;
  if (lane == 0) warp_stats[warp] = st;
  __syncthreads();
  if (warp == 0) {
    st = lane < kWarps ? warp_stats[lane] : Stats{0.0f, 0.0f, 0.0f};
    st = warp_merge(st);
    if (lane == 0) {
      s_mean = st.mean;
      s_rstd = 1.0f / sqrtf(st.m2 / float(n) + eps);  // biased variance, eps inside the root
    }
  }
  __syncthreads();
  const float mean = s_mean, rstd = s_rstd;

  // Pass 2: normalise, affine per channel, optional SiLU. A pack lies in one channel (S % V == 0).
  for (int64_t p = threadIdx.x; p < packs; p += kThreads) {
    const int64_t c = g * Cg + p * V / S;
    const float scale = rstd * to_float(weight[c]), shift = to_float(bias[c]);
    Pack<T, V> a = reinterpret_cast<const Pack<T, V>*>(xg)[p];
#pragma unroll
    for (int k = 0; k < V; ++k) {
      float v = (to_float(a.v[k]) - mean) * scale + shift;
      if (fuse_silu) v = silu_f(v);
      a.v[k] = from_float<T>(v);
    }
    reinterpret_cast<Pack<T, V>*>(yg)[p] = a;
  }
}

}  // namespace

// x [B, C, ...], weight/bias [C] (converted to x's dtype) -> same shape as x.
DeviceTensor group_norm(const DeviceTensor& x, const DeviceTensor& weight, const DeviceTensor& bias, int64_t groups,
                        float eps, bool fuse_silu, GroupNormImpl impl) {
  LDM_CHECK(x.ndim() >= 2, "group_norm: expected x [B, C, ...], got ", x.shape_str());
  const int64_t B = x.dim(0), C = x.dim(1), BC = B * C;
  const int64_t S = BC ? x.numel() / BC : 0;
  LDM_CHECK(groups > 0 && C % groups == 0, "group_norm: ", C, " channels of ", x.shape_str(),
            " do not split into ", groups, " groups");
  LDM_CHECK(weight.numel() == C && bias.numel() == C, "group_norm: weight ", weight.shape_str(), " and bias ",
            bias.shape_str(), " must have ", C, " values for x ", x.shape_str());
  DeviceTensor y = DeviceTensor::empty(x.shape(), x.dtype());
  const int64_t Cg = C / groups, BG = B * groups;
  if (BC * S == 0) return y;
  LDM_CHECK(BG <= int64_t(INT32_MAX), "group_norm: ", BG, " (sample, group) pairs is too many");
  const DeviceTensor w = to_dtype(weight, x.dtype()), b = to_dtype(bias, x.dtype());

  LDM_DISPATCH_DTYPE(x.dtype(), T, {
    switch (impl) {
      case GroupNormImpl::v1_naive: {
        const int threads = 64;
        group_norm_v1_kernel<T><<<unsigned(ceil_div(BG, threads)), threads, 0, stream()>>>(
            x.ptr<T>(), w.ptr<T>(), b.ptr<T>(), y.ptr<T>(), BG, groups, Cg, S, eps, fuse_silu);
        break;
      }
      case GroupNormImpl::v2_block_reduce: {
        constexpr int V = kVec<T>;
        if (S % V == 0 && aligned16(x.data()) && aligned16(y.data())) {
          group_norm_v2_kernel<T, V><<<unsigned(BG), kThreads, 0, stream()>>>(
              x.ptr<T>(), w.ptr<T>(), b.ptr<T>(), y.ptr<T>(), groups, Cg, S, eps, fuse_silu);
        } else {
          group_norm_v2_kernel<T, 1><<<unsigned(BG), kThreads, 0, stream()>>>(
              x.ptr<T>(), w.ptr<T>(), b.ptr<T>(), y.ptr<T>(), groups, Cg, S, eps, fuse_silu);
        }
        break;
      }
    }
  });
  LDM_KERNEL_CHECK();
  return y;
}

}  // namespace ldm::cuda
