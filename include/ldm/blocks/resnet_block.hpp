// diffusers.models.resnet.ResnetBlock2D (He et al. 2016, as in DDPM's U-Net):
//   h = conv1(silu(norm1(x))) + time_emb_proj(silu(temb))[:, :, None, None]
//   h = conv2(silu(norm2(h)))
//   out = shortcut(x) + h          shortcut = 1x1 conv_shortcut when channels change
// The U-Net uses it with a time embedding (eps 1e-5); the VAE without one (eps 1e-6).
#pragma once
#include <optional>

#include "ldm/nn/activations.hpp"
#include "ldm/nn/conv2d.hpp"
#include "ldm/nn/elementwise.hpp"
#include "ldm/nn/group_norm.hpp"
#include "ldm/nn/linear.hpp"

namespace ldm {

struct ResnetBlock2D {
  GroupNorm norm1, norm2;
  Conv2d conv1, conv2;
  std::optional<Linear> time_emb_proj;  // absent in the VAE
  std::optional<Conv2d> conv_shortcut;  // present when in_channels != out_channels

  // temb_channels 0: no time embedding.
  void load(WeightStore& w, const std::string& prefix, int64_t in_channels, int64_t out_channels,
            int64_t temb_channels, int64_t groups = 32, float eps = 1e-5f) {
    norm1.load(w, join(prefix, "norm1"), in_channels, groups, eps);
    conv1.load(w, join(prefix, "conv1"), in_channels, out_channels, 3, 1, 1);
    if (temb_channels > 0) {
      time_emb_proj.emplace();
      time_emb_proj->load(w, join(prefix, "time_emb_proj"), temb_channels, out_channels);
    }
    norm2.load(w, join(prefix, "norm2"), out_channels, groups, eps);
    conv2.load(w, join(prefix, "conv2"), out_channels, out_channels, 3, 1, 1);
    if (in_channels != out_channels) {
      conv_shortcut.emplace();
      conv_shortcut->load(w, join(prefix, "conv_shortcut"), in_channels, out_channels, 1);
    }
  }

  // x [B, in, H, W], temb [B, temb_channels] (or undefined) -> [B, out, H, W]
  Tensor forward(const Tensor& x, const Tensor& temb = Tensor()) const {
    Tensor h = conv1.forward(norm1.forward(x, /*fuse_silu=*/true));  // [B, out, H, W]
    if (time_emb_proj) {
      LDM_CHECK(temb.defined(), "ResnetBlock2D: this block needs a time embedding");
      add_channel_bias_(h, time_emb_proj->forward(silu(temb)));  // + [B, out, 1, 1]
    }
    h = conv2.forward(norm2.forward(h, /*fuse_silu=*/true));
    if (conv_shortcut) {
      add_(h, conv_shortcut->forward(x));
    } else {
      add_(h, x);
    }
    return h;
  }
};

}  // namespace ldm
