// CpuModelRunner's calls (ldm/model_runner.hpp): the one place the CPU models' forwards are
// compiled for the pipeline.
#include "ldm/model_runner.hpp"

#include "ldm/core/memory.hpp"

namespace ldm {

std::string CpuModelRunner::device() const { return "cpu"; }

void CpuModelRunner::switch_to(Network network) {
  if (network == active_) return;
  // The U-Net's kept Winograd transforms (0.27 GB for SD1.5 at 512x512, half with fp16 weights)
  // go too: the next image's first step makes them again (about a second).
  if (active_ == Network::unet) unet_.drop_kept_transforms();
  free_network(active_);  // before the next one loads: the two are never in memory together
  active_ = network;
  const std::pair<Network, const std::shared_ptr<const WeightSource>*> all[] = {
      {Network::text_encoder, &files_.text_encoder}, {Network::unet, &files_.unet}, {Network::vae, &files_.vae}};
  for (const auto& [n, source] : all)
    if (n != network && *source) (*source)->release_pages();
  release_freed_memory();  // what the last network freed (its activations, transforms) goes back
  load_network(network);
}

// An empty model in place of the network frees every tensor the runner alone holds.
void CpuModelRunner::free_network(Network network) {
  bool& freed = freed_[static_cast<int>(network)];
  if (freed) return;
  if (network == Network::text_encoder && reload_.text_encoder) text_encoder_ = CLIPTextModel();
  else if (network == Network::unet && reload_.unet) unet_ = UNet2DConditionModel();
  else if (network == Network::vae && reload_.vae) vae_ = AutoencoderKL();
  else return;
  freed = true;
}

void CpuModelRunner::load_network(Network network) {
  bool& freed = freed_[static_cast<int>(network)];
  if (!freed) return;
  if (network == Network::text_encoder) text_encoder_ = reload_.text_encoder();
  else if (network == Network::unet) unet_ = reload_.unet();
  else if (network == Network::vae) vae_ = reload_.vae();
  freed = false;
}

Tensor CpuModelRunner::encode_text(const std::vector<int64_t>& ids, int64_t batch, int clip_skip) {
  switch_to(Network::text_encoder);
  return text_encoder_.encode(ids, batch, clip_skip);
}

Tensor CpuModelRunner::unet(const Tensor& sample, float timestep, const Tensor& context) {
  switch_to(Network::unet);
  return unet_.forward(sample, timestep, context);
}

Tensor CpuModelRunner::vae_decode(const Tensor& latent) {
  switch_to(Network::vae);
  return vae_.decode(latent);
}

DiagonalGaussian CpuModelRunner::vae_encode(const Tensor& image) {
  switch_to(Network::vae);
  return vae_.encode(image);
}

}  // namespace ldm
