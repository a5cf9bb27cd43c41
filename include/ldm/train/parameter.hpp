// A trainable parameter as the optimizer sees it: its checkpoint name, its weight and its
// gradient (nn/grad.hpp), both owned by the layer.
#pragma once
#include <string>

#include "ldm/core/tensor.hpp"

namespace ldm {

struct Parameter {
  std::string name;  // the diffusers checkpoint key, e.g. "down_blocks.0.resnets.0.conv1.weight"
  Tensor* value;     // the weight, updated in place by the optimizer
  Tensor* grad;      // its gradient; undefined when no gradient reached it this step
};

}  // namespace ldm
