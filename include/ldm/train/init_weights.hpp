// Fresh weights for training from scratch: a WeightSource that gives every tensor a model asks
// for its initial value from its name and shape, as PyTorch's layer constructors would
// (diffusers and transformers models keep torch's defaults for convolutions and linears):
//   conv / linear weight [O, I, k, k] / [O, I]   variance 1 / (3 fan_in), fan_in = I k k
//                                                (the variance of torch's kaiming_uniform_(a=sqrt 5),
//                                                U(-1/sqrt(fan_in), 1/sqrt(fan_in)); drawn normal here)
//   biases                                       0 (torch draws them small; 0 trains the same)
//   norm weight (any 1-D "weight")               1
//   token_embedding.weight                       N(0, 0.02^2)   (CLIPPreTrainedModel._init_weights)
//   position_embedding.weight                    N(0, 0.01^2)
// Each tensor's values are a pure function of (seed, name): the same model at any thread
// count, and adding a layer does not change the others' initial values.
//
//   UNet2DConditionModel unet;
//   WeightStore w(std::make_shared<InitSource>(seed));
//   unet.load(w, "", config);
#pragma once
#include <cmath>
#include <string>
#include <vector>

#include "ldm/core/rng_ldm.hpp"
#include "ldm/core/weights.hpp"

namespace ldm {

class InitSource : public WeightSource {
 public:
  explicit InitSource(uint64_t seed) : seed_(seed) {}

  bool has(const std::string&) const override { return true; }
  Shape shape(const std::string&) const override { return {}; }
  std::vector<std::string> names() const override { return {}; }
  std::string describe() const override { return "fresh weights (seed " + std::to_string(seed_) + ")"; }

  Tensor load(const std::string& name, const Shape& shape) const override {
    auto ends_with = [&](const std::string& s) {
      return name.size() >= s.size() && name.compare(name.size() - s.size(), s.size(), s) == 0;
    };
    if (ends_with("bias")) return Tensor(shape);
    if (ends_with("token_embedding.weight")) return normal(name, shape, 0.02);
    if (ends_with("position_embedding.weight")) return normal(name, shape, 0.01);
    if (shape.size() == 1) return Tensor::full(shape, 1.0f);  // GroupNorm / LayerNorm scale
    int64_t fan_in = 1;
    for (size_t i = 1; i < shape.size(); ++i) fan_in *= shape[i];
    return normal(name, shape, 1.0 / std::sqrt(3.0 * double(fan_in)));
  }

 private:
  // N(0, std^2) from an LdmGenerator seeded by (seed, FNV-1a 64 of the name).
  Tensor normal(const std::string& name, const Shape& shape, double std) const {
    uint64_t h = 1469598103934665603ull;
    for (unsigned char c : name) h = (h ^ c) * 1099511628211ull;
    LdmGenerator gen(seed_ ^ h);
    Tensor t = gen.randn(shape);
    t.vec() *= float(std);
    return t;
  }

  uint64_t seed_;
};

}  // namespace ldm
