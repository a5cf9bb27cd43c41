// The noise schedule every sampler shares: the scheduler config of a diffusers
// scheduler_config.json, betas -> alphas_cumprod -> sigmas, the spacing of the inference
// timesteps, Karras sigmas and sigma -> t. Mirrors the code repeated at the top of each
// diffusers scheduler (diffusers.schedulers.scheduling_ddpm.DDPMScheduler.__init__,
// EulerDiscreteScheduler.set_timesteps / _convert_to_karras / _sigma_to_t, ...).
//
// Forward process (Ho et al. 2020, eq. 4):  x_t = sqrt(abar_t) x_0 + sqrt(1 - abar_t) eps,
// abar_t = prod_{s<=t} (1 - beta_s). The k-diffusion samplers use the same process in the
// "sigma" parametrisation x = x_0 + sigma eps with sigma_t = sqrt((1 - abar_t) / abar_t).
//
// Precision follows diffusers: betas, alphas_cumprod and the training sigmas are float32
// torch tensors there, so they are float32 here; timestep spacing, interpolation and Karras
// sigmas are float64 numpy code there, so double here, cast to float32 where diffusers casts.
#pragma once
#include <algorithm>
#include <cmath>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>
#include <xtensor/xmath.hpp>
#include <xtensor/xtensor.hpp>

#include "ldm/core/config_json.hpp"
#include "ldm/core/error.hpp"
#include "ldm/core/tensor.hpp"

namespace ldm {

// Defaults are the SD1.5 scheduler config (what a user gets with
// XScheduler.from_config(pipe.scheduler.config) for runwayml/stable-diffusion-v1-5).
struct SchedulerConfig {
  int num_train_timesteps = 1000;               // T, steps of the training forward process
  double beta_start = 0.00085;                  // beta at t = 0
  double beta_end = 0.012;                      // beta at t = T - 1
  std::string beta_schedule = "scaled_linear";  // "scaled_linear" (SD) | "linear" | "squaredcos_cap_v2"
  std::vector<double> trained_betas;            // when given, used instead of beta_schedule
  int steps_offset = 1;                         // added to "leading" timesteps: 901, 801, ..., 1
  bool set_alpha_to_one = false;                // DDIM/PNDM: abar "before" t = 0 is abar_0, not 1
  bool skip_prk_steps = true;                   // PNDM: PLMS steps only (Runge-Kutta warm-up not supported)
  bool clip_sample = false;                     // DDPM/DDIM: clamp the predicted x_0
  double clip_sample_range = 1.0;               //   to [-range, range]
  std::string prediction_type = "epsilon";      // "epsilon" (SD1.x) | "v_prediction" (SD2.x 768)
  std::string timestep_spacing = "leading";     // "leading" | "trailing" | "linspace" (arXiv 2305.08891, table 2)
  bool use_karras_sigmas = false;               // LMS/Euler/Heun/DPM++/UniPC: Karras et al. 2022 sigmas, rho 7

  // Fills the fields present in a diffusers scheduler_config.json on top of `base`; other keys
  // (_class_name, _diffusers_version, solver options at their defaults) are ignored. `what`
  // names the file in errors.
  static SchedulerConfig from_json(const nlohmann::json& j, SchedulerConfig base,
                                   const std::string& what = "scheduler config");
  static SchedulerConfig from_json(const nlohmann::json& j);  // on top of the SD1.5 defaults

  // Every field within its range: betas are probabilities in (0, 1), timesteps a sane count.
  void validate(const std::string& what = "scheduler config") const {
    check_config_range(what, "num_train_timesteps", num_train_timesteps, 2, 100000);
    check_config_range(what, "steps_offset", steps_offset, 0, num_train_timesteps - 1);
    check_config_range(what, "clip_sample_range", clip_sample_range, 1e-6, 1e6);
    LDM_CHECK(trained_betas.empty() || int64_t(trained_betas.size()) == num_train_timesteps, what, ": ",
              trained_betas.size(), " trained_betas for num_train_timesteps ", num_train_timesteps);
    if (trained_betas.empty()) {
      check_config_range(what, "beta_start", beta_start, 1e-12, 1.0 - 1e-6);
      check_config_range(what, "beta_end", beta_end, beta_start, 1.0 - 1e-6);
    } else {
      check_config_range(what, "trained_betas", trained_betas, 1e-12, 1.0 - 1e-6);
    }
    LDM_CHECK(beta_schedule == "scaled_linear" || beta_schedule == "linear" || beta_schedule == "squaredcos_cap_v2",
              what, ": beta_schedule \"", beta_schedule,
              "\" is not supported (use scaled_linear, linear or squaredcos_cap_v2)");
    LDM_CHECK(prediction_type == "epsilon" || prediction_type == "v_prediction", what, ": prediction_type \"",
              prediction_type, "\" is not supported (use epsilon or v_prediction)");
    LDM_CHECK(timestep_spacing == "leading" || timestep_spacing == "trailing" || timestep_spacing == "linspace", what,
              ": timestep_spacing \"", timestep_spacing, "\" is not supported (use leading, trailing or linspace)");
  }
};

inline SchedulerConfig SchedulerConfig::from_json(const nlohmann::json& j, SchedulerConfig c, const std::string& what) {
  LDM_CHECK(j.is_object(), what, ": expected a JSON object, got ", j.type_name());
  auto read = [&](const char* key, auto& field) { read_config(j, key, field, what); };
  read("num_train_timesteps", c.num_train_timesteps);
  read("beta_start", c.beta_start);
  read("beta_end", c.beta_end);
  read("beta_schedule", c.beta_schedule);
  read("trained_betas", c.trained_betas);
  read("steps_offset", c.steps_offset);
  read("set_alpha_to_one", c.set_alpha_to_one);
  read("skip_prk_steps", c.skip_prk_steps);
  read("clip_sample", c.clip_sample);
  read("clip_sample_range", c.clip_sample_range);
  read("prediction_type", c.prediction_type);
  read("timestep_spacing", c.timestep_spacing);
  read("use_karras_sigmas", c.use_karras_sigmas);
  c.validate(what);
  return c;
}

inline SchedulerConfig SchedulerConfig::from_json(const nlohmann::json& j) { return from_json(j, SchedulerConfig{}); }

// ---- numpy-exact 1-D helpers (the spacing code is numpy; its rounding decides timesteps)
namespace np {

// np.linspace(start, stop, num): i * step + start, last element exactly stop.
inline std::vector<double> linspace(double start, double stop, int num) {
  std::vector<double> y(size_t(std::max(num, 0)));
  const double step = num > 1 ? (stop - start) / double(num - 1) : 0.0;
  for (int i = 0; i < num; ++i) y[size_t(i)] = double(i) * step + start;
  if (num > 1) y.back() = stop;
  return y;
}

// np.arange(start, stop, step) for floats: ceil((stop - start) / step) values start + i * delta,
// delta = (start + step) - start as numpy's fill computes it.
inline std::vector<double> arange(double start, double stop, double step) {
  const double len = std::ceil((stop - start) / step);
  std::vector<double> y(size_t(std::max(len, 0.0)));
  const double delta = (start + step) - start;
  for (size_t i = 0; i < y.size(); ++i) y[i] = i == 0 ? start : start + double(i) * delta;
  return y;
}

// np.round: half to even.
inline double round(double x) { return std::nearbyint(x); }

// np.interp(x, arange(len(fp)), fp) on the integer grid 0, 1, ..., n-1.
template <typename T>
double interp(double x, const xt::xtensor<T, 1>& fp) {
  const int64_t n = int64_t(fp.size());
  if (x <= 0) return double(fp(0));
  if (x >= double(n - 1)) return double(fp(n - 1));
  const int64_t j = int64_t(std::floor(x));
  const double slope = double(fp(j + 1)) - double(fp(j));
  return slope * (x - double(j)) + double(fp(j));
}

inline double to_f32(double x) { return double(float(x)); }

}  // namespace np

// ---- the training schedule, t = 0 .. T-1
struct NoiseSchedule {
  xt::xtensor<float, 1> betas;           // beta_t
  xt::xtensor<float, 1> alphas_cumprod;  // abar_t = prod (1 - beta_s)
  xt::xtensor<float, 1> sigmas;          // sqrt((1 - abar_t) / abar_t), increasing in t
  xt::xtensor<float, 1> log_sigmas;

  explicit NoiseSchedule(const SchedulerConfig& c) {
    c.validate();
    const int T = c.num_train_timesteps;
    betas = xt::xtensor<float, 1>::from_shape({size_t(T)});
    if (!c.trained_betas.empty()) {
      for (int i = 0; i < T; ++i) betas(i) = float(c.trained_betas[size_t(i)]);
    } else if (c.beta_schedule == "linear") {
      betas = torch_linspace_f32(c.beta_start, c.beta_end, T);
    } else if (c.beta_schedule == "scaled_linear") {
      // specific to latent diffusion: linear in sqrt(beta)
      betas = xt::square(torch_linspace_f32(std::sqrt(c.beta_start), std::sqrt(c.beta_end), T));
    } else {  // squaredcos_cap_v2: Nichol & Dhariwal 2021, cosine abar, beta capped at 0.999
      auto alpha_bar = [](double t) { return std::pow(std::cos((t + 0.008) / 1.008 * M_PI / 2), 2.0); };
      for (int i = 0; i < T; ++i)
        betas(i) = float(std::min(1 - alpha_bar(double(i + 1) / T) / alpha_bar(double(i) / T), 0.999));
    }
    // torch.cumprod on the CPU accumulates in double and rounds each entry to float.
    alphas_cumprod = xt::xtensor<float, 1>::from_shape({size_t(T)});
    double prod = 1.0;
    for (int i = 0; i < T; ++i) {
      prod *= double(1.0f - betas(i));
      alphas_cumprod(i) = float(prod);
    }
    // Every beta may be in (0, 1) and yet their product vanish (beta_end 0.8): sigma_max then is
    // infinite and every sampler computes NaN. SD1.5 ends at 4.7e-3, a cosine schedule near 1e-9.
    LDM_CHECK(alphas_cumprod(T - 1) >= 1e-20f, "scheduler config: the betas (", c.trained_betas.empty() ?
              c.beta_schedule + " from beta_start " + std::to_string(c.beta_start) + " to beta_end " +
              std::to_string(c.beta_end) : std::string("trained_betas"), ") make alphas_cumprod ",
              alphas_cumprod(T - 1), " at the last timestep: no noise level that large can be computed; use smaller betas");
    sigmas = xt::sqrt((1.0f - alphas_cumprod) / alphas_cumprod);
    log_sigmas = xt::log(sigmas);
  }

  int size() const { return int(betas.size()); }

  // torch.linspace(start, end, steps, dtype=float32): the first half counts up from start,
  // the second half down from end.
  static xt::xtensor<float, 1> torch_linspace_f32(double start_d, double end_d, int steps) {
    const float start = float(start_d), end = float(end_d);
    const float step = (end - start) / float(steps - 1);
    xt::xtensor<float, 1> y = xt::xtensor<float, 1>::from_shape({size_t(steps)});
    for (int i = 0; i < steps; ++i) y(i) = i < steps / 2 ? start + step * float(i) : end - step * float(steps - i - 1);
    return y;
  }
};

// ---- inference timesteps
// How a diffusers scheduler family spaces its timesteps.
enum class TimestepStyle {
  Integer,     // DDPM, DDIM, PNDM: "linspace" rounded to integers
  Fractional,  // LMS, Euler, Euler a, Heun: "linspace" keeps fractions (float32)
  Solver,      // DPM-Solver++, UniPC: n + 1 points with the last (t = 0) dropped
};

// The n inference timesteps, descending, as set_timesteps builds them.
inline std::vector<double> spaced_timesteps(const SchedulerConfig& c, int n, TimestepStyle style) {
  const int T = c.num_train_timesteps;
  LDM_CHECK(n >= 1 && n <= T, "set_timesteps: num_inference_steps must be in [1, ", T, "] (num_train_timesteps), got ",
            n);
  const bool solver = style == TimestepStyle::Solver;
  const int m = solver ? n + 1 : n;  // points before the solver's drop of t = 0
  std::vector<double> ts;
  if (c.timestep_spacing == "linspace") {
    ts = np::linspace(0, T - 1, m);
    std::reverse(ts.begin(), ts.end());
    for (double& t : ts) t = style == TimestepStyle::Fractional ? np::to_f32(t) : np::round(t);
  } else if (c.timestep_spacing == "leading") {
    const int ratio = T / m;
    for (int i = m - 1; i >= 0; --i) ts.push_back(double(i * ratio));
    for (double& t : ts) t += c.steps_offset;
    // Few training timesteps (a small model's config) can push the first one past the last.
    LDM_CHECK(ts.front() <= T - 1, "set_timesteps: ", n, " steps with \"leading\" spacing and steps_offset ",
              c.steps_offset, " start at timestep ", ts.front(), ", past the last training timestep ", T - 1,
              " (diffusers would index past its schedule); use fewer steps, steps_offset 0 or \"trailing\" spacing");
  } else {  // trailing
    ts = np::arange(T, 0, -double(T) / n);
    for (double& t : ts) t = np::round(t) - 1;
    return ts;
  }
  if (solver) ts.pop_back();
  return ts;
}

// sigma -> fractional t, linear in log sigma between the two neighbouring training sigmas
// (EulerDiscreteScheduler._sigma_to_t).
inline double sigma_to_t(double sigma, const xt::xtensor<float, 1>& log_sigmas) {
  const double log_sigma = std::log(std::max(sigma, 1e-10));
  const int64_t n = int64_t(log_sigmas.size());
  int64_t low = 0;  // last index with log_sigmas[i] <= log_sigma (0 if none)
  for (int64_t i = 0; i < n; ++i)
    if (log_sigma - double(log_sigmas(i)) >= 0) low = i;
  low = std::min(low, n - 2);
  const float lo = log_sigmas(low), hi = log_sigmas(low + 1);
  double w = (double(lo) - log_sigma) / double(lo - hi);
  w = std::clamp(w, 0.0, 1.0);
  return (1 - w) * double(low) + w * double(low + 1);
}

// Karras et al. 2022, eq. 5: sigma_i = (max^(1/rho) + i/(n-1) (min^(1/rho) - max^(1/rho)))^rho.
inline std::vector<double> karras_sigmas(double sigma_min, double sigma_max, int n, double rho = 7.0) {
  const std::vector<double> ramp = np::linspace(0, 1, n);
  const double min_inv = std::pow(sigma_min, 1 / rho), max_inv = std::pow(sigma_max, 1 / rho);
  std::vector<double> s(ramp.size());
  for (size_t i = 0; i < s.size(); ++i) s[i] = std::pow(max_inv + ramp[i] * (min_inv - max_inv), rho);
  return s;
}

// Timesteps and sigmas (n + 1, the last 0) of the k-diffusion samplers
// (EulerDiscreteScheduler.set_timesteps; LMS, Euler a and Heun build the same).
// Karras sigmas span the interpolated range; t is recovered from each sigma.
inline void discrete_sigmas(const SchedulerConfig& c, const NoiseSchedule& s, int n, bool karras,
                            std::vector<double>& timesteps, std::vector<double>& sigmas) {
  timesteps = spaced_timesteps(c, n, TimestepStyle::Fractional);
  sigmas.clear();
  for (double t : timesteps) sigmas.push_back(np::interp(t, s.sigmas));
  if (karras) {
    sigmas = karras_sigmas(sigmas.back(), sigmas.front(), n);
    for (size_t i = 0; i < sigmas.size(); ++i) timesteps[i] = sigma_to_t(sigmas[i], s.log_sigmas);
  }
  sigmas.push_back(0.0);
  for (double& v : sigmas) v = np::to_f32(v);
  for (double& t : timesteps) t = np::to_f32(t);
}

// Timesteps (integers) and sigmas (n + 1, the last 0: final_sigmas_type "zero") of the
// multistep solvers (DPMSolverMultistepScheduler.set_timesteps; UniPC builds the same).
// Karras sigmas span the whole training range; t is sigma_to_t rounded.
inline void solver_sigmas(const SchedulerConfig& c, const NoiseSchedule& s, int n, std::vector<double>& timesteps,
                          std::vector<double>& sigmas) {
  timesteps = spaced_timesteps(c, n, TimestepStyle::Solver);
  sigmas.clear();
  if (c.use_karras_sigmas) {
    sigmas = karras_sigmas(double(s.sigmas(0)), double(s.sigmas(s.size() - 1)), n);
    timesteps.resize(sigmas.size());
    for (size_t i = 0; i < sigmas.size(); ++i) timesteps[i] = np::round(sigma_to_t(sigmas[i], s.log_sigmas));
  } else {
    for (double t : timesteps) sigmas.push_back(np::interp(t, s.sigmas));
  }
  sigmas.push_back(0.0);
  for (double& v : sigmas) v = np::to_f32(v);
  // The solvers divide by the step in lambda = log(alpha / sigma): a noise level met twice (more
  // steps than rounding leaves distinct timesteps, e.g. 3 of 3 training timesteps with "linspace")
  // makes it 0 and every later latent NaN, in diffusers too.
  for (size_t i = 0; i + 1 < sigmas.size(); ++i)
    LDM_CHECK(sigmas[i] > sigmas[i + 1], "set_timesteps: ", n, " steps with \"", c.timestep_spacing,
              "\" spacing over ", c.num_train_timesteps, " training timesteps reach timestep ", timesteps[i],
              " twice; the multistep solvers need distinct noise levels: use fewer steps",
              c.use_karras_sigmas ? "" : " or another timestep_spacing");
}

// ---- the k-diffusion samplers (LMS, Euler, Euler a, Heun) in the sigma parametrisation
// Initial latent scale: sigma_max, or sqrt(sigma_max^2 + 1) for "leading" spacing, whose first
// timestep is not T - 1 (float32, as EulerDiscreteScheduler.init_noise_sigma).
inline float k_init_noise_sigma(const std::vector<double>& sigmas, const std::string& timestep_spacing) {
  if (sigmas.empty()) return 1.0f;
  const float max_sigma = float(*std::max_element(sigmas.begin(), sigmas.end()));
  if (timestep_spacing == "linspace" || timestep_spacing == "trailing") return max_sigma;
  return std::sqrt(max_sigma * max_sigma + 1.0f);
}

// U-Net input x / sqrt(sigma^2 + 1): back to the variance-preserving scale the U-Net was trained on.
inline Tensor k_scale_model_input(const Tensor& sample, double sigma_d) {
  const float sigma = float(sigma_d);
  const double scale = std::sqrt(sigma * sigma + 1.0f);
  Tensor out = Tensor::empty(sample.shape());
  for (int64_t i = 0; i < out.numel(); ++i) out[i] = float(sample[i] / scale);
  return out;
}

// x0 predicted from the model output at noise level sigma (k-diffusion's "denoised"):
// epsilon: x - sigma eps;  v: c_out v + c_skip x with c_out = -sigma / sqrt(sigma^2 + 1), c_skip = 1 / (sigma^2 + 1).
struct KDenoised {
  KDenoised(double sigma_d, bool v_prediction) : sigma(float(sigma_d)), v(v_prediction) {
    c_out = -sigma / std::sqrt(sigma * sigma + 1.0f);
    skip_den = sigma * sigma + 1.0f;
  }
  double operator()(double x, double model_output) const {
    return v ? model_output * c_out + x / skip_den : x - double(sigma) * model_output;
  }
  float sigma;
  bool v;
  double c_out = 0, skip_den = 1;
};

// ---- the multistep solvers (DPM++, UniPC): VP quantities of the sigmas
// alpha_t, sigma_t (VP) and lambda_t = log(alpha_t / sigma_t) of a sigma, float32 as diffusers.
struct VpLevel {
  explicit VpLevel(double sigma_d) {
    const float sigma = float(sigma_d);
    alpha = 1.0f / std::sqrt(sigma * sigma + 1.0f);
    sigma_t = sigma * alpha;
    lambda = std::log(alpha) - std::log(sigma_t);
  }
  float alpha, sigma_t, lambda;
};

// Model output -> predicted x0 at a level (convert_model_output for data-prediction solvers).
inline Tensor vp_predict_x0(const Tensor& model_output, const Tensor& sample, const VpLevel& l, bool v_prediction) {
  Tensor x0 = Tensor::empty(sample.shape());
  for (int64_t i = 0; i < x0.numel(); ++i) {
    const double x = sample[i], m = model_output[i];
    x0[i] = float(v_prediction ? double(l.alpha) * x - double(l.sigma_t) * m : (x - double(l.sigma_t) * m) / l.alpha);
  }
  return x0;
}

// ---- forward process, one timestep for the whole batch
// x_t = sqrt(abar) x_0 + sqrt(1 - abar) eps  (DDPM/DDIM/PNDM add_noise)
inline Tensor add_noise_vp(const Tensor& original, const Tensor& noise, float alpha_cumprod) {
  check_shape(noise, original.shape(), "add_noise: noise");
  const double a = std::sqrt(alpha_cumprod), b = std::sqrt(1.0f - alpha_cumprod);
  Tensor out = Tensor::empty(original.shape());
  for (int64_t i = 0; i < out.numel(); ++i) out[i] = float(a * original[i] + b * noise[i]);
  return out;
}

// x_t = alpha_t x0 + sigma_t eps at the level of sigmas[index] (DPMSolverMultistepScheduler.add_noise).
inline Tensor add_noise_vp_sigma(const Tensor& original, const Tensor& noise, double sigma) {
  check_shape(noise, original.shape(), "add_noise: noise");
  const VpLevel l(sigma);
  Tensor out = Tensor::empty(original.shape());
  for (int64_t i = 0; i < out.numel(); ++i) out[i] = float(double(l.alpha) * original[i] + double(l.sigma_t) * noise[i]);
  return out;
}

// x = x_0 + sigma eps  (Euler/LMS/Heun add_noise)
inline Tensor add_noise_sigma(const Tensor& original, const Tensor& noise, float sigma) {
  check_shape(noise, original.shape(), "add_noise: noise");
  Tensor out = Tensor::empty(original.shape());
  for (int64_t i = 0; i < out.numel(); ++i) out[i] = float(original[i] + double(sigma) * noise[i]);
  return out;
}

}  // namespace ldm
