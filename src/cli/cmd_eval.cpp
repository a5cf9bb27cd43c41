// `ldm eval`: one component on tensors from a safetensors file, so anyone can compare it with
// PyTorch on the same inputs. Widths and channels are the model config's (SD1.5: C = 4, D = 768).
//   unet        sample [B,C,H,W], timestep [1] or [B], context [B,L,D]  -> out
//   vae-decode  latent [B,C,h,w] (already / 0.18215)                -> image
//   vae-encode  image [B,3,H,W] in [-1,1]                            -> mean, logvar
//   clip        input_ids int64 [B,77]                               -> last_hidden_state, penultimate
//   clip --prompt TEXT (no --inputs): the prompt as generate() encodes it (--prompt-syntax, A1111's by
//               default)   -> input_ids int64 [k,77], multipliers [k,77], context [1,77k,D]; stdout: each
//               token with its weight
// --vae-tiling: vae-decode / vae-encode in tiles, as diffusers' AutoencoderKL after enable_tiling()
// (models/vae_tiling.hpp).
// --device cuda --precision fp32|fp16|bf16 runs the GPU twin of the component instead (inputs
// and outputs stay float32 files).
//
// The backwards (CPU, fp32 weights) take the gradient of the output as well and give the
// vector-Jacobian product torch.autograd gives for (out * grad_out).sum().backward(), with every
// parameter's gradient as grad.<its name in the diffusers file>:
//   unet-backward        sample, timestep, context, grad_out    -> out, grad.sample, grad.context, grad.*
//   vae-decode-backward  latent, grad_image                      -> image, grad.latent, grad.decoder.*, grad.post_quant_conv.*
//   vae-encode-backward  image, grad_mean, grad_logvar           -> mean, logvar, grad.image, grad.encoder.*, grad.quant_conv.*
//   clip-backward        input_ids [B,L], grad_last_hidden_state -> last_hidden_state, grad.text_model.*
#include <cstdio>
#include <functional>
#include <memory>
#include <utility>
#include <vector>

#include "commands.hpp"
#include "ldm/core/memory.hpp"
#include "ldm/load.hpp"
#ifdef LDM_WITH_CUDA
#include "ldm/cuda/clip_text.hpp"
#include "ldm/cuda/unet.hpp"
#include "ldm/cuda/vae.hpp"
#endif
#include "ldm/models/prompt_emphasis.hpp"
#include "ldm/models/vae_tiling.hpp"
#include "ldm/train/parameter.hpp"
#include "input_tensor.hpp"
#include "output_path.hpp"

namespace ldm::cli {
namespace {

struct EvalOptions {
  std::string component, model = "synthetic:sd15", inputs, output;
  std::string prompt, prompt_syntax = "a1111", tokenizer;  // clip --prompt
  bool fp16_weights = false;
  std::string device = "cpu", precision = "fp32";
  std::string conv = "auto";
  bool vae_tiling = false;  // vae-decode / vae-encode: in tiles, as diffusers' enable_tiling()
};

// The inputs of a component, read and checked once against the model's config, whatever
// device runs it, before the model is loaded.
struct EvalInputs {
  Tensor sample, context;        // unet
  std::vector<float> timesteps;  // unet: one for the batch, or one per sample
  Tensor latent;                 // vae-decode
  Tensor image;                  // vae-encode
  std::vector<int64_t> ids;      // clip: batch rows of 77 (clip-backward: of L)
  int64_t batch = 0;
  Tensor grad_out, grad_logvar;  // the backwards: the output's gradient (vae-encode: grad_mean, grad_logvar)
};

bool is_backward(const std::string& component) {
  const std::string tail = "-backward";
  return component.size() > tail.size() && component.compare(component.size() - tail.size(), tail.size(), tail) == 0;
}

// "unet-backward" -> "unet"
std::string forward_of(const std::string& component) {
  return is_backward(component) ? component.substr(0, component.size() - 9) : component;
}

EvalInputs read_inputs(const std::string& full_component, const SafeTensors& in, const ModelFiles& files) {
  EvalInputs x;
  const std::string component = forward_of(full_component);
  const bool backward = is_backward(full_component);
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
    if (backward)
      x.grad_out = input_shaped(in, "grad_out", {B, c.out_channels, x.sample.dim(2), x.sample.dim(3)},
                                "the gradient of the U-Net's output");
  } else if (component == "vae-decode") {
    const VAEConfig c = vae_config(files);
    x.latent = input(in, "latent", 4, str("[B, ", c.latent_channels, ", h, w] latents, already divided by the scaling factor"));
    LDM_CHECK(x.latent.dim(1) == c.latent_channels, "tensor 'latent' needs ", c.latent_channels, " channels, got ",
              x.latent.shape_str());
    const int64_t f = c.downscale_factor();
    if (backward)
      x.grad_out = input_shaped(in, "grad_image", {x.latent.dim(0), c.out_channels, f * x.latent.dim(2), f * x.latent.dim(3)},
                                "the gradient of the decoded image");
  } else if (component == "vae-encode") {
    const VAEConfig c = vae_config(files);
    const int64_t f = c.downscale_factor();
    x.image = input(in, "image", 4, "[B, 3, H, W] image in [-1, 1]");
    LDM_CHECK(x.image.dim(1) == c.in_channels && x.image.dim(2) % f == 0 && x.image.dim(3) % f == 0,
              "tensor 'image' must be [B, ", c.in_channels, ", H, W] with H and W multiples of ", f, ", got ",
              x.image.shape_str());
    if (backward) {
      const Shape latent{x.image.dim(0), c.latent_channels, x.image.dim(2) / f, x.image.dim(3) / f};
      x.grad_out = input_shaped(in, "grad_mean", latent, "the gradient of the posterior's mean");
      x.grad_logvar = input_shaped(in, "grad_logvar", latent, "the gradient of the posterior's (clamped) logvar");
    }
  } else if (component == "clip") {
    const CLIPTextConfig c = text_encoder_config(files);
    LDM_CHECK(in.contains("input_ids"), "'", in.path(), "' has no tensor 'input_ids' (int64 [B, 77] token ids)");
    const Shape shape = in.info("input_ids").shape;
    // The pipeline always feeds 77 tokens; the backward, for comparing with torch on any
    // config, takes any length the position embedding covers.
    if (backward)
      LDM_CHECK(shape.size() == 2 && shape[0] > 0 && shape[1] > 0 && shape[1] <= c.max_position_embeddings,
                "tensor 'input_ids' should be [B, L] with B >= 1 and 1 <= L <= ", c.max_position_embeddings,
                " (the text encoder's max_position_embeddings), got ", shape_str(shape));
    else
      LDM_CHECK(shape.size() == 2 && shape[0] > 0 && shape[1] == 77,
                "tensor 'input_ids' should be [B, 77] with B >= 1, got ", shape_str(shape));
    x.ids = in.load_i64("input_ids");
    x.batch = shape[0];
    const size_t L = size_t(shape[1]);
    for (size_t i = 0; i < x.ids.size(); ++i)
      LDM_CHECK(x.ids[i] >= 0 && x.ids[i] < c.vocab_size, "tensor 'input_ids' in '", in.path(), "': id ", x.ids[i],
                " at [", i / L, ", ", i % L, "] is outside the vocabulary [0, ", c.vocab_size, ")");
    if (backward)
      x.grad_out = input_shaped(in, "grad_last_hidden_state", {shape[0], shape[1], c.hidden_size},
                                "the gradient of last_hidden_state");
  } else {
    LDM_FAIL("unknown component '", full_component, "': choose unet, vae-encode, vae-decode or clip (or one of ",
             "them with -backward)");
  }
  return x;
}

// The forward of a loaded component: its outputs by name.
using Outputs = std::vector<std::pair<std::string, Tensor>>;
using Forward = std::function<Outputs()>;

// Loads the component on the CPU; returns its forward on x.
Forward load_cpu(const std::string& component, const EvalInputs& x, const ModelFiles& files, const LoadOptions& lo,
                 bool tiling) {
  if (component == "unet") {
    auto unet = std::make_shared<UNet2DConditionModel>(load_unet(files, lo));
    return [unet, &x] { return Outputs{{"out", unet->forward(x.sample, x.timesteps, x.context)}}; };
  }
  if (component == "vae-decode" || component == "vae-encode") {
    auto vae = std::make_shared<AutoencoderKL>(load_vae(files, lo));
    const VaeTiling t = tiling ? VaeTiling::of(vae->config) : VaeTiling::whole();
    if (component == "vae-decode")
      return [vae, &x, t] {
        return Outputs{{"image", tiled_decode(x.latent, t, [&](const Tensor& z) { return vae->decode(z); })}};
      };
    return [vae, &x, t] {
      DiagonalGaussian post = tiled_encode(x.image, t, [&](const Tensor& im) { return vae->encode(im); });
      return Outputs{{"mean", post.mean}, {"logvar", post.logvar}};
    };
  }
  auto clip = std::make_shared<CLIPTextModel>(load_text_encoder(files, lo));
  return [clip, &x] {
    CLIPTextOutput r = clip->forward(x.ids, x.batch, /*output_hidden_states=*/true);
    return Outputs{{"last_hidden_state", r.last_hidden_state}, {"penultimate", r.hidden_states[r.hidden_states.size() - 2]}};
  };
}

// Outputs plus grad.<name> of each parameter (its gradient after one backward from zero).
void add_parameter_grads(Outputs& out, const std::vector<Parameter>& params) {
  for (const Parameter& p : params) out.emplace_back("grad." + p.name, p.as_stored(*p.grad));
}

// Loads the component on the CPU; returns its forward with saved activations, then its
// backward from x.grad_out: the outputs, the input gradients and every parameter's gradient.
Forward load_cpu_backward(const std::string& component, const EvalInputs& x, const ModelFiles& files,
                          const LoadOptions& lo) {
  if (component == "unet-backward") {
    auto unet = std::make_shared<UNet2DConditionModel>(load_unet(files, lo));
    return [unet, &x] {
      std::vector<Parameter> params = parameters_of(*unet);  // zero gradients, allocated before the backward
      UNet2DConditionModel::Saved s;
      Outputs o{{"out", unet->forward(x.sample, x.timesteps, x.context, s)}};
      const UNet2DConditionModel::Grad g = unet->backward(s, x.grad_out);
      o.emplace_back("grad.sample", g.sample);
      o.emplace_back("grad.context", g.context);
      add_parameter_grads(o, params);
      return o;
    };
  }
  if (component == "clip-backward") {
    auto clip = std::make_shared<CLIPTextModel>(load_text_encoder(files, lo));
    return [clip, &x] {
      std::vector<Parameter> params = parameters_of(*clip, "text_model");
      CLIPTextModel::Saved s;
      Outputs o{{"last_hidden_state", clip->forward(x.ids, x.batch, s)}};
      clip->backward(s, x.grad_out);
      add_parameter_grads(o, params);
      return o;
    };
  }
  auto vae = std::make_shared<AutoencoderKL>(load_vae(files, lo));
  if (component == "vae-decode-backward")
    return [vae, &x] {
      std::vector<Parameter> params = parameters_under(parameters_of(*vae), AutoencoderKL::decoder_prefixes());
      AutoencoderKL::DecodeSaved s;
      Outputs o{{"image", vae->decode(x.latent, s)}};
      o.emplace_back("grad.latent", vae->decode_backward(s, x.grad_out));
      add_parameter_grads(o, params);
      return o;
    };
  return [vae, &x] {
    std::vector<Parameter> params = parameters_under(parameters_of(*vae), AutoencoderKL::encoder_prefixes());
    AutoencoderKL::EncodeSaved s;
    const DiagonalGaussian post = vae->encode(x.image, s);
    Outputs o{{"mean", post.mean}, {"logvar", post.logvar}};
    o.emplace_back("grad.image", vae->encode_backward(s, {x.grad_out, x.grad_logvar}));
    add_parameter_grads(o, params);
    return o;
  };
}

#ifdef LDM_WITH_CUDA
// The same on the GPU, in lo.precision: inputs go up and outputs come down as float32.
Forward load_cuda(const std::string& component, const EvalInputs& x, const ModelFiles& files, const LoadOptions& lo,
                  bool tiling) {
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
    const VaeTiling t = tiling ? VaeTiling::of(vae->config) : VaeTiling::whole();
    if (component == "vae-decode")
      return [vae, &x, dt, t] {
        return Outputs{{"image", tiled_decode(x.latent, t, [&](const Tensor& z) {
                          return cuda::to_host(vae->decode(cuda::to_device(z, dt)));
                        })}};
      };
    return [vae, &x, dt, t] {
      DiagonalGaussian post =
          tiled_encode(x.image, t, [&](const Tensor& im) { return vae->encode(cuda::to_device(im, dt)); });
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

// `ldm eval clip --prompt TEXT`: the prompt's chunks, their per-token weights and the context
// the U-Net would get (pipeline.hpp encode_text_prompt), on the CPU.
void run_eval_prompt(const EvalOptions& o, const LoadOptions& lo) {
  LDM_CHECK(o.component == "clip", "--prompt goes with `ldm eval clip` (got ", o.component, ")");
  LDM_CHECK(o.inputs.empty(), "give either --inputs (token ids) or --prompt (text), not both");
  LDM_CHECK(o.device == "cpu", "ldm eval clip --prompt runs on the CPU (drop --device ", o.device, ")");
  check_output_path(o.output, "--output");
  const ModelFiles files = open_model(o.model);
  const std::string tok_dir = o.tokenizer.empty() ? files.tokenizer_dir : o.tokenizer;
  LDM_CHECK(!tok_dir.empty(), "the model (", files.description, ") has no tokenizer/ folder: pass --tokenizer DIR");
  const CLIPTokenizer tok(tok_dir);
  const CLIPTextModel clip = load_text_encoder(files, lo);
  const PromptChunks chunks =
      prompt_chunks_of(tok, o.prompt, o.prompt_syntax == "plain" ? PromptSyntax::plain : PromptSyntax::a1111);
  const Tensor context =
      encode_weighted_chunks(chunks, [&](const std::vector<int64_t>& ids) { return clip.encode(ids, 1); });
  const int64_t k = int64_t(chunks.tokens.size());
  std::vector<int64_t> ids;
  Tensor mults = Tensor::empty({k, 77});
  std::printf("%lld chunk(s) of 77 tokens (%s syntax); the prompt's tokens and their weights:\n", (long long)k,
              o.prompt_syntax.c_str());
  for (int64_t c = 0; c < k; ++c)
    for (int64_t t = 0; t < 77; ++t) {
      const int id = chunks.tokens[size_t(c)][size_t(t)];
      const double w = chunks.multipliers[size_t(c)][size_t(t)];
      ids.push_back(id);
      mults[c * 77 + t] = float(w);
      if (id != tok.bos_id() && id != tok.eos_id())
        std::printf("  chunk %lld  %2lld  %-20s %g\n", (long long)c, (long long)t, tok.decode({id}).c_str(), w);
    }
  SafeTensorsWriter out;
  out.add_i64("input_ids", {k, 77}, ids);
  out.add("multipliers", mults);
  out.add("context", context);
  out.save(o.output);
  std::fprintf(stderr, "clip: wrote input_ids [%lld, 77], multipliers and context %s to %s\n", (long long)k,
               context.shape_str().c_str(), o.output.c_str());
}

void run_eval(const EvalOptions& o) {
  using clock = std::chrono::steady_clock;
  LoadOptions lo;
  lo.fp16_weights = o.fp16_weights;
  lo.device = o.device;
  lo.precision = o.precision;
  lo.conv = parse_conv_algo(o.conv);
  const bool backward = is_backward(o.component);
  LDM_CHECK(!backward || o.device == "cpu", "ldm eval ", o.component, ": the backwards run on the CPU only (drop ",
            "--device ", o.device, ")");
  LDM_CHECK(!backward || !o.fp16_weights, "ldm eval ", o.component, ": a backward needs float32 weights (drop ",
            "--fp16-weights)");
  LDM_CHECK(!o.vae_tiling || o.component == "vae-decode" || o.component == "vae-encode",
            "--vae-tiling goes with vae-decode or vae-encode (got ", o.component, ")");
  if (!o.prompt.empty()) return run_eval_prompt(o, lo);
  LDM_CHECK(!o.inputs.empty(), "ldm eval ", o.component, " needs --inputs FILE (or, for clip, --prompt TEXT)");
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
    forward = load_cuda(o.component, x, files, lo, o.vae_tiling);
#endif
  } else {
    forward = backward ? load_cpu_backward(o.component, x, files, lo) : load_cpu(o.component, x, files, lo, o.vae_tiling);
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
  std::fprintf(stderr, "%s: load %.1f s, %s %.3f s, peak memory %.2f GB%s; wrote %s\n", o.component.c_str(),
               load_s, backward ? "forward and backward" : "forward", run_s, peak_rss_gb(), gpu.c_str(), o.output.c_str());
}

}  // namespace

void add_eval(CLI::App& app) {
  static EvalOptions o;
  auto* c = app.add_subcommand(
      "eval", "Run one component (unet, vae-encode, vae-decode, clip), or its backward, on tensors from a file");
  c->add_option("component", o.component,
                "unet | vae-encode | vae-decode | clip, or unet-backward | vae-encode-backward | "
                "vae-decode-backward | clip-backward (CPU)")
      ->required()
      ->check(CLI::IsMember({"unet", "vae-encode", "vae-decode", "clip", "unet-backward", "vae-encode-backward",
                             "vae-decode-backward", "clip-backward"}));
  c->add_option("--model", o.model, "diffusers folder, single .safetensors checkpoint, or synthetic:sd15")
      ->capture_default_str();
  c->add_option("--inputs", o.inputs, "safetensors file with the input tensors");
  c->add_option("--prompt", o.prompt,
                "clip only, instead of --inputs: encode this prompt as generate() does and print each token's weight");
  c->add_option("--prompt-syntax", o.prompt_syntax, "with --prompt: a1111 (emphasis, BREAK, 75-token chunks) or plain")
      ->capture_default_str()
      ->check(CLI::IsMember({"a1111", "plain"}));
  c->add_option("--tokenizer", o.tokenizer, "with --prompt: a tokenizer folder (vocab.json, merges.txt), for a model without one");
  c->add_option("--output", o.output, "safetensors file to write")->required();
  c->add_flag("--fp16-weights", o.fp16_weights, "keep weights in fp16 in memory");
  c->add_flag("--vae-tiling", o.vae_tiling,
              "vae-decode / vae-encode: in tiles of the VAE's sample_size, 25% overlap, as diffusers' enable_tiling()");
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
