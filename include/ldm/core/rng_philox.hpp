// Philox4x32-10, the counter-based generator of Salmon et al., "Parallel random numbers:
// as easy as 1, 2, 3" (SC'11), as in Random123 and cuRAND (curandStatePhilox4_32_10_t).
//
// A pure function of a 128-bit counter and a 64-bit key: block i of a stream is
// philox4x32_10({i...}, key), so any block can be computed independently and in parallel.
// Used by LdmGenerator (rng_ldm.hpp) and TorchCudaGenerator (rng_torch_cuda.hpp).
#pragma once
#include <array>
#include <cstdint>

namespace ldm {

using PhiloxCounter = std::array<uint32_t, 4>;
using PhiloxKey = std::array<uint32_t, 2>;

inline PhiloxCounter philox4x32_10(PhiloxCounter c, PhiloxKey k) {
  constexpr uint32_t M0 = 0xD2511F53u, M1 = 0xCD9E8D57u;  // round multipliers
  constexpr uint32_t W0 = 0x9E3779B9u, W1 = 0xBB67AE85u;  // Weyl key increments (golden ratio, sqrt(3)-1)
  for (int round = 0; round < 10; ++round) {
    const uint64_t p0 = uint64_t(M0) * c[0];
    const uint64_t p1 = uint64_t(M1) * c[2];
    c = {uint32_t(p1 >> 32) ^ c[1] ^ k[0], uint32_t(p1), uint32_t(p0 >> 32) ^ c[3] ^ k[1], uint32_t(p0)};
    k[0] += W0;
    k[1] += W1;
  }
  return c;
}

inline PhiloxKey philox_key(uint64_t seed) { return {uint32_t(seed), uint32_t(seed >> 32)}; }

}  // namespace ldm
