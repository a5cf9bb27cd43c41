// Loading a model's components (declared and documented in ldm/load.hpp).
#include "ldm/load.hpp"

#ifdef LDM_WITH_CUDA
#include "ldm/cuda/runner.hpp"
#endif

namespace ldm {

void check_device(const LoadOptions& o) {
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

namespace {
// A component's config.json, or {} (SD1.5 defaults) where the model has none (synthetic:sd15).
nlohmann::json config_or_defaults(const nlohmann::json& j) { return j.is_null() ? nlohmann::json::object() : j; }
// Lets the process's copy of a source's file pages go (WeightSource::release_pages).
void release_pages(const std::shared_ptr<const WeightSource>& s) {
  if (s) s->release_pages();
}
// How errors name a config: its file, or what it is where there is no file.
std::string config_what(const std::string& path, const char* what) { return path.empty() ? what : "'" + path + "'"; }

// The store a component loads from, after a first load of the CPU `Model` through a check-only
// store: a file that misses tensors or has them mis-shaped is reported (all of them, by name)
// before the real load converts or allocates anything.
template <typename Model, typename Config>
WeightStore checked_weight_store(const ModelFiles& files, Component c, const std::string& prefix, const Config& cfg,
                                 const LoadOptions& o) {
  WeightStore check(files.source(c));
  check.set_check_only(true);
  Model().load(check, prefix, cfg);
  check.finish();
  WeightStore w(c == Component::VAE ? files.source(c) : with_loras(files.source(c), c, o.loras, check.requested()));
  w.set_keep_fp16(o.fp16_weights);
  w.set_conv_algo(o.conv);
  return w;
}
}  // namespace

// Each component's config, read and validated (errors name its config.json) before any weight
// is allocated; the SD1.5 defaults where the model has none.
UNetConfig unet_config(const ModelFiles& f) {
  return UNetConfig::from_json(config_or_defaults(f.unet_config), config_what(f.unet_config_path, "U-Net config"));
}
VAEConfig vae_config(const ModelFiles& f) {
  return VAEConfig::from_json(config_or_defaults(f.vae_config), config_what(f.vae_config_path, "VAE config"));
}
CLIPTextConfig text_encoder_config(const ModelFiles& f) {
  return CLIPTextConfig::from_json(config_or_defaults(f.text_encoder_config),
                                   config_what(f.text_encoder_config_path, "CLIP text config"));
}
SchedulerConfig scheduler_config(const ModelFiles& f) {
  return SchedulerConfig::from_json(config_or_defaults(f.scheduler_config), SchedulerConfig{},
                                    config_what(f.scheduler_config_path, "scheduler config"));
}

UNet2DConditionModel load_unet(const ModelFiles& files, const LoadOptions& o) {
  const UNetConfig cfg = unet_config(files);
  WeightStore w = checked_weight_store<UNet2DConditionModel>(files, Component::UNet, "", cfg, o);
  UNet2DConditionModel unet;
  unet.load(w, "", cfg);
  w.finish();
  release_pages(files.unet);  // the pages the load read (fp16 conversion, a LoRA merge) map back when used
  return unet;
}

AutoencoderKL load_vae(const ModelFiles& files, const LoadOptions& o) {
  const VAEConfig cfg = vae_config(files);
  WeightStore w = checked_weight_store<AutoencoderKL>(files, Component::VAE, "", cfg, o);
  AutoencoderKL vae;
  vae.load(w, "", cfg);
  w.finish();
  release_pages(files.vae);
  return vae;
}

CLIPTextModel load_text_encoder(const ModelFiles& files, const LoadOptions& o) {
  const CLIPTextConfig cfg = text_encoder_config(files);
  WeightStore w = checked_weight_store<CLIPTextModel>(files, Component::TextEncoder, "text_model", cfg, o);
  CLIPTextModel clip;
  clip.load(w, "text_model", cfg);
  w.finish();
  release_pages(files.text_encoder);
  return clip;
}

#ifdef LDM_WITH_CUDA
// The GPU twins in o.precision: the same weight names and configs (and LoRAs) as the CPU loaders above.
namespace {
LoadOptions loras_only(const LoadOptions& o) {
  LoadOptions r;
  r.loras = o.loras;
  return r;
}
}  // namespace

std::shared_ptr<cuda::UNet2DConditionModel> load_cuda_unet(const ModelFiles& files, const LoadOptions& o) {
  const UNetConfig cfg = unet_config(files);
  WeightStore w = checked_weight_store<UNet2DConditionModel>(files, Component::UNet, "", cfg, loras_only(o));
  auto unet = std::make_shared<cuda::UNet2DConditionModel>();
  unet->load(w, "", cfg, cuda::parse_dtype(o.precision));
  w.finish();
  release_pages(files.unet);  // the GPU holds the weights now
  return unet;
}

std::shared_ptr<cuda::AutoencoderKL> load_cuda_vae(const ModelFiles& files, const LoadOptions& o) {
  const VAEConfig cfg = vae_config(files);
  WeightStore w = checked_weight_store<AutoencoderKL>(files, Component::VAE, "", cfg, LoadOptions{});
  auto vae = std::make_shared<cuda::AutoencoderKL>();
  vae->load(w, "", cfg, cuda::parse_dtype(o.precision));
  w.finish();
  release_pages(files.vae);
  return vae;
}

std::shared_ptr<cuda::CLIPTextModel> load_cuda_text_encoder(const ModelFiles& files, const LoadOptions& o) {
  const CLIPTextConfig cfg = text_encoder_config(files);
  WeightStore w =
      checked_weight_store<CLIPTextModel>(files, Component::TextEncoder, "text_model", cfg, loras_only(o));
  auto clip = std::make_shared<cuda::CLIPTextModel>();
  clip->load(w, "text_model", cfg, cuda::parse_dtype(o.precision));
  w.finish();
  release_pages(files.text_encoder);
  return clip;
}
#endif

// Every component of an opened model (open_model), on o.device.
StableDiffusion load_stable_diffusion(const ModelFiles& files, const LoadOptions& o) {
  check_device(o);
  StableDiffusion sd;
  // Every config is checked first, before the tokenizer and any weight are read.
  sd.scheduler_config = scheduler_config(files);
  sd.unet_config = unet_config(files);
  sd.vae_config = vae_config(files);
  sd.text_encoder_config = text_encoder_config(files);
  const std::string tok = o.tokenizer_dir.empty() ? files.tokenizer_dir : o.tokenizer_dir;
  if (!tok.empty()) sd.tokenizer.emplace(tok);
  LDM_CHECK(sd.tokenizer.has_value(), "the model (", files.description,
            ") has no tokenizer/ folder: pass --tokenizer DIR (a folder with vocab.json and merges.txt, or with "
            "tokenizer.json, e.g. an SD1.5 download's tokenizer/)");
  if (o.device == "cuda") {
#ifdef LDM_WITH_CUDA
    auto text_encoder = load_cuda_text_encoder(files, o);
    auto unet = load_cuda_unet(files, o);
    auto vae = load_cuda_vae(files, o);
    sd.runner = std::make_shared<cuda::CudaModelRunner>(text_encoder, unet, vae, cuda::parse_dtype(o.precision),
                                                        o.cuda_graphs);
#endif
  } else {
    NetworkLoaders reload;
    if (o.free_idle_networks)
      reload = {[files, o] { return load_text_encoder(files, o); }, [files, o] { return load_unet(files, o); },
                [files, o] { return load_vae(files, o); }};
    sd.runner = std::make_shared<CpuModelRunner>(load_text_encoder(files, o), load_unet(files, o), load_vae(files, o),
                                                 WeightFiles{files.text_encoder, files.unet, files.vae}, std::move(reload));
  }
  return sd;
}

StableDiffusion load_stable_diffusion(const std::string& spec, const LoadOptions& o) {
  check_device(o);
  return load_stable_diffusion(open_model(spec), o);
}

}  // namespace ldm
