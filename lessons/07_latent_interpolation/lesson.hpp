// Lesson 7: interpolating between latents (course day 76, exercise 1).
//
// Two latents z1, z2 [1, 4, h, w] (the starting noise of two seeds, or two encoded images)
// and the points between them, decoded to images:
//
//     lerp(a)  = (1 - a) z1 + a z2                                   straight line
//     slerp(a) = sin((1 - a) theta) / sin(theta) z1 + sin(a theta) / sin(theta) z2,
//                cos(theta) = <z1, z2> / (|z1| |z2|)                   great circle (Shoemake 1985)
//
// Two independent Gaussian latents are nearly orthogonal and nearly the same length, sqrt(n)
// (in n = 1024 or 16384 dimensions a Gaussian lives on a thin shell). lerp cuts the chord:
// halfway its length is |z| / sqrt(2), a latent unlike any starting noise the model was
// trained on, so it denoises to a washed-out, blurry image. slerp follows the arc and keeps
// the length. By default the lesson decodes the interpolated latents directly (VAE only, a
// few seconds); --denoise runs the whole pipeline from each of them as its starting noise.
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
#include "ldm/viz/resize.hpp"

namespace ldm::lessons::latent_interpolation {

struct Options {
  std::string model = "synthetic:sd15";  // diffusers folder, single .safetensors file, or synthetic:sd15
  std::string image_a, image_b;          // both given: interpolate their encoded latents instead of noise
  uint64_t seed_a = 1, seed_b = 2;       // else: the starting noise of these two seeds
  std::string rng = "ldm";               // "ldm" or "torch-cpu" (diffusers' torch.Generator("cpu"))
  int size = 128;                        // image side (a multiple of 8)
  std::vector<double> alphas{0, 0.25, 0.5, 0.75, 1};
  // --denoise: generate from each interpolated noise (needs the U-Net, CLIP and a tokenizer)
  bool denoise = false;
  std::string tokenizer;  // "" = the model's tokenizer/, else ../shared/clip-tokenizer
  std::string prompt = "a red mug on a checkered table, oil painting";
  int steps = 4;
  std::string scheduler = "ddim";
  float guidance_scale = 7.5f;
  std::string out_dir = ".";  // where the pictures go ("" = none)
};

struct Result {
  Shape latent_shape;
  double rms_1 = 0, rms_2 = 0, cosine = 0, theta = 0;  // the endpoints; theta in radians
  std::vector<double> rms_lerp, rms_slerp;             // per alpha (rms = ||z|| / sqrt(n))
  std::vector<Tensor> decoded_lerp, decoded_slerp;     // [1, 3, H, W] in [0, 1], per alpha
  std::vector<Tensor> denoised_lerp, denoised_slerp;   // the same after the pipeline (--denoise)
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

// Latent (in the diffusion model's units, i.e. times scaling_factor) -> image [1, 3, H, W] in [0, 1].
inline Tensor decode_to_image(const StableDiffusion& sd, const Tensor& z) {
  Tensor x = z.clone();
  x.vec() /= sd.vae_config.scaling_factor;
  Tensor img = sd.runner->vae_decode(x);
  for (float& v : img) v = std::clamp(v / 2.0f + 0.5f, 0.0f, 1.0f);
  return img;
}

// An image [1, 3, H, W] in [0, 1] -> the mean of q(z|x), times scaling_factor [1, 4, H/8, W/8].
inline Tensor encode_image(const StableDiffusion& sd, const Tensor& image) {
  Tensor x = image.clone();
  x.vec().array() = x.vec().array() * 2.0f - 1.0f;
  Tensor z = sd.runner->vae_encode(x).mean;
  z.vec() *= sd.vae_config.scaling_factor;
  return z;
}

// The options' own errors, before anything loads.
inline void check_options(const Options& o) {
  LDM_CHECK(o.size >= 8 && o.size % 8 == 0, "lesson 7: --size must be a positive multiple of 8, got ", o.size);
  LDM_CHECK(o.image_a.empty() == o.image_b.empty(), "lesson 7: give both --image-a and --image-b, or neither");
  LDM_CHECK(o.image_a.empty() || !o.denoise, "lesson 7: --denoise starts the pipeline from interpolated noise, so it ",
            "works with --seed-a/--seed-b, not with --image-a/--image-b (drop one of them)");
  LDM_CHECK(!o.alphas.empty(), "lesson 7: give at least one alpha");
}

// sd's VAE decodes; its U-Net, text encoder and tokenizer are used only with --denoise.
// `real_weights` only changes what the lesson says about the pictures.
inline Result run(const StableDiffusion& sd, bool real_weights, const Options& o, std::ostream& out) {
  check_options(o);
  const bool from_images = !o.image_a.empty();
  using clock = std::chrono::steady_clock;
  char line[512];
  Result r;

  // 1. The endpoints.
  const int64_t h = o.size / 8, w = o.size / 8;
  Tensor z1, z2;
  if (from_images) {
    z1 = encode_image(sd, viz::center_crop_resize(read_image(o.image_a), o.size));
    z2 = encode_image(sd, viz::center_crop_resize(read_image(o.image_b), o.size));
    out << "Endpoints: the two images, encoded (the mean of q(z|x), times " << sd.vae_config.scaling_factor << ")\n";
  } else {
    z1 = make_generator(o.rng, o.seed_a)->randn({1, 4, h, w});
    z2 = make_generator(o.rng, o.seed_b)->randn({1, 4, h, w});
    out << "Endpoints: the starting noise z_T of seeds " << o.seed_a << " and " << o.seed_b << " (" << o.rng
        << " generator), as generate() draws it\n";
  }
  r.latent_shape = z1.shape();
  const double n = double(z1.numel());
  r.rms_1 = rms(z1), r.rms_2 = rms(z2);
  r.cosine = double(z1.vec().dot(z2.vec())) / (double(z1.vec().norm()) * double(z2.vec().norm()));
  r.theta = std::acos(std::clamp(r.cosine, -1.0, 1.0));
  std::snprintf(line, sizeof line,
                "z1, z2 %s, n = %.0f values each   (rms = ||z|| / sqrt(n))\n"
                "  rms(z1) = %.4f, rms(z2) = %.4f, cosine(z1, z2) = %+.4f: %.1f degrees apart\n",
                z1.shape_str().c_str(), n, r.rms_1, r.rms_2, r.cosine, r.theta * 180 / std::acos(-1.0));
  out << line;
  if (!from_images) {
    std::snprintf(
        line, sizeof line,
        "  Two Gaussian vectors in %.0f dimensions: rms 1 +- %.3f and cosine 0 +- %.3f, i.e. on a thin shell\n"
        "  of radius sqrt(n) and at right angles to each other, for almost every pair of seeds.\n",
        n, 1 / std::sqrt(2 * n), 1 / std::sqrt(n));
    out << line;
  }

  // 2. The interpolants and their lengths.
  out << "\n     a   rms(lerp)   rms(slerp)" << (from_images ? "" : "   lerp if orthogonal: sqrt((1-a)^2 + a^2)")
      << "\n";
  std::vector<Tensor> zl, zs;
  for (double a : o.alphas) {
    zl.push_back(lerp(z1, z2, a)), zs.push_back(slerp(z1, z2, a));
    r.rms_lerp.push_back(rms(zl.back())), r.rms_slerp.push_back(rms(zs.back()));
    std::snprintf(line, sizeof line, "  %4.2f   %9.4f   %10.4f", a, r.rms_lerp.back(), r.rms_slerp.back());
    out << line;
    if (!from_images) {
      std::snprintf(line, sizeof line, "   %.4f", std::sqrt((1 - a) * (1 - a) + a * a));
      out << line;
    }
    out << "\n";
  }
  if (!from_images) {
    std::snprintf(
        line, sizeof line,
        "lerp cuts the chord: halfway between two orthogonal latents of length r it has length r / sqrt(2) = 0.71 r,\n"
        "%.0f standard deviations inside the shell where every starting noise lies, so the sampler takes it for\n"
        "less noise than it is. slerp follows the arc and keeps the length (exactly, when |z1| = |z2|).\n",
        (1 - std::sqrt(0.5)) * std::sqrt(2 * n));
    out << line;
  } else {
    double gap = 0;
    for (size_t i = 0; i < o.alphas.size(); ++i) gap = std::max(gap, 1 - r.rms_lerp[i] / r.rms_slerp[i]);
    std::snprintf(line, sizeof line,
                  "Encoded images are not Gaussian noise: the closer their cosine is to 1, the closer lerp and slerp\n"
                  "(here lerp is at most %.0f%% shorter). The shell argument is about the starting noise.\n",
                  100 * gap);
    out << line;
  }

  // 3. Decode every interpolant: VAE only, no denoising. The endpoints are shared by both rows.
  auto t0 = clock::now();
  for (size_t i = 0; i < o.alphas.size(); ++i) r.decoded_lerp.push_back(decode_to_image(sd, zl[i]));
  for (size_t i = 0; i < o.alphas.size(); ++i) {
    const double a = o.alphas[i];
    r.decoded_slerp.push_back(a == 0 || a == 1 ? r.decoded_lerp[i] : decode_to_image(sd, zs[i]));
  }
  std::snprintf(line, sizeof line, "\nDecoded the interpolated latents (VAE only, no denoising) in %.1f s\n",
                std::chrono::duration<double>(clock::now() - t0).count());
  out << line;
  if (!from_images)
    out << "(A decoded starting noise is a picture of the noise, not an image; with a trained VAE, lerp's shorter\n"
        << "middle latents decode to fainter noise. Run with --denoise to see what the sampler makes of each.)\n";

  // 4. --denoise: the pipeline from each interpolated starting noise.
  if (o.denoise) {
    out << "\nDenoising from each (\"" << o.prompt << "\", " << o.steps << " " << o.scheduler
        << " steps, w = " << o.guidance_scale << "):\n";
    auto generate_from = [&](const Tensor& z) {
      GenerationParams p;
      p.prompt = o.prompt, p.scheduler = o.scheduler, p.steps = o.steps, p.guidance_scale = o.guidance_scale;
      p.width = p.height = o.size;
      p.init_latents = z;
      // The generator of seed_a after its z_T draw: every start gets the same step noise from an
      // ancestral sampler, and a = 0 is exactly what generate() makes from seed_a.
      auto gen = make_generator(o.rng, o.seed_a);
      gen->randn(z.shape());
      return nhwc_to_nchw(generate(sd, p, *gen).image);
    };
    t0 = clock::now();
    for (size_t i = 0; i < o.alphas.size(); ++i) r.denoised_lerp.push_back(generate_from(zl[i]));
    for (size_t i = 0; i < o.alphas.size(); ++i) {
      const double a = o.alphas[i];
      r.denoised_slerp.push_back(a == 0 || a == 1 ? r.denoised_lerp[i] : generate_from(zs[i]));
    }
    std::snprintf(line, sizeof line, "  done in %.1f s\n", std::chrono::duration<double>(clock::now() - t0).count());
    out << line;
  }
  if (!real_weights)
    out << "NOTE: synthetic weights are not a trained model: the latents and their lengths are real, the pictures\n"
        << "mean nothing. Run with --model path/to/stable-diffusion-v1-5 to see real images.\n";

  // 5. Pictures: the two rows of images, and the lengths along the way.
  if (!o.out_dir.empty()) {
    std::filesystem::create_directories(o.out_dir);
    const int scale = std::max(1, 128 / o.size);
    auto rows = [&](const std::vector<Tensor>& top, const std::vector<Tensor>& bottom) {
      std::vector<viz::Canvas> tiles;
      std::vector<std::string> caps;
      for (int row = 0; row < 2; ++row)
        for (size_t i = 0; i < o.alphas.size(); ++i) {
          tiles.push_back(viz::picture(row == 0 ? top[i] : bottom[i], scale));
          std::snprintf(line, sizeof line, "%s a=%s, rms %.2f", row == 0 ? "lerp" : "slerp",
                        viz::format_number(o.alphas[i]).c_str(), row == 0 ? r.rms_lerp[i] : r.rms_slerp[i]);
          caps.push_back(line);
        }
      return viz::grid(tiles, caps, int(o.alphas.size()));
    };
    r.pictures.push_back(o.out_dir + "/lesson07_interpolation.png");
    rows(r.decoded_lerp, r.decoded_slerp).save(r.pictures.back());
    if (o.denoise) {
      r.pictures.push_back(o.out_dir + "/lesson07_denoised.png");
      rows(r.denoised_lerp, r.denoised_slerp).save(r.pictures.back());
    }

    viz::Series sl("lerp"), ss("slerp");
    for (int k = 0; k <= 40; ++k) {
      const double a = k / 40.0;
      sl.x.push_back(a), sl.y.push_back(rms(lerp(z1, z2, a)));
      ss.x.push_back(a), ss.y.push_back(rms(slerp(z1, z2, a)));
    }
    viz::PlotOptions po;
    po.title = "length of the interpolated latent";
    po.x_label = "a  (0 = z1, 1 = z2)";
    po.y_label = "rms = ||z|| / sqrt(n)";
    po.y_min = 0, po.y_max = 1.2 * std::max(r.rms_1, r.rms_2);
    po.legend = viz::Corner::BottomRight;
    r.pictures.push_back(o.out_dir + "/lesson07_norms.png");
    viz::plot({sl, ss}, po).save(r.pictures.back());
    for (const auto& p : r.pictures) out << "Wrote " << p << "\n";
  }
  return r;
}

inline std::string tokenizer_dir(const std::string& given, const ModelFiles& files) {
  if (!given.empty()) return given;
  if (!files.tokenizer_dir.empty()) return files.tokenizer_dir;
  return shared_path("clip-tokenizer");
}

inline Result run(const Options& o, std::ostream& out) {
  check_options(o);
  make_generator(o.rng, 0);  // an unknown name fails before the model loads
  if (o.denoise) make_scheduler(o.scheduler, SchedulerConfig{});
  const ModelFiles files = open_model(o.model);
  out << "Model: " << files.description << "\n";
  StableDiffusion sd;
  if (o.denoise) {  // the whole model
    LoadOptions lo;
    lo.tokenizer_dir = tokenizer_dir(o.tokenizer, files);
    sd = load_stable_diffusion(o.model, lo);
  } else {  // the VAE is all it takes
    sd = cpu_pipeline(CLIPTextModel{}, UNet2DConditionModel{}, load_vae(files));
  }
  return run(sd, o.model.rfind("synthetic:", 0) != 0, o, out);
}

}  // namespace ldm::lessons::latent_interpolation
