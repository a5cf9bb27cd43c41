// CudaModelRunner: the ModelRunner (ldm/model_runner.hpp) whose networks run on the GPU.
//
// The weights live on the GPU for the runner's lifetime, in one DType (fp32, fp16 or bf16).
// Each call moves only its inputs and outputs:
//   unet:        sample [N, 4, h, w] up (converted to the DType on the GPU), eps down as float32;
//                the context [N, 77, 768] is the same for every step of a generation, so it is
//                uploaded once and reused while the host tensor's values stay the same
//   vae_decode:  z up, image down          vae_encode: image up, mean and logvar down
//   encode_text: ids in, context out (cuda::CLIPTextModel::encode returns a host tensor)
// The scheduler, guidance and random draws stay on the host (ldm/pipeline.hpp), so the GPU
// path runs exactly the host code of the CPU path around the networks.
//
// Optional: CUDA graphs for the U-Net (ldm/cuda/unet_graph.hpp), off unless use_graphs is set.
// Only compiled in CUDA builds (LDM_WITH_CUDA): include it behind #ifdef LDM_WITH_CUDA.
#pragma once
#include <cstring>
#include <memory>
#include <string>
#include <vector>

#include "ldm/core/error.hpp"
#include "ldm/cuda/clip_text.hpp"
#include "ldm/cuda/transfer.hpp"
#include "ldm/cuda/unet.hpp"
#include "ldm/cuda/unet_graph.hpp"
#include "ldm/cuda/vae.hpp"
#include "ldm/model_runner.hpp"

namespace ldm::cuda {

class CudaModelRunner : public ModelRunner {
 public:
  // Loaded models (all three, same dtype); use_graphs: record the U-Net forward in CUDA graphs.
  CudaModelRunner(std::shared_ptr<const CLIPTextModel> text_encoder, std::shared_ptr<const UNet2DConditionModel> unet,
                  std::shared_ptr<const AutoencoderKL> vae, DType dtype, bool use_graphs = false)
      : text_encoder_(std::move(text_encoder)), unet_(std::move(unet)), vae_(std::move(vae)), dtype_(dtype) {
    LDM_CHECK(text_encoder_ && unet_ && vae_, "CudaModelRunner: all three models must be loaded");
    if (use_graphs) graphs_ = std::make_unique<UNetGraphs>(unet_);
  }

  std::string device() const override {
    return str("cuda ", dtype_name(dtype_), graphs_ && graphs_->enabled() ? " (CUDA graphs)" : "", ": ",
               device_description());
  }
  DType dtype() const { return dtype_; }
  const AutoencoderKL& vae() const { return *vae_; }
  const UNetGraphs* graphs() const { return graphs_.get(); }

  Tensor encode_text(const std::vector<int64_t>& ids, int64_t batch, int clip_skip) override {
    return text_encoder_->encode(ids, batch, clip_skip);
  }

  Tensor unet(const Tensor& sample, float timestep, const Tensor& context) override {
    LDM_CHECK(sample.ndim() == 4 && context.ndim() == 3 && context.dim(0) == sample.dim(0),
              "CudaModelRunner::unet: expected sample [N, 4, h, w] and context [N, L, 768], got ", sample.shape_str(),
              " and ", context.shape_str());
    const DeviceTensor x = to_device(sample, dtype_);
    const DeviceTensor& c = context_on_device(context);
    const DeviceTensor eps = graphs_ ? graphs_->forward(x, timestep, c) : unet_->forward(x, {timestep}, c);
    return to_host(eps);  // waits for the step
  }

  Tensor vae_decode(const Tensor& latent) override { return to_host(vae_->decode(to_device(latent, dtype_))); }

  DiagonalGaussian vae_encode(const Tensor& image) override { return vae_->encode(to_device(image, dtype_)); }

 private:
  // The context on the GPU: uploaded again only when its shape or values change.
  const DeviceTensor& context_on_device(const Tensor& context) {
    const bool same = context_host_.defined() && context_host_.shape() == context.shape() &&
                      std::memcmp(context_host_.data(), context.data(), size_t(context.numel()) * sizeof(float)) == 0;
    if (!same) {
      context_host_ = context.clone();
      context_dev_ = to_device(context, dtype_);
    }
    return context_dev_;
  }

  std::shared_ptr<const CLIPTextModel> text_encoder_;
  std::shared_ptr<const UNet2DConditionModel> unet_;
  std::shared_ptr<const AutoencoderKL> vae_;
  DType dtype_;
  std::unique_ptr<UNetGraphs> graphs_;
  Tensor context_host_;
  DeviceTensor context_dev_;
};

}  // namespace ldm::cuda
