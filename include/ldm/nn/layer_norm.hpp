// torch.nn.LayerNorm over the last dimension, with affine weight and bias.
#pragma once
#include <cmath>
#include <string>

#include "ldm/core/op_profile.hpp"
#include "ldm/core/weights.hpp"
#include "ldm/nn/grad.hpp"
#include "ldm/train/parameter.hpp"
#include "ldm/nn/moments.hpp"

namespace ldm {

struct LayerNorm {
  Tensor weight, bias;  // [D]
  float eps = 1e-5f;

  void load(WeightStore& w, const std::string& prefix, int64_t dim, float eps_ = 1e-5f) {
    weight = w.get(join(prefix, "weight"), {dim});
    bias = w.get(join(prefix, "bias"), {dim});
    eps = eps_;
  }

  // [..., D] -> same
  Tensor forward(const Tensor& x) const {
    const int64_t D = weight.dim(0), rows = x.numel() / D;
    LDM_CHECK(x.dim(-1) == D, "LayerNorm: expected last dimension ", D, ", got ", x.shape_str());
    const OpTimer timer("layer_norm", [&] { return x.shape_str(); }, 0);
    Tensor y = Tensor::empty(x.shape());
    Eigen::Map<const Eigen::ArrayXf> g(weight.data(), D), b(bias.data(), D);
#pragma omp parallel for if (rows * D > (1 << 15))
    for (int64_t r = 0; r < rows; ++r) {
      Eigen::Map<const Eigen::ArrayXf> xi(x.data() + r * D, D);
      const Moments st = moments(xi.data(), D);
      const double rstd = 1.0 / std::sqrt(st.var + double(eps));
      // (x - mean) rstd as (x - x0) rstd + (x0 - mean) rstd: exact subtraction near x0 (see GroupNorm)
      const float r0 = float(rstd), offset = float((double(xi[0]) - st.mean) * rstd);
      Eigen::Map<Eigen::ArrayXf>(y.data() + r * D, D) = ((xi - xi[0]) * r0 + offset) * g + b;
    }
    return y;
  }

  Tensor grad_weight, grad_bias;  // [D]: accumulated by backward (nn/grad.hpp)

  // Saves the input x; each row's statistics are recomputed from it. With xhat = (x - mean) rstd:
  //   grad_weight += sum over rows of dy xhat      grad_bias += sum over rows of dy
  //   dx = rstd (dxhat - mean(dxhat) - xhat mean(dxhat xhat)),  dxhat = dy weight, means over the row
  // dy [..., D] -> dx [..., D]. Parameter sums per thread in double, added up at the end.
  Tensor backward(const Tensor& x, const Tensor& dy) {
    const int64_t D = weight.dim(0), rows = x.numel() / D;
    LDM_CHECK(x.dim(-1) == D, "LayerNorm::backward: expected last dimension ", D, ", got ", x.shape_str());
    LDM_CHECK(dy.shape() == x.shape(), "LayerNorm::backward: gradient ", dy.shape_str(), " does not match the input ",
              x.shape_str());
    Tensor dx = Tensor::empty(x.shape());
    Eigen::ArrayXd dw = Eigen::ArrayXd::Zero(D), db = Eigen::ArrayXd::Zero(D);
    Eigen::Map<const Eigen::ArrayXf> g(weight.data(), D);
#pragma omp parallel if (rows * D > (1 << 15))
    {
      Eigen::ArrayXd dw_t = Eigen::ArrayXd::Zero(D), db_t = Eigen::ArrayXd::Zero(D);
#pragma omp for
      for (int64_t r = 0; r < rows; ++r) {
        Eigen::Map<const Eigen::ArrayXf> xi(x.data() + r * D, D), d(dy.data() + r * D, D);
        const Moments st = moments(xi.data(), D);
        const double rstd = 1.0 / std::sqrt(st.var + double(eps));
        const float r0 = float(rstd), offset = float((double(xi[0]) - st.mean) * rstd);
        const Eigen::ArrayXf xhat = (xi - xi[0]) * r0 + offset, dxhat = d * g;
        dw_t += (d * xhat).cast<double>();
        db_t += d.cast<double>();
        const float m1 = float(dxhat.cast<double>().sum() / double(D));
        const float m2 = float((dxhat * xhat).cast<double>().sum() / double(D));
        Eigen::Map<Eigen::ArrayXf>(dx.data() + r * D, D) = r0 * (dxhat - m1 - xhat * m2);
      }
#pragma omp critical
      {
        dw += dw_t;
        db += db_t;
      }
    }
    grad_buffer(grad_weight, {D}).vec().array() += dw.cast<float>();
    grad_buffer(grad_bias, {D}).vec().array() += db.cast<float>();
    return dx;
  }

  void parameters(const std::string& prefix, std::vector<Parameter>& out) {
    add_parameter(out, join(prefix, "weight"), weight, grad_weight);
    add_parameter(out, join(prefix, "bias"), bias, grad_bias);
  }
};

}  // namespace ldm
