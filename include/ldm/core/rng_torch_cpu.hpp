// torch.Generator("cpu") with torch.randn(..., dtype=float32): the same numbers, bit for bit.
//
// Mirrors at::CPUGeneratorImpl (mt19937 seeded with the low 32 bits of the seed) and ATen's
// CPU normal kernel (aten/src/ATen/native/cpu/DistributionTemplates.h), whose path depends
// on the size of the draw:
//   n >= 16  normal_fill: n uniforms u = (mt() & 0xffffff) * 2^-24 are drawn first, then each
//            chunk of 16 becomes 8 Box-Muller pairs: x[j] = r cos t, x[j+8] = r sin t with
//            r = sqrt(-2 log(1 - u[j])), t = 2 pi u[j+8]. When 16 does not divide n, 16 fresh
//            uniforms are drawn and the last 16 outputs recomputed from them.
//   n <  16  at::normal_distribution<double>: u = (mt64() & (2^53-1)) * 2^-53, one pair gives
//            r cos t and r sin t (r = sqrt(-2 log1p(-u2)), t = 2 pi u1); the sine is cached in
//            the generator and returned by the next small draw (manual_seed clears it).
// The float path is torch's AVX2 kernel (log256_ps / sincos256_ps of avx_mathfun.h, Cephes
// polynomials), which x86-64 builds of torch run on every AVX2 or AVX-512 CPU, computed here
// in scalar code with the fused multiply-adds GCC gives those intrinsics (the rounding the
// reference numbers need). torch builds without AVX2 (e.g. aarch64) use libm's logf/cosf/sinf
// there and differ from these numbers by about one float ulp in a third of the elements.
//
// Order of draws: consecutive randn calls continue the stream, so a diffusers pipeline that
// draws the latents and then per-step noise from one torch.Generator is reproduced by the
// same calls on one TorchCpuGenerator. Two draws of n1 and n2 equal one draw of n1 + n2 when
// 16 divides n1 and n2 >= 16.
#pragma once
#include <cstdint>
#include <random>

#include "ldm/core/random.hpp"

namespace ldm {

class TorchCpuGenerator final : public Generator {
 public:
  explicit TorchCpuGenerator(uint64_t seed) { manual_seed(seed); }

  // torch.Generator.manual_seed: resets the stream and the cached normal sample.
  void manual_seed(uint64_t seed);

  using Generator::randn;
  void randn(float* out, int64_t n) override;  // torch.randn(n) from this generator

  uint32_t random() { return engine_(); }  // CPUGeneratorImpl::random
  uint64_t random64() {                    // CPUGeneratorImpl::random64: first draw is the high word
    const uint64_t hi = engine_();
    return (hi << 32) | engine_();
  }

 private:
  double normal_double();  // at::normal_distribution<double>, with its cached second value

  std::mt19937 engine_;  // identical to at::mt19937 (both are the standard MT19937)
  bool has_next_normal_ = false;
  double next_normal_ = 0;
};

}  // namespace ldm
