// Training losses with mean reduction, as torch.nn.functional's defaults, and their backwards:
//   mse_loss(x, target) = mean((x - target)^2)    d/dx = 2 (x - target) / n
//   l1_loss(x, target)  = mean(|x - target|)      d/dx = sign(x - target) / n  (0 where equal, as torch)
// The backwards save x and target and take dloss, the gradient of the loss (1 for the loss
// itself); the gradient of target is minus that of x. Sums in double.
#pragma once
#include <cmath>

#include "ldm/core/tensor.hpp"

namespace ldm {

namespace detail {
inline void check_loss_shapes(const Tensor& x, const Tensor& target, const char* what) {
  LDM_CHECK(x.shape() == target.shape() && x.numel() > 0, what, ": prediction ", x.shape_str(), " and target ",
            target.shape_str(), " must have the same, non-empty shape");
}
}  // namespace detail

inline float mse_loss(const Tensor& x, const Tensor& target) {
  detail::check_loss_shapes(x, target, "mse_loss");
  return float((x.vec() - target.vec()).cast<double>().squaredNorm() / double(x.numel()));
}
inline Tensor mse_loss_backward(const Tensor& x, const Tensor& target, float dloss = 1.0f) {
  detail::check_loss_shapes(x, target, "mse_loss_backward");
  Tensor dx = Tensor::empty(x.shape());
  dx.vec() = (2.0f * dloss / float(x.numel())) * (x.vec() - target.vec());
  return dx;
}

inline float l1_loss(const Tensor& x, const Tensor& target) {
  detail::check_loss_shapes(x, target, "l1_loss");
  return float((x.vec() - target.vec()).cast<double>().lpNorm<1>() / double(x.numel()));
}
inline Tensor l1_loss_backward(const Tensor& x, const Tensor& target, float dloss = 1.0f) {
  detail::check_loss_shapes(x, target, "l1_loss_backward");
  Tensor dx = Tensor::empty(x.shape());
  dx.vec() = (dloss / float(x.numel())) * (x.vec() - target.vec()).array().sign().matrix();
  return dx;
}

}  // namespace ldm
