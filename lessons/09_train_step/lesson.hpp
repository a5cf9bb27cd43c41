// Lesson 9: training latent diffusion (course day 76, "Build a Minimal Latent Diffusion":
// LatentDiffusion.train_step), with the exact gradient.
//
//     z_0  = vae.encode(x).sample() * scaling_factor      frozen VAE: no gradient
//     c    = clip(caption)                                 frozen text encoder: no gradient
//     t    ~ U{0, ..., 999},  eps ~ N(0, I)
//     z_t  = sqrt(abar_t) z_0 + sqrt(1 - abar_t) eps       scheduler.add_noise
//     loss = mean (unet(z_t, t, c) - target)^2             target = eps, or for a v-prediction model
//                                                          v = sqrt(abar_t) eps - sqrt(1 - abar_t) z_0
//
// Part 1 runs that step on models/ldm-shapes (a batch of dataset pictures and captions), then
// backward through the whole U-Net (UNet2DConditionModel::backward, written by hand beside its
// forward): the gradient of every parameter, checked against central differences for two of
// them. Part 2 trains a small U-Net from scratch with those steps (AdamW, a few hundred steps,
// the frozen VAE and text encoder of ldm-shapes): its loss falls below that of the trivial
// predictor (always 0), and its samples go from noise to coloured shapes.
#pragma once
#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <ostream>
#include <map>
#include <random>
#include <string>
#include <vector>

#include "../lesson_common.hpp"
#include "ldm/core/checkpoint.hpp"
#include "ldm/core/image.hpp"
#include "ldm/core/rng.hpp"
#include "ldm/core/rng_ldm.hpp"
#include "ldm/data/shapes_analyser.hpp"
#include "ldm/load.hpp"
#include "ldm/models/clip_tokenizer.hpp"
#include "ldm/pipeline.hpp"
#include "ldm/schedulers/scheduler.hpp"
#include "ldm/train/adamw.hpp"
#include "ldm/train/clip_grad.hpp"
#include "ldm/train/init_weights.hpp"
#include "ldm/train/lr_schedule.hpp"
#include "ldm/train/parameter.hpp"
#include "ldm/viz/colormap.hpp"
#include "ldm/viz/plot.hpp"

namespace ldm::lessons::train_step {

struct Options {
  std::string model;          // "" = models/ldm-shapes
  int batch = 8;              // part 1: dataset pictures in the batch
  uint64_t seed = 0;
  // Part 2: a small U-Net from scratch.
  int train_steps = 300;
  int train_batch = 32;
  double lr = 2e-3;
  int pictures = 1024;        // dataset pictures it trains on (their latents are encoded once)
  std::vector<int64_t> channels{32, 64};  // its block_out_channels
  int sample_steps = 20;      // Euler steps for its before / after samples (no guidance)
  std::string out_dir = ".";
};

// The tiny models: SD1.5's components with the same structure and far fewer channels.
struct Models {
  AutoencoderKL vae;
  UNet2DConditionModel unet;
  CLIPTextModel clip;
};

inline Models tiny_models() {
  VAEConfig vc;  // f = 8 and 4 latent channels, as SD1.5, at 32 channels
  vc.block_out_channels = {32, 32, 32, 32};
  vc.layers_per_block = 1;
  UNetConfig uc;  // two levels of 32 and 64 channels, text width 32
  uc.block_out_channels = {32, 64};
  uc.layers_per_block = {2, 2};
  uc.down_block_types = {"CrossAttnDownBlock2D", "DownBlock2D"};
  uc.up_block_types = {"UpBlock2D", "CrossAttnUpBlock2D"};
  uc.attention_head_dim = {8, 8};
  uc.transformer_layers_per_block = {1, 1};
  uc.cross_attention_dim = 32;
  CLIPTextConfig cc;  // CLIP's vocabulary, 2 layers of width 32
  cc.hidden_size = 32, cc.intermediate_size = 64, cc.num_hidden_layers = 2, cc.num_attention_heads = 4;
  Models m;
  WeightStore w(std::make_shared<SyntheticSource>());
  m.vae.load(w, "", vc);
  m.unet.load(w, "", uc);
  m.clip.load(w, "text_model", cc);
  w.finish();
  return m;
}

struct Result {
  // Part 1.
  std::vector<int> timesteps;
  std::vector<double> sample_loss;  // per batch item
  double loss = 0, trivial = 0;     // the batch's loss, and that of predicting 0 (mean target^2)
  double grad_norm = 0;             // of every U-Net parameter's gradient together
  int64_t parameters = 0;
  std::vector<std::string> checked;            // parameters whose gradient element was checked
  std::vector<double> grad_exact, grad_numeric;  // backward's and central differences', per check
  // Part 2.
  int64_t small_parameters = 0;
  std::vector<double> losses, trivials;  // per training step
  double seconds = 0;
  double colour_before = 0, colour_after = 0, found_before = 0, found_after = 0;  // analyser, over the samples
  std::vector<std::string> pictures;
};

// Dataset examples' posteriors and full captions, encoded by the frozen VAE once.
struct Batch {
  Tensor z0;                  // [B, C, h, w] = scaling_factor * (mean + std * n)
  std::vector<int64_t> ids;   // B rows of 77 token ids
  std::vector<shapes::ShapeSpec> specs;
};

inline Batch dataset_batch(const StableDiffusion& sd, uint64_t seed, int64_t first, int64_t count, LdmGenerator& gen) {
  Batch b;
  std::vector<shapes::Example> ex;
  for (int64_t i = 0; i < count; ++i) ex.push_back(shapes::example(seed, first + i));
  const DiagonalGaussian post = sd.runner->vae_encode(shapes::to_vae_input(ex));
  b.z0 = post.sample(gen.randn(post.mean.shape()));
  b.z0.vec() *= float(sd.vae_config.scaling_factor);
  for (const auto& e : ex) {
    const std::vector<int> t = sd.tokenizer->encode_padded(shapes::full_caption(e.spec), 77);
    b.ids.insert(b.ids.end(), t.begin(), t.end());
    b.specs.push_back(e.spec);
  }
  return b;
}

// One training step's forward: z_t and the target for each item at its timestep.
struct Noised {
  Tensor z_t, target;
  std::vector<float> t;
};
inline Noised add_noise(const Tensor& z0, const SchedulerConfig& sc, LdmGenerator& gen, std::mt19937_64& pick,
                        std::vector<int>* ts = nullptr) {
  const NoiseSchedule ns(sc);
  const int64_t B = z0.dim(0), n = z0.numel() / B;
  const Tensor eps = gen.randn(z0.shape());
  Noised r{Tensor::empty(z0.shape()), Tensor::empty(z0.shape()), {}};
  const bool v = sc.prediction_type == "v_prediction";
  for (int64_t b = 0; b < B; ++b) {
    const int t = int(pick() % uint64_t(sc.num_train_timesteps));
    r.t.push_back(float(t));
    if (ts) ts->push_back(t);
    const float a = std::sqrt(float(ns.alphas_cumprod(t))), s = std::sqrt(1.0f - float(ns.alphas_cumprod(t)));
    for (int64_t j = b * n; j < (b + 1) * n; ++j) {
      r.z_t[j] = a * z0[j] + s * eps[j];
      r.target[j] = v ? a * eps[j] - s * z0[j] : eps[j];
    }
  }
  return r;
}

// loss = mean (pred - target)^2; writes d loss / d pred into *dpred when given.
inline double mse(const Tensor& pred, const Tensor& target, Tensor* dpred = nullptr) {
  double se = 0;
  if (dpred) *dpred = Tensor::empty(pred.shape());
  for (int64_t j = 0; j < pred.numel(); ++j) {
    const double d = double(pred[j]) - target[j];
    se += d * d;
    if (dpred) (*dpred)[j] = float(2.0 * d / double(pred.numel()));
  }
  return se / double(pred.numel());
}

// Part 1: the course's train_step on a batch, and its exact gradient.
inline void part1(const StableDiffusion& sd, UNet2DConditionModel& unet, const Options& o, Result& r, std::ostream& out) {
  char line[256];
  LdmGenerator gen(o.seed);
  const Batch batch = dataset_batch(sd, /*seed=*/7, 0, o.batch, gen);
  const Tensor context = sd.runner->encode_text(batch.ids, o.batch, 1);  // frozen: [B, 77, D]
  std::mt19937_64 pick(o.seed);
  const Noised nz = add_noise(batch.z0, sd.scheduler_config, gen, pick, &r.timesteps);
  std::snprintf(line, sizeof line,
                "Part 1: train_step on a batch of %d dataset pictures, %s prediction\n"
                "  z_0 = VAE encode, sample, * %.3f -> %s;  c = CLIP(caption) -> %s\n",
                o.batch, sd.scheduler_config.prediction_type.c_str(), sd.vae_config.scaling_factor,
                batch.z0.shape_str().c_str(), context.shape_str().c_str());
  out << line;
  UNet2DConditionModel::Saved saved;
  const Tensor pred = unet.forward(nz.z_t, nz.t, context, saved);
  Tensor dpred;
  r.loss = mse(pred, nz.target, &dpred);
  r.trivial = mse(Tensor::full(pred.shape(), 0.0f), nz.target);
  for (int b = 0; b < o.batch; ++b) {
    r.sample_loss.push_back(mse(pred.slice0(b, b + 1), nz.target.slice0(b, b + 1)));
    std::snprintf(line, sizeof line, "  sample %d: t = %3d  loss %.4f   (%s)\n", b, r.timesteps[size_t(b)],
                  r.sample_loss.back(), shapes::full_caption(batch.specs[size_t(b)]).c_str());
    out << line;
  }
  std::snprintf(line, sizeof line, "  batch loss %.4f; predicting 0 everywhere would score %.4f\n", r.loss, r.trivial);
  out << line;

  // Backward: every parameter's gradient at once.
  std::vector<Parameter> params = parameters_of(unet);
  zero_grad(params);
  unet.backward(saved, dpred);
  double g2 = 0;
  for (const Parameter& p : params) {
    r.parameters += p.value->numel();
    if (p.grad->defined()) g2 += double(p.grad->vec().squaredNorm());
  }
  r.grad_norm = std::sqrt(g2);
  std::snprintf(line, sizeof line,
                "\nBackward through the U-Net (written by hand, beside each forward): the gradient of all %lld\n"
                "parameters in one pass, norm %.4f. Two elements checked by central differences (+-1e-2):\n",
                (long long)r.parameters, r.grad_norm);
  out << line;
  // A bias of the last layer and a weight deep inside (the first cross-attention's keys): Linear
  // and bias values are read as they are, so nudging them changes the forward.
  for (const char* name : {"conv_out.bias", "down_blocks.0.attentions.0.transformer_blocks.0.attn2.to_k.weight"}) {
    auto it = std::find_if(params.begin(), params.end(), [&](const Parameter& p) { return p.name == name; });
    LDM_CHECK(it != params.end(), "lesson 9: the U-Net has no ", name);
    Tensor& w = *it->value;
    w = w.clone();  // ours to change (a checkpoint's tensors may be read-only file memory)
    const double exact = (*it->grad)[0];
    const float w0 = w[0], h = 1e-2f;
    auto loss_at = [&](float v) {
      w[0] = v;
      return mse(unet.forward(nz.z_t, nz.t, context), nz.target);
    };
    const double numeric = (loss_at(w0 + h) - loss_at(w0 - h)) / (2.0 * double(h));
    w[0] = w0;
    r.checked.push_back(std::string(name) + "[0]");
    r.grad_exact.push_back(exact), r.grad_numeric.push_back(numeric);
    std::snprintf(line, sizeof line, "  %-68s backward %+.6f   differences %+.6f\n", r.checked.back().c_str(), exact,
                  numeric);
    out << line;
  }
}

// A sample grid's analyser figures: share of pictures with a shape found, and with the right colour.
inline void score(const std::vector<Tensor>& images, const std::vector<shapes::ShapeSpec>& specs, double* found, double* colour) {
  int f = 0, c = 0;
  for (size_t i = 0; i < images.size(); ++i) {
    const shapes::Analysis a = shapes::analyse(shapes::picture_bytes(images[i]).data());
    f += a.found, c += a.found && a.read.colour == specs[i].colour;
  }
  *found = double(f) / double(images.size()), *colour = double(c) / double(images.size());
}

// Part 2: a small U-Net from scratch.
inline void part2(const StableDiffusion& sd, const Options& o, Result& r, std::vector<Tensor>* before,
                  std::vector<Tensor>* after, std::vector<std::string>* prompts, std::ostream& out) {
  using clock = std::chrono::steady_clock;
  char line[256];
  UNetConfig uc = sd.unet_config;  // ldm-shapes' layout, narrower
  uc.block_out_channels = o.channels;
  uc.down_block_types = {"CrossAttnDownBlock2D", "DownBlock2D"};
  uc.up_block_types = {"UpBlock2D", "CrossAttnUpBlock2D"};
  uc.layers_per_block = {1, 1};
  uc.attention_head_dim = {4, 4};
  uc.transformer_layers_per_block = {1, 1};
  uc.norm_num_groups = std::min<int64_t>(uc.norm_num_groups, o.channels.front());
  UNet2DConditionModel unet;
  {
    WeightStore w(std::make_shared<InitSource>(o.seed));  // torch's default initialisation, from a seed
    unet.load(w, "", uc);
    w.finish();
  }
  std::vector<Parameter> params = parameters_of(unet);
  for (const Parameter& p : params) r.small_parameters += p.value->numel();

  // Samples (no guidance) of held-out full captions, before and after.
  std::vector<shapes::ShapeSpec> specs;
  for (int i = 0; i < 8; ++i) {
    specs.push_back(shapes::example(/*seed=*/99, i).spec);
    prompts->push_back(shapes::full_caption(specs.back()));
  }
  const auto* cpu = dynamic_cast<const CpuModelRunner*>(sd.runner.get());
  LDM_CHECK(cpu != nullptr, "lesson 9 trains with the CPU models");
  auto sample = [&](std::vector<Tensor>* images) {
    // A fresh load of the current weights (what a checkpoint would hold), in the model's pipeline.
    std::map<std::string, Tensor> tensors;
    for (const Parameter& p : params) tensors[p.name] = p.as_stored(*p.value);
    WeightStore w(std::make_shared<MapSource>(std::move(tensors)));
    UNet2DConditionModel copy;
    copy.load(w, "", uc);
    w.finish();
    const StableDiffusion small =
        cpu_pipeline(cpu->text_encoder_model(), std::move(copy), cpu->vae_model(), sd.tokenizer, sd.scheduler_config);
    for (size_t i = 0; i < prompts->size(); ++i) {
      GenerationParams p;
      p.prompt = (*prompts)[i], p.scheduler = "euler", p.steps = o.sample_steps, p.guidance_scale = 1;
      p.width = p.height = shapes::kImageSize;
      auto g = make_generator("ldm", 100 + i);
      images->push_back(nhwc_to_nchw(generate(small, p, *g).image));
    }
  };
  sample(before);
  score(*before, specs, &r.found_before, &r.colour_before);

  LdmGenerator gen(o.seed + 1);
  std::mt19937_64 pick(o.seed + 1);
  const auto t0 = clock::now();
  const Batch data = dataset_batch(sd, /*seed=*/0, 0, o.pictures, gen);  // the training set's latents, once
  const Tensor contexts = sd.runner->encode_text(data.ids, o.pictures, 1);  // frozen text encoder: once
  const int64_t n = data.z0.numel() / o.pictures, L = contexts.dim(1), D = contexts.dim(2);
  std::snprintf(line, sizeof line,
                "\nPart 2: a U-Net of %.2f M parameters (block_out_channels %lld, %lld) trained from scratch, %d steps\n"
                "  of batch %d, AdamW lr %.0e with a cosine schedule, on %d dataset pictures (encoded in %.1f s)\n",
                double(r.small_parameters) / 1e6, (long long)o.channels[0], (long long)o.channels[1], o.train_steps,
                o.train_batch, o.lr, o.pictures, std::chrono::duration<double>(clock::now() - t0).count());
  out << line;
  AdamW opt;
  const CosineScheduleWithWarmup schedule{20, o.train_steps, 0.5, 0.1};
  const auto t1 = clock::now();
  for (int step = 0; step < o.train_steps; ++step) {
    const int64_t B = o.train_batch;
    Tensor z0 = Tensor::empty({B, data.z0.dim(1), data.z0.dim(2), data.z0.dim(3)}), ctx = Tensor::empty({B, L, D});
    for (int64_t b = 0; b < B; ++b) {
      const int64_t k = int64_t(pick() % uint64_t(o.pictures));
      std::copy(data.z0.data() + k * n, data.z0.data() + (k + 1) * n, z0.data() + b * n);
      std::copy(contexts.data() + k * L * D, contexts.data() + (k + 1) * L * D, ctx.data() + b * L * D);
    }
    const Noised nz = add_noise(z0, sd.scheduler_config, gen, pick);
    zero_grad(params);
    UNet2DConditionModel::Saved saved;
    const Tensor pred = unet.forward(nz.z_t, nz.t, ctx, saved);
    Tensor dpred;
    r.losses.push_back(mse(pred, nz.target, &dpred));
    r.trivials.push_back(mse(Tensor::full(pred.shape(), 0.0f), nz.target));
    unet.backward(saved, dpred);
    clip_grad_norm(params, 1.0);
    opt.lr = schedule.lr(o.lr, step);
    opt.step(params);
    if ((step + 1) % 50 == 0 || step == 0) {
      double l = 0, tr = 0;
      const int from = std::max(0, step - 49);
      for (int k = from; k <= step; ++k) l += r.losses[size_t(k)], tr += r.trivials[size_t(k)];
      std::snprintf(line, sizeof line, "  step %4d: loss %.4f (mean of the last %d), trivial predictor %.4f\n", step + 1,
                    l / (step - from + 1), step - from + 1, tr / (step - from + 1));
      out << line;
    }
  }
  r.seconds = std::chrono::duration<double>(clock::now() - t1).count();
  sample(after);
  score(*after, specs, &r.found_after, &r.colour_after);
  std::snprintf(line, sizeof line,
                "  trained in %.1f s. Samples of 8 held-out captions (%d Euler steps, no guidance), read back:\n"
                "  before training a shape found in %.0f%%, the right colour in %.0f%%; after: %.0f%% and %.0f%%.\n",
                r.seconds, o.sample_steps, 100 * r.found_before, 100 * r.colour_before, 100 * r.found_after,
                100 * r.colour_after);
  out << line;
}

inline Result run(const StableDiffusion& sd, bool synthetic, const Options& o, std::ostream& out) {
  LDM_CHECK(o.batch >= 1 && o.train_batch >= 1 && o.pictures >= 1, "lesson 9: batch sizes and --pictures must be positive");
  LDM_CHECK(o.channels.size() == 2, "lesson 9: --channels takes two widths (the small U-Net's two levels)");
  Result r;
  if (synthetic) say_synthetic(out);
  const auto* cpu = dynamic_cast<const CpuModelRunner*>(sd.runner.get());
  LDM_CHECK(cpu != nullptr, "lesson 9 trains with the CPU models");
  UNet2DConditionModel unet = cpu->unet_model();  // shares the weights; part 1 clones the two it nudges
  part1(sd, unet, o, r, out);
  std::vector<Tensor> before, after;
  std::vector<std::string> prompts;
  if (o.train_steps > 0) part2(sd, o, r, &before, &after, &prompts, out);

  if (!o.out_dir.empty() && o.train_steps > 0) {
    std::filesystem::create_directories(o.out_dir);
    const size_t win = std::min<size_t>(10, r.losses.size());  // the curves: means of `win` steps
    viz::Series loss("training loss (mean of " + std::to_string(win) + " steps)"),
        trivial("predicting 0 (mean of " + std::to_string(win) + " steps)");
    for (size_t k = win - 1; k < r.losses.size(); ++k) {
      double l = 0, t = 0;
      for (size_t j = k + 1 - win; j <= k; ++j) l += r.losses[j] / double(win), t += r.trivials[j] / double(win);
      loss.x.push_back(double(k + 1)), loss.y.push_back(l);
      trivial.x.push_back(double(k + 1)), trivial.y.push_back(t);
    }
    viz::PlotOptions po;
    po.title = "a small U-Net trained from scratch on ldm-shapes' latents";
    po.x_label = "step";
    po.y_label = "MSE of the " + sd.scheduler_config.prediction_type + " prediction";
    po.y_min = 0;
    po.legend = viz::Corner::TopRight;
    r.pictures.push_back(o.out_dir + "/lesson09_loss.png");
    stamped(viz::plot({loss, trivial}, po), synthetic).save(r.pictures.back());

    std::vector<viz::Canvas> tiles;
    std::vector<std::string> caps;
    for (int row = 0; row < 2; ++row)
      for (size_t i = 0; i < before.size(); ++i) {
        tiles.push_back(viz::picture(row == 0 ? before[i] : after[i], 1));
        caps.push_back(i == 0 ? (row == 0 ? "before" : "after") : "");
      }
    viz::Canvas g = viz::grid(tiles, caps, int(before.size()));
    viz::Canvas sheet(g.width(), g.height() + 12 * int(prompts.size()) + 24);
    sheet.blit(g, 0, 0);
    for (size_t i = 0; i < prompts.size(); ++i)
      sheet.text(8, g.height() + 4 + 12 * int(i), std::to_string(i + 1) + ". " + prompts[i], viz::kBlack);
    r.pictures.push_back(o.out_dir + "/lesson09_samples.png");
    stamped(sheet, synthetic).save(r.pictures.back());
    for (const auto& p : r.pictures) out << "Wrote " << p << "\n";
  }
  return r;
}

inline Result run(const Options& o, std::ostream& out) {
  const std::string spec = model_spec(o.model);
  const ModelFiles files = open_model(spec);
  out << "Model: " << files.description << "\n";
  LoadOptions lo;
  lo.tokenizer_dir = files.tokenizer_dir;
  const StableDiffusion sd = load_stable_diffusion(files, lo);
  LDM_CHECK(sd.vae_config.downscale_factor() * sd.unet_config.sample_size == shapes::kImageSize,
            "lesson 9 trains on the shapes dataset's 64x64 pictures: it needs a model of 64x64 pictures such as "
            "models/ldm-shapes");
  return run(sd, is_synthetic(spec), o, out);
}

}  // namespace ldm::lessons::train_step

