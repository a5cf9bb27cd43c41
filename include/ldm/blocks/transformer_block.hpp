// diffusers.models.attention.BasicTransformerBlock (pre-LayerNorm, as SD1.5 uses it):
//   x = x + attn1(norm1(x))                    self-attention over pixels
//   x = x + attn2(norm2(x), context)           cross-attention to the text
//   x = x + ff(norm3(x))                       ff = Linear(dim, 8 dim) -> GEGLU -> Linear(4 dim, dim)
#pragma once
#include <algorithm>

#include "ldm/blocks/attention.hpp"
#include "ldm/nn/layer_norm.hpp"

namespace ldm {

// FeedForward's block of projected rows: 16 MiB, half of a Zen 4 L3.
constexpr int64_t kFeedForwardBlockBytes = int64_t(16) << 20;

struct FeedForward {  // diffusers.models.attention.FeedForward with activation_fn="geglu"
  Linear net_0_proj, net_2;

  void load(WeightStore& w, const std::string& prefix, int64_t dim, int64_t mult = 4) {
    net_0_proj.load(w, join(prefix, "net.0.proj"), dim, 2 * mult * dim);
    net_2.load(w, join(prefix, "net.2"), mult * dim, dim);
  }
  // [B, L, dim] -> [B, L, dim]. The projection and the gate run a block of rows at a time: its
  // output h [rows, 2 mult dim] never exists whole (84 MB for SD1.5's 2 x 4096 tokens), one
  // block's (at most kFeedForwardBlockBytes) is still in cache when the gate reads it, and the
  // one buffer serves every block. Same values as projecting all rows at once.
  Tensor forward(const Tensor& x) const {
    LDM_CHECK(x.dim(-1) == net_0_proj.in_features, "FeedForward: expected last dimension ", net_0_proj.in_features,
              ", got input ", x.shape_str());
    const int64_t rows = x.numel() / x.dim(-1), D = x.dim(-1), F2 = net_0_proj.out_features, F = F2 / 2;
    const int64_t budget = kFeedForwardBlockBytes / (F2 * int64_t(sizeof(float))) / 256 * 256;
    const int64_t block = std::min(std::max<int64_t>(budget, 256), std::max<int64_t>(rows, 1));  // rows per block
    Shape shape = x.shape();
    shape.back() = F;
    Tensor gated = Tensor::empty(shape);  // [B, L, mult dim]
    Tensor h = Tensor::empty({std::min(block, rows), F2});
    for (int64_t r0 = 0; r0 < rows; r0 += block) {
      const int64_t n = std::min(block, rows - r0);
      net_0_proj.forward_rows(x.data() + r0 * D, n, h.data());
      geglu_rows(h.data(), n, F, gated.data() + r0 * F);
    }
    return net_2.forward(gated);
  }

  // Training: the input and the projection's output (GEGLU's input; its output is recomputed).
  struct Saved {
    Tensor x, h;  // [B, L, dim], [B, L, 2 mult dim]
  };
  Tensor forward(const Tensor& x, Saved& s) const {
    s.x = x;
    s.h = net_0_proj.forward(x);
    return net_2.forward(geglu(s.h));
  }
  // dy [B, L, dim] -> dx [B, L, dim]. Frees `s`.
  Tensor backward(Saved& s, const Tensor& dy) {
    const Tensor dh = geglu_backward(s.h, net_2.backward(geglu(s.h), dy));  // [B, L, 2 mult dim]
    const Tensor dx = net_0_proj.backward(s.x, dh);
    s = Saved();
    return dx;
  }
  void parameters(const std::string& prefix, std::vector<Parameter>& out) {
    net_0_proj.parameters(join(prefix, "net.0.proj"), out);
    net_2.parameters(join(prefix, "net.2"), out);
  }
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

  // Training: the three norms' inputs; the norms' outputs are the sub-blocks' saved inputs.
  struct Saved {
    Tensor x, h1, h2;  // [B, L, dim]: the input, after attn1, after attn2
    Attention::Saved attn1, attn2;
    FeedForward::Saved ff;
  };
  Tensor forward(const Tensor& x, const Tensor& context, Saved& s) const {
    s.x = x;
    s.h1 = add(x, attn1.forward(norm1.forward(x), Tensor(), s.attn1));
    s.h2 = add(s.h1, attn2.forward(norm2.forward(s.h1), context, s.attn2));
    return add(s.h2, ff.forward(norm3.forward(s.h2), s.ff));
  }
  // dy [B, L, dim] -> dx [B, L, dim]; the context's gradient is added to *dcontext. Frees `s`.
  Tensor backward(Saved& s, const Tensor& dy, Tensor* dcontext = nullptr) {
    Tensor d = dy.clone();                                                // the residual path
    add_(d, norm3.backward(s.h2, ff.backward(s.ff, d)));                  // h2 + ff(norm3(h2))
    add_(d, norm2.backward(s.h1, attn2.backward(s.attn2, d, dcontext)));  // h1 + attn2(norm2(h1), c)
    add_(d, norm1.backward(s.x, attn1.backward(s.attn1, d)));             // x + attn1(norm1(x))
    s = Saved();
    return d;
  }

  void parameters(const std::string& prefix, std::vector<Parameter>& out) {
    norm1.parameters(join(prefix, "norm1"), out);
    attn1.parameters(join(prefix, "attn1"), out);
    norm2.parameters(join(prefix, "norm2"), out);
    attn2.parameters(join(prefix, "attn2"), out);
    norm3.parameters(join(prefix, "norm3"), out);
    ff.parameters(join(prefix, "ff"), out);
  }
};

}  // namespace ldm
