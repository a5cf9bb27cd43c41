// torch.nn.Linear: y = x W^T + b, over the last dimension.
#pragma once
#include <string>

#include "ldm/core/weights.hpp"
#include "ldm/nn/gemm.hpp"

namespace ldm {

struct Linear {
  Tensor weight;  // [out, in]
  Tensor bias;    // [out], or undefined when the layer has none
  int64_t in_features = 0, out_features = 0;

  void load(WeightStore& w, const std::string& prefix, int64_t in, int64_t out, bool has_bias = true) {
    in_features = in;
    out_features = out;
    weight = w.get(join(prefix, "weight"), {out, in});
    if (has_bias) bias = w.get(join(prefix, "bias"), {out});
  }

  // [..., in] -> [..., out]
  Tensor forward(const Tensor& x) const {
    LDM_CHECK(x.dim(-1) == in_features, "Linear: expected last dimension ", in_features, ", got input ", x.shape_str());
    const int64_t rows = x.numel() / in_features;
    Shape shape = x.shape();
    shape.back() = out_features;
    Tensor y = Tensor::empty(shape);
    if (bias.defined()) {
      float* o = y.data();
#pragma omp parallel for if (rows * out_features > (1 << 15))
      for (int64_t r = 0; r < rows; ++r) std::copy(bias.begin(), bias.end(), o + r * out_features);
    }
    gemm(false, true, rows, out_features, in_features, 1.0f, x.data(), in_features, weight.data(), in_features,
         bias.defined() ? 1.0f : 0.0f, y.data(), out_features);
    return y;
  }
};

}  // namespace ldm
