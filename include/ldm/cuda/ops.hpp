// The GPU ops, one family per kernels/*.cu file, mirroring the CPU ops in include/ldm/nn/.
//
// Every function takes and returns DeviceTensors in the CPU path's layouts; the result has the
// input's dtype (float32 accumulation inside). All work is queued on the library's current
// stream (kernels/runtime.cuh) and is asynchronous: synchronize() or a download waits for it.
// For GEMM, conv2d, GroupNorm and attention a numbered teaching version is kept beside the
// production one (as llm.c's dev/cuda): same contract, checked by the same tests
//   tests/test_cuda_ops.cpp, timed by bench/bench_cuda.cpp.
#pragma once
#include <vector>

#include "ldm/cuda/device_tensor.hpp"
#include "ldm/nn/padding.hpp"

namespace ldm::cuda {

// ---- GEMM / linear (kernels/gemm.cu) -----------------------------------------------------
enum class GemmImpl {
  v1_naive,        // one thread per output element, operands straight from global memory
  v2_smem_tiled,   // 32x32 tiles of A and B staged in shared memory
  v3_register_tiled,  // 128x128 block tile, each thread an 8x8 register tile
  cublas,          // production: cublasGemmEx (fp32 with TF32 off; fp16/bf16 on tensor cores)
};
const char* gemm_impl_name(GemmImpl impl);

// C[M, N] = alpha * op(A) op(B) + beta * C, row-major, op(X) = X or X^T; all three of dtype `dtype`.
// batch > 1: `batch` independent products, operands strided by stride_a/b/c elements.
void gemm(bool trans_a, bool trans_b, int64_t M, int64_t N, int64_t K, float alpha, const void* A, int64_t lda,
          const void* B, int64_t ldb, float beta, void* C, int64_t ldc, DType dtype, GemmImpl impl = GemmImpl::cublas,
          int64_t batch = 1, int64_t stride_a = 0, int64_t stride_b = 0, int64_t stride_c = 0);

// torch.nn.functional.linear: x [..., K], weight [N, K], bias [N] (optional) -> [..., N].
DeviceTensor linear(const DeviceTensor& x, const DeviceTensor& weight, const DeviceTensor& bias = {},
                    GemmImpl impl = GemmImpl::cublas);

// ---- conv2d (kernels/conv2d.cu) ----------------------------------------------------------
using ldm::Padding;  // the CPU conv2d's (nn/padding.hpp)
enum class ConvImpl {
  v1_direct,          // one thread per output element, loops over C x kh x kw
  v2_implicit_gemm,   // im2col tiles built in shared memory, never in global memory
  im2col_cublas,      // production: im2col of a bounded slab of pixels + cuBLAS GEMM
};
const char* conv_impl_name(ConvImpl impl);

// x [B, C, H, W], weight [O, C, kh, kw], bias [O] (optional) -> [B, O, Ho, Wo]; groups 1, dilation 1.
DeviceTensor conv2d(const DeviceTensor& x, const DeviceTensor& weight, const DeviceTensor& bias, int stride,
                    Padding pad, ConvImpl impl = ConvImpl::im2col_cublas);

// ---- normalisation (kernels/group_norm.cu, kernels/layer_norm.cu) ------------------------
enum class GroupNormImpl {
  v1_naive,       // one thread per (batch, group): serial mean/variance, then normalise
  v2_block_reduce,  // one block per (batch, group): Welford in registers, warp-shuffle reduction
};
const char* group_norm_impl_name(GroupNormImpl impl);

// x [B, C, ...], weight/bias [C] -> same shape; fuse_silu applies SiLU to the result.
DeviceTensor group_norm(const DeviceTensor& x, const DeviceTensor& weight, const DeviceTensor& bias, int64_t groups,
                        float eps, bool fuse_silu = false, GroupNormImpl impl = GroupNormImpl::v2_block_reduce);
// over the last dimension: x [..., C], weight/bias [C].
DeviceTensor layer_norm(const DeviceTensor& x, const DeviceTensor& weight, const DeviceTensor& bias, float eps);

// ---- softmax and attention (kernels/softmax.cu, kernels/attention.cu) --------------------
void softmax_rows_(DeviceTensor& x);  // in place, over the last dimension

enum class AttentionImpl {
  v1_naive,     // S = QK^T in global memory, row softmax, O = PV (teaching only: O(L^2) memory)
  v2_flash,     // one block per (batch, head, query tile); K/V tiles in shared memory, online softmax
  v3_flash_mma, // production for fp16/bf16: v2 with tensor-core (mma) tiles; fp32 falls back to v2
};
const char* attention_impl_name(AttentionImpl impl);

// q [B, Lq, H*d], k [B, Lk, H*d], v [B, Lk, H*dv] -> [B, Lq, H*dv]; softmax(QK^T/sqrt(d)) V per head.
// causal: query i sees keys 0..i (CLIP's text encoder).
DeviceTensor attention(const DeviceTensor& q, const DeviceTensor& k, const DeviceTensor& v, int64_t heads,
                       bool causal = false, AttentionImpl impl = AttentionImpl::v3_flash_mma);

// ---- elementwise and layout (kernels/elementwise.cu) ----------------------------------------
void silu_(DeviceTensor& x);
void gelu_(DeviceTensor& x);        // exact (erf)
void quick_gelu_(DeviceTensor& x);  // x * sigmoid(1.702 x)
DeviceTensor silu(const DeviceTensor& x);
DeviceTensor geglu(const DeviceTensor& h);  // h [..., 2F] -> a * gelu(g), a = h[..., :F], g = h[..., F:]
void add_(DeviceTensor& a, const DeviceTensor& b);  // same shape
DeviceTensor add(const DeviceTensor& a, const DeviceTensor& b);
void scale_(DeviceTensor& a, float s);
void add_channel_bias_(DeviceTensor& x, const DeviceTensor& v);  // x [B, C, H, W] += v [B, C] (or [C])
DeviceTensor cat_channels(const DeviceTensor& a, const DeviceTensor& b);  // [B, Ca, H, W] ++ [B, Cb, H, W]
DeviceTensor image_to_tokens(const DeviceTensor& x);  // [B, C, H, W] -> [B, H*W, C]
DeviceTensor tokens_to_image(const DeviceTensor& t, int64_t H, int64_t W);  // [B, H*W, C] -> [B, C, H, W]
DeviceTensor upsample_nearest2x(const DeviceTensor& x);  // [B, C, H, W] -> [B, C, 2H, 2W]
// diffusers get_timestep_embedding on the GPU: timesteps [N] (host values) -> [N, dim].
DeviceTensor timestep_embedding(const std::vector<float>& timesteps, int64_t dim, bool flip_sin_to_cos,
                                float downscale_freq_shift, DType dtype = DType::f32);

}  // namespace ldm::cuda
