// The SD1.5 U-Net eps_theta(z_t, t, c) on the GPU: the twin of include/ldm/models/unet.hpp
// (read that for the architecture), same config (ldm::UNetConfig), same checkpoint names.
//
//   cuda::UNet2DConditionModel unet;
//   WeightStore w(std::make_shared<SafeTensorsSource>("unet/diffusion_pytorch_model.safetensors"));
//   unet.load(w, "", UNetConfig::from_json(config_json), cuda::DType::f16);
//   w.finish();
//   DeviceTensor eps = unet.forward(latents /*[2, 4, 64, 64]*/, {981.0f}, text /*[2, 77, 768]*/);
//
// load() builds the CPU model (all of the config and block-argument logic lives there), then
// uploads it block by block in the chosen DType; upload() does the second half alone, so one
// CPU model can be put on the GPU in several precisions. The host copy is freed when load()
// returns. forward() queues its work on the library's stream and does not wait for it (no host
// synchronisation, except for the rare center_input_sample config), so it can be captured in a
// CUDA graph.
#pragma once
#include <string>
#include <vector>

#include "ldm/cuda/unet_blocks.hpp"
#include "ldm/models/unet.hpp"

namespace ldm::cuda {

struct UNet2DConditionModel {
  ldm::UNetConfig config;
  DType dtype = DType::f32;  // of the weights and of every activation inside forward()
  Conv2d conv_in;
  TimestepEmbedding time_embedding;  // time_proj is the op cuda::timestep_embedding
  std::vector<UNetDownBlock> down_blocks;
  UNetMidBlock2DCrossAttn mid_block;
  std::vector<UNetUpBlock> up_blocks;
  GroupNorm conv_norm_out;
  Conv2d conv_out;

  void load(WeightStore& w, const std::string& prefix, const ldm::UNetConfig& cfg, DType dtype_) {
    ldm::UNet2DConditionModel cpu;
    cpu.load(w, prefix, cfg);
    upload(cpu, dtype_);
  }

  void upload(const ldm::UNet2DConditionModel& m, DType dtype_) {
    LDM_CHECK(!m.down_blocks.empty(), "cuda::UNet2DConditionModel: upload of a CPU model that was never loaded");
    config = m.config;
    dtype = dtype_;
    conv_in.upload(m.conv_in, dtype);
    time_embedding.upload(m.time_embedding, dtype);
    upload_all(down_blocks, m.down_blocks, dtype);
    mid_block.upload(m.mid_block, dtype);
    upload_all(up_blocks, m.up_blocks, dtype);
    conv_norm_out.upload(m.conv_norm_out, dtype);
    conv_out.upload(m.conv_out, dtype);
  }

  // sample [B, in, H, W] (H, W multiples of 8 for SD1.5), timesteps: one for all or one per
  // batch item, context [B, L, cross_attention_dim] -> predicted noise [B, out, H, W].
  // Inputs of another dtype are converted to the model's; the result has the sample's dtype.
  DeviceTensor forward(const DeviceTensor& sample, const std::vector<float>& timesteps,
                       const DeviceTensor& context) const {
    check_inputs(sample, timesteps, context);
    const int64_t B = sample.dim(0);

    // 1. time: sinusoidal embedding of t, then the MLP
    const std::vector<float> t = timesteps.size() == 1 ? std::vector<float>(size_t(B), timesteps[0]) : timesteps;
    const DeviceTensor t_emb = timestep_embedding(t, config.block_out_channels[0], config.flip_sin_to_cos,
                                                  config.freq_shift, dtype);  // [B, 320]
    const DeviceTensor temb = time_embedding.forward(t_emb);                  // [B, 1280]

    // 2. pre-process
    DeviceTensor h = to_dtype(sample, dtype);
    if (config.center_input_sample) h = centered(h);
    const DeviceTensor c = to_dtype(context, dtype);
    h = conv_in.forward(h);  // [B, 320, H, W]

    // 3. down, keeping every intermediate output as a skip (12 for SD1.5)
    std::vector<DeviceTensor> skips{h};
    for (const auto& block : down_blocks) h = block.forward(h, temb, c, skips);

    // 4. mid, at H/8 x W/8
    h = mid_block.forward(h, temb, c);

    // 5. up, each resnet concatenating the latest remaining skip on the channels
    for (const auto& block : up_blocks) h = block.forward(h, temb, c, skips);

    // 6. post-process
    h = conv_norm_out.forward(h, /*fuse_silu=*/true);  // [B, 320, H, W]
    return to_dtype(conv_out.forward(h), sample.dtype());  // [B, 4, H, W]
  }
  DeviceTensor forward(const DeviceTensor& sample, float timestep, const DeviceTensor& context) const {
    return forward(sample, std::vector<float>{timestep}, context);
  }

 private:
  // 2 * x - 1, through the host (no config of SD1.x/2.x sets center_input_sample).
  static DeviceTensor centered(const DeviceTensor& x) {
    Tensor h = to_host(x);
    for (float& v : h) v = 2.0f * v - 1.0f;
    return to_device(h, x.dtype());
  }

  void check_inputs(const DeviceTensor& sample, const std::vector<float>& timesteps,
                    const DeviceTensor& context) const {
    LDM_CHECK(conv_in.weight.defined(), "cuda::UNet2DConditionModel: forward called before load()");
    LDM_CHECK(sample.ndim() == 4, "cuda::UNet2DConditionModel: expected latents [B, ", config.in_channels,
              ", H, W], got ", sample.shape_str());
    const int64_t B = sample.dim(0), H = sample.dim(2), W = sample.dim(3), m = config.size_multiple();
    LDM_CHECK(sample.dim(1) == config.in_channels, "cuda::UNet2DConditionModel: expected latents with ",
              config.in_channels, " channels, got ", sample.shape_str());
    LDM_CHECK(B > 0 && H > 0 && W > 0 && H % m == 0 && W % m == 0,
              "cuda::UNet2DConditionModel: latent height and width must be multiples of ", m, ", got ", H, "x", W);
    LDM_CHECK(timesteps.size() == 1 || int64_t(timesteps.size()) == B, "cuda::UNet2DConditionModel: got ",
              timesteps.size(), " timesteps for a batch of ", B, " (give one, or one per sample)");
    LDM_CHECK(context.ndim() == 3 && context.dim(0) == B && context.dim(2) == config.cross_attention_dim,
              "cuda::UNet2DConditionModel: expected text embeddings [", B, ", L, ", config.cross_attention_dim,
              "], got ", context.shape_str());
  }
};

}  // namespace ldm::cuda
