// Exponential moving average of the weights, as diffusers' EMAModel (training_utils.py) with
// its defaults (use_ema_warmup=False): after optimizer step k (k = 1, 2, ...)
//   s = k - update_after_step - 1
//   decay = 0                                          when s <= 0 (the average starts as a copy)
//         = clamp((1 + s) / (10 + s), min_decay, decay)  with warmup (diffusers' default)
//         = clamp(decay, min_decay, decay)               without (a constant decay)
//   ema -= (1 - decay) * (ema - weight)
// The warm-up keeps the early average from being dominated by the random initial weights.
// diffusers' inv_gamma/power warm-up (use_ema_warmup=True) is not implemented.
#pragma once
#include <algorithm>
#include <map>
#include <string>
#include <vector>

#include "ldm/train/parameter.hpp"

namespace ldm {

struct EMAModel {
  double decay = 0.9999, min_decay = 0.0;
  int64_t update_after_step = 0;
  bool warmup = true;
  int64_t optimization_step = 0;             // EMA updates so far
  std::map<std::string, Tensor> shadow_params;  // the averaged weights, by parameter name

  double get_decay(int64_t step) const {
    const int64_t s = std::max<int64_t>(0, step - update_after_step - 1);
    if (s <= 0) return 0.0;
    const double d = warmup ? std::min((1.0 + double(s)) / (10.0 + double(s)), decay) : decay;
    return std::max(d, min_decay);
  }

  // After each optimizer step.
  void step(const std::vector<Parameter>& params) {
    optimization_step += 1;
    const float one_minus_decay = float(1.0 - get_decay(optimization_step));
    for (const Parameter& p : params) {
      Tensor& ema = shadow_params[p.name];
      if (!ema.defined()) ema = p.value->clone();
      LDM_CHECK(ema.shape() == p.value->shape(), "EMAModel: the average of ", p.name, " has shape ", ema.shape_str(),
                " but the parameter is ", p.value->shape_str(), "; was a different model resumed?");
      float* e = ema.data();
      const float* w = p.value->data();
      const int64_t n = ema.numel();
#pragma omp parallel for schedule(static) if (n >= 65536)
      for (int64_t i = 0; i < n; ++i) e[i] -= one_minus_decay * (e[i] - w[i]);
    }
  }

  // Writes the averaged weights into the model (for evaluation or export), as EMAModel.copy_to.
  void copy_to(const std::vector<Parameter>& params) const {
    for (const Parameter& p : params) {
      auto it = shadow_params.find(p.name);
      LDM_CHECK(it != shadow_params.end(), "EMAModel::copy_to: no average for parameter ", p.name,
                "; call step() after each optimizer step first");
      LDM_CHECK(it->second.shape() == p.value->shape(), "EMAModel::copy_to: the average of ", p.name, " has shape ",
                it->second.shape_str(), " but the parameter is ", p.value->shape_str());
      std::copy(it->second.begin(), it->second.end(), p.value->begin());
    }
  }
};

}  // namespace ldm
