// ModelRunner: the three networks of a Stable Diffusion pipeline behind one interface, so that
// the pipeline (ldm/pipeline.hpp) does not care where they run.
//
//   encode_text(ids [B*77], B, clip_skip) -> context [B, 77, 768]     (CLIP text encoder)
//   unet(sample [N, 4, h, w], t, context [N, 77, 768]) -> eps [N, 4, h, w]
//   vae_decode(z [B, 4, h, w], already / scaling_factor) -> image [B, 3, 8h, 8w] in about [-1, 1]
//   vae_encode(x [B, 3, H, W] in [-1, 1]) -> q(z | x), a DiagonalGaussian over [B, 4, H/8, W/8]
//
// Everything crosses the interface as host float32 ldm::Tensors: the scheduler, guidance and
// random draws stay on the host in every case, so a runner only has to move the network
// inputs in and the outputs out (a few hundred KB per U-Net step at 512x512).
//
// Two implementations:
//   CpuModelRunner          (this file) calls the CPU models of ldm/models/ directly;
//   cuda::CudaModelRunner   (ldm/cuda/runner.hpp, CUDA builds only) keeps the weights on the GPU.
#pragma once
#include <functional>
#include <string>
#include <utility>
#include <vector>

#include "ldm/core/tensor.hpp"
#include "ldm/core/weights.hpp"
#include "ldm/models/clip_text.hpp"
#include "ldm/models/unet.hpp"
#include "ldm/models/vae.hpp"

namespace ldm {

class ModelRunner {
 public:
  virtual ~ModelRunner() = default;

  // "cpu", or e.g. "cuda fp16: NVIDIA H200 (sm_90, ...)": for logs.
  virtual std::string device() const = 0;

  // CLIPTextModel::encode: ids holds `batch` rows of 77 token ids -> [batch, 77, 768].
  virtual Tensor encode_text(const std::vector<int64_t>& ids, int64_t batch, int clip_skip) = 0;
  // UNet2DConditionModel::forward with one timestep for the whole batch -> eps, sample's shape.
  virtual Tensor unet(const Tensor& sample, float timestep, const Tensor& context) = 0;
  // AutoencoderKL::decode (latent already divided by the scaling factor).
  virtual Tensor vae_decode(const Tensor& latent) = 0;
  // AutoencoderKL::encode.
  virtual DiagonalGaussian vae_encode(const Tensor& image) = 0;
};

// Where each network's weights were read from (ModelFiles::source), so that the runner can let
// the file pages of the networks not in use go: float32 weights are views of the mapped files
// (core/weights.hpp), and a 512x512 txt2img holds only one network's at a time — the text
// encoder's while encoding, the U-Net's while sampling, the VAE's while decoding — instead of
// all three (4.3 GB for SD1.5). The pages stay in the page cache and map back when read again.
// The U-Net's kept Winograd transforms go as well when another network runs (remade after).
struct WeightFiles {
  std::shared_ptr<const WeightSource> text_encoder, unet, vae;  // null: nothing to let go
};

// How a CpuModelRunner makes a network again after letting it go (LoadOptions::free_idle_networks):
// each loads it from its files as it was loaded first (load_unet etc.). An empty one: kept.
//
// A network's own memory — fp16 copies of its weights (--fp16-weights), LoRA-merged weights —
// is not file pages the kernel can take back, so with fp16 weights the U-Net's 1.7 GB stayed
// beside the VAE decode. With loaders, the runner frees a network when another is called and
// loads it again when it is called next: a process that runs the pipeline once (ldm generate)
// loads each network once, as before, and holds one network's own memory at a time; one that
// calls it again pays a load per network per image (seconds with fp16 weights).
struct NetworkLoaders {
  std::function<CLIPTextModel()> text_encoder;
  std::function<UNet2DConditionModel()> unet;
  std::function<AutoencoderKL()> vae;
};

// The CPU models, called exactly as the pipeline always called them. Owns them (a model's
// tensors share their storage, so handing in a copy costs no weights).
class CpuModelRunner : public ModelRunner {
 public:
  CpuModelRunner(CLIPTextModel text_encoder, UNet2DConditionModel unet, AutoencoderKL vae, WeightFiles files = {},
                 NetworkLoaders reload = {})
      : text_encoder_(std::move(text_encoder)),
        unet_(std::move(unet)),
        vae_(std::move(vae)),
        files_(std::move(files)),
        reload_(std::move(reload)) {}

  // Defined in src/model_runner.cpp: the models' forwards are compiled once, there, not in every
  // file that holds a pipeline (a file that includes this header costs seconds, not half a minute).
  std::string device() const override;
  Tensor encode_text(const std::vector<int64_t>& ids, int64_t batch, int clip_skip) override;
  Tensor unet(const Tensor& sample, float timestep, const Tensor& context) override;
  Tensor vae_decode(const Tensor& latent) override;
  DiagonalGaussian vae_encode(const Tensor& image) override;

  // The models themselves, for code that needs more than the pipeline's calls (lessons, training).
  // With NetworkLoaders, a network other than the one called last may be freed (an empty model).
  const CLIPTextModel& text_encoder_model() const { return text_encoder_; }
  const UNet2DConditionModel& unet_model() const { return unet_; }
  const AutoencoderKL& vae_model() const { return vae_; }

 private:
  // Before a call to `network`: when it is not the one called last, the others' file pages go,
  // the one called last is freed where it has a loader, and `network` is loaded again if it was.
  enum class Network { none, text_encoder, unet, vae };
  void switch_to(Network network);
  void free_network(Network network);
  void load_network(Network network);

  CLIPTextModel text_encoder_;
  UNet2DConditionModel unet_;
  AutoencoderKL vae_;
  WeightFiles files_;
  NetworkLoaders reload_;
  Network active_ = Network::none;
  bool freed_[4] = {};  // by Network: freed by free_network, not yet loaded again
};

}  // namespace ldm
