// Lesson 5: the blocks of the SD1.5 U-Net (course day 76.2 and 76.5: "~860M parameters").
//
// The denoiser eps_theta(z_t, t, c) is a U-Net: four down blocks halve the latent three times
// while widening it (320, 640, 1280, 1280 channels), a mid block works at the bottom, four up
// blocks climb back, each resnet eating one skip connection saved on the way down. Resnets
// take the timestep (through a 1280-wide embedding); the transformers of the CrossAttn blocks
// take the text. This lesson walks a loaded UNet2DConditionModel block by block, running a
// small latent through each and printing its output shape, parameter count and time, checks
// that the walk equals UNet2DConditionModel::forward, and draws the U.
#pragma once
#include <chrono>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <ostream>
#include <string>
#include <vector>

#include "../lesson_common.hpp"
#include "ldm/core/checkpoint.hpp"
#include "ldm/core/rng_ldm.hpp"
#include "ldm/load.hpp"
#include "ldm/models/unet.hpp"
#include "ldm/viz/canvas.hpp"

namespace ldm::lessons::unet_blocks {

struct Options {
  std::string model;  // "" = models/ldm-shapes; or a diffusers folder, a .safetensors file, synthetic:sd15
  int64_t latent_size = 0;  // side of the latent run through the blocks; 0 = the model's own (sample_size)
  std::string out_dir = ".";             // where the picture goes ("" = none)
};

// One line of the walk: a stage (depth 0) or a layer inside it (depth 1).
struct Row {
  std::string name;
  int depth = 0;
  Shape shape;  // its output
  int64_t params = 0;
  double ms = 0;
};

struct Result {
  std::vector<Row> rows;
  int64_t total_params = 0;  // sum over the stages
  int64_t model_params = 0;  // UNet2DConditionModel::num_parameters()
  int64_t skips = 0;         // skip connections saved by the down path
  double max_diff = 0;       // walk vs UNet2DConditionModel::forward
  std::vector<std::string> pictures;
};

// Runs f, appends a row with its output shape and time. Returns the output.
template <typename F>
Tensor timed(std::vector<Row>& rows, const std::string& name, int depth, int64_t params, F f) {
  const auto t0 = std::chrono::steady_clock::now();
  Tensor y = f();
  const double ms = std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count();
  rows.push_back({name, depth, y.shape(), params, ms});
  return y;
}

// Draws the U: one box per stage at the resolution it works at, the skip connections across.
inline viz::Canvas draw_unet(const UNet2DConditionModel& u, int64_t latent_size) {
  const UNetConfig& c = u.config;
  const int n = int(c.num_blocks()), cols = 2 * n + 3, bw = 100, bh = 58, gx = 18, gy = 34, top = 34;
  viz::Canvas cv(cols * (bw + gx) + gx, top + n * (bh + gy) + 10);
  cv.text(gx, 8, "The U-Net at a " + std::to_string(latent_size) + "x" + std::to_string(latent_size) +
                     " latent: each stage at the resolution it works at; grey lines = skip connections",
          viz::kBlack);
  struct Box {
    int col, level;
    std::string name, type;
    int64_t channels, params;
  };
  std::vector<Box> boxes;
  boxes.push_back({0, 0, "conv_in", "3x3 conv", c.block_out_channels[0], num_params(u.conv_in)});
  for (int i = 0; i < n; ++i)
    boxes.push_back({1 + i, i, "down_blocks." + std::to_string(i),
                     u.down_blocks[size_t(i)].attentions.empty() ? "DownBlock2D" : "CrossAttnDown",
                     c.block_out_channels[size_t(i)], num_params(u.down_blocks[size_t(i)])});
  boxes.push_back({1 + n, n - 1, "mid_block", "CrossAttnMid", c.block_out_channels.back(), num_params(u.mid_block)});
  for (int i = 0; i < n; ++i)
    boxes.push_back({2 + n + i, n - 1 - i, "up_blocks." + std::to_string(i),
                     u.up_blocks[size_t(i)].attentions.empty() ? "UpBlock2D" : "CrossAttnUp",
                     c.block_out_channels[size_t(n - 1 - i)], num_params(u.up_blocks[size_t(i)])});
  boxes.push_back({2 + 2 * n, 0, "conv_out", "norm, 3x3 conv", c.out_channels,
                   num_params(u.conv_norm_out) + num_params(u.conv_out)});
  auto bx = [&](const Box& b) { return gx + b.col * (bw + gx); };
  auto by = [&](const Box& b) { return top + b.level * (bh + gy); };
  // Skip connections: down block i (and conv_in) feed up block n-1-i at the same level.
  for (int i = 0; i < n; ++i) {
    const Box &a = boxes[size_t(1 + i)], &b = boxes[size_t(2 + 2 * n - 1 - i)];
    cv.line(bx(a) + bw, by(a) + 8, bx(b), by(b) + 8, viz::kGray, 2);
  }
  // The data path, box to box.
  for (size_t k = 0; k + 1 < boxes.size(); ++k)
    cv.line(bx(boxes[k]) + bw, by(boxes[k]) + bh - 10, bx(boxes[k + 1]), by(boxes[k + 1]) + bh - 10, viz::kBlack, 2);
  const viz::Color kAttn{255, 224, 178}, kResnets{200, 222, 245};
  for (const Box& b : boxes) {
    const bool attn = b.type.find("CrossAttn") != std::string::npos;
    const viz::Color fill = attn ? kAttn : b.name.rfind("conv", 0) == 0 ? viz::kLightGray : kResnets;
    cv.fill_rect(bx(b), by(b), bw, bh, fill);
    cv.rect(bx(b), by(b), bw, bh, viz::kBlack);
    const int64_t side = latent_size >> b.level;
    char l3[64], l4[64];
    std::snprintf(l3, sizeof l3, "%lldch %lldx%lld", (long long)b.channels, (long long)side, (long long)side);
    if (b.params >= 1000000)
      std::snprintf(l4, sizeof l4, "%.1fM params", double(b.params) * 1e-6);
    else
      std::snprintf(l4, sizeof l4, "%.1fK params", double(b.params) * 1e-3);
    cv.text(bx(b) + 4, by(b) + 5, b.name, viz::kBlack);
    cv.text(bx(b) + 4, by(b) + 18, b.type, viz::kBlack);
    cv.text(bx(b) + 4, by(b) + 31, l3, viz::kBlack);
    cv.text(bx(b) + 4, by(b) + 44, l4, viz::kBlack);
  }
  // The legend, bottom left (the lower levels leave that corner free).
  int lx = gx, ly = cv.height() - 3 * 16 - 6;
  for (const auto& [fill, what] : {std::pair<viz::Color, const char*>{kAttn, "resnets + transformers (self- and cross-attention)"},
                                   {kResnets, "resnets only"},
                                   {viz::kLightGray, "a single convolution (in / out)"}}) {
    cv.fill_rect(lx, ly, 12, 10, fill);
    cv.rect(lx, ly, 12, 10, viz::kBlack);
    cv.text(lx + 18, ly + 2, what, viz::kBlack);
    ly += 16;
  }
  return cv;
}

inline Result run(const UNet2DConditionModel& u, const Options& o, std::ostream& out) {
  const UNetConfig& c = u.config;
  const int64_t S = o.latent_size ? o.latent_size : c.sample_size;
  LDM_CHECK(S > 0 && S % c.size_multiple() == 0, "lesson 5: --latent-size must be a multiple ", "of ",
            c.size_multiple(), ", got ", S);
  Result r;
  auto& rows = r.rows;
  LdmGenerator gen(0);
  const Tensor sample = gen.randn({1, c.in_channels, S, S}), context = gen.randn({1, 77, c.cross_attention_dim});
  const float t = 500.0f;

  // The forward of UNet2DConditionModel, one stage at a time.
  Tensor temb = timed(rows, "time_embedding (sinusoid of t -> MLP)", 0,
                      num_params(u.time_embedding.linear_1) + num_params(u.time_embedding.linear_2), [&] {
                        return u.time_embedding.forward(get_timestep_embedding(
                            {t}, c.block_out_channels[0], c.flip_sin_to_cos, c.freq_shift));
                      });
  Tensor h = timed(rows, "conv_in", 0, num_params(u.conv_in), [&] { return u.conv_in.forward(sample); });
  std::vector<Tensor> skips{h};
  for (size_t i = 0; i < u.down_blocks.size(); ++i) {
    const UNetDownBlock& b = u.down_blocks[i];
    const size_t first = rows.size();
    rows.push_back({"down_blocks." + std::to_string(i) + (b.attentions.empty() ? " (DownBlock2D)" : " (CrossAttnDownBlock2D)"),
                    0, {}, num_params(b), 0});
    for (size_t j = 0; j < b.resnets.size(); ++j) {
      h = timed(rows, "resnets." + std::to_string(j), 1, num_params(b.resnets[j]), [&] { return b.resnets[j].forward(h, temb); });
      if (!b.attentions.empty())
        h = timed(rows, "attentions." + std::to_string(j), 1, num_params(b.attentions[j]),
                  [&] { return b.attentions[j].forward(h, context); });
      skips.push_back(h);
    }
    if (b.downsampler) {
      h = timed(rows, "downsamplers.0 (3x3 conv, stride 2)", 1, num_params(b.downsampler->conv),
                [&] { return b.downsampler->forward(h); });
      skips.push_back(h);
    }
    rows[first].shape = h.shape();
    for (size_t k = first + 1; k < rows.size(); ++k) rows[first].ms += rows[k].ms;
  }
  r.skips = int64_t(skips.size());
  {
    const UNetMidBlock2DCrossAttn& m = u.mid_block;
    const size_t first = rows.size();
    rows.push_back({"mid_block (UNetMidBlock2DCrossAttn)", 0, {}, num_params(m), 0});
    h = timed(rows, "resnets.0", 1, num_params(m.resnets[0]), [&] { return m.resnets[0].forward(h, temb); });
    for (size_t j = 0; j < m.attentions.size(); ++j) {
      h = timed(rows, "attentions." + std::to_string(j), 1, num_params(m.attentions[j]),
                [&] { return m.attentions[j].forward(h, context); });
      h = timed(rows, "resnets." + std::to_string(j + 1), 1, num_params(m.resnets[j + 1]),
                [&] { return m.resnets[j + 1].forward(h, temb); });
    }
    rows[first].shape = h.shape();
    for (size_t k = first + 1; k < rows.size(); ++k) rows[first].ms += rows[k].ms;
  }
  for (size_t i = 0; i < u.up_blocks.size(); ++i) {
    const UNetUpBlock& b = u.up_blocks[i];
    const size_t first = rows.size();
    rows.push_back({"up_blocks." + std::to_string(i) + (b.attentions.empty() ? " (UpBlock2D)" : " (CrossAttnUpBlock2D)"),
                    0, {}, num_params(b), 0});
    for (size_t j = 0; j < b.resnets.size(); ++j) {
      const Tensor skip = skips.back();
      skips.pop_back();
      h = timed(rows, "resnets." + std::to_string(j) + " (input + skip " + std::to_string(skip.dim(1)) + "ch)", 1,
                num_params(b.resnets[j]), [&] { return b.resnets[j].forward(cat_channels(h, skip), temb); });
      if (!b.attentions.empty())
        h = timed(rows, "attentions." + std::to_string(j), 1, num_params(b.attentions[j]),
                  [&] { return b.attentions[j].forward(h, context); });
    }
    if (b.upsampler)
      h = timed(rows, "upsamplers.0 (nearest 2x, 3x3 conv)", 1, num_params(b.upsampler->conv),
                [&] { return b.upsampler->forward(h); });
    rows[first].shape = h.shape();
    for (size_t k = first + 1; k < rows.size(); ++k) rows[first].ms += rows[k].ms;
  }
  h = timed(rows, "conv_norm_out, SiLU, conv_out", 0, num_params(u.conv_norm_out) + num_params(u.conv_out),
            [&] { return u.conv_out.forward(u.conv_norm_out.forward(h, /*fuse_silu=*/true)); });

  // Is the walk the model? Compare with one call of forward.
  const Tensor ref = u.forward(sample, t, context);
  for (int64_t i = 0; i < ref.numel(); ++i) r.max_diff = std::max(r.max_diff, double(std::abs(ref[i] - h[i])));
  for (const Row& row : rows)
    if (row.depth == 0) r.total_params += row.params;
  r.model_params = u.num_parameters();

  // The table.
  char line[256];
  out << "Latent [1, " << c.in_channels << ", " << S << ", " << S << "] at t = " << t << ", text context [1, 77, "
      << c.cross_attention_dim << "] (random values: only shapes and sizes matter here)\n\n";
  std::snprintf(line, sizeof line, "%-48s %-20s %14s %9s\n", "block", "output shape", "parameters", "ms");
  out << line;
  for (const Row& row : rows) {
    const std::string name = (row.depth ? "    " : "") + row.name;
    std::snprintf(line, sizeof line, "%-48s %-20s %14s %9.1f\n", name.c_str(), shape_str(row.shape).c_str(),
                  viz::with_commas(row.params).c_str(), row.ms);
    out << (row.depth == 0 && &row != &rows.front() ? "\n" : "") << line;
  }
  std::snprintf(line, sizeof line, "\n%-48s %-20s %14s\n", "total", "", viz::with_commas(r.total_params).c_str());
  out << line;
  out << "UNet2DConditionModel::num_parameters() = " << viz::with_commas(r.model_params) << " ("
      << (r.total_params == r.model_params ? "the same" : "DIFFERENT") << "); the down path saved " << r.skips
      << " skip connections, the up path used them all.\n";
  int64_t attn = 0, res = 0;
  auto count = [&](const auto& b) {
    for (const auto& a : b.attentions) attn += num_params(a);
    for (const auto& x : b.resnets) res += num_params(x);
  };
  for (const auto& b : u.down_blocks) count(b);
  count(u.mid_block);
  for (const auto& b : u.up_blocks) count(b);
  std::snprintf(line, sizeof line,
                "Resnets hold %.0f%% of the parameters, the transformers (self- and cross-attention, feed-forward) "
                "%.0f%%.\n",
                100.0 * double(res) / double(r.model_params), 100.0 * double(attn) / double(r.model_params));
  out << line;
  std::snprintf(line, sizeof line, "The walk's output equals UNet2DConditionModel::forward's to %.1e (max abs difference).\n",
                r.max_diff);
  out << line;
  double total_ms = 0;
  for (const Row& row : rows) total_ms += row.depth == 0 ? row.ms : 0.0;
  char note[640];
  std::snprintf(note, sizeof note,
                "What limits these timings at a %lldx%lld latent: each weight is used for only %lld positions, so there is\n"
                "little arithmetic per weight read; the walk reads %.0f MB of float32 weights in %.1f ms (%.1f GB/s).\n"
                "Well below the memory's bandwidth, that says the per-layer fixed costs (threads, small matrices) set the\n"
                "time at this size. At larger latents each weight is reused over more positions and the arithmetic takes over.\n",
                (long long)S, (long long)S, (long long)(S * S), double(r.model_params) * 4 / 1e6, total_ms,
                double(r.model_params) * 4 / 1e9 / (total_ms / 1000));
  out << note;

  if (!o.out_dir.empty()) {
    std::filesystem::create_directories(o.out_dir);
    r.pictures.push_back(o.out_dir + "/lesson05_unet.png");
    draw_unet(u, c.sample_size).save(r.pictures.back());  // drawn at the trained size, 64x64 for SD1.5
    out << "Wrote " << r.pictures.back() << "\n";
  }
  return r;
}

inline Result run(const Options& o, std::ostream& out) {
  ModelFiles files = open_model(model_spec(o.model));
  if (!files.unet_config.is_object()) files.unet_config = nlohmann::json::object();  // no config.json: SD1.5's
  out << "U-Net: " << files.description << "\n";
  const UNet2DConditionModel u = load_unet(files);
  return run(u, o, out);
}

}  // namespace ldm::lessons::unet_blocks
