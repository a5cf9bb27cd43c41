// Checkpoints as people have them (diffusers' DiffusionPipeline.from_pretrained and
// StableDiffusionPipeline.from_single_file): a diffusers folder, a single-file SD1.5
// checkpoint (v1-5-pruned-emaonly.safetensors), or synthetic weights. Every model of the library
// loads by diffusers names, so each form is presented as one WeightSource per component
// (unet | vae | text_encoder) under diffusers names, relative to the component.
//
//   ModelFiles m = open_model("v1-5-pruned-emaonly.safetensors");   // or a folder, or "synthetic:sd15"
//   WeightStore w(m.unet);
//   unet.load(w, "");      // asks for "down_blocks.0.resnets.0.conv1.weight", reads
//   w.finish();            //   "model.diffusion_model.input_blocks.1.0.in_layers.2.weight"
//
// The single-file names follow diffusers' scripts/convert_diffusers_to_original_stable_diffusion.py
// (and pipelines/stable_diffusion/convert_from_ckpt.py the other way), written as rules:
//   U-Net  model.diffusion_model.*   input_blocks.{3i+j+1}.0 <-> down_blocks.i.resnets.j, ...
//   VAE    first_stage_model.*       encoder.down.i.block.j <-> encoder.down_blocks.i.resnets.j, ...
//                                    mid.attn_1.q [C,C,1,1] conv <-> mid_block.attentions.0.to_q [C,C] linear
//   CLIP   cond_stage_model.transformer.*   same names as transformers' CLIPTextModel
// Tensors a real file carries besides (model_ema.*, betas, alphas_cumprod, position_ids, ...)
// are ignored. Weights load as float32 whatever their stored dtype (F32, F16, BF16).
#pragma once
#include <memory>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "ldm/core/safetensors.hpp"
#include "ldm/core/weights.hpp"

namespace ldm {

enum class Component { UNet, VAE, TextEncoder };
const char* component_name(Component c);  // "unet", "vae", "text_encoder" (the diffusers subfolder)

// ---------------------------------------------------------------- single-file names

// Where a component's tensors live in a single file: "model.diffusion_model.",
// "first_stage_model.", "cond_stage_model.transformer.".
const char* single_file_prefix(Component c);

// The single-file name (with prefix) of a diffusers name (relative to the component),
// e.g. (UNet, "mid_block.resnets.1.conv1.weight") -> "model.diffusion_model.middle_block.2.in_layers.2.weight".
std::string single_file_name(Component c, const std::string& diffusers_name);

// The same without the prefix (for files that have none, e.g. a VAE-only file), and its inverse.
std::string single_file_layout_name(Component c, const std::string& diffusers_name);
std::string diffusers_layout_name(Component c, const std::string& file_name);

// The inverse: (component, diffusers name) of a single-file name. False for tensors that
// belong to no component or that a loader ignores (model_ema.*, betas, position_ids, ...).
bool diffusers_name(const std::string& single_file_name, Component* c, std::string* name);

// True for the VAE mid-block attention projections, 1x1 convs [C, C, 1, 1] in a single file
// and Linear [C, C] in diffusers (name is the diffusers name).
bool is_vae_attention_projection(const std::string& diffusers_name);

// ---------------------------------------------------------------- sources

// One component of a single-file checkpoint, under diffusers names. `prefix` defaults to the
// component's (pass "" for a VAE-only file such as vae-ft-mse-840000-ema-pruned.safetensors).
class SingleFileSource : public WeightSource {
 public:
  SingleFileSource(std::shared_ptr<const SafeTensors> file, Component c);
  SingleFileSource(std::shared_ptr<const SafeTensors> file, Component c, std::string prefix);
  bool has(const std::string& name) const override { return !locate(name).empty(); }
  Shape shape(const std::string& name) const override;
  Tensor load(const std::string& name, const Shape& expected) const override;
  std::vector<std::string> names() const override;  // diffusers names of the component's tensors
  std::string describe() const override;
  void release_pages() const override;  // the component's tensors only
  // The file's name for a diffusers name ("" when the file has none).
  std::string locate(const std::string& name) const;

 private:
  std::shared_ptr<const SafeTensors> file_;
  Component component_;
  std::string prefix_;
};

// One component file of a diffusers folder. Knows the names older diffusers versions wrote
// (VAE attention query/key/value/proj_attn) and skips text_model.embeddings.position_ids.
class DiffusersFileSource : public WeightSource {
 public:
  DiffusersFileSource(std::shared_ptr<const SafeTensors> file, Component c) : file_(std::move(file)), component_(c) {}
  bool has(const std::string& name) const override { return !locate(name).empty(); }
  Shape shape(const std::string& name) const override;
  Tensor load(const std::string& name, const Shape& expected) const override;
  std::vector<std::string> names() const override;
  std::string describe() const override;
  void release_pages() const override { file_->release_pages(); }
  std::string locate(const std::string& name) const;

 private:
  std::shared_ptr<const SafeTensors> file_;
  Component component_;
};

// ---------------------------------------------------------------- opening a model

// The three weight sources and the configs of a Stable Diffusion model. An empty config
// (single file, synthetic) means: use the SD1.5 defaults of each Config struct.
struct ModelFiles {
  std::shared_ptr<const WeightSource> unet, vae, text_encoder;
  nlohmann::json unet_config, vae_config, text_encoder_config, scheduler_config;
  // The config.json each came from, named in errors; "" where there is none (SD1.5 defaults).
  std::string unet_config_path, vae_config_path, text_encoder_config_path, scheduler_config_path;
  std::string tokenizer_dir;  // the folder's tokenizer/ (vocab.json, merges.txt); "" when none
  // The folder's generation_defaults.json: the settings its makers recommend, named as the
  // arguments of diffusers' pipeline call ({"guidance_scale": 2, "num_inference_steps": 50});
  // an empty object when there is none. Diffusers ignores the file; `ldm generate` uses it for options not given.
  nlohmann::json generation_defaults;
  std::string generation_defaults_path;
  std::string description;    // one line for logs: what was opened
  const std::shared_ptr<const WeightSource>& source(Component c) const;
};

// `spec` is one of
//   a diffusers folder        (model_index.json, unet/, vae/, text_encoder/, ...)
//   a single .safetensors     (v1-5-pruned-emaonly.safetensors layout)
//   "synthetic:sd15"          (synth::param values, no file)
// `variant` "fp16" prefers the folder's *.fp16.safetensors files (either is used when only
// one exists). Anything else (a pickle .ckpt/.bin, an SD 2.x/SDXL file, a folder that is
// not a pipeline) gets an error that says what was found and what is expected.
ModelFiles open_model(const std::string& spec, const std::string& variant = "");

// ---------------------------------------------------------------- writing checkpoints

struct TensorSpec {
  std::string name;  // diffusers name, relative to the component
  Shape shape;
};

// SD1.5's tensors of one component (diffusers names and shapes) from a key list in the form of
// ../shared/reference/sd15_keys.json.
std::vector<TensorSpec> read_key_list(const std::string& sd15_keys_json, Component c);

// What to write of one component: its tensors and where their values come from
// (null: synth::param(name, shape), the synthetic model).
struct ComponentWeights {
  Component component;
  std::vector<TensorSpec> tensors;
  std::shared_ptr<const WeightSource> values;
};

// Writes a single-file checkpoint in the original layout (VAE attention projections as 1x1
// convs). With `extras`, also the tensors real files carry that loaders must skip (betas,
// alphas_cumprod, model_ema.*, position_ids). Streams tensor by tensor: memory stays at one tensor.
void write_single_file(const std::string& path, const std::vector<ComponentWeights>& parts, DType dtype = DType::F32,
                       bool extras = true);

// Writes a diffusers folder: model_index.json, scheduler/scheduler_config.json and for each part
// <component>/config.json (SD1.5) and its weights (`variant` "fp16" -> *.fp16.safetensors).
void write_diffusers_folder(const std::string& dir, const std::vector<ComponentWeights>& parts,
                            DType dtype = DType::F32, const std::string& variant = "");

}  // namespace ldm
