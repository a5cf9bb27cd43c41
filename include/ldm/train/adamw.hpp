// torch.optim.AdamW (amsgrad=False, maximize=False), step for step as torch's single-tensor
// path (torch/optim/adam.py, _single_tensor_adam with decoupled_weight_decay), per element:
//   step += 1
//   p *= 1 - lr * weight_decay                       (decoupled weight decay, before the update)
//   m  = lerp(m, g, 1 - beta1)                       (exp_avg)
//   v  = v * beta2 + (1 - beta2) * g * g             (exp_avg_sq)
//   p -= lr / (1 - beta1^step) * m / (sqrt(v) / sqrt(1 - beta2^step) + eps)
// eps is added after the second-moment bias correction, as torch does. The scalars are
// computed in double and applied in float32, as torch does with Python float scalars.
// As torch, a parameter without a gradient is skipped (its step does not advance), so each
// parameter keeps its own step count. The state is keyed by the parameter's name, so it
// survives a rebuild of the model and is saved under checkpoint names (train/checkpoint.hpp).
#pragma once
#include <cmath>
#include <map>
#include <string>
#include <vector>

#include "ldm/train/parameter.hpp"

namespace ldm {

struct AdamWState {
  Tensor exp_avg;     // m, the shape of the parameter
  Tensor exp_avg_sq;  // v, the shape of the parameter
  int64_t step = 0;   // updates applied to this parameter
};

struct AdamW {
  double lr = 1e-3;  // set by the learning-rate schedule before each step (train/lr_schedule.hpp)
  double beta1 = 0.9, beta2 = 0.999;
  double eps = 1e-8;
  double weight_decay = 1e-2;
  std::map<std::string, AdamWState> state;  // by parameter name

  void step(const std::vector<Parameter>& params) {
    for (const Parameter& p : params) {
      if (!p.grad->defined()) continue;
      Tensor& w = *p.value;
      const Tensor& g = *p.grad;
      LDM_CHECK(g.shape() == w.shape(), "AdamW: gradient ", g.shape_str(), " of parameter ", p.name,
                " does not match its weight ", w.shape_str());
      AdamWState& s = state[p.name];
      if (!s.exp_avg.defined()) s = {Tensor(w.shape()), Tensor(w.shape()), 0};
      LDM_CHECK(s.exp_avg.shape() == w.shape(), "AdamW: the optimizer state of ", p.name, " has shape ",
                s.exp_avg.shape_str(), " but the parameter is ", w.shape_str(), "; was a different model resumed?");
      s.step += 1;
      const float decay = float(1.0 - lr * weight_decay);
      const float w1 = float(1.0 - beta1), b2 = float(beta2), w2 = float(1.0 - beta2);
      const float step_size = float(lr / (1.0 - std::pow(beta1, double(s.step))));
      const float bias_correction2_sqrt = float(std::sqrt(1.0 - std::pow(beta2, double(s.step))));
      const float epsf = float(eps);
      float* pw = w.data();
      float* m = s.exp_avg.data();
      float* v = s.exp_avg_sq.data();
      const float* pg = g.data();
      const int64_t n = w.numel();
#pragma omp parallel for schedule(static) if (n >= 65536)
      for (int64_t i = 0; i < n; ++i) {
        pw[i] *= decay;
        m[i] += w1 * (pg[i] - m[i]);  // torch's lerp for a weight < 0.5
        v[i] = v[i] * b2 + w2 * pg[i] * pg[i];  // mul_ then addcmul_
        pw[i] += -step_size * m[i] / (std::sqrt(v[i]) / bias_correction2_sqrt + epsf);  // addcdiv_
      }
    }
  }
};

}  // namespace ldm
