// diffusers.schedulers.scheduling_unipc_multistep.UniPCMultistepScheduler with its defaults:
// solver_order 2, predict_x0, solver_type "bh2", lower_order_final, final_sigmas_type "zero".
// Zhao et al. 2023, "UniPC": a predictor (UniP) to the next level and, once the model has been
// evaluated there, a corrector (UniC) of that same sample, so each step gains one order at no
// extra model call. In the data-prediction form, with lambda = log(alpha / sigma),
// h = lambda_t - lambda_s0, hh = -h and B(h) = e^{hh} - 1 (bh2):
//   x_t = (s_t / s_s0) x - alpha_t (e^{hh} - 1) m0 - alpha_t B(h) sum_k rho_k D_k
//   D_k = (m_k - m0) / r_k,  r_k = (lambda_sk - lambda_s0) / h
// UniP-2 takes rho = 1/2; UniC-p solves R rho = b for the Vandermonde R of the r_k (and 1)
// and b_k from the phi functions (Algorithm 2 and eqs. 8-9 of the paper), UniC-1 takes 1/2.
#pragma once
#include <algorithm>
#include <cmath>

#include "ldm/schedulers/scheduler.hpp"

namespace ldm {

class UniPCMultistepScheduler : public Scheduler {
 public:
  static constexpr int kSolverOrder = 2;

  explicit UniPCMultistepScheduler(const SchedulerConfig& config) : Scheduler(config) {}
  std::string name() const override { return "unipc"; }

  void set_timesteps(int n) override {
    solver_sigmas(config_, schedule_, n, timesteps_, sigmas_);
    reset_timesteps(n);
    m0_ = m1_ = last_sample_ = Tensor();
    lower_order_nums_ = 0;
    this_order_ = 0;
  }

  Tensor step(const Tensor& model_output, double t, const Tensor& sample, Generator* = nullptr) override {
    check_step_shapes(model_output, sample, "unipc");
    require_timesteps("step");
    if (step_index_ < 0) step_index_ = begin_index_ >= 0 ? begin_index_ : solver_index_for_timestep(t);
    const int i = current_step_index(t);
    const int n = int(timesteps_.size());

    const Tensor x0 = vp_predict_x0(model_output, sample, VpLevel(sigmas_[size_t(i)]), v_prediction());
    // UniC: correct the sample the last predictor produced, now that its x0 is known
    const Tensor x = i > 0 && last_sample_.defined() ? corrector(x0, last_sample_, sample, i, this_order_) : sample;

    m1_ = m0_;
    m0_ = x0;
    // warm up from first order; lower_order_final: first order again for the last step
    this_order_ = std::min({kSolverOrder, n - i, lower_order_nums_ + 1});
    last_sample_ = x;
    Tensor out = predictor(x, i, this_order_);
    if (lower_order_nums_ < kSolverOrder) ++lower_order_nums_;
    ++step_index_;
    return out;
  }

  Tensor add_noise(const Tensor& original, const Tensor& noise, double t) const override {
    require_timesteps("add_noise");
    const int i = begin_index_ < 0 ? solver_index_for_timestep(t) : (step_index_ >= 0 ? step_index_ : begin_index_);
    return add_noise_vp_sigma(original, noise, sigmas_.at(size_t(i)));
  }

 private:
  // UniP-order from sigmas[i] to sigmas[i + 1] (multistep_uni_p_bh_update).
  Tensor predictor(const Tensor& x, int i, int order) const {
    const VpLevel t(sigmas_[size_t(i + 1)]), s0(sigmas_[size_t(i)]);
    const float h = t.lambda - s0.lambda, hh = -h;
    const float h_phi_1 = std::expm1(hh), B_h = std::expm1(hh);
    float rk = 1.0f;
    if (order == 2) rk = (VpLevel(sigmas_[size_t(i - 1)]).lambda - s0.lambda) / h;
    const double c_x = t.sigma_t / s0.sigma_t, c_m0 = t.alpha * h_phi_1, c_res = t.alpha * B_h;
    Tensor out = Tensor::empty(x.shape());
    for (int64_t j = 0; j < out.numel(); ++j) {
      const double res = order == 2 ? 0.5 * ((double(m1_[j]) - m0_[j]) / rk) : 0.0;  // rho_p = 1/2
      out[j] = float(c_x * x[j] - c_m0 * m0_[j] - c_res * res);
    }
    return out;
  }

  // UniC-order of this_sample (reached from last_sample at sigmas[i - 1]) with its x0 model_t
  // (multistep_uni_c_bh_update). m0_/m1_ still hold the previous steps' x0.
  Tensor corrector(const Tensor& model_t, const Tensor& last_sample, const Tensor& this_sample, int i,
                   int order) const {
    const VpLevel t(sigmas_[size_t(i)]), s0(sigmas_[size_t(i - 1)]);
    const float h = t.lambda - s0.lambda, hh = -h;
    const float h_phi_1 = std::expm1(hh), B_h = std::expm1(hh);

    float rk = 1.0f;  // r_1 for order 2
    if (order == 2) rk = (VpLevel(sigmas_[size_t(i - 2)]).lambda - s0.lambda) / h;
    // b_k = h_phi_k k! / B(h),  h_phi_{k+1} = h_phi_k / hh - 1 / (k+1)!
    float b[kSolverOrder];
    float h_phi_k = h_phi_1 / hh - 1.0f;
    int factorial = 1;
    for (int k = 1; k <= order; ++k) {
      b[k - 1] = h_phi_k * float(factorial) / B_h;
      factorial *= k + 1;
      h_phi_k = h_phi_k / hh - 1.0f / float(factorial);
    }
    // rho_c: [1/2] for order 1; else solve [[1, 1], [r_1, 1]] rho = b
    double rho_d = 0.0, rho_t = 0.5;
    if (order == 2) {
      const double det = 1.0 - double(rk);
      rho_d = double(float((double(b[0]) - double(b[1])) / det));
      rho_t = double(float((double(b[1]) - double(rk) * b[0]) / det));
    }
    const double c_x = t.sigma_t / s0.sigma_t, c_m0 = t.alpha * h_phi_1, c_res = t.alpha * B_h;
    Tensor out = Tensor::empty(this_sample.shape());
    for (int64_t j = 0; j < out.numel(); ++j) {
      const double m0 = m0_[j];
      const double corr = order == 2 ? rho_d * ((double(m1_[j]) - m0) / rk) : 0.0;
      const double d1_t = double(model_t[j]) - m0;
      out[j] = float(c_x * last_sample[j] - c_m0 * m0 - c_res * (corr + rho_t * d1_t));
    }
    return out;
  }

  Tensor m0_, m1_;     // predicted x0 of the last two steps (newest first)
  Tensor last_sample_; // the sample the last predictor started from
  int lower_order_nums_ = 0;
  int this_order_ = 0;  // order of the last predictor, used by the next corrector
};

inline std::unique_ptr<Scheduler> make_unipc_scheduler(const SchedulerConfig& config) {
  return std::make_unique<UniPCMultistepScheduler>(config);
}

}  // namespace ldm
