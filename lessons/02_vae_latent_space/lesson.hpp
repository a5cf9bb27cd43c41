// Lesson 2: the VAE's latent space (course day 76.3).
//
// Stable Diffusion never denoises pixels. A KL-regularised autoencoder, trained once and then
// frozen, maps an image x [1, 3, H, W] to a diagonal Gaussian q(z | x) over latents
// [1, 4, H/8, W/8] (encode) and a latent back to an image (decode). This lesson encodes an
// image, prints the shapes and the compression factor (48x for SD1.5), draws the 4 latent
// channels (the posterior mean) as viridis heat maps, decodes the latent and measures the reconstruction error.
#pragma once
#include <algorithm>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <ostream>
#include <string>
#include <vector>

#include "ldm/core/checkpoint.hpp"
#include "ldm/core/image.hpp"
#include "ldm/core/rng_ldm.hpp"
#include "ldm/load.hpp"
#include "ldm/models/vae.hpp"
#include "ldm/viz/colormap.hpp"
#include "ldm/viz/resize.hpp"
#include "ldm/viz/test_pattern.hpp"

namespace ldm::lessons::vae_latent_space {

struct Options {
  std::string model = "synthetic:sd15";  // diffusers folder, single .safetensors file, or synthetic:sd15
  std::string image;                     // any PNG/JPEG; "" = the built-in test pattern
  int64_t size = 128;                    // the image is centre-cropped and resized to size x size
  uint64_t seed = 0;                     // for the posterior sample z = mean + std * noise
  std::string out_dir = ".";             // where the pictures go ("" = none)
};

struct Result {
  Shape image_shape, latent_shape;
  double compression = 0;  // image values / latent values
  double mse = 0, psnr = 0;  // reconstruction error on [0, 1] pixels
  std::vector<std::string> pictures;
};

// The image the lesson encodes: the user's, cropped and resized, or the test pattern.
// -> [1, 3, size, size] in [0, 1]
inline Tensor input_image(const Options& o) {
  if (o.image.empty()) return viz::test_pattern(o.size, o.size);
  return viz::center_crop_resize(read_image(o.image), o.size);
}

// Per-channel mean and standard deviation of a [1, C, h, w] tensor.
inline void channel_stats(const Tensor& z, int64_t c, double* mean, double* std) {
  const int64_t n = z.dim(2) * z.dim(3);
  const float* p = z.data() + c * n;
  double s = 0, s2 = 0;
  for (int64_t i = 0; i < n; ++i) s += p[i], s2 += double(p[i]) * p[i];
  *mean = s / double(n);
  *std = std::sqrt(std::max(0.0, s2 / double(n) - *mean * *mean));
}

// `image` [1, 3, H, W] in [0, 1]; `real_weights` only changes what the lesson says about the result.
inline Result run(const AutoencoderKL& vae, const Tensor& image, bool real_weights, const Options& o,
                  std::ostream& out) {
  char line[256];
  Result r;
  const double sf = vae.config.scaling_factor;

  // 1. The image as the VAE wants it: [-1, 1].
  Tensor x = image.clone();
  x.vec().array() = x.vec().array() * 2.0f - 1.0f;
  r.image_shape = x.shape();
  std::snprintf(line, sizeof line, "image x      %-18s %8lld values   (RGB in [-1, 1])\n", x.shape_str().c_str(),
                (long long)x.numel());
  out << line;

  // 2. Encode: a Gaussian per latent value; sample one latent from it.
  const DiagonalGaussian post = vae.encode(x);
  LdmGenerator gen(o.seed);
  const Tensor z = post.sample(gen.randn(post.mean.shape()));
  r.latent_shape = z.shape();
  r.compression = double(x.numel()) / double(z.numel());
  std::snprintf(line, sizeof line, "latent z     %-18s %8lld values   (%.0fx fewer: %lldx smaller each side, %lld -> %lld channels)\n",
                z.shape_str().c_str(), (long long)z.numel(), r.compression, (long long)(x.dim(2) / z.dim(2)),
                (long long)x.dim(1), (long long)z.dim(1));
  out << line;
  const Tensor sd = post.std();
  auto [smin, smax] = viz::min_max(sd.data(), sd.numel());
  std::snprintf(line, sizeof line,
                "encode(x) is a Gaussian q(z|x) = N(mean, std^2) per latent value, std in [%.3g, %.3g] here;\n"
                "z = mean + std * noise is one sample of it (SD1.5's VAE was trained with a tiny KL weight, 1e-6,\n"
                "so its std is small and z stays close to the mean).\n",
                smin, smax);
  out << line;
  out << "The diffusion model sees z * scaling_factor (" << sf << "), about unit variance for the real VAE:\n";
  for (int64_t c = 0; c < z.dim(1); ++c) {
    double m, s;
    channel_stats(z, c, &m, &s);
    std::snprintf(line, sizeof line, "  channel %lld: mean %+.3f  std %.3f   (scaled: mean %+.3f  std %.3f)\n",
                  (long long)c, m, s, m * sf, s * sf);
    out << line;
  }

  // 3. Decode and compare, on [0, 1] pixels.
  Tensor x_hat = vae.decode(z);  // [1, 3, H, W], about [-1, 1]
  x_hat.vec().array() = ((x_hat.vec().array() + 1.0f) * 0.5f).max(0.0f).min(1.0f);
  double se = 0;
  for (int64_t i = 0; i < x_hat.numel(); ++i) se += double(x_hat[i] - image[i]) * double(x_hat[i] - image[i]);
  r.mse = se / double(x_hat.numel());
  r.psnr = 10.0 * std::log10(1.0 / std::max(r.mse, 1e-12));
  std::snprintf(line, sizeof line, "decode(z)    %-18s reconstruction MSE %.5f, PSNR %.1f dB (pixels in [0, 1])\n",
                x_hat.shape_str().c_str(), r.mse, r.psnr);
  out << line;
  if (real_weights)
    out << "(SD1.5's VAE typically reaches 23-28 dB at 512x512: fine texture and small text suffer first.)\n";
  else
    out << "NOTE: synthetic weights are not a trained autoencoder: the shapes and the arithmetic are real, the\n"
        << "reconstruction is noise. Run with --model path/to/stable-diffusion-v1-5 to see a real one.\n";

  // 4. Pictures: the latent channels as heat maps beside the image; image vs reconstruction.
  if (!o.out_dir.empty()) {
    std::filesystem::create_directories(o.out_dir);
    const int img_scale = std::max<int>(1, int(128 / x.dim(2)));
    const int lat_scale = int(x.dim(2) / z.dim(2)) * img_scale;  // a latent cell covers its 8x8 pixels
    const int64_t h = z.dim(2), w = z.dim(3);
    std::vector<viz::Canvas> tiles{viz::picture(image, img_scale)};
    std::vector<std::string> caps{"image"};
    for (int64_t c = 0; c < z.dim(1); ++c) {  // the mean: the latent without the sampling noise
      const float* p = post.mean.data() + c * h * w;
      auto [lo, hi] = viz::min_max(p, h * w);
      tiles.push_back(viz::heatmap(p, int(h), int(w), lo, hi, lat_scale));
      caps.push_back("channel " + std::to_string(c) + " [" + viz::format_number(lo) + ", " + viz::format_number(hi) + "]");
    }
    r.pictures.push_back(o.out_dir + "/lesson02_latents.png");
    viz::grid(tiles, caps, int(tiles.size())).save(r.pictures.back());

    std::vector<float> err(size_t(image.dim(2) * image.dim(3)));  // mean |x - x_hat| over RGB
    const int64_t plane = image.dim(2) * image.dim(3);
    for (int64_t i = 0; i < plane; ++i)
      for (int64_t c = 0; c < 3; ++c) err[size_t(i)] += std::abs(x_hat[c * plane + i] - image[c * plane + i]) / 3.0f;
    const float ehi = viz::min_max(err.data(), plane).second;
    char psnr[64];
    std::snprintf(psnr, sizeof psnr, "decoded, %.1f dB", r.psnr);
    r.pictures.push_back(o.out_dir + "/lesson02_reconstruction.png");
    viz::grid({viz::picture(image, img_scale), viz::picture(x_hat, img_scale),
               viz::heatmap(err.data(), int(image.dim(2)), int(image.dim(3)), 0.0f, std::max(ehi, 1e-6f), img_scale)},
              {"image x", psnr, "|x - x_hat|, 0 to " + viz::format_number(ehi)}, 3)
        .save(r.pictures.back());
    for (const auto& p : r.pictures) out << "Wrote " << p << "\n";
  }
  return r;
}

inline Result run(const Options& o, std::ostream& out) {
  LDM_CHECK(o.size >= 8 && o.size % 8 == 0, "lesson 2: --size must be a positive multiple of 8, got ", o.size);
  const Tensor image = input_image(o);  // first: a wrong path fails before the model loads
  ModelFiles files = open_model(o.model);
  if (!files.vae_config.is_object()) files.vae_config = nlohmann::json::object();  // no config.json: SD1.5's
  out << "VAE: " << files.description << "\n";
  const AutoencoderKL vae = load_vae(files);
  const bool synthetic = o.model.rfind("synthetic:", 0) == 0;
  out << "Input: " << (o.image.empty() ? "the built-in test pattern" : o.image) << ", at " << o.size << "x" << o.size
      << "\n\n";
  return run(vae, image, !synthetic, o, out);
}

}  // namespace ldm::lessons::vae_latent_space
