// Lesson 3: noise schedules (the forward process that latent diffusion trains against).
//
// Training noises a clean latent x_0 to a random level t of T = 1000:
//     x_t = sqrt(abar_t) x_0 + sqrt(1 - abar_t) eps,   abar_t = prod_{s <= t} (1 - beta_s)
// The schedule beta_t decides how fast the signal fades. DDPM (Ho et al. 2020) used betas
// linear from 1e-4 to 0.02 on pixels; SD1.5 uses "scaled_linear": sqrt(beta) linear from
// sqrt(0.00085) to sqrt(0.012), gentler, tuned for latents. The k-diffusion samplers write
// the same process as x = x_0 + sigma eps with sigma_t = sqrt((1 - abar_t) / abar_t), and the
// signal-to-noise ratio is SNR_t = abar_t / (1 - abar_t) = 1 / sigma_t^2.
// This lesson plots betas, abar, SNR and sigma for three schedules (NoiseSchedule, the code
// every sampler uses) and shows an image noised to several t with the DDPM scheduler's add_noise:
// the test pattern under DDPM's and SD1.5's schedules, and a picture of the dataset ldm-shapes
// was trained on under the cosine schedule it was trained with.
#pragma once
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <ostream>
#include <string>
#include <vector>

#include "../lesson_common.hpp"
#include "ldm/core/checkpoint.hpp"
#include "ldm/core/image.hpp"
#include "ldm/core/rng_ldm.hpp"
#include "ldm/schedulers/scheduler.hpp"
#include "ldm/viz/plot.hpp"
#include "ldm/viz/resize.hpp"
#include "ldm/viz/test_pattern.hpp"

namespace ldm::lessons::noise_schedules {

struct Options {
  std::string model;          // optional: a model whose scheduler config replaces SD1.5's default
  std::string image;          // image to noise; "" = the built-in test pattern
  int64_t size = 48;          // side of the noised images (noise compresses badly: the PNG grows fast)
  uint64_t seed = 0;          // of the noise eps
  std::vector<int> timesteps = {0, 100, 250, 500, 750, 999};
  std::string out_dir = ".";  // where the pictures go ("" = none)
};

struct Schedule {
  std::string name;
  SchedulerConfig config;
};

// DDPM's linear schedule, SD1.5's scaled_linear (or the model's own), and the cosine schedule
// of Nichol & Dhariwal 2021 (squaredcos_cap_v2), all with T = 1000.
inline std::vector<Schedule> schedules(const SchedulerConfig& sd) {
  SchedulerConfig ddpm;
  ddpm.beta_schedule = "linear";
  ddpm.beta_start = 1e-4;
  ddpm.beta_end = 0.02;
  SchedulerConfig cosine;
  cosine.beta_schedule = "squaredcos_cap_v2";
  return {{"linear (DDPM)", ddpm}, {sd.beta_schedule + " (SD1.5)", sd}, {"cosine", cosine}};
}

struct Result {
  std::vector<Schedule> schedules;
  std::vector<double> terminal_snr;  // SNR at t = T - 1, per schedule
  std::vector<std::string> pictures;
};

inline Result run(const Options& o, std::ostream& out) {
  SchedulerConfig sd;  // SD1.5's
  if (!o.model.empty()) {
    const ModelFiles files = open_model(o.model);
    if (files.scheduler_config.is_object()) sd = SchedulerConfig::from_json(files.scheduler_config);
  }
  Result r;
  r.schedules = schedules(sd);
  char line[256];

  // 1. The numbers at a few timesteps.
  out << "abar_t = fraction of the signal's variance left at step t; SNR_t = abar_t / (1 - abar_t); "
         "sigma_t = 1 / sqrt(SNR_t)\n";
  std::snprintf(line, sizeof line, "%-30s", "t");
  out << line;
  for (int t : o.timesteps) {
    std::snprintf(line, sizeof line, "%10d", t);
    out << line;
  }
  out << "\n";
  for (const auto& s : r.schedules) {
    const NoiseSchedule ns(s.config);
    const int T = s.config.num_train_timesteps;
    auto print_row = [&](const char* what, auto value) {
      std::snprintf(line, sizeof line, "%-22s %-7s", s.name.c_str(), what);
      out << line;
      for (int t : o.timesteps) {
        std::snprintf(line, sizeof line, "%10.3g", value(std::min(t, T - 1)));
        out << line;
      }
      out << "\n";
    };
    print_row("abar", [&](int t) { return double(ns.alphas_cumprod(t)); });
    print_row("SNR", [&](int t) { return double(ns.alphas_cumprod(t)) / (1.0 - double(ns.alphas_cumprod(t))); });
    print_row("sigma", [&](int t) { return double(ns.sigmas(t)); });
    const double a = ns.alphas_cumprod(T - 1);
    r.terminal_snr.push_back(a / (1 - a));
  }
  const double a_sd = r.terminal_snr[1] / (1 + r.terminal_snr[1]), a_ddpm = r.terminal_snr[0] / (1 + r.terminal_snr[0]);
  std::snprintf(line, sizeof line, "\nAt t = 999 SD1.5's schedule keeps abar = %.4f: sqrt(abar) = %.3f of the signal\n", a_sd,
                std::sqrt(a_sd));
  out << line << "is still there, so training never shows the model pure noise, while sampling starts from it\n"
      << "(the 'non-zero terminal SNR' of Lin et al. 2023).";
  std::snprintf(line, sizeof line, " DDPM's linear schedule leaves abar = %.1e.\n", a_ddpm);
  out << line;
  if (o.out_dir.empty()) return r;
  std::filesystem::create_directories(o.out_dir);

  // 2. Plots: beta, abar, SNR and sigma against t, one curve per schedule.
  std::vector<viz::Series> beta, abar, snr, sigma;
  for (const auto& s : r.schedules) {
    const NoiseSchedule ns(s.config);
    viz::Series b{s.name, {}, {}}, a{s.name, {}, {}}, q{s.name, {}, {}}, g{s.name, {}, {}};
    for (int t = 0; t < s.config.num_train_timesteps; ++t) {
      const double ac = ns.alphas_cumprod(t);
      for (auto* v : {&b, &a, &q, &g}) v->x.push_back(t);
      b.y.push_back(ns.betas(t)), a.y.push_back(ac), q.y.push_back(ac / (1 - ac)), g.y.push_back(ns.sigmas(t));
    }
    beta.push_back(b), abar.push_back(a), snr.push_back(q), sigma.push_back(g);
  }
  auto opts = [](const char* title, bool log_y, viz::Corner legend) {
    viz::PlotOptions p;
    p.width = 440, p.height = 300, p.title = title, p.x_label = "timestep t", p.log_y = log_y, p.legend = legend;
    return p;
  };
  viz::PlotOptions pb = opts("beta_t", false, viz::Corner::TopLeft);
  pb.y_max = 0.02;  // the cosine schedule's last betas reach its 0.999 cap; clip the axis at DDPM's end
  r.pictures.push_back(o.out_dir + "/lesson03_schedules.png");
  viz::grid({viz::plot(beta, pb), viz::plot(abar, opts("alphas_cumprod (abar_t)", false, viz::Corner::TopRight)),
             viz::plot(snr, opts("SNR_t (log scale)", true, viz::Corner::TopRight)),
             viz::plot(sigma, opts("sigma_t (log scale)", true, viz::Corner::BottomRight))},
            {}, 2)
      .save(r.pictures.back());

  // 3. An image noised to each timestep, for the first two schedules.
  Tensor x0 = o.image.empty() ? viz::test_pattern(o.size, o.size) : viz::center_crop_resize(read_image(o.image), o.size);
  x0.vec().array() = x0.vec().array() * 2.0f - 1.0f;  // [-1, 1], as images and latents are scaled
  LdmGenerator gen(o.seed);
  const Tensor eps = gen.randn(x0.shape());  // the same noise at every t: only the mix changes
  std::vector<viz::Canvas> tiles;
  std::vector<std::string> caps;
  const int scale = std::max<int>(1, int(112 / o.size));
  for (size_t k = 0; k < 2; ++k) {
    auto ddpm = make_scheduler("ddpm", r.schedules[k].config);
    for (int t : o.timesteps) {
      Tensor xt = ddpm->add_noise(x0, eps, double(t));  // sqrt(abar) x0 + sqrt(1 - abar) eps
      xt.vec().array() = (xt.vec().array() + 1.0f) * 0.5f;
      tiles.push_back(viz::picture(xt, scale));
      const double a = NoiseSchedule(r.schedules[k].config).alphas_cumprod(t);
      std::snprintf(line, sizeof line, "%s t=%d abar=%.2g", k == 0 ? "DDPM" : "SD", t, a);
      caps.push_back(line);
    }
  }
  {  // A dataset picture under the cosine schedule, ldm-shapes' own.
    std::string label;
    Tensor p = shape_picture({1, 0, shapes::kCircle, true, 0}, nullptr, &label);  // large red circle, top left, on black
    if (p.dim(2) != o.size) p = viz::center_crop_resize(p, o.size);
    p.vec().array() = p.vec().array() * 2.0f - 1.0f;
    const Tensor eps_p = gen.randn(p.shape());
    auto ddpm = make_scheduler("ddpm", r.schedules[2].config);
    for (int t : o.timesteps) {
      Tensor xt = ddpm->add_noise(p, eps_p, double(t));
      xt.vec().array() = (xt.vec().array() + 1.0f) * 0.5f;
      tiles.push_back(viz::picture(xt, scale));
      std::snprintf(line, sizeof line, "cosine t=%d abar=%.2g", t, NoiseSchedule(r.schedules[2].config).alphas_cumprod(t));
      caps.push_back(line);
    }
  }
  r.pictures.push_back(o.out_dir + "/lesson03_noising.png");
  viz::grid(tiles, caps, int(o.timesteps.size())).save(r.pictures.back());
  for (const auto& p : r.pictures) out << "Wrote " << p << "\n";
  return r;
}

}  // namespace ldm::lessons::noise_schedules
