// Moving ldm::Tensor (host, float32) to and from the GPU.
#pragma once
#include "ldm/core/tensor.hpp"
#include "ldm/cuda/device_tensor.hpp"

namespace ldm::cuda {

inline DeviceTensor to_device(const Tensor& t, DType dtype = DType::f32) { return upload(t.data(), t.shape(), dtype); }

inline Tensor to_host(const DeviceTensor& t) {
  Tensor h = Tensor::empty(t.shape());
  download(t, h.data());
  return h;
}

}  // namespace ldm::cuda
