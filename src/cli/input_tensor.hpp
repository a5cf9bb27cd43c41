// The input tensors of `ldm eval` and `ldm train-step`, read from a user's safetensors file and
// checked before any model is loaded, with errors that name the file and the tensor.
#pragma once
#include <string>

#include "ldm/core/safetensors.hpp"
#include "ldm/core/tensor.hpp"

namespace ldm::cli {

// Tensor `name` of f (integers cast to float32), `ndim`-d with no empty dimension and only
// finite values; `what` says what it should hold.
inline Tensor input(const SafeTensors& f, const std::string& name, int ndim, const std::string& what) {
  LDM_CHECK(f.contains(name), "'", f.path(), "' has no tensor '", name, "' (", what, ")");
  Tensor t = f.load(name);
  LDM_CHECK(t.ndim() == ndim, "tensor '", name, "' in '", f.path(), "' should be ", ndim, "-d (", what, "), got ",
            t.shape_str());
  for (int i = 0; i < ndim; ++i)
    LDM_CHECK(t.dim(i) > 0, "tensor '", name, "' in '", f.path(), "' is empty: ", t.shape_str(), " (", what, ")");
  LDM_CHECK(t.vec().allFinite(), "tensor '", name, "' in '", f.path(), "' holds NaN or infinite values");
  return t;
}

// As input, and of exactly `shape` (a gradient has the shape of what it is the gradient of).
inline Tensor input_shaped(const SafeTensors& f, const std::string& name, const Shape& shape, const std::string& what) {
  Tensor t = input(f, name, int(shape.size()), what);
  LDM_CHECK(t.shape() == shape, "tensor '", name, "' in '", f.path(), "' must be ", shape_str(shape), " (", what,
            "), got ", t.shape_str());
  return t;
}

}  // namespace ldm::cli
