// Row softmax in place on the GPU (CPU twin: softmax_ in include/ldm/nn/activations.hpp).
//
// x [rows, cols] (leading dimensions flattened), per row:
//   m = max_j x[j],  s = sum_j exp(x[j] - m),  x[j] = exp(x[j] - m) / s
// Subtracting the row maximum keeps every exp() in (0, 1], so nothing overflows, and the
// result is unchanged (the factor exp(-m) cancels). Three passes over the row: max, sum,
// write. The exponentials are recomputed in the last pass instead of stored between passes,
// so 16-bit storage rounds only the final value; the re-reads come from L1/L2.
//
// Two kernels by row length:
//   cols <= 1024: one warp per row (8 rows per block), reductions by warp shuffles only;
//   longer rows:  one block of 256 threads per row; each warp reduces with shuffles, the 8
//                 warp results meet in shared memory.
// Uses the accurate expf (not __expf), for fp32 parity with the CPU.
#include <cmath>
#include <cstdint>

#include "ldm/cuda/ops.hpp"
#include "runtime.cuh"

namespace ldm::cuda {
namespace {

constexpr int kThreads = 256, kWarps = kThreads / 32;
constexpr int64_t kWarpRowMax = 1024;  // longest row given to a single warp

struct MaxOp {
  __device__ float operator()(float a, float b) const { return fmaxf(a, b); }
};
struct SumOp {
  __device__ float operator()(float a, float b) const { return a + b; }
};

template <typename Op>
__device__ __forceinline__ float warp_reduce(float v, Op op) {
#pragma unroll
  for (int offset = 16; offset > 0; offset >>= 1) v = op(v, __shfl_xor_sync(0xffffffffu, v, offset));
  return v;  // every lane holds the result
}

// All threads of the block get the reduction of their v. `buf` holds kWarps floats; the
// first __syncthreads keeps a previous call's readers from seeing this call's writes.
template <typename Op>
__device__ __forceinline__ float block_reduce(float v, Op op, float identity, float* buf) {
  const int lane = threadIdx.x % 32, warp = threadIdx.x / 32;
  v = warp_reduce(v, op);
  __syncthreads();
  if (lane == 0) buf[warp] = v;
  __syncthreads();
  v = lane < kWarps ? buf[lane] : identity;
  return warp_reduce(v, op);
}

template <typename T>
__global__ void __launch_bounds__(kThreads) softmax_warp_kernel(T* x, int64_t rows, int64_t cols) {
  const int64_t row = int64_t(blockIdx.x) * kWarps + threadIdx.x / 32;
  if (row >= rows) return;  // whole warps leave; this kernel has no block-wide sync
  const int lane = threadIdx.x % 32;
  T* r = x + row * cols;
  float m = -INFINITY;
  for (int64_t j = lane; j < cols; j += 32) m = fmaxf(m, to_float(r[j]));
  m = warp_reduce(m, MaxOp{});
  float s = 0.0f;
  for (int64_t j = lane; j < cols; j += 32) s += expf(to_float(r[j]) - m);
  s = warp_reduce(s, SumOp{});
  for (int64_t j = lane; j < cols; j += 32) r[j] = from_float<T>(expf(to_float(r[j]) - m) / s);
}

template <typename T>
__global__ void __launch_bounds__(kThreads) softmax_block_kernel(T* x, int64_t cols) {
  __shared__ float buf[kWarps];
  T* r = x + int64_t(blockIdx.x) * cols;
  float m = -INFINITY;
  for (int64_t j = threadIdx.x; j < cols; j += kThreads) m = fmaxf(m, to_float(r[j]));
  m = block_reduce(m, MaxOp{}, -INFINITY, buf);
  float s = 0.0f;
  for (int64_t j = threadIdx.x; j < cols; j += kThreads) s += expf(to_float(r[j]) - m);
  s = block_reduce(s, SumOp{}, 0.0f, buf);
  for (int64_t j = threadIdx.x; j < cols; j += kThreads) r[j] = from_float<T>(expf(to_float(r[j]) - m) / s);
}

}  // namespace

// x [..., cols], in place.
void softmax_rows_(DeviceTensor& x) {
  LDM_CHECK(x.ndim() >= 1, "softmax_rows_: expected x [..., cols], got ", x.shape_str());
  if (x.numel() == 0) return;
  const int64_t cols = x.dim(-1), rows = x.numel() / cols;
  if (cols <= kWarpRowMax) {
    const int64_t blocks = ceil_div(rows, kWarps);
    LDM_CHECK(blocks <= int64_t(INT32_MAX), "softmax_rows_: ", rows, " rows is too many");
    LDM_DISPATCH_DTYPE(x.dtype(), T, {
      softmax_warp_kernel<T><<<unsigned(blocks), kThreads, 0, stream()>>>(x.ptr<T>(), rows, cols);
    });
  } else {
    LDM_CHECK(rows <= int64_t(INT32_MAX), "softmax_rows_: ", rows, " rows is too many");
    LDM_DISPATCH_DTYPE(x.dtype(), T, {
      softmax_block_kernel<T><<<unsigned(rows), kThreads, 0, stream()>>>(x.ptr<T>(), cols);
    });
  }
  LDM_KERNEL_CHECK();
}

}  // namespace ldm::cuda
