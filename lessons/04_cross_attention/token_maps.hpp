// Lesson 4, part 2: where each word of the prompt looks while a picture is made.
//
// A picture is sampled (DDIM, guidance w) with the U-Net's training forward, which keeps every
// layer's inputs (UNet2DConditionModel::Saved); at a few steps the lesson reads back, for every
// cross-attention (attn2) of the U-Net, the queries Q [B, h*w, C] and keys K [B, 77, C] of the
// prompt's half of the batch and forms P = softmax(Q K^T / sqrt(d)), averaged over the heads.
// Column j of P, over the h x w latent grid, is token j's attention map. For the colour and
// shape words it should light up where the shape ends up; the lesson measures that as the
// share of the token's attention that falls on the shape's cells, divided by the share of
// cells the shape covers (1: no preference; 4: four times as concentrated on the shape).
#pragma once
#include <algorithm>
#include <cmath>
#include <cstdio>
#include <ostream>
#include <string>
#include <vector>

#include "../lesson_common.hpp"
#include "ldm/core/image.hpp"
#include "ldm/core/rng.hpp"
#include "ldm/data/shapes_analyser.hpp"
#include "ldm/guidance.hpp"
#include "ldm/models/unet.hpp"
#include "ldm/pipeline.hpp"
#include "ldm/viz/colormap.hpp"

namespace ldm::lessons::cross_attention {

// P = softmax(Q K^T / sqrt(d)) for each head: q [1, L, H*d], k [1, Lk, H*d] -> [H, L, Lk]
inline std::vector<float> attention_probs(const Tensor& q, const Tensor& k, int64_t heads) {
  const int64_t L = q.dim(1), Lk = k.dim(1), D = q.dim(2), d = D / heads;
  const float scale = 1.0f / std::sqrt(float(d));
  std::vector<float> p(size_t(heads * L * Lk));
#pragma omp parallel for collapse(2)
  for (int64_t h = 0; h < heads; ++h)
    for (int64_t i = 0; i < L; ++i) {
      float* row = p.data() + (h * L + i) * Lk;
      float mx = -INFINITY;
      for (int64_t j = 0; j < Lk; ++j) {
        float s = 0;
        for (int64_t t = 0; t < d; ++t) s += q[i * D + h * d + t] * k[j * D + h * d + t];
        row[j] = s * scale;
        mx = std::max(mx, row[j]);
      }
      float sum = 0;
      for (int64_t j = 0; j < Lk; ++j) sum += row[j] = std::exp(row[j] - mx);
      for (int64_t j = 0; j < Lk; ++j) row[j] /= sum;
    }
  return p;
}


struct MapOptions {
  int steps = 20;            // DDIM steps
  float guidance = 2;        // w
  uint64_t seed = 42;
  std::vector<int> shown{0, 5, 10, 19};  // the steps whose maps are kept (0-based)
};

// One cross-attention of the U-Net at one step: its name, grid and head-averaged P [L, 77].
struct CrossAttentionMap {
  std::string where;  // e.g. "down_blocks.0.attentions.0"
  int64_t h = 0, w = 0;
  std::vector<float> probs;
};

struct TokenMaps {
  std::vector<std::string> words;  // the prompt's tokens, <start> first, up to and with the first <end>
  std::vector<double> timesteps;   // of the steps kept
  std::vector<std::vector<CrossAttentionMap>> maps;  // [step kept][cross-attention]
  Tensor image;                    // the final picture [1, 3, H, W]
  bool analysed = false;           // the picture is 64x64, the size the analyser reads
  shapes::Analysis analysis;       // what the analyser reads in it (when analysed)
  // concentration[step kept][cross-attention][token]: attention share on the shape's cells /
  // the share of cells the shape covers; 0 when no shape was found.
  std::vector<std::vector<std::vector<double>>> concentration;
};

// Every attn2 of the U-Net's saved forward, in the order the forward runs them.
inline void collect_cross_attention(const UNet2DConditionModel& unet, const UNet2DConditionModel::Saved& s,
                                    int64_t batch_index, std::vector<CrossAttentionMap>& out) {
  auto add = [&](const Transformer2DModel& tr, const Transformer2DModel::Saved& ts, const std::string& where) {
    for (size_t b = 0; b < ts.blocks.size(); ++b) {
      const Attention::Saved& a = ts.blocks[b].attn2;
      if (!a.context.defined()) continue;
      CrossAttentionMap m;
      m.where = where + (ts.blocks.size() > 1 ? ".transformer_blocks." + std::to_string(b) : "");
      m.h = ts.x.dim(2), m.w = ts.x.dim(3);
      const int64_t heads = tr.transformer_blocks[b].attn2.heads;
      const std::vector<float> p =
          attention_probs(a.q.slice0(batch_index, batch_index + 1), a.k.slice0(batch_index, batch_index + 1), heads);
      const size_t n = p.size() / size_t(heads);
      m.probs.assign(n, 0.0f);
      for (int64_t hd = 0; hd < heads; ++hd)
        for (size_t i = 0; i < n; ++i) m.probs[i] += p[size_t(hd) * n + i] / float(heads);
      out.push_back(std::move(m));
    }
  };
  for (size_t i = 0; i < s.down_blocks.size(); ++i)
    for (size_t j = 0; j < s.down_blocks[i].attentions.size(); ++j)
      add(unet.down_blocks[i].attentions[j], s.down_blocks[i].attentions[j],
          "down_blocks." + std::to_string(i) + ".attentions." + std::to_string(j));
  for (size_t j = 0; j < s.mid_block.attentions.size(); ++j)
    add(unet.mid_block.attentions[j], s.mid_block.attentions[j], "mid_block.attentions." + std::to_string(j));
  for (size_t i = 0; i < s.up_blocks.size(); ++i)
    for (size_t j = 0; j < s.up_blocks[i].attentions.size(); ++j)
      add(unet.up_blocks[i].attentions[j], s.up_blocks[i].attentions[j],
          "up_blocks." + std::to_string(i) + ".attentions." + std::to_string(j));
}

// Samples `prompt` with DDIM and guidance, keeping the cross-attention maps of the steps
// o.shown. `unet` is the same U-Net as sd's (loaded on its own: the pipeline's runner keeps
// its models to itself); `words` are the prompt's tokens (for the picture's captions).
inline TokenMaps token_maps(const StableDiffusion& sd, const UNet2DConditionModel& unet, const std::string& prompt,
                            const std::vector<std::string>& words, int size, const MapOptions& o) {
  TokenMaps r;
  r.words = words;
  GenerationParams p;
  p.prompt = prompt, p.scheduler = "ddim", p.steps = o.steps, p.guidance_scale = o.guidance;
  p.width = p.height = size;
  check_inputs(sd, p);
  const bool cfg = p.classifier_free_guidance();
  const Tensor context = encode_prompt(sd, p);  // [2, 77, D] = [negative; prompt] (or [1, 77, D])
  auto scheduler = make_scheduler("ddim", sd.scheduler_config);
  auto gen = make_generator("ldm", o.seed);
  Tensor x = prepare_latents(sd, p, *scheduler, *gen).latents;
  const std::vector<double> timesteps = scheduler->timesteps();
  for (size_t i = 0; i < timesteps.size(); ++i) {
    const double t = timesteps[i];
    const Tensor x_in = scheduler->scale_model_input(cfg ? detail::cat_batch(x, x) : x, t);
    UNet2DConditionModel::Saved saved;  // every layer's inputs, Q and K of each attn2 among them
    Tensor out = unet.forward(x_in, {float(t)}, context, saved);
    if (std::find(o.shown.begin(), o.shown.end(), int(i)) != o.shown.end()) {
      r.timesteps.push_back(t);
      r.maps.emplace_back();
      collect_cross_attention(unet, saved, cfg ? 1 : 0, r.maps.back());
    }
    if (cfg) out = classifier_free_guidance(out, o.guidance);
    x = scheduler->step(out, t, x, gen.get());
  }
  r.image = nhwc_to_nchw(decode_latents(sd, x));
  r.analysed = size == shapes::kImageSize;
  if (r.analysed) r.analysis = shapes::analyse(shapes::picture_bytes(r.image).data());

  // How concentrated each token's attention is on the cells the shape covers.
  for (const auto& step : r.maps) {
    r.concentration.emplace_back();
    for (const CrossAttentionMap& m : step) {
      std::vector<uint8_t> on(size_t(m.h * m.w), 0);  // a cell is on the shape when its centre is in the box
      int64_t cells = 0;
      if (r.analysis.found)
        for (int64_t y = 0; y < m.h; ++y)
          for (int64_t xx = 0; xx < m.w; ++xx) {
            const double cx = (double(xx) + 0.5) * size / double(m.w), cy = (double(y) + 0.5) * size / double(m.h);
            const bool in = cx >= r.analysis.x0 && cx < r.analysis.x0 + r.analysis.width && cy >= r.analysis.y0 &&
                            cy < r.analysis.y0 + r.analysis.height;
            on[size_t(y * m.w + xx)] = in, cells += in;
          }
      const int64_t L = m.h * m.w, Lk = int64_t(m.probs.size()) / L;
      std::vector<double> c;
      for (size_t j = 0; j < words.size(); ++j) {
        double inside = 0, all = 0;
        for (int64_t i = 0; i < L; ++i) {
          const double v = m.probs[size_t(i * Lk + int64_t(j))];
          all += v, inside += on[size_t(i)] ? v : 0.0;
        }
        c.push_back(cells > 0 && cells < L && all > 0 ? (inside / all) / (double(cells) / double(L)) : 0.0);
      }
      r.concentration.back().push_back(c);
    }
  }
  return r;
}

// The index of the first token spelled `word` (-1 if none).
inline int token_index(const std::vector<std::string>& words, const std::string& word) {
  for (size_t j = 0; j < words.size(); ++j)
    if (words[j] == word) return int(j);
  return -1;
}

// Prints the concentration table and draws two pictures: every prompt token's map at one step
// and cross-attention; and the colour and shape words across steps and cross-attentions.
inline std::vector<std::string> report_token_maps(const TokenMaps& r, const std::vector<int>& focus, bool synthetic,
                                                  const std::string& out_dir, std::ostream& out) {
  char line[256];
  const size_t last = r.maps.size() - 1;
  out << "\nPart 2: sampling the prompt (DDIM), reading every cross-attention's P at " << r.maps.size() << " steps.\n";
  out << "The picture: "
      << (r.analysed ? shapes::describe(r.analysis) : std::string("not read (the analyser reads 64x64 pictures)")) << "\n";
  out << "Attention on the shape's cells, relative to their share of the grid (1 = no preference):\n";
  std::snprintf(line, sizeof line, "   %-38s", "cross-attention (grid)");
  out << line;
  for (size_t s = 0; s < r.maps.size(); s += last)
    for (int j : focus) {
      std::snprintf(line, sizeof line, " %6s@%-3.0f", r.words[size_t(j)].substr(0, 6).c_str(), r.timesteps[s]);
      out << line;
    }
  out << "\n";
  for (size_t m = 0; m < r.maps[last].size(); ++m) {
    const CrossAttentionMap& cm = r.maps[last][m];
    std::snprintf(line, sizeof line, "   %-32s (%lldx%lld)", cm.where.c_str(), (long long)cm.h, (long long)cm.w);
    out << line;
    for (size_t s = 0; s < r.maps.size(); s += last)
      for (int j : focus) std::snprintf(line, sizeof line, " %10.2f", r.concentration[s][m][size_t(j)]), out << line;
    out << "\n";
  }
  std::vector<std::string> pictures;
  if (out_dir.empty()) return pictures;

  // 1. Every prompt token at the last step kept, in the last cross-attention of the finest grid
  //    (the decoder's, next to the output).
  size_t fine = 0;
  for (size_t m = 0; m < r.maps[last].size(); ++m)
    if (r.maps[last][m].h >= r.maps[last][fine].h) fine = m;
  const CrossAttentionMap& cm = r.maps[last][fine];
  const int64_t L = cm.h * cm.w, Lk = int64_t(cm.probs.size()) / L;
  const int scale = int(128 / cm.w);
  std::vector<viz::Canvas> tiles{viz::picture(r.image, int(128 / r.image.dim(3)))};
  std::vector<std::string> caps{"the picture"};
  std::vector<float> map(static_cast<size_t>(L));
  for (size_t j = 0; j < r.words.size(); ++j) {
    for (int64_t i = 0; i < L; ++i) map[size_t(i)] = cm.probs[size_t(i * Lk + int64_t(j))];
    const auto [lo, hi] = viz::min_max(map.data(), L);
    tiles.push_back(viz::heatmap(map.data(), int(cm.h), int(cm.w), lo, std::max(hi, lo + 1e-6f), scale));
    caps.push_back(r.words[j]);
  }
  viz::Canvas g = viz::grid(tiles, caps, 7);
  viz::Canvas sheet(g.width(), g.height() + 20);
  std::snprintf(line, sizeof line, "each token's attention over the %lldx%lld latent grid, %s, t = %.0f (each map its own scale)",
                (long long)cm.h, (long long)cm.w, cm.where.c_str(), r.timesteps[last]);
  sheet.text(8, 6, line, viz::kBlack);
  sheet.blit(g, 0, 20);
  pictures.push_back(out_dir + "/lesson04_token_maps.png");
  stamped(sheet, synthetic).save(pictures.back());

  // 2. The focus words at every step kept (columns) and cross-attention (rows).
  tiles.clear(), caps.clear();
  for (size_t m = 0; m < r.maps[0].size(); ++m)
    for (int j : focus)
      for (size_t s = 0; s < r.maps.size(); ++s) {
        const CrossAttentionMap& c = r.maps[s][m];
        const int64_t n = c.h * c.w, nk = int64_t(c.probs.size()) / n;
        std::vector<float> v(static_cast<size_t>(n));
        for (int64_t i = 0; i < n; ++i) v[size_t(i)] = c.probs[size_t(i * nk + j)];
        const auto [lo, hi] = viz::min_max(v.data(), n);
        tiles.push_back(viz::heatmap(v.data(), int(c.h), int(c.w), lo, std::max(hi, lo + 1e-6f), int(64 / c.w)));
        std::snprintf(line, sizeof line, "%s t=%.0f", r.words[size_t(j)].c_str(), r.timesteps[s]);
        caps.push_back(line);
      }
  g = viz::grid(tiles, caps, int(focus.size() * r.maps.size()));
  viz::Canvas sheet2(g.width(), g.height() + 20);
  std::string rows;
  for (size_t m = 0; m < r.maps[0].size(); ++m)
    rows += (m ? ", " : "") + std::to_string(r.maps[0][m].h) + "x" + std::to_string(r.maps[0][m].w);
  sheet2.text(8, 6, "rows: the U-Net's cross-attentions in order (" + rows + "); columns: steps", viz::kBlack);
  sheet2.blit(g, 0, 20);
  pictures.push_back(out_dir + "/lesson04_steps_levels.png");
  stamped(sheet2, synthetic).save(pictures.back());
  return pictures;
}

}  // namespace ldm::lessons::cross_attention
