// Lesson 7: interpolating between latents (course day 76, exercise 1).
//
// Part 1, two pictures: encode two pictures to latents z1, z2 [1, 4, h, w] and decode the
// points between them,
//     lerp(a)  = (1 - a) z1 + a z2                                   straight line
//     slerp(a) = sin((1 - a) theta) / sin(theta) z1 + sin(a theta) / sin(theta) z2,
//                cos(theta) = <z1, z2> / (|z1| |z2|)                   great circle (Shoemake 1985)
// beside the pixels' own cross-fade (1 - a) x1 + a x2; the shapes analyser reads what each
// decoded picture shows. Part 2, two prompts: the starting noises of two seeds, interpolated,
// each denoised with the prompts' text embeddings interpolated alike: the walk from one
// generated picture to the other. Two independent Gaussian latents are nearly orthogonal and
// nearly the same length, sqrt(n) (a Gaussian in n dimensions lives on a thin shell): lerp
// cuts the chord, and halfway its length is |z| / sqrt(2), a starting noise unlike any the
// model was trained on; slerp follows the arc and keeps the length.
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
#include "ldm/core/image.hpp"
#include "ldm/core/rng.hpp"
#include "ldm/core/shared_dir.hpp"
#include "ldm/data/shapes_analyser.hpp"
#include "ldm/load.hpp"
#include "ldm/pipeline.hpp"
#include "ldm/viz/colormap.hpp"
#include "ldm/viz/plot.hpp"
#include "ldm/viz/resize.hpp"

namespace ldm::lessons::latent_interpolation {

struct Options {
  std::string model;               // "" = models/ldm-shapes; or a diffusers folder, a .safetensors file, synthetic:sd15
  std::string image_a, image_b;    // part 1's pictures; "" = the prompts as the shapes dataset draws them
  std::string prompt_a = "a large red circle at the left on a white background";
  std::string prompt_b = "a large blue square at the right on a white background";
  uint64_t seed_a = 1, seed_b = 2;  // part 2's starting noises
  std::string rng = "ldm";          // "ldm" or "torch-cpu" (diffusers' torch.Generator("cpu"))
  int size = 0;                     // image side (a multiple of 8); 0 = the model's own, at most 128
  std::vector<double> alphas{0, 0.25, 0.5, 0.75, 1};
  bool denoise = true;              // part 2 (needs the U-Net, CLIP and a tokenizer)
  std::string tokenizer;            // "" = the model's tokenizer/, else ../shared/clip-tokenizer
  int steps = 0;                    // part 2: 0 = the model's generation_defaults.json, else 20
  std::string scheduler = "ddim";   // part 2: a deterministic sampler, so only the start and the text change
  float guidance_scale = 0;         // part 2: 0 = the model's recommendation, else 7.5
  std::string out_dir = ".";        // where the pictures go ("" = none)
};

struct Result {
  Shape latent_shape;
  double rms_1 = 0, rms_2 = 0, cosine = 0, theta = 0;  // part 1's endpoints; theta in radians
  std::vector<double> rms_lerp, rms_slerp;             // per alpha (rms = ||z|| / sqrt(n))
  std::vector<Tensor> decoded_lerp, decoded_slerp, crossfade;  // [1, 3, H, W] in [0, 1], per alpha
  std::vector<std::string> read_lerp, read_slerp, read_crossfade;  // what the analyser reads (64x64 only)
  double noise_cosine = 0;                              // part 2's two starting noises
  std::vector<double> noise_rms_lerp, noise_rms_slerp;  // per alpha
  std::vector<Tensor> denoised_lerp, denoised_slerp;    // part 2, per alpha
  std::vector<std::string> read_denoised_lerp, read_denoised_slerp;
  std::vector<std::string> pictures;
};

inline double rms(const Tensor& x) { return x.vec().norm() / std::sqrt(double(x.numel())); }

inline Tensor lerp(const Tensor& z1, const Tensor& z2, double a) {
  check_shape(z2, z1.shape(), "lerp: z2");
  Tensor z = Tensor::empty(z1.shape());
  z.vec() = float(1 - a) * z1.vec() + float(a) * z2.vec();
  return z;
}

// Along the great circle from z1 to z2 (lengths change linearly only when they differ);
// nearly parallel latents, where the arc is a line, fall back to lerp.
inline Tensor slerp(const Tensor& z1, const Tensor& z2, double a) {
  check_shape(z2, z1.shape(), "slerp: z2");
  const double c = double(z1.vec().dot(z2.vec())) / (double(z1.vec().norm()) * double(z2.vec().norm()));
  const double theta = std::acos(std::clamp(c, -1.0, 1.0));
  if (std::sin(theta) < 1e-4) return lerp(z1, z2, a);
  const double w1 = std::sin((1 - a) * theta) / std::sin(theta), w2 = std::sin(a * theta) / std::sin(theta);
  Tensor z = Tensor::empty(z1.shape());
  z.vec() = float(w1) * z1.vec() + float(w2) * z2.vec();
  return z;
}

inline double cosine(const Tensor& a, const Tensor& b) {
  return double(a.vec().dot(b.vec())) / (double(a.vec().norm()) * double(b.vec().norm()));
}

// Latent (in the diffusion model's units, i.e. times scaling_factor) -> image [1, 3, H, W] in [0, 1].
inline Tensor decode_to_image(const StableDiffusion& sd, const Tensor& z) { return nhwc_to_nchw(decode_latents(sd, z)); }

// An image [1, 3, H, W] in [0, 1] -> the mean of q(z|x), times scaling_factor [1, 4, H/8, W/8].
inline Tensor encode_image(const StableDiffusion& sd, const Tensor& image) {
  Tensor x = image.clone();
  x.vec().array() = x.vec().array() * 2.0f - 1.0f;
  Tensor z = sd.runner->vae_encode(x).mean;
  z.vec() *= sd.vae_config.scaling_factor;
  return z;
}

// What the analyser reads in a 64x64 picture ("" for other sizes).
inline std::string read_back(const Tensor& img) {
  if (img.dim(2) != shapes::kImageSize || img.dim(3) != shapes::kImageSize) return "";
  const shapes::Analysis a = shapes::analyse(shapes::picture_bytes(img).data());
  if (!a.found) return shapes::describe(a);
  return std::string(shapes::kColours[a.read.colour].word) + " " + shapes::kShapeWords[a.read.shape] + ", " +
         shapes::kPositionWords[a.read.position];
}

// A caption as the dataset draws it, at `size` (the test pattern where it is not a caption).
inline Tensor prompt_picture(const std::string& prompt, int size) {
  shapes::PartialSpec t;
  LDM_CHECK(shapes::parse_caption(prompt, t) && t.colour != shapes::kUnsaid, "lesson 7: \"", prompt,
            "\" is not a caption of the shapes dataset, so there is no picture of it to encode: give --image-a and "
            "--image-b");
  const auto or_default = [](int v, int fallback) { return v == shapes::kUnsaid ? fallback : v; };
  const Tensor x = shape_picture({or_default(t.background, 0), t.colour, t.shape, or_default(t.size, 1) == 1,
                                  or_default(t.position, 4)});
  return x.dim(2) == size ? x : viz::center_crop_resize(x, size);
}

// The options' own errors, before anything loads.
inline void check_options(const Options& o) {
  LDM_CHECK(o.size == 0 || (o.size >= 8 && o.size % 8 == 0), "lesson 7: --size must be a positive multiple of 8, got ",
            o.size);
  LDM_CHECK(o.image_a.empty() == o.image_b.empty(), "lesson 7: give both --image-a and --image-b, or neither");
  LDM_CHECK(!o.alphas.empty(), "lesson 7: give at least one alpha");
}

// Part 2's walk: the starting noise z and the prompt's text embedding context (both already
// interpolated) through the denoising loop of the pipeline.
inline Tensor denoise_from(const StableDiffusion& sd, const Options& o, const Tensor& z, const Tensor& context) {
  GenerationParams p;
  p.scheduler = o.scheduler, p.steps = o.steps, p.guidance_scale = o.guidance_scale;
  p.width = p.height = o.size;
  auto scheduler = make_scheduler(o.scheduler, sd.scheduler_config);
  scheduler->set_timesteps(o.steps);
  PreparedLatents start;
  start.timesteps = scheduler->timesteps();
  start.latents = z.clone();
  start.latents.vec() *= scheduler->init_noise_sigma();
  auto gen = make_generator(o.rng, o.seed_a);  // unused by a deterministic sampler
  return nhwc_to_nchw(decode_latents(sd, denoise(sd, p, *scheduler, context, std::move(start), *gen)));
}

// `sd`'s VAE is used in part 1; its U-Net, text encoder and tokenizer in part 2 (o.denoise).
// o.size, o.steps and o.guidance_scale must be resolved (run(Options) does it from the model).
inline Result run(const StableDiffusion& sd, bool synthetic, const Options& o, std::ostream& out) {
  check_options(o);
  LDM_CHECK(o.size > 0 && o.steps > 0 && o.guidance_scale > 0, "lesson 7: size, steps and guidance not resolved");
  using clock = std::chrono::steady_clock;
  char line[512];
  Result r;
  if (synthetic) say_synthetic(out);

  // ---- Part 1: two pictures' latents.
  const Tensor x1 = o.image_a.empty() ? prompt_picture(o.prompt_a, o.size) : viz::center_crop_resize(read_image(o.image_a), o.size);
  const Tensor x2 = o.image_b.empty() ? prompt_picture(o.prompt_b, o.size) : viz::center_crop_resize(read_image(o.image_b), o.size);
  const Tensor z1 = encode_image(sd, x1), z2 = encode_image(sd, x2);
  out << "Part 1: two pictures, " << (o.image_a.empty() ? "\"" + o.prompt_a + "\" and \"" + o.prompt_b + "\" as the dataset draws them" : o.image_a + " and " + o.image_b)
      << ",\nencoded (the mean of q(z|x), times " << sd.vae_config.scaling_factor << ")\n";
  r.latent_shape = z1.shape();
  r.rms_1 = rms(z1), r.rms_2 = rms(z2), r.cosine = cosine(z1, z2);
  r.theta = std::acos(std::clamp(r.cosine, -1.0, 1.0));
  std::snprintf(line, sizeof line, "  z1, z2 %s: rms %.3f and %.3f, cosine %+.3f (%.0f degrees apart)\n",
                z1.shape_str().c_str(), r.rms_1, r.rms_2, r.cosine, r.theta * 180 / std::acos(-1.0));
  out << line;
  out << "     a   rms(lerp)  rms(slerp)   lerp reads as            slerp reads as           pixel cross-fade reads as\n";
  for (double a : o.alphas) {
    const Tensor zl = lerp(z1, z2, a), zs = slerp(z1, z2, a);
    r.rms_lerp.push_back(rms(zl)), r.rms_slerp.push_back(rms(zs));
    r.decoded_lerp.push_back(decode_to_image(sd, zl));
    r.decoded_slerp.push_back(decode_to_image(sd, zs));
    r.crossfade.push_back(lerp(x1, x2, a));
    r.read_lerp.push_back(read_back(r.decoded_lerp.back()));
    r.read_slerp.push_back(read_back(r.decoded_slerp.back()));
    r.read_crossfade.push_back(read_back(r.crossfade.back()));
    std::snprintf(line, sizeof line, "  %4.2f   %9.3f  %10.3f   %-24s %-24s %s\n", a, r.rms_lerp.back(), r.rms_slerp.back(),
                  r.read_lerp.back().c_str(), r.read_slerp.back().c_str(), r.read_crossfade.back().c_str());
    out << line;
  }
  std::snprintf(line, sizeof line,
                "The two latents are %.0f degrees apart, so lerp's midpoint is %.0f%% shorter than slerp's. Decoded, the\n"
                "points between are latents no picture encodes to, and the decoder draws what it makes of them (see\n"
                "lesson07_interpolation.png); the pixel cross-fade is a double exposure, both shapes at once.\n",
                r.theta * 180 / std::acos(-1.0), 100 * (1 - r.rms_lerp[r.rms_lerp.size() / 2] / r.rms_slerp[r.rms_slerp.size() / 2]));
  out << line;

  // ---- Part 2: two prompts, from their starting noises, through the denoiser.
  if (o.denoise) {
    const int64_t C = sd.vae_config.latent_channels, f = sd.vae_config.downscale_factor();
    const Shape shape{1, C, o.size / f, o.size / f};
    const Tensor n1 = make_generator(o.rng, o.seed_a)->randn(shape), n2 = make_generator(o.rng, o.seed_b)->randn(shape);
    GenerationParams pa, pb;
    pa.prompt = o.prompt_a, pb.prompt = o.prompt_b;
    pa.guidance_scale = pb.guidance_scale = o.guidance_scale;
    const Tensor ca = encode_prompt(sd, pa), cb = encode_prompt(sd, pb);  // [2, 77, D] = [negative; prompt]
    r.noise_cosine = cosine(n1, n2);
    const double n = double(n1.numel());
    std::snprintf(line, sizeof line,
                  "\nPart 2: the starting noises of seeds %llu and %llu (%s), n = %.0f values each: rms %.3f and %.3f,\n"
                  "  cosine %+.3f. Two Gaussian vectors in n dimensions: rms 1 +- %.3f and cosine 0 +- %.3f, i.e. on a\n"
                  "  thin shell of radius sqrt(n), at right angles. Each point is denoised (%d %s steps, w = %s) with the\n"
                  "  text embeddings of the two prompts mixed in the same proportion, (1 - a) c_A + a c_B.\n",
                  (unsigned long long)o.seed_a, (unsigned long long)o.seed_b, o.rng.c_str(), n, rms(n1), rms(n2),
                  r.noise_cosine, 1 / std::sqrt(2 * n), 1 / std::sqrt(n), o.steps, o.scheduler.c_str(),
                  viz::format_number(o.guidance_scale).c_str());
    out << line;
    out << "     a   rms(lerp)  rms(slerp)   from lerp reads as       from slerp reads as\n";
    const auto t0 = clock::now();
    for (double a : o.alphas) {
      const Tensor zl = lerp(n1, n2, a), zs = slerp(n1, n2, a), c = lerp(ca, cb, a);
      r.noise_rms_lerp.push_back(rms(zl)), r.noise_rms_slerp.push_back(rms(zs));
      r.denoised_lerp.push_back(denoise_from(sd, o, zl, c));
      r.denoised_slerp.push_back(denoise_from(sd, o, zs, c));
      r.read_denoised_lerp.push_back(read_back(r.denoised_lerp.back()));
      r.read_denoised_slerp.push_back(read_back(r.denoised_slerp.back()));
      std::snprintf(line, sizeof line, "  %4.2f   %9.3f  %10.3f   %-24s %s\n", a, r.noise_rms_lerp.back(),
                    r.noise_rms_slerp.back(), r.read_denoised_lerp.back().c_str(), r.read_denoised_slerp.back().c_str());
      out << line;
    }
    const size_t mid = r.noise_rms_lerp.size() / 2;
    bool every_one_shape = o.size == shapes::kImageSize;  // the analyser found one shape in every picture of the walk
    for (const auto* reads : {&r.read_denoised_lerp, &r.read_denoised_slerp})
      for (const std::string& s : *reads) every_one_shape &= s.rfind("no shape", 0) != 0;
    double diff = 0;  // mean |lerp - slerp| of the middle pictures, on [0, 1] pixels
    for (int64_t i = 0; i < r.denoised_lerp[mid].numel(); ++i)
      diff += std::abs(r.denoised_lerp[mid][i] - r.denoised_slerp[mid][i]) / double(r.denoised_lerp[mid].numel());
    std::snprintf(line, sizeof line,
                  "  (%.1f s) lerp's midpoint noise has rms %.2f, %.0f standard deviations inside the shell every\n"
                  "  starting noise lies on: the sampler takes it for less noise than it is. Here the middle pictures\n"
                  "  from lerp and slerp differ by %.3f on average (pixels in [0, 1]).%s\n",
                  std::chrono::duration<double>(clock::now() - t0).count(), r.noise_rms_lerp[mid],
                  (1 - r.noise_rms_lerp[mid]) * std::sqrt(2 * n), diff,
                  every_one_shape ? " Every point of the walk is read as one shape of the dataset." : "");
    out << line;
  }

  // ---- Pictures: part 1's three rows, part 2's two rows, and the lengths along the way.
  if (!o.out_dir.empty()) {
    std::filesystem::create_directories(o.out_dir);
    const int scale = std::max(1, 128 / o.size);
    auto rows = [&](const std::vector<std::pair<std::string, const std::vector<Tensor>*>>& named,
                    const std::vector<const std::vector<std::string>*>& reads) {
      std::vector<viz::Canvas> tiles;
      std::vector<std::string> caps;
      for (size_t k = 0; k < named.size(); ++k)
        for (size_t i = 0; i < o.alphas.size(); ++i) {
          tiles.push_back(viz::picture((*named[k].second)[i], scale));
          const std::string& read = (*reads[k])[i];
          caps.push_back(named[k].first + " a=" + viz::format_number(o.alphas[i]) +
                         (read.empty() ? "" : ": " + read.substr(0, read.find(','))));
        }
      return viz::grid(tiles, caps, int(o.alphas.size()));
    };
    r.pictures.push_back(o.out_dir + "/lesson07_interpolation.png");
    stamped(rows({{"lerp", &r.decoded_lerp}, {"slerp", &r.decoded_slerp}, {"pixels", &r.crossfade}},
                 {&r.read_lerp, &r.read_slerp, &r.read_crossfade}),
            synthetic)
        .save(r.pictures.back());
    if (o.denoise) {
      r.pictures.push_back(o.out_dir + "/lesson07_denoised.png");
      stamped(rows({{"lerp", &r.denoised_lerp}, {"slerp", &r.denoised_slerp}}, {&r.read_denoised_lerp, &r.read_denoised_slerp}),
              synthetic)
          .save(r.pictures.back());
    }
    viz::Series sl("lerp of two starting noises"), ss("slerp of two starting noises");
    const Tensor n1 = make_generator(o.rng, o.seed_a)->randn(r.latent_shape),
                 n2 = make_generator(o.rng, o.seed_b)->randn(r.latent_shape);
    for (int k = 0; k <= 40; ++k) {
      const double a = k / 40.0;
      sl.x.push_back(a), sl.y.push_back(rms(lerp(n1, n2, a)));
      ss.x.push_back(a), ss.y.push_back(rms(slerp(n1, n2, a)));
    }
    viz::PlotOptions po;
    po.title = "length of the interpolated starting noise";
    po.x_label = "a  (0 = seed A's noise, 1 = seed B's)";
    po.y_label = "rms = ||z|| / sqrt(n)";
    po.y_min = 0, po.y_max = 1.3;
    po.legend = viz::Corner::BottomRight;
    r.pictures.push_back(o.out_dir + "/lesson07_norms.png");
    stamped(viz::plot({sl, ss}, po), synthetic).save(r.pictures.back());
    for (const auto& p : r.pictures) out << "Wrote " << p << "\n";
  }
  return r;
}

inline std::string tokenizer_dir(const std::string& given, const ModelFiles& files) {
  if (!given.empty()) return given;
  if (!files.tokenizer_dir.empty()) return files.tokenizer_dir;
  return shared_path("clip-tokenizer");
}

inline Result run(const Options& opts, std::ostream& out) {
  check_options(opts);
  make_generator(opts.rng, 0);  // an unknown name fails before the model loads
  make_scheduler(opts.scheduler, SchedulerConfig{});
  const std::string spec = model_spec(opts.model);
  const ModelFiles files = open_model(spec);
  out << "Model: " << files.description << "\n";
  StableDiffusion sd;
  if (opts.denoise) {  // the whole model
    LoadOptions lo;
    lo.tokenizer_dir = tokenizer_dir(opts.tokenizer, files);
    sd = load_stable_diffusion(files, lo);
  } else {  // the VAE is all it takes
    sd = cpu_pipeline(CLIPTextModel{}, UNet2DConditionModel{}, load_vae(files));
  }
  Options o = opts;
  const nlohmann::json& g = files.generation_defaults;
  if (o.size == 0) o.size = int(std::min<int64_t>(vae_config(files).sample_size, 128));
  if (o.steps == 0) o.steps = g.is_object() ? g.value("num_inference_steps", 20) : 20;
  if (o.guidance_scale == 0) o.guidance_scale = g.is_object() ? g.value("guidance_scale", 7.5f) : 7.5f;
  return run(sd, is_synthetic(spec), o, out);
}

}  // namespace ldm::lessons::latent_interpolation
