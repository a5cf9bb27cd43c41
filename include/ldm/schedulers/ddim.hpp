// diffusers.schedulers.scheduling_ddim.DDIMScheduler
// Song et al. 2021, "Denoising Diffusion Implicit Models", eq. 12:
//   x0   = (x_t - sqrt(1 - a_t) eps) / sqrt(a_t)
//   x_p  = sqrt(a_p) x0 + sqrt(1 - a_p - s^2) eps + s z,   p = t - T/n (a = alphas_cumprod)
//   s    = eta sqrt((1 - a_p) / (1 - a_t)) sqrt(1 - a_t / a_p)
// eta = 0 is the deterministic DDIM sampler; eta = 1 is DDPM's posterior on the strided schedule.
#pragma once
#include <algorithm>
#include <cmath>

#include "ldm/schedulers/scheduler.hpp"

namespace ldm {

class DDIMScheduler : public Scheduler {
 public:
  explicit DDIMScheduler(const SchedulerConfig& config, double eta = 0.0) : Scheduler(config) {
    set_eta(eta);
    // the "previous" abar of the last step: 1, or abar_0 as SD1.5 (set_alpha_to_one false)
    final_alpha_cumprod_ = config.set_alpha_to_one ? 1.0f : schedule_.alphas_cumprod(0);
  }
  std::string name() const override { return "ddim"; }

  void set_eta(double eta) {
    LDM_CHECK(eta >= 0.0, "ddim: eta must be >= 0, got ", eta);
    eta_ = eta;
  }
  double eta() const { return eta_; }

  void set_timesteps(int n) override {
    timesteps_ = spaced_timesteps(config_, n, TimestepStyle::Integer);
    reset_timesteps(n);
  }

  Tensor step(const Tensor& model_output, double t, const Tensor& sample, Generator* gen = nullptr) override {
    return step_impl(model_output, t, sample, nullptr, gen);
  }
  // eta > 0 with the noise z given (diffusers' variance_noise) instead of drawn.
  Tensor step(const Tensor& model_output, double t, const Tensor& sample, const Tensor& variance_noise) {
    check_shape(variance_noise, sample.shape(), "ddim: variance_noise");
    return step_impl(model_output, t, sample, &variance_noise, nullptr);
  }

  Tensor add_noise(const Tensor& original, const Tensor& noise, double t) const override {
    return add_noise_vp(original, noise, schedule_.alphas_cumprod(train_index(t)));
  }

 private:
  Tensor step_impl(const Tensor& model_output, double t, const Tensor& sample, const Tensor* noise, Generator* gen) {
    require_timesteps("step");
    check_step_shapes(model_output, sample, "ddim");
    const int ti = train_index(t);
    const int prev = ti - config_.num_train_timesteps / num_inference_steps_;

    // float32 scalars as in diffusers
    const float a_t = schedule_.alphas_cumprod(ti);
    const float a_p = prev >= 0 ? schedule_.alphas_cumprod(prev) : final_alpha_cumprod_;
    const float b_t = 1.0f - a_t;
    const float variance = ((1.0f - a_p) / b_t) * (1.0f - a_t / a_p);
    const float std_dev = float(eta_) * std::sqrt(variance);
    const double sqrt_a_t = std::sqrt(a_t), sqrt_b_t = std::sqrt(b_t), sqrt_a_p = std::sqrt(a_p);
    const double dir_coeff = std::sqrt(1.0f - a_p - std_dev * std_dev);

    Tensor z;
    if (eta_ > 0) {
      if (noise) {
        z = *noise;
      } else {
        LDM_CHECK(gen, "ddim: eta > 0 draws noise; pass a Generator (or the noise tensor) to step()");
        z = gen->randn(sample.shape());
      }
    }
    const double range = config_.clip_sample_range;
    Tensor out = Tensor::empty(sample.shape());
    for (int64_t i = 0; i < out.numel(); ++i) {
      const double x = sample[i], m = model_output[i];
      double x0, eps;
      if (v_prediction()) {
        x0 = sqrt_a_t * x - sqrt_b_t * m;
        eps = sqrt_a_t * m + sqrt_b_t * x;
      } else {
        x0 = (x - sqrt_b_t * m) / sqrt_a_t;
        eps = m;
      }
      if (config_.clip_sample) x0 = std::clamp(x0, -range, range);
      double prev_x = sqrt_a_p * x0 + dir_coeff * eps;
      if (eta_ > 0) prev_x += double(std_dev) * z[i];
      out[i] = float(prev_x);
    }
    return out;
  }

  double eta_ = 0.0;
  float final_alpha_cumprod_;
};

inline std::unique_ptr<Scheduler> make_ddim_scheduler(const SchedulerConfig& config) {
  return std::make_unique<DDIMScheduler>(config);
}

}  // namespace ldm
