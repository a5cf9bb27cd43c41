// Lesson 6: classifier-free guidance, swept (course day 76, exercise 2).
//
// At every step the pipeline runs the U-Net twice on the same latent, once with the empty
// (negative) prompt and once with the prompt, and extrapolates from one to the other:
//
//     eps_w = eps_u + w (eps_c - eps_u)         (Ho & Salimans 2022; w = guidance_scale)
//
// w = 1 is the text prediction alone (the pipeline then skips the unconditional pass); SD1.5
// is usually run at 7.5. This lesson generates the same prompt from the same starting latent
// at several w and lays the images side by side, and at the first step looks at eps_w itself:
// its size grows linearly in w once w ||eps_c - eps_u|| outgrows ||eps_u||, which is why
// large w over-saturates the image.
#pragma once
#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <ostream>
#include <string>
#include <vector>

#include "ldm/core/checkpoint.hpp"
#include "ldm/core/shared_dir.hpp"
#include "ldm/core/image.hpp"
#include "ldm/core/rng.hpp"
#include "ldm/load.hpp"
#include "ldm/pipeline.hpp"
#include "ldm/viz/colormap.hpp"
#include "ldm/viz/plot.hpp"

namespace ldm::lessons::guidance_sweep {

struct Options {
  std::string model = "synthetic:sd15";  // diffusers folder, single .safetensors file, or synthetic:sd15
  std::string tokenizer;                 // "" = the model's tokenizer/, else ../shared/clip-tokenizer
  std::string prompt = "a red mug on a checkered table, oil painting";
  std::string negative_prompt;                 // "" = the unconditional prompt, as in diffusers
  std::vector<float> scales{1, 3, 7, 12, 20};  // the guidance scales w (each >= 1)
  int size = 128;                              // image side (a multiple of 8); SD1.5 was trained at 512
  int steps = 4;                               // denoising steps per image
  std::string scheduler = "ddim";              // any make_scheduler name
  uint64_t seed = 42;                          // the same starting latent for every w
  std::string rng = "ldm";                     // "ldm" or "torch-cpu" (diffusers' torch.Generator("cpu"))
  std::string out_dir = ".";                   // where the pictures go ("" = none)
};

struct Result {
  double t_first = 0;  // the first step's timestep
  // rms = ||x|| / sqrt(n) of the first step's predictions: eps_u, eps_c, d = eps_c - eps_u
  double rms_uncond = 0, rms_text = 0, rms_diff = 0, cosine = 0;  // cosine(eps_u, eps_c)
  std::vector<double> rms_guided;                                 // rms(eps_u + w d) per w, at the first step
  std::vector<Tensor> latents;                                    // the final latents [1, 4, h, w], per w
  std::vector<double> latent_rms;                                 // their rms
  std::vector<double> clipped;                                    // fraction of pixel values clamped to 0 or 1, per w
  std::vector<double> seconds;                                    // generation time per w
  std::vector<Tensor> images;                                     // [1, 3, H, W] in [0, 1], per w
  std::vector<std::string> pictures;
};

inline double rms(const Tensor& x) { return x.vec().norm() / std::sqrt(double(x.numel())); }

// The tokenizer folder for a model: --tokenizer, else the model's tokenizer/, else
// shared/clip-tokenizer ($LDM_SHARED, else the folder CMake saw beside the repo); "" if none.
inline std::string tokenizer_dir(const std::string& given, const ModelFiles& files) {
  if (!given.empty()) return given;
  if (!files.tokenizer_dir.empty()) return files.tokenizer_dir;
  return shared_path("clip-tokenizer");
}

// The first step of generate() with guidance, stopped after the U-Net: the same z_T (drawn
// from a fresh generator with the seed), the same t, the same context [uncond; text].
// Returns the U-Net's output [2, 4, h, w] = [eps_u; eps_c].
inline Tensor first_step_predictions(const StableDiffusion& sd, const Options& o, double* t_first) {
  const auto ids = prompt_token_ids(sd, o.prompt, {});
  const auto neg = prompt_token_ids(sd, o.negative_prompt, {});
  const Tensor context = detail::cat_batch(sd.runner->encode_text(neg, 1, 1),
                                          sd.runner->encode_text(ids, 1, 1));  // [2, 77, D]
  auto scheduler = make_scheduler(o.scheduler, sd.scheduler_config);
  scheduler->set_timesteps(o.steps);
  *t_first = scheduler->timesteps().front();
  auto gen = make_generator(o.rng, o.seed);
  Tensor z = gen->randn({1, 4, o.size / 8, o.size / 8});  // z_T [1, 4, h, w]
  z.vec() *= scheduler->init_noise_sigma();
  const Tensor model_in = scheduler->scale_model_input(detail::cat_batch(z, z), *t_first);  // [2, 4, h, w]
  return sd.runner->unet(model_in, float(*t_first), context);                               // [2, 4, h, w]
}

// The options' own errors, before anything loads.
inline void check_options(const Options& o) {
  LDM_CHECK(o.size >= 8 && o.size % 8 == 0, "lesson 6: --size must be a positive multiple of 8, got ", o.size);
  LDM_CHECK(o.steps >= 1, "lesson 6: --steps must be at least 1, got ", o.steps);
  LDM_CHECK(!o.scales.empty(), "lesson 6: give at least one guidance scale");
  for (float w : o.scales)
    LDM_CHECK(w >= 1.0f, "lesson 6: guidance scale ", w,
              " is below 1; the pipeline treats any w <= 1 as 'no guidance' ",
              "(the text prediction alone), so give scales of 1 or more");
}

// `real_weights` only changes what the lesson says about the pictures.
inline Result run(const StableDiffusion& sd, bool real_weights, const Options& o, std::ostream& out) {
  check_options(o);
  using clock = std::chrono::steady_clock;
  char line[512];
  Result r;
  out << "Prompt: \"" << o.prompt << "\"   negative: "
      << (o.negative_prompt.empty() ? std::string("\"\" (the unconditional prompt)") : "\"" + o.negative_prompt + "\"")
      << "\n";
  std::snprintf(line, sizeof line,
                "%dx%d, %d %s steps, seed %llu (%s generator): the same starting latent z_T for every w\n\n", o.size,
                o.size, o.steps, o.scheduler.c_str(), (unsigned long long)o.seed, o.rng.c_str());
  out << line;

  // 1. The first step's two predictions, and eps_w for every w from them.
  const Tensor eps = first_step_predictions(sd, o, &r.t_first);
  const Tensor eps_u = eps.slice0(0, 1), eps_c = eps.slice0(1, 2);
  Tensor d = Tensor::empty(eps_u.shape());
  d.vec() = eps_c.vec() - eps_u.vec();
  r.rms_uncond = rms(eps_u), r.rms_text = rms(eps_c), r.rms_diff = rms(d);
  r.cosine = double(eps_u.vec().dot(eps_c.vec())) / (eps_u.vec().norm() * eps_c.vec().norm());
  // ||eps_u + w d||^2 = A + 2 w B + w^2 C, per value:
  const double n = double(d.numel());
  const double A = eps_u.vec().squaredNorm() / n, B = eps_u.vec().dot(d.vec()) / n, C = d.vec().squaredNorm() / n;
  auto rms_at = [&](double w) { return std::sqrt(std::max(0.0, A + 2 * w * B + w * w * C)); };
  std::snprintf(line, sizeof line,
                "1. The noise prediction at the first step (t = %.0f): one U-Net call on [z_T; z_T] with the\n"
                "   context [negative; prompt]   (rms = ||x|| / sqrt(n); about 1 for unit Gaussian noise)\n",
                r.t_first);
  out << line;
  std::snprintf(line, sizeof line, "   eps_u = unet(z_T, t, negative)   rms %.4f\n", r.rms_uncond);
  out << line;
  std::snprintf(line, sizeof line, "   eps_c = unet(z_T, t, prompt)     rms %.4f\n", r.rms_text);
  out << line;
  std::snprintf(line, sizeof line, "   d = eps_c - eps_u                rms %.4f   (cosine(eps_u, eps_c) = %.4f)\n",
                r.rms_diff, r.cosine);
  out << line;
  out << "   eps_w = eps_u + w d, so ||eps_w||^2 = ||eps_u||^2 + 2w <eps_u, d> + w^2 ||d||^2: once w rms(d)\n"
      << "   outgrows rms(eps_u), eps_w grows linearly in w, and so does each step's move.\n"
      << "      w    rms(eps_w)   rms(eps_w) / rms(eps_c)\n";
  for (float w : o.scales) {
    r.rms_guided.push_back(rms_at(w));
    std::snprintf(line, sizeof line, "   %4s    %9.4f   %8.2f\n", viz::format_number(w).c_str(), r.rms_guided.back(),
                  r.rms_guided.back() / r.rms_text);
    out << line;
  }

  // 2. The whole generation at every w, from the same z_T.
  out << "\n2. Generating with each w from the same z_T:\n"
      << "      w     time   final latent rms   pixels clipped to 0 or 1\n";
  for (float w : o.scales) {
    GenerationParams p;
    p.prompt = o.prompt, p.negative_prompt = o.negative_prompt;
    p.scheduler = o.scheduler, p.steps = o.steps, p.guidance_scale = w;
    p.width = p.height = o.size;
    auto gen = make_generator(o.rng, o.seed);
    const auto t0 = clock::now();
    const GenerationResult g = generate(sd, p, *gen);
    r.seconds.push_back(std::chrono::duration<double>(clock::now() - t0).count());
    r.latents.push_back(g.latents);
    r.latent_rms.push_back(rms(g.latents));
    int64_t at_edge = 0;
    for (float v : g.image) at_edge += (v <= 0.0f || v >= 1.0f);
    r.clipped.push_back(double(at_edge) / double(g.image.numel()));
    r.images.push_back(nhwc_to_nchw(g.image));
    std::snprintf(line, sizeof line, "   %4s  %5.1f s   %9.3f          %5.1f%%%s\n", viz::format_number(w).c_str(),
                  r.seconds.back(), r.latent_rms.back(), 100 * r.clipped.back(),
                  w <= 1.0f ? "   (w = 1: no unconditional pass, 1 U-Net call per step)" : "");
    out << line;
  }
  if (real_weights)
    out << "Low w follows the prompt loosely; around 7 it follows it well; by 12-20 colours over-saturate and\n"
        << "detail turns harsh, as the larger eps_w overshoots at every step.\n";
  else
    out << "NOTE: synthetic weights are not a trained model: the arithmetic of guidance is real, the pictures\n"
        << "mean nothing. Run with --model path/to/stable-diffusion-v1-5 to see what guidance does to an image.\n";

  // 3. Pictures: the strip of images, and rms(eps_w) against w.
  if (!o.out_dir.empty()) {
    std::filesystem::create_directories(o.out_dir);
    const int scale = std::max(1, 128 / o.size);
    std::vector<viz::Canvas> tiles;
    std::vector<std::string> caps;
    for (size_t i = 0; i < o.scales.size(); ++i) {
      tiles.push_back(viz::picture(r.images[i], scale));
      std::snprintf(line, sizeof line, "w = %s, %.0f%% clipped", viz::format_number(o.scales[i]).c_str(),
                    100 * r.clipped[i]);
      caps.push_back(line);
    }
    r.pictures.push_back(o.out_dir + "/lesson06_guidance_strip.png");
    viz::grid(tiles, caps, int(tiles.size())).save(r.pictures.back());

    const double w_max = *std::max_element(o.scales.begin(), o.scales.end());
    viz::Series sweep("the sweep's w"), guided("rms(eps_u + w d)"), text("rms(eps_c)"), line_d("w rms(d)");
    sweep.bars = true, sweep.color = viz::Color{200, 200, 200};
    for (size_t i = 0; i < o.scales.size(); ++i) sweep.x.push_back(o.scales[i]), sweep.y.push_back(r.rms_guided[i]);
    for (double w = 0; w <= w_max + 1e-9; w += w_max / 80) {
      guided.x.push_back(w), guided.y.push_back(rms_at(w));
      text.x.push_back(w), text.y.push_back(r.rms_text);
      line_d.x.push_back(w), line_d.y.push_back(w * r.rms_diff);
    }
    viz::PlotOptions po;
    std::snprintf(line, sizeof line, "eps_w at the first step, t = %.0f", r.t_first);
    po.title = line;
    po.x_label = "guidance scale w";
    po.y_label = "rms";
    po.legend = viz::Corner::TopLeft;
    r.pictures.push_back(o.out_dir + "/lesson06_guidance_norm.png");
    viz::plot({sweep, guided, text, line_d}, po).save(r.pictures.back());
    for (const auto& p : r.pictures) out << "Wrote " << p << "\n";
  }
  return r;
}

inline Result run(const Options& o, std::ostream& out) {
  check_options(o);
  make_scheduler(o.scheduler, SchedulerConfig{});  // an unknown name fails before the model loads
  make_generator(o.rng, 0);
  const ModelFiles files = open_model(o.model);
  out << "Model: " << files.description << "\n";
  LoadOptions lo;
  lo.tokenizer_dir = tokenizer_dir(o.tokenizer, files);
  const StableDiffusion sd = load_stable_diffusion(o.model, lo);
  return run(sd, o.model.rfind("synthetic:", 0) != 0, o, out);
}

}  // namespace ldm::lessons::guidance_sweep
