// LdmGenerator (see include/ldm/core/rng_ldm.hpp): Philox4x32-10 + Box-Muller in double.
#include "ldm/core/rng_ldm.hpp"

#include <cmath>

#include "ldm/core/rng_philox.hpp"

namespace ldm {

void LdmGenerator::randn(float* out, int64_t n) {
  LDM_CHECK(n >= 0, "randn: negative element count ", n);
  const PhiloxKey key = philox_key(seed_);
  const int64_t pairs = (n + 1) / 2;
  const uint64_t first = pair_;
  const double two_pi = 2.0 * 3.14159265358979323846;
  const double scale = 1.0 / double(uint64_t(1) << 53);
  // Each pair is a pure function of (seed, index): threads change nothing but the speed.
#pragma omp parallel for schedule(static) if (pairs >= 65536)
  for (int64_t i = 0; i < pairs; ++i) {
    const uint64_t p = first + uint64_t(i);
    const PhiloxCounter x = philox4x32_10({uint32_t(p), uint32_t(p >> 32), 0, 0}, key);
    const uint64_t a = (uint64_t(x[0]) << 32) | x[1];
    const uint64_t b = (uint64_t(x[2]) << 32) | x[3];
    const double u1 = double((a >> 11) + 1) * scale;
    const double u2 = double(b >> 11) * scale;
    const double r = std::sqrt(-2.0 * std::log(u1));
    const double theta = two_pi * u2;
    out[2 * i] = float(r * std::cos(theta));
    if (2 * i + 1 < n) out[2 * i + 1] = float(r * std::sin(theta));
  }
  pair_ += uint64_t(pairs);
}

}  // namespace ldm
