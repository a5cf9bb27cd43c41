// Lesson 1: the pixel-space problem (course day 76.1 and exercise 4).
//
// A denoising U-Net runs once per sampling step (50 steps, twice each with classifier-free
// guidance). How much it costs depends on the size of what it denoises: a 512x512 RGB image
// is 786,432 values, SD1.5's 64x64x4 latent 16,384 (48x fewer). This lesson
//   1. counts the FLOPs of one SD1.5 U-Net forward on both, by arithmetic over the
//      architecture (the same walk as UNet2DConditionModel::load, checked by its parameter
//      count, 859,520,964), split into convolutions, linear layers and attention;
//   2. times a real forward of a reduced-width U-Net on both sizes (the full U-Net on a
//      512x512 image would need ~545 TFLOP per step, hours on a CPU), and prints the ratio.
#pragma once
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <filesystem>
#include <memory>
#include <ostream>
#include <string>
#include <vector>

#include "ldm/core/checkpoint.hpp"
#include "ldm/core/rng_ldm.hpp"
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

// The U-Net of the timing: SD1.5's layout (4 levels, resnets, a transformer in the mid
// block, text cross-attention) at a tenth of the width, with attention only in the mid block
// (as pixel-space DDPM U-Nets put it only at low resolution). With SD1.5's attention at the
// top level, a 512x512 image would be 262,144 tokens attending to each other: ~9 TFLOP per
// transformer.
inline UNetConfig reduced_config(int64_t in_channels) {
  UNetConfig c;
  c.in_channels = c.out_channels = in_channels;
  c.block_out_channels = {32, 32, 64, 64};
  c.layers_per_block = {1, 1, 1, 1};
  c.down_block_types = {"DownBlock2D", "DownBlock2D", "DownBlock2D", "DownBlock2D"};
  c.up_block_types = {"UpBlock2D", "UpBlock2D", "UpBlock2D", "UpBlock2D"};
  c.cross_attention_dim = 64;
  c.validate();
  return c;
}

// ---------------------------------------------------------------- the lesson

struct Options {
  std::string model = "synthetic:sd15";  // only its U-Net config matters: weights do not change the cost
  int64_t image_size = 512;              // image side; the latent side is image_size / 8
  int repeats = 3;                       // timed runs of the latent forward (the fastest is kept)
  std::string out_dir = ".";             // where the picture goes ("" = none)
};

struct Result {
  int64_t pixel_values = 0, latent_values = 0;
  Cost pixel, latent;                // SD1.5 (or --model) U-Net, by arithmetic
  double pixel_ms = 0, latent_ms = 0;  // reduced U-Net, measured
  std::string picture;               // path of the cost-vs-size plot ("" when none)
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
  LDM_CHECK(o.image_size >= 64 && o.image_size % 64 == 0, "lesson 1: --size must be a multiple of 64 (the latent, ",
            "size / 8, is halved three times by the U-Net), got ", o.image_size);
  const ModelFiles files = open_model(o.model);
  const UNetConfig sd = files.unet_config.is_object() ? UNetConfig::from_json(files.unet_config) : UNetConfig{};
  const int64_t S = o.image_size, s = S / 8;
  char line[256];
  Result r;

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

  // 2. FLOPs of the SD1.5 U-Net by arithmetic.
  r.pixel = unet_cost(pixel_space(sd), S, S);
  r.latent = unet_cost(sd, s, s);
  out << "One forward of the " << (files.unet_config.is_object() ? "model's" : "SD1.5") << " U-Net ("
      << viz::with_commas(r.latent.params) << " parameters), counted by arithmetic:\n";
  std::snprintf(line, sizeof line, "  %-28s %14s %14s %8s\n", "GFLOP", "pixel space", "latent space", "ratio");
  out << line;
  auto row = [&](const char* what, double p, double l) {
    std::snprintf(line, sizeof line, "  %-28s %14.0f %14.1f %7.0fx\n", what, gflop(p), gflop(l), p / l);
    out << line;
  };
  row("convolutions", r.pixel.conv, r.latent.conv);
  row("linear layers", r.pixel.linear, r.latent.linear);
  row("attention (QK^T and PV)", r.pixel.attention, r.latent.attention);
  row("total", r.pixel.total(), r.latent.total());
  std::snprintf(line, sizeof line,
                "  A 50-step sampling with guidance (100 forwards): %.1f PFLOP in pixel space, %.0f TFLOP in "
                "latent space.\n",
                100 * r.pixel.total() * 1e-15, 100 * r.latent.total() * 1e-12);
  out << line
      << "  Convolutions and linear layers grow with the number of pixels (64x); self-attention with its square\n"
      << "  (4096x), which is why nobody runs SD1.5's layout at 512x512 pixels.\n\n";

  // 3. Measured: a reduced-width U-Net on both.
  const UNetConfig cp = reduced_config(3), cl = reduced_config(sd.in_channels);
  auto build = [](const UNetConfig& c) {
    UNet2DConditionModel m;
    WeightStore w(std::make_shared<SyntheticSource>());
    m.load(w, "", c);
    w.finish();
    return m;
  };
  const UNet2DConditionModel up = build(cp), ul = build(cl);
  LdmGenerator gen(0);
  const Tensor x_pixel = gen.randn({1, 3, S, S}), x_latent = gen.randn({1, sd.in_channels, s, s});
  const Tensor context = gen.randn({1, 77, cl.cross_attention_dim});
  out << "Measured: one forward of a reduced U-Net (channels 32/32/64/64, attention in the mid block only,\n"
      << viz::with_commas(ul.num_parameters()) << " parameters; synthetic weights, the values do not matter for the time):\n";
  r.latent_ms = time_ms(o.repeats, [&] { ul.forward(x_latent, 500.0f, context); });
  r.pixel_ms = time_ms(1, [&] { up.forward(x_pixel, 500.0f, context); });
  const Cost pc = unet_cost(cp, S, S), lc = unet_cost(cl, s, s);
  std::snprintf(line, sizeof line, "  pixel space   [1, 3, %lld, %lld]  %9.1f ms  (%.1f GFLOP)\n", (long long)S,
                (long long)S, r.pixel_ms, gflop(pc.total()));
  out << line;
  std::snprintf(line, sizeof line, "  latent space  [1, %lld, %lld, %lld]    %9.1f ms  (%.2f GFLOP)\n",
                (long long)sd.in_channels, (long long)s, (long long)s, r.latent_ms, gflop(lc.total()));
  out << line;
  std::snprintf(line, sizeof line, "  latent space is %.0fx faster per step (the FLOP ratio is %.0fx).\n",
                r.pixel_ms / r.latent_ms, pc.total() / lc.total());
  out << line;

  // 4. Picture: cost of one SD1.5 U-Net forward against the image side.
  if (!o.out_dir.empty()) {
    std::filesystem::create_directories(o.out_dir);
    viz::Series px{"pixel space (SD1.5 layout on RGB)", {}, {}}, lt{"latent space (SD1.5, side / 8)", {}, {}};
    for (int64_t side = 64; side <= 1024; side += 64) {
      px.x.push_back(double(side)), px.y.push_back(gflop(unet_cost(pixel_space(sd), side, side).total()));
      lt.x.push_back(double(side)), lt.y.push_back(gflop(unet_cost(sd, side / 8, side / 8).total()));
    }
    viz::PlotOptions po;
    po.title = "One U-Net forward";
    po.x_label = "image side (pixels)";
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
