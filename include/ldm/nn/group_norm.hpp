// torch.nn.GroupNorm: per sample, channels split into `groups`; each group normalised over
// its channels and pixels, then a per-channel affine. Optionally fused with SiLU, the
// activation that follows nearly every GroupNorm of the U-Net and VAE.
#pragma once
#include <cmath>
#include <string>
#include <vector>

#include "ldm/core/op_profile.hpp"
#include "ldm/core/weights.hpp"
#include "ldm/nn/grad.hpp"
#include "ldm/train/parameter.hpp"
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

// Saves the input x; the group statistics are recomputed from it. With xhat = (x - mean) rstd
// per group, z = xhat w + b and y = z (or silu(z) fused):
//   dz = dy (or dy silu'(z))      grad_weight[c] += sum dz xhat     grad_bias[c] += sum dz
//   dx = rstd (dxhat - mean(dxhat) - xhat mean(dxhat xhat)),  dxhat = dz w, means over the group
// dy [B, C, ...] -> dx [B, C, ...]. Sums in double, as the forward's statistics.
inline Tensor group_norm_backward(const Tensor& x, const Tensor& weight, const Tensor& bias, int64_t groups, float eps,
                                  bool fuse_silu, const Tensor& dy, Tensor& grad_weight, Tensor& grad_bias) {
  LDM_CHECK(x.ndim() >= 2, "group_norm_backward: expected [B, C, ...], got ", x.shape_str());
  LDM_CHECK(dy.shape() == x.shape(), "group_norm_backward: gradient ", dy.shape_str(), " does not match the input ",
            x.shape_str());
  const int64_t B = x.dim(0), C = x.dim(1), S = x.numel() / std::max<int64_t>(B * C, 1);
  LDM_CHECK(groups > 0 && C % groups == 0, "group_norm_backward: ", C, " channels do not split into ", groups,
            " groups");
  LDM_CHECK(weight.numel() == C && bias.numel() == C, "group_norm_backward: weight ", weight.shape_str(),
            " and bias ", bias.shape_str(), " must have ", C, " values");
  const int64_t Cg = C / groups, n = Cg * S;
  Tensor dx = Tensor::empty(x.shape());
  std::vector<double> dw(size_t(B * C)), db(size_t(B * C));  // per-sample sums, added up after
  if (n > 0) {
#pragma omp parallel for collapse(2) schedule(static) if (x.numel() > (1 << 14))
    for (int64_t b = 0; b < B; ++b) {
      for (int64_t g = 0; g < groups; ++g) {
        const float* xg = x.data() + (b * C + g * Cg) * S;
        const Moments st = moments(xg, n);
        const float rstd = float(1.0 / std::sqrt(st.var + double(eps)));
        const float offset = float((double(xg[0]) - st.mean) / std::sqrt(st.var + double(eps)));
        auto xhat_of = [&](int64_t c) {  // as the forward: (x - x0) rstd + (x0 - mean) rstd
          return (Eigen::Map<const Eigen::ArrayXf>(x.data() + (b * C + c) * S, S) - xg[0]) * rstd + offset;
        };
        // Pass 1: dz into dx, the sums of dxhat and dxhat xhat over the group, the parameters' sums.
        double sum_dxhat = 0, sum_dxhat_xhat = 0;
        for (int64_t c = g * Cg; c < (g + 1) * Cg; ++c) {
          const Eigen::ArrayXf xhat = xhat_of(c);
          Eigen::Map<Eigen::ArrayXf> dz(dx.data() + (b * C + c) * S, S);
          dz = Eigen::Map<const Eigen::ArrayXf>(dy.data() + (b * C + c) * S, S);
          if (fuse_silu) {
            const Eigen::ArrayXf z = xhat * weight[c] + bias[c], sg = 1.0f / (1.0f + (-z).exp());
            dz *= sg * (1.0f + z * (1.0f - sg));
          }
          const double sdz = dz.sum(), sdz_xhat = (dz * xhat).sum();
          dw[size_t(b * C + c)] = sdz_xhat;
          db[size_t(b * C + c)] = sdz;
          sum_dxhat += sdz * weight[c];
          sum_dxhat_xhat += sdz_xhat * weight[c];
        }
        // Pass 2: dx = rstd (dz w - mean(dxhat) - xhat mean(dxhat xhat))
        const float m1 = float(sum_dxhat / double(n)), m2 = float(sum_dxhat_xhat / double(n));
        for (int64_t c = g * Cg; c < (g + 1) * Cg; ++c) {
          Eigen::Map<Eigen::ArrayXf> d(dx.data() + (b * C + c) * S, S);
          d = rstd * (d * weight[c] - m1 - xhat_of(c) * m2);
        }
      }
    }
  }
  Tensor& gw = grad_buffer(grad_weight, {C});
  Tensor& gb = grad_buffer(grad_bias, {C});
  for (int64_t b = 0; b < B; ++b)
    for (int64_t c = 0; c < C; ++c) gw[c] += float(dw[size_t(b * C + c)]), gb[c] += float(db[size_t(b * C + c)]);
  return dx;
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
    const OpTimer timer(fuse_silu ? "group_norm+silu" : "group_norm", [&] { return x.shape_str(); }, 0);
    return group_norm(x, weight, bias, groups, eps, fuse_silu);
  }

  Tensor grad_weight, grad_bias;  // [C]: accumulated by backward (nn/grad.hpp)

  // Saves the input x. dy [B, C, ...] -> dx (group_norm_backward); fuse_silu as in the forward.
  Tensor backward(const Tensor& x, const Tensor& dy, bool fuse_silu = false) {
    return group_norm_backward(x, weight, bias, groups, eps, fuse_silu, dy, grad_weight, grad_bias);
  }

  void parameters(const std::string& prefix, std::vector<Parameter>& out) {
    add_parameter(out, join(prefix, "weight"), weight, grad_weight);
    add_parameter(out, join(prefix, "bias"), bias, grad_bias);
  }
};

}  // namespace ldm
