// Parameter gradients: a tensor beside each weight (grad_weight beside weight), as torch's
// .grad. The first backward that reaches a parameter allocates its gradient as zeros; every
// backward then adds (+=) to it, so a layer called twice in one forward gets the sum of both
// calls' gradients, and a training step zeroes (or drops) the gradients between steps.
#pragma once
#include "ldm/core/tensor.hpp"

namespace ldm {

// g, allocated as zeros of `shape` if it is not yet; an existing g must have that shape.
inline Tensor& grad_buffer(Tensor& g, const Shape& shape) {
  if (!g.defined()) g = Tensor(shape);
  LDM_CHECK(g.shape() == shape, "gradient buffer ", g.shape_str(), " does not match its parameter ", shape_str(shape),
            "; a layer's shape changed between backward passes without zeroing its gradients");
  return g;
}

}  // namespace ldm
