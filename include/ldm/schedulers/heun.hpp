// diffusers.schedulers.scheduling_heun_discrete.HeunDiscreteScheduler
// Karras et al. 2022, Algorithm 1 (Heun's 2nd-order method, no churn): an Euler predictor to
// sigma_{i+1}, then the average of the slopes at both ends,
//   d_i = (x_i - x0(x_i, sigma_i)) / sigma_i,       x' = x_i + d_i (sigma_{i+1} - sigma_i)
//   d'  = (x' - x0(x', sigma_{i+1})) / sigma_{i+1},  x_{i+1} = x_i + (d_i + d') / 2 (sigma_{i+1} - sigma_i)
// Two model calls per step, so the schedule lists every timestep after the first twice
// (n steps -> 2n - 1 timesteps); the last step to sigma = 0 is a plain Euler step.
#pragma once
#include <vector>

#include "ldm/schedulers/scheduler.hpp"

namespace ldm {

class HeunDiscreteScheduler : public Scheduler {
 public:
  explicit HeunDiscreteScheduler(const SchedulerConfig& config) : Scheduler(config) {}
  std::string name() const override { return "heun"; }
  int order() const override { return 2; }

  void set_timesteps(int n) override {
    std::vector<double> ts, sig;
    discrete_sigmas(config_, schedule_, n, config_.use_karras_sigmas, ts, sig);
    // sigmas: [s0, s1, s1, s2, s2, ..., s_{n-1}, s_{n-1}, 0]; timesteps: [t0, t1, t1, ..., t_{n-1}, t_{n-1}]
    sigmas_ = {sig.front()};
    for (size_t i = 1; i + 1 < sig.size(); ++i) sigmas_.insert(sigmas_.end(), {sig[i], sig[i]});
    sigmas_.push_back(sig.back());
    timesteps_ = {ts.front()};
    for (size_t i = 1; i < ts.size(); ++i) timesteps_.insert(timesteps_.end(), {ts[i], ts[i]});
    reset_timesteps(n);
    prev_derivative_ = Tensor();
    first_sample_ = Tensor();
    dt_ = 0;
  }
  float init_noise_sigma() const override { return k_init_noise_sigma(sigmas_, config_.timestep_spacing); }

  Tensor scale_model_input(const Tensor& sample, double t) override {
    return k_scale_model_input(sample, sigmas_[size_t(current_step_index(t))]);
  }

  Tensor step(const Tensor& model_output, double t, const Tensor& sample, Generator* = nullptr) override {
    check_step_shapes(model_output, sample, "heun");
    const int i = current_step_index(t);
    const bool first_order = !prev_derivative_.defined();
    const int64_t N = sample.numel();
    Tensor out = Tensor::empty(sample.shape());
    if (first_order) {  // Euler predictor from sigma_i to sigma_{i+1}
      const KDenoised denoised(sigmas_[size_t(i)], v_prediction());
      const float sigma_next = float(sigmas_[size_t(i + 1)]);
      dt_ = sigma_next - denoised.sigma;  // float32
      Tensor d = Tensor::empty(sample.shape());
      for (int64_t j = 0; j < N; ++j) {
        const double x = sample[j];
        const double dj = (x - denoised(x, model_output[j])) / double(denoised.sigma);
        d[j] = float(dj);
        out[j] = float(x + dj * dt_);
      }
      prev_derivative_ = d;
      first_sample_ = sample.clone();
    } else {  // corrector: average the slopes at both ends, step again from the first sample
      const KDenoised denoised(sigmas_[size_t(i)], v_prediction());  // sigma_{i+1} of the step
      for (int64_t j = 0; j < N; ++j) {
        const double x = sample[j];
        const double d_next = (x - denoised(x, model_output[j])) / double(denoised.sigma);
        const double d = (double(prev_derivative_[j]) + d_next) / 2;
        out[j] = float(first_sample_[j] + d * dt_);
      }
      prev_derivative_ = Tensor();
      first_sample_ = Tensor();
    }
    ++step_index_;
    return out;
  }

  Tensor add_noise(const Tensor& original, const Tensor& noise, double t) const override {
    return add_noise_sigma(original, noise, float(sigmas_.at(size_t(add_noise_index(t)))));
  }

 private:
  Tensor prev_derivative_;  // d_i of the pending step; undefined when the next call is a predictor
  Tensor first_sample_;     // x_i of the pending step
  double dt_ = 0;           // sigma_{i+1} - sigma_i of the pending step
};

inline std::unique_ptr<Scheduler> make_heun_scheduler(const SchedulerConfig& config) {
  return std::make_unique<HeunDiscreteScheduler>(config);
}

}  // namespace ldm
