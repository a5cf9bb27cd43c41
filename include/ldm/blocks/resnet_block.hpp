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

  // Training: what backward needs. The normalised, activated inputs of conv1 and conv2 are
  // recomputed from x and h (a group norm costs little beside a 3x3 conv).
  struct Saved {
    Tensor x;     // [B, in, H, W]
    Tensor h;     // conv1(...) + time embedding, the input of norm2 [B, out, H, W]
    Tensor temb;  // [B, temb_channels], or undefined
  };
  Tensor forward(const Tensor& x, const Tensor& temb, Saved& s) const {
    s.x = x, s.temb = temb;
    s.h = conv1.forward(norm1.forward(x, /*fuse_silu=*/true));  // [B, out, H, W]
    if (time_emb_proj) {
      LDM_CHECK(temb.defined(), "ResnetBlock2D: this block needs a time embedding");
      add_channel_bias_(s.h, time_emb_proj->forward(silu(temb)));
    }
    Tensor out = conv2.forward(norm2.forward(s.h, /*fuse_silu=*/true));
    add_(out, conv_shortcut ? conv_shortcut->forward(x) : x);
    return out;
  }
  // dy [B, out, H, W] -> dx [B, in, H, W]; the time embedding's gradient [B, temb_channels] is
  // added to *dtemb (one embedding feeds every resnet of the U-Net). Frees `s`.
  Tensor backward(Saved& s, const Tensor& dy, Tensor* dtemb = nullptr) {
    Tensor dh = norm2.backward(s.h, conv2.backward(norm2.forward(s.h, true), dy), true);  // [B, out, H, W]
    s.h = Tensor();
    if (time_emb_proj) {
      LDM_CHECK(dtemb, "ResnetBlock2D::backward: this block has a time embedding; pass where its gradient goes");
      const Tensor dt = time_emb_proj->backward(silu(s.temb), channel_sums(dh));  // [B, temb_channels]
      add_(grad_buffer(*dtemb, s.temb.shape()), silu_backward(s.temb, dt));
    }
    Tensor dx = norm1.backward(s.x, conv1.backward(norm1.forward(s.x, true), dh), true);  // [B, in, H, W]
    add_(dx, conv_shortcut ? conv_shortcut->backward(s.x, dy) : dy);
    s = Saved();
    return dx;
  }

  void parameters(const std::string& prefix, std::vector<Parameter>& out) {
    norm1.parameters(join(prefix, "norm1"), out);
    conv1.parameters(join(prefix, "conv1"), out);
    if (time_emb_proj) time_emb_proj->parameters(join(prefix, "time_emb_proj"), out);
    norm2.parameters(join(prefix, "norm2"), out);
    conv2.parameters(join(prefix, "conv2"), out);
    if (conv_shortcut) conv_shortcut->parameters(join(prefix, "conv_shortcut"), out);
  }
};

}  // namespace ldm
