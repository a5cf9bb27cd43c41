// diffusers StableDiffusionPipeline / StableDiffusionImg2ImgPipeline: text in, image out.
//
//   prompt ──tokenizer──> ids ──CLIP──> context [2B, 77, 768]  (uncond; text)
//   z_T = randn * init_noise_sigma                 (txt2img)
//   z_T = add_noise(vae.encode(image).sample * 0.18215, randn, t_start)   (img2img)
//   for t in timesteps:  eps = unet(scale_model_input([z; z], t), t, context)
//                        eps = eps_u + w (eps_c - eps_u)          (classifier-free guidance)
//                        z   = scheduler.step(eps, t, z)
//   image = clamp(vae.decode(z / 0.18215) / 2 + 0.5, 0, 1)
//
// Random draws come from one Generator in diffusers' order (initial latents, then per-step
// noise of ancestral samplers; for img2img the posterior sample, then the add_noise noise),
// so `--rng torch-cpu` reproduces diffusers with torch.Generator("cpu").manual_seed(seed).
#pragma once
#include <algorithm>
#include <chrono>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "ldm/core/clock.hpp"
#include "ldm/core/image.hpp"
#include "ldm/core/random.hpp"
#include "ldm/guidance.hpp"
#include "ldm/model_runner.hpp"
#include "ldm/models/clip_text.hpp"
#include "ldm/models/clip_tokenizer.hpp"
#include "ldm/models/prompt_emphasis.hpp"
#include "ldm/models/unet.hpp"
#include "ldm/models/vae.hpp"
#include "ldm/schedulers/scheduler.hpp"

namespace ldm {

// The loaded components of a Stable Diffusion 1.5 model.
//
// The networks run through `runner` when it is set (e.g. the GPU one of ldm/cuda/runner.hpp;
// the CPU models are then left empty, only vae.config is filled), else through the CPU models
// here. The tokenizer, scheduler and guidance always run on the host.
struct StableDiffusion {
  std::optional<CLIPTokenizer> tokenizer;  // absent: prompts must come as token ids
  CLIPTextModel text_encoder;
  UNet2DConditionModel unet;
  AutoencoderKL vae;
  SchedulerConfig scheduler_config;
  std::shared_ptr<ModelRunner> runner;  // null: the CPU models above
};

// How prompt text becomes the U-Net's context.
enum class PromptSyntax {
  a1111,  // AUTOMATIC1111's: (emphasis:1.2), [less], BREAK, any length in 75-token chunks (models/prompt_emphasis.hpp)
  plain,  // diffusers': the text as it is, truncated to 77 tokens
};

struct GenerationParams {
  std::string prompt, negative_prompt;
  // Token ids instead of text (77 each), e.g. from a reference file; used when non-empty.
  std::vector<int64_t> prompt_ids, negative_prompt_ids;
  PromptSyntax prompt_syntax = PromptSyntax::a1111;  // a prompt without brackets, BREAK or 76+ tokens: the same
  std::string scheduler = "pndm";  // make_scheduler name; diffusers' SD1.5 default is PNDM
  int steps = 50;
  float guidance_scale = 7.5f;     // <= 1: no unconditional pass
  float guidance_rescale = 0.0f;
  int width = 512, height = 512;   // multiples of 64 for SD1.5 (the VAE's 8 x the U-Net's 3 halvings)
  int batch = 1;                   // images per prompt
  int clip_skip = 1;               // 1: last layer
  Tensor init_latents;             // [batch, 4, h/8, w/8] given instead of drawn (txt2img)
  Tensor init_image;               // [1, 3, H, W] in [0, 1]: img2img
  float strength = 0.75f;          // img2img: how much of the schedule to run
};

struct GenerationTimings {
  double text_encoding = 0, sampling = 0, decoding = 0, encoding = 0;
};

struct GenerationResult {
  Tensor image;    // [batch, H, W, 3] in [0, 1], before 8-bit rounding
  Tensor latents;  // [batch, 4, H/8, W/8], final, before decoding
  std::vector<Tensor> step_latents;  // after each step (when asked for)
  GenerationTimings timings;
};

// Called after every denoising step: (step done, total steps, seconds that step took).
using StepCallback = std::function<void(int, int, double)>;

namespace detail {

// Repeats every item of a batch n times in place order: [a, b] -> [a, a, b, b] (repeat_interleave).
inline Tensor repeat_batch(const Tensor& x, int64_t n) {
  if (n == 1) return x;
  Shape s = x.shape();
  const int64_t per = x.numel() / s[0];
  s[0] *= n;
  Tensor r = Tensor::empty(s);
  for (int64_t b = 0; b < x.dim(0); ++b)
    for (int64_t k = 0; k < n; ++k) std::copy(x.data() + b * per, x.data() + (b + 1) * per, r.data() + (b * n + k) * per);
  return r;
}

inline Tensor cat_batch(const Tensor& a, const Tensor& b) {
  Shape s = a.shape();
  s[0] += b.dim(0);
  Tensor r = Tensor::empty(s);
  std::copy(a.begin(), a.end(), r.data());
  std::copy(b.begin(), b.end(), r.data() + a.numel());
  return r;
}

}  // namespace detail

// The prompt's token ids (77), from text through the tokenizer, or as given.
inline std::vector<int64_t> prompt_token_ids(const StableDiffusion& sd, const std::string& text,
                                             const std::vector<int64_t>& given, bool* truncated = nullptr) {
  if (!given.empty()) {
    LDM_CHECK(given.size() == 77, "prompt ids: expected 77 token ids, got ", given.size());
    return given;
  }
  LDM_CHECK(sd.tokenizer.has_value(), "no tokenizer loaded: give the model folder's tokenizer/ (or --tokenizer DIR)");
  std::vector<int> ids = sd.tokenizer->encode_padded(text, 77, truncated);
  return std::vector<int64_t>(ids.begin(), ids.end());
}

// The context [1, 77 k, D] of a prompt: its given ids (k = 1), or its text by `syntax`.
inline Tensor encode_prompt(const StableDiffusion& sd, ModelRunner& net, const std::string& text,
                            const std::vector<int64_t>& given, PromptSyntax syntax, int clip_skip) {
  if (!given.empty() || syntax == PromptSyntax::plain)
    return net.encode_text(prompt_token_ids(sd, text, given), 1, clip_skip);
  LDM_CHECK(sd.tokenizer.has_value(), "no tokenizer loaded: give the model folder's tokenizer/ (or --tokenizer DIR)");
  return encode_weighted_chunks(prompt_chunks(*sd.tokenizer, parse_prompt_attention(text)),
                                [&](const std::vector<int64_t>& ids) { return net.encode_text(ids, 1, clip_skip); });
}

namespace detail {

// Pads the shorter of the prompt's and the negative prompt's contexts [1, 77 k, D] with the
// encoding of the empty chunk (what "" encodes to), so that both have the longer's length
// (A1111's "pad prompt/negative prompt to be same length").
inline void pad_to_same_length(const StableDiffusion& sd, ModelRunner& net, int clip_skip, Tensor& a, Tensor& b) {
  if (a.dim(1) == b.dim(1)) return;
  Tensor& shorter = a.dim(1) < b.dim(1) ? a : b;
  const int64_t L = std::max(a.dim(1), b.dim(1)), D = a.dim(2);
  LDM_CHECK(sd.tokenizer.has_value(), "no tokenizer loaded: give the model folder's tokenizer/ (or --tokenizer DIR)");
  const Tensor empty = net.encode_text(prompt_token_ids(sd, "", {}), 1, clip_skip);  // [1, 77, D]
  Tensor padded = Tensor::empty({1, L, D});
  std::copy(shorter.begin(), shorter.end(), padded.data());
  for (int64_t t = shorter.dim(1); t < L; t += empty.dim(1)) std::copy(empty.begin(), empty.end(), padded.data() + t * D);
  shorter = padded;
}

}  // namespace detail

// txt2img when params.init_image is undefined, else img2img.
inline GenerationResult generate(const StableDiffusion& sd, const GenerationParams& p, Generator& gen,
                                 const StepCallback& on_step = nullptr, bool keep_step_latents = false) {
  using clock = std::chrono::steady_clock;
  const bool img2img = p.init_image.defined();
  LDM_CHECK(p.steps >= 1, "steps must be at least 1, got ", p.steps);
  LDM_CHECK(p.batch >= 1, "batch must be at least 1, got ", p.batch);
  if (!img2img) {
    LDM_CHECK(p.width % 8 == 0 && p.height % 8 == 0 && p.width >= 8 && p.height >= 8,
              "width and height must be positive multiples of 8, got ", p.width, "x", p.height);
  } else {
    LDM_CHECK(p.strength > 0.0f && p.strength <= 1.0f, "strength must be in (0, 1], got ", p.strength);
    LDM_CHECK(p.init_image.dim(2) % 8 == 0 && p.init_image.dim(3) % 8 == 0, "init image size ",
              p.init_image.dim(3), "x", p.init_image.dim(2), " is not a multiple of 8");
  }
  GenerationResult result;
  CpuModelRunner cpu(sd.text_encoder, sd.unet, sd.vae);
  ModelRunner& net = sd.runner ? *sd.runner : cpu;
  const bool cfg = p.guidance_scale > 1.0f;
  const int64_t B = p.batch;

  // 1. Text -> context [B (uncond) + B (text), 77 k, 768] (k = 1 unless a long A1111 prompt)
  auto t0 = clock::now();
  Tensor context = encode_prompt(sd, net, p.prompt, p.prompt_ids, p.prompt_syntax, p.clip_skip);
  if (cfg) {
    Tensor uncond = encode_prompt(sd, net, p.negative_prompt, p.negative_prompt_ids, p.prompt_syntax, p.clip_skip);
    detail::pad_to_same_length(sd, net, p.clip_skip, uncond, context);
    context = detail::cat_batch(detail::repeat_batch(uncond, B), detail::repeat_batch(context, B));
  } else {
    context = detail::repeat_batch(context, B);
  }
  result.timings.text_encoding = seconds_since(t0);

  // 2. Timesteps and initial latents
  auto scheduler = make_scheduler(p.scheduler, sd.scheduler_config);
  scheduler->set_timesteps(p.steps);
  std::vector<double> timesteps = scheduler->timesteps();
  const float sf = sd.vae.config.scaling_factor;
  Tensor latents;
  if (!img2img) {
    const Shape shape{B, 4, p.height / 8, p.width / 8};
    if (p.init_latents.defined()) {
      check_shape(p.init_latents, shape, "init latents");
      latents = p.init_latents.clone();
    } else {
      latents = gen.randn(shape);
    }
    latents.vec() *= scheduler->init_noise_sigma();
  } else {
    timesteps = get_timesteps(*scheduler, p.steps, p.strength);
    LDM_CHECK(!timesteps.empty(), "strength ", p.strength, " with ", p.steps, " steps leaves no denoising step");
    t0 = clock::now();
    Tensor image = p.init_image.clone();
    image.vec() = image.vec() * 2.0f - Eigen::VectorXf::Ones(image.numel());  // [0, 1] -> [-1, 1]
    DiagonalGaussian posterior = net.vae_encode(image);
    Tensor init = posterior.sample(gen.randn(posterior.mean.shape()));
    init.vec() *= sf;
    init = detail::repeat_batch(init, B);
    result.timings.encoding = seconds_since(t0);
    Tensor noise = gen.randn(init.shape());
    latents = scheduler->add_noise(init, noise, timesteps.front());
  }

  // 3. Denoising loop
  t0 = clock::now();
  int done = 0;
  for (double t : timesteps) {
    auto ts = clock::now();
    Tensor model_in = cfg ? detail::cat_batch(latents, latents) : latents;
    model_in = scheduler->scale_model_input(model_in, t);
    Tensor eps = net.unet(model_in, float(t), context);  // [2B or B, 4, h, w]
    if (cfg) {
      Tensor guided = classifier_free_guidance(eps, p.guidance_scale);
      if (p.guidance_rescale > 0.0f) guided = rescale_noise_cfg(guided, eps.slice0(B, 2 * B), p.guidance_rescale);
      eps = guided;
    }
    latents = scheduler->step(eps, t, latents, &gen);
    if (keep_step_latents) result.step_latents.push_back(latents.clone());
    ++done;
    if (on_step) on_step(done, int(timesteps.size()), seconds_since(ts));
  }
  result.timings.sampling = seconds_since(t0);
  result.latents = latents;

  // 4. Decode: image = clamp(decode(z / 0.18215) / 2 + 0.5, 0, 1), HWC
  t0 = clock::now();
  Tensor z = latents.clone();
  z.vec() /= sf;
  Tensor decoded = net.vae_decode(z);  // [B, 3, H, W] in about [-1, 1]
  for (float& v : decoded) v = std::clamp(v / 2.0f + 0.5f, 0.0f, 1.0f);
  result.image = nchw_to_nhwc(decoded);
  result.timings.decoding = seconds_since(t0);
  return result;
}

}  // namespace ldm
