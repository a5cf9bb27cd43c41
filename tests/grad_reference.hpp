// Test helpers for the block and model backwards: the reference file of
// scripts/make_grad_reference_models.py (float64 torch autograd of diffusers / transformers on
// synthetic weights), and the check of every parameter's gradient against it.
#pragma once
#include <algorithm>
#include <cmath>
#include <set>
#include <string>
#include <vector>

#include "ldm/core/weights.hpp"
#include "ldm/train/parameter.hpp"
#include "reference.hpp"
#include "synthetic.hpp"

namespace ldm::test {

constexpr double kBlockOutTol = 1e-5, kBlockGradTol = 1e-4;  // ../shared/README.md; issue 11
constexpr double kSymmetryTol = 1e-5;  // a zero-by-symmetry gradient, relative to the largest one

inline const Reference& grad_ref() {
  static const Reference r = [] {
    const std::string f = __FILE__;
    return Reference(f.substr(0, f.rfind('/')) + "/data/grad_blocks.safetensors");
  }();
  return r;
}

// The diffusers / transformers config of case `c` of the reference.
inline const nlohmann::json& grad_config(const std::string& c) { return grad_ref().meta(c).at("config"); }

// A tensor of case `c` of the reference.
inline Tensor get(const std::string& c, const std::string& name) { return grad_ref().get(c, name); }

// Gradients that are zero whatever the weights: the key bias of an attention (softmax ignores
// a constant added to every score of a row, and q . b_k is one), and, where a GroupNorm has one
// channel per group (the tiny configs' 32 channels in 32 groups), whatever adds a per-channel
// constant before it (a resnet's conv1 bias and time embedding projection): the norm removes
// it. The reference has them at rounding level (float64; the VAE attention's upcast_softmax
// makes diffusers take its softmax in float32: 2e-8 of the largest); ours must be within 1e-5.
inline bool zero_by_symmetry(const std::string& name, double ref_norm, double largest) {
  auto ends = [&](const std::string& s) {
    return name.size() >= s.size() && name.compare(name.size() - s.size(), s.size(), s) == 0;
  };
  return ends("to_k.bias") || ends("k_proj.bias") || ref_norm <= 1e-10 * largest;
}

// Every parameter's gradient against "<c>.grad.<name>" (relative L2 <= 1e-4); the names must be
// exactly the reference's (those of the diffusers / transformers module). Returns the worst error.
inline double check_parameter_grads(const std::string& c, const std::vector<Parameter>& params) {
  const auto& names = grad_ref().meta(c).at("parameters");
  std::set<std::string> want(names.begin(), names.end()), got;
  for (const auto& p : params) got.insert(p.name);
  {
    INFO(c << ": parameter names differ from the reference's");
    REQUIRE(got == want);
  }
  double largest = 0, worst = 0;
  for (const auto& p : params) largest = std::max(largest, double(grad_ref().get(c, "grad." + p.name).vec().norm()));
  int symmetric = 0;
  for (const auto& p : params) {
    const Tensor ref = grad_ref().get(c, "grad." + p.name);
    const double ref_norm = ref.vec().norm();
    if (zero_by_symmetry(p.name, ref_norm, largest)) {
      const double n = p.grad->vec().norm();
      INFO(c << ".grad." << p.name << ": norm " << n << " (reference " << ref_norm << "), largest gradient norm "
             << largest);
      CHECK(n <= kSymmetryTol * largest);
      ++symmetric;
      continue;
    }
    // in the checkpoint's shape, as ldm eval and the trainers write it (a Linear run as a 1x1 conv: [O, C])
    worst = std::max(worst, require_close(p.as_stored(*p.grad), ref, kBlockGradTol, c + ".grad." + p.name));
  }
  std::printf("%-20s %zu parameters, worst gradient rel L2 %.2e (%d zero by symmetry)\n", c.c_str(), params.size(),
              worst, symmetric);
  return worst;
}

}  // namespace ldm::test
