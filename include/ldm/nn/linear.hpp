// torch.nn.Linear: y = x W^T + b, over the last dimension.
#pragma once
#include <string>

#include "ldm/core/op_profile.hpp"
#include "ldm/core/weights.hpp"
#include "ldm/nn/gemm.hpp"
#include "ldm/nn/grad.hpp"
#include "ldm/train/parameter.hpp"

namespace ldm {

struct Linear {
  Tensor weight;  // [out, in]
  Tensor bias;    // [out], or undefined when the layer has none
  HalfTensor weight_f16;  // the weight kept as fp16 instead (WeightStore::keep_fp16)
  int64_t in_features = 0, out_features = 0;

  void load(WeightStore& w, const std::string& prefix, int64_t in, int64_t out, bool has_bias = true) {
    in_features = in;
    out_features = out;
    if (w.keep_fp16()) {
      weight_f16 = w.get_half(join(prefix, "weight"), {out, in});
    } else {
      weight = w.get(join(prefix, "weight"), {out, in});
    }
    if (has_bias) bias = w.get(join(prefix, "bias"), {out});
  }

  // The weight as float32 (converted from fp16 for this call when stored so).
  Tensor weights() const { return weight.defined() ? weight : weight_f16.to_float(); }
  int64_t weight_numel() const { return weight.defined() ? weight.numel() : numel_of(weight_f16.shape); }

  // [..., in] -> [..., out]
  Tensor forward(const Tensor& x) const {
    LDM_CHECK(x.dim(-1) == in_features, "Linear: expected last dimension ", in_features, ", got input ", x.shape_str());
    const int64_t rows = x.numel() / in_features;
    const OpTimer timer("linear", [&] { return label(x.shape_str()); }, flops(rows));
    Shape shape = x.shape();
    shape.back() = out_features;
    Tensor y = Tensor::empty(shape);
    multiply(x.data(), rows, y.data());
    return y;
  }
  // The same on raw rows: x [rows, in] -> y [rows, out], for a caller that runs a layer on a
  // block of rows at a time (FeedForward).
  void forward_rows(const float* x, int64_t rows, float* y) const {
    const OpTimer timer("linear", [&] { return label(shape_str({rows, in_features})); }, flops(rows));
    multiply(x, rows, y);
  }

 private:
  void multiply(const float* x, int64_t rows, float* y) const {
    const float* b = bias.defined() ? bias.data() : nullptr;
    if (weight.defined()) {  // W [out, in]
      gemm_bias(rows, out_features, in_features, x, in_features, weight.data(), in_features, b, y, out_features);
    } else {  // fp16: converted as the GEMM packs it, no float32 copy
      gemm_bias(rows, out_features, in_features, x, in_features, weight_f16.data.get(), in_features, b, y,
                out_features);
    }
  }
  std::string label(const std::string& input) const {
    return input + " -> " + std::to_string(out_features) + (weight.defined() ? "" : " fp16");
  }
  double flops(int64_t rows) const { return 2.0 * double(rows) * double(out_features) * double(in_features); }

 public:
  Tensor grad_weight, grad_bias;  // [out, in], [out]: accumulated by backward (nn/grad.hpp)

  // Saves the input x [..., in]. dy [..., out] -> dx [..., in]; the parameters' gradients
  // accumulate: grad_weight += dy^T x, grad_bias += dy summed over rows.
  Tensor backward(const Tensor& x, const Tensor& dy) {
    LDM_CHECK(x.dim(-1) == in_features, "Linear::backward: expected input last dimension ", in_features, ", got ",
              x.shape_str());
    const int64_t rows = x.numel() / in_features;
    LDM_CHECK(dy.dim(-1) == out_features && dy.numel() == rows * out_features, "Linear::backward: gradient ",
              dy.shape_str(), " does not match the output of input ", x.shape_str());
    const Tensor W = weights();  // [out, in]
    Tensor dx = Tensor::empty(x.shape());
    // dx[rows, in] = dy[rows, out] W[out, in]
    gemm(false, false, rows, in_features, out_features, 1.0f, dy.data(), out_features, W.data(), in_features, 0.0f,
         dx.data(), in_features);
    // grad_weight[out, in] += dy^T[out, rows] x[rows, in]
    Tensor& gw = grad_buffer(grad_weight, {out_features, in_features});
    gemm(true, false, out_features, in_features, rows, 1.0f, dy.data(), out_features, x.data(), in_features, 1.0f,
         gw.data(), in_features);
    if (bias.defined())
      grad_buffer(grad_bias, {out_features}).vec() += dy.matrix(rows, out_features).colwise().sum().transpose();
    return dx;
  }

  // weight, bias (when it has one), as load() reads them (train/parameter.hpp).
  void parameters(const std::string& prefix, std::vector<Parameter>& out) {
    add_parameter(out, join(prefix, "weight"), weight, grad_weight);
    if (bias.defined()) add_parameter(out, join(prefix, "bias"), bias, grad_bias);
  }
};

}  // namespace ldm
