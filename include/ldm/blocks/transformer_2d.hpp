// diffusers.models.transformers.transformer_2d.Transformer2DModel, SD1.5 form (the "spatial
// transformer" of LDM): the image becomes a sequence of pixel tokens that attend to each
// other and to the text.
//   h = proj_in(norm(x))                 GroupNorm(eps 1e-6), 1x1 conv   [B, C, H, W]
//   h = blocks(h as [B, H*W, C], context)
//   out = proj_out(h as [B, C, H, W]) + x                                 1x1 conv
#pragma once
#include <vector>

#include "ldm/blocks/transformer_block.hpp"
#include "ldm/nn/conv2d.hpp"

namespace ldm {

struct Transformer2DModel {
  GroupNorm norm;
  Conv2d proj_in, proj_out;
  std::vector<BasicTransformerBlock> transformer_blocks;
  // SD2.x: proj_in / proj_out are Linear layers in the checkpoint ([out, in]); a Linear over each
  // pixel's channels is the same map as a 1x1 convolution, so they run as one
  // (load_unet_transformer) and their parameters keep the checkpoint's 2-d shape.
  bool use_linear_projection = false;

  void load(WeightStore& w, const std::string& prefix, int64_t in_channels, int64_t heads, int64_t dim_head,
            int64_t cross_attention_dim, int64_t groups = 32, int64_t num_layers = 1) {
    const int64_t inner = heads * dim_head;
    norm.load(w, join(prefix, "norm"), in_channels, groups, 1e-6f);
    proj_in.load(w, join(prefix, "proj_in"), in_channels, inner, 1);
    transformer_blocks.resize(size_t(num_layers));
    for (int64_t i = 0; i < num_layers; ++i)
      transformer_blocks[size_t(i)].load(w, join(prefix, "transformer_blocks." + std::to_string(i)), inner, heads,
                                         dim_head, cross_attention_dim);
    proj_out.load(w, join(prefix, "proj_out"), inner, in_channels, 1);
  }

  // x [B, C, H, W], context [B, Lc, cross_attention_dim] -> [B, C, H, W]
  Tensor forward(const Tensor& x, const Tensor& context) const {
    const int64_t H = x.dim(2), W = x.dim(3);
    Tensor h = proj_in.forward_to_tokens(norm.forward(x));  // [B, H*W, inner]
    for (const auto& block : transformer_blocks) h = block.forward(h, context);
    Tensor out = proj_out.forward_from_tokens(h, H, W);  // [B, C, H, W]
    add_(out, x);
    return out;
  }

  // Training: the input (the norm's output, proj_in's input, is recomputed from it), and
  // proj_out's input; the blocks save their own.
  struct Saved {
    Tensor x;  // [B, C, H, W]
    std::vector<BasicTransformerBlock::Saved> blocks;
    Tensor h;  // [B, inner, H, W]
  };
  Tensor forward(const Tensor& x, const Tensor& context, Saved& s) const {
    s.x = x;
    s.blocks.resize(transformer_blocks.size());
    Tensor h = image_to_tokens(proj_in.forward(norm.forward(x)));  // [B, H*W, inner]
    for (size_t i = 0; i < transformer_blocks.size(); ++i) h = transformer_blocks[i].forward(h, context, s.blocks[i]);
    s.h = tokens_to_image(h, x.dim(2), x.dim(3));
    Tensor out = proj_out.forward(s.h);  // [B, C, H, W]
    add_(out, x);
    return out;
  }
  // dy [B, C, H, W] -> dx, same shape; the context's gradient is added to *dcontext. Frees `s`.
  Tensor backward(Saved& s, const Tensor& dy, Tensor* dcontext = nullptr) {
    const int64_t H = dy.dim(2), W = dy.dim(3);
    Tensor dh = image_to_tokens(proj_out.backward(s.h, dy));  // [B, H*W, inner]
    for (size_t i = transformer_blocks.size(); i-- > 0;) dh = transformer_blocks[i].backward(s.blocks[i], dh, dcontext);
    const Tensor dp = proj_in.backward(norm.forward(s.x), tokens_to_image(dh, H, W));  // [B, C, H, W]
    Tensor dx = norm.backward(s.x, dp);
    add_(dx, dy);
    s = Saved();
    return dx;
  }

  void parameters(const std::string& prefix, std::vector<Parameter>& out) {
    norm.parameters(join(prefix, "norm"), out);
    auto stored = [&](const Conv2d& c) {
      return use_linear_projection ? Shape{c.weight.dim(0), c.weight.dim(1)} : Shape{};
    };
    proj_in.parameters(join(prefix, "proj_in"), out, stored(proj_in));
    for (size_t i = 0; i < transformer_blocks.size(); ++i)
      transformer_blocks[i].parameters(join(prefix, "transformer_blocks." + std::to_string(i)), out);
    proj_out.parameters(join(prefix, "proj_out"), out, stored(proj_out));
  }
};

}  // namespace ldm
