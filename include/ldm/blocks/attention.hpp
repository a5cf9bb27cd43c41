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

  // Training: the inputs of every projection (the attention's output is to_out's input).
  struct Saved {
    Tensor x, context;  // context undefined: self-attention
    Tensor q, k, v;     // [B, L|Lc, heads*dim_head]
    Tensor o;           // attention output [B, L, heads*dim_head]
  };
  Tensor forward(const Tensor& x, const Tensor& context, Saved& s) const {
    const Tensor& c = context.defined() ? context : x;
    s.x = x, s.context = context;
    s.q = to_q.forward(x), s.k = to_k.forward(c), s.v = to_v.forward(c);
    s.o = scaled_dot_product_attention(s.q, s.k, s.v, heads);
    return to_out_0.forward(s.o);
  }
  // dy [B, L, query_dim] -> dx [B, L, query_dim]; for cross-attention the context's gradient
  // [B, Lc, context_dim] is added to *dcontext (every transformer reads the same text). Frees `s`.
  Tensor backward(Saved& s, const Tensor& dy, Tensor* dcontext = nullptr) {
    const Tensor d_o = to_out_0.backward(s.o, dy);                                      // [B, L, inner]
    const AttentionGrad g = scaled_dot_product_attention_backward(s.q, s.k, s.v, d_o, heads);
    const bool self = !s.context.defined();
    const Tensor& c = self ? s.x : s.context;
    Tensor dc = to_k.backward(c, g.k);  // [B, Lc, context_dim]
    add_(dc, to_v.backward(c, g.v));
    Tensor dx = to_q.backward(s.x, g.q);  // [B, L, query_dim]
    if (self) {
      add_(dx, dc);
    } else if (dcontext) {
      add_(grad_buffer(*dcontext, c.shape()), dc);
    }
    s = Saved();
    return dx;
  }

  void parameters(const std::string& prefix, std::vector<Parameter>& out) {
    to_q.parameters(join(prefix, "to_q"), out);
    to_k.parameters(join(prefix, "to_k"), out);
    to_v.parameters(join(prefix, "to_v"), out);
    to_out_0.parameters(join(prefix, "to_out.0"), out);
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

  // Training: the input (the normalised tokens are attn's saved x).
  struct Saved {
    Tensor x;  // [B, C, H, W]
    Attention::Saved attn;
  };
  Tensor forward(const Tensor& x, Saved& s) const {
    s.x = x;
    Tensor h = tokens_to_image(attn.forward(image_to_tokens(group_norm.forward(x)), Tensor(), s.attn), x.dim(2),
                               x.dim(3));  // [B, C, H, W]
    add_(h, x);
    return h;
  }
  // dy [B, C, H, W] -> dx, same shape. Frees `s`.
  Tensor backward(Saved& s, const Tensor& dy) {
    const Tensor dt = attn.backward(s.attn, image_to_tokens(dy));  // [B, H*W, C]
    Tensor dx = group_norm.backward(s.x, tokens_to_image(dt, dy.dim(2), dy.dim(3)));
    add_(dx, dy);
    s = Saved();
    return dx;
  }

  void parameters(const std::string& prefix, std::vector<Parameter>& out) {
    group_norm.parameters(join(prefix, "group_norm"), out);
    attn.parameters(prefix, out);
  }
};

}  // namespace ldm
