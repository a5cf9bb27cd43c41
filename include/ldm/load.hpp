// From a model spec (diffusers folder, single .safetensors file, synthetic:sd15) to loaded
// components: each reads its config (SD1.5 defaults where there is none), asks the weight
// store for every tensor by name, and fails with the full list of what did not fit.
//
// Device: LoadOptions::device "cpu" loads the CPU models; "cuda" loads their GPU twins
// (ldm/cuda/{unet,vae,clip_text}.hpp) in LoadOptions::precision instead, and
// load_stable_diffusion hands those to the pipeline through a cuda::CudaModelRunner. A build
// configured without nvcc has no CUDA path: "cuda" is then an error that says so.
#pragma once
#include <memory>
#include <string>

#include "ldm/core/checkpoint.hpp"
#include "ldm/pipeline.hpp"
#ifdef LDM_WITH_CUDA
#include "ldm/cuda/runner.hpp"
#endif

namespace ldm {

struct LoadOptions {
  std::string tokenizer_dir;  // overrides the model folder's tokenizer/ (needed for single files)
  bool fp16_weights = false;  // CPU: keep weights as fp16 in memory, converted per layer on use
  std::string device = "cpu";      // "cpu" | "cuda"
  std::string precision = "fp32";  // cuda: "fp32" | "fp16" | "bf16" (weights and activations)
  bool cuda_graphs = false;        // cuda: record the U-Net forward in CUDA graphs (experimental)
  ConvAlgo conv = ConvAlgo::automatic;  // CPU: the 3x3 convolutions' algorithm (nn/conv_algo.hpp)
};

// Checks device and precision before any slow load: a known device, a precision the device
// has, and for "cuda" a CUDA build and a GPU. Throws with a message naming the problem.
inline void check_device(const LoadOptions& o) {
  LDM_CHECK(o.device == "cpu" || o.device == "cuda", "unknown device '", o.device, "': expected cpu or cuda");
  LDM_CHECK(o.precision == "fp32" || o.precision == "fp16" || o.precision == "bf16", "unknown precision '", o.precision,
            "': expected fp32, fp16 or bf16");
  if (o.device == "cpu") {
    LDM_CHECK(o.precision == "fp32", "precision ", o.precision, " is for --device cuda; the CPU path computes in fp32 ",
              "(--fp16-weights halves its weight memory)");
    LDM_CHECK(!o.cuda_graphs, "CUDA graphs are for --device cuda");
    return;
  }
  LDM_CHECK(!o.fp16_weights, "--fp16-weights is for the CPU path; on cuda choose --precision fp16");
  LDM_CHECK(o.conv == ConvAlgo::automatic, "--conv ", conv_algo_name(o.conv),
            " is for the CPU path; the CUDA path picks its own convolution kernels");
#ifdef LDM_WITH_CUDA
  LDM_CHECK(cuda::available(), "--device cuda: ", cuda::device_description());  // "no CUDA device (why)"
#else
  LDM_FAIL("this build has no CUDA: nvcc was not found when it was configured (asked for device '", o.device, "')");
#endif
}

namespace detail {
// A component's config.json, or {} (SD1.5 defaults) where the model has none (synthetic:sd15).
inline nlohmann::json config_or_defaults(const nlohmann::json& j) { return j.is_null() ? nlohmann::json::object() : j; }

inline WeightStore weight_store(const ModelFiles& files, Component c, const LoadOptions& o) {
  WeightStore w(files.source(c));
  w.set_keep_fp16(o.fp16_weights);
  w.set_conv_algo(o.conv);
  return w;
}
}  // namespace detail

inline UNet2DConditionModel load_unet(const ModelFiles& files, const LoadOptions& o = {}) {
  WeightStore w = detail::weight_store(files, Component::UNet, o);
  UNet2DConditionModel unet;
  unet.load(w, "", UNetConfig::from_json(detail::config_or_defaults(files.unet_config)));
  w.finish();
  return unet;
}

inline AutoencoderKL load_vae(const ModelFiles& files, const LoadOptions& o = {}) {
  WeightStore w = detail::weight_store(files, Component::VAE, o);
  AutoencoderKL vae;
  vae.load(w, "", VAEConfig::from_json(detail::config_or_defaults(files.vae_config)));
  w.finish();
  return vae;
}

inline CLIPTextModel load_text_encoder(const ModelFiles& files, const LoadOptions& o = {}) {
  WeightStore w = detail::weight_store(files, Component::TextEncoder, o);
  CLIPTextModel clip;
  clip.load(w, "text_model", CLIPTextConfig::from_json(detail::config_or_defaults(files.text_encoder_config)));
  w.finish();
  return clip;
}

#ifdef LDM_WITH_CUDA
// The GPU twins in o.precision: the same weight names and configs as the CPU loaders above.
inline std::shared_ptr<cuda::UNet2DConditionModel> load_cuda_unet(const ModelFiles& files, const LoadOptions& o) {
  WeightStore w = detail::weight_store(files, Component::UNet, LoadOptions{});
  auto unet = std::make_shared<cuda::UNet2DConditionModel>();
  unet->load(w, "", UNetConfig::from_json(detail::config_or_defaults(files.unet_config)), cuda::parse_dtype(o.precision));
  w.finish();
  return unet;
}

inline std::shared_ptr<cuda::AutoencoderKL> load_cuda_vae(const ModelFiles& files, const LoadOptions& o) {
  WeightStore w = detail::weight_store(files, Component::VAE, LoadOptions{});
  auto vae = std::make_shared<cuda::AutoencoderKL>();
  vae->load(w, "", VAEConfig::from_json(detail::config_or_defaults(files.vae_config)), cuda::parse_dtype(o.precision));
  w.finish();
  return vae;
}

inline std::shared_ptr<cuda::CLIPTextModel> load_cuda_text_encoder(const ModelFiles& files, const LoadOptions& o) {
  WeightStore w = detail::weight_store(files, Component::TextEncoder, LoadOptions{});
  auto clip = std::make_shared<cuda::CLIPTextModel>();
  clip->load(w, "text_model", CLIPTextConfig::from_json(detail::config_or_defaults(files.text_encoder_config)),
             cuda::parse_dtype(o.precision));
  w.finish();
  return clip;
}
#endif

inline StableDiffusion load_stable_diffusion(const std::string& spec, const LoadOptions& o = {}) {
  check_device(o);
  ModelFiles files = open_model(spec);
  StableDiffusion sd;
  const std::string tok = o.tokenizer_dir.empty() ? files.tokenizer_dir : o.tokenizer_dir;
  if (!tok.empty()) sd.tokenizer.emplace(tok);
  LDM_CHECK(sd.tokenizer.has_value(), "model '", spec,
            "' has no tokenizer/ folder: pass --tokenizer DIR (a folder with vocab.json and merges.txt, e.g. an SD1.5 "
            "download's tokenizer/)");
  if (o.device == "cuda") {
#ifdef LDM_WITH_CUDA
    auto text_encoder = load_cuda_text_encoder(files, o);
    auto unet = load_cuda_unet(files, o);
    auto vae = load_cuda_vae(files, o);
    sd.vae.config = vae->config;  // the pipeline reads the scaling factor from here
    sd.runner = std::make_shared<cuda::CudaModelRunner>(text_encoder, unet, vae, cuda::parse_dtype(o.precision),
                                                        o.cuda_graphs);
#endif
  } else {
    sd.text_encoder = load_text_encoder(files, o);
    sd.unet = load_unet(files, o);
    sd.vae = load_vae(files, o);
  }
  sd.scheduler_config = SchedulerConfig::from_json(detail::config_or_defaults(files.scheduler_config));
  return sd;
}

}  // namespace ldm
