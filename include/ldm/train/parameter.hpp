// Parameter: one trainable tensor and its gradient, named as in the diffusers checkpoint.
//
// Every block and model has parameters(prefix, out), which appends its Parameters in the order
// and with the names its load() reads them, so an optimizer (include/ldm/train/) can step every
// weight and save gradients and its own state under the checkpoint names.
#pragma once
#include <string>
#include <vector>

#include "ldm/core/tensor.hpp"

namespace ldm {

struct Parameter {
  std::string name;  // the diffusers key, e.g. "down_blocks.0.resnets.0.conv1.weight"
  Tensor* value;     // the weight the forward reads
  Tensor* grad;      // same shape; backward accumulates into it
};

}  // namespace ldm
