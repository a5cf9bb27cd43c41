// Lesson 6: classifier-free guidance, swept (course day 76, exercise 2).
//
// At every step the pipeline runs the U-Net twice on the same latent, once with the empty
// (negative) prompt and once with the prompt, and extrapolates from one to the other:
//
//     eps_w = eps_u + w (eps_c - eps_u)         (Ho & Salimans 2022; w = guidance_scale)
//
// w = 1 is the text prediction alone (the pipeline then skips the unconditional pass); SD1.5
// is usually run at 7.5, ldm-shapes at 2. This lesson generates several prompts from the same
// starting latents at several w and answers the exercise's question, "at what point does
// quality degrade?", by measurement: the analyser of the shapes dataset reads every picture
// back (does it show what the prompt says?) and the pictures' colour saturation and clipped
// pixels are counted, per w. At the first step it looks at eps_w itself: its size grows
// linearly in w once w ||eps_c - eps_u|| outgrows ||eps_u||, which is why large w
// over-saturates the image. (The U-Net's output is the noise eps, or v for a v-prediction
// model such as ldm-shapes: guidance extrapolates either the same way.)
#pragma once
#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <ostream>
#include <string>
#include <vector>

#include "../lesson_common.hpp"
#include "ldm/core/checkpoint.hpp"
#include "ldm/core/shared_dir.hpp"
#include "ldm/core/image.hpp"
#include "ldm/core/rng.hpp"
#include "ldm/load.hpp"
#include "ldm/data/shapes_analyser.hpp"
#include "ldm/pipeline.hpp"
#include "ldm/viz/colormap.hpp"
#include "ldm/viz/plot.hpp"

namespace ldm::lessons::guidance_sweep {

struct Options {
  std::string model;      // "" = models/ldm-shapes; or a diffusers folder, a .safetensors file, synthetic:sd15
  std::string tokenizer;  // "" = the model's tokenizer/, else ../shared/clip-tokenizer
  // Held-out captions of the shapes dataset (any prompt works; the analyser scores only these).
  std::vector<std::string> prompts{"a large red circle at the top left on a black background",
                                   "a small blue square at the bottom right on a white background",
                                   "a large yellow triangle at the center on a gray background",
                                   "a small green circle at the top on a black background",
                                   "a large purple square at the left on a white background",
                                   "a small orange triangle at the bottom left on a gray background"};
  std::string negative_prompt;                    // "" = the unconditional prompt, as in diffusers
  std::vector<float> scales{1, 2, 3, 7, 12, 20};  // the guidance scales w (each >= 1)
  int seeds = 3;              // starting latents per prompt: seed, seed + 1, ...
  int size = 0;               // image side (a multiple of 8); 0 = the model's own, at most 128
  int steps = 0;              // denoising steps; 0 = the model's generation_defaults.json, else 20
  std::string scheduler;      // any make_scheduler name; "" = the model's scheduler class
  uint64_t seed = 42;         // the same starting latents for every w
  std::string rng = "ldm";    // "ldm" or "torch-cpu" (diffusers' torch.Generator("cpu"))
  std::string out_dir = ".";  // where the pictures go ("" = none)
};

struct Result {
  double t_first = 0;  // the first step's timestep
  // rms = ||x|| / sqrt(n) of the first step's predictions: eps_u, eps_c, d = eps_c - eps_u
  double rms_uncond = 0, rms_text = 0, rms_diff = 0, cosine = 0;  // cosine(eps_u, eps_c)
  std::vector<double> rms_guided;                                 // rms(eps_u + w d) per w, at the first step
  // Per w, over every prompt and seed:
  std::vector<Tensor> latents;      // the first prompt's final latents [seeds, 4, h, w]
  std::vector<double> latent_rms;   // their rms
  std::vector<double> clipped;      // fraction of pixel values clamped to 0 or 1
  std::vector<double> saturation;   // mean HSV saturation of the pixels, (max - min) / max
  std::vector<double> adherence;    // fraction of the prompts' stated attributes read back (NaN: not 64x64)
  std::vector<double> all_right;    // fraction of pictures with every stated attribute read back
  std::vector<double> seconds;      // generation time
  std::vector<std::vector<Tensor>> images;  // [w][prompt]: the first seed's picture [1, 3, H, W] in [0, 1]
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
  const auto ids = prompt_token_ids(sd, o.prompts.front(), {});
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
  LDM_CHECK(!o.prompts.empty(), "lesson 6: give at least one prompt");
  LDM_CHECK(o.seeds >= 1, "lesson 6: --seeds must be at least 1, got ", o.seeds);
  LDM_CHECK(!o.scheduler.empty(), "lesson 6: no scheduler chosen");
  for (float w : o.scales)
    LDM_CHECK(w >= 1.0f, "lesson 6: guidance scale ", w,
              " is below 1; the pipeline treats any w <= 1 as 'no guidance' ",
              "(the text prediction alone), so give scales of 1 or more");
}

// Mean HSV saturation, (max - min) / max per pixel, of [1, 3, H, W] in [0, 1]; black counts 0.
inline double mean_saturation(const Tensor& img) {
  const int64_t n = img.dim(2) * img.dim(3);
  double s = 0;
  for (int64_t i = 0; i < n; ++i) {
    const float r = img[i], g = img[n + i], b = img[2 * n + i];
    const float hi = std::max({r, g, b}), lo = std::min({r, g, b});
    s += hi > 0 ? double(hi - lo) / double(hi) : 0.0;
  }
  return s / double(n);
}

inline std::string percent(double v) { return std::isnan(v) ? std::string("  n/a") : viz::format_number(std::round(1000 * v) / 10) + "%"; }

// `synthetic` only changes what the lesson says about the pictures.
inline Result run(const StableDiffusion& sd, bool synthetic, const Options& o, std::ostream& out) {
  check_options(o);
  using clock = std::chrono::steady_clock;
  char line[512];
  Result r;
  if (synthetic) say_synthetic(out);
  std::snprintf(line, sizeof line,
                "%zu prompts x %d seeds, %dx%d, %d %s steps, seeds from %llu (%s generator): the same starting\n"
                "latents for every w; negative prompt %s\n\n",
                o.prompts.size(), o.seeds, o.size, o.size, o.steps, o.scheduler.c_str(), (unsigned long long)o.seed,
                o.rng.c_str(), o.negative_prompt.empty() ? "\"\" (the unconditional prompt)" : ("\"" + o.negative_prompt + "\"").c_str());
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
                "1. The U-Net's prediction at the first step (t = %.0f), one call on [z_T; z_T] with the\n"
                "   context [negative; prompt]   (rms = ||x|| / sqrt(n)); prompt \"%s\"\n",
                r.t_first, o.prompts.front().c_str());
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

  // 2. Every prompt at every w from the same starting latents, read back by the analyser.
  const bool scorable = o.size == shapes::kImageSize;
  out << "\n2. Generating every prompt with each w from the same starting latents"
      << (scorable ? ", each picture read back by\n   the shapes analyser (what fraction of what the prompt says is drawn):\n"
                   : " (the analyser reads 64x64 pictures\n   only: no adherence at this size):\n")
      << "      w     time   adherence  all right   saturation   clipped to 0 or 1\n";
  for (float w : o.scales) {
    const auto t0 = clock::now();
    shapes::AccuracyReport report;
    double sat = 0, clipped = 0;
    int64_t pictures = 0;
    r.images.emplace_back();
    for (size_t pi = 0; pi < o.prompts.size(); ++pi) {
      GenerationParams p;
      p.prompt = o.prompts[pi], p.negative_prompt = o.negative_prompt;
      p.scheduler = o.scheduler, p.steps = o.steps, p.guidance_scale = w;
      p.width = p.height = o.size;
      p.batch = o.seeds;
      auto gen = make_generator(o.rng, o.seed);
      const GenerationResult g = generate(sd, p, *gen);
      if (pi == 0) r.latents.push_back(g.latents);
      shapes::PartialSpec truth;
      const bool parsed = scorable && shapes::parse_caption(o.prompts[pi], truth);
      for (int b = 0; b < o.seeds; ++b) {
        const Tensor img = nhwc_to_nchw(g.image.slice0(b, b + 1));  // [1, 3, H, W]
        if (b == 0) r.images.back().push_back(img);
        if (parsed) report.add(truth, shapes::analyse(shapes::picture_bytes(img).data()));
        sat += mean_saturation(img);
        int64_t at_edge = 0;
        for (float v : img) at_edge += (v <= 0.0f || v >= 1.0f);
        clipped += double(at_edge) / double(img.numel());
        ++pictures;
      }
    }
    r.seconds.push_back(std::chrono::duration<double>(clock::now() - t0).count());
    int64_t stated = 0, right = 0;
    for (const auto& c : report.attributes) stated += c.total, right += c.correct;
    r.adherence.push_back(stated ? double(right) / double(stated) : std::nan(""));
    r.all_right.push_back(report.captioned ? double(report.all_right) / double(report.captioned) : std::nan(""));
    r.saturation.push_back(sat / double(pictures));
    r.clipped.push_back(clipped / double(pictures));
    r.latent_rms.push_back(rms(r.latents.back()));
    std::snprintf(line, sizeof line, "   %4s  %5.1f s   %8s   %8s   %9s    %8s%s\n", viz::format_number(w).c_str(),
                  r.seconds.back(), percent(r.adherence.back()).c_str(), percent(r.all_right.back()).c_str(),
                  percent(r.saturation.back()).c_str(), percent(r.clipped.back()).c_str(),
                  w <= 1.0f ? "   (w = 1: no unconditional pass)" : "");
    out << line;
  }
  if (!synthetic && scorable) {
    const size_t best = size_t(std::max_element(r.adherence.begin(), r.adherence.end()) - r.adherence.begin());
    const size_t last = o.scales.size() - 1;
    std::string peaks;  // every w at the peak: "2", or "1 and 2" for a tie
    for (size_t i = 0; i < o.scales.size(); ++i)
      if (r.adherence[i] == r.adherence[best])
        peaks += (peaks.empty() ? "" : " and ") + viz::format_number(o.scales[i]);
    std::snprintf(line, sizeof line,
                  "Adherence peaks at w = %s (%s of the stated attributes drawn, %s of the pictures entirely\n"
                  "right) and falls to %s at w = %s: beyond the peak the larger eps_w overshoots at every step.\n"
                  "From w = %s to w = %s the clipped pixels go from %s to %s and the mean saturation from %s\n"
                  "to %s: %s\nThat is where quality degrades, for this model.\n",
                  peaks.c_str(), percent(r.adherence[best]).c_str(),
                  percent(r.all_right[best]).c_str(), percent(r.adherence[last]).c_str(),
                  viz::format_number(o.scales[last]).c_str(), viz::format_number(o.scales[0]).c_str(),
                  viz::format_number(o.scales[last]).c_str(), percent(r.clipped[0]).c_str(),
                  percent(r.clipped[last]).c_str(), percent(r.saturation[0]).c_str(), percent(r.saturation[last]).c_str(),
                  r.saturation[last] < r.saturation[0]
                      ? "the colours do not get more vivid,\nthey burn out (drift in hue and run to white or black)."
                      : "the colours over-saturate.");
    out << line;
  }

  // 3. Pictures: the strip of images, adherence / saturation against w, rms(eps_w) against w.
  if (!o.out_dir.empty()) {
    std::filesystem::create_directories(o.out_dir);
    const int scale = std::max(1, 96 / o.size);
    const size_t rows = std::min<size_t>(o.prompts.size(), 4);
    std::vector<viz::Canvas> tiles;
    std::vector<std::string> caps;
    for (size_t pi = 0; pi < rows; ++pi) {
      // First the prompt as the dataset draws it (where it is a dataset caption), then each w.
      shapes::PartialSpec t;
      std::string label = "(not a dataset caption)";
      viz::Canvas target(o.size * scale, o.size * scale, viz::kLightGray);
      if (shapes::parse_caption(o.prompts[pi], t) && t.colour != shapes::kUnsaid) {
        const auto or0 = [](int v, int fallback) { return v == shapes::kUnsaid ? fallback : v; };
        const Tensor x = shape_picture({or0(t.background, 0), t.colour, t.shape, or0(t.size, 1) == 1, or0(t.position, 4)},
                                       nullptr, &label);
        if (o.size == shapes::kImageSize) target = viz::picture(x, scale);
      }
      tiles.push_back(target);
      caps.push_back(label);
      for (size_t i = 0; i < o.scales.size(); ++i) {
        tiles.push_back(viz::picture(r.images[i][pi], scale));
        caps.push_back("w = " + viz::format_number(o.scales[i]));
      }
    }
    const viz::Canvas strip = viz::grid(tiles, caps, int(o.scales.size()) + 1);
    r.pictures.push_back(o.out_dir + "/lesson06_guidance_strip.png");
    stamped(strip, synthetic).save(r.pictures.back());

    viz::Series adh("adherence"), all("all attributes right"), sat("saturation"), clip("clipped");
    for (size_t i = 0; i < o.scales.size(); ++i) {
      const double w = o.scales[i];
      adh.x.push_back(w), adh.y.push_back(100 * r.adherence[i]);
      all.x.push_back(w), all.y.push_back(100 * r.all_right[i]);
      sat.x.push_back(w), sat.y.push_back(100 * r.saturation[i]);
      clip.x.push_back(w), clip.y.push_back(100 * r.clipped[i]);
    }
    viz::PlotOptions pa;
    pa.title = "what the pictures show, per guidance scale";
    pa.x_label = "guidance scale w";
    pa.y_label = "% of attributes / pictures / pixels";
    pa.legend = viz::Corner::BottomRight;
    r.pictures.push_back(o.out_dir + "/lesson06_adherence.png");
    std::vector<viz::Series> series{sat, clip};
    if (scorable) series.insert(series.begin(), {adh, all});
    stamped(viz::plot(series, pa), synthetic).save(r.pictures.back());

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
    stamped(viz::plot({sweep, guided, text, line_d}, po), synthetic).save(r.pictures.back());
    for (const auto& p : r.pictures) out << "Wrote " << p << "\n";
  }
  return r;
}

// Fills in what the options leave to the model: its size, steps and scheduler.
inline Options resolved(Options o, const ModelFiles& files, const StableDiffusion& sd) {
  if (o.size == 0) o.size = int(std::min<int64_t>(sd.unet_config.sample_size * 8, 128));
  if (o.steps == 0) o.steps = files.generation_defaults.is_object() ? files.generation_defaults.value("num_inference_steps", 20) : 20;
  if (o.scheduler.empty()) {
    const nlohmann::json& j = files.scheduler_config;
    o.scheduler = scheduler_name_of_class(j.is_object() ? j.value("_class_name", std::string()) : std::string());
    if (o.scheduler.empty()) o.scheduler = "pndm";  // diffusers' SD1.5 default
  }
  return o;
}

inline Result run(const Options& o, std::ostream& out) {
  if (!o.scheduler.empty()) make_scheduler(o.scheduler, SchedulerConfig{});  // an unknown name fails before the model loads
  make_generator(o.rng, 0);
  const std::string spec = model_spec(o.model);
  const ModelFiles files = open_model(spec);
  out << "Model: " << files.description << "\n";
  LoadOptions lo;
  lo.tokenizer_dir = tokenizer_dir(o.tokenizer, files);
  const StableDiffusion sd = load_stable_diffusion(files, lo);
  return run(sd, is_synthetic(spec), resolved(o, files, sd), out);
}

}  // namespace ldm::lessons::guidance_sweep
