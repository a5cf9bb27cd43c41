// diffusers.schedulers.scheduling_euler_ancestral_discrete.EulerAncestralDiscreteScheduler
// k-diffusion sample_euler_ancestral: an Euler step down to sigma_down, then fresh noise of
// size sigma_up, so that sigma_down^2 + sigma_up^2 = sigma_{i+1}^2 (eta 1):
//   sigma_up   = sqrt(sigma_{i+1}^2 (sigma_i^2 - sigma_{i+1}^2) / sigma_i^2)
//   sigma_down = sqrt(sigma_{i+1}^2 - sigma_up^2)
//   x_{i+1}    = x_i + d (sigma_down - sigma_i) + sigma_up z,   d = (x - x0) / sigma_i.
// (diffusers' class has no Karras option: use_karras_sigmas is ignored here too.)
#pragma once
#include <cmath>

#include "ldm/schedulers/scheduler.hpp"

namespace ldm {

class EulerAncestralDiscreteScheduler : public Scheduler {
 public:
  explicit EulerAncestralDiscreteScheduler(const SchedulerConfig& config) : Scheduler(config) {}
  std::string name() const override { return "euler-a"; }

  void set_timesteps(int n) override {
    discrete_sigmas(config_, schedule_, n, /*karras=*/false, timesteps_, sigmas_);
    reset_timesteps(n);
  }
  float init_noise_sigma() const override { return k_init_noise_sigma(sigmas_, config_.timestep_spacing); }

  Tensor scale_model_input(const Tensor& sample, double t) override {
    return k_scale_model_input(sample, sigmas_[size_t(current_step_index(t))]);
  }

  Tensor step(const Tensor& model_output, double t, const Tensor& sample, Generator* gen = nullptr) override {
    check_step_shapes(model_output, sample, "euler-a");
    require_timesteps("step");
    LDM_CHECK(gen, "euler-a: every step draws noise; pass a Generator to step()");
    const int i = current_step_index(t);
    const KDenoised denoised(sigmas_[size_t(i)], v_prediction());
    // float32 scalars as in diffusers
    const float s_from = denoised.sigma, s_to = float(sigmas_[size_t(i + 1)]);
    const float s_up = std::sqrt(s_to * s_to * (s_from * s_from - s_to * s_to) / (s_from * s_from));
    // max: s_up rounds up to s_to when s_to << s_from (sigma_max ~ 2e4 in a zero-SNR-like schedule)
    const float s_down = std::sqrt(std::max(0.0f, s_to * s_to - s_up * s_up));
    const double dt = s_down - s_from;

    const Tensor z = gen->randn(sample.shape());
    Tensor out = Tensor::empty(sample.shape());
    for (int64_t j = 0; j < out.numel(); ++j) {
      const double x = sample[j];
      const double d = (x - denoised(x, model_output[j])) / double(s_from);
      out[j] = float(x + d * dt + double(s_up) * z[j]);
    }
    ++step_index_;
    return out;
  }

  Tensor add_noise(const Tensor& original, const Tensor& noise, double t) const override {
    return add_noise_sigma(original, noise, float(sigmas_.at(size_t(add_noise_index(t)))));
  }
};

inline std::unique_ptr<Scheduler> make_euler_ancestral_scheduler(const SchedulerConfig& config) {
  return std::make_unique<EulerAncestralDiscreteScheduler>(config);
}

}  // namespace ldm
