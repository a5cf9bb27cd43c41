// torch.nn.GroupNorm: per sample, channels split into `groups`; each group normalised over
// its channels and pixels, then a per-channel affine. Optionally fused with SiLU, the
// activation that follows nearly every GroupNorm of the U-Net and VAE.
#pragma once
#include <cmath>
#include <string>

#include "ldm/core/weights.hpp"

namespace ldm {

// x [B, C, ...] -> same shape. Statistics in double, as the references are float64 truths.
inline Tensor group_norm(const Tensor& x, const Tensor& weight, const Tensor& bias, int64_t groups, float eps,
                         bool fuse_silu = false) {
  const int64_t B = x.dim(0), C = x.dim(1), S = x.numel() / (B * C);
  LDM_CHECK(C % groups == 0, "group_norm: ", C, " channels do not split into ", groups, " groups");
  const int64_t Cg = C / groups, n = Cg * S;
  Tensor y = Tensor::empty(x.shape());
#pragma omp parallel for collapse(2) schedule(static)
  for (int64_t b = 0; b < B; ++b) {
    for (int64_t g = 0; g < groups; ++g) {
      const float* xg = x.data() + (b * C + g * Cg) * S;
      float* yg = y.data() + (b * C + g * Cg) * S;
      double sum = 0, sq = 0;
      for (int64_t i = 0; i < n; ++i) sum += xg[i];
      const double mean = sum / double(n);
      for (int64_t i = 0; i < n; ++i) {
        const double d = xg[i] - mean;
        sq += d * d;
      }
      const float rstd = float(1.0 / std::sqrt(sq / double(n) + eps));
      for (int64_t c = 0; c < Cg; ++c) {
        const float a = rstd * weight[g * Cg + c];
        const float s = bias[g * Cg + c] - float(mean) * a;
        Eigen::Map<const Eigen::ArrayXf> xi(xg + c * S, S);
        Eigen::Map<Eigen::ArrayXf> yo(yg + c * S, S);
        if (fuse_silu) {
          yo = xi * a + s;
          yo = yo / (1.0f + (-yo).exp());
        } else {
          yo = xi * a + s;
        }
      }
    }
  }
  return y;
}

struct GroupNorm {
  Tensor weight, bias;  // [C]
  int64_t groups = 32;
  float eps = 1e-5f;

  void load(WeightStore& w, const std::string& prefix, int64_t channels, int64_t groups_ = 32, float eps_ = 1e-5f) {
    weight = w.get(join(prefix, "weight"), {channels});
    bias = w.get(join(prefix, "bias"), {channels});
    groups = groups_;
    eps = eps_;
  }
  // [B, C, ...] -> same
  Tensor forward(const Tensor& x, bool fuse_silu = false) const {
    LDM_CHECK(x.dim(1) == weight.dim(0), "GroupNorm: expected ", weight.dim(0), " channels, got ", x.shape_str());
    return group_norm(x, weight, bias, groups, eps, fuse_silu);
  }
};

}  // namespace ldm
