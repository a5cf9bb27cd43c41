// GEMM on the GPU: three teaching kernels and the production cuBLAS call, same contract.
//
//   C[M, N] = alpha * op(A)[M, K] * op(B)[K, N] + beta * C      row-major, op(X) = X or X^T,
//   `batch` independent products whose operands are stride_a / stride_b / stride_c apart.
//
// Element addressing (row-major, leading dimensions lda/ldb/ldc >= the row lengths):
//   op(A)[i, k] = trans_a ? A[k * lda + i] : A[i * lda + k]
//   op(B)[k, j] = trans_b ? B[j * ldb + k] : B[k * ldb + j]
// Storage is float, half or bfloat16 (the template parameter T); every kernel converts on load
// and accumulates in float32, then rounds once when C is written. beta == 0 never reads C.
//
// v1_naive: one thread per element of C. Thread (i, j) walks K, reading a row of op(A) and a
//   column of op(B) straight from global memory. Each operand element is fetched from DRAM/L2
//   once per output that needs it (M or N times): the kernel is bound by memory traffic.
//
// v2_smem_tiled: a 32x32 block of threads computes a 32x32 tile of C. The K loop proceeds in
//   steps of 32: the block first copies a 32x32 tile of op(A) and one of op(B) into shared
//   memory (each thread loads one element of each, the load pattern chosen so that adjacent
//   threads read adjacent addresses whatever the transposes: "coalesced"), waits for all
//   threads (__syncthreads), then every thread does 32 multiply-adds out of shared memory.
//   Global traffic drops 32-fold. The shared arrays are padded to 33 columns so that a
//   transposed store (threads writing down a column) hits 32 different memory banks.
//
// v3_register_tiled: a 256-thread block computes a 128x128 tile of C, each thread an 8x8
//   sub-tile held in 64 registers. Per step of BK = 8 along K, the block stages a 128x8 slab
//   of op(A) (stored transposed, As[k][m]) and an 8x128 slab of op(B) (Bs[k][n]) in shared
//   memory; each thread then, for each of the 8 k's, reads 8 values of A and 8 of B into
//   registers and does 8 x 8 = 64 multiply-adds: 16 shared-memory reads feed 64 FMAs, where
//   v2 needed 2 reads per FMA. Thread (ty, tx) of the 16x16 grid owns rows ty + 16*i and
//   columns tx + 16*j (i, j < 8): neighbouring threads read neighbouring shared-memory words
//   (no bank conflicts) and write neighbouring columns of C. Tiles at the edges of C are
//   zero-filled on load and masked on store, so any M, N, K works.
//
// cublas (production): cuBLAS is column-major. A row-major matrix X [r, c] with leading
//   dimension ld is, read column-major, X^T [c, r] with the same ld, so the row-major
//   C = op(A) op(B) is the column-major C^T = op(B)^T op(A)^T: call cuBLAS with the operands
//   swapped (B first), m = N, n = M, and the same transpose flags. fp32 runs in pedantic
//   math mode (no TF32 rounding: exact fp32 parity); fp16/bf16 run on tensor cores with fp32
//   accumulation (CUBLAS_COMPUTE_32F), the pedantic mode lifted for the call.
#include <algorithm>
#include <climits>

#include "ldm/cuda/ops.hpp"
#include "runtime.cuh"

namespace ldm::cuda {

const char* gemm_impl_name(GemmImpl impl) {
  switch (impl) {
    case GemmImpl::v1_naive: return "v1_naive";
    case GemmImpl::v2_smem_tiled: return "v2_smem_tiled";
    case GemmImpl::v3_register_tiled: return "v3_register_tiled";
    case GemmImpl::cublas: return "cublas";
  }
  return "?";
}

namespace {

// The arguments every kernel shares, passed by value (lives in the kernel's parameter space).
template <typename T>
struct GemmArgs {
  bool trans_a, trans_b;
  int64_t M, N, K;
  float alpha, beta;
  const T* A;
  const T* B;
  T* C;
  int64_t lda, ldb, ldc;
  int64_t stride_a, stride_b, stride_c;
};

// op(A)[i, k] and op(B)[k, j] as float; the caller guarantees the indices are in range.
template <typename T>
__device__ __forceinline__ float load_a(const GemmArgs<T>& g, const T* A, int64_t i, int64_t k) {
  return to_float<T>(g.trans_a ? A[k * g.lda + i] : A[i * g.lda + k]);
}
template <typename T>
__device__ __forceinline__ float load_b(const GemmArgs<T>& g, const T* B, int64_t k, int64_t j) {
  return to_float<T>(g.trans_b ? B[j * g.ldb + k] : B[k * g.ldb + j]);
}
// C[i, j] = alpha * acc + beta * C[i, j], C not read when beta == 0.
template <typename T>
__device__ __forceinline__ void store_c(const GemmArgs<T>& g, T* C, int64_t i, int64_t j, float acc) {
  T* c = C + i * g.ldc + j;
  float v = g.alpha * acc;
  if (g.beta != 0.0f) v += g.beta * to_float<T>(*c);
  *c = from_float<T>(v);
}

// ---- v1: one thread per output ----------------------------------------------------------
// grid (ceil(N / 32), ceil(M / 8), batch), block (32, 8): threadIdx.x runs along a row of C,
// so the 32 threads of a warp write 32 adjacent elements.
template <typename T>
__global__ void gemm_v1_naive_kernel(GemmArgs<T> g) {
  const int64_t j = int64_t(blockIdx.x) * blockDim.x + threadIdx.x;
  const int64_t i = int64_t(blockIdx.y) * blockDim.y + threadIdx.y;
  if (i >= g.M || j >= g.N) return;
  const int64_t z = blockIdx.z;
  const T* A = g.A + z * g.stride_a;
  const T* B = g.B + z * g.stride_b;
  float acc = 0.0f;
  for (int64_t k = 0; k < g.K; ++k) acc += load_a(g, A, i, k) * load_b(g, B, k, j);
  store_c(g, g.C + z * g.stride_c, i, j, acc);
}

// ---- v2: 32x32 tiles in shared memory -----------------------------------------------------
// grid (ceil(N / 32), ceil(M / 32), batch), block (32, 32) = 1024 threads, one output each.
constexpr int kTile2 = 32;

template <typename T>
__global__ void __launch_bounds__(kTile2* kTile2) gemm_v2_smem_tiled_kernel(GemmArgs<T> g) {
  __shared__ float As[kTile2][kTile2 + 1];  // As[m][k] = op(A)[row0 + m, k0 + k]
  __shared__ float Bs[kTile2][kTile2 + 1];  // Bs[k][n] = op(B)[k0 + k, col0 + n]
  const int tx = threadIdx.x, ty = threadIdx.y;
  const int64_t row0 = int64_t(blockIdx.y) * kTile2, col0 = int64_t(blockIdx.x) * kTile2;
  const int64_t z = blockIdx.z;
  const T* A = g.A + z * g.stride_a;
  const T* B = g.B + z * g.stride_b;

  float acc = 0.0f;
  for (int64_t k0 = 0; k0 < g.K; k0 += kTile2) {
    // 1. Stage the tiles. Consecutive tx read consecutive addresses: along k when op(A) = A
    //    (rows of A are contiguous), along m when op(A) = A^T (then columns of op(A) are).
    {
      const int m = g.trans_a ? tx : ty, k = g.trans_a ? ty : tx;
      const int64_t gi = row0 + m, gk = k0 + k;
      As[m][k] = (gi < g.M && gk < g.K) ? load_a(g, A, gi, gk) : 0.0f;
    }
    {
      const int k = g.trans_b ? tx : ty, n = g.trans_b ? ty : tx;
      const int64_t gk = k0 + k, gj = col0 + n;
      Bs[k][n] = (gk < g.K && gj < g.N) ? load_b(g, B, gk, gj) : 0.0f;
    }
    __syncthreads();  // 2. the whole tile is in shared memory before anyone reads it
    // 3. 32 multiply-adds from shared memory: As[ty][kk] is one word for the whole warp
    //    (a broadcast), Bs[kk][tx] 32 consecutive words.
#pragma unroll
    for (int kk = 0; kk < kTile2; ++kk) acc += As[ty][kk] * Bs[kk][tx];
    __syncthreads();  // 4. everyone is done with the tile before the next one overwrites it
  }
  const int64_t i = row0 + ty, j = col0 + tx;
  if (i < g.M && j < g.N) store_c(g, g.C + z * g.stride_c, i, j, acc);
}

// ---- v3: 128x128 block tile, 8x8 register tile per thread --------------------------------
// grid (ceil(N / 128), ceil(M / 128), batch), block 256 threads seen as 16 x 16.
constexpr int kBM = 128, kBN = 128, kBK = 8, kTM = 8, kTN = 8, kThreads3 = 256;
static_assert((kBM / kTM) * (kBN / kTN) == kThreads3, "one thread per 8x8 sub-tile");
static_assert(kBM * kBK % kThreads3 == 0 && kBN * kBK % kThreads3 == 0, "tile loads divide evenly");

template <typename T>
__global__ void __launch_bounds__(kThreads3) gemm_v3_register_tiled_kernel(GemmArgs<T> g) {
  // +4 floats of padding per row: the loads below write down columns of these arrays, and
  // a row pitch of 132 words spreads such a column over different banks.
  __shared__ float As[kBK][kBM + 4];  // As[k][m] = op(A)[row0 + m, k0 + k] (transposed)
  __shared__ float Bs[kBK][kBN + 4];  // Bs[k][n] = op(B)[k0 + k, col0 + n]
  const int t = threadIdx.x;
  const int ty = t / (kBN / kTN), tx = t % (kBN / kTN);  // 16 x 16
  const int64_t row0 = int64_t(blockIdx.y) * kBM, col0 = int64_t(blockIdx.x) * kBN;
  const int64_t z = blockIdx.z;
  const T* A = g.A + z * g.stride_a;
  const T* B = g.B + z * g.stride_b;

  float acc[kTM][kTN];
#pragma unroll
  for (int i = 0; i < kTM; ++i)
#pragma unroll
    for (int j = 0; j < kTN; ++j) acc[i][j] = 0.0f;

  for (int64_t k0 = 0; k0 < g.K; k0 += kBK) {
    // 1. Stage op(A)[row0 : +128, k0 : +8] and op(B)[k0 : +8, col0 : +128]: 1024 elements
    //    each, 4 per thread; element number idx = t + 256 r is mapped so that consecutive
    //    threads read consecutive addresses of the stored matrix. Outside C: zeros.
#pragma unroll
    for (int r = 0; r < kBM * kBK / kThreads3; ++r) {
      const int idx = t + r * kThreads3;
      const int m = g.trans_a ? idx % kBM : idx / kBK, k = g.trans_a ? idx / kBM : idx % kBK;
      const int64_t gi = row0 + m, gk = k0 + k;
      As[k][m] = (gi < g.M && gk < g.K) ? load_a(g, A, gi, gk) : 0.0f;
    }
#pragma unroll
    for (int r = 0; r < kBN * kBK / kThreads3; ++r) {
      const int idx = t + r * kThreads3;
      const int n = g.trans_b ? idx / kBK : idx % kBN, k = g.trans_b ? idx % kBK : idx / kBN;
      const int64_t gk = k0 + k, gj = col0 + n;
      Bs[k][n] = (gk < g.K && gj < g.N) ? load_b(g, B, gk, gj) : 0.0f;
    }
    __syncthreads();
    // 2. For each k of the slab: 8 values of A and 8 of B into registers, then their outer
    //    product (64 FMAs) into the accumulators.
#pragma unroll
    for (int kk = 0; kk < kBK; ++kk) {
      float a[kTM], b[kTN];
#pragma unroll
      for (int i = 0; i < kTM; ++i) a[i] = As[kk][ty + i * (kBM / kTM)];
#pragma unroll
      for (int j = 0; j < kTN; ++j) b[j] = Bs[kk][tx + j * (kBN / kTN)];
#pragma unroll
      for (int i = 0; i < kTM; ++i)
#pragma unroll
        for (int j = 0; j < kTN; ++j) acc[i][j] += a[i] * b[j];
    }
    __syncthreads();
  }
  // 3. Write the 8x8 sub-tile, skipping what lies outside C.
  T* C = g.C + z * g.stride_c;
#pragma unroll
  for (int i = 0; i < kTM; ++i) {
    const int64_t gi = row0 + ty + i * (kBM / kTM);
    if (gi >= g.M) continue;
#pragma unroll
    for (int j = 0; j < kTN; ++j) {
      const int64_t gj = col0 + tx + j * (kBN / kTN);
      if (gj < g.N) store_c(g, C, gi, gj, acc[i][j]);
    }
  }
}

// Grid dimensions y and z are limited to 65535 blocks.
void check_grid(const char* impl, int64_t gy, int64_t gz, int64_t M, int64_t batch) {
  LDM_CHECK(gy <= 65535, "gemm (", impl, "): M = ", M, " needs ", gy, " blocks along grid y (max 65535)");
  LDM_CHECK(gz <= 65535, "gemm (", impl, "): batch ", batch, " exceeds 65535");
}

template <typename T>
void launch_teaching(GemmImpl impl, const GemmArgs<T>& g, int64_t batch) {
  switch (impl) {
    case GemmImpl::v1_naive: {
      const dim3 block(32, 8);
      const int64_t gy = ceil_div(g.M, 8);
      check_grid("v1_naive", gy, batch, g.M, batch);
      const dim3 grid(unsigned(ceil_div(g.N, 32)), unsigned(gy), unsigned(batch));
      gemm_v1_naive_kernel<T><<<grid, block, 0, stream()>>>(g);
      break;
    }
    case GemmImpl::v2_smem_tiled: {
      const dim3 block(kTile2, kTile2);
      const int64_t gy = ceil_div(g.M, kTile2);
      check_grid("v2_smem_tiled", gy, batch, g.M, batch);
      const dim3 grid(unsigned(ceil_div(g.N, kTile2)), unsigned(gy), unsigned(batch));
      gemm_v2_smem_tiled_kernel<T><<<grid, block, 0, stream()>>>(g);
      break;
    }
    case GemmImpl::v3_register_tiled:
    default: {
      const int64_t gy = ceil_div(g.M, kBM);
      check_grid("v3_register_tiled", gy, batch, g.M, batch);
      const dim3 grid(unsigned(ceil_div(g.N, kBN)), unsigned(gy), unsigned(batch));
      gemm_v3_register_tiled_kernel<T><<<grid, kThreads3, 0, stream()>>>(g);
      break;
    }
  }
  LDM_KERNEL_CHECK();
}

// Sets the handle's math mode for one call and restores the previous one: cuBLAS's pedantic
// mode may keep fp16/bf16 products off the tensor cores. The mode is host-side handle state,
// so this is also fine while a CUDA graph is being captured.
class MathModeScope {
 public:
  MathModeScope(cublasHandle_t h, cublasMath_t mode) : h_(h) {
    LDM_CUBLAS_CHECK(cublasGetMathMode(h_, &saved_));
    LDM_CUBLAS_CHECK(cublasSetMathMode(h_, mode));
  }
  ~MathModeScope() { cublasSetMathMode(h_, saved_); }
  MathModeScope(const MathModeScope&) = delete;
  MathModeScope& operator=(const MathModeScope&) = delete;

 private:
  cublasHandle_t h_;
  cublasMath_t saved_ = CUBLAS_DEFAULT_MATH;
};

void gemm_cublas(bool trans_a, bool trans_b, int64_t M, int64_t N, int64_t K, float alpha, const void* A,
                 int64_t lda, const void* B, int64_t ldb, float beta, void* C, int64_t ldc, DType dtype,
                 int64_t batch, int64_t stride_a, int64_t stride_b, int64_t stride_c) {
  for (int64_t v : {M, N, K, lda, ldb, ldc, batch})
    LDM_CHECK(v <= INT_MAX, "gemm (cublas): size or leading dimension ", v, " exceeds the 32-bit range");
  const cudaDataType_t type = cuda_data_type(dtype);
  cublasHandle_t h = cublas();
  // Column-major view: C^T [N, M] = op(B)^T [N, K] * op(A)^T [K, M].
  const cublasOperation_t op_first = trans_b ? CUBLAS_OP_T : CUBLAS_OP_N;
  const cublasOperation_t op_second = trans_a ? CUBLAS_OP_T : CUBLAS_OP_N;
  auto call = [&] {
    LDM_CUBLAS_CHECK(cublasGemmStridedBatchedEx(h, op_first, op_second, int(N), int(M), int(K), &alpha, B, type,
                                                int(ldb), (long long)stride_b, A, type, int(lda), (long long)stride_a,
                                                &beta, C, type, int(ldc), (long long)stride_c, int(batch),
                                                CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT));
  };
  if (dtype == DType::f32) {
    call();  // the handle's pedantic mode: true fp32, no TF32
  } else {
    MathModeScope tensor_cores(h, CUBLAS_DEFAULT_MATH);
    call();
  }
}

}  // namespace

void gemm(bool trans_a, bool trans_b, int64_t M, int64_t N, int64_t K, float alpha, const void* A, int64_t lda,
          const void* B, int64_t ldb, float beta, void* C, int64_t ldc, DType dtype, GemmImpl impl, int64_t batch,
          int64_t stride_a, int64_t stride_b, int64_t stride_c) {
  LDM_CHECK(M >= 0 && N >= 0 && K >= 0 && batch >= 1, "gemm: bad sizes M ", M, ", N ", N, ", K ", K, ", batch ",
            batch);
  // op(A) is [M, K]: stored [M, K] (lda >= K) or [K, M] (lda >= M); likewise B, and C [M, N].
  const int64_t min_lda = std::max<int64_t>(1, trans_a ? M : K), min_ldb = std::max<int64_t>(1, trans_b ? K : N);
  LDM_CHECK(lda >= min_lda, "gemm: lda ", lda, " < ", min_lda, " for ", trans_a ? "A^T" : "A", " with M ", M, ", K ",
            K);
  LDM_CHECK(ldb >= min_ldb, "gemm: ldb ", ldb, " < ", min_ldb, " for ", trans_b ? "B^T" : "B", " with K ", K, ", N ",
            N);
  LDM_CHECK(ldc >= std::max<int64_t>(1, N), "gemm: ldc ", ldc, " < N = ", N);
  if (M == 0 || N == 0) return;
  LDM_CHECK(C != nullptr && (K == 0 || (A != nullptr && B != nullptr)), "gemm: null operand (M ", M, ", N ", N,
            ", K ", K, ")");
  // An empty sum: C = beta * C. The naive kernel does exactly that (cuBLAS would too, but
  // insists on leading dimensions >= 1 of matrices that do not exist).
  if (K == 0 && impl == GemmImpl::cublas) impl = GemmImpl::v1_naive;

  if (impl == GemmImpl::cublas) {
    gemm_cublas(trans_a, trans_b, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc, dtype, batch, stride_a, stride_b,
                stride_c);
    return;
  }
  LDM_DISPATCH_DTYPE(dtype, T, {
    GemmArgs<T> g{trans_a,
                  trans_b,
                  M,
                  N,
                  K,
                  alpha,
                  beta,
                  static_cast<const T*>(A),
                  static_cast<const T*>(B),
                  static_cast<T*>(C),
                  lda,
                  ldb,
                  ldc,
                  stride_a,
                  stride_b,
                  stride_c};
    launch_teaching<T>(impl, g, batch);
  });
}

// ---- linear ---------------------------------------------------------------------------------
namespace {
// y[r, n] = bias[n] for every row r: the GEMM then adds x W^T on top (beta = 1).
// grid (rows, ceil(N / 256)): one block row per row of y.
template <typename T>
__global__ void broadcast_rows_kernel(T* __restrict__ y, const T* __restrict__ bias, int64_t N) {
  const int64_t n = int64_t(blockIdx.y) * blockDim.x + threadIdx.x;
  if (n < N) y[int64_t(blockIdx.x) * N + n] = bias[n];
}
}  // namespace

DeviceTensor linear(const DeviceTensor& x, const DeviceTensor& weight, const DeviceTensor& bias, GemmImpl impl) {
  LDM_CHECK(x.defined() && x.ndim() >= 1, "linear: undefined or 0-d input");
  LDM_CHECK(weight.ndim() == 2, "linear: expected a weight [out, in], got ", weight.shape_str());
  const int64_t K = weight.dim(1), N = weight.dim(0);
  LDM_CHECK(x.dim(-1) == K, "linear: input ", x.shape_str(), " does not match weight ", weight.shape_str(),
            " (expected last dimension ", K, ")");
  LDM_CHECK(weight.dtype() == x.dtype(), "linear: input is ", dtype_name(x.dtype()), ", weight ",
            dtype_name(weight.dtype()));
  if (bias.defined()) {
    LDM_CHECK(bias.numel() == N, "linear: bias ", bias.shape_str(), " does not match ", N, " output features");
    LDM_CHECK(bias.dtype() == x.dtype(), "linear: input is ", dtype_name(x.dtype()), ", bias ",
              dtype_name(bias.dtype()));
  }
  Shape shape = x.shape();
  shape.back() = N;
  DeviceTensor y = DeviceTensor::empty(shape, x.dtype());
  const int64_t rows = numel_of(Shape(x.shape().begin(), x.shape().end() - 1));  // product of the leading dims
  if (rows == 0 || N == 0) return y;
  float beta = 0.0f;
  if (bias.defined()) {
    const int64_t gy = ceil_div(N, 256);
    LDM_CHECK(rows <= INT_MAX && gy <= 65535, "linear: output ", y.shape_str(), " too large for the bias grid");
    const dim3 grid{unsigned(rows), unsigned(gy)};
    LDM_DISPATCH_DTYPE(x.dtype(), T, {
      broadcast_rows_kernel<T><<<grid, 256, 0, stream()>>>(y.ptr<T>(), bias.ptr<T>(), N);
      LDM_KERNEL_CHECK();
    });
    beta = 1.0f;
  }
  // y[rows, N] = x[rows, K] W[N, K]^T (+ y)
  gemm(false, true, rows, N, K, 1.0f, x.data(), std::max<int64_t>(K, 1), weight.data(), std::max<int64_t>(K, 1),
       beta, y.data(), N, x.dtype(), impl);
  return y;
}

}  // namespace ldm::cuda
