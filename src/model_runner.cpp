// CpuModelRunner's calls (ldm/model_runner.hpp): the one place the CPU models' forwards are
// compiled for the pipeline.
#include "ldm/model_runner.hpp"

namespace ldm {

std::string CpuModelRunner::device() const { return "cpu"; }

Tensor CpuModelRunner::encode_text(const std::vector<int64_t>& ids, int64_t batch, int clip_skip) {
  return text_encoder_.encode(ids, batch, clip_skip);
}

Tensor CpuModelRunner::unet(const Tensor& sample, float timestep, const Tensor& context) {
  return unet_.forward(sample, timestep, context);
}

Tensor CpuModelRunner::vae_decode(const Tensor& latent) { return vae_.decode(latent); }

DiagonalGaussian CpuModelRunner::vae_encode(const Tensor& image) { return vae_.encode(image); }

}  // namespace ldm
