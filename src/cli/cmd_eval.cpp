// `ldm eval`: one component on tensors from a safetensors file, so anyone can compare it with
// PyTorch on the same inputs.
//   unet        sample [B,4,H,W], timestep [1] or [B], context [B,L,768]  -> out
//   vae-decode  latent [B,4,h,w] (already / 0.18215)               -> image
//   vae-encode  image [B,3,H,W] in [-1,1]                           -> mean, logvar
//   clip        input_ids int64 [B,77]                              -> last_hidden_state, penultimate
// --device cuda --precision fp32|fp16|bf16 runs the GPU twin of the component instead (inputs
// and outputs stay float32 files).
#include <cstdio>
#include <functional>
#include <memory>
#include <utility>
#include <vector>

#include "commands.hpp"
#include "ldm/core/memory.hpp"
#include "ldm/load.hpp"
#include "output_path.hpp"

namespace ldm::cli {
namespace {

struct EvalOptions {
  std::string component, model = "synthetic:sd15", inputs, output;
  bool fp16_weights = false;
  std::string device = "cpu", precision = "fp32";
  std::string conv = "auto";
};

// Tensor `name` of f, `ndim`-d with no empty dimension and (float tensors) only finite values.
Tensor input(const SafeTensors& f, const std::string& name, int ndim, const std::string& what) {
  LDM_CHECK(f.contains(name), "'", f.path(), "' has no tensor '", name, "' (", what, ")");
  Tensor t = f.load(name);
  LDM_CHECK(t.ndim() == ndim, "tensor '", name, "' in '", f.path(), "' should be ", ndim, "-d (", what, "), got ",
            t.shape_str());
  for (int i = 0; i < ndim; ++i)
    LDM_CHECK(t.dim(i) > 0, "tensor '", name, "' in '", f.path(), "' is empty: ", t.shape_str(), " (", what, ")");
  LDM_CHECK(t.vec().allFinite(), "tensor '", name, "' in '", f.path(), "' holds NaN or infinite values");
  return t;
}

// The inputs of a component, read and checked once against the model's config, whatever
// device runs it, before the model is loaded.
struct EvalInputs {
  Tensor sample, context;        // unet
  std::vector<float> timesteps;  // unet: one for the batch, or one per sample
  Tensor latent;                 // vae-decode
  Tensor image;                  // vae-encode
  std::vector<int64_t> ids;      // clip: batch rows of 77
  int64_t batch = 0;
};

EvalInputs read_inputs(const std::string& component, const SafeTensors& in, const ModelFiles& files) {
  EvalInputs x;
  if (component == "unet") {
    const UNetConfig c = unet_config(files);
    const int64_t m = c.size_multiple();
    x.sample = input(in, "sample", 4, str("[B, ", c.in_channels, ", H, W] noisy latents"));
    const int64_t B = x.sample.dim(0);
    LDM_CHECK(x.sample.dim(1) == c.in_channels && x.sample.dim(2) % m == 0 && x.sample.dim(3) % m == 0,
              "tensor 'sample' must be [B, ", c.in_channels, ", H, W] with H and W multiples of ", m, ", got ",
              x.sample.shape_str());
    const Tensor timestep = input(in, "timestep", 1, "[1] or [B] diffusion timesteps");
    LDM_CHECK(timestep.dim(0) == 1 || timestep.dim(0) == B, "tensor 'timestep' ", timestep.shape_str(),
              " does not fit sample ", x.sample.shape_str(), ": expected [1]", B > 1 ? str(" or [", B, "]") : "");
    x.timesteps.assign(timestep.data(), timestep.data() + timestep.numel());
    x.context = input(in, "context", 3, str("[B, L, ", c.cross_attention_dim, "] text embeddings"));
    LDM_CHECK(x.context.dim(0) == B && x.context.dim(2) == c.cross_attention_dim, "tensor 'context' ",
              x.context.shape_str(), " does not fit sample ", x.sample.shape_str(), ": expected [", B, ", L, ",
              c.cross_attention_dim, "]");
  } else if (component == "vae-decode") {
    const VAEConfig c = vae_config(files);
    x.latent = input(in, "latent", 4, "[B, 4, h, w] latents, already divided by the scaling factor");
    LDM_CHECK(x.latent.dim(1) == c.latent_channels, "tensor 'latent' needs ", c.latent_channels, " channels, got ",
              x.latent.shape_str());
  } else if (component == "vae-encode") {
    const VAEConfig c = vae_config(files);
    const int64_t f = c.downscale_factor();
    x.image = input(in, "image", 4, "[B, 3, H, W] image in [-1, 1]");
    LDM_CHECK(x.image.dim(1) == c.in_channels && x.image.dim(2) % f == 0 && x.image.dim(3) % f == 0,
              "tensor 'image' must be [B, ", c.in_channels, ", H, W] with H and W multiples of ", f, ", got ",
              x.image.shape_str());
  } else if (component == "clip") {
    const CLIPTextConfig c = text_encoder_config(files);
    LDM_CHECK(in.contains("input_ids"), "'", in.path(), "' has no tensor 'input_ids' (int64 [B, 77] token ids)");
    const Shape shape = in.info("input_ids").shape;
    LDM_CHECK(shape.size() == 2 && shape[0] > 0 && shape[1] == 77, "tensor 'input_ids' should be [B, 77] with B >= 1, got ",
              shape_str(shape));
    x.ids = in.load_i64("input_ids");
    x.batch = shape[0];
    for (size_t i = 0; i < x.ids.size(); ++i)
      LDM_CHECK(x.ids[i] >= 0 && x.ids[i] < c.vocab_size, "tensor 'input_ids' in '", in.path(), "': id ", x.ids[i],
                " at [", i / 77, ", ", i % 77, "] is outside the vocabulary [0, ", c.vocab_size, ")");
  } else {
    LDM_FAIL("unknown component '", component, "': choose unet, vae-encode, vae-decode or clip");
  }
  return x;
}

// The forward of a loaded component: its outputs by name.
using Outputs = std::vector<std::pair<std::string, Tensor>>;
using Forward = std::function<Outputs()>;

// Loads the component on the CPU; returns its forward on x.
Forward load_cpu(const std::string& component, const EvalInputs& x, const ModelFiles& files, const LoadOptions& lo) {
  if (component == "unet") {
    auto unet = std::make_shared<UNet2DConditionModel>(load_unet(files, lo));
    return [unet, &x] { return Outputs{{"out", unet->forward(x.sample, x.timesteps, x.context)}}; };
  }
  if (component == "vae-decode" || component == "vae-encode") {
    auto vae = std::make_shared<AutoencoderKL>(load_vae(files, lo));
    if (component == "vae-decode") return [vae, &x] { return Outputs{{"image", vae->decode(x.latent)}}; };
    return [vae, &x] {
      DiagonalGaussian post = vae->encode(x.image);
      return Outputs{{"mean", post.mean}, {"logvar", post.logvar}};
    };
  }
  auto clip = std::make_shared<CLIPTextModel>(load_text_encoder(files, lo));
  return [clip, &x] {
    CLIPTextOutput r = clip->forward(x.ids, x.batch, /*output_hidden_states=*/true);
    return Outputs{{"last_hidden_state", r.last_hidden_state}, {"penultimate", r.hidden_states[r.hidden_states.size() - 2]}};
  };
}

#ifdef LDM_WITH_CUDA
// The same on the GPU, in lo.precision: inputs go up and outputs come down as float32.
Forward load_cuda(const std::string& component, const EvalInputs& x, const ModelFiles& files, const LoadOptions& lo) {
  const cuda::DType dt = cuda::parse_dtype(lo.precision);
  if (component == "unet") {
    auto unet = load_cuda_unet(files, lo);
    return [unet, &x, dt] {
      const cuda::DeviceTensor out =
          unet->forward(cuda::to_device(x.sample, dt), x.timesteps, cuda::to_device(x.context, dt));
      return Outputs{{"out", cuda::to_host(out)}};
    };
  }
  if (component == "vae-decode" || component == "vae-encode") {
    auto vae = load_cuda_vae(files, lo);
    if (component == "vae-decode")
      return [vae, &x, dt] { return Outputs{{"image", cuda::to_host(vae->decode(cuda::to_device(x.latent, dt)))}}; };
    return [vae, &x, dt] {
      DiagonalGaussian post = vae->encode(cuda::to_device(x.image, dt));
      return Outputs{{"mean", post.mean}, {"logvar", post.logvar}};
    };
  }
  auto clip = load_cuda_text_encoder(files, lo);
  return [clip, &x] {
    CLIPTextOutput r = clip->forward(x.ids, x.batch, /*output_hidden_states=*/true);
    return Outputs{{"last_hidden_state", r.last_hidden_state}, {"penultimate", r.hidden_states[r.hidden_states.size() - 2]}};
  };
}
#endif

void run_eval(const EvalOptions& o) {
  using clock = std::chrono::steady_clock;
  LoadOptions lo;
  lo.fp16_weights = o.fp16_weights;
  lo.device = o.device;
  lo.precision = o.precision;
  lo.conv = parse_conv_algo(o.conv);
  check_device(lo);  // --device cuda without a GPU (or without CUDA in the build) fails here
  check_output_path(o.output, "--output");
  SafeTensors in(o.inputs);
  ModelFiles files = open_model(o.model);
  const EvalInputs x = read_inputs(o.component, in, files);

  auto t0 = clock::now();
  Forward forward;
  std::string gpu;
  if (o.device == "cuda") {
#ifdef LDM_WITH_CUDA
    forward = load_cuda(o.component, x, files, lo);
#endif
  } else {
    forward = load_cpu(o.component, x, files, lo);
  }
  const double load_s = seconds_since(t0);
  t0 = clock::now();
  SafeTensorsWriter out;
  for (const auto& [name, t] : forward()) out.add(name, t);
  const double run_s = seconds_since(t0);
#ifdef LDM_WITH_CUDA
  if (o.device == "cuda")
    gpu = str(", GPU peak memory ", double(cuda::peak_memory_allocated_bytes()) / double(1ull << 30), " GiB (",
              o.precision, " on ", cuda::device_description(), ")");
#endif
  out.save(o.output);
  std::fprintf(stderr, "%s: load %.1f s, forward %.3f s, peak memory %.2f GB%s; wrote %s\n", o.component.c_str(),
               load_s, run_s, peak_rss_gb(), gpu.c_str(), o.output.c_str());
}

}  // namespace

void add_eval(CLI::App& app) {
  static EvalOptions o;
  auto* c = app.add_subcommand("eval", "Run one component (unet, vae-encode, vae-decode, clip) on tensors from a file");
  c->add_option("component", o.component, "unet | vae-encode | vae-decode | clip")
      ->required()
      ->check(CLI::IsMember({"unet", "vae-encode", "vae-decode", "clip"}));
  c->add_option("--model", o.model, "diffusers folder, single .safetensors checkpoint, or synthetic:sd15")
      ->capture_default_str();
  c->add_option("--inputs", o.inputs, "safetensors file with the input tensors")->required();
  c->add_option("--output", o.output, "safetensors file to write")->required();
  c->add_flag("--fp16-weights", o.fp16_weights, "keep weights in fp16 in memory");
  c->add_option("--device", o.device, "where the component runs: cpu or cuda")
      ->check(CLI::IsMember({"cpu", "cuda"}))
      ->capture_default_str();
  c->add_option("--precision", o.precision, "cuda: fp32, fp16 or bf16 (the CPU path is fp32)")
      ->check(CLI::IsMember({"fp32", "fp16", "bf16"}))
      ->capture_default_str();
  c->add_option("--conv", o.conv,
                "CPU: the 3x3 convolutions' algorithm (f23, f43: Winograd F(2x2), F(4x4); docs/numerics.md)")
      ->check(CLI::IsMember({"auto", "direct", "f23", "f43"}))
      ->capture_default_str();
  c->callback([] { run_eval(o); });
}

}  // namespace ldm::cli
