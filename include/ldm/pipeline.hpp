// diffusers StableDiffusionPipeline / StableDiffusionImg2ImgPipeline: text in, image out, in
// diffusers' steps, each a function of its own that generate() calls in turn:
//
//   check_inputs     the parameters against the model, before any work
//   encode_prompt    text -> the U-Net's context
//   prepare_latents  the timesteps and z_T (drawn, given, or the init image noised: img2img)
//   denoise          the sampling loop with classifier-free guidance
//   decode_latents   z_0 -> image
//
//   prompt ──tokenizer──> ids ──CLIP──> context [2B, 77, 768]  (uncond; text)
//   z_T = randn * init_noise_sigma                 (txt2img)
//   z_T = add_noise(vae.encode(image).sample * 0.18215, randn, t_start)   (img2img)
//   for t in timesteps:  eps = unet(scale_model_input([z; z], t), t, context)
//                        eps = eps_u + w (eps_c - eps_u)          (classifier-free guidance)
//                        z   = scheduler.step(eps, t, z)
//                        (inpainting: a 9-channel U-Net also sees the mask and the masked image's
//                        latents; with a 4-channel one the kept part is put back: inpaint.hpp)
//   image = clamp(vae.decode(z / 0.18215) / 2 + 0.5, 0, 1)      (in tiles when large: vae_tiling.hpp)
//
// Random draws come from one Generator in diffusers' order (initial latents, then per-step
// noise of ancestral samplers; for img2img the posterior sample, then the add_noise noise;
// for inpainting the image's posterior sample when needed, the noise, the masked image's
// posterior sample), so `--rng torch-cpu` reproduces diffusers with torch.Generator("cpu").manual_seed(seed).
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
#include "ldm/inpaint.hpp"
#include "ldm/model_runner.hpp"
#include "ldm/models/clip_text.hpp"
#include "ldm/models/clip_tokenizer.hpp"
#include "ldm/models/prompt_emphasis.hpp"
#include "ldm/models/unet.hpp"
#include "ldm/models/vae.hpp"
#include "ldm/models/vae_tiling.hpp"
#include "ldm/schedulers/scheduler.hpp"

namespace ldm {

// The loaded components of a Stable Diffusion 1.5 model. The three networks sit behind one
// interface, `runner` (ldm/model_runner.hpp: the CPU models, or the GPU ones of
// ldm/cuda/runner.hpp); their configs are kept here, apart from them, for what the pipeline must
// know (the VAE's scaling factor, the latent channels and the size rule) wherever the networks run.
// The tokenizer, scheduler and guidance always run on the host.
struct StableDiffusion {
  std::optional<CLIPTokenizer> tokenizer;  // absent: prompts must come as token ids
  CLIPTextConfig text_encoder_config;
  UNetConfig unet_config;
  VAEConfig vae_config;
  SchedulerConfig scheduler_config;
  std::shared_ptr<ModelRunner> runner;  // the networks; never null in a loaded pipeline
};

// A pipeline of CPU models (their configs copied beside them).
inline StableDiffusion cpu_pipeline(CLIPTextModel text_encoder, UNet2DConditionModel unet, AutoencoderKL vae,
                                    std::optional<CLIPTokenizer> tokenizer = std::nullopt,
                                    SchedulerConfig scheduler_config = {}) {
  StableDiffusion sd;
  sd.tokenizer = std::move(tokenizer);
  sd.text_encoder_config = text_encoder.config;
  sd.unet_config = unet.config;
  sd.vae_config = vae.config;
  sd.scheduler_config = scheduler_config;
  sd.runner = std::make_shared<CpuModelRunner>(std::move(text_encoder), std::move(unet), std::move(vae));
  return sd;
}

// When the VAE decodes and encodes in tiles (models/vae_tiling.hpp, diffusers' enable_tiling()).
enum class VaeTilingMode {
  automatic,  // above kAutoVaeTilingPixels
  on,         // whenever the picture is larger than one tile (the VAE's sample_size)
  off,
};
constexpr int64_t kAutoVaeTilingPixels = 1024 * 1024;  // more pixels than this: tiled (a 512 tile needs ~1 GB)

inline bool use_vae_tiling(VaeTilingMode mode, int64_t height, int64_t width) {
  return mode == VaeTilingMode::on || (mode == VaeTilingMode::automatic && height * width > kAutoVaeTilingPixels);
}

struct GenerationParams {
  std::string prompt, negative_prompt;
  // Token ids instead of text (77 each), e.g. from a reference file; used when non-empty.
  std::vector<int64_t> prompt_ids, negative_prompt_ids;
  PromptSyntax prompt_syntax = PromptSyntax::a1111;  // a prompt without brackets, BREAK or 76+ tokens: the same
  std::string scheduler = "pndm";  // make_scheduler name; diffusers' SD1.5 default is PNDM
  int steps = 50;
  float guidance_scale = 7.5f;     // <= 1: no unconditional pass
  float guidance_rescale = 0.0f;
  int width = 512, height = 512;   // multiples of 8 (the VAE's factor)
  int batch = 1;                   // images per prompt
  int clip_skip = 1;               // 1: last layer
  Tensor init_latents;             // [batch, 4, h/8, w/8] given instead of drawn (txt2img)
  Tensor init_image;               // [1, 3, H, W] in [0, 1]: img2img
  Tensor mask;                     // [1, 1, H, W] of 0 and 1 (inpaint.hpp mask_from_picture), with
                                   // init_image: inpainting, 1 = repaint
  float strength = 0.75f;          // img2img, inpainting: how much of the schedule to run
  VaeTilingMode vae_tiling = VaeTilingMode::automatic;

  bool img2img() const { return init_image.defined(); }
  bool inpainting() const { return mask.defined(); }
  bool classifier_free_guidance() const { return guidance_scale > 1.0f; }
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

inline const CLIPTokenizer& tokenizer_of(const StableDiffusion& sd) {
  LDM_CHECK(sd.tokenizer.has_value(), "no tokenizer loaded: give the model folder's tokenizer/ (or --tokenizer DIR)");
  return *sd.tokenizer;
}

}  // namespace detail

// ---- 0. check_inputs ---------------------------------------------------------------------------

// The parameters against each other and the model, before any work (diffusers' check_inputs).
inline void check_inputs(const StableDiffusion& sd, const GenerationParams& p) {
  LDM_CHECK(sd.runner != nullptr, "the pipeline has no models loaded (load_stable_diffusion or cpu_pipeline)");
  LDM_CHECK(p.steps >= 1, "steps must be at least 1, got ", p.steps);
  LDM_CHECK(p.batch >= 1, "batch must be at least 1, got ", p.batch);
  if (!p.img2img()) {
    LDM_CHECK(p.width % 8 == 0 && p.height % 8 == 0 && p.width >= 8 && p.height >= 8,
              "width and height must be positive multiples of 8, got ", p.width, "x", p.height);
  } else {
    LDM_CHECK(p.strength > 0.0f && p.strength <= 1.0f, "strength must be in (0, 1], got ", p.strength);
    LDM_CHECK(p.init_image.dim(2) % 8 == 0 && p.init_image.dim(3) % 8 == 0, "init image size ",
              p.init_image.dim(3), "x", p.init_image.dim(2), " is not a multiple of 8");
  }
  const int64_t in = sd.unet_config.in_channels, latent = sd.vae_config.latent_channels;
  if (p.inpainting()) {
    LDM_CHECK(p.img2img(), "inpainting needs the picture to paint into (init_image) beside the mask");
    LDM_CHECK(p.mask.ndim() == 4 && p.mask.dim(0) == 1 && p.mask.dim(1) == 1 && p.mask.dim(2) == p.init_image.dim(2) &&
                  p.mask.dim(3) == p.init_image.dim(3),
              "the mask ", p.mask.shape_str(), " must be [1, 1, H, W] of the init image's size ", p.init_image.shape_str());
    LDM_CHECK(in == latent || in == 2 * latent + 1, "this U-Net takes ", in, " channels: an inpainting pipeline needs ",
              latent, " (any model) or ", 2 * latent + 1, " (an inpainting model)");
  } else {
    LDM_CHECK(in == latent, "this U-Net takes ", in, " input channels, not the VAE's ", latent,
              (in == 2 * latent + 1 ? ": it is an inpainting model, give it an init image and a mask" : ""));
  }
}

// ---- 1. encode_prompt --------------------------------------------------------------------------

// The prompt's token ids (77), from text through the tokenizer, or as given.
inline std::vector<int64_t> prompt_token_ids(const StableDiffusion& sd, const std::string& text,
                                             const std::vector<int64_t>& given, bool* truncated = nullptr) {
  if (!given.empty()) {
    LDM_CHECK(given.size() == 77, "prompt ids: expected 77 token ids, got ", given.size());
    return given;
  }
  std::vector<int> ids = detail::tokenizer_of(sd).encode_padded(text, 77, truncated);
  return std::vector<int64_t>(ids.begin(), ids.end());
}

// The context [1, 77 k, D] of one text: its given ids (k = 1), or its chunks by `syntax`, each
// through CLIP and weighted (models/prompt_emphasis.hpp; all weights 1 leave CLIP's output as it is).
inline Tensor encode_text_prompt(const StableDiffusion& sd, const std::string& text, const std::vector<int64_t>& given,
                                 PromptSyntax syntax, int clip_skip) {
  auto encode_chunk = [&](const std::vector<int64_t>& ids) { return sd.runner->encode_text(ids, 1, clip_skip); };
  if (!given.empty()) return encode_chunk(prompt_token_ids(sd, text, given));
  return encode_weighted_chunks(prompt_chunks_of(detail::tokenizer_of(sd), text, syntax), encode_chunk);
}

namespace detail {

// Pads the shorter of the prompt's and the negative prompt's contexts [1, 77 k, D] with the
// encoding of the empty chunk (what "" encodes to), so that both have the longer's length
// (A1111's "pad prompt/negative prompt to be same length").
inline void pad_to_same_length(const StableDiffusion& sd, int clip_skip, Tensor& a, Tensor& b) {
  if (a.dim(1) == b.dim(1)) return;
  Tensor& shorter = a.dim(1) < b.dim(1) ? a : b;
  const int64_t L = std::max(a.dim(1), b.dim(1)), D = a.dim(2);
  const Tensor empty = sd.runner->encode_text(prompt_token_ids(sd, "", {}), 1, clip_skip);  // [1, 77, D]
  Tensor padded = Tensor::empty({1, L, D});
  std::copy(shorter.begin(), shorter.end(), padded.data());
  for (int64_t t = shorter.dim(1); t < L; t += empty.dim(1)) std::copy(empty.begin(), empty.end(), padded.data() + t * D);
  shorter = padded;
}

}  // namespace detail

// The U-Net's context: [B (negative prompt), B (prompt)] x [77 k, D] with guidance, else
// [B, 77 k, D] of the prompt (k = 1 unless a long A1111 prompt).
inline Tensor encode_prompt(const StableDiffusion& sd, const GenerationParams& p) {
  Tensor context = encode_text_prompt(sd, p.prompt, p.prompt_ids, p.prompt_syntax, p.clip_skip);
  if (!p.classifier_free_guidance()) return detail::repeat_batch(context, p.batch);
  Tensor uncond = encode_text_prompt(sd, p.negative_prompt, p.negative_prompt_ids, p.prompt_syntax, p.clip_skip);
  detail::pad_to_same_length(sd, p.clip_skip, uncond, context);
  return detail::cat_batch(detail::repeat_batch(uncond, p.batch), detail::repeat_batch(context, p.batch));
}

// ---- 2. prepare_latents ------------------------------------------------------------------------

struct PreparedLatents {
  Tensor latents;                 // z_T [B, 4, h, w], in the scheduler's units
  std::vector<double> timesteps;  // the steps to run (img2img: the last `strength` of them)
  // Inpainting only (inpaint.hpp):
  Tensor mask;                  // [B, 1, h, w]: 1 = repaint, at the latents' size
  Tensor masked_image_latents;  // [B, 4, h, w]: the image with the part to repaint gray, encoded (9-channel U-Net)
  Tensor image_latents;         // [B, 4, h, w]: the image encoded (4-channel U-Net: the part to keep)
  Tensor noise;                 // [B, 4, h, w]: the noise z_T was made from (4-channel U-Net: re-noises the kept part)
};

namespace detail {

// x [1, 3, H, W] in [-1, 1] -> vae.encode(x).sample * scaling_factor, repeated for the batch;
// draws the posterior's noise from gen (diffusers' retrieve_latents, sample_mode "sample").
inline Tensor encode_image_latents(const StableDiffusion& sd, const GenerationParams& p, const Tensor& x,
                                   Generator& gen) {
  const auto encode = [&](const Tensor& im) { return sd.runner->vae_encode(im); };
  DiagonalGaussian posterior = use_vae_tiling(p.vae_tiling, x.dim(2), x.dim(3))
                                   ? tiled_encode(x, VaeTiling::of(sd.vae_config), encode)
                                   : encode(x);
  Tensor z = posterior.sample(gen.randn(posterior.mean.shape()));
  z.vec() *= float(sd.vae_config.scaling_factor);
  return repeat_batch(z, p.batch);
}

inline Tensor to_signed(const Tensor& image) {  // [0, 1] -> [-1, 1]
  Tensor x = image.clone();
  x.vec() = x.vec() * 2.0f - Eigen::VectorXf::Ones(x.numel());
  return x;
}

}  // namespace detail

// txt2img: z_T = (given or randn) * init_noise_sigma over the whole schedule.
// img2img: z_T = add_noise(vae.encode(image).sample * scaling_factor, randn, t_start) over the
// schedule's last `strength`.
// inpainting (diffusers' StableDiffusionInpaintPipeline, its random draws in its order): z_T as
// img2img, or pure noise at strength 1; the image encoded when the U-Net has 4 channels or
// strength < 1, then the noise, then the masked image encoded (drawn for both kinds of U-Net);
// given init_latents are the noise, z_T = noise * init_noise_sigma.
// encode_seconds gets the encoder's time.
inline PreparedLatents prepare_latents(const StableDiffusion& sd, const GenerationParams& p, Scheduler& scheduler,
                                       Generator& gen, double* encode_seconds = nullptr) {
  PreparedLatents r;
  scheduler.set_timesteps(p.steps);
  const int64_t B = p.batch, C = sd.vae_config.latent_channels, f = sd.vae_config.downscale_factor();
  const Shape shape{B, C, p.height / f, p.width / f};
  if (!p.img2img()) {
    r.timesteps = scheduler.timesteps();
    if (p.init_latents.defined()) {
      check_shape(p.init_latents, shape, "init latents");
      r.latents = p.init_latents.clone();
    } else {
      r.latents = gen.randn(shape);
    }
    r.latents.vec() *= scheduler.init_noise_sigma();
    return r;
  }
  r.timesteps = get_timesteps(scheduler, p.steps, p.strength);
  LDM_CHECK(!r.timesteps.empty(), "strength ", p.strength, " with ", p.steps, " steps leaves no denoising step");
  const auto t0 = std::chrono::steady_clock::now();
  const Tensor image = detail::to_signed(p.init_image);
  if (!p.inpainting()) {
    const Tensor init = detail::encode_image_latents(sd, p, image, gen);
    if (encode_seconds) *encode_seconds = seconds_since(t0);
    Tensor noise = gen.randn(init.shape());
    r.latents = scheduler.add_noise(init, noise, r.timesteps.front());
    return r;
  }
  const bool four_channels = sd.unet_config.in_channels == C, strength_max = p.strength == 1.0f;
  if (four_channels || (!p.init_latents.defined() && !strength_max))
    r.image_latents = detail::encode_image_latents(sd, p, image, gen);
  if (p.init_latents.defined()) {
    check_shape(p.init_latents, shape, "init latents");
    r.noise = p.init_latents.clone();
    r.latents = r.noise.clone();
    r.latents.vec() *= scheduler.init_noise_sigma();
  } else {
    r.noise = gen.randn(shape);
    if (strength_max) {
      r.latents = r.noise.clone();
      r.latents.vec() *= scheduler.init_noise_sigma();
    } else {
      r.latents = scheduler.add_noise(r.image_latents, r.noise, r.timesteps.front());
    }
  }
  r.mask = detail::repeat_batch(downsample_nearest(p.mask, f), B);
  r.masked_image_latents = detail::encode_image_latents(sd, p, masked_image(image, p.mask), gen);
  if (encode_seconds) *encode_seconds = seconds_since(t0);
  return r;
}

// ---- 3. denoise --------------------------------------------------------------------------------

// for t in timesteps: eps = unet(scale_model_input([z; z], t), t, context), guided, z = step(eps, t, z).
// context from encode_prompt; start from prepare_latents; step_latents (optional) gets z after
// every step. Inpainting: a 9-channel U-Net gets [z; mask; masked image latents] as its input, a
// 4-channel one has the kept part put back after each step (inpaint.hpp).
inline Tensor denoise(const StableDiffusion& sd, const GenerationParams& p, Scheduler& scheduler, const Tensor& context,
                      PreparedLatents start, Generator& gen, const StepCallback& on_step = nullptr,
                      std::vector<Tensor>* step_latents = nullptr) {
  const bool cfg = p.classifier_free_guidance();
  Tensor latents = std::move(start.latents);
  const std::vector<double>& timesteps = start.timesteps;
  const int64_t B = latents.dim(0);
  const bool nine_channels = p.inpainting() && sd.unet_config.in_channels != latents.dim(1);
  const bool put_back = p.inpainting() && !nine_channels;
  Tensor extra;  // 9-channel inpainting: [mask; masked image latents], doubled with guidance
  if (nine_channels) {
    extra = cat_channels({start.mask, start.masked_image_latents});
    if (cfg) extra = detail::cat_batch(extra, extra);
  }
  for (size_t i = 0; i < timesteps.size(); ++i) {
    const double t = timesteps[i];
    const auto ts = std::chrono::steady_clock::now();
    Tensor model_in = cfg ? detail::cat_batch(latents, latents) : latents;
    model_in = scheduler.scale_model_input(model_in, t);
    if (nine_channels) model_in = cat_channels({model_in, extra});
    Tensor eps = sd.runner->unet(model_in, float(t), context);  // [2B or B, 4, h, w]
    if (cfg) {
      Tensor guided = classifier_free_guidance(eps, p.guidance_scale);
      if (p.guidance_rescale > 0.0f) guided = rescale_noise_cfg(guided, eps.slice0(B, 2 * B), p.guidance_rescale);
      eps = guided;
    }
    latents = scheduler.step(eps, t, latents, &gen);
    if (put_back) {
      const Tensor kept = i + 1 < timesteps.size()
                              ? scheduler.add_noise(start.image_latents, start.noise, timesteps[i + 1])
                              : start.image_latents;
      keep_unmasked(latents, kept, start.mask);
    }
    if (step_latents) step_latents->push_back(latents.clone());
    if (on_step) on_step(int(i + 1), int(timesteps.size()), seconds_since(ts));
  }
  return latents;
}

// ---- 4. decode_latents -------------------------------------------------------------------------

// image = clamp(vae.decode(z / scaling_factor) / 2 + 0.5, 0, 1): [B, 4, h, w] -> [B, 8h, 8w, 3],
// the decode in tiles by `tiling`.
inline Tensor decode_latents(const StableDiffusion& sd, const Tensor& latents,
                             VaeTilingMode tiling = VaeTilingMode::automatic) {
  Tensor z = latents.clone();
  z.vec() /= sd.vae_config.scaling_factor;
  const auto decode = [&](const Tensor& x) { return sd.runner->vae_decode(x); };
  const int64_t f = sd.vae_config.downscale_factor();
  Tensor decoded = use_vae_tiling(tiling, z.dim(2) * f, z.dim(3) * f)
                       ? tiled_decode(z, VaeTiling::of(sd.vae_config), decode)
                       : decode(z);  // [B, 3, H, W] in about [-1, 1]
  for (float& v : decoded) v = std::clamp(v / 2.0f + 0.5f, 0.0f, 1.0f);
  return nchw_to_nhwc(decoded);
}

// ---- the whole pipeline ------------------------------------------------------------------------

// txt2img when params.init_image is undefined, else img2img.
inline GenerationResult generate(const StableDiffusion& sd, const GenerationParams& p, Generator& gen,
                                 const StepCallback& on_step = nullptr, bool keep_step_latents = false) {
  check_inputs(sd, p);
  GenerationResult result;

  auto t0 = std::chrono::steady_clock::now();
  const Tensor context = encode_prompt(sd, p);
  result.timings.text_encoding = seconds_since(t0);

  auto scheduler = make_scheduler(p.scheduler, sd.scheduler_config);
  PreparedLatents start = prepare_latents(sd, p, *scheduler, gen, &result.timings.encoding);

  t0 = std::chrono::steady_clock::now();
  result.latents = denoise(sd, p, *scheduler, context, std::move(start), gen, on_step,
                           keep_step_latents ? &result.step_latents : nullptr);
  result.timings.sampling = seconds_since(t0);

  t0 = std::chrono::steady_clock::now();
  result.image = decode_latents(sd, result.latents, p.vae_tiling);
  result.timings.decoding = seconds_since(t0);
  return result;
}

}  // namespace ldm
