// Classifier-free guidance (Ho & Salimans 2022) and guidance rescale (Lin et al. 2023,
// "Common Diffusion Noise Schedules and Sample Steps are Flawed", section 3.4).
//   eps = eps_uncond + w * (eps_text - eps_uncond)
//   rescaled = phi * eps * std(eps_text) / std(eps) + (1 - phi) * eps   (std per sample)
#pragma once
#include <cmath>

#include "ldm/core/tensor.hpp"

namespace ldm {

// The U-Net ran on the batch [uncond; text] (2B items) -> guided [B, ...].
inline Tensor classifier_free_guidance(const Tensor& pred, float guidance_scale) {
  LDM_CHECK(pred.dim(0) % 2 == 0, "classifier_free_guidance: expected a batch of [uncond; text], got ", pred.shape_str());
  const int64_t B = pred.dim(0) / 2;
  Tensor uncond = pred.slice0(0, B), text = pred.slice0(B, 2 * B);
  Tensor out = Tensor::empty(uncond.shape());
  out.vec() = uncond.vec() + guidance_scale * (text.vec() - uncond.vec());
  return out;
}

// diffusers rescale_noise_cfg: std over every dim but the batch (torch.std, unbiased).
inline Tensor rescale_noise_cfg(const Tensor& noise_cfg, const Tensor& noise_pred_text, float guidance_rescale) {
  check_shape(noise_pred_text, noise_cfg.shape(), "rescale_noise_cfg: noise_pred_text");
  const int64_t B = noise_cfg.dim(0), n = noise_cfg.numel() / B;
  auto stddev = [n](const float* x) {
    double mean = 0, sq = 0;
    for (int64_t i = 0; i < n; ++i) mean += x[i];
    mean /= double(n);
    for (int64_t i = 0; i < n; ++i) sq += (x[i] - mean) * (x[i] - mean);
    return std::sqrt(sq / double(n - 1));
  };
  Tensor out = Tensor::empty(noise_cfg.shape());
  for (int64_t b = 0; b < B; ++b) {
    const float* cfg = noise_cfg.data() + b * n;
    const float* text = noise_pred_text.data() + b * n;
    const double ratio = stddev(text) / stddev(cfg);
    for (int64_t i = 0; i < n; ++i)
      out[b * n + i] = float(guidance_rescale * (cfg[i] * ratio) + (1.0 - guidance_rescale) * cfg[i]);
  }
  return out;
}

}  // namespace ldm
