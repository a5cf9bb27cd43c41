// torch.nn.LayerNorm over the last dimension, with affine weight and bias.
#pragma once
#include <cmath>
#include <string>

#include "ldm/core/weights.hpp"
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
};

}  // namespace ldm
