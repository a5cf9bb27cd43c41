// torch.nn.utils.clip_grad_norm_(parameters, max_norm) with the L2 norm: the total norm is
// that of all gradients concatenated; when it exceeds max_norm every gradient is scaled by
// max_norm / (total + 1e-6). Returns the total norm before clipping (a training log's
// "grad_norm"). Parameters without a gradient are left out, as torch does. As torch's
// default (error_if_nonfinite=False), a non-finite norm is returned, not thrown.
#pragma once
#include <algorithm>
#include <cmath>
#include <vector>

#include "ldm/train/parameter.hpp"

namespace ldm {

inline double clip_grad_norm(const std::vector<Parameter>& params, double max_norm) {
  double sum_sq = 0;  // in double: SD1.5 has ~1e9 gradient elements
  for (const Parameter& p : params) {
    if (!p.grad->defined()) continue;
    const float* g = p.grad->data();
    const int64_t n = p.grad->numel();
#pragma omp parallel for reduction(+ : sum_sq) schedule(static) if (n >= 65536)
    for (int64_t i = 0; i < n; ++i) sum_sq += double(g[i]) * double(g[i]);
  }
  const double total_norm = std::sqrt(sum_sq);
  const float clip_coef = float(std::min(max_norm / (total_norm + 1e-6), 1.0));
  if (clip_coef < 1.0f || !std::isfinite(total_norm))
    for (const Parameter& p : params)
      if (p.grad->defined()) p.grad->vec() *= clip_coef;
  return total_norm;
}

}  // namespace ldm
