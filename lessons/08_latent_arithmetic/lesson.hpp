// Lesson 8: arithmetic on VAE latents (course day 76, exercise 3).
//
// Word embeddings famously do "king - man + woman = queen". Does the VAE's latent space do
// the same with pictures? This lesson encodes three images a, b, c, computes
//
//     (z_a + z_b) / 2            the midpoint
//     z_b + (z_c - z_a)          "a is to c as b is to ?"  (the analogy)
//
// decodes them, and puts each beside the same arithmetic done on the pixels. The VAE's latent
// is a local, compressed picture (each value describes an 8x8 patch), so its arithmetic
// behaves much like pixel arithmetic: the midpoint is a double exposure, and the analogy adds
// a's change (c - a) to b where a had it, not where b has the same things (with the built-in
// images: b in daylight where a's mug was and a ghost where a's sun was, not "b at dusk").
// Concept algebra works in spaces that encode meaning: CLIP's text embeddings (mixing prompts)
// or the U-Net's bottleneck ("h-space", Kwon et al. 2023). VAE only: a few seconds.
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
#include "ldm/load.hpp"
#include "ldm/models/vae.hpp"
#include "ldm/viz/colormap.hpp"
#include "ldm/viz/resize.hpp"
#include "ldm/viz/test_pattern.hpp"

namespace ldm::lessons::latent_arithmetic {

struct Options {
  std::string model = "synthetic:sd15";  // diffusers folder, single .safetensors file, or synthetic:sd15
  // PNG/JPEG files; "" = the built-in patterns: a = the test scene, b = a mirrored, c = a at dusk
  std::string image_a, image_b, image_c;
  int64_t size = 128;         // the images are centre-cropped and resized to size x size
  std::string out_dir = ".";  // where the picture goes ("" = none)
};

// The warm tint of the default image c: a's red, green and blue times these.
inline constexpr float kDusk[3] = {1.0f, 0.7f, 0.55f};

struct Op {
  std::string name;          // "(z_a + z_b) / 2"
  Tensor latent;             // [1, 4, h, w], times scaling_factor
  Tensor decoded, pixel;     // [1, 3, H, W] in [0, 1]: decode(latent), the same arithmetic on pixels
  double rms = 0, psnr = 0;  // rms of the latent; PSNR of decoded vs pixel
};

struct Result {
  Shape latent_shape;
  std::vector<Tensor> z;  // z_a, z_b, z_c [1, 4, h, w]: the posterior means, times scaling_factor
  double cosine_ab = 0;   // cosine(z_a, z_b)
  std::vector<Op> ops;    // z_a (the reconstruction), the midpoint, the analogy
  double linearity = 0;   // PSNR of decode((z_a + z_b) / 2) vs (decode(z_a) + decode(z_b)) / 2
  // With the built-in images only (else NaN): the analogy's intended answer, "b at dusk", and
  // the PSNR of the decoded analogy and of its pixel twin against it.
  Tensor wanted;
  double wanted_psnr_latent = NAN, wanted_psnr_pixel = NAN;
  std::vector<std::string> pictures;
};

// [1, 3, H, W] flipped left to right.
inline Tensor mirror(const Tensor& x) {
  Tensor y = Tensor::empty(x.shape());
  const int64_t H = x.dim(2), W = x.dim(3);
  for (int64_t p = 0; p < x.dim(0) * x.dim(1) * H; ++p)
    for (int64_t q = 0; q < W; ++q) y[p * W + q] = x[p * W + (W - 1 - q)];
  return y;
}

// [1, 3, H, W] with each colour channel scaled.
inline Tensor tint(const Tensor& x, const float (&k)[3]) {
  Tensor y = x.clone();
  const int64_t plane = x.dim(2) * x.dim(3);
  for (int64_t c = 0; c < 3; ++c)
    for (int64_t i = 0; i < plane; ++i) y[c * plane + i] *= k[c];
  return y;
}

// The three input images [1, 3, size, size] in [0, 1]: the user's, or the built-in patterns.
inline std::vector<Tensor> input_images(const Options& o) {
  const Tensor scene = viz::test_pattern(o.size, o.size);
  auto load = [&](const std::string& path, const Tensor& fallback) {
    return path.empty() ? fallback : viz::center_crop_resize(read_image(path), o.size);
  };
  return {load(o.image_a, scene), load(o.image_b, mirror(scene)), load(o.image_c, tint(scene, kDusk))};
}

inline double psnr(const Tensor& x, const Tensor& y) {  // both in [0, 1]
  Tensor d = Tensor::empty(x.shape());
  d.vec() = x.vec() - y.vec();
  const double mse = d.vec().squaredNorm() / double(d.numel());
  return 10.0 * std::log10(1.0 / std::max(mse, 1e-12));
}

inline Tensor clamp01(Tensor x) {
  for (float& v : x) v = std::clamp(v, 0.0f, 1.0f);
  return x;
}

// a x + b y (+ c z), elementwise: the same formula for latents and for pixels.
inline Tensor combine(float a, const Tensor& x, float b, const Tensor& y, float c = 0, const Tensor* z = nullptr) {
  check_shape(y, x.shape(), "combine");
  Tensor r = Tensor::empty(x.shape());
  r.vec() = a * x.vec() + b * y.vec();
  if (z) r.vec() += c * z->vec();
  return r;
}

// `images` = {a, b, c}, each [1, 3, H, W] in [0, 1]; `real_weights` only changes what the lesson says.
inline Result run(const AutoencoderKL& vae, const std::vector<Tensor>& images, bool real_weights, const Options& o,
                  std::ostream& out) {
  LDM_CHECK(images.size() == 3, "lesson 8: expected 3 images (a, b, c), got ", images.size());
  for (const Tensor& x : images) check_shape(x, images[0].shape(), "lesson 8: every image");
  char line[512];
  Result r;
  const float sf = vae.config.scaling_factor;

  // 1. Encode: the posterior mean (its most likely latent), in the diffusion model's units.
  std::vector<Tensor>& z = r.z;
  for (const Tensor& img : images) {
    Tensor x = img.clone();
    x.vec().array() = x.vec().array() * 2.0f - 1.0f;  // [0, 1] -> [-1, 1]
    z.push_back(vae.encode(x).mean);                  // [1, 4, H/8, W/8]
    z.back().vec() *= sf;
  }
  auto decode = [&](const Tensor& latent) {  // [1, 4, h, w] * sf -> [1, 3, H, W] in [0, 1]
    Tensor y = latent.clone();
    y.vec() /= sf;
    Tensor img = vae.decode(y);
    for (float& v : img) v = std::clamp(v / 2.0f + 0.5f, 0.0f, 1.0f);
    return img;
  };
  r.latent_shape = z[0].shape();
  r.cosine_ab = double(z[0].vec().dot(z[1].vec())) / (double(z[0].vec().norm()) * double(z[1].vec().norm()));
  std::snprintf(line, sizeof line, "encode: image %s -> the mean of q(z|x), times %g -> z %s\n",
                images[0].shape_str().c_str(), double(sf), z[0].shape_str().c_str());
  out << line;
  std::snprintf(line, sizeof line, "  cosine(z_a, z_b) = %.3f   (rms = ||z|| / sqrt(n) below)\n\n", r.cosine_ab);
  out << line;

  // 2. The operations, each on latents and on pixels.
  r.ops.push_back({"z_a", z[0], {}, images[0]});
  r.ops.push_back({"(z_a + z_b) / 2", combine(0.5f, z[0], 0.5f, z[1]), {}, combine(0.5f, images[0], 0.5f, images[1])});
  r.ops.push_back({"z_b + (z_c - z_a)",
                   combine(1, z[1], -1, z[0], 1, &z[2]),
                   {},
                   clamp01(combine(1, images[1], -1, images[0], 1, &images[2]))});
  out << "  latent                rms     decode(latent) vs the same arithmetic on pixels\n";
  const char* pixel_names[] = {"x_a", "(x_a + x_b) / 2", "x_b + (x_c - x_a), clamped"};
  for (size_t i = 0; i < r.ops.size(); ++i) {
    Op& op = r.ops[i];
    op.decoded = decode(op.latent);
    op.rms = op.latent.vec().norm() / std::sqrt(double(op.latent.numel()));
    op.psnr = psnr(op.decoded, op.pixel);
    std::snprintf(line, sizeof line, "  %-20s %6.3f   PSNR %5.1f dB vs %s\n", op.name.c_str(), op.rms, op.psnr,
                  pixel_names[i]);
    out << line;
  }
  // How linear is the decoder? If it were, decoding the midpoint would average the decodings.
  const Tensor decoded_b = decode(z[1]);
  r.linearity = psnr(r.ops[1].decoded, combine(0.5f, r.ops[0].decoded, 0.5f, decoded_b));
  std::snprintf(line, sizeof line,
                "decoder linearity: decode((z_a + z_b) / 2) vs (decode(z_a) + decode(z_b)) / 2: PSNR %.1f dB\n",
                r.linearity);
  out << line;
  out << "The first line is the VAE's own round-trip error: the others are only as close as that allows.\n";
  if (o.image_a.empty() && o.image_b.empty() && o.image_c.empty()) {  // the built-in images: a known answer
    r.wanted = tint(images[1], kDusk);
    r.wanted_psnr_latent = psnr(r.ops[2].decoded, r.wanted);
    r.wanted_psnr_pixel = psnr(r.ops[2].pixel, r.wanted);
    std::snprintf(
        line, sizeof line,
        "\"a is to c as b is to ?\" wants b at dusk: decode(z_b + z_c - z_a) reaches PSNR %.1f dB of it, the pixel\n"
        "arithmetic %.1f dB: c - a is made of a's pixels, so b gets dusk where it looks like a, a daylight\n"
        "hole where a's red mug was (dusk barely changes red) and a ghost where a's sun was.\n",
        r.wanted_psnr_latent, r.wanted_psnr_pixel);
    out << line;
  }
  if (real_weights)
    out << "A high PSNR on the other lines means the latent arithmetic did what pixel arithmetic does: a double\n"
        << "exposure, not a new object. Latents are compressed patches, not concepts.\n";
  else
    out << "NOTE: synthetic weights are not a trained autoencoder: the arithmetic is real, the decoded pictures\n"
        << "are noise. Run with --model path/to/stable-diffusion-v1-5 to see what the real VAE's latents do.\n";

  // 3. The picture: the inputs and the reconstruction, then each operation beside its pixel twin.
  if (!o.out_dir.empty()) {
    std::filesystem::create_directories(o.out_dir);
    const int scale = std::max(1, int(128 / images[0].dim(2)));
    std::vector<viz::Canvas> tiles{viz::picture(images[0], scale),        viz::picture(images[1], scale),
                                   viz::picture(images[2], scale),        viz::picture(r.ops[0].decoded, scale),
                                   viz::picture(r.ops[1].decoded, scale), viz::picture(r.ops[1].pixel, scale),
                                   viz::picture(r.ops[2].decoded, scale), viz::picture(r.ops[2].pixel, scale)};
    std::vector<std::string> caps{
        "a", "b", "c", "decode(z_a)", "decode((z_a+z_b)/2)", "pixels (a+b)/2", "decode(z_b+z_c-z_a)", "pixels b+c-a"};
    if (r.wanted.defined()) tiles.push_back(viz::picture(r.wanted, scale)), caps.push_back("wanted: b at dusk");
    r.pictures.push_back(o.out_dir + "/lesson08_arithmetic.png");
    viz::grid(tiles, caps, 3).save(r.pictures.back());
    for (const auto& p : r.pictures) out << "Wrote " << p << "\n";
  }
  return r;
}

inline Result run(const Options& o, std::ostream& out) {
  LDM_CHECK(o.size >= 8 && o.size % 8 == 0, "lesson 8: --size must be a positive multiple of 8, got ", o.size);
  const std::vector<Tensor> images = input_images(o);  // first: a wrong path fails before the model loads
  const ModelFiles files = open_model(o.model);
  out << "VAE: " << files.description << "\n";
  out << "a: " << (o.image_a.empty() ? "the built-in test pattern" : o.image_a) << "\n"
      << "b: " << (o.image_b.empty() ? "the test pattern, mirrored" : o.image_b) << "\n"
      << "c: " << (o.image_c.empty() ? "the test pattern at dusk (red, green, blue x 1, 0.7, 0.55)" : o.image_c)
      << "\n";
  out << "(all centre-cropped and resized to " << o.size << "x" << o.size << ")\n";
  const AutoencoderKL vae = load_vae(files);
  return run(vae, images, o.model.rfind("synthetic:", 0) != 0, o, out);
}

}  // namespace ldm::lessons::latent_arithmetic
