// The SD1.5 KL-VAE on the GPU: the twin of include/ldm/models/vae.hpp (read that for the
// architecture), same config (ldm::VAEConfig), same checkpoint names, same computation:
//   encode: moments = quant_conv(encoder(x)); mean, logvar = moments split on the channels,
//           logvar clamped to [-30, 20]
//   decode: image = decoder(post_quant_conv(z)),  z already divided by scaling_factor
// As on the CPU, a batch runs one image at a time (diffusers' enable_slicing): the activations
// of a 512x512 decode (up to [1, 256, 512, 512]) are then held for one image only, whatever B.
//
//   cuda::AutoencoderKL vae;
//   vae.load(w, "", VAEConfig::from_json(config_json), cuda::DType::f32);
//   DeviceTensor image = vae.decode(latents_over_scaling_factor);  // [B, 3, 8h, 8w]
#pragma once
#include <string>
#include <vector>

#include "ldm/cuda/vae_blocks.hpp"
#include "ldm/models/vae.hpp"

namespace ldm::cuda {

// image -> Gaussian moments [B, 2 * latent_channels, H/8, W/8]
struct Encoder {
  Conv2d conv_in;
  std::vector<DownEncoderBlock2D> down_blocks;
  UNetMidBlock2D mid_block;
  GroupNorm conv_norm_out;
  Conv2d conv_out;

  void upload(const ldm::Encoder& m, DType dtype) {
    conv_in.upload(m.conv_in, dtype);
    upload_all(down_blocks, m.down_blocks, dtype);
    mid_block.upload(m.mid_block, dtype);
    conv_norm_out.upload(m.conv_norm_out, dtype);
    conv_out.upload(m.conv_out, dtype);
  }
  // [B, 3, H, W] -> [B, 8, H/8, W/8]
  DeviceTensor forward(const DeviceTensor& x) const {
    DeviceTensor h = conv_in.forward(x);                                  // [B, 128, H, W]
    for (const auto& down : down_blocks) h = down.forward(std::move(h));  // [B, 512, H/8, W/8]
    h = mid_block.forward(std::move(h));
    h = conv_norm_out.forward(h, /*fuse_silu=*/true);
    return conv_out.forward(h);
  }
};

// latent -> image; up blocks run the channel list in reverse
struct Decoder {
  Conv2d conv_in;
  UNetMidBlock2D mid_block;
  std::vector<UpDecoderBlock2D> up_blocks;
  GroupNorm conv_norm_out;
  Conv2d conv_out;

  void upload(const ldm::Decoder& m, DType dtype) {
    conv_in.upload(m.conv_in, dtype);
    mid_block.upload(m.mid_block, dtype);
    upload_all(up_blocks, m.up_blocks, dtype);
    conv_norm_out.upload(m.conv_norm_out, dtype);
    conv_out.upload(m.conv_out, dtype);
  }
  // [B, 4, h, w] -> [B, 3, 8h, 8w]
  DeviceTensor forward(const DeviceTensor& z) const {
    DeviceTensor h = conv_in.forward(z);                            // [B, 512, h, w]
    h = mid_block.forward(std::move(h));                            // [B, 512, h, w]
    for (const auto& up : up_blocks) h = up.forward(std::move(h));  // [B, 128, 8h, 8w]
    h = conv_norm_out.forward(h, /*fuse_silu=*/true);
    return conv_out.forward(h);  // [B, 3, 8h, 8w]
  }
};

struct AutoencoderKL {
  ldm::VAEConfig config;
  DType dtype = DType::f32;  // of the weights and of every activation inside
  Encoder encoder;
  Decoder decoder;
  Conv2d quant_conv;       // 1x1, 2*latent -> 2*latent
  Conv2d post_quant_conv;  // 1x1, latent -> latent

  // Loads the CPU model (names, shapes, config checks), then uploads it in `dtype_`.
  void load(WeightStore& w, const std::string& prefix, const ldm::VAEConfig& cfg, DType dtype_) {
    ldm::AutoencoderKL cpu;
    cpu.load(w, prefix, cfg);
    upload(cpu, dtype_);
  }
  void upload(const ldm::AutoencoderKL& m, DType dtype_) {
    LDM_CHECK(m.decoder.conv_in.loaded(), "cuda::AutoencoderKL: upload of a CPU model that was never loaded");
    config = m.config;
    dtype = dtype_;
    encoder.upload(m.encoder, dtype);
    decoder.upload(m.decoder, dtype);
    quant_conv.upload(m.quant_conv, dtype);
    post_quant_conv.upload(m.post_quant_conv, dtype);
  }

  // latent [B, 4, h, w], already divided by scaling_factor -> image [B, 3, 8h, 8w], about [-1, 1],
  // in the latent's dtype.
  DeviceTensor decode(const DeviceTensor& z) const {
    LDM_CHECK(decoder.conv_in.weight.defined(), "cuda::AutoencoderKL: decode called before load()");
    LDM_CHECK(z.ndim() == 4 && z.dim(1) == config.latent_channels, "cuda::AutoencoderKL::decode: expected a latent [B, ",
              config.latent_channels, ", h, w], got ", z.shape_str(),
              z.ndim() == 4 && z.dim(1) == config.in_channels ? " (an image? decode takes latents)" : "");
    LDM_CHECK(z.dim(0) > 0, "cuda::AutoencoderKL::decode: the batch ", z.shape_str(), " is empty");
    const DeviceTensor image = per_image(to_dtype(z, dtype), [this](const DeviceTensor& zb) {
      return decoder.forward(post_quant_conv.forward(zb));  // [1, 3, 8h, 8w]
    });
    return to_dtype(image, z.dtype());
  }

  // image [B, 3, H, W] in [-1, 1] -> q(z | image) on the host: mean and logvar [B, 4, H/8, W/8],
  // logvar clamped to [-30, 20]. The split and clamp are the CPU code's
  // (ldm::DiagonalGaussian::from_moments), so this waits for the GPU.
  DiagonalGaussian encode(const DeviceTensor& x) const {
    LDM_CHECK(encoder.conv_in.weight.defined(), "cuda::AutoencoderKL: encode called before load()");
    LDM_CHECK(x.ndim() == 4 && x.dim(1) == config.in_channels, "cuda::AutoencoderKL::encode: expected an image [B, ",
              config.in_channels, ", H, W] with values in [-1, 1], got ", x.shape_str());
    const int64_t f = config.downscale_factor();
    LDM_CHECK(x.dim(0) > 0, "cuda::AutoencoderKL::encode: the batch ", x.shape_str(), " is empty");
    LDM_CHECK(x.dim(2) >= f && x.dim(3) >= f, "cuda::AutoencoderKL::encode: the image ", x.shape_str(),
              " is smaller than the VAE's downscale factor ", f);
    const DeviceTensor moments = per_image(to_dtype(x, dtype), [this](const DeviceTensor& xb) {
      return quant_conv.forward(encoder.forward(xb));  // [1, 8, H/8, W/8]
    });
    return DiagonalGaussian::from_moments(to_host(moments));
  }

  // The same moments back on the GPU, in the image's dtype.
  void encode_moments(const DeviceTensor& x, DeviceTensor& mean, DeviceTensor& logvar) const {
    const DiagonalGaussian g = encode(x);
    mean = to_device(g.mean, x.dtype());
    logvar = to_device(g.logvar, x.dtype());
  }

 private:
  // f on each image of the batch, results stacked: [B, ...] -> [B, ...]. The stacking copies
  // each result into its rows of a zero tensor with add_ (0 + y = y exactly).
  template <typename F>
  static DeviceTensor per_image(const DeviceTensor& x, F f) {
    if (x.dim(0) == 1) return f(x);
    DeviceTensor out;
    for (int64_t b = 0; b < x.dim(0); ++b) {
      const DeviceTensor y = f(x.slice0(b, b + 1));
      if (!out.defined()) {
        Shape s = y.shape();
        s[0] = x.dim(0);
        out = DeviceTensor::zeros(s, y.dtype());
      }
      DeviceTensor rows = out.slice0(b, b + 1);
      add_(rows, y);
    }
    return out;
  }
};

}  // namespace ldm::cuda
