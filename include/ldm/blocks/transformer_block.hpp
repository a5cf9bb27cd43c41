// diffusers.models.attention.BasicTransformerBlock (pre-LayerNorm, as SD1.5 uses it):
//   x = x + attn1(norm1(x))                    self-attention over pixels
//   x = x + attn2(norm2(x), context)           cross-attention to the text
//   x = x + ff(norm3(x))                       ff = Linear(dim, 8 dim) -> GEGLU -> Linear(4 dim, dim)
#pragma once
#include "ldm/blocks/attention.hpp"
#include "ldm/nn/layer_norm.hpp"

namespace ldm {

struct FeedForward {  // diffusers.models.attention.FeedForward with activation_fn="geglu"
  Linear net_0_proj, net_2;

  void load(WeightStore& w, const std::string& prefix, int64_t dim, int64_t mult = 4) {
    net_0_proj.load(w, join(prefix, "net.0.proj"), dim, 2 * mult * dim);
    net_2.load(w, join(prefix, "net.2"), mult * dim, dim);
  }
  // [B, L, dim] -> [B, L, dim]
  Tensor forward(const Tensor& x) const { return net_2.forward(geglu(net_0_proj.forward(x))); }
};

struct BasicTransformerBlock {
  LayerNorm norm1, norm2, norm3;
  Attention attn1, attn2;
  FeedForward ff;

  void load(WeightStore& w, const std::string& prefix, int64_t dim, int64_t heads, int64_t dim_head,
            int64_t cross_attention_dim) {
    norm1.load(w, join(prefix, "norm1"), dim);
    attn1.load(w, join(prefix, "attn1"), dim, 0, heads, dim_head);
    norm2.load(w, join(prefix, "norm2"), dim);
    attn2.load(w, join(prefix, "attn2"), dim, cross_attention_dim, heads, dim_head);
    norm3.load(w, join(prefix, "norm3"), dim);
    ff.load(w, join(prefix, "ff"), dim);
  }

  // x [B, L, dim], context [B, Lc, cross_attention_dim] -> [B, L, dim]
  Tensor forward(const Tensor& x, const Tensor& context) const {
    Tensor h = add(x, attn1.forward(norm1.forward(x)));
    add_(h, attn2.forward(norm2.forward(h), context));
    add_(h, ff.forward(norm3.forward(h)));
    return h;
  }
};

}  // namespace ldm
