// torch's CPU randn (see include/ldm/core/rng_torch_cpu.hpp): mt19937 + ATen normal kernels.
//
// The float math reproduces avx_mathfun.h lane by lane. Every product that feeds a sum is an
// explicit std::fma where torch's compiled kernel fuses it and a separate rounding elsewhere;
// no other product here feeds a sum, so the compiler's own contraction cannot change a bit.
#include "ldm/core/rng_torch_cpu.hpp"

#ifdef __FAST_MATH__
#warning "rng_torch_cpu.cpp needs IEEE float arithmetic: built with -ffast-math it no longer matches torch bit for bit"
#endif

#include <cmath>
#include <cstring>

namespace ldm {
namespace {

uint32_t bits_of(float f) {
  uint32_t u;
  std::memcpy(&u, &f, 4);
  return u;
}

float float_of(uint32_t u) {
  float f;
  std::memcpy(&f, &u, 4);
  return f;
}

// at::uniform_real_distribution<float>(0, 1): the low 24 bits of one 32-bit draw.
float uniform_float(uint32_t r) { return float(r & 0xFFFFFFu) * (1.0f / 16777216.0f); }

// log256_ps: Cephes logf for x in (0, 1] (torch only takes the log of 1 - u).
float cephes_log(float x) {
  x = std::max(x, float_of(0x00800000u));  // smallest normal float
  int32_t exponent = int32_t(bits_of(x) >> 23) - 0x7f;
  x = float_of((bits_of(x) & ~0x7f800000u) | bits_of(0.5f));  // mantissa in [0.5, 1)
  float e = float(exponent) + 1.0f;
  if (x < float(0.707106781186547524)) {  // x + x - 1 and e - 1, as the masked lanes compute it
    e = e - 1.0f;
    x = (x - 1.0f) + x;
  } else {
    x = x - 1.0f;
  }
  const float z = x * x;
  float y = float(7.0376836292E-2);
  y = std::fma(y, x, float(-1.1514610310E-1));
  y = std::fma(y, x, float(1.1676998740E-1));
  y = std::fma(y, x, float(-1.2420140846E-1));
  y = std::fma(y, x, float(1.4249322787E-1));
  y = std::fma(y, x, float(-1.6668057665E-1));
  y = std::fma(y, x, float(2.0000714765E-1));
  y = std::fma(y, x, float(-2.4999993993E-1));
  y = std::fma(y, x, float(3.3333331174E-1));
  y = y * x;
  const float e_q1 = e * float(-2.12194440e-4);
  y = std::fma(y, z, e_q1);
  y = std::fma(-z, 0.5f, y);
  x = x + y;
  return std::fma(e, 0.693359375f, x);
}

// sincos256_ps: Cephes sinf and cosf for one angle (torch's angles lie in [0, 2 pi)).
void cephes_sincos(float angle, float* s, float* c) {
  uint32_t sign_sin = bits_of(angle) & 0x80000000u;
  float x = std::fabs(angle);
  int32_t j = int32_t(x * float(1.27323954473516));  // octant, x * 4 / pi truncated
  j = (j + 1) & ~1;
  const float y = float(j);
  sign_sin ^= uint32_t(j & 4) << 29;
  const uint32_t sign_cos = uint32_t(~(j - 2) & 4) << 29;
  const bool sine_poly_first = (j & 2) == 0;
  x = std::fma(y, -0.78515625f, x);  // extended-precision x - y * pi / 4
  x = std::fma(y, float(-2.4187564849853515625e-4), x);
  x = std::fma(y, float(-3.77489497744594108e-8), x);
  const float z = x * x;
  float cos_poly = float(2.443315711809948E-005);
  cos_poly = std::fma(cos_poly, z, float(-1.388731625493765E-003));
  cos_poly = std::fma(cos_poly, z, float(4.166664568298827E-002));
  cos_poly = cos_poly * z;
  const float half_z = z * 0.5f;
  cos_poly = std::fma(cos_poly, z, -half_z);
  cos_poly = cos_poly + 1.0f;
  float sin_poly = float(-1.9515295891E-4);
  sin_poly = std::fma(sin_poly, z, float(8.3321608736E-3));
  sin_poly = std::fma(sin_poly, z, float(-1.6666654611E-1));
  sin_poly = sin_poly * z;
  sin_poly = std::fma(sin_poly, x, x);
  const float sv = sine_poly_first ? sin_poly : cos_poly;
  const float cv = sine_poly_first ? cos_poly : sin_poly;
  *s = float_of(bits_of(sv) ^ sign_sin);
  *c = float_of(bits_of(cv) ^ sign_cos);
}

// normal_fill_16: 16 uniforms in place -> 16 standard normals (mean 0, std 1).
void normal_fill_16(float* data) {
  const float two_pi = float(2.0 * 3.14159265358979323846);
  for (int j = 0; j < 8; ++j) {
    const float u1 = 1.0f - data[j];  // [0, 1) -> (0, 1] for the log
    const float u2 = data[j + 8];
    const float radius = std::sqrt(-2.0f * cephes_log(u1));
    float s, c;
    cephes_sincos(two_pi * u2, &s, &c);
    data[j] = radius * c + 0.0f;  // + 0: torch's fma(x, std = 1, mean = 0) turns -0 into +0
    data[j + 8] = radius * s + 0.0f;
  }
}

}  // namespace

void TorchCpuGenerator::manual_seed(uint64_t seed) {
  engine_.seed(uint32_t(seed));  // at::mt19937 keeps seed & 0xffffffff
  has_next_normal_ = false;
  next_normal_ = 0;
}

double TorchCpuGenerator::normal_double() {
  if (has_next_normal_) {
    has_next_normal_ = false;
    return next_normal_;
  }
  const double scale = 1.0 / double(uint64_t(1) << 53);
  const double u1 = double(random64() & ((uint64_t(1) << 53) - 1)) * scale;
  const double u2 = double(random64() & ((uint64_t(1) << 53) - 1)) * scale;
  const double r = std::sqrt(-2.0 * std::log1p(-u2));
  const double theta = 2.0 * 3.14159265358979323846 * u1;
  next_normal_ = r * std::sin(theta);
  has_next_normal_ = true;
  return r * std::cos(theta);
}

void TorchCpuGenerator::randn(float* out, int64_t n) {
  LDM_CHECK(n >= 0, "randn: negative element count ", n);
  if (n < 16) {
    for (int64_t i = 0; i < n; ++i) out[i] = float(normal_double());
    return;
  }
  for (int64_t i = 0; i < n; ++i) out[i] = uniform_float(engine_());
  for (int64_t i = 0; i + 16 <= n; i += 16) normal_fill_16(out + i);
  if (n % 16 != 0) {
    float* tail = out + n - 16;
    for (int i = 0; i < 16; ++i) tail[i] = uniform_float(engine_());
    normal_fill_16(tail);
  }
}

}  // namespace ldm
