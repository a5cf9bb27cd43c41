// The 16-float vector the CPU kernels of src/ are written with (GCC vector extensions: one
// AVX-512 register with -march=native on a CPU that has it, two AVX2 or four SSE registers
// elsewhere), and its unaligned load and store. Internal to src/.
#pragma once
#include <cstdint>
#include <cstring>

#if defined(__AVX512F__)
#include <immintrin.h>
#endif

#include "ldm/core/half.hpp"

// Without AVX-512, GCC warns that passing a v16 by value has a different ABI; the functions
// taking v16 are internal to their files, so no call crosses an ABI boundary.
#pragma GCC diagnostic ignored "-Wpsabi"

namespace ldm::simd {

typedef float v16 __attribute__((vector_size(64)));
typedef int32_t v16i __attribute__((vector_size(64)));  // lane indices for shuffle

inline v16 load(const float* p) {
  v16 v;
  std::memcpy(&v, p, sizeof v);
  return v;
}
inline void store(float* p, v16 v) { std::memcpy(p, &v, sizeof v); }

// 16 IEEE fp16 values (HalfTensor's storage) as floats: exact, as fp16_to_float converts them.
inline v16 load(const uint16_t* p) {
#if defined(__AVX512F__)
  const __m512 f = _mm512_cvtph_ps(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(p)));
  v16 v;
  std::memcpy(&v, &f, sizeof v);
  return v;
#else
  v16 v;
  for (int k = 0; k < 16; ++k) v[k] = fp16_to_float(p[k]);
  return v;
#endif
}

// The first n (<= 16) of p's fp16 values as floats, the lanes past n zero; reads nothing past
// p + n (a masked load), so a row's last values can be taken at the end of a buffer.
inline v16 load_first(const uint16_t* p, int n) {
#if defined(__AVX512F__) && defined(__AVX512BW__) && defined(__AVX512VL__)
  const __m256i h = _mm256_maskz_loadu_epi16(__mmask16((1u << n) - 1), p);
  const __m512 f = _mm512_cvtph_ps(h);
  v16 v;
  std::memcpy(&v, &f, sizeof v);
  return v;
#else
  v16 v{};
  for (int k = 0; k < n; ++k) v[k] = fp16_to_float(p[k]);
  return v;
#endif
}

// The first n (<= 16) of p's floats, the lanes past n zero; reads nothing past p + n.
inline v16 load_first(const float* p, int n) {
#if defined(__AVX512F__)
  const __m512 f = _mm512_maskz_loadu_ps(__mmask16((1u << n) - 1), p);
  v16 v;
  std::memcpy(&v, &f, sizeof v);
  return v;
#else
  v16 v{};
  for (int k = 0; k < n; ++k) v[k] = p[k];
  return v;
#endif
}

// One element as float: itself, or converted from fp16.
inline float to_float(float x) { return x; }
inline float to_float(uint16_t h) { return fp16_to_float(h); }

// Lane k of the result is lane idx[k] of the 32 lanes x then y. GCC's __builtin_shuffle; clang
// (the fuzz build) has no shuffle by an index vector, so it picks lane by lane.
inline v16 shuffle(v16 x, v16 y, v16i idx) {
#ifdef __clang__
  v16 r;
  for (int k = 0; k < 16; ++k) r[k] = idx[k] < 16 ? x[idx[k]] : y[idx[k] - 16];
  return r;
#else
  return __builtin_shuffle(x, y, idx);
#endif
}

}  // namespace ldm::simd
