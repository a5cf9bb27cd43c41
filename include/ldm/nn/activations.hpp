// Element-wise activations, in place, vectorised through Eigen's array functions.
//   silu(x)       = x * sigmoid(x)                         (torch.nn.SiLU, the U-Net/VAE act_fn)
//   gelu(x)       = x * 0.5 * (1 + erf(x / sqrt 2))        (exact, torch default; GEGLU uses it)
//   gelu_tanh(x)  = 0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3)))
//   quick_gelu(x) = x * sigmoid(1.702 x)                   (CLIP's hidden_act)
#pragma once
#include <unsupported/Eigen/SpecialFunctions>

#include "ldm/core/op_profile.hpp"
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

// Backward of the activations above. Each saves its input x from the forward (the derivative
// is a function of x); dy and x have the same shape, dx = dy * f'(x).
//   silu'(x)       = s (1 + x (1 - s)),  s = sigmoid(x)
//   gelu'(x)       = Phi(x) + x phi(x)   (Phi, phi: the standard normal cdf and density)
//   gelu_tanh'(x)  = 0.5 (1 + t) + 0.5 x (1 - t^2) k (1 + 3 * 0.044715 x^2),  t = tanh(k (x + 0.044715 x^3))
//   quick_gelu'(x) = s + 1.702 x s (1 - s),  s = sigmoid(1.702 x)
namespace detail {
// dx = dy * f'(x), f' an Eigen array expression of x, over chunks on the OpenMP threads.
template <typename F>
Tensor activation_backward(const Tensor& x, const Tensor& dy, const char* what, F fprime) {
  LDM_CHECK(x.shape() == dy.shape(), what, "_backward: gradient ", dy.shape_str(), " does not match the input ",
            x.shape_str());
  Tensor dx = dy.clone();
  const float* xp = x.data();
  float* d = dx.data();
  constexpr int64_t kChunk = 1 << 14;
  const int64_t n = x.numel();
#pragma omp parallel for schedule(static) if (n > 2 * kChunk)
  for (int64_t c = 0; c < n; c += kChunk) {
    const int64_t m = std::min(kChunk, n - c);
    Eigen::Map<const Eigen::ArrayXf> a(xp + c, m);
    Eigen::Map<Eigen::ArrayXf>(d + c, m) *= fprime(a);
  }
  return dx;
}
template <typename A>
auto gelu_grad(const A& a) {
  const float inv_sqrt_2pi = 0.3989422804014327f;
  return 0.5f * (1.0f + (a * float(M_SQRT1_2)).erf()) + a * inv_sqrt_2pi * (-0.5f * a.square()).exp();
}
}  // namespace detail

inline Tensor silu_backward(const Tensor& x, const Tensor& dy) {
  return detail::activation_backward(x, dy, "silu", [](const auto& a) {
    const Eigen::ArrayXf s = 1.0f / (1.0f + (-a).exp());
    return Eigen::ArrayXf(s * (1.0f + a * (1.0f - s)));
  });
}
inline Tensor gelu_backward(const Tensor& x, const Tensor& dy) {
  return detail::activation_backward(x, dy, "gelu", [](const auto& a) { return Eigen::ArrayXf(detail::gelu_grad(a)); });
}
inline Tensor gelu_tanh_backward(const Tensor& x, const Tensor& dy) {
  const float k = 0.7978845608028654f;  // sqrt(2 / pi)
  return detail::activation_backward(x, dy, "gelu_tanh", [k](const auto& a) {
    const Eigen::ArrayXf t = (k * (a + 0.044715f * a.cube())).tanh();
    return Eigen::ArrayXf(0.5f * (1.0f + t) + 0.5f * a * (1.0f - t.square()) * k * (1.0f + 3 * 0.044715f * a.square()));
  });
}
inline Tensor quick_gelu_backward(const Tensor& x, const Tensor& dy) {
  return detail::activation_backward(x, dy, "quick_gelu", [](const auto& a) {
    const Eigen::ArrayXf s = 1.0f / (1.0f + (-1.702f * a).exp());
    return Eigen::ArrayXf(s + 1.702f * a * s * (1.0f - s));
  });
}

// diffusers GEGLU after its projection: h = [a | gate] on the last dim -> a * gelu(gate).
// [..., 2F] -> [..., F]
inline void geglu_rows(const float* h, int64_t rows, int64_t F, float* out) {
  const OpTimer timer("geglu", [&] { return "[" + std::to_string(rows) + ", " + std::to_string(2 * F) + "]"; }, 0);
#pragma omp parallel for if (rows * F > (1 << 15))
  for (int64_t r = 0; r < rows; ++r) {
    Eigen::Map<const Eigen::ArrayXf> a(h + r * 2 * F, F), g(h + r * 2 * F + F, F);
    Eigen::Map<Eigen::ArrayXf> o(out + r * F, F);
    o = a * (0.5f * g * (1.0f + (g * float(M_SQRT1_2)).erf()));
  }
}
inline Tensor geglu(const Tensor& h) {
  const int64_t F = h.dim(-1) / 2, rows = h.numel() / h.dim(-1);
  Shape shape = h.shape();
  shape.back() = F;
  Tensor out = Tensor::empty(shape);
  geglu_rows(h.data(), rows, F, out.data());
  return out;
}

// Saves the input h [..., 2F]; dy [..., F] -> dh [..., 2F] = [dy * gelu(gate) | dy * a * gelu'(gate)].
inline Tensor geglu_backward(const Tensor& h, const Tensor& dy) {
  const int64_t F = h.dim(-1) / 2, rows = h.numel() / h.dim(-1);
  LDM_CHECK(dy.numel() == rows * F && dy.dim(-1) == F, "geglu_backward: gradient ", dy.shape_str(),
            " does not match the output of input ", h.shape_str());
  Tensor dh = Tensor::empty(h.shape());
#pragma omp parallel for if (rows * F > (1 << 15))
  for (int64_t r = 0; r < rows; ++r) {
    Eigen::Map<const Eigen::ArrayXf> a(h.data() + r * 2 * F, F), g(h.data() + r * 2 * F + F, F), d(dy.data() + r * F, F);
    Eigen::Map<Eigen::ArrayXf> da(dh.data() + r * 2 * F, F), dg(dh.data() + r * 2 * F + F, F);
    da = d * (0.5f * g * (1.0f + (g * float(M_SQRT1_2)).erf()));
    dg = d * a * detail::gelu_grad(g);
  }
  return dh;
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

// Saves the output y (not the input): dy [..., n] -> dx = y * (dy - sum(y * dy)) per row.
inline Tensor softmax_backward(const Tensor& y, const Tensor& dy) {
  LDM_CHECK(y.shape() == dy.shape(), "softmax_backward: gradient ", dy.shape_str(), " does not match the output ",
            y.shape_str());
  const int64_t cols = y.dim(-1), rows = y.numel() / cols;
  Tensor dx = Tensor::empty(y.shape());
#pragma omp parallel for if (rows * cols > (1 << 15))
  for (int64_t r = 0; r < rows; ++r) {
    Eigen::Map<const Eigen::ArrayXf> p(y.data() + r * cols, cols), d(dy.data() + r * cols, cols);
    Eigen::Map<Eigen::ArrayXf>(dx.data() + r * cols, cols) = p * (d - (p * d).sum());
  }
  return dx;
}

}  // namespace ldm
