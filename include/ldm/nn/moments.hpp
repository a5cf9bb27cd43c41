// Mean and variance of a float array, accumulated in double (the references are float64
// truths), at vector speed: Eigen does not vectorise a float -> double cast inside a sum,
// so each short chunk is summed in float lanes and the chunk sums are added in double.
// The float sums are of x - x[0] (shifted data), so an offset much larger than the spread,
// e.g. a nearly constant group, costs no precision. Used by GroupNorm and LayerNorm.
#pragma once
#include <Eigen/Core>
#include <algorithm>
#include <cstdint>

namespace ldm {

struct Moments {
  double mean, var;  // var is the biased (population) variance, as torch's norms use
};

inline Moments moments(const float* x, int64_t n) {
  constexpr int64_t kChunk = 512;  // float error of one chunk sum ~ 512 * 6e-8 at worst, typically far less
  const float x0 = x[0];
  double sum = 0;
  for (int64_t i = 0; i < n; i += kChunk)
    sum += (Eigen::Map<const Eigen::ArrayXf>(x + i, std::min(kChunk, n - i)) - x0).sum();
  const double mean = double(x0) + sum / double(n);
  // Second pass about the float-rounded mean m: E[(x - m)^2] = var + (mean - m)^2.
  const float m = float(mean);
  double sq = 0;
  for (int64_t i = 0; i < n; i += kChunk)
    sq += (Eigen::Map<const Eigen::ArrayXf>(x + i, std::min(kChunk, n - i)) - m).square().sum();
  const double shift = mean - double(m);
  return {mean, std::max(0.0, sq / double(n) - shift * shift)};
}

}  // namespace ldm
