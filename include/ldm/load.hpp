// From a model spec (diffusers folder, single .safetensors file, synthetic:sd15) to loaded
// components: each reads its config (SD1.5 defaults where there is none), asks the weight
// store for every tensor by name, and fails with the full list of what did not fit.
#pragma once
#include <string>

#include "ldm/core/checkpoint.hpp"
#include "ldm/pipeline.hpp"

namespace ldm {

struct LoadOptions {
  std::string tokenizer_dir;  // overrides the model folder's tokenizer/ (needed for single files)
  bool fp16_weights = false;  // keep weights as fp16 in memory, converted per layer on use
};

namespace detail {
// A component's config.json, or {} (SD1.5 defaults) where the model has none (synthetic:sd15).
inline nlohmann::json config_or_defaults(const nlohmann::json& j) { return j.is_null() ? nlohmann::json::object() : j; }

inline WeightStore weight_store(const ModelFiles& files, Component c, const LoadOptions& o) {
  WeightStore w(files.source(c));
  w.set_keep_fp16(o.fp16_weights);
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

inline StableDiffusion load_stable_diffusion(const std::string& spec, const LoadOptions& o = {}) {
  ModelFiles files = open_model(spec);
  StableDiffusion sd;
  const std::string tok = o.tokenizer_dir.empty() ? files.tokenizer_dir : o.tokenizer_dir;
  if (!tok.empty()) sd.tokenizer.emplace(tok);
  LDM_CHECK(sd.tokenizer.has_value(), "model '", spec,
            "' has no tokenizer/ folder: pass --tokenizer DIR (a folder with vocab.json and merges.txt, e.g. an SD1.5 "
            "download's tokenizer/)");
  sd.text_encoder = load_text_encoder(files, o);
  sd.unet = load_unet(files, o);
  sd.vae = load_vae(files, o);
  sd.scheduler_config = SchedulerConfig::from_json(detail::config_or_defaults(files.scheduler_config));
  return sd;
}

}  // namespace ldm
