// diffusers.models.embeddings.get_timestep_embedding and TimestepEmbedding: the sinusoidal
// embedding of the diffusion timestep (as the transformer's positional encoding), then an MLP.
//   emb[i] = t * exp(-ln(max_period) * i / (half - shift)),  i < half = dim / 2
//   out    = [sin(emb), cos(emb)]  (or [cos, sin] with flip_sin_to_cos, SD1.5's choice)
#pragma once
#include <cmath>
#include <vector>

#include "ldm/nn/activations.hpp"
#include "ldm/nn/linear.hpp"

namespace ldm {

// timesteps [N] -> [N, dim]. float32 arithmetic step by step, as diffusers computes it.
inline Tensor get_timestep_embedding(const std::vector<float>& timesteps, int64_t dim, bool flip_sin_to_cos = true,
                                     float downscale_freq_shift = 0.0f, float scale = 1.0f,
                                     float max_period = 10000.0f) {
  const int64_t half = dim / 2, N = int64_t(timesteps.size());
  std::vector<float> freq(static_cast<size_t>(half));
  const float neg_log = -float(std::log(double(max_period)));
  for (int64_t i = 0; i < half; ++i) freq[size_t(i)] = std::exp(neg_log * float(i) / (float(half) - downscale_freq_shift));
  Tensor out({N, dim});  // an odd dim leaves the last column zero, as diffusers pads it
  for (int64_t n = 0; n < N; ++n) {
    float* row = out.data() + n * dim;
    for (int64_t i = 0; i < half; ++i) {
      const float e = scale * (timesteps[size_t(n)] * freq[size_t(i)]);
      const float s = std::sin(e), c = std::cos(e);
      row[i] = flip_sin_to_cos ? c : s;
      row[half + i] = flip_sin_to_cos ? s : c;
    }
  }
  return out;
}

// diffusers.models.embeddings.TimestepEmbedding: linear_1 -> SiLU -> linear_2
struct TimestepEmbedding {
  Linear linear_1, linear_2;

  void load(WeightStore& w, const std::string& prefix, int64_t in_channels, int64_t time_embed_dim) {
    linear_1.load(w, join(prefix, "linear_1"), in_channels, time_embed_dim);
    linear_2.load(w, join(prefix, "linear_2"), time_embed_dim, time_embed_dim);
  }
  // [N, in] -> [N, time_embed_dim]
  Tensor forward(const Tensor& x) const {
    Tensor h = linear_1.forward(x);
    silu_(h);
    return linear_2.forward(h);
  }

  // What backward needs: the input [N, in] and linear_1's output before the SiLU [N, T].
  struct Saved {
    Tensor x, h;
  };
  Tensor forward(const Tensor& x, Saved& saved) const {
    saved.x = x;
    saved.h = linear_1.forward(x);
    return linear_2.forward(silu(saved.h));
  }
  // d out [N, T] -> d x [N, in]; the linears' gradients accumulate. (The sinusoidal embedding
  // before it has no parameters: a training step drops this dx.)
  Tensor backward(const Saved& saved, const Tensor& dy) {
    const Tensor dh = silu_backward(saved.h, linear_2.backward(silu(saved.h), dy));
    return linear_1.backward(saved.x, dh);
  }

  void parameters(const std::string& prefix, std::vector<Parameter>& out) {
    linear_1.parameters(join(prefix, "linear_1"), out);
    linear_2.parameters(join(prefix, "linear_2"), out);
  }
};

}  // namespace ldm
