// Lesson 9: one training step of latent diffusion (course day 76, "Build a Minimal Latent
// Diffusion": LatentDiffusion.train_step).
//
//     z_0  = vae.encode(x).sample() * scaling_factor      frozen VAE: no gradient
//     c    = clip(tokens)                                  frozen text encoder: no gradient
//     t    ~ U{0, ..., 999},  eps ~ N(0, I)
//     z_t  = sqrt(abar_t) z_0 + sqrt(1 - abar_t) eps       scheduler.add_noise
//     loss = || unet(z_t, t, c) - eps ||^2  (mean)         only the U-Net learns
//
// The library has no autograd, so this lesson runs the forward pass of the step and prints
// the loss per sample, then does what backward would do for ONE parameter tensor, the 4
// biases of the U-Net's last convolution: their gradient by central differences, beside the
// exact one (for a bias of the last layer, dL/db_c = 2/N sum of the residual in channel c),
// and a few SGD steps with it, so the loss goes down on this batch. Tiny models by default
// (SD1.5's layout at 1/10 of the width, synthetic weights), so it runs in about a second.
#pragma once
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <ostream>
#include <random>
#include <string>
#include <vector>

#include "ldm/core/checkpoint.hpp"
#include "ldm/core/shared_dir.hpp"
#include "ldm/core/image.hpp"
#include "ldm/core/rng_ldm.hpp"
#include "ldm/load.hpp"
#include "ldm/models/clip_tokenizer.hpp"
#include "ldm/schedulers/scheduler.hpp"
#include "ldm/viz/colormap.hpp"
#include "ldm/viz/resize.hpp"
#include "ldm/viz/test_pattern.hpp"

namespace ldm::lessons::train_step {

struct Options {
  std::string model;        // "" = the tiny models; else an SD1.5 model (diffusers folder, .safetensors, synthetic:sd15)
  std::string image;        // "" = the built-in test pattern
  std::string caption = "a red mug on a checkered table";
  std::string tokenizer;    // "" = the model's tokenizer/, else ../shared/clip-tokenizer, else fixed ids
  int64_t size = 128;       // image side (a multiple of 8)
  int batch = 4;            // samples in the batch: the same image, each with its own t and eps
  int sgd_steps = 3;        // gradient steps on conv_out.bias
  float lr = 1.0f;          // their learning rate
  uint64_t seed = 0;
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
  std::vector<int> timesteps;
  std::vector<double> sample_loss;  // per batch item
  double loss = 0;                  // their mean: the training loss
  std::vector<double> grad_exact, grad_numeric;  // dL/d conv_out.bias, before the first step
  std::vector<double> losses;       // after each SGD step (losses[0] = before)
  std::vector<std::string> pictures;
};

// 77 token ids of the caption: the tokenizer's when one is found, else <start> <end>... (the
// unconditional prompt), which the tiny text encoder takes as well.
inline std::vector<int64_t> caption_ids(const Options& o, const std::string& model_tokenizer, std::ostream& out) {
  std::string dir = !o.tokenizer.empty() ? o.tokenizer : model_tokenizer;
  if (dir.empty()) dir = shared_path("clip-tokenizer");  // $LDM_SHARED/clip-tokenizer, or ""
  if (dir.empty()) {
    out << "(no tokenizer found: using the empty caption; pass --tokenizer DIR for a real one)\n";
    std::vector<int64_t> ids(77, 49407);
    ids[0] = 49406;
    return ids;
  }
  const std::vector<int> ids = CLIPTokenizer(dir).encode_padded(o.caption);
  return std::vector<int64_t>(ids.begin(), ids.end());
}

inline Result run(Models& m, const std::vector<int64_t>& ids, const Options& o, std::ostream& out) {
  LDM_CHECK(o.batch >= 1, "lesson 9: --batch must be at least 1");
  const int64_t f = m.vae.config.downscale_factor() * m.unet.config.size_multiple();
  LDM_CHECK(o.size % f == 0, "lesson 9: --size must be a multiple of ", f, " for these models, got ", o.size);
  Result r;
  char line[256];
  const int64_t B = o.batch;

  // 1. The frozen parts: image -> z_0, caption -> c.
  Tensor x = o.image.empty() ? viz::test_pattern(o.size, o.size) : viz::center_crop_resize(read_image(o.image), o.size);
  const Tensor image = x.clone();
  x.vec().array() = x.vec().array() * 2.0f - 1.0f;
  LdmGenerator gen(o.seed);
  const DiagonalGaussian post = m.vae.encode(x);
  Tensor z1 = post.sample(gen.randn(post.mean.shape()));  // [1, 4, h, w]
  z1.vec() *= float(m.vae.config.scaling_factor);
  const Tensor c1 = m.clip.encode(ids, 1);  // [1, 77, D]
  const int64_t C = z1.dim(1), h = z1.dim(2), w = z1.dim(3), n1 = z1.numel();
  Tensor z0({B, C, h, w}), ctx({B, c1.dim(1), c1.dim(2)});  // the batch: B copies
  for (int64_t b = 0; b < B; ++b) {
    std::copy(z1.begin(), z1.end(), z0.data() + b * n1);
    std::copy(c1.begin(), c1.end(), ctx.data() + b * c1.numel());
  }
  out << "x " << x.shape_str() << " -> VAE encode, sample, * " << m.vae.config.scaling_factor << " -> z_0 "
      << z0.shape_str() << " (batch of " << B << " copies)\n";
  out << "caption -> CLIP -> c " << ctx.shape_str() << "\n";

  // 2. Noise each sample to its own random t.
  std::mt19937_64 rng(o.seed);
  SchedulerConfig sc;
  const NoiseSchedule ns(sc);
  const Tensor eps = gen.randn(z0.shape());
  Tensor zt({B, C, h, w});
  std::vector<float> ts;
  for (int64_t b = 0; b < B; ++b) {
    const int t = int(rng() % uint64_t(sc.num_train_timesteps));
    r.timesteps.push_back(t), ts.push_back(float(t));
    const float a = ns.alphas_cumprod(t);
    for (int64_t i = 0; i < n1; ++i)  // z_t = sqrt(abar) z_0 + sqrt(1 - abar) eps
      zt[b * n1 + i] = std::sqrt(a) * z0[b * n1 + i] + std::sqrt(1.0f - a) * eps[b * n1 + i];
  }

  // 3. Predict the noise, compare: the loss.
  Tensor& bias = m.unet.conv_out.bias;
  bias = bias.clone();  // ours to change (a checkpoint's tensors may be read-only file memory)
  const int64_t N = z0.numel();
  Tensor eps_hat;
  auto loss_fn = [&](std::vector<double>* per_sample) {
    eps_hat = m.unet.forward(zt, ts, ctx);  // [B, 4, h, w]
    double total = 0;
    for (int64_t b = 0; b < B; ++b) {
      double s = 0;
      for (int64_t i = 0; i < n1; ++i) s += std::pow(double(eps_hat[b * n1 + i]) - eps[b * n1 + i], 2);
      if (per_sample) per_sample->push_back(s / double(n1));
      total += s;
    }
    return total / double(N);
  };
  r.loss = loss_fn(&r.sample_loss);
  out << "\nunet(z_t, t, c) -> eps_hat " << eps_hat.shape_str() << ";  loss = mean((eps_hat - eps)^2)\n";
  for (int64_t b = 0; b < B; ++b) {
    std::snprintf(line, sizeof line, "  sample %lld: t = %3d  abar = %.3f  loss %.4f\n", (long long)b,
                  r.timesteps[size_t(b)], double(ns.alphas_cumprod(r.timesteps[size_t(b)])), r.sample_loss[size_t(b)]);
    out << line;
  }
  std::snprintf(line, sizeof line, "  batch loss %.4f\n", r.loss);
  out << line;

  // 4. What backward gives for conv_out.bias, and a few SGD steps with it.
  const Tensor residual = [&] {  // eps_hat - eps at the current weights
    Tensor d = eps_hat.clone();
    d.vec() -= eps.vec();
    return d;
  }();
  for (int64_t c = 0; c < C; ++c) {
    double s = 0;
    for (int64_t b = 0; b < B; ++b)
      for (int64_t i = 0; i < h * w; ++i) s += residual[(b * C + c) * h * w + i];
    r.grad_exact.push_back(2.0 * s / double(N));
  }
  auto numeric_grad = [&] {
    std::vector<double> g;
    const float step = 1e-2f;
    for (int64_t c = 0; c < C; ++c) {
      const float b0 = bias[c];
      bias[c] = b0 + step;
      const double up = loss_fn(nullptr);
      bias[c] = b0 - step;
      const double down = loss_fn(nullptr);
      bias[c] = b0;
      g.push_back((up - down) / (2.0 * double(step)));
    }
    return g;
  };
  r.grad_numeric = numeric_grad();
  out << "\nGradient of the loss w.r.t. conv_out.bias (the U-Net's last 4 numbers):\n";
  for (int64_t c = 0; c < C; ++c) {
    std::snprintf(line, sizeof line, "  channel %lld: central differences %+.6f   exact 2/N sum(eps_hat - eps) %+.6f\n",
                  (long long)c, r.grad_numeric[size_t(c)], r.grad_exact[size_t(c)]);
    out << line;
  }
  r.losses.push_back(r.loss);
  std::snprintf(line, sizeof line, "SGD on conv_out.bias alone (lr %.2g), same batch:\n  step 0: loss %.5f\n", o.lr,
                r.loss);
  out << line;
  for (int s = 1; s <= o.sgd_steps; ++s) {
    const std::vector<double> g = s == 1 ? r.grad_numeric : numeric_grad();
    for (int64_t c = 0; c < C; ++c) bias[c] -= o.lr * float(g[size_t(c)]);
    r.losses.push_back(loss_fn(nullptr));
    std::snprintf(line, sizeof line, "  step %d: loss %.5f\n", s, r.losses.back());
    out << line;
  }
  out << "(A bias can only remove each channel's mean error, so the loss soon stops falling. Training computes\n"
      << "this gradient for all the U-Net's parameters at once by backpropagation, and repeats for many steps.)\n";

  // 5. Picture: sample 0's latent channel 0 through the step.
  if (!o.out_dir.empty()) {
    std::filesystem::create_directories(o.out_dir);
    const int iscale = std::max<int>(1, int(128 / image.dim(2)));
    const int s = std::max<int>(1, int(image.dim(2) * iscale / h));  // a latent cell over its f x f pixels
    auto ch0 = [&](const Tensor& t) { return viz::heatmap(t.data(), int(h), int(w), s); };  // own range each
    std::snprintf(line, sizeof line, "z_t, t=%d", r.timesteps[0]);
    r.pictures.push_back(o.out_dir + "/lesson09_train_step.png");
    viz::grid({viz::picture(image, iscale), ch0(z0), ch0(eps), ch0(zt), ch0(eps_hat), ch0(residual)},
              {"image x", "z_0 (ch 0)", "eps", line, "eps_hat", "eps_hat - eps"}, 6)
        .save(r.pictures.back());
    out << "Wrote " << r.pictures.back() << " (latent channel 0 of sample 0, each in its own colour range)\n";
  }
  return r;
}

inline Result run(const Options& o, std::ostream& out) {
  Models m;
  std::string tok;
  if (o.model.empty()) {
    out << "Models: tiny SD1.5-shaped VAE (f = 8, 32 channels), U-Net (32/64 channels) and CLIP (2 layers of 32),\n"
        << "synthetic weights\n";
    m = tiny_models();
  } else {
    ModelFiles files = open_model(o.model);
    for (auto* j : {&files.vae_config, &files.text_encoder_config, &files.unet_config})
      if (!j->is_object()) *j = nlohmann::json::object();  // no config.json: SD1.5's
    out << "Models: " << files.description << "\n";
    m.vae = load_vae(files);
    m.unet = load_unet(files);
    m.clip = load_text_encoder(files);
    tok = files.tokenizer_dir;
  }
  return run(m, caption_ids(o, tok, out), o, out);
}

}  // namespace ldm::lessons::train_step
