// Parameter: one trainable tensor and its gradient, named as in the diffusers checkpoint.
//
// Every layer, block and model has parameters(prefix, out), which appends its Parameters with
// the names its load() reads them under, so an optimizer (include/ldm/train/) can step every
// weight and save gradients and its own state under the checkpoint names:
//   std::vector<Parameter> p = parameters_of(unet);   // "conv_in.weight", "conv_in.bias", ...
#pragma once
#include <string>
#include <utility>
#include <vector>

#include "ldm/core/tensor.hpp"
#include "ldm/nn/grad.hpp"

namespace ldm {

struct Parameter {
  std::string name;  // the diffusers key, e.g. "down_blocks.0.resnets.0.conv1.weight"
  Tensor* value;     // the weight the forward reads
  Tensor* grad;      // same shape; backward accumulates into it
  // The checkpoint's shape where it differs from the value's, else empty: a Linear run as a 1x1
  // convolution (SD2's use_linear_projection) is stored [O, C] and used [O, C, 1, 1].
  Shape stored;

  Parameter(std::string name_, Tensor* value_, Tensor* grad_, Shape stored_ = {})
      : name(std::move(name_)), value(value_), grad(grad_), stored(std::move(stored_)) {}

  Shape checkpoint_shape() const { return stored.empty() ? value->shape() : stored; }
  // The value, its gradient, an optimizer moment or an average, viewed in the checkpoint's shape
  // (shares storage): what every file written under the parameter's name holds.
  Tensor as_stored(const Tensor& t) const { return stored.empty() ? t : t.reshape(stored); }
};

// Appends (name, value, grad), allocating grad as zeros if no backward has reached it yet, so
// that every Parameter an optimizer sees has a gradient of its value's shape. `stored`: the
// checkpoint's shape, if not the value's.
inline void add_parameter(std::vector<Parameter>& out, const std::string& name, Tensor& value, Tensor& grad,
                          const Shape& stored = {}) {
  LDM_CHECK(value.defined(), "parameter ", name, " has no float32 value (a model loaded with fp16 weights ",
            "cannot be trained; load it without keep_fp16)");
  LDM_CHECK(stored.empty() || checked_numel(stored, name) == value.numel(), "parameter ", name, ": checkpoint shape ",
            shape_str(stored), " does not hold its ", value.shape_str());
  grad_buffer(grad, value.shape());
  out.push_back({name, &value, &grad, stored});
}

// Every parameter of a model (or block), named as in its checkpoint under `prefix`.
template <typename Module>
std::vector<Parameter> parameters_of(Module& m, const std::string& prefix = "") {
  std::vector<Parameter> out;
  m.parameters(prefix, out);
  return out;
}

// The parameters whose names start with one of `prefixes` (a VAE's encoder half:
// AutoencoderKL::encoder_prefixes()).
inline std::vector<Parameter> parameters_under(const std::vector<Parameter>& all,
                                               const std::vector<std::string>& prefixes) {
  std::vector<Parameter> r;
  for (const auto& p : all)
    for (const std::string& s : prefixes)
      if (p.name.rfind(s, 0) == 0) r.push_back(p);
  return r;
}

// Gives every value storage of its own, for an optimizer to write: weights loaded from a float32
// file are views of its read-only mapping (SafeTensorsSource). Fine-tuning loads them so.
inline void make_writable(std::vector<Parameter>& params) {
  for (auto& p : params) *p.value = p.value->clone();
}

// Sets every gradient to zero (between training steps: backwards accumulate).
inline void zero_grad(std::vector<Parameter>& params) {
  for (auto& p : params) p.grad->vec().setZero();
}

}  // namespace ldm
