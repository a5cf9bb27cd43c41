// The GPU layers: Linear, Conv2d, GroupNorm, LayerNorm, twins of include/ldm/nn/{linear,conv2d,
// group_norm,layer_norm}.hpp with the same members, holding DeviceTensors.
//
// How a GPU module gets its weights: the CPU twin is loaded with the CPU code (the same
// WeightStore, the same names and shapes, every problem reported by w.finish()), then its
// tensors are uploaded, converted to the chosen DType on the way. So the checkpoint layout is
// written down once, in the CPU modules, and every GPU module has two ways in:
//   upload(const ldm::X& cpu, DType)              from a CPU module already loaded
//   load(WeightStore& w, prefix, sizes..., DType)  load_via_cpu: ldm::X cpu; cpu.load(w, prefix, sizes...); upload(cpu)
// Every parameter (matrices, biases, norm scales and shifts) is stored in the model's DType,
// the activations' DType; the ops accumulate in float32 whatever the storage (cuda/ops.hpp).
#pragma once
#include <optional>
#include <string>
#include <vector>

#include "ldm/core/weights.hpp"
#include "ldm/cuda/ops.hpp"
#include "ldm/cuda/transfer.hpp"
#include "ldm/nn/conv2d.hpp"
#include "ldm/nn/group_norm.hpp"
#include "ldm/nn/layer_norm.hpp"
#include "ldm/nn/linear.hpp"

namespace ldm::cuda {

// A host tensor on the GPU in `dtype`; an undefined tensor (an absent bias) stays undefined.
inline DeviceTensor upload_param(const Tensor& t, DType dtype) {
  return t.defined() ? to_device(t, dtype) : DeviceTensor();
}

// The CPU twin `Cpu` of `gpu`, loaded by the CPU code with the same arguments, then uploaded.
template <typename Cpu, typename Gpu, typename... Args>
void load_via_cpu(Gpu& gpu, DType dtype, WeightStore& w, const std::string& prefix, const Args&... args) {
  Cpu cpu;
  cpu.load(w, prefix, args...);
  gpu.upload(cpu, dtype);
}

// Uploads of the containers the CPU blocks use: an optional layer, a list of layers.
template <typename Gpu, typename Cpu>
void upload_optional(std::optional<Gpu>& gpu, const std::optional<Cpu>& cpu, DType dtype) {
  gpu.reset();
  if (cpu) gpu.emplace().upload(*cpu, dtype);
}
template <typename Gpu, typename Cpu>
void upload_all(std::vector<Gpu>& gpu, const std::vector<Cpu>& cpu, DType dtype) {
  gpu.assign(cpu.size(), Gpu{});
  for (size_t i = 0; i < cpu.size(); ++i) gpu[i].upload(cpu[i], dtype);
}

struct Linear {
  DeviceTensor weight;  // [out, in]
  DeviceTensor bias;    // [out], or undefined
  int64_t in_features = 0, out_features = 0;

  void upload(const ldm::Linear& m, DType dtype) {
    weight = upload_param(m.weights(), dtype);
    bias = upload_param(m.bias, dtype);
    in_features = m.in_features;
    out_features = m.out_features;
  }
  void load(WeightStore& w, const std::string& prefix, int64_t in, int64_t out, bool has_bias, DType dtype) {
    load_via_cpu<ldm::Linear>(*this, dtype, w, prefix, in, out, has_bias);
  }

  // [..., in] -> [..., out]
  DeviceTensor forward(const DeviceTensor& x) const {
    LDM_CHECK(weight.defined(), "cuda::Linear: forward called before load()");
    LDM_CHECK(x.ndim() >= 1 && x.dim(-1) == in_features, "cuda::Linear: expected last dimension ", in_features,
              ", got input ", x.shape_str());
    return linear(x, weight, bias);
  }
};

struct Conv2d {
  DeviceTensor weight;  // [out, in, kh, kw]
  DeviceTensor bias;    // [out], or undefined
  int stride = 1;
  Padding padding;

  void upload(const ldm::Conv2d& m, DType dtype) {
    weight = upload_param(m.weights(), dtype);
    bias = upload_param(m.bias, dtype);
    stride = m.stride;
    padding = m.padding;
  }
  void load(WeightStore& w, const std::string& prefix, int64_t in, int64_t out, int64_t kernel, int stride_, int pad,
            bool has_bias, DType dtype) {
    load_via_cpu<ldm::Conv2d>(*this, dtype, w, prefix, in, out, kernel, stride_, pad, has_bias);
  }
  int64_t in_channels() const { return weight.dim(1); }
  int64_t out_channels() const { return weight.dim(0); }

  // [B, in, H, W] -> [B, out, Ho, Wo]
  DeviceTensor forward(const DeviceTensor& x) const {
    LDM_CHECK(weight.defined(), "cuda::Conv2d: forward called before load()");
    LDM_CHECK(x.ndim() == 4 && x.dim(1) == in_channels(), "cuda::Conv2d: weight ", weight.shape_str(),
              " expects [B, ", in_channels(), ", H, W], got ", x.shape_str());
    return conv2d(x, weight, bias, stride, padding);
  }
};

struct GroupNorm {
  DeviceTensor weight, bias;  // [C]
  int64_t groups = 32;
  float eps = 1e-5f;

  void upload(const ldm::GroupNorm& m, DType dtype) {
    weight = upload_param(m.weight, dtype);
    bias = upload_param(m.bias, dtype);
    groups = m.groups;
    eps = m.eps;
  }
  void load(WeightStore& w, const std::string& prefix, int64_t channels, int64_t groups_, float eps_, DType dtype) {
    load_via_cpu<ldm::GroupNorm>(*this, dtype, w, prefix, channels, groups_, eps_);
  }

  // [B, C, ...] -> same; fuse_silu: SiLU of the result in the same kernel
  DeviceTensor forward(const DeviceTensor& x, bool fuse_silu = false) const {
    LDM_CHECK(weight.defined(), "cuda::GroupNorm: forward called before load()");
    LDM_CHECK(x.ndim() >= 2 && x.dim(1) == weight.dim(0), "cuda::GroupNorm: expected ", weight.dim(0),
              " channels, got ", x.shape_str());
    return group_norm(x, weight, bias, groups, eps, fuse_silu);
  }
};

struct LayerNorm {
  DeviceTensor weight, bias;  // [D]
  float eps = 1e-5f;

  void upload(const ldm::LayerNorm& m, DType dtype) {
    weight = upload_param(m.weight, dtype);
    bias = upload_param(m.bias, dtype);
    eps = m.eps;
  }
  void load(WeightStore& w, const std::string& prefix, int64_t dim, float eps_, DType dtype) {
    load_via_cpu<ldm::LayerNorm>(*this, dtype, w, prefix, dim, eps_);
  }

  // [..., D] -> same
  DeviceTensor forward(const DeviceTensor& x) const {
    LDM_CHECK(weight.defined(), "cuda::LayerNorm: forward called before load()");
    LDM_CHECK(x.ndim() >= 1 && x.dim(-1) == weight.dim(0), "cuda::LayerNorm: expected last dimension ",
              weight.dim(0), ", got ", x.shape_str());
    return layer_norm(x, weight, bias, eps);
  }
};

}  // namespace ldm::cuda
