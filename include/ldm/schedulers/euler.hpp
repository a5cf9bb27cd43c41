// diffusers.schedulers.scheduling_euler_discrete.EulerDiscreteScheduler
// Karras et al. 2022, Algorithm 2 without churn (k-diffusion sample_euler): one Euler step of
// the probability-flow ODE in sigma,
//   x0 = x - sigma eps,  d = (x - x0) / sigma,  x_{i+1} = x_i + d (sigma_{i+1} - sigma_i).
#pragma once
#include "ldm/schedulers/scheduler.hpp"

namespace ldm {

class EulerDiscreteScheduler : public Scheduler {
 public:
  explicit EulerDiscreteScheduler(const SchedulerConfig& config) : Scheduler(config) {}
  std::string name() const override { return "euler"; }

  void set_timesteps(int n) override {
    discrete_sigmas(config_, schedule_, n, config_.use_karras_sigmas, timesteps_, sigmas_);
    reset_timesteps(n);
  }
  float init_noise_sigma() const override { return k_init_noise_sigma(sigmas_, config_.timestep_spacing); }

  Tensor scale_model_input(const Tensor& sample, double t) override {
    return k_scale_model_input(sample, sigmas_[size_t(current_step_index(t))]);
  }

  Tensor step(const Tensor& model_output, double t, const Tensor& sample, Generator* = nullptr) override {
    check_step_shapes(model_output, sample, "euler");
    const int i = current_step_index(t);
    const KDenoised denoised(sigmas_[size_t(i)], v_prediction());
    const double sigma = denoised.sigma;
    const double dt = float(sigmas_[size_t(i + 1)]) - denoised.sigma;  // float32, as diffusers
    Tensor out = Tensor::empty(sample.shape());
    for (int64_t j = 0; j < out.numel(); ++j) {
      const double x = sample[j];
      const double d = (x - denoised(x, model_output[j])) / sigma;
      out[j] = float(x + d * dt);
    }
    ++step_index_;
    return out;
  }

  Tensor add_noise(const Tensor& original, const Tensor& noise, double t) const override {
    return add_noise_sigma(original, noise, float(sigmas_.at(size_t(add_noise_index(t)))));
  }
};

inline std::unique_ptr<Scheduler> make_euler_scheduler(const SchedulerConfig& config) {
  return std::make_unique<EulerDiscreteScheduler>(config);
}

}  // namespace ldm
