// Element-wise activations, in place, vectorised through Eigen's array functions.
//   silu(x)       = x * sigmoid(x)                         (torch.nn.SiLU, the U-Net/VAE act_fn)
//   gelu(x)       = x * 0.5 * (1 + erf(x / sqrt 2))        (exact, torch default; GEGLU uses it)
//   gelu_tanh(x)  = 0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3)))
//   quick_gelu(x) = x * sigmoid(1.702 x)                   (CLIP's hidden_act)
#pragma once
#include <unsupported/Eigen/SpecialFunctions>

#include "ldm/core/tensor.hpp"

namespace ldm {

// Applies f to an Eigen array view of x, in chunks spread over the OpenMP threads.
template <typename F>
void apply_chunks(float* x, int64_t n, F f) {
  constexpr int64_t kChunk = 1 << 14;
#pragma omp parallel for schedule(static) if (n > 2 * kChunk)
  for (int64_t c = 0; c < n; c += kChunk) {
    Eigen::Map<Eigen::ArrayXf> a(x + c, std::min(kChunk, n - c));
    f(a);
  }
}

inline void silu_(Tensor& x) {
  apply_chunks(x.data(), x.numel(), [](auto& a) { a = a / (1.0f + (-a).exp()); });
}
inline void gelu_(Tensor& x) {
  apply_chunks(x.data(), x.numel(), [](auto& a) { a = 0.5f * a * (1.0f + (a * float(M_SQRT1_2)).erf()); });
}
inline void gelu_tanh_(Tensor& x) {
  const float k = 0.7978845608028654f;  // sqrt(2 / pi)
  apply_chunks(x.data(), x.numel(), [k](auto& a) { a = 0.5f * a * (1.0f + (k * (a + 0.044715f * a.cube())).tanh()); });
}
inline void quick_gelu_(Tensor& x) {
  apply_chunks(x.data(), x.numel(), [](auto& a) { a = a / (1.0f + (-1.702f * a).exp()); });
}

inline Tensor silu(Tensor x) {
  x = x.clone();
  silu_(x);
  return x;
}

// diffusers GEGLU after its projection: h = [a | gate] on the last dim -> a * gelu(gate).
// [..., 2F] -> [..., F]
inline Tensor geglu(const Tensor& h) {
  const int64_t F = h.dim(-1) / 2, rows = h.numel() / h.dim(-1);
  Shape shape = h.shape();
  shape.back() = F;
  Tensor out = Tensor::empty(shape);
#pragma omp parallel for if (rows * F > (1 << 15))
  for (int64_t r = 0; r < rows; ++r) {
    Eigen::Map<const Eigen::ArrayXf> a(h.data() + r * 2 * F, F), g(h.data() + r * 2 * F + F, F);
    Eigen::Map<Eigen::ArrayXf> o(out.data() + r * F, F);
    o = a * (0.5f * g * (1.0f + (g * float(M_SQRT1_2)).erf()));
  }
  return out;
}

// Softmax over the last dimension, in place (max-subtracted, as torch).
inline void softmax_rows(float* x, int64_t rows, int64_t cols) {
  for (int64_t r = 0; r < rows; ++r) {
    Eigen::Map<Eigen::ArrayXf> a(x + r * cols, cols);
    a = (a - a.maxCoeff()).exp();
    a /= a.sum();
  }
}
inline void softmax_(Tensor& x) {
  const int64_t cols = x.dim(-1), rows = x.numel() / cols;
#pragma omp parallel for if (rows * cols > (1 << 15))
  for (int64_t r = 0; r < rows; ++r) softmax_rows(x.data() + r * cols, 1, cols);
}

}  // namespace ldm
