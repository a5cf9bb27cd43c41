// From a model spec (diffusers folder, single .safetensors file, synthetic:sd15) to loaded
// components: each reads its config (SD1.5 defaults where there is none), asks the weight
// store for every tensor by name, and fails with the full list of what did not fit.
//
// Device: LoadOptions::device "cpu" loads the CPU models; "cuda" loads their GPU twins
// (ldm/cuda/{unet,vae,clip_text}.hpp) in LoadOptions::precision instead, and
// load_stable_diffusion hands those to the pipeline through a cuda::CudaModelRunner. A build
// configured without nvcc has no CUDA path: "cuda" is then an error that says so.
//
// The definitions are in src/load.cpp, compiled once into the library: loading reaches every
// model's constructor, the LoRA merge and the CUDA runner, code a file that only calls
// load_stable_diffusion should not have to compile again (such a test file: 15 s instead of 30
// on the 2-core Xeon).
#pragma once
#include <memory>
#include <string>

#include "ldm/core/checkpoint.hpp"
#include "ldm/lora.hpp"
#include "ldm/pipeline.hpp"

namespace ldm {
#ifdef LDM_WITH_CUDA
namespace cuda {
struct UNet2DConditionModel;
struct AutoencoderKL;
struct CLIPTextModel;
}  // namespace cuda
#endif

struct LoadOptions {
  std::string tokenizer_dir;  // overrides the model folder's tokenizer/ (needed for single files)
  bool fp16_weights = false;  // CPU: keep weights as fp16 in memory, converted per layer on use
  std::string device = "cpu";      // "cpu" | "cuda"
  std::string precision = "fp32";  // cuda: "fp32" | "fp16" | "bf16" (weights and activations)
  bool cuda_graphs = false;        // cuda: record the U-Net forward in CUDA graphs (experimental)
  ConvAlgo conv = ConvAlgo::automatic;  // CPU: the 3x3 convolutions' algorithm (nn/conv_algo.hpp)
  std::vector<LoraSpec> loras;          // merged into the U-Net's and text encoder's weights as they load (lora.hpp)
  // CPU: hold one network's own memory at a time (fp16 copies, LoRA-merged weights): a network is
  // freed when the pipeline calls another and loaded again when it is called next (NetworkLoaders
  // in model_runner.hpp). For a process that runs the pipeline once, as ldm generate does: free
  // there; a process that calls it again pays each network's load per image.
  bool free_idle_networks = false;
};

// Checks device and precision before any slow load: a known device, a precision the device
// has, and for "cuda" a CUDA build and a GPU. Throws with a message naming the problem.
void check_device(const LoadOptions& o);

// Each component's config, read and validated (errors name its config.json) before any weight
// is allocated; the SD1.5 defaults where the model has none.
UNetConfig unet_config(const ModelFiles& f);
VAEConfig vae_config(const ModelFiles& f);
CLIPTextConfig text_encoder_config(const ModelFiles& f);
SchedulerConfig scheduler_config(const ModelFiles& f);

// Each CPU component, its weights checked first: a file that misses tensors or has them
// mis-shaped is reported (all of them, by name) before anything is converted or allocated.
// o.loras are merged into the U-Net's and the text encoder's weights as they load.
UNet2DConditionModel load_unet(const ModelFiles& files, const LoadOptions& o = {});
AutoencoderKL load_vae(const ModelFiles& files, const LoadOptions& o = {});
CLIPTextModel load_text_encoder(const ModelFiles& files, const LoadOptions& o = {});

#ifdef LDM_WITH_CUDA
// The GPU twins in o.precision: the same weight names and configs (and LoRAs) as the CPU loaders
// (include ldm/cuda/{unet,vae,clip_text}.hpp to call them).
std::shared_ptr<cuda::UNet2DConditionModel> load_cuda_unet(const ModelFiles& files, const LoadOptions& o);
std::shared_ptr<cuda::AutoencoderKL> load_cuda_vae(const ModelFiles& files, const LoadOptions& o);
std::shared_ptr<cuda::CLIPTextModel> load_cuda_text_encoder(const ModelFiles& files, const LoadOptions& o);
#endif

// Every component of an opened model (open_model), on o.device.
StableDiffusion load_stable_diffusion(const ModelFiles& files, const LoadOptions& o = {});
// The same from a model spec: a diffusers folder, a single .safetensors file or synthetic:sd15.
StableDiffusion load_stable_diffusion(const std::string& spec, const LoadOptions& o = {});

}  // namespace ldm
