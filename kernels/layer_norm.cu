// LayerNorm over the last dimension on the GPU (CPU twin: include/ldm/nn/layer_norm.hpp).
//
// x [rows, D] (all leading dimensions flattened into rows), weight/bias [D]:
//   mean = sum x / D,  var = sum (x - mean)^2 / D  (biased),  rstd = 1 / sqrt(var + eps)
//   y[j] = (x[j] - mean) * rstd * weight[j] + bias[j]
//
// One warp per row, 8 rows per block of 256 threads. SD1.5's rows are short (D = 320 ... 1280,
// CLIP 768) and there are many of them (2 x 4096 tokens), so a warp has 10 to 40 values per
// lane and needs no shared memory and no __syncthreads: the lanes combine their partial sums
// with shuffles (__shfl_xor_sync: after 5 butterfly steps every lane holds the total).
// Two passes for the statistics, as the CPU's moments(): the mean first, then the sum of
// squared deviations from it, which stays accurate when the mean is large against the spread
// (sum(x^2) - D mean^2 would cancel). A third pass normalises. The re-reads of the row come
// from L1/L2. Float accumulation: each lane sums at most D / 32 values before the butterfly.
// Rows are read with 16-byte packs when D % V == 0 and x, y are 16-byte aligned.
#include <cmath>
#include <cstdint>

#include "ldm/cuda/ops.hpp"
#include "runtime.cuh"

namespace ldm::cuda {
namespace {

constexpr int kThreads = 256, kRowsPerBlock = kThreads / 32;

__device__ __forceinline__ float warp_sum(float v) {
#pragma unroll
  for (int offset = 16; offset > 0; offset >>= 1) v += __shfl_xor_sync(0xffffffffu, v, offset);
  return v;
}

template <typename T, int V>
__global__ void __launch_bounds__(kThreads) layer_norm_kernel(const T* x, const T* weight, const T* bias, T* y,
                                                               int64_t rows, int64_t D, float eps) {
  const int64_t row = int64_t(blockIdx.x) * kRowsPerBlock + threadIdx.x / 32;
  if (row >= rows) return;  // the whole warp leaves together: no block-wide sync follows
  const int lane = threadIdx.x % 32;
  const int64_t packs = D / V;
  const Pack<T, V>* xr = reinterpret_cast<const Pack<T, V>*>(x + row * D);
  Pack<T, V>* yr = reinterpret_cast<Pack<T, V>*>(y + row * D);

  float sum = 0.0f;
  for (int64_t p = lane; p < packs; p += 32) {
    const Pack<T, V> a = xr[p];
#pragma unroll
    for (int k = 0; k < V; ++k) sum += to_float(a.v[k]);
  }
  const float mean = warp_sum(sum) / float(D);

  float sq = 0.0f;
  for (int64_t p = lane; p < packs; p += 32) {
    const Pack<T, V> a = xr[p];
#pragma unroll
    for (int k = 0; k < V; ++k) {
      const float d = to_float(a.v[k]) - mean;
      sq += d * d;
    }
  }
  const float rstd = 1.0f / sqrtf(warp_sum(sq) / float(D) + eps);

  for (int64_t p = lane; p < packs; p += 32) {
    Pack<T, V> a = xr[p];
#pragma unroll
    for (int k = 0; k < V; ++k) {
      const int64_t j = p * V + k;
      a.v[k] = from_float<T>((to_float(a.v[k]) - mean) * rstd * to_float(weight[j]) + to_float(bias[j]));
    }
    yr[p] = a;
  }
}

}  // namespace

// x [..., D], weight/bias [D] (converted to x's dtype) -> same shape as x.
DeviceTensor layer_norm(const DeviceTensor& x, const DeviceTensor& weight, const DeviceTensor& bias, float eps) {
  LDM_CHECK(x.ndim() >= 1, "layer_norm: expected x [..., D], got ", x.shape_str());
  const int64_t D = x.dim(-1);
  LDM_CHECK(weight.numel() == D && bias.numel() == D, "layer_norm: weight ", weight.shape_str(), " and bias ",
            bias.shape_str(), " must have ", D, " values for x ", x.shape_str());
  DeviceTensor y = DeviceTensor::empty(x.shape(), x.dtype());
  if (x.numel() == 0) return y;
  const int64_t rows = x.numel() / D;
  const int64_t blocks = ceil_div(rows, kRowsPerBlock);
  LDM_CHECK(blocks <= int64_t(INT32_MAX), "layer_norm: ", rows, " rows is too many");
  const DeviceTensor w = to_dtype(weight, x.dtype()), b = to_dtype(bias, x.dtype());
  LDM_DISPATCH_DTYPE(x.dtype(), T, {
    constexpr int V = kVec<T>;
    if (D % V == 0 && aligned16(x.data()) && aligned16(y.data())) {
      layer_norm_kernel<T, V>
          <<<unsigned(blocks), kThreads, 0, stream()>>>(x.ptr<T>(), w.ptr<T>(), b.ptr<T>(), y.ptr<T>(), rows, D, eps);
    } else {
      layer_norm_kernel<T, 1>
          <<<unsigned(blocks), kThreads, 0, stream()>>>(x.ptr<T>(), w.ptr<T>(), b.ptr<T>(), y.ptr<T>(), rows, D, eps);
    }
  });
  LDM_KERNEL_CHECK();
  return y;
}

}  // namespace ldm::cuda
