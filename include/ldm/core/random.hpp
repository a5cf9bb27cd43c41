// Random number generators for the initial latents and the noise of stochastic samplers.
// Every draw in the library goes through this interface, so a seed gives the same image
// whichever generator implementation backs it (see rng_*.hpp for the implementations).
#pragma once
#include <cstdint>
#include <memory>
#include <string>

#include "ldm/core/tensor.hpp"

namespace ldm {

class Generator {
 public:
  virtual ~Generator() = default;
  // Fill out[0..n) with standard normal samples, in the order torch.randn fills a contiguous tensor.
  virtual void randn(float* out, int64_t n) = 0;
  Tensor randn(const Shape& shape) {
    Tensor t = Tensor::empty(shape);
    randn(t.data(), t.numel());
    return t;
  }
};

}  // namespace ldm
