// `ldm eval`: one component on tensors from a safetensors file, so anyone can compare it with
// PyTorch on the same inputs.
//   unet        sample [B,4,H,W], timestep [1], context [B,L,768]  -> out
//   vae-decode  latent [B,4,h,w] (already / 0.18215)               -> image
//   vae-encode  image [B,3,H,W] in [-1,1]                           -> mean, logvar
//   clip        input_ids int64 [B,77]                              -> last_hidden_state, penultimate
// --device cuda --precision fp32|fp16|bf16 runs the GPU twin of the component instead (inputs
// and outputs stay float32 files).
#include <algorithm>
#include <cstdio>

#include "commands.hpp"
#include "ldm/core/memory.hpp"
#include "ldm/load.hpp"

namespace ldm::cli {
namespace {

struct EvalOptions {
  std::string component, model = "synthetic:sd15", inputs, output;
  bool fp16_weights = false;
  std::string device = "cpu", precision = "fp32";
};

Tensor input(const SafeTensors& f, const std::string& name, int ndim, const char* what) {
  LDM_CHECK(f.contains(name), "'", f.path(), "' has no tensor '", name, "' (", what, ")");
  Tensor t = f.load(name);
  LDM_CHECK(t.ndim() == ndim, "tensor '", name, "' in '", f.path(), "' should be ", ndim, "-d (", what, "), got ",
            t.shape_str());
  return t;
}

#ifdef LDM_WITH_CUDA
// The component on the GPU: same inputs, same output names as the CPU branches of run_eval.
// Returns the load time; the forward's time is the caller's clock minus that.
void eval_cuda(const std::string& component, const SafeTensors& in, const ModelFiles& files, const LoadOptions& lo,
               SafeTensorsWriter& out, double& load_s) {
  using clock = std::chrono::steady_clock;
  const cuda::DType dt = cuda::parse_dtype(lo.precision);
  auto t0 = clock::now();
  if (component == "unet") {
    Tensor sample = in.load("sample"), timestep = in.load("timestep"), context = in.load("context");
    auto unet = load_cuda_unet(files, lo);
    load_s = detail::seconds_since(t0);
    out.add("out", cuda::to_host(unet->forward(cuda::to_device(sample, dt), {timestep[0]}, cuda::to_device(context, dt))));
  } else if (component == "vae-decode") {
    auto vae = load_cuda_vae(files, lo);
    load_s = detail::seconds_since(t0);
    out.add("image", cuda::to_host(vae->decode(cuda::to_device(in.load("latent"), dt))));
  } else if (component == "vae-encode") {
    auto vae = load_cuda_vae(files, lo);
    load_s = detail::seconds_since(t0);
    cuda::DeviceTensor mean, logvar;
    vae->encode_moments(cuda::to_device(in.load("image"), dt), mean, logvar);
    Tensor lv = cuda::to_host(logvar);
    for (float& v : lv) v = std::clamp(v, -30.0f, 20.0f);  // as DiagonalGaussian::from_moments
    out.add("mean", cuda::to_host(mean));
    out.add("logvar", lv);
  } else {  // clip
    const Shape shape = in.info("input_ids").shape;
    std::vector<int64_t> ids = in.load_i64("input_ids");
    auto clip = load_cuda_text_encoder(files, lo);
    load_s = detail::seconds_since(t0);
    CLIPTextOutput r = clip->forward(ids, shape[0], /*output_hidden_states=*/true);
    out.add("last_hidden_state", r.last_hidden_state);
    out.add("penultimate", r.hidden_states[r.hidden_states.size() - 2]);
  }
}
#endif

void run_eval(const EvalOptions& o) {
  using clock = std::chrono::steady_clock;
  LoadOptions lo;
  lo.fp16_weights = o.fp16_weights;
  lo.device = o.device;
  lo.precision = o.precision;
  check_device(lo);  // --device cuda without a GPU (or without CUDA in the build) fails here
  SafeTensors in(o.inputs);
  ModelFiles files = open_model(o.model);
  SafeTensorsWriter out;
  auto t0 = clock::now();
  double load_s = 0;
  if (o.component == "unet") {
    Tensor sample = input(in, "sample", 4, "[B, 4, H, W] noisy latents");
    Tensor timestep = input(in, "timestep", 1, "[1] diffusion timestep");
    Tensor context = input(in, "context", 3, "[B, L, 768] text embeddings");
    LDM_CHECK(sample.dim(1) == 4, "tensor 'sample' needs 4 latent channels, got ", sample.shape_str());
    LDM_CHECK(context.dim(0) == sample.dim(0) && context.dim(2) == 768, "tensor 'context' ", context.shape_str(),
              " does not fit sample ", sample.shape_str(), ": expected [", sample.dim(0), ", L, 768]");
    if (o.device == "cuda") {
#ifdef LDM_WITH_CUDA
      eval_cuda(o.component, in, files, lo, out, load_s);
#endif
    } else {
      UNet2DConditionModel unet = load_unet(files, lo);
      load_s = detail::seconds_since(t0);
      t0 = clock::now();
      out.add("out", unet.forward(sample, timestep[0], context));
    }
  } else if (o.component == "vae-decode") {
    Tensor latent = input(in, "latent", 4, "[B, 4, h, w] latents, already divided by the scaling factor");
    LDM_CHECK(latent.dim(1) == 4, "tensor 'latent' needs 4 channels, got ", latent.shape_str());
    if (o.device == "cuda") {
#ifdef LDM_WITH_CUDA
      eval_cuda(o.component, in, files, lo, out, load_s);
#endif
    } else {
      AutoencoderKL vae = load_vae(files, lo);
      load_s = detail::seconds_since(t0);
      t0 = clock::now();
      out.add("image", vae.decode(latent));
    }
  } else if (o.component == "vae-encode") {
    Tensor image = input(in, "image", 4, "[B, 3, H, W] image in [-1, 1]");
    LDM_CHECK(image.dim(1) == 3 && image.dim(2) % 8 == 0 && image.dim(3) % 8 == 0, "tensor 'image' must be [B, 3, H, W]",
              " with H and W multiples of 8, got ", image.shape_str());
    if (o.device == "cuda") {
#ifdef LDM_WITH_CUDA
      eval_cuda(o.component, in, files, lo, out, load_s);
#endif
    } else {
      AutoencoderKL vae = load_vae(files, lo);
      load_s = detail::seconds_since(t0);
      t0 = clock::now();
      DiagonalGaussian post = vae.encode(image);
      out.add("mean", post.mean);
      out.add("logvar", post.logvar);
    }
  } else if (o.component == "clip") {
    LDM_CHECK(in.contains("input_ids"), "'", in.path(), "' has no tensor 'input_ids' (int64 [B, 77] token ids)");
    const Shape shape = in.info("input_ids").shape;
    LDM_CHECK(shape.size() == 2 && shape[1] == 77, "tensor 'input_ids' should be [B, 77], got ", shape_str(shape));
    if (o.device == "cuda") {
#ifdef LDM_WITH_CUDA
      eval_cuda(o.component, in, files, lo, out, load_s);
#endif
    } else {
      std::vector<int64_t> ids = in.load_i64("input_ids");
      CLIPTextModel clip = load_text_encoder(files, lo);
      load_s = detail::seconds_since(t0);
      t0 = clock::now();
      CLIPTextOutput r = clip.forward(ids, shape[0], /*output_hidden_states=*/true);
      out.add("last_hidden_state", r.last_hidden_state);
      out.add("penultimate", r.hidden_states[r.hidden_states.size() - 2]);
    }
  } else {
    LDM_FAIL("unknown component '", o.component, "': choose unet, vae-encode, vae-decode or clip");
  }
  double run_s = detail::seconds_since(t0);
  std::string gpu;
#ifdef LDM_WITH_CUDA
  if (o.device == "cuda") {
    run_s -= load_s;  // eval_cuda ran the load and the forward under the same clock
    gpu = str(", GPU peak memory ", double(cuda::peak_memory_allocated_bytes()) / double(1ull << 30), " GiB (",
              o.precision, " on ", cuda::device_description(), ")");
  }
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
  c->callback([] { run_eval(o); });
}

}  // namespace ldm::cli
