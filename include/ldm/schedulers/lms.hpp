// diffusers.schedulers.scheduling_lms_discrete.LMSDiscreteScheduler (order 4)
// Linear multistep on the probability-flow ODE dx/dsigma = d(x, sigma) = (x - x0) / sigma
// (Karras et al. 2022, eq. 4; k-diffusion sample_lms):
//   x_{i+1} = x_i + sum_k c_k d_{i-k},  c_k = integral_{sigma_i}^{sigma_{i+1}} l_k(tau) dtau,
// l_k the Lagrange basis polynomial through sigma_i, sigma_{i-1}, ..., sigma_{i-order+1}.
// diffusers integrates with scipy.integrate.quad; l_k has degree <= 3, so 5-point
// Gauss-Legendre (exact to degree 9) gives the same coefficients.
#pragma once
#include <algorithm>
#include <cmath>
#include <deque>

#include "ldm/schedulers/scheduler.hpp"

namespace ldm {

class LMSDiscreteScheduler : public Scheduler {
 public:
  static constexpr int kOrder = 4;

  explicit LMSDiscreteScheduler(const SchedulerConfig& config) : Scheduler(config) {}
  std::string name() const override { return "lms"; }

  void set_timesteps(int n) override {
    discrete_sigmas(config_, schedule_, n, config_.use_karras_sigmas, timesteps_, sigmas_);
    reset_timesteps(n);
    derivatives_.clear();
  }
  float init_noise_sigma() const override { return k_init_noise_sigma(sigmas_, config_.timestep_spacing); }

  Tensor scale_model_input(const Tensor& sample, double t) override {
    return k_scale_model_input(sample, sigmas_[size_t(current_step_index(t))]);
  }

  Tensor step(const Tensor& model_output, double t, const Tensor& sample, Generator* = nullptr) override {
    check_step_shapes(model_output, sample, "lms");
    const int i = current_step_index(t);
    const KDenoised denoised(sigmas_[size_t(i)], v_prediction());

    // d = (x - x0) / sigma
    Tensor d = Tensor::empty(sample.shape());
    for (int64_t j = 0; j < d.numel(); ++j) d[j] = float((sample[j] - denoised(sample[j], model_output[j])) / denoised.sigma);
    derivatives_.push_back(d);
    if (int(derivatives_.size()) > kOrder) derivatives_.pop_front();

    const int order = std::min(i + 1, kOrder);
    double coeff[kOrder];
    for (int k = 0; k < order; ++k) coeff[k] = lms_coefficient(order, i, k);

    Tensor out = Tensor::empty(sample.shape());
    const int newest = int(derivatives_.size()) - 1;
    for (int64_t j = 0; j < out.numel(); ++j) {
      double x = sample[j];
      for (int k = 0; k < order; ++k) x += coeff[k] * derivatives_[size_t(newest - k)][j];
      out[j] = float(x);
    }
    ++step_index_;
    return out;
  }

  Tensor add_noise(const Tensor& original, const Tensor& noise, double t) const override {
    return add_noise_sigma(original, noise, float(sigmas_.at(size_t(add_noise_index(t)))));
  }

 private:
  // c_k of step i: the integral of l_k over [sigma_i, sigma_{i+1}] (get_lms_coefficient).
  double lms_coefficient(int order, int i, int k) const {
    auto basis = [&](double tau) {
      double prod = 1.0;
      for (int j = 0; j < order; ++j) {
        if (j == k) continue;
        prod *= (tau - sigmas_[size_t(i - j)]) / (sigmas_[size_t(i - k)] - sigmas_[size_t(i - j)]);
      }
      return prod;
    };
    // 5-point Gauss-Legendre on [a, b]
    static const double x[5] = {0.0, -0.5384693101056831, 0.5384693101056831, -0.9061798459386640,
                                0.9061798459386640};
    static const double w[5] = {0.5688888888888889, 0.4786286704993665, 0.4786286704993665, 0.2369268850561891,
                                0.2369268850561891};
    const double a = sigmas_[size_t(i)], b = sigmas_[size_t(i + 1)];
    const double half = (b - a) / 2, mid = (a + b) / 2;
    double sum = 0;
    for (int q = 0; q < 5; ++q) sum += w[q] * basis(mid + half * x[q]);
    return half * sum;
  }

  std::deque<Tensor> derivatives_;  // d_i history, oldest first (at most kOrder)
};

inline std::unique_ptr<Scheduler> make_lms_scheduler(const SchedulerConfig& config) {
  return std::make_unique<LMSDiscreteScheduler>(config);
}

}  // namespace ldm
