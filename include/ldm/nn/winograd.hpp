// 3x3 convolution by Winograd's minimal filtering F(2x2, 3x3) (Lavin & Gray 2015).
//
// A 2x2 block of outputs of a 3x3 kernel needs 36 multiplications done directly; Winograd's
// algorithm gets them from 16, by moving to a transformed space where the convolution of a 4x4
// input tile d with the kernel g is an element-wise product:
//
//   Y = A^T [ (G g G^T) (.) (B^T d B) ] A          (.) element-wise, 4x4
//
//   B^T = | 1  0 -1  0 |    G = |  1    0    0  |    A^T = | 1  1  1  0 |
//         | 0  1  1  0 |        | 1/2  1/2  1/2 |          | 0  1 -1 -1 |
//         | 0 -1  1  0 |        | 1/2 -1/2  1/2 |
//         | 0  1  0 -1 |        |  0    0    1  |
//
// Summed over input channels, the element-wise product at each of the 16 positions k of the
// tile becomes a matrix product, so a convolution turns into 16 GEMMs:
//
//   M_k[O, T] = U_k[O, C] . V_k[C, T]      U = G g G^T per (o, c), V = B^T d B per (c, tile)
//
// over T tiles, then each output tile is A^T M A. That is 2.25x fewer multiply-adds than the
// direct convolution (16 instead of 36 per 2x2 outputs), at the cost of the transforms, which
// are additions only (G's halves are exact in binary), so the rounding error stays that of a
// direct fp32 convolution (tests/test_nn.cpp compares both with a naive loop).
//
// Here V_k is never stored: the GEMM asks for it panel by panel (gemm_packed_b) and each panel
// value is two rows of two input pixels added or subtracted, computed from a zero-padded copy
// of the input rows in use. An image is done in bands of tile rows, M (about 16 MiB) and the
// padded rows held for one band at a time, so memory stays bounded on a 512x512 image.
//
// Used by conv2d for 3x3, stride 1, padding 1 convolutions whose output width is a multiple of
// 32 and height even (every 3x3 convolution of the SD1.5 VAE, and the U-Net's at 64x64 and
// 32x32 latents), unless the layer's ConvAlgo (nn/conv_algo.hpp) says otherwise.
#pragma once
#include <cstdint>
#include <vector>

namespace ldm {

// Can winograd_conv3x3 compute a 3x3 stride-1 pad-1 convolution of H x W images?
inline bool winograd_fits(int64_t H, int64_t W) { return H % 2 == 0 && W % 32 == 0 && H > 0; }

// F(4x4, 3x3) (src/winograd_f43.cpp): 36 multiplications for 16 outputs, 4x fewer than direct,
// with 6x6 transforms; its U is 36/9 = 4x the weight's size, so by default (ConvAlgo::automatic)
// only the Conv2d layers whose owner allows it use it, keeping U from 64x64 up (the U-Net's
// 64x64 level: +0.27 GB; the VAE decoder's layers of >= 128 channels: +0.57 GB; half in fp16).
inline bool winograd_f43_fits(int64_t H, int64_t W) { return H % 4 == 0 && W % 4 == 0 && W >= 16 && H > 0; }
std::vector<float> winograd_f43_weights(const float* w, int64_t O, int64_t C);  // U[36][C][O]
// Working memory besides U; u_in_call: U made in the call (winograd_f43_conv3x3_from_weights).
int64_t winograd_f43_scratch_bytes(int64_t B, int64_t C, int64_t H, int64_t W, int64_t O, bool u_in_call = false);
void winograd_f43_conv3x3(const float* x, int64_t B, int64_t C, int64_t H, int64_t W, const float* U, int64_t O,
                          const float* bias, float* y);
// The same with U kept in fp16 (Conv2d with fp16 weights): converted as the GEMMs pack it.
void winograd_f43_conv3x3(const float* x, int64_t B, int64_t C, int64_t H, int64_t W, const uint16_t* U, int64_t O,
                          const float* bias, float* y);
// The same from the weight w [O, C, 3, 3] (float, or fp16 bits), U made in the call for 64
// output channels at a time and used while in cache: nothing kept, no U in memory; the same
// bits as with a kept U. For small images (the U-Net's 16x16 level: 32 tiles for batch 2),
// where a kept U would cost 4x the weight's memory (2.8 GB for SD1.5's 16x16 level): 1280 ->
// 1280 channels at 16x16, batch 2, on the 2-core EPYC: direct 87 ms, U kept 34 ms, here 44 ms.
void winograd_f43_conv3x3_from_weights(const float* x, int64_t B, int64_t C, int64_t H, int64_t W, const float* w,
                                       int64_t O, const float* bias, float* y);
void winograd_f43_conv3x3_from_weights(const float* x, int64_t B, int64_t C, int64_t H, int64_t W, const uint16_t* w,
                                       int64_t O, const float* bias, float* y);

// The transformed weights U[16][O][C] = G g G^T of w[O, C, 3, 3]. Conv2d keeps them once made:
// on this machine's memory bandwidth, transforming a 1280 x 1280 layer costs a sixth of the
// convolution itself.
std::vector<float> winograd_weights(const float* w, int64_t O, int64_t C);

// Working memory of one call besides U (kept by the calling thread for its next call): M for
// one band of tiles, the band's padded input rows, the GEMM's panels.
int64_t winograd_scratch_bytes(int64_t B, int64_t C, int64_t H, int64_t W, int64_t O);

// y[B, O, H, W] = conv3x3(x[B, C, H, W], w, stride 1, padding 1) + bias[O] (may be null), given
// U = winograd_weights(w).
void winograd_conv3x3(const float* x, int64_t B, int64_t C, int64_t H, int64_t W, const float* U, int64_t O,
                      const float* bias, float* y);
void winograd_conv3x3(const float* x, int64_t B, int64_t C, int64_t H, int64_t W, const uint16_t* U, int64_t O,
                      const float* bias, float* y);

// Its backward for the weight, by the adjoint of the same transforms (no im2col, 2.25x fewer
// multiply-adds than the direct convolution's dW = dy . col^T):
//
//   dM = A dY A^T        per (o, tile): the 2x2 output gradient -> 4x4      (dY = A^T M A's adjoint)
//   V  = B^T d B         per (c, tile): the 4x4 input tile, as the forward
//   dU_k[O, C] = sum over tiles of dM_k[O, T] . V_k[C, T]^T                  16 GEMMs reducing over T
//   grad_w[o, c] += G^T dU[o, c] G                                           (U = G g G^T's adjoint)
//
// Transforms run channels-last, 16 channels to a vector, on an NHWC copy of x (zero-padded) and
// of dy, so any even H and W works; tiles are taken across the batch, a chunk at a time (at
// most ~32 MiB of V and dM, or 256 tiles). The calling thread keeps these buffers for its next
// call, so memory the size of the largest call's x and dy (plus V, dM and dU) stays held.
// Needs H, W even and C, O multiples of 16 (winograd_grad_weight_fits).
inline bool winograd_grad_weight_fits(int64_t H, int64_t W, int64_t C, int64_t O) {
  return H % 2 == 0 && W % 2 == 0 && H > 0 && W > 0 && C % 16 == 0 && O % 16 == 0;
}
// Does it pay? It saves multiply-adds in proportion to the tiles (B H W / 4), but every call
// writes and reads dU (64 O C bytes) besides: with few tiles and many channels the direct dW
// wins. Measured (bench_ops BM_Conv2dBackward, batch 2, AMD EPYC Zen 4): faster at 320 and 640
// channels from 128 tiles and at 128 channels from 32; slower at 1280 channels below 256 tiles
// (16x16: 286 against 216 ms; 8x8: 182 against 93 ms).
inline bool winograd_grad_weight_pays(int64_t B, int64_t C, int64_t H, int64_t W, int64_t O) {
  const int64_t tiles = B * (H / 2) * (W / 2), du_bytes = 64 * O * C;
  return tiles >= 256 || (tiles >= 64 && du_bytes <= (int64_t(32) << 20)) ||
         (tiles >= 16 && du_bytes <= (int64_t(4) << 20));
}
// x [B, C, H, W], dy [B, O, H, W] -> grad_w [O, C, 3, 3] += dW of conv3x3(x, w, stride 1, padding 1).
void winograd_conv3x3_grad_weight(const float* x, const float* dy, int64_t B, int64_t C, int64_t H, int64_t W,
                                  int64_t O, float* grad_w);

}  // namespace ldm
