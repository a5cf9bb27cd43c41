// Lesson 4: cross-attention, where the text enters the U-Net (course day 76.4).
//
// In every transformer of the U-Net each latent pixel asks the 77 text tokens a question:
//     Q = W_Q phi(pixels)   [B, h*w, C]      the U-Net's spatial features
//     K = W_K tau(text)     [B, 77, C]       the CLIP text encoder's output
//     V = W_V tau(text)     [B, 77, C]
//     out = softmax(Q K^T / sqrt(d)) V       per head (8 heads of d = C / 8)
// Row i of softmax(Q K^T / sqrt(d)) is how pixel i spreads its attention over the tokens.
// This lesson runs the real code path up to the first transformer of the U-Net
// (down_blocks.0.attentions.0): prompt -> tokenizer -> CLIP -> context; image -> VAE -> latent
// -> noise at t -> conv_in -> first resnet -> transformer, self-attention, then at attn2 it
// computes the probabilities from the block's own to_q / to_k, checks that they reproduce
// Attention::forward, and draws them: one pixel's distribution over the 77 tokens, and each
// word's map over the pixels.
#pragma once
#include <algorithm>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <ostream>
#include <string>
#include <vector>

#include "../lesson_common.hpp"
#include "ldm/blocks/timestep_embedding.hpp"
#include "ldm/blocks/unet_blocks.hpp"
#include "ldm/core/checkpoint.hpp"
#include "ldm/core/shared_dir.hpp"
#include "ldm/core/image.hpp"
#include "ldm/core/rng_ldm.hpp"
#include "ldm/load.hpp"
#include "ldm/models/clip_tokenizer.hpp"
#include "ldm/schedulers/scheduler.hpp"
#include "ldm/viz/colormap.hpp"
#include "ldm/viz/plot.hpp"
#include "ldm/viz/resize.hpp"
#include "ldm/viz/test_pattern.hpp"
#include "token_maps.hpp"

namespace ldm::lessons::cross_attention {

struct Options {
  std::string model;       // "" = models/ldm-shapes; or a diffusers folder, a .safetensors file, synthetic:sd15
  std::string prompt = "a large red circle at the top left on a black background";
  std::string tokenizer;   // folder with vocab.json + merges.txt; "" = the model's, else ../shared/clip-tokenizer
  std::string image;       // "" = the prompt as the shapes dataset draws it (else the built-in test pattern)
  int64_t size = 0;        // image side; the latent is size / 8; 0 = the VAE's own (at most 128)
  int timestep = 400;      // noise level of the latent the U-Net sees (part 1)
  float query_x = 0.25f, query_y = 0.25f;  // the pixel whose attention is drawn, as fractions of the image
  uint64_t seed = 0;
  bool maps = true;        // part 2: sample the prompt and read every cross-attention's maps
  MapOptions map_options;
  std::string out_dir = ".";
};

// The first transformer of the U-Net and what runs before it, loaded alone (a few MB).
struct FirstLevel {
  UNetConfig config;
  Conv2d conv_in;
  TimestepEmbedding time_embedding;
  ResnetBlock2D resnet;           // down_blocks.0.resnets.0
  Transformer2DModel attention;   // down_blocks.0.attentions.0

  void load(WeightStore& w, const UNetConfig& c) {
    LDM_CHECK(c.down_block_types.at(0) == "CrossAttnDownBlock2D", "lesson 4: the U-Net's first block is ",
              c.down_block_types[0], ", not CrossAttnDownBlock2D: it has no cross-attention to show");
    config = c;
    const int64_t ch = c.block_out_channels[0];
    UNetBlockArgs a;
    a.temb_channels = c.time_embed_dim(), a.groups = c.norm_num_groups, a.eps = c.norm_eps;
    a.heads = c.attention_head_dim[0], a.cross_attention_dim = c.cross_attention_dim;
    a.use_linear_projection = c.use_linear_projection;
    conv_in.load(w, "conv_in", c.in_channels, ch, 3, 1, 1);
    time_embedding.load(w, "time_embedding", ch, c.time_embed_dim());
    resnet.load(w, "down_blocks.0.resnets.0", ch, ch, a.temb_channels, a.groups, a.eps);
    load_unet_transformer(attention, w, "down_blocks.0.attentions.0", ch, a);
  }
};

struct Result {
  Shape q_shape, k_shape, v_shape;
  int64_t heads = 0, head_dim = 0;
  std::vector<float> probs;   // [h*w, 77], averaged over the heads
  int64_t query = 0;          // the pixel drawn
  std::vector<std::string> words;  // the prompt's tokens: <start>, the words, the first <end>
  TokenMaps maps;             // part 2
  double check_error = 0;     // max |our softmax(QK^T/sqrt d) V -> to_out  -  Attention::forward|
  std::vector<std::string> pictures;
};

// out = P V with the heads side by side: P [H, L, Lk], v [1, Lk, H*d] -> [1, L, H*d]
inline Tensor apply_probs(const std::vector<float>& p, const Tensor& v, int64_t heads, int64_t L) {
  const int64_t Lk = v.dim(1), D = v.dim(2), d = D / heads;
  Tensor out({1, L, D});
  for (int64_t h = 0; h < heads; ++h)
    for (int64_t i = 0; i < L; ++i)
      for (int64_t j = 0; j < Lk; ++j) {
        const float w = p[size_t((h * L + i) * Lk + j)];
        for (int64_t t = 0; t < d; ++t) out[i * D + h * d + t] += w * v[j * D + h * d + t];
      }
  return out;
}

// Where to find vocab.json / merges.txt.
inline std::string tokenizer_dir(const Options& o, const ModelFiles& files) {
  if (!o.tokenizer.empty()) return o.tokenizer;
  if (!files.tokenizer_dir.empty()) return files.tokenizer_dir;
  const std::string shared = shared_path("clip-tokenizer");  // $LDM_SHARED/clip-tokenizer, or ""
  LDM_CHECK(!shared.empty(), "lesson 4: no tokenizer: pass --tokenizer DIR (a folder with ",
            "vocab.json and merges.txt, e.g. an SD1.5 download's tokenizer/)");
  return shared;
}

// `unet_w` holds the U-Net's weights; the text encoder and VAE are given loaded.
// The picture part 1 noises: --image, else the prompt as the dataset draws it, else the test pattern.
// -> [1, 3, size, size] in [0, 1]
inline Tensor input_image(const Options& o) {
  if (!o.image.empty()) return viz::center_crop_resize(read_image(o.image), o.size);
  shapes::PartialSpec t;
  if (shapes::parse_caption(o.prompt, t) && t.colour != shapes::kUnsaid) {
    const auto or_default = [](int v, int fallback) { return v == shapes::kUnsaid ? fallback : v; };
    const Tensor x = shape_picture({or_default(t.background, 0), t.colour, t.shape, or_default(t.size, 1) == 1,
                                    or_default(t.position, 4)});
    return x.dim(2) == o.size ? x : viz::center_crop_resize(x, o.size);
  }
  return viz::test_pattern(o.size, o.size);
}

// Part 1. `unet_w` holds the U-Net's weights; the text encoder and VAE are given loaded;
// `sched` is the model's noise schedule.
inline Result run(const CLIPTokenizer& tok, const CLIPTextModel& clip, const AutoencoderKL& vae, WeightStore& unet_w,
                  const UNetConfig& unet_config, const Options& o, std::ostream& out, const SchedulerConfig& sched = {},
                  bool synthetic = true) {
  Result r;
  char line[256];

  // 1. Text: prompt -> 77 ids -> CLIP -> context [1, 77, 768].
  const std::vector<int> ids32 = tok.encode_padded(o.prompt, int(clip.config.max_position_embeddings));
  const std::vector<int64_t> ids(ids32.begin(), ids32.end());
  std::vector<std::string> words;  // the text of each token, "</w>" dropped
  for (int id : ids32) {
    std::string s = id == tok.bos_id() ? "<start>" : id == tok.eos_id() ? "<end>" : tok.decode({id});
    while (!s.empty() && s.back() == ' ') s.pop_back();
    words.push_back(s);
  }
  int64_t n_prompt = 1;  // BOS + words + the first EOS
  while (n_prompt < int64_t(ids.size()) && ids32[size_t(n_prompt)] != tok.eos_id()) ++n_prompt;
  ++n_prompt;
  r.words.assign(words.begin(), words.begin() + n_prompt);
  if (synthetic) say_synthetic(out);
  const Tensor context = clip.encode(ids, 1);  // [1, 77, 768]
  out << "prompt \"" << o.prompt << "\" -> " << n_prompt - 2 << " tokens + <start> + <end>, padded with <end> to "
      << ids.size() << "\n";
  out << "CLIP text encoder -> context " << context.shape_str() << "\n";

  // 2. Image -> latent -> noised latent at t.
  Tensor x = input_image(o);
  const Tensor image = x.clone();
  x.vec().array() = x.vec().array() * 2.0f - 1.0f;
  Tensor z = vae.encode(x).mean;  // [1, 4, h, w]
  z.vec() *= float(vae.config.scaling_factor);
  LdmGenerator gen(o.seed);
  const Tensor zt = make_scheduler("ddpm", sched)->add_noise(z, gen.randn(z.shape()), double(o.timestep));
  const int64_t h = z.dim(2), w = z.dim(3), L = h * w;
  out << "VAE encode " << x.shape_str() << " -> latent " << z.shape_str() << ", noised to t = " << o.timestep << "\n";

  // 3. The U-Net up to its first cross-attention, step by step.
  FirstLevel u;
  u.load(unet_w, unet_config);
  unet_w.finish();
  const Tensor temb = u.time_embedding.forward(get_timestep_embedding(
      {float(o.timestep)}, unet_config.block_out_channels[0], unet_config.flip_sin_to_cos, unet_config.freq_shift));
  Tensor hs = u.conv_in.forward(zt);                           // [1, 320, h, w]
  hs = u.resnet.forward(hs, temb);                             // [1, 320, h, w]
  const Transformer2DModel& tr = u.attention;
  Tensor tokens = image_to_tokens(tr.proj_in.forward(tr.norm.forward(hs)));  // [1, h*w, 320]
  const BasicTransformerBlock& blk = tr.transformer_blocks.at(0);
  tokens = add(tokens, blk.attn1.forward(blk.norm1.forward(tokens)));  // self-attention among pixels
  const Tensor query_in = blk.norm2.forward(tokens);                    // what attn2 sees
  const Attention& attn = blk.attn2;
  const Tensor q = attn.to_q.forward(query_in), k = attn.to_k.forward(context), v = attn.to_v.forward(context);
  r.q_shape = q.shape(), r.k_shape = k.shape(), r.v_shape = v.shape();
  r.heads = attn.heads, r.head_dim = q.dim(2) / attn.heads;
  out << "\nCross-attention in down_blocks.0.attentions.0.transformer_blocks.0.attn2:\n"
      << "  Q = to_q(pixels)  " << q.shape_str() << "   one query per latent pixel (" << h << "x" << w << ")\n"
      << "  K = to_k(text)    " << k.shape_str() << "   one key per token\n"
      << "  V = to_v(text)    " << v.shape_str() << "   one value per token\n";
  std::snprintf(line, sizeof line, "  %lld heads of d = %lld: P = softmax(Q K^T / sqrt(%lld)) is [%lld, %lld, %lld]\n",
                (long long)r.heads, (long long)r.head_dim, (long long)r.head_dim, (long long)r.heads, (long long)L,
                (long long)k.dim(1));
  out << line;

  // 4. The probabilities, checked against the block's own forward.
  const std::vector<float> p = attention_probs(q, k, r.heads);
  const Tensor ours = attn.to_out_0.forward(apply_probs(p, v, r.heads, L));
  const Tensor theirs = attn.forward(query_in, context);
  for (int64_t i = 0; i < ours.numel(); ++i) r.check_error = std::max(r.check_error, double(std::abs(ours[i] - theirs[i])));
  std::snprintf(line, sizeof line, "  to_out(P V) matches Attention::forward to %.1e (max abs difference)\n",
                r.check_error);
  out << line;
  const int64_t Lk = k.dim(1);
  r.probs.assign(size_t(L * Lk), 0.0f);  // averaged over the heads
  for (int64_t hd = 0; hd < r.heads; ++hd)
    for (int64_t i = 0; i < L * Lk; ++i) r.probs[size_t(i)] += p[size_t(hd * L * Lk + i)] / float(r.heads);

  // 5. One pixel's attention over the tokens.
  const int64_t qx = std::clamp<int64_t>(int64_t(o.query_x * float(w)), 0, w - 1);
  const int64_t qy = std::clamp<int64_t>(int64_t(o.query_y * float(h)), 0, h - 1);
  r.query = qy * w + qx;
  const float* row = r.probs.data() + r.query * Lk;
  std::snprintf(line, sizeof line, "\nLatent pixel (x %lld, y %lld) attends (mean over heads):\n", (long long)qx,
                (long long)qy);
  out << line;
  double padding = 0;
  for (int64_t j = 0; j < Lk; ++j) {
    if (j < n_prompt) {
      std::snprintf(line, sizeof line, "  %2lld %-12s %.4f\n", (long long)j, words[size_t(j)].c_str(), row[j]);
      out << line;
    } else {
      padding += row[j];
    }
  }
  std::snprintf(line, sizeof line, "  %lld padding <end> tokens together: %.4f\n", (long long)(Lk - n_prompt), padding);
  out << line;

  if (!o.out_dir.empty()) {
    std::filesystem::create_directories(o.out_dir);
    viz::Series prompt_bars{"prompt tokens", {}, {}}, pad_bars{"<start> / <end> padding", {}, {}};
    prompt_bars.bars = pad_bars.bars = true;
    pad_bars.color = viz::kGray;
    for (int64_t j = 0; j < Lk; ++j) {
      viz::Series& s = (j == 0 || j >= n_prompt - 1) ? pad_bars : prompt_bars;
      s.x.push_back(double(j)), s.y.push_back(row[j]);
    }
    viz::PlotOptions po;
    po.width = 640, po.height = 300;
    std::snprintf(line, sizeof line, "Pixel (%lld, %lld) over the 77 tokens", (long long)qx, (long long)qy);
    po.title = line, po.x_label = "token position", po.y_label = "attention (mean of heads)";
    r.pictures.push_back(o.out_dir + "/lesson04_attention_bars.png");
    stamped(viz::plot({prompt_bars, pad_bars}, po), synthetic).save(r.pictures.back());

    // Each prompt token's map over the latent pixels, beside the image (query pixel marked).
    const int scale = std::max<int>(1, int(128 / w));
    const int iscale = std::max<int>(1, int(128 / x.dim(2)));
    viz::Canvas pic = viz::picture(image, iscale);
    const int cx = int(qx * x.dim(3) / w * iscale + x.dim(3) / w * iscale / 2);
    const int cy = int(qy * x.dim(2) / h * iscale + x.dim(2) / h * iscale / 2);
    for (int d = -6; d <= 6; ++d) pic.fill_rect(cx + d, cy - 1, 1, 3, viz::kWhite), pic.fill_rect(cx - 1, cy + d, 3, 1, viz::kWhite);
    std::vector<viz::Canvas> tiles{pic};
    std::vector<std::string> caps{"image, query +"};
    std::vector<float> map(static_cast<size_t>(L));
    for (int64_t j = 0; j < n_prompt; ++j) {
      for (int64_t i = 0; i < L; ++i) map[size_t(i)] = r.probs[size_t(i * Lk + j)];
      auto [lo, hi] = viz::min_max(map.data(), L);
      tiles.push_back(viz::heatmap(map.data(), int(h), int(w), lo, hi, scale));
      caps.push_back(words[size_t(j)] + " " + viz::format_number(lo) + "-" + viz::format_number(hi));
    }
    r.pictures.push_back(o.out_dir + "/lesson04_first_attention.png");
    stamped(viz::grid(tiles, caps, 6), synthetic).save(r.pictures.back());
    for (const auto& path : r.pictures) out << "Wrote " << path << "\n";
  }
  return r;
}

inline Result run(const Options& opts, std::ostream& out) {
  Options o = opts;
  const std::string spec = model_spec(o.model);
  ModelFiles files = open_model(spec);
  for (auto* j : {&files.vae_config, &files.text_encoder_config, &files.unet_config})
    if (!j->is_object()) *j = nlohmann::json::object();  // no config.json: SD1.5's
  out << "Model: " << files.description << "\n";
  const CLIPTokenizer tok(tokenizer_dir(o, files));
  const CLIPTextModel clip = load_text_encoder(files);
  const AutoencoderKL vae = load_vae(files);
  if (o.size == 0) o.size = std::min<int64_t>(vae.config.sample_size, 128);
  LDM_CHECK(o.size >= 8 && o.size % 8 == 0, "lesson 4: --size must be a positive multiple of 8, got ", o.size);
  const bool synthetic = is_synthetic(spec);
  WeightStore unet_w(files.unet);
  out << "\nPart 1: the U-Net up to its first cross-attention, on the picture noised to t = " << o.timestep << ".\n";
  Result r = run(tok, clip, vae, unet_w, UNetConfig::from_json(files.unet_config), o, out, scheduler_config(files), synthetic);
  if (o.maps) {
    LoadOptions lo;
    lo.tokenizer_dir = tokenizer_dir(o, files);
    const StableDiffusion sd = load_stable_diffusion(files, lo);
    const UNet2DConditionModel unet = load_unet(files);
    r.maps = token_maps(sd, unet, o.prompt, r.words, int(o.size), o.map_options);
    std::vector<int> focus;  // the colour and shape words of a dataset caption, else every word
    shapes::PartialSpec t;
    if (shapes::parse_caption(o.prompt, t) && t.colour != shapes::kUnsaid) {
      for (const char* w : {shapes::kColours[t.colour].word, shapes::kShapeWords[t.shape]})
        if (int j = token_index(r.words, w); j >= 0) focus.push_back(j);
      if (int j = token_index(r.words, "the"); j >= 0) focus.push_back(j);  // a word that names nothing, to compare
    } else {
      for (size_t j = 1; j + 1 < r.words.size(); ++j) focus.push_back(int(j));
    }
    const std::vector<std::string> pics = report_token_maps(r.maps, focus, synthetic, o.out_dir, out);
    r.pictures.insert(r.pictures.end(), pics.begin(), pics.end());
    for (const auto& path : pics) out << "Wrote " << path << "\n";
  }
  return r;
}

}  // namespace ldm::lessons::cross_attention
