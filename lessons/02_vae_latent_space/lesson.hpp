// Lesson 2: the VAE's latent space (course day 76.3).
//
// Stable Diffusion never denoises pixels. A KL-regularised autoencoder, trained once and then
// frozen, maps an image x [B, 3, H, W] to a diagonal Gaussian q(z | x) over latents
// [B, 4, H/8, W/8] (encode) and a latent back to an image (decode). This lesson encodes
// pictures of the dataset the default model was trained on (or your own), draws the 4 latent
// channels on one colour scale, decodes them, measures the reconstructions (PSNR), and computes
// the VAE's training loss of the course, reconstruction + beta * KL, term by term.
#pragma once
#include <algorithm>
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
#include "ldm/data/shapes.hpp"
#include "ldm/load.hpp"
#include "ldm/models/vae.hpp"
#include "ldm/viz/colormap.hpp"
#include "ldm/viz/resize.hpp"

namespace ldm::lessons::vae_latent_space {

struct Options {
  std::string model;         // "" = models/ldm-shapes; or a diffusers folder, a .safetensors file, synthetic:sd15
  std::string image;         // any PNG/JPEG; "" = four pictures of the captioned-shapes dataset
  int64_t size = 0;          // side the pictures are resized to; 0 = the VAE's own (its sample_size, at most 256)
  uint64_t seed = 0;         // for the posterior sample z = mean + std * noise
  double kl_weight = 1e-6;   // beta: what ldm-shapes' VAE (and SD's) was trained with
  std::string out_dir = ".";  // where the pictures go ("" = none)
};

struct Result {
  Shape image_shape, latent_shape;
  double compression = 0;          // image values / latent values
  std::vector<double> psnr;        // per picture, pixels in [0, 1]
  double reconstruction = 0;       // mean |x' - x| + mean (x' - x)^2 over the batch, x in [-1, 1]
  double kl = 0;                   // KL(q(z|x) || N(0, I)) per picture, summed over the latent (nats)
  double loss = 0;                 // reconstruction + kl_weight * kl / (3 H W)
  std::vector<std::string> pictures;
};

// The four dataset pictures the lesson encodes by default: a shape of each kind and size, on
// each background. -> their captions ("a large red circle at the top left on a black
// background"), short labels ("large red circle") and [4, 3, 64, 64] in [0, 1].
inline std::vector<std::string> dataset_pictures(Tensor* images, std::vector<std::string>* labels) {
  const ShapePick picks[] = {{1, 0, shapes::kCircle, true, 0},     // a large red circle at the top left on black
                             {0, 4, shapes::kSquare, false, 8},    // a small blue square at the bottom right on white
                             {2, 2, shapes::kTriangle, true, 4},   // a large yellow triangle at the center on gray
                             {1, 3, shapes::kCircle, false, 2}};   // a small green circle at the top right on black
  std::vector<std::string> captions;
  std::vector<Tensor> pictures;
  for (const ShapePick& p : picks) {
    captions.emplace_back(), labels->emplace_back();
    pictures.push_back(shape_picture(p, &captions.back(), &labels->back()));
  }
  *images = Tensor::empty({int64_t(pictures.size()), 3, 64, 64});
  for (size_t i = 0; i < pictures.size(); ++i)
    std::copy(pictures[i].begin(), pictures[i].end(), images->data() + int64_t(i) * pictures[i].numel());
  return captions;
}

// Nearest-neighbour resize of every picture of [B, 3, h, w] to [B, 3, size, size].
inline Tensor resize_batch(const Tensor& x, int64_t size) {
  if (x.dim(2) == size && x.dim(3) == size) return x;
  Tensor r = Tensor::empty({x.dim(0), 3, size, size});
  const int64_t h = x.dim(2), w = x.dim(3);
  for (int64_t b = 0; b < x.dim(0) * 3; ++b)
    for (int64_t y = 0; y < size; ++y)
      for (int64_t i = 0; i < size; ++i) r.data()[(b * size + y) * size + i] = x.data()[(b * h + y * h / size) * w + i * w / size];
  return r;
}

// `images` [B, 3, H, W] in [0, 1], `labels` one per picture (shown under it).
inline Result run(const AutoencoderKL& vae, const Tensor& images, const std::vector<std::string>& labels,
                  bool synthetic, const Options& o, std::ostream& out) {
  char line[320];
  Result r;
  const double sf = vae.config.scaling_factor;
  const int64_t B = images.dim(0);
  if (synthetic) say_synthetic(out);

  // 1. The pictures as the VAE wants them: [-1, 1].
  Tensor x = images.clone();
  x.vec().array() = x.vec().array() * 2.0f - 1.0f;
  r.image_shape = x.shape();
  std::snprintf(line, sizeof line, "images x     %-18s %8lld values   (RGB in [-1, 1])\n", x.shape_str().c_str(),
                (long long)x.numel());
  out << line;

  // 2. Encode: a Gaussian per latent value; sample one latent from it.
  const DiagonalGaussian post = vae.encode(x);
  LdmGenerator gen(o.seed);
  const Tensor z = post.sample(gen.randn(post.mean.shape()));
  r.latent_shape = z.shape();
  r.compression = double(x.numel()) / double(z.numel());
  std::snprintf(line, sizeof line,
                "latents z    %-18s %8lld values   (%.0fx fewer: %lldx smaller each side, %lld -> %lld channels)\n",
                z.shape_str().c_str(), (long long)z.numel(), r.compression, (long long)(x.dim(2) / z.dim(2)),
                (long long)x.dim(1), (long long)z.dim(1));
  out << line;
  const Tensor sd = post.std();
  const auto [mlo, mhi] = viz::min_max(post.mean.data(), post.mean.numel());
  const auto [slo, shi] = viz::min_max(sd.data(), sd.numel());
  std::snprintf(line, sizeof line,
                "encode(x) is a Gaussian q(z|x) = N(mean, std^2) per latent value: here the means span [%.2f, %.2f]\n"
                "and the stds [%.2g, %.2g], %s than the means' spread, so z = mean + std * noise stays close\n"
                "to the mean.\n",
                mlo, mhi, slo, shi, shi < 0.25 * (mhi - mlo) ? "much smaller" : "not small next to");
  out << line;
  out << "The diffusion model sees z * scaling_factor (" << sf << "), chosen to give the latents unit variance:\n";
  const int64_t hw = z.dim(2) * z.dim(3);
  for (int64_t c = 0; c < z.dim(1); ++c) {
    double s = 0, s2 = 0;
    for (int64_t b = 0; b < B; ++b)
      for (int64_t i = 0; i < hw; ++i) {
        const double v = z.data()[(b * z.dim(1) + c) * hw + i];
        s += v, s2 += v * v;
      }
    const double n = double(B * hw), m = s / n, st = std::sqrt(std::max(0.0, s2 / n - m * m));
    std::snprintf(line, sizeof line, "  channel %lld: mean %+.3f  std %.3f   (scaled: mean %+.3f  std %.3f)\n",
                  (long long)c, m, st, m * sf, st * sf);
    out << line;
  }

  // 3. Decode and compare, on [0, 1] pixels.
  const Tensor xr = vae.decode(z);  // [B, 3, H, W], about [-1, 1]
  Tensor x_hat = xr.clone();
  x_hat.vec().array() = ((x_hat.vec().array() + 1.0f) * 0.5f).max(0.0f).min(1.0f);
  const int64_t per = 3 * x.dim(2) * x.dim(3);
  for (int64_t b = 0; b < B; ++b) {
    double se = 0;
    for (int64_t i = b * per; i < (b + 1) * per; ++i) se += double(x_hat[i] - images[i]) * double(x_hat[i] - images[i]);
    r.psnr.push_back(10.0 * std::log10(1.0 / std::max(se / double(per), 1e-12)));
  }
  double mean_psnr = 0;
  for (double p : r.psnr) mean_psnr += p / double(B);
  std::snprintf(line, sizeof line, "decode(z)    %-18s reconstruction PSNR %.1f dB on average (pixels in [0, 1])\n",
                x_hat.shape_str().c_str(), mean_psnr);
  out << line;

  // 4. The VAE's training loss (course day 76.3: reconstruction + beta * KL), as ldm train vae
  //    computes it: L1 + L2 on [-1, 1] pixels, and the KL per picture divided by its pixels.
  double l1 = 0, l2 = 0;
  for (int64_t i = 0; i < x.numel(); ++i) {
    const double d = double(xr[i]) - double(x[i]);
    l1 += std::abs(d) / double(x.numel()), l2 += d * d / double(x.numel());
  }
  r.reconstruction = l1 + l2;
  const Tensor kl = post.kl();  // [B]
  for (int64_t b = 0; b < B; ++b) r.kl += double(kl[b]) / double(B);
  const double pixels = double(per);
  r.loss = r.reconstruction + o.kl_weight * r.kl / pixels;
  std::snprintf(line, sizeof line,
                "\nThe VAE loss of the course, reconstruction + beta * KL, on these pictures:\n"
                "  reconstruction  mean |x' - x| + mean (x' - x)^2 = %.4f + %.4f = %.4f\n"
                "  KL(q(z|x) || N(0, I)) = %.1f nats per picture (%.2f per latent value)\n"
                "  beta * KL / (3 H W)  = %.0e * %.1f / %.0f = %.2e\n"
                "  loss                 = %.4f\n",
                l1, l2, r.reconstruction, r.kl, r.kl / double(z.numel() / B), o.kl_weight, r.kl, pixels,
                o.kl_weight * r.kl / pixels, r.loss);
  out << line;
  out << "beta is tiny (" << o.kl_weight << ", as for SD1.5's VAE): the KL term only keeps the latents from drifting to\n"
      << "huge values; the encoder is free to put every detail in them. A large beta would pull q(z|x) towards\n"
      << "N(0, I) and the pictures would come back blurred (the classic VAE trade-off). The KL's own gradient\n"
      << "pushes each mean to 0 and each std to 1; reconstruction pushes the stds to 0.\n";
  if (!synthetic && mean_psnr < 20)
    out << "(A low PSNR: this VAE was not trained on pictures like these.)\n";
  out << "Where the error is: along the edges (see the error maps). Each latent value stands for an 8x8\n"
      << "patch, so sharp corners are what a small latent loses first.\n";

  // 5. Pictures: each picture beside its 4 latent channels, all on one colour scale; pictures,
  //    reconstructions and their errors.
  if (!o.out_dir.empty()) {
    std::filesystem::create_directories(o.out_dir);
    const int img_scale = std::max<int>(1, int(128 / x.dim(2)));
    const int lat_scale = int(x.dim(2) / z.dim(2)) * img_scale;  // a latent cell covers its 8x8 pixels
    const int64_t h = z.dim(2), w = z.dim(3);
    const float lim = std::max(std::abs(mlo), std::abs(mhi));  // one symmetric scale for every channel
    std::vector<viz::Canvas> tiles;
    std::vector<std::string> caps;
    for (int64_t b = 0; b < B; ++b) {
      tiles.push_back(viz::picture(images.slice0(b, b + 1), img_scale));
      caps.push_back(labels[size_t(b)]);
      for (int64_t c = 0; c < z.dim(1); ++c) {  // the mean: the latent without the sampling noise
        tiles.push_back(viz::heatmap(post.mean.data() + (b * z.dim(1) + c) * h * w, int(h), int(w), -lim, lim, lat_scale));
        caps.push_back("channel " + std::to_string(c));
      }
    }
    const viz::Canvas g = viz::grid(tiles, caps, int(z.dim(1)) + 1);
    const viz::Canvas bar = viz::colorbar(-lim, lim, std::min(g.height() - 40, 240));
    viz::Canvas sheet(g.width() + bar.width() + 16, g.height() + 22);
    sheet.text(8, 6, "posterior means, one colour scale for all (the latents' range)", viz::kBlack);
    sheet.blit(g, 0, 20);
    sheet.blit(bar, g.width() + 4, 20 + 8 + viz::Canvas::text_height() + 4);
    r.pictures.push_back(o.out_dir + "/lesson02_latents.png");
    stamped(sheet, synthetic).save(r.pictures.back());

    std::vector<viz::Canvas> rec;
    std::vector<std::string> rcaps;
    const int64_t plane = x.dim(2) * x.dim(3);
    for (int64_t b = 0; b < B; ++b) {
      std::vector<float> err(static_cast<size_t>(plane), 0.0f);  // mean |x - x_hat| over RGB, in [0, 1]
      for (int64_t i = 0; i < plane; ++i)
        for (int64_t c = 0; c < 3; ++c)
          err[size_t(i)] += std::abs(x_hat[(b * 3 + c) * plane + i] - images[(b * 3 + c) * plane + i]) / 3.0f;
      char psnr[64];
      std::snprintf(psnr, sizeof psnr, "decoded, %.1f dB", r.psnr[size_t(b)]);
      rec.push_back(viz::picture(images.slice0(b, b + 1), img_scale));
      rec.push_back(viz::picture(x_hat.slice0(b, b + 1), img_scale));
      rec.push_back(viz::heatmap(err.data(), int(x.dim(2)), int(x.dim(3)), 0.0f, 0.25f, img_scale));
      rcaps.insert(rcaps.end(), {"x", psnr, "|x - x'|, 0 to 0.25"});
    }
    r.pictures.push_back(o.out_dir + "/lesson02_reconstruction.png");
    stamped(viz::grid(rec, rcaps, 3), synthetic).save(r.pictures.back());
    for (const auto& p : r.pictures) out << "Wrote " << p << "\n";
  }
  return r;
}

inline Result run(const Options& o, std::ostream& out) {
  LDM_CHECK(o.size == 0 || (o.size >= 8 && o.size % 8 == 0), "lesson 2: --size must be a positive multiple of 8, got ",
            o.size);
  Tensor images;
  std::vector<std::string> labels, captions;
  if (o.image.empty()) {
    captions = dataset_pictures(&images, &labels);
  } else {
    images = read_image(o.image);  // first: a wrong path fails before the model loads
    labels = {std::filesystem::path(o.image).filename().string()};
  }
  const std::string spec = model_spec(o.model);
  ModelFiles files = open_model(spec);
  out << "VAE: " << files.description << "\n";
  const AutoencoderKL vae = load_vae(files);
  const int64_t size = o.size ? o.size : std::min<int64_t>(vae.config.sample_size, 256);
  images = o.image.empty() ? resize_batch(images, size) : viz::center_crop_resize(images, size);
  out << "Input: " << (o.image.empty() ? "4 pictures of the captioned-shapes dataset" : o.image) << ", at " << size
      << "x" << size << "\n";
  for (const std::string& c : captions) out << "  " << c << "\n";
  out << "\n";
  return run(vae, images, labels, is_synthetic(spec), o, out);
}

}  // namespace ldm::lessons::vae_latent_space
