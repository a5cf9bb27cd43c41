// The attention blocks on the GPU: Attention, VAEAttention, FeedForward (GEGLU),
// BasicTransformerBlock, Transformer2DModel. Twins of include/ldm/blocks/{attention,
// transformer_block,transformer_2d}.hpp (read those for the diffusers formulas); the fused
// attention op (cuda::attention) never stores the [tokens x tokens] score matrix.
#pragma once
#include <string>
#include <vector>

#include "ldm/blocks/attention.hpp"
#include "ldm/blocks/transformer_2d.hpp"
#include "ldm/blocks/transformer_block.hpp"
#include "ldm/cuda/modules.hpp"

namespace ldm::cuda {

// out = to_out.0(softmax(q k^T / sqrt(d)) v), q = to_q(x), k = to_k(context), v = to_v(context)
struct Attention {
  Linear to_q, to_k, to_v, to_out_0;
  int64_t heads = 8;

  void upload(const ldm::Attention& m, DType dtype) {
    to_q.upload(m.to_q, dtype);
    to_k.upload(m.to_k, dtype);
    to_v.upload(m.to_v, dtype);
    to_out_0.upload(m.to_out_0, dtype);
    heads = m.heads;
  }
  // context_dim 0: self-attention.
  void load(WeightStore& w, const std::string& prefix, int64_t query_dim, int64_t context_dim, int64_t heads_,
            int64_t dim_head, bool qkv_bias, DType dtype) {
    load_via_cpu<ldm::Attention>(*this, dtype, w, prefix, query_dim, context_dim, heads_, dim_head, qkv_bias);
  }

  // x [B, L, query_dim], context [B, Lc, context_dim] (undefined: self) -> [B, L, query_dim]
  DeviceTensor forward(const DeviceTensor& x, const DeviceTensor& context = DeviceTensor()) const {
    const DeviceTensor& c = context.defined() ? context : x;
    LDM_CHECK(x.ndim() == 3 && c.ndim() == 3 && c.dim(0) == x.dim(0), "cuda::Attention: expected x [B, L, C] and ",
              "context [B, Lc, Cc], got x ", x.shape_str(), ", context ", c.shape_str());
    const DeviceTensor q = to_q.forward(x), k = to_k.forward(c), v = to_v.forward(c);  // [B, L|Lc, heads*dim_head]
    return to_out_0.forward(attention(q, k, v, heads));
  }
};

// The VAE mid-block attention: x + attention(group_norm(x)) over the H*W pixels, one head.
struct VAEAttention {
  GroupNorm group_norm;
  Attention attn;

  void upload(const ldm::VAEAttention& m, DType dtype) {
    group_norm.upload(m.group_norm, dtype);
    attn.upload(m.attn, dtype);
  }
  void load(WeightStore& w, const std::string& prefix, int64_t channels, int64_t groups, float eps, DType dtype) {
    load_via_cpu<ldm::VAEAttention>(*this, dtype, w, prefix, channels, groups, eps);
  }
  // [B, C, H, W] -> same
  DeviceTensor forward(const DeviceTensor& x) const {
    DeviceTensor h = image_to_tokens(group_norm.forward(x));  // [B, H*W, C]
    h = tokens_to_image(attn.forward(h), x.dim(2), x.dim(3));  // [B, C, H, W]
    add_(h, x);
    return h;
  }
};

// net.2(GEGLU(net.0.proj(x))): Linear(dim, 8 dim) -> a * gelu(g) -> Linear(4 dim, dim)
struct FeedForward {
  Linear net_0_proj, net_2;

  void upload(const ldm::FeedForward& m, DType dtype) {
    net_0_proj.upload(m.net_0_proj, dtype);
    net_2.upload(m.net_2, dtype);
  }
  void load(WeightStore& w, const std::string& prefix, int64_t dim, int64_t mult, DType dtype) {
    load_via_cpu<ldm::FeedForward>(*this, dtype, w, prefix, dim, mult);
  }
  // [B, L, dim] -> [B, L, dim]
  DeviceTensor forward(const DeviceTensor& x) const { return net_2.forward(geglu(net_0_proj.forward(x))); }
};

// x += attn1(norm1(x)); x += attn2(norm2(x), context); x += ff(norm3(x))
struct BasicTransformerBlock {
  LayerNorm norm1, norm2, norm3;
  Attention attn1, attn2;
  FeedForward ff;

  void upload(const ldm::BasicTransformerBlock& m, DType dtype) {
    norm1.upload(m.norm1, dtype);
    attn1.upload(m.attn1, dtype);
    norm2.upload(m.norm2, dtype);
    attn2.upload(m.attn2, dtype);
    norm3.upload(m.norm3, dtype);
    ff.upload(m.ff, dtype);
  }
  void load(WeightStore& w, const std::string& prefix, int64_t dim, int64_t heads, int64_t dim_head,
            int64_t cross_attention_dim, DType dtype) {
    load_via_cpu<ldm::BasicTransformerBlock>(*this, dtype, w, prefix, dim, heads, dim_head, cross_attention_dim);
  }

  // x [B, L, dim], context [B, Lc, cross_attention_dim] -> [B, L, dim]
  DeviceTensor forward(const DeviceTensor& x, const DeviceTensor& context) const {
    DeviceTensor h = add(x, attn1.forward(norm1.forward(x)));
    add_(h, attn2.forward(norm2.forward(h), context));
    add_(h, ff.forward(norm3.forward(h)));
    return h;
  }
};

// out = proj_out(blocks(proj_in(norm(x)) as tokens, context) as an image) + x
// (proj_in / proj_out are 1x1 convs; SD2.x's Linear projections arrive from the CPU load
// already viewed as [inner, C, 1, 1], see load_unet_transformer).
struct Transformer2DModel {
  GroupNorm norm;
  Conv2d proj_in, proj_out;
  std::vector<BasicTransformerBlock> transformer_blocks;

  void upload(const ldm::Transformer2DModel& m, DType dtype) {
    norm.upload(m.norm, dtype);
    proj_in.upload(m.proj_in, dtype);
    upload_all(transformer_blocks, m.transformer_blocks, dtype);
    proj_out.upload(m.proj_out, dtype);
  }
  void load(WeightStore& w, const std::string& prefix, int64_t in_channels, int64_t heads, int64_t dim_head,
            int64_t cross_attention_dim, int64_t groups, int64_t num_layers, DType dtype) {
    load_via_cpu<ldm::Transformer2DModel>(*this, dtype, w, prefix, in_channels, heads, dim_head, cross_attention_dim,
                                          groups, num_layers);
  }

  // x [B, C, H, W], context [B, Lc, cross_attention_dim] -> [B, C, H, W]
  DeviceTensor forward(const DeviceTensor& x, const DeviceTensor& context) const {
    LDM_CHECK(x.ndim() == 4, "cuda::Transformer2DModel: expected [B, C, H, W], got ", x.shape_str());
    const int64_t H = x.dim(2), W = x.dim(3);
    DeviceTensor h = image_to_tokens(proj_in.forward(norm.forward(x)));  // [B, H*W, inner]
    for (const auto& block : transformer_blocks) h = block.forward(h, context);
    DeviceTensor out = proj_out.forward(tokens_to_image(h, H, W));  // [B, C, H, W]
    add_(out, x);
    return out;
  }
};

}  // namespace ldm::cuda
