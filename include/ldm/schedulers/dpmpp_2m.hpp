// diffusers.schedulers.scheduling_dpmsolver_multistep.DPMSolverMultistepScheduler
// with its defaults: algorithm_type "dpmsolver++", solver_order 2, solver_type "midpoint",
// lower_order_final, final_sigmas_type "zero".
// Lu et al. 2022, "DPM-Solver++", Algorithm 2 (multistep, data prediction). With
// alpha = 1 / sqrt(sigma^2 + 1), s = sigma alpha, lambda = log(alpha / s), h = lambda_t - lambda_s0:
//   1st order:  x_t = (s_t / s_s0) x - alpha_t (e^{-h} - 1) D0
//   2nd order:  x_t = (s_t / s_s0) x - alpha_t (e^{-h} - 1) D0 - 0.5 alpha_t (e^{-h} - 1) D1
//   D0 = m0,  D1 = (m0 - m1) / r0,  r0 = h_0 / h,  h_0 = lambda_s0 - lambda_s1
// with m the predicted x0 of this (m0) and the previous (m1) step. The first step is first
// order; so is the last (to sigma 0), and the second-to-last stays second order.
#pragma once
#include <cmath>

#include "ldm/schedulers/scheduler.hpp"

namespace ldm {

class DPMSolverMultistepScheduler : public Scheduler {
 public:
  explicit DPMSolverMultistepScheduler(const SchedulerConfig& config) : Scheduler(config) {}
  std::string name() const override { return "dpm++2m"; }

  void set_timesteps(int n) override {
    solver_sigmas(config_, schedule_, n, timesteps_, sigmas_);
    reset_timesteps(n);
    m0_ = m1_ = Tensor();
    lower_order_nums_ = 0;
  }

  Tensor step(const Tensor& model_output, double t, const Tensor& sample, Generator* = nullptr) override {
    check_step_shapes(model_output, sample, "dpm++2m");
    require_timesteps("step");
    if (step_index_ < 0) step_index_ = begin_index_ >= 0 ? begin_index_ : solver_index_for_timestep(t);
    const int i = current_step_index(t);
    const int n = int(timesteps_.size());
    // final_sigmas_type "zero": the last step (to sigma 0) is always first order. (diffusers'
    // lower_order_second only matters for solver_order 3.)
    const bool lower_order_final = i == n - 1;

    m1_ = m0_;
    m0_ = vp_predict_x0(model_output, sample, VpLevel(sigmas_[size_t(i)]), v_prediction());

    Tensor out = lower_order_nums_ < 1 || lower_order_final ? first_order_update(sample, i)
                                                            : second_order_update(sample, i);
    if (lower_order_nums_ < 2) ++lower_order_nums_;
    ++step_index_;
    return out;
  }

  Tensor add_noise(const Tensor& original, const Tensor& noise, double t) const override {
    require_timesteps("add_noise");
    const int i = begin_index_ < 0 ? solver_index_for_timestep(t)
                                   : (step_index_ >= 0 ? step_index_ : begin_index_);
    return add_noise_vp_sigma(original, noise, sigmas_.at(size_t(i)));
  }

 private:
  // DDIM-like first-order step from sigmas[i] to sigmas[i + 1].
  Tensor first_order_update(const Tensor& sample, int i) const {
    const VpLevel t(sigmas_[size_t(i + 1)]), s0(sigmas_[size_t(i)]);
    const float h = t.lambda - s0.lambda;
    const double c_x = t.sigma_t / s0.sigma_t;
    const double c_d = t.alpha * (std::exp(-h) - 1.0f);
    Tensor out = Tensor::empty(sample.shape());
    for (int64_t j = 0; j < out.numel(); ++j) out[j] = float(c_x * sample[j] - c_d * m0_[j]);
    return out;
  }

  // Second-order multistep (midpoint) step from sigmas[i] to sigmas[i + 1], using sigmas[i - 1].
  Tensor second_order_update(const Tensor& sample, int i) const {
    const VpLevel t(sigmas_[size_t(i + 1)]), s0(sigmas_[size_t(i)]), s1(sigmas_[size_t(i - 1)]);
    const float h = t.lambda - s0.lambda, h_0 = s0.lambda - s1.lambda;
    const float r0 = h_0 / h;
    const double inv_r0 = 1.0f / r0;
    const double c_x = t.sigma_t / s0.sigma_t;
    const double c_d = t.alpha * (std::exp(-h) - 1.0f);
    Tensor out = Tensor::empty(sample.shape());
    for (int64_t j = 0; j < out.numel(); ++j) {
      const double d0 = m0_[j];
      const double d1 = inv_r0 * (double(m0_[j]) - m1_[j]);
      out[j] = float(c_x * sample[j] - c_d * d0 - 0.5 * c_d * d1);
    }
    return out;
  }

  Tensor m0_, m1_;  // predicted x0 of this step and of the previous one
  int lower_order_nums_ = 0;
};

inline std::unique_ptr<Scheduler> make_dpmpp_2m_scheduler(const SchedulerConfig& config) {
  return std::make_unique<DPMSolverMultistepScheduler>(config);
}

}  // namespace ldm
