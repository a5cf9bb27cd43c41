// Synthetic weights: every value is a function of (tensor name, index) alone, so the
// full-size SD1.5 (1.07 billion numbers) is regenerated in seconds, bit for bit equal to
// ../shared/reference/synth.py, which made the diffusers references we test against.
//
//   seed  = FNV-1a-32(key)
//   x     = fmix32(index * 0x9E3779B1 + seed)       (MurmurHash3 finalizer)
//   v     = ((x >> 8) - 2^23) * 2^-23               in [-1, 1), exact in float32
//   value = center + float(scale) * v               (float32 arithmetic)
// Parameters: "...bias" -> (0, 0.05); 1-D "...weight" -> (1, 0.1); else (0, sqrt(3 / fan_in)).
#pragma once
#include <cmath>
#include <cstdint>
#include <string>

#include "ldm/core/tensor.hpp"

namespace ldm::synth {

inline uint32_t fnv1a32(const std::string& key) {
  uint32_t h = 0x811C9DC5u;
  for (unsigned char b : key) {
    h ^= b;
    h *= 0x01000193u;
  }
  return h;
}

inline float unit_value(uint32_t seed, uint32_t index) {
  uint32_t x = index * 0x9E3779B1u + seed;
  x ^= x >> 16;
  x *= 0x85EBCA6Bu;
  x ^= x >> 13;
  x *= 0xC2B2AE35u;
  x ^= x >> 16;
  return float(int32_t(x >> 8) - 8388608) * (1.0f / 8388608.0f);
}

struct CenterScale {
  float center, scale;
};

inline bool ends_with(const std::string& s, const std::string& suffix) {
  return s.size() >= suffix.size() && s.compare(s.size() - suffix.size(), suffix.size(), suffix) == 0;
}

inline CenterScale param_center_scale(const std::string& key, const Shape& shape) {
  if (ends_with(key, "bias")) return {0.0f, 0.05f};
  if (ends_with(key, "weight") && shape.size() == 1) return {1.0f, 0.1f};
  const int64_t fan_in = numel_of(shape) / shape.at(0);
  return {0.0f, float(std::sqrt(3.0 / double(fan_in)))};
}

// center + scale * unit_values(key), exactly as numpy computes it in float32.
inline Tensor tensor(const std::string& key, const Shape& shape, float center = 0.0f, float scale = 1.0f) {
  Tensor t = Tensor::empty(shape);
  float* o = t.data();
  const int64_t n = t.numel();
  const uint32_t seed = fnv1a32(key);
#pragma omp parallel for schedule(static) if (n > (1 << 16))
  for (int64_t i = 0; i < n; ++i) {
    // The product is rounded to float before the add (no fused multiply-add), as in numpy.
    float prod = float(double(scale) * double(unit_value(seed, uint32_t(i))));
    o[i] = center != 0.0f ? prod + center : prod;
  }
  return t;
}

inline Tensor param(const std::string& key, const Shape& shape) {
  CenterScale cs = param_center_scale(key, shape);
  return tensor(key, shape, cs.center, cs.scale);
}

}  // namespace ldm::synth
