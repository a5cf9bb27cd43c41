// Lesson 10: the sampling loop, step by step (beyond course day 76, which names the loop but
// never opens it).
//
// Sampling starts from pure noise z_T and calls the U-Net once per step (twice with guidance).
// At each step t the model's output says, in effect, "this is the clean latent I think is in
// here": the predicted x0. For a model that predicts the noise eps (SD1.5), in DDPM units
// (x_t = sqrt(abar) x0 + sqrt(1 - abar) eps):
//     x0 = (x_t - sqrt(1 - abar) eps) / sqrt(abar)
// and for one that predicts v = sqrt(abar) eps - sqrt(1 - abar) x0 (ldm-shapes):
//     x0 = sqrt(abar) x_t - sqrt(1 - abar) v
// The sampler then moves x_t part of the way towards that guess (DDIM: to the point of the
// same x0 at the next, lower noise level; Euler: a straight step along dx/dsigma). This lesson
// writes the loop out by hand, checks that it gives the pipeline's own latents, and shows x_t
// and the decoded x0 at every step for DDIM and Euler: the picture forming from noise. The
// shapes analyser says from which step on the predicted x0 already shows what the prompt says.
#pragma once
#include <algorithm>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <ostream>
#include <string>
#include <vector>

#include "../lesson_common.hpp"
#include "ldm/core/image.hpp"
#include "ldm/core/rng.hpp"
#include "ldm/core/shared_dir.hpp"
#include "ldm/data/shapes_analyser.hpp"
#include "ldm/guidance.hpp"
#include "ldm/load.hpp"
#include "ldm/pipeline.hpp"
#include "ldm/viz/colormap.hpp"
#include "ldm/viz/plot.hpp"

namespace ldm::lessons::sampling_loop {

struct Options {
  std::string model;      // "" = models/ldm-shapes; or a diffusers folder, a .safetensors file, synthetic:sd15
  std::string tokenizer;  // "" = the model's tokenizer/, else ../shared/clip-tokenizer
  std::string prompt = "a large red circle at the top left on a black background";
  std::vector<std::string> schedulers{"ddim", "euler"};
  int steps = 20;
  float guidance = 0;         // w; 0 = the model's recommendation (generation_defaults.json), else 7.5
  int size = 0;               // image side; 0 = the model's own, at most 128
  uint64_t seed = 42;         // the starting noise z_T, the same for every scheduler
  int columns = 8;            // steps shown in the strip (evenly spaced, the last included)
  std::string out_dir = ".";  // where the pictures go ("" = none)
};

struct Trajectory {
  std::string scheduler;
  std::vector<double> timesteps, abar;  // per step: t and alphas_cumprod at t
  std::vector<Tensor> x_t;              // the U-Net's input at each step, DDPM units [1, 4, h, w]
  std::vector<Tensor> x0;               // the predicted clean latent at each step [1, 4, h, w]
  std::vector<Tensor> x0_images;        // decode(x0) [1, 3, H, W] in [0, 1]
  std::vector<double> x0_psnr;          // decode(x0) against the final picture, dB
  std::vector<int> x0_right;            // 1: the analyser reads everything the prompt says in decode(x0)
  int settled = -1;                     // first step from which x0_right stays 1 (-1: never)
  Tensor latents, image;                // the loop's final latents, and the picture [1, 3, H, W]
  double max_diff_vs_pipeline = 0;      // max |loop - generate()| over the final latents
};

struct Result {
  float guidance = 0;
  std::vector<Trajectory> runs;
  std::vector<std::string> pictures;
};

// The clean latent the model's output implies, from x_t in DDPM units at alphas_cumprod abar.
inline Tensor predicted_x0(const Tensor& model_output, const Tensor& x_t, double abar, const std::string& prediction_type) {
  const float a = float(std::sqrt(abar)), b = float(std::sqrt(1.0 - abar));
  Tensor x0 = Tensor::empty(x_t.shape());
  if (prediction_type == "v_prediction")
    x0.vec() = a * x_t.vec() - b * model_output.vec();
  else
    x0.vec() = (x_t.vec() - b * model_output.vec()) / a;
  return x0;
}

inline double psnr(const Tensor& a, const Tensor& b) {  // pixels in [0, 1]
  double se = 0;
  for (int64_t i = 0; i < a.numel(); ++i) se += double(a[i] - b[i]) * double(a[i] - b[i]);
  return 10.0 * std::log10(1.0 / std::max(se / double(a.numel()), 1e-12));
}

// The denoising loop of pipeline.hpp's denoise(), written out for one picture, keeping x_t and
// the predicted x0 of every step.
inline Trajectory sample(const StableDiffusion& sd, const Options& o, const std::string& scheduler_name, float w) {
  Trajectory tr;
  tr.scheduler = scheduler_name;
  GenerationParams p;
  p.prompt = o.prompt, p.scheduler = scheduler_name, p.steps = o.steps, p.guidance_scale = w;
  p.width = p.height = o.size;
  check_inputs(sd, p);
  const bool cfg = p.classifier_free_guidance();
  const Tensor context = encode_prompt(sd, p);  // [2, 77, D] = [negative; prompt] with guidance, else [1, 77, D]
  auto scheduler = make_scheduler(scheduler_name, sd.scheduler_config);
  auto gen = make_generator("ldm", o.seed);
  Tensor x = prepare_latents(sd, p, *scheduler, *gen).latents;  // z_T * init_noise_sigma, [1, 4, h, w]
  const std::vector<double> timesteps = scheduler->timesteps();
  const std::vector<double>& sigmas = scheduler->sigmas();  // the k-diffusion samplers' noise levels; empty for DDIM
  for (size_t i = 0; i < timesteps.size(); ++i) {
    const double t = timesteps[i];
    // x_t as the U-Net sees it: the sampler's x scaled to DDPM units (x / sqrt(sigma^2 + 1) for Euler).
    const Tensor x_in = scheduler->scale_model_input(x, t);
    Tensor out = sd.runner->unet(cfg ? detail::cat_batch(x_in, x_in) : x_in, float(t), context);
    if (cfg) out = classifier_free_guidance(out, w);  // out_u + w (out_c - out_u)
    const double abar =
        sigmas.empty() ? scheduler->schedule().alphas_cumprod(int(t)) : 1.0 / (1.0 + sigmas[i] * sigmas[i]);
    tr.timesteps.push_back(t), tr.abar.push_back(abar);
    tr.x_t.push_back(x_in);
    tr.x0.push_back(predicted_x0(out, x_in, abar, sd.scheduler_config.prediction_type));
    x = scheduler->step(out, t, x, gen.get());  // x_t -> x_{t-1}
  }
  tr.latents = x;
  tr.image = nhwc_to_nchw(decode_latents(sd, x));
  for (const Tensor& x0 : tr.x0) {
    tr.x0_images.push_back(nhwc_to_nchw(decode_latents(sd, x0)));
    tr.x0_psnr.push_back(psnr(tr.x0_images.back(), tr.image));
  }
  // The pipeline's own loop from the same seed must give the same latents.
  auto gen2 = make_generator("ldm", o.seed);
  const GenerationResult g = generate(sd, p, *gen2);
  for (int64_t i = 0; i < x.numel(); ++i)
    tr.max_diff_vs_pipeline = std::max(tr.max_diff_vs_pipeline, double(std::abs(x[i] - g.latents[i])));
  // From which step does x0 already show the prompt?
  shapes::PartialSpec truth;
  if (o.size == shapes::kImageSize && shapes::parse_caption(o.prompt, truth)) {
    for (const Tensor& img : tr.x0_images) {
      shapes::AccuracyReport one;
      tr.x0_right.push_back(one.add(truth, shapes::analyse(shapes::picture_bytes(img).data())) ? 1 : 0);
    }
    for (int i = int(tr.x0_right.size()) - 1; i >= 0 && tr.x0_right[size_t(i)]; --i) tr.settled = i;
  }
  return tr;
}

// A latent [1, 4, h, w] in DDPM units as a picture: channels 0, 1, 2 as red, green, blue over
// [-2.5, 2.5] (unit-variance noise and the scaled latents both fit).
inline viz::Canvas latent_picture(const Tensor& z, int scale) {
  Tensor rgb = Tensor::empty({1, 3, z.dim(2), z.dim(3)});
  for (int64_t i = 0; i < rgb.numel(); ++i) rgb[i] = std::clamp(0.5f + z[i] / 5.0f, 0.0f, 1.0f);
  return viz::picture(rgb, scale);
}

inline Result run(const StableDiffusion& sd, bool synthetic, const Options& o, std::ostream& out) {
  LDM_CHECK(o.steps >= 1, "lesson 10: --steps must be at least 1, got ", o.steps);
  LDM_CHECK(o.size >= 8 && o.size % 8 == 0, "lesson 10: --size must be a positive multiple of 8, got ", o.size);
  LDM_CHECK(!o.schedulers.empty(), "lesson 10: give at least one scheduler");
  LDM_CHECK(o.guidance >= 1, "lesson 10: --guidance must be at least 1 (1: no guidance), got ", o.guidance);
  char line[512];
  Result r;
  r.guidance = o.guidance;
  if (synthetic) say_synthetic(out);
  std::snprintf(line, sizeof line, "Prompt \"%s\", %dx%d, %d steps, w = %s, seed %llu, %s prediction\n\n",
                o.prompt.c_str(), o.size, o.size, o.steps, viz::format_number(o.guidance).c_str(),
                (unsigned long long)o.seed, sd.scheduler_config.prediction_type.c_str());
  out << line;
  for (const std::string& name : o.schedulers) {
    r.runs.push_back(sample(sd, o, name, o.guidance));
    const Trajectory& tr = r.runs.back();
    std::snprintf(line, sizeof line, "%s: the loop above gives generate()'s latents, max |diff| %.1e\n", name.c_str(),
                  tr.max_diff_vs_pipeline);
    out << line << "   step      t      abar    rms(x_t)   decode(x0) vs final   analyser\n";
    for (size_t i = 0; i < tr.timesteps.size(); ++i) {
      const double rms = tr.x_t[i].vec().norm() / std::sqrt(double(tr.x_t[i].numel()));
      char db[32];
      if (tr.x0_psnr[i] >= 100)
        std::snprintf(db, sizeof db, "%s", "identical");
      else
        std::snprintf(db, sizeof db, "%.1f dB", tr.x0_psnr[i]);
      std::snprintf(line, sizeof line, "   %4zu  %5.0f  %8.2g   %8.3f   %11s           %s\n", i + 1, tr.timesteps[i],
                    tr.abar[i], rms, db, tr.x0_right.empty() ? "" : tr.x0_right[i] ? "reads the prompt" : "-");
      out << line;
    }
    if (!tr.x0_right.empty()) {
      if (tr.settled >= 0)
        std::snprintf(line, sizeof line,
                      "   From step %d of %d (t = %.0f, abar = %.2g) on, the predicted x0 already shows everything the\n"
                      "   prompt says; the remaining steps refine it.\n\n",
                      tr.settled + 1, o.steps, tr.timesteps[size_t(tr.settled)], tr.abar[size_t(tr.settled)]);
      else
        std::snprintf(line, sizeof line, "   The final picture does not show everything the prompt says.\n\n");
      out << line;
    } else {
      out << "\n";
    }
  }

  if (!o.out_dir.empty()) {
    std::filesystem::create_directories(o.out_dir);
    const int scale = std::max(1, 64 / o.size);
    const int lscale = scale * int(o.size / r.runs[0].x_t[0].dim(2));
    std::vector<int> shown;
    const int cols = std::min(o.columns, o.steps);
    for (int c = 0; c < cols; ++c) shown.push_back(cols == 1 ? o.steps - 1 : int(std::lround(double(c) * (o.steps - 1) / (cols - 1))));
    std::vector<viz::Canvas> tiles;
    std::vector<std::string> caps;
    for (const Trajectory& tr : r.runs) {
      for (int i : shown) {
        tiles.push_back(latent_picture(tr.x_t[size_t(i)], lscale));
        std::snprintf(line, sizeof line, "%s x_t, t=%.0f", tr.scheduler.c_str(), tr.timesteps[size_t(i)]);
        caps.push_back(line);
      }
      for (int i : shown) {
        tiles.push_back(viz::picture(tr.x0_images[size_t(i)], scale));
        std::snprintf(line, sizeof line, "x0 %s", tr.x0_right.empty() ? "" : tr.x0_right[size_t(i)] ? "(right)" : "");
        caps.push_back(line);
      }
    }
    r.pictures.push_back(o.out_dir + "/lesson10_sampling_loop.png");
    stamped(viz::grid(tiles, caps, cols), synthetic).save(r.pictures.back());

    std::vector<viz::Series> series;
    for (const Trajectory& tr : r.runs) {
      viz::Series s(tr.scheduler + ": decode(x0) vs the final picture");
      for (size_t i = 0; i < tr.x0_psnr.size(); ++i) s.x.push_back(double(i + 1)), s.y.push_back(std::min(tr.x0_psnr[i], 60.0));
      series.push_back(s);
    }
    viz::PlotOptions po;
    po.title = "how close each step's predicted x0 is to the end result";
    po.x_label = "step";
    po.y_label = "PSNR, dB (60 = identical)";
    po.legend = viz::Corner::BottomRight;
    r.pictures.push_back(o.out_dir + "/lesson10_x0_psnr.png");
    stamped(viz::plot(series, po), synthetic).save(r.pictures.back());
    for (const auto& p : r.pictures) out << "Wrote " << p << "\n";
  }
  return r;
}

inline Result run(const Options& o, std::ostream& out) {
  for (const std::string& s : o.schedulers) make_scheduler(s, SchedulerConfig{});  // unknown names fail first
  const std::string spec = model_spec(o.model);
  const ModelFiles files = open_model(spec);
  out << "Model: " << files.description << "\n";
  LoadOptions lo;
  lo.tokenizer_dir = !o.tokenizer.empty() ? o.tokenizer : !files.tokenizer_dir.empty() ? files.tokenizer_dir : shared_path("clip-tokenizer");
  const StableDiffusion sd = load_stable_diffusion(files, lo);
  Options resolved = o;
  if (resolved.size == 0) resolved.size = int(std::min<int64_t>(sd.unet_config.sample_size * 8, 128));
  if (resolved.guidance == 0)
    resolved.guidance = files.generation_defaults.is_object() ? files.generation_defaults.value("guidance_scale", 7.5f) : 7.5f;
  return run(sd, is_synthetic(spec), resolved, out);
}

}  // namespace ldm::lessons::sampling_loop
