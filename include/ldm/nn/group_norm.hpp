// torch.nn.GroupNorm: per sample, channels split into `groups`; each group normalised over
// its channels and pixels, then a per-channel affine. Optionally fused with SiLU, the
// activation that follows nearly every GroupNorm of the U-Net and VAE.
#pragma once
#include <cmath>
#include <string>

#include "ldm/core/weights.hpp"
#include "ldm/nn/moments.hpp"

namespace ldm {

// x [B, C, ...] -> same shape. Statistics in double (nn/moments.hpp), as the references are
// float64 truths. One task per (sample, group): its Cg*S values stay in L2 between the
// statistics pass and the normalising pass.
inline Tensor group_norm(const Tensor& x, const Tensor& weight, const Tensor& bias, int64_t groups, float eps,
                         bool fuse_silu = false) {
  LDM_CHECK(x.ndim() >= 2, "group_norm: expected [B, C, ...], got ", x.shape_str());
  const int64_t B = x.dim(0), C = x.dim(1), S = x.numel() / std::max<int64_t>(B * C, 1);
  LDM_CHECK(groups > 0 && C % groups == 0, "group_norm: ", C, " channels do not split into ", groups, " groups");
  LDM_CHECK(weight.numel() == C && bias.numel() == C, "group_norm: weight ", weight.shape_str(), " and bias ",
            bias.shape_str(), " must have ", C, " values");
  const int64_t Cg = C / groups, n = Cg * S;
  Tensor y = Tensor::empty(x.shape());
  if (n == 0) return y;
#pragma omp parallel for collapse(2) schedule(static) if (x.numel() > (1 << 14))
  for (int64_t b = 0; b < B; ++b) {
    for (int64_t g = 0; g < groups; ++g) {
      const float* xg = x.data() + (b * C + g * Cg) * S;
      const Moments st = moments(xg, n);
      const double rstd = 1.0 / std::sqrt(st.var + double(eps));
      for (int64_t c = g * Cg; c < (g + 1) * Cg; ++c) {
        // (x - mean) a + b = (x - x0) a + ((x0 - mean) a + b): x - x0 loses nothing in float
        // when x is close to x0, and the offset is rounded once, from double.
        const double a = rstd * weight[c];
        const float offset = float((double(xg[0]) - st.mean) * a + bias[c]);
        Eigen::Map<const Eigen::ArrayXf> xi(x.data() + (b * C + c) * S, S);
        Eigen::Map<Eigen::ArrayXf> yo(y.data() + (b * C + c) * S, S);
        yo = (xi - xg[0]) * float(a) + offset;
        if (fuse_silu) yo = yo / (1.0f + (-yo).exp());
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
