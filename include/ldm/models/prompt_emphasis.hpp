// A weighted prompt through the text encoder, as AUTOMATIC1111 does it with its default
// "Original" emphasis (modules/sd_emphasis.py, modules/sd_hijack_clip.py process_tokens):
// each 77-token chunk (models/prompt_chunks.hpp) goes through CLIP on its own, then
//
//   m0 = mean(z)                     z [1, 77, D], the chunk's CLIP output
//   z[t] *= multiplier[t]            each token's vector by its weight
//   z *= m0 / mean(z)                the chunk's mean restored
//
// and the chunks' outputs are concatenated along the tokens: [1, 77 k, D]. Emphasis thus acts on
// the U-Net's cross-attention keys and values, not on the words CLIP reads. Means in double;
// the multipliers applied as float, as A1111 holds them (a float32 tensor).
#pragma once
#include <algorithm>
#include <cmath>
#include <vector>

#include "ldm/core/tensor.hpp"
#include "ldm/models/prompt_chunks.hpp"

namespace ldm {

// z [1, L, D] of one chunk, multipliers [L].
inline void apply_emphasis_original(Tensor& z, const std::vector<double>& multipliers) {
  LDM_CHECK(z.ndim() == 3 && z.dim(0) == 1 && z.dim(1) == int64_t(multipliers.size()),
            "prompt emphasis: a chunk's encoding ", z.shape_str(), " does not match its ", multipliers.size(),
            " token weights");
  const int64_t L = z.dim(1), D = z.dim(2);
  auto mean = [&] {
    double s = 0;
    for (float v : z) s += v;
    return s / double(z.numel());
  };
  const double original = mean();
  for (int64_t t = 0; t < L; ++t) {
    const float m = float(multipliers[size_t(t)]);
    for (float* v = z.data() + t * D; v < z.data() + (t + 1) * D; ++v) *v *= m;
  }
  const double now = mean();
  LDM_CHECK(now != 0 && std::isfinite(now), "prompt emphasis: the weighted prompt's mean is ", now,
            ", so its original mean cannot be restored (are all the weights 0?)");
  const float rescale = float(original / now);
  for (float& v : z) v *= rescale;
}

// The chunks through encode_chunk (77 token ids -> [1, 77, D]), weighted, concatenated: [1, 77 k, D].
template <typename EncodeChunk>
Tensor encode_weighted_chunks(const PromptChunks& chunks, EncodeChunk&& encode_chunk) {
  std::vector<Tensor> parts;
  for (size_t i = 0; i < chunks.tokens.size(); ++i) {
    Tensor z = encode_chunk(std::vector<int64_t>(chunks.tokens[i].begin(), chunks.tokens[i].end()));
    apply_emphasis_original(z, chunks.multipliers[i]);
    parts.push_back(std::move(z));
  }
  LDM_CHECK(!parts.empty(), "prompt emphasis: a prompt has at least one chunk");
  const int64_t D = parts[0].dim(2), L = parts[0].dim(1);
  Tensor out = Tensor::empty({1, L * int64_t(parts.size()), D});
  for (size_t i = 0; i < parts.size(); ++i) std::copy(parts[i].begin(), parts[i].end(), out.data() + int64_t(i) * L * D);
  return out;
}

}  // namespace ldm
