// diffusers.models.attention_processor.Attention with AttnProcessor:
//   q = to_q(x), k = to_k(context), v = to_v(context)      (context = x for self-attention)
//   out = to_out.0(softmax(q k^T / sqrt(d)) v), heads side by side
// The U-Net's attn1 (self) and attn2 (cross, context = CLIP text [B, 77, 768]) have no
// q/k/v bias. The VAE's mid-block attention (VAEAttention below) adds a group norm, a
// single head, biases, and a residual around it, on a 4-d image.
#pragma once
#include "ldm/nn/attention.hpp"
#include "ldm/nn/elementwise.hpp"
#include "ldm/nn/group_norm.hpp"
#include "ldm/nn/linear.hpp"

namespace ldm {

struct Attention {
  Linear to_q, to_k, to_v, to_out_0;
  int64_t heads = 8;

  // context_dim 0: self-attention (keys and values from x).
  void load(WeightStore& w, const std::string& prefix, int64_t query_dim, int64_t context_dim, int64_t heads_,
            int64_t dim_head, bool qkv_bias = false) {
    const int64_t inner = heads_ * dim_head, cdim = context_dim > 0 ? context_dim : query_dim;
    heads = heads_;
    to_q.load(w, join(prefix, "to_q"), query_dim, inner, qkv_bias);
    to_k.load(w, join(prefix, "to_k"), cdim, inner, qkv_bias);
    to_v.load(w, join(prefix, "to_v"), cdim, inner, qkv_bias);
    to_out_0.load(w, join(prefix, "to_out.0"), inner, query_dim);
  }

  // x [B, L, query_dim], context [B, Lc, context_dim] (undefined: self) -> [B, L, query_dim]
  Tensor forward(const Tensor& x, const Tensor& context = Tensor()) const {
    const Tensor& c = context.defined() ? context : x;
    Tensor q = to_q.forward(x), k = to_k.forward(c), v = to_v.forward(c);  // [B, L|Lc, heads*dim_head]
    return to_out_0.forward(scaled_dot_product_attention(q, k, v, heads));
  }
};

// The VAE mid-block attention (Attention with _from_deprecated_attn_block=True).
struct VAEAttention {
  GroupNorm group_norm;
  Attention attn;  // its members load from the same prefix: to_q, to_k, to_v, to_out.0

  void load(WeightStore& w, const std::string& prefix, int64_t channels, int64_t groups = 32, float eps = 1e-6f) {
    group_norm.load(w, join(prefix, "group_norm"), channels, groups, eps);
    attn.load(w, prefix, channels, 0, 1, channels, /*qkv_bias=*/true);
  }
  // [B, C, H, W] -> same
  Tensor forward(const Tensor& x) const {
    Tensor h = image_to_tokens(group_norm.forward(x));  // [B, H*W, C]
    h = tokens_to_image(attn.forward(h), x.dim(2), x.dim(3));
    add_(h, x);
    return h;
  }
};

}  // namespace ldm
