// `ldm generate`: txt2img and img2img from the shell, with diffusers' SD1.5 defaults.
#include <omp.h>

#include <algorithm>
#include <cstdio>
#include <sstream>

#include "commands.hpp"
#include "ldm/core/image.hpp"
#include "ldm/core/rng.hpp"
#include "ldm/load.hpp"
#include "ldm/pipeline.hpp"
#include "progress.hpp"
#ifdef LDM_WITH_CUDA
#include "ldm/cuda/device_tensor.hpp"
#endif

namespace ldm::cli {
namespace {

struct Options {
  std::string model = "synthetic:sd15", tokenizer, prompt, negative_prompt, scheduler = "pndm";
  bool karras = false;
  std::string timestep_spacing;  // empty: the model's scheduler config (SD1.5: leading)
  int steps = 50, width = 512, height = 512, batch = 1, clip_skip = 1, threads = 0;
  float guidance = 7.5f, guidance_rescale = 0.0f, strength = 0.75f;
  uint64_t seed = 42;
  std::string rng = "ldm", init_image, init_latents, output = "out.png", output_tensors;
  bool fp16_weights = false;
  std::string device = "cpu", precision = "fp32";
  bool cuda_graphs = false;
  std::string conv = "auto";
};

std::string output_name(const std::string& base, int index, int count) {
  if (count == 1) return base;
  const size_t dot = base.rfind('.');
  const std::string stem = dot == std::string::npos ? base : base.substr(0, dot);
  const std::string ext = dot == std::string::npos ? ".png" : base.substr(dot);
  return stem + "-" + std::to_string(index) + ext;
}

// The "parameters" text chunk, in the form Stable Diffusion web UIs write and read.
std::string parameters_text(const Options& o, uint64_t seed) {
  std::ostringstream s;
  s << o.prompt << "\n";
  if (!o.negative_prompt.empty()) s << "Negative prompt: " << o.negative_prompt << "\n";
  s << "Steps: " << o.steps << ", Sampler: " << o.scheduler << (o.karras ? " karras" : "") << ", CFG scale: " << o.guidance
    << ", Seed: " << seed << ", RNG: " << o.rng << ", Size: " << o.width << "x" << o.height << ", Model: " << o.model;
  if (o.clip_skip > 1) s << ", Clip skip: " << o.clip_skip;
  if (o.guidance_rescale > 0) s << ", Guidance rescale: " << o.guidance_rescale;
  if (!o.init_image.empty()) s << ", Denoising strength: " << o.strength << ", Init image: " << o.init_image;
  return s.str();
}

void run_generate(const Options& o) {
  // Check what can be checked before the (slow) model load.
  make_scheduler(o.scheduler, SchedulerConfig{});  // throws for an unknown name, listing the valid ones
  LDM_CHECK(o.steps >= 1, "--steps must be at least 1, got ", o.steps);
  LDM_CHECK(o.width % 8 == 0 && o.height % 8 == 0, "--width and --height must be multiples of 8, got ", o.width, "x",
            o.height);
  LDM_CHECK(o.init_image.empty() || (o.strength > 0.0f && o.strength <= 1.0f), "--strength must be in (0, 1], got ",
            o.strength);
  LoadOptions lo;
  lo.tokenizer_dir = o.tokenizer;
  lo.fp16_weights = o.fp16_weights;
  lo.device = o.device;
  lo.precision = o.precision;
  lo.cuda_graphs = o.cuda_graphs;
  lo.conv = parse_conv_algo(o.conv);
  check_device(lo);  // --device cuda without a GPU (or without CUDA in the build) fails here
  if (o.threads > 0) omp_set_num_threads(o.threads);
  auto gen = make_generator(o.rng, o.seed);

  using clock = std::chrono::steady_clock;
  auto t0 = clock::now();
  GenerationParams p;
  if (!o.init_image.empty()) p.init_image = read_image(o.init_image);
  if (!o.init_latents.empty()) p.init_latents = SafeTensors(o.init_latents).load("latents");

  StableDiffusion sd = load_stable_diffusion(o.model, lo);
  if (o.karras) sd.scheduler_config.use_karras_sigmas = true;
  if (!o.timestep_spacing.empty()) sd.scheduler_config.timestep_spacing = o.timestep_spacing;
  const double load_s = seconds_since(t0);
  std::fprintf(stderr, "loaded %s in %.1f s on %s\n", o.model.c_str(), load_s,
               sd.runner ? sd.runner->device().c_str() : "cpu");

  p.prompt = o.prompt;
  p.negative_prompt = o.negative_prompt;
  p.scheduler = o.scheduler;
  p.steps = o.steps;
  p.guidance_scale = o.guidance;
  p.guidance_rescale = o.guidance_rescale;
  p.width = o.width;
  p.height = o.height;
  p.batch = o.batch;
  p.clip_skip = o.clip_skip;
  p.strength = o.strength;
  if (p.init_image.defined()) {
    p.width = int(p.init_image.dim(3));
    p.height = int(p.init_image.dim(2));
  }
  bool truncated = false;
  prompt_token_ids(sd, o.prompt, {}, &truncated);
  if (truncated)
    std::fprintf(stderr, "warning: the prompt is longer than CLIP's 77 tokens and was truncated, as diffusers does\n");

  ProgressBar bar("sampling");
  GenerationResult r = generate(sd, p, *gen, [&bar](int done, int total, double) { bar.update(done, total); });
  bar.finish();

  const std::string params = parameters_text(o, o.seed);
  for (int64_t b = 0; b < r.image.dim(0); ++b) {
    const std::string path = output_name(o.output, int(b), int(r.image.dim(0)));
    write_png(path, r.image.slice0(b, b + 1), {{"parameters", params}, {"Software", "ldm.cpp"}});
    std::fprintf(stderr, "wrote %s\n", path.c_str());
  }
  if (!o.output_tensors.empty()) {
    SafeTensorsWriter w;
    w.add("image", r.image);
    w.add("latents", r.latents);
    w.save(o.output_tensors);
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
  c->add_option("--model", o.model, "diffusers folder, single .safetensors checkpoint, or synthetic:sd15")
      ->capture_default_str();
  c->add_option("--prompt", o.prompt, "what to draw")->required();
  c->add_option("--negative-prompt", o.negative_prompt, "what to steer away from");
  c->add_option("--scheduler", o.scheduler, scheduler_names_joined("|"))->capture_default_str();
  c->add_flag("--karras", o.karras, "Karras sigmas (sigma-based samplers)");
  c->add_option("--timestep-spacing", o.timestep_spacing, "leading|trailing|linspace (default: the model's config)")
      ->check(CLI::IsMember({"leading", "trailing", "linspace"}));
  c->add_option("--steps", o.steps, "denoising steps")->capture_default_str();
  c->add_option("--guidance", o.guidance, "classifier-free guidance scale (<= 1 disables it)")->capture_default_str();
  c->add_option("--guidance-rescale", o.guidance_rescale, "guidance rescale phi in [0, 1]")->check(CLI::Range(0.0, 1.0));
  c->add_option("--width", o.width, "image width, a multiple of 8")->capture_default_str();
  c->add_option("--height", o.height, "image height, a multiple of 8")->capture_default_str();
  c->add_option("--seed", o.seed, "random seed")->capture_default_str();
  c->add_option("--rng", o.rng, "ldm (our own) or torch-cpu (same draws as torch.Generator('cpu'))")
      ->capture_default_str();
  c->add_option("--batch", o.batch, "images per prompt")->check(CLI::Range(1, 64));
  c->add_option("--clip-skip", o.clip_skip, "use the output of the k-th last CLIP layer (1 = last)")->check(CLI::Range(1, 11));
  c->add_option("--init-image", o.init_image, "img2img: the starting image (PNG/JPEG)");
  c->add_option("--strength", o.strength, "img2img: how much to change the image, in (0, 1]")->capture_default_str();
  c->add_option("--init-latents", o.init_latents, "safetensors file with tensor 'latents' [B,4,H/8,W/8]");
  c->add_option("--tokenizer", o.tokenizer, "folder with vocab.json + merges.txt (default: the model's tokenizer/)");
  c->add_option("--threads", o.threads, "CPU threads (default: all)");
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
  c->add_flag("--cuda-graphs", o.cuda_graphs, "cuda: replay the U-Net forward from CUDA graphs (experimental)");
  c->add_option("--output", o.output, "PNG to write (several: out-0.png, out-1.png, ...)")->capture_default_str();
  c->add_option("--output-tensors", o.output_tensors, "also write image [B,H,W,3] and latents as safetensors");
  c->callback([] { run_generate(o); });
}

}  // namespace ldm::cli
