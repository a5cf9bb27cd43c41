// torch's CUDA randn on the CPU (see include/ldm/core/rng_torch_cuda.hpp).
#include "ldm/core/rng_torch_cuda.hpp"

#include <algorithm>
#include <cmath>

#include "ldm/core/rng_philox.hpp"

namespace ldm {
namespace {

// curand's _curand_box_muller: two uint32 -> (s sin v, s cos v). nvcc fuses the uniforms'
// multiply-add, hence the fma.
void curand_box_muller(uint32_t x, uint32_t y, float* first, float* second) {
  const float two_pow32_inv = 2.3283064e-10f;
  const float two_pow32_inv_2pi = 2.3283064e-10f * 6.2831855f;
  const float u = std::fma(float(x), two_pow32_inv, two_pow32_inv / 2);
  const float v = std::fma(float(y), two_pow32_inv_2pi, two_pow32_inv_2pi / 2);
  const float s = std::sqrt(-2.0f * std::log(u));
  *first = std::sin(v) * s;
  *second = std::cos(v) * s;
}

}  // namespace

TorchCudaGenerator::TorchCudaGenerator(uint64_t seed, int multiprocessors, int max_threads_per_multiprocessor)
    : seed_(seed) {
  LDM_CHECK(multiprocessors > 0 && max_threads_per_multiprocessor >= 256,
            "TorchCudaGenerator: need a GPU with at least one multiprocessor of 256 threads, got ",
            multiprocessors, " x ", max_threads_per_multiprocessor);
  max_blocks_ = int64_t(multiprocessors) * (max_threads_per_multiprocessor / 256);
}

void TorchCudaGenerator::randn(float* out, int64_t n) {
  LDM_CHECK(n >= 0, "randn: negative element count ", n);
  if (n == 0) return;  // torch launches nothing and keeps its offset
  const int64_t block = 256, unroll = 4;
  const int64_t threads = block * std::min(max_blocks_, (n + block - 1) / block);
  const int64_t rounds = (n - 1) / (threads * unroll) + 1;  // curand_normal4 calls per thread
  const PhiloxKey key = philox_key(seed_);
  const uint64_t start = offset_ / 4;  // offsets are multiples of 4: whole Philox blocks
#pragma omp parallel for schedule(static) if (threads >= 65536)
  for (int64_t t = 0; t < threads; ++t) {
    for (int64_t r = 0; r < rounds; ++r) {
      const uint64_t c = start + uint64_t(r);
      const PhiloxCounter ctr = {uint32_t(c), uint32_t(c >> 32), uint32_t(t), uint32_t(uint64_t(t) >> 32)};
      const PhiloxCounter x = philox4x32_10(ctr, key);
      const int64_t e0 = r * threads * unroll + t;  // elements e0 + threads * i, i = 0..3
      float v[4];
      for (int half = 0; half < 2; ++half) {
        if (e0 + threads * 2 * half >= n) break;  // a pair nobody reads (small draws use only v[0])
        curand_box_muller(x[2 * half], x[2 * half + 1], &v[2 * half], &v[2 * half + 1]);
        for (int i = 2 * half; i < 2 * half + 2; ++i)
          if (e0 + threads * i < n) out[e0 + threads * i] = v[i];
      }
    }
  }
  offset_ += uint64_t(rounds) * 4;
}

}  // namespace ldm
