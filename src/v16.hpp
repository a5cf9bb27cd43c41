// The 16-float vector the CPU kernels of src/ are written with (GCC vector extensions: one
// AVX-512 register with -march=native on a CPU that has it, two AVX2 or four SSE registers
// elsewhere), and its unaligned load and store. Internal to src/.
#pragma once
#include <cstdint>
#include <cstring>

// Without AVX-512, GCC warns that passing a v16 by value has a different ABI; the functions
// taking v16 are internal to their files, so no call crosses an ABI boundary.
#pragma GCC diagnostic ignored "-Wpsabi"

namespace ldm::simd {

typedef float v16 __attribute__((vector_size(64)));
typedef int32_t v16i __attribute__((vector_size(64)));  // lane indices for __builtin_shuffle

inline v16 load(const float* p) {
  v16 v;
  std::memcpy(&v, p, sizeof v);
  return v;
}
inline void store(float* p, v16 v) { std::memcpy(p, &v, sizeof v); }

}  // namespace ldm::simd
