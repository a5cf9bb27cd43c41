// LdmGenerator: the library's own default generator. Simple, fast, and the same numbers on
// every platform and thread count for a given uint64 seed.
//
// Definition (the whole of it, so any language can reproduce it):
//   Normals come in pairs. Pair p of the stream (p = 0, 1, 2, ... counted across calls) is
//     (x0, x1, x2, x3) = Philox4x32-10(counter = {p mod 2^32, p div 2^32, 0, 0},
//                                       key     = {seed mod 2^32, seed div 2^32})
//     u1 = ((((x0 << 32) | x1) >> 11) + 1) * 2^-53          in (0, 1]
//     u2 =  (((x2 << 32) | x3) >> 11)      * 2^-53          in [0, 1)
//     r  = sqrt(-2 ln u1),  theta = 2 pi u2                  (double precision)
//     normals 2p, 2p+1 = float(r cos theta), float(r sin theta)
//   A draw of n values takes ceil(n / 2) pairs; an odd n drops the sine of its last pair, so
//   every draw starts on a fresh pair. Two draws of n1 and n2 equal one of n1 + n2 when n1 is even.
// The only platform dependence is libm's double log/cos/sin, whose last-bit differences
// survive rounding to float with a probability of about 2^-29 per value.
// Not torch-compatible: use TorchCpuGenerator to reproduce a diffusers seed.
#pragma once
#include <cstdint>

#include "ldm/core/random.hpp"

namespace ldm {

class LdmGenerator final : public Generator {
 public:
  explicit LdmGenerator(uint64_t seed) : seed_(seed) {}

  void manual_seed(uint64_t seed) {
    seed_ = seed;
    pair_ = 0;
  }
  uint64_t seed() const { return seed_; }
  uint64_t offset() const { return pair_; }  // pairs consumed so far
  // Continue the stream from pair `pairs`: with seed() and offset() a saved generator is
  // restored exactly (training checkpoints, train/checkpoint.hpp).
  void set_offset(uint64_t pairs) { pair_ = pairs; }

  using Generator::randn;
  void randn(float* out, int64_t n) override;

 private:
  uint64_t seed_;
  uint64_t pair_ = 0;
};

}  // namespace ldm
