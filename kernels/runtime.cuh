// What every kernels/*.cu file shares: error checks, the current stream and cuBLAS handle,
// float <-> storage-type conversions and the dtype dispatch. Internal to kernels/.
#pragma once
#include <cublas_v2.h>
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <cstdint>

#include "ldm/cuda/device_tensor.hpp"

#define LDM_CUDA_CHECK(expr)                                                               \
  do {                                                                                     \
    cudaError_t ldm_err_ = (expr);                                                         \
    if (ldm_err_ != cudaSuccess) LDM_FAIL("CUDA error in ", #expr, ": ", cudaGetErrorString(ldm_err_)); \
  } while (0)

#define LDM_CUBLAS_CHECK(expr)                                                             \
  do {                                                                                     \
    cublasStatus_t ldm_st_ = (expr);                                                       \
    if (ldm_st_ != CUBLAS_STATUS_SUCCESS) LDM_FAIL("cuBLAS error in ", #expr, ": ", cublasGetStatusString(ldm_st_)); \
  } while (0)

// After a kernel launch: a bad launch configuration is reported here, not at the next sync.
#define LDM_KERNEL_CHECK() LDM_CUDA_CHECK(cudaGetLastError())

namespace ldm::cuda {

// The stream all ops are queued on (created on first use; CUDA-graph capture happens on it).
cudaStream_t stream();
// cuBLAS handle bound to stream(), math mode CUBLAS_DEFAULT_MATH (no TF32 for fp32 parity).
cublasHandle_t cublas();
// Stream-ordered scratch memory on stream() (cudaMallocAsync): cheap, and capturable in graphs.
std::shared_ptr<void> scratch_alloc(int64_t bytes);

inline int64_t ceil_div(int64_t a, int64_t b) { return (a + b - 1) / b; }

// V consecutive elements moved by one 16-byte instruction (V = kVec<T>: 4 floats, 8 halves or
// bfloat16s), for pointers that aligned16() accepts.
template <typename T, int V>
struct alignas(sizeof(T) * V) Pack {
  T v[V];
};
template <typename T>
constexpr int kVec = int(16 / sizeof(T));
inline bool aligned16(const void* p) { return reinterpret_cast<uintptr_t>(p) % 16 == 0; }
inline unsigned grid_1d(int64_t n, int threads = 256) { return unsigned(ceil_div(n, threads)); }

template <typename T>
__device__ __forceinline__ float to_float(T x);
template <>
__device__ __forceinline__ float to_float<float>(float x) { return x; }
template <>
__device__ __forceinline__ float to_float<__half>(__half x) { return __half2float(x); }
template <>
__device__ __forceinline__ float to_float<__nv_bfloat16>(__nv_bfloat16 x) { return __bfloat162float(x); }

template <typename T>
__device__ __forceinline__ T from_float(float x);
template <>
__device__ __forceinline__ float from_float<float>(float x) { return x; }
template <>
__device__ __forceinline__ __half from_float<__half>(float x) { return __float2half_rn(x); }
template <>
__device__ __forceinline__ __nv_bfloat16 from_float<__nv_bfloat16>(float x) { return __float2bfloat16_rn(x); }

template <typename T>
struct CudaType;  // cudaDataType_t of a storage type, for cuBLAS
template <>
struct CudaType<float> { static constexpr cudaDataType_t value = CUDA_R_32F; };
template <>
struct CudaType<__half> { static constexpr cudaDataType_t value = CUDA_R_16F; };
template <>
struct CudaType<__nv_bfloat16> { static constexpr cudaDataType_t value = CUDA_R_16BF; };

inline cudaDataType_t cuda_data_type(DType t) {
  return t == DType::f32 ? CUDA_R_32F : t == DType::f16 ? CUDA_R_16F : CUDA_R_16BF;
}

}  // namespace ldm::cuda

// LDM_DISPATCH_DTYPE(t.dtype(), T, { kernel<T><<<...>>>(t.ptr<T>()); }): the body once per storage type.
#define LDM_DISPATCH_DTYPE(dtype, T, ...)              \
  do {                                                 \
    switch (dtype) {                                   \
      case ::ldm::cuda::DType::f32: {                  \
        using T = float;                               \
        __VA_ARGS__;                                   \
        break;                                         \
      }                                                \
      case ::ldm::cuda::DType::f16: {                  \
        using T = __half;                              \
        __VA_ARGS__;                                   \
        break;                                         \
      }                                                \
      case ::ldm::cuda::DType::bf16: {                 \
        using T = __nv_bfloat16;                       \
        __VA_ARGS__;                                   \
        break;                                         \
      }                                                \
    }                                                  \
  } while (0)
