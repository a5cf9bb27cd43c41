// Lesson 1: the pixel-space problem (course day 76.1 and exercise 4).
//
// A denoising U-Net runs once per sampling step (50 steps, twice each with classifier-free
// guidance). How much it costs depends on the size of what it denoises: a 512x512 RGB image
// is 786,432 values, SD1.5's 64x64x4 latent 16,384 (48x fewer). This lesson
//   1. counts the FLOPs of one SD1.5 U-Net forward on both, by arithmetic over the
//      architecture (the same walk as UNet2DConditionModel::load, checked by its parameter
//      count, 859,520,964), split into convolutions, linear layers and attention;
//   2. times the model's real U-Net on its latent and a pixel-space U-Net of the same design
//      (the same config with 3 channels in and out) on the picture, at full size where that
//      fits in a few seconds, else at the largest size that does, extrapolated by the FLOP count
//      and labelled so; adds the VAE's decode to the latent side; and prints the measured
//      ratio for a whole 50-step sampling with guidance: the headline.
// Default model: models/ldm-shapes (8x8x4 latents of 64x64 pictures: everything measured).
#pragma once
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <filesystem>
#include <memory>
#include <ostream>
#include <string>
#include <vector>

#include "../lesson_common.hpp"
#include "ldm/core/checkpoint.hpp"
#include "ldm/core/rng_ldm.hpp"
#include "ldm/load.hpp"
#include "ldm/models/unet.hpp"
#include "ldm/viz/plot.hpp"

namespace ldm::lessons::pixel_space {

// ---------------------------------------------------------------- cost by arithmetic

// FLOPs of one forward (a multiply-add counts 2), by kind, and the parameters met on the way.
// Normalisations, activations and additions are left out: they are O(values), not O(values x
// channels), and well under 1% of the total.
struct Cost {
  double conv = 0, linear = 0, attention = 0;  // attention = the two matmuls QK^T and PV
  int64_t params = 0;
  double total() const { return conv + linear + attention; }
};

class CostCounter {
 public:
  Cost cost;
  void conv(int64_t cin, int64_t cout, int64_t k, int64_t ho, int64_t wo) {
    cost.params += cout * cin * k * k + cout;
    cost.conv += 2.0 * double(cout * cin * k * k) * double(ho * wo);
  }
  void linear(int64_t in, int64_t out, int64_t tokens, bool bias = true) {
    cost.params += in * out + (bias ? out : 0);
    cost.linear += 2.0 * double(in * out) * double(tokens);
  }
  void norm(int64_t channels) { cost.params += 2 * channels; }  // GroupNorm / LayerNorm gain and bias
  // softmax(Q K^T / sqrt(d)) V over `inner` features: two [Lq x Lk x inner] products.
  void attention(int64_t lq, int64_t lk, int64_t inner) { cost.attention += 4.0 * double(lq) * double(lk) * double(inner); }

  // ResnetBlock2D at h x w.
  void resnet(int64_t cin, int64_t cout, int64_t temb, int64_t h, int64_t w) {
    norm(cin);
    conv(cin, cout, 3, h, w);
    linear(temb, cout, 1);
    norm(cout);
    conv(cout, cout, 3, h, w);
    if (cin != cout) conv(cin, cout, 1, h, w);
  }
  // Transformer2DModel at h x w: h*w pixel tokens attend to each other and to the text.
  void transformer(int64_t ch, int64_t heads, int64_t layers, const UNetConfig& c, int64_t ctx_len, int64_t h,
                   int64_t w) {
    const int64_t L = h * w, inner = ch, D = c.cross_attention_dim;  // SD: heads * (ch / heads) = ch
    (void)heads;
    norm(ch);
    linear(ch, inner, L);  // proj_in (a 1x1 conv is the same product)
    for (int64_t i = 0; i < layers; ++i) {
      norm(inner);  // attn1: self-attention, L x L
      linear(inner, inner, L, false), linear(inner, inner, L, false), linear(inner, inner, L, false);
      attention(L, L, inner);
      linear(inner, inner, L);
      norm(inner);  // attn2: cross-attention to the ctx_len text tokens
      linear(inner, inner, L, false), linear(D, inner, ctx_len, false), linear(D, inner, ctx_len, false);
      attention(L, ctx_len, inner);
      linear(inner, inner, L);
      norm(inner);  // GEGLU feed-forward
      linear(inner, 8 * inner, L);
      linear(4 * inner, inner, L);
    }
    linear(inner, ch, L);  // proj_out
  }
};

// One UNet2DConditionModel forward on latents [1, in_channels, H, W] with ctx_len text tokens,
// walking the blocks in the order UNet2DConditionModel::load builds them.
inline Cost unet_cost(const UNetConfig& c, int64_t H, int64_t W, int64_t ctx_len = 77) {
  c.validate();
  CostCounter k;
  const auto& ch = c.block_out_channels;
  const int64_t n = c.num_blocks(), temb = c.time_embed_dim();
  k.conv(c.in_channels, ch[0], 3, H, W);  // conv_in
  k.linear(ch[0], temb, 1);               // time_embedding
  k.linear(temb, temb, 1);
  int64_t h = H, w = W;
  for (int64_t i = 0; i < n; ++i) {  // down blocks
    const size_t s = size_t(i);
    const int64_t cout = ch[s], cin = i == 0 ? ch[0] : ch[s - 1];
    for (int64_t j = 0; j < c.layers_per_block[s]; ++j) {
      k.resnet(j == 0 ? cin : cout, cout, temb, h, w);
      if (c.down_block_types[s] == "CrossAttnDownBlock2D")
        k.transformer(cout, c.attention_head_dim[s], c.transformer_layers_per_block[s], c, ctx_len, h, w);
    }
    if (i < n - 1) {
      h = (h + 1) / 2, w = (w + 1) / 2;  // 3x3 stride-2 conv, padding 1
      k.conv(cout, cout, 3, h, w);
    }
  }
  k.resnet(ch.back(), ch.back(), temb, h, w);  // mid block
  k.transformer(ch.back(), c.attention_head_dim.back(), c.transformer_layers_per_block.back(), c, ctx_len, h, w);
  k.resnet(ch.back(), ch.back(), temb, h, w);
  for (int64_t i = 0; i < n; ++i) {  // up blocks
    const size_t r = size_t(n - 1 - i);
    const int64_t in = ch[r == 0 ? 0 : r - 1], out = ch[r], prev = ch[std::min(r + 1, size_t(n - 1))];
    const int64_t layers = c.layers_per_block[r] + 1;
    for (int64_t j = 0; j < layers; ++j) {
      const int64_t skip = j == layers - 1 ? in : out, rin = j == 0 ? prev : out;
      k.resnet(rin + skip, out, temb, h, w);
      if (c.up_block_types[size_t(i)] == "CrossAttnUpBlock2D")
        k.transformer(out, c.attention_head_dim[r], c.transformer_layers_per_block[r], c, ctx_len, h, w);
    }
    if (i < n - 1) {
      h *= 2, w *= 2;  // nearest 2x, then a 3x3 conv
      k.conv(out, out, 3, h, w);
    }
  }
  k.norm(ch[0]);  // conv_norm_out, conv_out
  k.conv(ch[0], c.out_channels, 3, H, W);
  return k.cost;
}

// The same architecture denoising RGB pixels instead of latents.
inline UNetConfig pixel_space(UNetConfig c) {
  c.in_channels = 3;
  c.out_channels = 3;
  return c;
}

// (With SD1.5's attention at the top level, a 512x512 picture is 262,144 tokens attending to
// each other: 4 * 262144^2 * 320 = 88 TFLOP for each of the 5 top-level transformers'
// self-attention, 92% of the pixel-space step.)

// ---------------------------------------------------------------- the lesson

struct Options {
  std::string model;       // "" = models/ldm-shapes; or a diffusers folder, a .safetensors file, synthetic:sd15
  int64_t image_size = 0;  // picture side; 0 = the model's own (64 for ldm-shapes, 512 for SD1.5)
  int repeats = 3;         // timed runs of each forward (the fastest is kept)
  double budget_gflop = 60;  // the largest pixel-space forward actually run; beyond it, extrapolated
  std::string out_dir = ".";  // where the picture goes ("" = none)
};

struct Result {
  int64_t pixel_values = 0, latent_values = 0;
  Cost pixel, latent;                 // one forward of the model's U-Net design, by arithmetic
  double latent_ms = 0, pixel_ms = 0;  // measured (pixel_ms extrapolated when pixel_measured_side < side)
  int64_t pixel_measured_side = 0;     // the picture side the pixel-space U-Net really ran at
  double vae_decode_ms = 0;            // the VAE's decode of one latent, measured
  double latent_total_ms = 0, pixel_total_ms = 0;  // a 50-step sampling with guidance, per picture
  std::string picture;                 // path of the cost-vs-size plot ("" when none)
};

inline double gflop(double f) { return f * 1e-9; }

// Wall time of the fastest of `repeats` runs of f, in milliseconds.
template <typename F>
double time_ms(int repeats, F f) {
  double best = 1e300;
  for (int i = 0; i < std::max(repeats, 1); ++i) {
    const auto t0 = std::chrono::steady_clock::now();
    f();
    best = std::min(best, std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count());
  }
  return best;
}

inline Result run(const Options& o, std::ostream& out) {
  const std::string spec = model_spec(o.model);
  const ModelFiles files = open_model(spec);
  const UNetConfig sd = unet_config(files);
  const VAEConfig vc = vae_config(files);
  const int64_t f = vc.downscale_factor(), step = f * sd.size_multiple();
  const int64_t S = o.image_size ? o.image_size : sd.sample_size * f, s = S / f;
  LDM_CHECK(S >= step && S % step == 0, "lesson 1: --size must be a multiple of ", step,
            " (the VAE's factor times the U-Net's downsamplings), got ", S);
  char line[320];
  Result r;
  out << "Model: " << files.description << "\n";
  if (is_synthetic(spec)) out << "(synthetic weights: costs and times are real, they do not depend on the values)\n";

  // 1. Values per step.
  r.pixel_values = S * S * 3;
  r.latent_values = s * s * sd.in_channels;
  out << "Values the U-Net denoises at every step:\n";
  std::snprintf(line, sizeof line, "  pixel space   %4lldx%-4lldx 3 = %9lld values\n", (long long)S, (long long)S,
                (long long)r.pixel_values);
  out << line;
  std::snprintf(line, sizeof line, "  latent space  %4lldx%-4lldx %lld = %9lld values   (%.0fx fewer)\n\n",
                (long long)s, (long long)s, (long long)sd.in_channels, (long long)r.latent_values,
                double(r.pixel_values) / double(r.latent_values));
  out << line;

  // 2. FLOPs of the model's U-Net design by arithmetic.
  r.pixel = unet_cost(pixel_space(sd), S, S);
  r.latent = unet_cost(sd, s, s);
  out << "One forward of the U-Net (" << viz::with_commas(r.latent.params) << " parameters), counted by arithmetic:\n";
  std::snprintf(line, sizeof line, "  %-28s %14s %14s %8s\n", "GFLOP", "pixel space", "latent space", "ratio");
  out << line;
  auto row = [&](const char* what, double p, double l) {
    std::snprintf(line, sizeof line, "  %-28s %14.2f %14.3f %7.0fx\n", what, gflop(p), gflop(l), l > 0 ? p / l : 0.0);
    out << line;
  };
  row("convolutions", r.pixel.conv, r.latent.conv);
  row("linear layers", r.pixel.linear, r.latent.linear);
  row("attention (QK^T and PV)", r.pixel.attention, r.latent.attention);
  row("total", r.pixel.total(), r.latent.total());
  out << "  Convolutions and linear layers grow with the number of values, self-attention with its square\n"
      << "  (pixel-space models keep attention to their coarse levels for that reason). The exercise compares\n"
      << "  equal designs; what counts is the time, measured below.\n\n";

  // 3. Measured: the real U-Net on the latent; its pixel-space twin (synthetic weights: the time
  //    does not depend on them) on the picture, or on the largest side within the budget.
  const UNet2DConditionModel unet = load_unet(files);
  UNet2DConditionModel twin;
  {
    WeightStore w(std::make_shared<SyntheticSource>());
    twin.load(w, "", pixel_space(sd));
    w.finish();
  }
  LdmGenerator gen(0);
  const Tensor context = gen.randn({1, 77, sd.cross_attention_dim});
  const Tensor z = gen.randn({1, sd.in_channels, s, s});
  r.latent_ms = time_ms(o.repeats, [&] { unet.forward(z, 500.0f, context); });
  r.pixel_measured_side = S;
  while (r.pixel_measured_side > step && gflop(unet_cost(pixel_space(sd), r.pixel_measured_side, r.pixel_measured_side).total()) > o.budget_gflop)
    r.pixel_measured_side -= step;
  const int64_t P = r.pixel_measured_side;
  const Tensor x = gen.randn({1, 3, P, P});
  const double measured = time_ms(P == S ? o.repeats : 1, [&] { twin.forward(x, 500.0f, context); });
  r.pixel_ms = measured * (P == S ? 1.0 : r.pixel.total() / unet_cost(pixel_space(sd), P, P).total());
  const AutoencoderKL vae = load_vae(files);
  r.vae_decode_ms = time_ms(o.repeats, [&] { vae.decode(z); });
  std::snprintf(line, sizeof line, "Measured on this machine (fastest of %d):\n  U-Net, latent [1, %lld, %lld, %lld]   %10.1f ms\n",
                o.repeats, (long long)sd.in_channels, (long long)s, (long long)s, r.latent_ms);
  out << line;
  if (P == S) {
    std::snprintf(line, sizeof line, "  U-Net, pixels [1, 3, %lld, %lld]  %10.1f ms\n", (long long)S, (long long)S, r.pixel_ms);
  } else {
    std::snprintf(line, sizeof line,
                  "  U-Net, pixels [1, 3, %lld, %lld]  %10.0f ms  EXTRAPOLATED: run at %lldx%lld (%.0f ms), scaled by the FLOP\n"
                  "                                          count to %lldx%lld (x%.0f)\n",
                  (long long)S, (long long)S, r.pixel_ms, (long long)P, (long long)P, measured, (long long)S, (long long)S,
                  r.pixel_ms / measured);
  }
  out << line;
  std::snprintf(line, sizeof line, "  VAE decode of the latent                %10.1f ms  (once per picture)\n", r.vae_decode_ms);
  out << line;
  r.latent_total_ms = 100 * r.latent_ms + r.vae_decode_ms;
  r.pixel_total_ms = 100 * r.pixel_ms;
  std::snprintf(line, sizeof line,
                "A picture, 50 steps with guidance (100 U-Net forwards):\n"
                "  latent space  100 x %.1f ms + %.1f ms decode = %.2f s\n"
                "  pixel space   100 x %.1f ms                  = %.2f s%s\n"
                "  latent diffusion is %.0fx faster, measured (one step alone: %.0fx; the FLOP ratio: %.0fx).\n",
                r.latent_ms, r.vae_decode_ms, r.latent_total_ms / 1000, r.pixel_ms, r.pixel_total_ms / 1000,
                P == S ? "" : " (extrapolated)", r.pixel_total_ms / r.latent_total_ms, r.pixel_ms / r.latent_ms,
                r.pixel.total() / r.latent.total());
  out << line;
  const double latent_rate = gflop(r.latent.total()) / (r.latent_ms / 1000),
               pixel_rate = gflop(unet_cost(pixel_space(sd), P, P).total()) / (measured / 1000);
  std::snprintf(line, sizeof line, "  Achieved: %.0f GFLOP/s on the latent, %.0f GFLOP/s on the pixels%s.\n", latent_rate,
                pixel_rate, P == S ? "" : " (at the size run)");
  out << line;
  if (latent_rate < 0.5 * pixel_rate) {
    std::snprintf(line, sizeof line,
                  "  A small input cannot keep the cores busy: the step is then mostly reading the %.0f MB of weights\n"
                  "  and per-layer overhead, so the measured gain is below the FLOP ratio.\n",
                  double(r.latent.params) * 4 / 1e6);
    out << line;
  }
  if (P != S)
    out << "  The pixel-space figure is an estimate (the time at the size run, times the FLOP ratio), not a\n"
        << "  measurement: label it so wherever it is quoted.\n";

  // 4. Picture: cost of one U-Net forward against the picture side.
  if (!o.out_dir.empty()) {
    std::filesystem::create_directories(o.out_dir);
    viz::Series px{"pixel space (the same design on RGB)", {}, {}}, lt{"latent space (side / 8)", {}, {}};
    for (int64_t side = step; side <= 2 * S; side += std::max<int64_t>(step, S / 16)) {
      px.x.push_back(double(side)), px.y.push_back(gflop(unet_cost(pixel_space(sd), side, side).total()));
      lt.x.push_back(double(side)), lt.y.push_back(gflop(unet_cost(sd, side / f, side / f).total()));
    }
    viz::PlotOptions po;
    po.title = "One U-Net forward, by arithmetic";
    po.x_label = "picture side (pixels)";
    po.y_label = "GFLOP";
    po.log_y = true;
    po.legend = viz::Corner::TopLeft;
    r.picture = o.out_dir + "/lesson01_cost_vs_size.png";
    viz::plot({px, lt}, po).save(r.picture);
    out << "\nWrote " << r.picture << "\n";
  }
  return r;
}

}  // namespace ldm::lessons::pixel_space
