// diffusers.schedulers.scheduling_pndm.PNDMScheduler (skip_prk_steps: PLMS only), SD1.5's default.
// Liu et al. 2022, "Pseudo Numerical Methods for Diffusion Models on Manifolds": a linear
// multistep (Adams-Bashforth) combination of the last eps predictions fed to the transfer
// function phi of eq. 11,
//   x_p = sqrt(a_p / a_t) x_t - (a_p - a_t) eps' / (a_t sqrt(1 - a_p) + sqrt(a_t (1 - a_t) a_p)).
// Warm-up: the first step is taken twice (the schedule lists its target twice) and the two
// eps averaged (a second-order start); then eps' = AB2, AB3, AB4:
//   (3 e1 - e2) / 2,  (23 e1 - 16 e2 + 5 e3) / 12,  (55 e1 - 59 e2 + 37 e3 - 9 e4) / 24.
#pragma once
#include <cmath>
#include <vector>

#include "ldm/schedulers/scheduler.hpp"

namespace ldm {

class PNDMScheduler : public Scheduler {
 public:
  explicit PNDMScheduler(const SchedulerConfig& config) : Scheduler(config) {
    LDM_CHECK(config.skip_prk_steps, "pndm: only skip_prk_steps = true (PLMS, as SD1.5) is supported");
    final_alpha_cumprod_ = config.set_alpha_to_one ? 1.0f : schedule_.alphas_cumprod(0);
  }
  std::string name() const override { return "pndm"; }

  // n steps -> n + 1 timesteps: [t_0, t_1, t_1, t_2, ..., t_{n-1}] (t_1 repeated for the warm-up).
  void set_timesteps(int n) override {
    std::vector<double> ts = spaced_timesteps(config_, n, TimestepStyle::Integer);  // descending
    timesteps_.clear();
    timesteps_.push_back(ts[0]);
    for (size_t i = 1; i < ts.size(); ++i) {
      timesteps_.push_back(ts[i]);
      if (i == 1) timesteps_.push_back(ts[i]);
    }
    reset_timesteps(n);
    ets_.clear();
    counter_ = 0;
    cur_sample_ = Tensor();
  }

  Tensor step(const Tensor& model_output, double t, const Tensor& sample, Generator* = nullptr) override {
    require_timesteps("step");
    check_step_shapes(model_output, sample, "pndm");
    const int stride = config_.num_train_timesteps / num_inference_steps_;
    int ti = train_index(t);
    int prev = ti - stride;
    if (counter_ != 1) {
      if (ets_.size() > 3) ets_.erase(ets_.begin());
      ets_.push_back(model_output.clone());
    } else {  // the repeated warm-up step: redo t_0 -> t_1
      prev = ti;
      ti = ti + stride;
    }

    Tensor eps = Tensor::empty(sample.shape());
    Tensor x = sample;
    const size_t n = ets_.size();
    const int64_t N = eps.numel();
    if (n == 1 && counter_ == 0) {
      eps = model_output;
      cur_sample_ = sample.clone();
    } else if (n == 1 && counter_ == 1) {
      for (int64_t i = 0; i < N; ++i) eps[i] = float((double(model_output[i]) + ets_[0][i]) / 2);
      x = cur_sample_;
      cur_sample_ = Tensor();
    } else if (n == 2) {
      const Tensor &e1 = ets_[1], &e2 = ets_[0];
      for (int64_t i = 0; i < N; ++i) eps[i] = float((3.0 * e1[i] - e2[i]) / 2);
    } else if (n == 3) {
      const Tensor &e1 = ets_[2], &e2 = ets_[1], &e3 = ets_[0];
      for (int64_t i = 0; i < N; ++i) eps[i] = float((23.0 * e1[i] - 16.0 * e2[i] + 5.0 * e3[i]) / 12);
    } else {
      const Tensor &e1 = ets_[3], &e2 = ets_[2], &e3 = ets_[1], &e4 = ets_[0];
      for (int64_t i = 0; i < N; ++i)
        eps[i] = float((1.0 / 24) * (55.0 * e1[i] - 59.0 * e2[i] + 37.0 * e3[i] - 9.0 * e4[i]));
    }
    ++counter_;
    return prev_sample(x, ti, prev, eps);
  }

  Tensor add_noise(const Tensor& original, const Tensor& noise, double t) const override {
    return add_noise_vp(original, noise, schedule_.alphas_cumprod(train_index(t)));
  }

 private:
  // PNDMScheduler._get_prev_sample: phi(x_t, eps, t -> p), eq. 11.
  Tensor prev_sample(const Tensor& sample, int t, int prev, const Tensor& model_output) const {
    const float a_t = schedule_.alphas_cumprod(t);
    const float a_p = prev >= 0 ? schedule_.alphas_cumprod(prev) : final_alpha_cumprod_;
    const float b_t = 1.0f - a_t, b_p = 1.0f - a_p;
    const double sqrt_a_t = std::sqrt(a_t), sqrt_b_t = std::sqrt(b_t);
    const double sample_coeff = std::sqrt(a_p / a_t);
    const double denom = a_t * std::sqrt(b_p) + std::sqrt(a_t * b_t * a_p);
    const double diff = a_p - a_t;
    Tensor out = Tensor::empty(sample.shape());
    for (int64_t i = 0; i < out.numel(); ++i) {
      const double x = sample[i];
      // v-prediction: convert to eps first
      const double eps = v_prediction() ? sqrt_a_t * model_output[i] + sqrt_b_t * x : double(model_output[i]);
      out[i] = float(sample_coeff * x - diff * eps / denom);
    }
    return out;
  }

  float final_alpha_cumprod_;
  std::vector<Tensor> ets_;  // eps history, oldest first (at most 4)
  int counter_ = 0;
  Tensor cur_sample_;        // x at t_0, kept for the repeated warm-up step
};

inline std::unique_ptr<Scheduler> make_pndm_scheduler(const SchedulerConfig& config) {
  return std::make_unique<PNDMScheduler>(config);
}

}  // namespace ldm
