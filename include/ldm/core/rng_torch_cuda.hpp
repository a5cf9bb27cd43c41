// torch.Generator("cuda") with torch.randn(..., device="cuda", dtype=float32), computed on the
// CPU: the same Philox streams and element order, the same numbers up to ~1e-6.
//
// Mirrors ATen's CUDA normal kernel (aten/src/ATen/native/cuda/DistributionTemplates.h,
// distribution_nullary_kernel + curand_normal4): a grid of T = 256 * blocks threads, with
//   blocks = min(multiprocessors * max_threads_per_multiprocessor / 256, ceil(n / 256));
// thread t runs curand_init(seed, subsequence t, offset), i.e. Philox4x32-10 with key = seed
// and counter = {offset / 4, 0, t, 0} (+1 per call), and writes curand_normal4's four values to
// elements t + T*i (i = 0..3), then t + 4T + T*i, ... Each call advances the generator's offset
// by 4 * ceil(n / 4T). curand's Box-Muller: u = x 2^-32 + 2^-33, v = y 2pi 2^-32 + pi 2^-32,
// s = sqrt(-2 logf(u)), values (s sin v, s cos v).
// Not bit-exact: the GPU takes sin and cos from __sincosf (hardware approximations, absolute
// error ~2^-21); here they are libm's sinf/cosf, so values differ by ~1e-6 (within the
// library's fp32 tolerances). The grid, hence the numbers of draws over
// multiprocessors * max_threads_per_multiprocessor elements (270336 on an H100 or H200),
// depends on the GPU; give its figures for such draws.
#pragma once
#include <cstdint>

#include "ldm/core/random.hpp"

namespace ldm {

class TorchCudaGenerator final : public Generator {
 public:
  // Defaults: H100 / H200 (132 multiprocessors of 2048 threads).
  explicit TorchCudaGenerator(uint64_t seed, int multiprocessors = 132, int max_threads_per_multiprocessor = 2048);

  void manual_seed(uint64_t seed) {  // torch.cuda manual_seed: new key, offset back to 0
    seed_ = seed;
    offset_ = 0;
  }
  uint64_t offset() const { return offset_; }  // the Philox offset torch's generator would report

  using Generator::randn;
  void randn(float* out, int64_t n) override;

 private:
  uint64_t seed_;
  uint64_t offset_ = 0;
  int64_t max_blocks_;
};

}  // namespace ldm
