// Element-wise ops and layout changes on the GPU: the activations (SiLU, exact GELU, quick
// GELU, GEGLU), residual adds, scaling, the per-channel time-embedding add, channel
// concatenation, image <-> token transposes, nearest 2x upsampling and the sinusoidal
// timestep embedding. The CPU twins are include/ldm/nn/activations.hpp,
// include/ldm/nn/elementwise.hpp and include/ldm/blocks/timestep_embedding.hpp.
//
// All of these are memory-bound: one read and one write per element, a few flops in between.
// What makes them fast is moving bytes efficiently, so:
//   * Vectorised access. Where the pointers are 16-byte aligned (and, for the row- or
//     channel-structured ops, the row length is a multiple of the vector width) each thread
//     moves one 16-byte Pack: 4 floats or 8 halves per load/store instruction. Otherwise the
//     same kernel runs with a Pack of 1 element (e.g. on a slice0 view at an odd offset).
//   * Grid-stride loops: a bounded grid walks any number of elements, with 64-bit indices.
//   * Arithmetic in float whatever the storage type (to_float / from_float of runtime.cuh),
//     with the accurate expf / erff / sinf / cosf, never the fast intrinsics (fp32 parity).
//   * The transposes between [B, C, H*W] and [B, H*W, C] go through a 32x33 shared-memory tile,
//     so both the read and the write of global memory are coalesced.
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <vector>

#include "ldm/cuda/ops.hpp"
#include "runtime.cuh"

namespace ldm::cuda {
namespace {

constexpr int kThreads = 256;
constexpr int64_t kMaxBlocks = 1 << 16;  // grid-stride loops cover the rest
unsigned grid_for(int64_t items) { return unsigned(std::clamp<int64_t>(ceil_div(items, kThreads), 1, kMaxBlocks)); }

__device__ __forceinline__ int64_t global_thread() { return int64_t(blockIdx.x) * blockDim.x + threadIdx.x; }
__device__ __forceinline__ int64_t grid_threads() { return int64_t(gridDim.x) * blockDim.x; }
__device__ __forceinline__ int64_t ceil_div_dev(int64_t a, int64_t b) { return (a + b - 1) / b; }

// ---- the element-wise functions (float in, float out) ---------------------------------------
struct SiluOp {
  __device__ float operator()(float x) const { return x / (1.0f + expf(-x)); }
};
struct GeluOp {  // exact: x * 0.5 * (1 + erf(x / sqrt 2))
  __device__ float operator()(float x) const { return 0.5f * x * (1.0f + erff(x * 0.70710678118654752f)); }
};
struct QuickGeluOp {  // x * sigmoid(1.702 x)
  __device__ float operator()(float x) const { return x / (1.0f + expf(-1.702f * x)); }
};
struct ScaleOp {
  float s;
  __device__ float operator()(float x) const { return x * s; }
};
struct AddOp {
  __device__ float operator()(float a, float b) const { return a + b; }
};

// out[i] = op(in[i]), i < n; out may be in (in place). Packs first, then the n % V tail.
template <typename T, int V, typename Op>
__global__ void unary_kernel(T* out, const T* in, int64_t n, Op op) {
  const int64_t packs = n / V;
  for (int64_t p = global_thread(); p < packs; p += grid_threads()) {
    Pack<T, V> x = reinterpret_cast<const Pack<T, V>*>(in)[p];
#pragma unroll
    for (int k = 0; k < V; ++k) x.v[k] = from_float<T>(op(to_float(x.v[k])));
    reinterpret_cast<Pack<T, V>*>(out)[p] = x;
  }
  for (int64_t i = packs * V + global_thread(); i < n; i += grid_threads()) out[i] = from_float<T>(op(to_float(in[i])));
}

// out[i] = op(a[i], b[i]); out may be a.
template <typename T, int V, typename Op>
__global__ void binary_kernel(T* out, const T* a, const T* b, int64_t n, Op op) {
  const int64_t packs = n / V;
  for (int64_t p = global_thread(); p < packs; p += grid_threads()) {
    Pack<T, V> x = reinterpret_cast<const Pack<T, V>*>(a)[p];
    const Pack<T, V> y = reinterpret_cast<const Pack<T, V>*>(b)[p];
#pragma unroll
    for (int k = 0; k < V; ++k) x.v[k] = from_float<T>(op(to_float(x.v[k]), to_float(y.v[k])));
    reinterpret_cast<Pack<T, V>*>(out)[p] = x;
  }
  for (int64_t i = packs * V + global_thread(); i < n; i += grid_threads())
    out[i] = from_float<T>(op(to_float(a[i]), to_float(b[i])));
}

template <typename T, typename Op>
void launch_unary(T* out, const T* in, int64_t n, Op op) {
  if (n == 0) return;
  constexpr int V = kVec<T>;
  if (aligned16(out) && aligned16(in)) {
    unary_kernel<T, V><<<grid_for(n / V + n % V), kThreads, 0, stream()>>>(out, in, n, op);
  } else {
    unary_kernel<T, 1><<<grid_for(n), kThreads, 0, stream()>>>(out, in, n, op);
  }
  LDM_KERNEL_CHECK();
}

template <typename T, typename Op>
void launch_binary(T* out, const T* a, const T* b, int64_t n, Op op) {
  if (n == 0) return;
  constexpr int V = kVec<T>;
  if (aligned16(out) && aligned16(a) && aligned16(b)) {
    binary_kernel<T, V><<<grid_for(n / V + n % V), kThreads, 0, stream()>>>(out, a, b, n, op);
  } else {
    binary_kernel<T, 1><<<grid_for(n), kThreads, 0, stream()>>>(out, a, b, n, op);
  }
  LDM_KERNEL_CHECK();
}

template <typename Op>
void unary_inplace(DeviceTensor& x, Op op) {
  LDM_DISPATCH_DTYPE(x.dtype(), T, { launch_unary(x.ptr<T>(), x.ptr<T>(), x.numel(), op); });
}

// ---- GEGLU -------------------------------------------------------------------------------
// h [rows, 2F] -> out [rows, F]: out[r, j] = h[r, j] * gelu(h[r, F + j]).
// With V > 1 the host guarantees F % V == 0, so a pack never straddles two rows.
template <typename T, int V>
__global__ void geglu_kernel(T* out, const T* h, int64_t rows, int64_t F) {
  const int64_t packs = rows * F / V;
  const GeluOp gelu;
  for (int64_t p = global_thread(); p < packs; p += grid_threads()) {
    const int64_t i0 = p * V, r = i0 / F, j = i0 - r * F;
    const T* row = h + r * 2 * F;
    const Pack<T, V> a = *reinterpret_cast<const Pack<T, V>*>(row + j);
    const Pack<T, V> g = *reinterpret_cast<const Pack<T, V>*>(row + F + j);
    Pack<T, V> o;
#pragma unroll
    for (int k = 0; k < V; ++k) o.v[k] = from_float<T>(to_float(a.v[k]) * gelu(to_float(g.v[k])));
    reinterpret_cast<Pack<T, V>*>(out)[p] = o;
  }
}

// ---- per-channel add ---------------------------------------------------------------------
// x [B, C, S] += v[b * C + c] (v_per_batch) or v[c]. With V > 1, S % V == 0: one channel per pack.
template <typename T, int V>
__global__ void channel_bias_kernel(T* x, const T* v, int64_t B, int64_t C, int64_t S, bool v_per_batch) {
  const int64_t packs = B * C * S / V;
  for (int64_t p = global_thread(); p < packs; p += grid_threads()) {
    const int64_t bc = p * V / S;
    const float add = to_float(v[v_per_batch ? bc : bc % C]);
    Pack<T, V> a = reinterpret_cast<Pack<T, V>*>(x)[p];
#pragma unroll
    for (int k = 0; k < V; ++k) a.v[k] = from_float<T>(to_float(a.v[k]) + add);
    reinterpret_cast<Pack<T, V>*>(x)[p] = a;
  }
}

// ---- batched transpose: in [batch, R, K] -> out [batch, K, R] -------------------------------
// Block (32, 8) moves one 32x32 tile: reads 32 rows of the input with coalesced loads into
// shared memory, writes 32 rows of the output with coalesced stores. The tile is 33 wide so
// that the column reads of the second phase hit 32 different banks. The loops over tiles and
// batches keep the grid within its limits (gridDim.y, gridDim.z <= 65535) for any size.
constexpr int kTile = 32, kTileRows = 8;

template <typename T>
__global__ void transpose_kernel(const T* in, T* out, int64_t batch, int64_t R, int64_t K) {
  __shared__ float tile[kTile][kTile + 1];
  const int64_t tiles_r = ceil_div_dev(R, kTile);
  for (int64_t b = blockIdx.z; b < batch; b += gridDim.z) {
    const T* src = in + b * R * K;
    T* dst = out + b * R * K;
    for (int64_t tr = blockIdx.y; tr < tiles_r; tr += gridDim.y) {
      const int64_t r0 = tr * kTile, k0 = int64_t(blockIdx.x) * kTile;
      for (int i = threadIdx.y; i < kTile; i += kTileRows) {  // tile[i][j] = in[r0 + i, k0 + j]
        const int64_t r = r0 + i, k = k0 + threadIdx.x;
        if (r < R && k < K) tile[i][threadIdx.x] = to_float(src[r * K + k]);
      }
      __syncthreads();
      for (int i = threadIdx.y; i < kTile; i += kTileRows) {  // out[k0 + i, r0 + j] = tile[j][i]
        const int64_t k = k0 + i, r = r0 + threadIdx.x;
        if (r < R && k < K) dst[k * R + r] = from_float<T>(tile[threadIdx.x][i]);
      }
      __syncthreads();  // the tile is refilled by the next iteration
    }
  }
}

void transpose(const DeviceTensor& in, DeviceTensor& out, int64_t batch, int64_t R, int64_t K) {
  if (batch * R * K == 0) return;
  const int64_t tiles_k = ceil_div(K, kTile);
  LDM_CHECK(tiles_k <= int64_t(INT32_MAX), "transpose: ", K, " columns is too many");
  const dim3 grid(unsigned(tiles_k), unsigned(std::min<int64_t>(ceil_div(R, kTile), 65535)),
                  unsigned(std::min<int64_t>(batch, 65535)));
  LDM_DISPATCH_DTYPE(in.dtype(), T, {
    transpose_kernel<T><<<grid, dim3(kTile, kTileRows), 0, stream()>>>(in.ptr<T>(), out.ptr<T>(), batch, R, K);
  });
  LDM_KERNEL_CHECK();
}

// ---- nearest 2x upsampling ---------------------------------------------------------------
// One block row per output row: blockIdx.x = (b * C + c) * 2H + oy, threads over the 2W
// output columns. No 64-bit divisions per element, and the output row is written coalesced.
template <typename T>
__global__ void upsample2x_kernel(const T* in, T* out, int64_t H, int64_t W) {
  const int64_t row = blockIdx.x;  // output row over all B * C * 2H
  const int64_t bc = row / (2 * H), oy = row - bc * 2 * H;
  const T* src = in + (bc * H + oy / 2) * W;
  T* dst = out + row * 2 * W;
  for (int64_t ox = int64_t(blockIdx.y) * blockDim.x + threadIdx.x; ox < 2 * W; ox += int64_t(gridDim.y) * blockDim.x)
    dst[ox] = src[ox / 2];
}

// ---- timestep embedding ------------------------------------------------------------------
// out [N, dim]: columns [0, half) and [half, 2 half) hold cos/sin (flip) or sin/cos of
// t[n] * freq[i]; an odd dim leaves the last column zero. The timesteps and the frequency table
// travel in the kernel's arguments (2.2 KB, under the 4 KB limit), not through a copy from host
// memory, so that a CUDA graph can record the launch (unet_graph.hpp).
constexpr int kMaxTimesteps = 32, kMaxHalfDim = 512;
struct TimestepArgs {
  float t[kMaxTimesteps];
  float freq[kMaxHalfDim];
};

template <typename T>
__global__ void timestep_embedding_kernel(const TimestepArgs args, T* out, int64_t N, int64_t dim, int64_t half,
                                          bool flip) {
  for (int64_t idx = global_thread(); idx < N * dim; idx += grid_threads()) {
    const int64_t n = idx / dim, j = idx - n * dim;
    float v = 0.0f;
    if (j < 2 * half) {
      const int64_t i = j < half ? j : j - half;
      const float e = args.t[n] * args.freq[i];
      const bool first = j < half;
      v = (first == flip) ? cosf(e) : sinf(e);  // first half: cos if flip, sin otherwise
    }
    out[idx] = from_float<T>(v);
  }
}

void check_same(const DeviceTensor& a, const DeviceTensor& b, const char* op) {
  LDM_CHECK(a.shape() == b.shape(), op, ": shapes ", a.shape_str(), " and ", b.shape_str(), " differ");
  LDM_CHECK(a.dtype() == b.dtype(), op, ": dtypes ", dtype_name(a.dtype()), " and ", dtype_name(b.dtype()),
            " differ");
}

}  // namespace

// ---- public ops -------------------------------------------------------------------------------
void silu_(DeviceTensor& x) { unary_inplace(x, SiluOp{}); }
void gelu_(DeviceTensor& x) { unary_inplace(x, GeluOp{}); }
void quick_gelu_(DeviceTensor& x) { unary_inplace(x, QuickGeluOp{}); }
void scale_(DeviceTensor& a, float s) { unary_inplace(a, ScaleOp{s}); }

DeviceTensor silu(const DeviceTensor& x) {
  DeviceTensor y = DeviceTensor::empty(x.shape(), x.dtype());
  LDM_DISPATCH_DTYPE(x.dtype(), T, { launch_unary(y.ptr<T>(), x.ptr<T>(), x.numel(), SiluOp{}); });
  return y;
}

// h [..., 2F] -> [..., F]
DeviceTensor geglu(const DeviceTensor& h) {
  LDM_CHECK(h.ndim() >= 1 && h.dim(-1) % 2 == 0, "geglu: expected [..., 2F] with an even last dimension, got ",
            h.shape_str());
  const int64_t F = h.dim(-1) / 2, rows = F ? h.numel() / (2 * F) : 0;
  Shape shape = h.shape();
  shape.back() = F;
  DeviceTensor out = DeviceTensor::empty(shape, h.dtype());
  if (rows * F == 0) return out;
  LDM_DISPATCH_DTYPE(h.dtype(), T, {
    constexpr int V = kVec<T>;
    if (F % V == 0 && aligned16(h.data()) && aligned16(out.data())) {
      geglu_kernel<T, V><<<grid_for(rows * F / V), kThreads, 0, stream()>>>(out.ptr<T>(), h.ptr<T>(), rows, F);
    } else {
      geglu_kernel<T, 1><<<grid_for(rows * F), kThreads, 0, stream()>>>(out.ptr<T>(), h.ptr<T>(), rows, F);
    }
  });
  LDM_KERNEL_CHECK();
  return out;
}

void add_(DeviceTensor& a, const DeviceTensor& b) {
  check_same(a, b, "add_");
  LDM_DISPATCH_DTYPE(a.dtype(), T, { launch_binary(a.ptr<T>(), a.ptr<T>(), b.ptr<T>(), a.numel(), AddOp{}); });
}

DeviceTensor add(const DeviceTensor& a, const DeviceTensor& b) {
  check_same(a, b, "add");
  DeviceTensor r = DeviceTensor::empty(a.shape(), a.dtype());
  LDM_DISPATCH_DTYPE(a.dtype(), T, { launch_binary(r.ptr<T>(), a.ptr<T>(), b.ptr<T>(), a.numel(), AddOp{}); });
  return r;
}

// x [B, C, ...] += v [B, C] or [C], broadcast over the pixels. v is converted to x's dtype.
void add_channel_bias_(DeviceTensor& x, const DeviceTensor& v) {
  LDM_CHECK(x.ndim() >= 2, "add_channel_bias_: expected x [B, C, ...], got ", x.shape_str());
  const int64_t B = x.dim(0), C = x.dim(1), BC = B * C;
  const int64_t S = BC ? x.numel() / BC : 0;
  LDM_CHECK(v.numel() == BC || v.numel() == C, "add_channel_bias_: v ", v.shape_str(), " does not fit x ",
            x.shape_str(), ": expected [", B, ", ", C, "] or [", C, "] values");
  if (x.numel() == 0) return;
  const bool per_batch = v.numel() == BC;
  const DeviceTensor vv = to_dtype(v, x.dtype());
  LDM_DISPATCH_DTYPE(x.dtype(), T, {
    constexpr int V = kVec<T>;
    if (S % V == 0 && aligned16(x.data())) {
      channel_bias_kernel<T, V>
          <<<grid_for(BC * S / V), kThreads, 0, stream()>>>(x.ptr<T>(), vv.ptr<T>(), B, C, S, per_batch);
    } else {
      channel_bias_kernel<T, 1><<<grid_for(BC * S), kThreads, 0, stream()>>>(x.ptr<T>(), vv.ptr<T>(), B, C, S, per_batch);
    }
  });
  LDM_KERNEL_CHECK();
}

// [B, Ca, ...] ++ [B, Cb, ...] -> [B, Ca + Cb, ...]: per batch, a's Ca*S values then b's Cb*S.
// Two strided copies (cudaMemcpy2DAsync: B rows of Ca*S elements into rows of (Ca+Cb)*S).
DeviceTensor cat_channels(const DeviceTensor& a, const DeviceTensor& b) {
  bool same = a.ndim() >= 2 && a.ndim() == b.ndim() && a.dtype() == b.dtype();
  for (int i = 0; same && i < a.ndim(); ++i) same = i == 1 || a.dim(i) == b.dim(i);
  LDM_CHECK(same, "cat_channels: ", a.shape_str(), " (", dtype_name(a.dtype()), ") and ", b.shape_str(), " (",
            dtype_name(b.dtype()), ") must agree in dtype and in every dimension but 1");
  const int64_t B = a.dim(0), Ca = a.dim(1), Cb = b.dim(1);
  const int64_t S = numel_of(Shape(a.shape().begin() + 2, a.shape().end()));
  Shape shape = a.shape();
  shape[1] = Ca + Cb;
  DeviceTensor out = DeviceTensor::empty(shape, a.dtype());
  if (out.numel() == 0) return out;
  const int64_t es = dtype_bytes(a.dtype()), row_a = Ca * S * es, row_b = Cb * S * es, row = row_a + row_b;
  LDM_CHECK(row <= int64_t(INT32_MAX), "cat_channels: a batch row of ", row, " bytes exceeds the copy pitch limit");
  char* dst = static_cast<char*>(out.data());
  if (row_a > 0)
    LDM_CUDA_CHECK(cudaMemcpy2DAsync(dst, size_t(row), a.data(), size_t(row_a), size_t(row_a), size_t(B),
                                     cudaMemcpyDeviceToDevice, stream()));
  if (row_b > 0)
    LDM_CUDA_CHECK(cudaMemcpy2DAsync(dst + row_a, size_t(row), b.data(), size_t(row_b), size_t(row_b), size_t(B),
                                     cudaMemcpyDeviceToDevice, stream()));
  return out;
}

// [B, C, H, W] -> [B, H*W, C]: per batch the [C, H*W] matrix transposed.
DeviceTensor image_to_tokens(const DeviceTensor& x) {
  LDM_CHECK(x.ndim() == 4, "image_to_tokens: expected [B, C, H, W], got ", x.shape_str());
  const int64_t B = x.dim(0), C = x.dim(1), S = x.dim(2) * x.dim(3);
  DeviceTensor out = DeviceTensor::empty({B, S, C}, x.dtype());
  transpose(x, out, B, C, S);
  return out;
}

// [B, H*W, C] -> [B, C, H, W]: per batch the [H*W, C] matrix transposed.
DeviceTensor tokens_to_image(const DeviceTensor& t, int64_t H, int64_t W) {
  LDM_CHECK(t.ndim() == 3, "tokens_to_image: expected [B, H*W, C], got ", t.shape_str());
  const int64_t B = t.dim(0), S = t.dim(1), C = t.dim(2);
  LDM_CHECK(H >= 0 && W >= 0 && S == H * W, "tokens_to_image: ", S, " tokens of ", t.shape_str(), " are not a ", H,
            "x", W, " image");
  DeviceTensor out = DeviceTensor::empty({B, C, H, W}, t.dtype());
  transpose(t, out, B, S, C);
  return out;
}

// [B, C, H, W] -> [B, C, 2H, 2W], out[.., y, x] = in[.., y / 2, x / 2]
DeviceTensor upsample_nearest2x(const DeviceTensor& x) {
  LDM_CHECK(x.ndim() == 4, "upsample_nearest2x: expected [B, C, H, W], got ", x.shape_str());
  const int64_t B = x.dim(0), C = x.dim(1), H = x.dim(2), W = x.dim(3);
  DeviceTensor out = DeviceTensor::empty({B, C, 2 * H, 2 * W}, x.dtype());
  if (out.numel() == 0) return out;
  const int64_t rows = B * C * 2 * H;
  LDM_CHECK(rows <= int64_t(INT32_MAX), "upsample_nearest2x: ", x.shape_str(), " has too many rows");
  const int threads = 2 * W >= 256 ? 256 : 2 * W >= 128 ? 128 : 64;
  const dim3 grid(unsigned(rows), unsigned(std::min<int64_t>(ceil_div(2 * W, threads), 65535)));
  LDM_DISPATCH_DTYPE(x.dtype(), T, {
    upsample2x_kernel<T><<<grid, threads, 0, stream()>>>(x.ptr<T>(), out.ptr<T>(), H, W);
  });
  LDM_KERNEL_CHECK();
  return out;
}

// diffusers get_timestep_embedding with scale 1 and max_period 10000. The frequency table is
// computed on the host exactly as include/ldm/blocks/timestep_embedding.hpp does (float32, step
// by step), passed with the timesteps in the kernel's arguments, and one thread per output
// value takes sin or cos.
DeviceTensor timestep_embedding(const std::vector<float>& timesteps, int64_t dim, bool flip_sin_to_cos,
                                float downscale_freq_shift, DType dtype) {
  LDM_CHECK(dim >= 0, "timestep_embedding: negative dim ", dim);
  const int64_t half = dim / 2, N = int64_t(timesteps.size());
  LDM_CHECK(N <= kMaxTimesteps && half <= kMaxHalfDim, "timestep_embedding: at most ", kMaxTimesteps,
            " timesteps and dim ", 2 * kMaxHalfDim, " on the GPU, got ", N, " and ", dim);
  TimestepArgs args{};
  std::copy(timesteps.begin(), timesteps.end(), args.t);
  const float max_period = 10000.0f;
  const float neg_log = -float(std::log(double(max_period)));
  for (int64_t i = 0; i < half; ++i)
    args.freq[i] = std::exp(neg_log * float(i) / (float(half) - downscale_freq_shift));
  DeviceTensor out = DeviceTensor::empty({N, dim}, dtype);
  if (N * dim == 0) return out;
  LDM_DISPATCH_DTYPE(dtype, T, {
    timestep_embedding_kernel<T><<<grid_for(N * dim), kThreads, 0, stream()>>>(args, out.ptr<T>(), N, dim, half,
                                                                                 flip_sin_to_cos);
  });
  LDM_KERNEL_CHECK();
  return out;
}

}  // namespace ldm::cuda
