// `ldm generate`: txt2img and img2img from the shell, with diffusers' defaults: without --model
// the default model (models/ldm-shapes, ldm/default_model.hpp); the image size is the model's native
// size (the U-Net's sample_size x the VAE's factor: 64 for ldm-shapes, 512 for SD1.5) and the
// sampler the model's scheduler class (scheduler/scheduler_config.json "_class_name"), unless given.
#include <omp.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <sstream>
#include <utility>

#include "commands.hpp"
#include "ldm/core/image.hpp"
#include "ldm/core/rng.hpp"
#include "ldm/default_model.hpp"
#include "ldm/inpaint.hpp"
#include "ldm/load.hpp"
#include "ldm/lora_tags.hpp"
#include "ldm/core/memory.hpp"
#include "ldm/pipeline.hpp"
#include "output_path.hpp"
#include "progress.hpp"
#include "seed_option.hpp"
#include "train_common.hpp"  // path_exists
#ifdef LDM_WITH_CUDA
#include "ldm/cuda/device_tensor.hpp"
#endif

namespace ldm::cli {
namespace {

struct Options {
  std::string model;      // "": the default model (ldm/default_model.hpp)
  std::string scheduler;  // "": the model's scheduler class, pndm where it has none
  std::string tokenizer, prompt, negative_prompt;
  std::string prompt_syntax = "a1111";  // or "plain" (PromptSyntax)
  bool karras = false;
  std::string timestep_spacing;  // empty: the model's scheduler config (SD1.5: leading)
  int steps = 50, width = 0, height = 0, batch = 1, clip_skip = 1, threads = 0;
  bool width_given = false, height_given = false;  // else the model's native size
  bool steps_given = false, guidance_given = false;  // else the model's generation_defaults.json, if it has one
  float guidance = 7.5f, guidance_rescale = 0.0f, strength = 0.75f;
  std::string seed = "42";  // text: CLI11 would wrap "-1" into 2^64 - 1 (see parse_seed)
  std::string rng = "ldm", init_image, mask, init_latents, output = "out.png", output_tensors;
  bool strength_given = false;  // else 0.75 for img2img, 1 for inpainting (diffusers' defaults)
  bool fp16_weights = false;
  std::string device = "cpu", precision = "fp32";
  bool cuda_graphs = false;
  std::string conv = "auto";
  std::string vae_tiling = "auto";  // auto | on | off (VaeTilingMode)
  std::vector<std::string> loras;    // --lora FILE[:M]
  std::string lora_dir = "models/loras";  // where <lora:NAME:M> finds NAME.safetensors
  std::string lora_hashes;                // for the PNG: "name: hash, ..." (A1111's "Lora hashes")
};

constexpr int kMaxSize = 4096;   // pixels per side: a 4096^2 U-Net pass already needs tens of GB
constexpr int kMaxSteps = 1000;  // SD1.5's num_train_timesteps

std::string output_name(const std::string& base, int index, int count) {
  if (count == 1) return base;
  const size_t dot = base.rfind('.');
  const std::string stem = dot == std::string::npos ? base : base.substr(0, dot);
  const std::string ext = dot == std::string::npos ? ".png" : base.substr(dot);
  return stem + "-" + std::to_string(index) + ext;
}

// The "parameters" text chunk, in the form Stable Diffusion web UIs write and read. One
// generator draws the whole batch, so every image has the same seed and its batch position.
std::string parameters_text(const Options& o, uint64_t seed, int64_t index, int64_t count) {
  std::ostringstream s;
  s << o.prompt << "\n";
  if (!o.negative_prompt.empty()) s << "Negative prompt: " << o.negative_prompt << "\n";
  s << "Steps: " << o.steps << ", Sampler: " << o.scheduler << (o.karras ? " karras" : "") << ", CFG scale: " << o.guidance
    << ", Seed: " << seed << ", RNG: " << o.rng << ", Size: " << o.width << "x" << o.height << ", Model: " << o.model;
  if (count > 1) s << ", Batch size: " << count << ", Batch pos: " << index;
  if (o.clip_skip > 1) s << ", Clip skip: " << o.clip_skip;
  if (o.guidance_rescale > 0) s << ", Guidance rescale: " << o.guidance_rescale;
  if (!o.init_image.empty()) s << ", Denoising strength: " << o.strength << ", Init image: " << o.init_image;
  if (!o.mask.empty()) s << ", Mask: " << o.mask;
  if (!o.lora_hashes.empty()) s << ", Lora hashes: \"" << o.lora_hashes << "\"";  // <lora:> tags stay in the prompt
  return s.str();
}

// CLI11's Range lets NaN through (every comparison with NaN is false): numbers are checked here.
void check_number(const char* option, double value, double lo, double hi) {
  LDM_CHECK(std::isfinite(value) && value >= lo && value <= hi, option, " must be a number from ", lo, " to ", hi,
            ", got ", value);
}

// --lora FILE[:M]: the multiplier after the last colon when it is a number, else 1.
LoraSpec parse_lora_option(const std::string& arg) {
  LoraSpec s;
  s.path = arg;
  const size_t colon = arg.rfind(':');
  if (colon != std::string::npos)
    if (const std::optional<double> m = lora_multiplier(arg.substr(colon + 1))) {
      s.path = arg.substr(0, colon);
      s.text_encoder_multiplier = s.unet_multiplier = *m;
    }
  LDM_CHECK(path_exists(s.path), "--lora '", s.path, "' does not exist (expected FILE or FILE:MULTIPLIER)");
  return s;
}

// The LoRAs of --lora and of the prompt's <lora:NAME:M> tags (found as NAME.safetensors in
// --lora-dir); the tags are taken out of o.prompt's text. Returns them for LoadOptions.
std::vector<LoraSpec> collect_loras(const Options& o, std::string& prompt_text) {
  std::vector<LoraSpec> r;
  for (const std::string& a : o.loras) r.push_back(parse_lora_option(a));
  const PromptLoras tags = extract_lora_tags(o.prompt);
  prompt_text = tags.prompt;
  for (const LoraTag& t : tags.tags) {
    LoraSpec s;
    s.path = o.lora_dir + "/" + t.name + ".safetensors";
    LDM_CHECK(path_exists(s.path), "the prompt's <lora:", t.name, "> names a LoRA that is not in --lora-dir '",
              o.lora_dir, "' (no ", s.path, ")");
    s.text_encoder_multiplier = t.text_encoder_multiplier;
    s.unet_multiplier = t.unet_multiplier;
    r.push_back(s);
  }
  return r;
}

// A step count, from --steps or the model's file.
void check_steps(const std::string& what, int steps) {
  LDM_CHECK(steps >= 1 && steps <= kMaxSteps, what, " must be at least 1 and at most ", kMaxSteps, ", got ", steps);
}

// Image sides: multiples of `multiple` (the VAE's 8 times the U-Net's halvings: 64 for SD1.5).
bool size_ok(int64_t side, int64_t multiple) { return side >= multiple && side <= kMaxSize && side % multiple == 0; }

// What the model folder recommends (generation_defaults.json) for the options not given.
void apply_generation_defaults(const ModelFiles& files, Options& o) {
  const nlohmann::json& d = files.generation_defaults;
  const std::string& path = files.generation_defaults_path;
  if (!o.guidance_given && d.contains("guidance_scale")) {
    LDM_CHECK(d["guidance_scale"].is_number(), "'", path, "': guidance_scale must be a number");
    o.guidance = d["guidance_scale"].get<float>();
    check_number(str("guidance_scale in '", path, "'").c_str(), o.guidance, 0.0, 100.0);
  }
  if (!o.steps_given && d.contains("num_inference_steps")) {
    LDM_CHECK(d["num_inference_steps"].is_number_integer(), "'", path, "': num_inference_steps must be an integer");
    o.steps = d["num_inference_steps"].get<int>();
    check_steps(str("'", path, "': num_inference_steps"), o.steps);
  }
}

void run_generate(Options o) {
  // Check everything that can be checked before the (slow) model load.
  if (!o.scheduler.empty()) make_scheduler(o.scheduler, SchedulerConfig{});  // throws for an unknown name, listing the valid ones
  check_steps("--steps", o.steps);
  check_number("--guidance", o.guidance, 0.0, 100.0);
  check_number("--guidance-rescale", o.guidance_rescale, 0.0, 1.0);
  LDM_CHECK(std::isfinite(o.strength) && o.strength > 0.0f && o.strength <= 1.0f, "--strength must be in (0, 1], got ",
            o.strength);
  check_number("--threads", o.threads, 0, 1024);
  LDM_CHECK(o.mask.empty() || !o.init_image.empty(), "--mask goes with --init-image: the picture to paint into");
  if (!o.mask.empty() && !o.strength_given) o.strength = 1.0f;  // diffusers' inpainting default: repaint whole
  const uint64_t seed = parse_seed(o.seed, /*allow_random=*/true);
  check_output_path(o.output, "--output");
  if (!o.output_tensors.empty()) check_output_path(o.output_tensors, "--output-tensors");
  LoadOptions lo;
  lo.tokenizer_dir = o.tokenizer;
  lo.fp16_weights = o.fp16_weights;
  lo.device = o.device;
  lo.precision = o.precision;
  lo.cuda_graphs = o.cuda_graphs;
  lo.conv = parse_conv_algo(o.conv);
  lo.free_idle_networks = true;  // one pipeline call: each network is still loaded once (fp16: 3.6 -> 3.1 GB at 512x512)
  std::string prompt_text;  // the prompt without its <lora:...> tags
  lo.loras = collect_loras(o, prompt_text);
  check_device(lo);  // --device cuda without a GPU (or without CUDA in the build) fails here
  if (o.threads > 0) omp_set_num_threads(o.threads);
  keep_freed_memory();  // every step frees and allocates the same tensors: no fresh pages each time
  auto gen = make_generator(o.rng, seed);

  using clock = std::chrono::steady_clock;
  auto t0 = clock::now();
  // Opening maps the weight files and reads the configs (every one validated here); the
  // weights themselves are read by load_stable_diffusion below.
  if (o.model.empty()) o.model = default_model_path();
  const ModelFiles files = open_model(o.model);
  apply_generation_defaults(files, o);
  const UNetConfig unet = unet_config(files);
  const int64_t f = vae_config(files).downscale_factor(), multiple = f * unet.size_multiple();
  const SchedulerConfig sched = scheduler_config(files);
  if (!o.width_given) o.width = int(unet.sample_size * f);  // the native size, as diffusers' pipelines
  if (!o.height_given) o.height = int(unet.sample_size * f);
  if (o.scheduler.empty()) {
    const nlohmann::json& j = files.scheduler_config;
    const std::string cls = j.is_object() && j.contains("_class_name") && j["_class_name"].is_string()
                                ? j["_class_name"].get<std::string>() : "";
    o.scheduler = scheduler_name_of_class(cls);
    if (o.scheduler.empty()) o.scheduler = "pndm";  // diffusers' SD1.5 default
  }
  LDM_CHECK(o.steps <= sched.num_train_timesteps, "--steps ", o.steps, " is more than the model's ",
            sched.num_train_timesteps, " training timesteps (num_train_timesteps)");

  GenerationParams p;
  p.width = o.width;
  p.height = o.height;
  const std::string size_rule = str("multiples of ", multiple, " from ", multiple, " to ", kMaxSize, " (the VAE divides ",
                                    "them by ", f, ", the U-Net halves that ", unet.num_blocks() - 1, " times)");
  if (!o.init_image.empty()) {
    LDM_CHECK(o.init_latents.empty() || !o.mask.empty(), "--init-latents is for txt2img and inpainting (the starting ",
              "noise): with --init-image alone the latents come from the image");
    p.init_image = read_image(o.init_image);  // [1, 3, H, W]: its size is the output size
    if (!o.mask.empty()) {
      p.mask = mask_from_picture(read_image(o.mask));
      LDM_CHECK(p.mask.dim(2) == p.init_image.dim(2) && p.mask.dim(3) == p.init_image.dim(3), "--mask '", o.mask,
                "' is ", p.mask.dim(3), "x", p.mask.dim(2), ", the --init-image ", p.init_image.dim(3), "x",
                p.init_image.dim(2), ": give a mask of the picture's size");
    }
    p.width = int(p.init_image.dim(3));
    p.height = int(p.init_image.dim(2));
    LDM_CHECK(size_ok(p.width, multiple) && size_ok(p.height, multiple), "--init-image '", o.init_image, "' is ",
              p.width, "x", p.height, ": its width and height must be ", size_rule, "; resize or crop it");
    LDM_CHECK(int(double(o.steps) * double(o.strength)) >= 1, "--strength ", o.strength, " with --steps ", o.steps,
              " leaves no denoising step: raise either");
  } else {
    LDM_CHECK(size_ok(o.width, multiple) && size_ok(o.height, multiple), "--width and --height must be ", size_rule,
              ", got ", o.width, "x", o.height);
  }
  if (!o.init_latents.empty()) {
    p.init_latents = SafeTensors(o.init_latents).load("latents");
    const Shape want{o.batch, vae_config(files).latent_channels, p.height / f, p.width / f};
    LDM_CHECK(p.init_latents.shape() == want, "--init-latents '", o.init_latents, "': tensor 'latents' is ",
              p.init_latents.shape_str(), ", expected ", shape_str(want), " for --batch ", o.batch, " --width ",
              p.width, " --height ", p.height, (o.init_image.empty() ? "" : " (the --init-image's size)"));
    LDM_CHECK(p.init_latents.vec().allFinite(), "--init-latents '", o.init_latents,
              "': tensor 'latents' holds NaN or infinite values");
  }

  std::fprintf(stderr, "seed: %llu\n", static_cast<unsigned long long>(seed));
  std::fprintf(stderr, "model %s: %dx%d, %s, %d steps, guidance %g\n", o.model.c_str(), o.width, o.height,
               o.scheduler.c_str(), o.steps, double(o.guidance));

  for (const LoraSpec& l : lo.loras) {  // A1111 names a LoRA by its file's stem, without ':' and ','
    std::string name = l.path.substr(l.path.find_last_of('/') + 1);
    name = name.substr(0, name.rfind(".safetensors"));
    name.erase(std::remove_if(name.begin(), name.end(), [](char ch) { return ch == ':' || ch == ','; }), name.end());
    o.lora_hashes += (o.lora_hashes.empty() ? "" : ", ") + name + ": " + lora_short_hash(l.path);
    std::fprintf(stderr, "lora %s: merged into the text encoder x%g, the U-Net x%g\n", l.path.c_str(),
                 l.text_encoder_multiplier, l.unet_multiplier);
  }
  StableDiffusion sd = load_stable_diffusion(files, lo);
  if (o.karras) sd.scheduler_config.use_karras_sigmas = true;
  if (!o.timestep_spacing.empty()) sd.scheduler_config.timestep_spacing = o.timestep_spacing;
  const double load_s = seconds_since(t0);
  std::fprintf(stderr, "loaded %s in %.1f s on %s\n", o.model.c_str(), load_s, sd.runner->device().c_str());

  p.prompt = prompt_text;
  p.negative_prompt = o.negative_prompt;
  p.scheduler = o.scheduler;
  p.steps = o.steps;
  p.guidance_scale = o.guidance;
  p.guidance_rescale = o.guidance_rescale;
  p.batch = o.batch;
  p.clip_skip = o.clip_skip;
  p.strength = o.strength;
  p.prompt_syntax = o.prompt_syntax == "plain" ? PromptSyntax::plain : PromptSyntax::a1111;
  p.vae_tiling = o.vae_tiling == "on" ? VaeTilingMode::on : o.vae_tiling == "off" ? VaeTilingMode::off
                                                                                   : VaeTilingMode::automatic;
  // A1111's syntax reads prompts of any length (75-token chunks); diffusers' truncates them.
  if (p.prompt_syntax == PromptSyntax::plain)
    for (const auto& [text, what] : {std::pair{&prompt_text, "prompt"}, std::pair{&o.negative_prompt, "negative prompt"}}) {
      bool truncated = false;
      prompt_token_ids(sd, *text, {}, &truncated);
      if (truncated)
        std::fprintf(stderr, "warning: the %s is longer than CLIP's 77 tokens and was truncated, as diffusers does "
                     "(--prompt-syntax a1111 reads it whole)\n", what);
    }

  ProgressBar bar("sampling");
  GenerationResult r = generate(sd, p, *gen, [&bar](int done, int total, double) { bar.update(done, total); });
  bar.finish();

  std::string written;
  for (int64_t b = 0; b < r.image.dim(0); ++b) {
    const std::string path = output_name(o.output, int(b), int(r.image.dim(0)));
    write_png(path, r.image.slice0(b, b + 1),
              {{"parameters", parameters_text(o, seed, b, r.image.dim(0))}, {"Software", "ldm.cpp"}});
    std::fprintf(stderr, "wrote %s\n", path.c_str());
    written += (written.empty() ? "" : ", ") + path;
  }
  if (!o.output_tensors.empty()) {
    SafeTensorsWriter w;
    w.add("image", r.image);
    w.add("latents", r.latents);
    try {
      w.save(o.output_tensors);
    } catch (const Error& e) {
      LDM_FAIL("the images were written (", written, ") but --output-tensors was not: ", e.what());
    }
    std::fprintf(stderr, "wrote %s (image, latents)\n", o.output_tensors.c_str());
  }
  const auto& t = r.timings;
  std::string gpu_memory;
#ifdef LDM_WITH_CUDA
  if (o.device == "cuda")
    gpu_memory = str(", GPU peak memory ", double(cuda::peak_memory_allocated_bytes()) / double(1ull << 30), " GiB");
#endif
  std::fprintf(stderr,
               "done: load %.1f s, text encoding %.2f s,%s sampling %.1f s (%.3f s/step), decode %.2f s, peak memory %.2f GB%s\n",
               load_s, t.text_encoding, t.encoding > 0 ? str(" image encoding ", t.encoding, " s,").c_str() : "",
               t.sampling, t.sampling / std::max<size_t>(1, size_t(bar.total())), t.decoding, peak_rss_gb(),
               gpu_memory.c_str());
}

}  // namespace

void add_generate(CLI::App& app) {
  static Options o;
  auto* c = app.add_subcommand("generate", "Generate images from a prompt (txt2img, or img2img with --init-image)");
  c->add_option("--model", o.model,
                "diffusers folder, single .safetensors checkpoint, or synthetic:sd15 (default: models/ldm-shapes)");
  c->add_option("--prompt", o.prompt, "what to draw")->required();
  c->add_option("--negative-prompt", o.negative_prompt, "what to steer away from");
  c->add_option("--prompt-syntax", o.prompt_syntax,
                "a1111: AUTOMATIC1111's (word:1.3) and [word] emphasis, BREAK, prompts of any length in 75-token "
                "chunks; plain: the text as diffusers reads it, truncated at 77 tokens")
      ->capture_default_str()
      ->check(CLI::IsMember({"a1111", "plain"}));
  c->add_option("--scheduler", o.scheduler, scheduler_names_joined("|") + " (default: the model's scheduler class)");
  c->add_flag("--karras", o.karras, "Karras sigmas (sigma-based samplers)");
  c->add_option("--timestep-spacing", o.timestep_spacing, "leading|trailing|linspace (default: the model's config)")
      ->check(CLI::IsMember({"leading", "trailing", "linspace"}));
  static CLI::Option* steps = c->add_option(
      "--steps", o.steps, "denoising steps, 1 to 1000 (default: the model's generation_defaults.json, else 50)");
  static CLI::Option* guidance = c->add_option(
      "--guidance", o.guidance,
      "classifier-free guidance scale, 0 to 100, <= 1 disables it (default: the model's generation_defaults.json, "
      "else 7.5; models/ldm-shapes: 2)");
  c->add_option("--guidance-rescale", o.guidance_rescale, "guidance rescale phi in [0, 1]")->capture_default_str();
  static CLI::Option* width = c->add_option("--width", o.width,
                "image width (default: the model's native size); SD1.5: a multiple of 64 (the VAE's 8 x the U-Net's "
                "3 halvings), at most 4096");
  static CLI::Option* height = c->add_option("--height", o.height, "image height (default: the model's native size)");
  c->add_option("--seed", o.seed, "random seed, 0 to 2^64-1; -1 picks one at random (printed as 'seed: N')")
      ->capture_default_str();
  c->add_option("--rng", o.rng, "ldm (our own) or torch-cpu (same draws as torch.Generator('cpu'))")
      ->capture_default_str();
  c->add_option("--batch", o.batch, "images per prompt")->check(CLI::Range(1, 64));
  c->add_option("--clip-skip", o.clip_skip, "use the output of the k-th last CLIP layer (1 = last)")->check(CLI::Range(1, 11));
  c->add_option("--init-image", o.init_image, "img2img: the starting image (PNG/JPEG), sides multiples of 64");
  c->add_option("--mask", o.mask,
                "inpainting, with --init-image: a picture of its size, white = repaint (gray read at 0.5); an "
                "inpainting checkpoint (9-channel U-Net) or any model");
  static CLI::Option* strength = c->add_option(
      "--strength", o.strength, "img2img / inpainting: how much to change the image, in (0, 1] (default 0.75; with --mask 1)");
  c->add_option("--init-latents", o.init_latents, "safetensors file with tensor 'latents' [B,4,H/8,W/8]");
  c->add_option("--tokenizer", o.tokenizer, "folder with vocab.json + merges.txt (default: the model's tokenizer/)");
  c->add_option("--threads", o.threads, "CPU threads, 0 = all")->capture_default_str();
  c->add_flag("--fp16-weights", o.fp16_weights, "keep weights in fp16 in memory (half the memory, converted on the fly)");
  c->add_option("--device", o.device, "where the networks run: cpu or cuda")
      ->check(CLI::IsMember({"cpu", "cuda"}))
      ->capture_default_str();
  c->add_option("--precision", o.precision, "cuda: fp32, fp16 or bf16 (the CPU path is fp32)")
      ->check(CLI::IsMember({"fp32", "fp16", "bf16"}))
      ->capture_default_str();
  c->add_option("--conv", o.conv,
                "CPU: the 3x3 convolutions' algorithm (f23, f43: Winograd F(2x2), F(4x4); docs/numerics.md)")
      ->check(CLI::IsMember({"auto", "direct", "f23", "f43"}))
      ->capture_default_str();
  c->add_option("--lora", o.loras,
                "a LoRA file (kohya/A1111 or diffusers/PEFT .safetensors) merged into the weights, FILE or FILE:MULTIPLIER; "
                "repeatable. <lora:NAME:MULTIPLIER> in the prompt does the same with NAME.safetensors in --lora-dir");
  c->add_option("--lora-dir", o.lora_dir, "where the prompt's <lora:NAME:M> tags find NAME.safetensors")
      ->capture_default_str();
  c->add_option("--vae-tiling", o.vae_tiling,
                "decode (and encode, img2img) in tiles of the VAE's sample_size with 25% overlap, as diffusers' "
                "enable_tiling(): constant memory at any size; auto: above 1024x1024 pixels")
      ->capture_default_str()
      ->check(CLI::IsMember({"auto", "on", "off"}));
  c->add_flag("--cuda-graphs", o.cuda_graphs, "cuda: replay the U-Net forward from CUDA graphs (experimental)");
  c->add_option("--output", o.output, "PNG to write (several: out-0.png, out-1.png, ...)")->capture_default_str();
  c->add_option("--output-tensors", o.output_tensors, "also write image [B,H,W,3] and latents as safetensors");
  c->callback([] {
    o.width_given = width->count() > 0;
    o.height_given = height->count() > 0;
    o.steps_given = steps->count() > 0;
    o.strength_given = strength->count() > 0;
    o.guidance_given = guidance->count() > 0;
    run_generate(o);
  });
}

}  // namespace ldm::cli
