// diffusers.schedulers.scheduling_ddpm.DDPMScheduler (variance_type "fixed_small")
// Ho et al. 2020, "Denoising Diffusion Probabilistic Models", eqs. 6-7, on the (possibly
// strided) inference schedule t -> p (the next timestep, -1 after the last):
//   x0  = (x_t - sqrt(1 - a_t) eps) / sqrt(a_t),   alpha = a_t / a_p,  beta = 1 - alpha
//   mu  = sqrt(a_p) beta / (1 - a_t) x0 + sqrt(alpha) (1 - a_p) / (1 - a_t) x_t
//   x_p = mu + sqrt(beta (1 - a_p) / (1 - a_t)) z          (no noise at t = 0)
#pragma once
#include <algorithm>
#include <cmath>

#include "ldm/schedulers/scheduler.hpp"

namespace ldm {

class DDPMScheduler : public Scheduler {
 public:
  explicit DDPMScheduler(const SchedulerConfig& config) : Scheduler(config) {}
  std::string name() const override { return "ddpm"; }

  void set_timesteps(int n) override {
    timesteps_ = spaced_timesteps(config_, n, TimestepStyle::Integer);
    reset_timesteps(n);
  }

  Tensor step(const Tensor& model_output, double t, const Tensor& sample, Generator* gen = nullptr) override {
    return step_impl(model_output, t, sample, nullptr, gen);
  }
  // The same step with the noise z given instead of drawn.
  Tensor step(const Tensor& model_output, double t, const Tensor& sample, const Tensor& variance_noise) {
    check_shape(variance_noise, sample.shape(), "ddpm: variance_noise");
    return step_impl(model_output, t, sample, &variance_noise, nullptr);
  }

  Tensor add_noise(const Tensor& original, const Tensor& noise, double t) const override {
    return add_noise_vp(original, noise, schedule_.alphas_cumprod(train_index(t)));
  }

 private:
  // The timestep after t in the inference schedule, -1 after the last (previous_timestep).
  int previous_timestep(double t) const {
    for (size_t i = 0; i < timesteps_.size(); ++i)
      if (timesteps_[i] == t) return i + 1 < timesteps_.size() ? int(timesteps_[i + 1]) : -1;
    LDM_FAIL("ddpm: timestep ", t, " is not one of the scheduler's timesteps");
  }

  Tensor step_impl(const Tensor& model_output, double t, const Tensor& sample, const Tensor* noise, Generator* gen) {
    require_timesteps("step");
    check_step_shapes(model_output, sample, "ddpm");
    const int ti = train_index(t);
    const int prev = previous_timestep(t);

    // float32 scalars as in diffusers
    const float a_t = schedule_.alphas_cumprod(ti);
    const float a_p = prev >= 0 ? schedule_.alphas_cumprod(prev) : 1.0f;
    const float b_t = 1.0f - a_t, b_p = 1.0f - a_p;
    const float cur_alpha = a_t / a_p, cur_beta = 1.0f - cur_alpha;
    const double sqrt_a_t = std::sqrt(a_t), sqrt_b_t = std::sqrt(b_t);
    const double x0_coeff = (std::sqrt(a_p) * cur_beta) / b_t;      // eq. 7, coefficient of x0
    const double xt_coeff = std::sqrt(cur_alpha) * b_p / b_t;       // eq. 7, coefficient of x_t
    const double sigma = std::sqrt(std::max(b_p / b_t * cur_beta, 1e-20f));

    Tensor z;
    if (ti > 0) {
      if (noise) {
        z = *noise;
      } else {
        LDM_CHECK(gen, "ddpm: step draws noise for t > 0; pass a Generator (or the noise tensor) to step()");
        z = gen->randn(sample.shape());
      }
    }
    const double range = config_.clip_sample_range;
    Tensor out = Tensor::empty(sample.shape());
    for (int64_t i = 0; i < out.numel(); ++i) {
      const double x = sample[i], m = model_output[i];
      double x0 = v_prediction() ? sqrt_a_t * x - sqrt_b_t * m : (x - sqrt_b_t * m) / sqrt_a_t;
      if (config_.clip_sample) x0 = std::clamp(x0, -range, range);
      double prev_x = x0_coeff * x0 + xt_coeff * x;
      if (ti > 0) prev_x += sigma * z[i];
      out[i] = float(prev_x);
    }
    return out;
  }
};

inline std::unique_ptr<Scheduler> make_ddpm_scheduler(const SchedulerConfig& config) {
  return std::make_unique<DDPMScheduler>(config);
}

}  // namespace ldm
