// DeviceTensor: a contiguous array in GPU memory with a shape and an element type.
//
// The GPU twin of ldm::Tensor: same layout (NCHW images, [B, L, C] sequences, row-major),
// shared storage when copied, views by reshape/slice0. Elements are float32, float16 or
// bfloat16 (DType); kernels accumulate in float32 whatever the storage type. This header is
// plain C++ (no CUDA headers), so host code compiled by g++ can hold device tensors; the
// functions declared here are implemented in kernels/runtime.cu.
//
// Build without nvcc: LDM_WITH_CUDA is undefined and nothing here may be called (the CUDA
// tests, benchmarks and `--device cuda` are compiled out).
#pragma once
#include <cstdint>
#include <memory>
#include <string>

#include "ldm/core/error.hpp"
#include "ldm/core/shape.hpp"

namespace ldm::cuda {

enum class DType { f32, f16, bf16 };

inline int64_t dtype_bytes(DType t) { return t == DType::f32 ? 4 : 2; }
inline const char* dtype_name(DType t) { return t == DType::f32 ? "fp32" : t == DType::f16 ? "fp16" : "bf16"; }
// "fp32" | "fp16" | "bf16" (also "float32", "float16", "bfloat16").
DType parse_dtype(const std::string& name);

// True when the CUDA runtime sees at least one device (false on a machine without a GPU).
bool available();
// "NVIDIA H200 (sm_90, 139.8 GiB)", or why there is none.
std::string device_description();
void synchronize();

// GPU memory currently held by this process's allocator and the peak since the last reset.
int64_t memory_allocated_bytes();
int64_t peak_memory_allocated_bytes();
void reset_peak_memory();

// Raw device memory (cudaMalloc'ed, freed by the deleter).
std::shared_ptr<void> device_alloc(int64_t bytes);

class DeviceTensor {
 public:
  DeviceTensor() = default;
  static DeviceTensor empty(Shape shape, DType dtype = DType::f32);
  static DeviceTensor zeros(Shape shape, DType dtype = DType::f32);

  void* data() { return data_; }
  const void* data() const { return data_; }
  template <typename T>
  T* ptr() {
    return static_cast<T*>(data_);
  }
  template <typename T>
  const T* ptr() const {
    return static_cast<const T*>(data_);
  }

  const Shape& shape() const { return shape_; }
  DType dtype() const { return dtype_; }
  int ndim() const { return int(shape_.size()); }
  int64_t dim(int i) const {
    const int n = ndim();
    LDM_CHECK(i >= -n && i < n, "dim(", i, ") out of range for a ", n, "-d tensor ", ldm::shape_str(shape_));
    return shape_[size_t(i < 0 ? i + n : i)];
  }
  int64_t numel() const { return data_ ? numel_of(shape_) : 0; }
  int64_t bytes() const { return numel() * dtype_bytes(dtype_); }
  bool defined() const { return data_ != nullptr; }
  std::string shape_str() const { return ldm::shape_str(shape_); }

  DeviceTensor reshape(Shape shape) const;  // same storage; one dimension may be -1
  DeviceTensor slice0(int64_t begin, int64_t end) const;  // rows [begin, end) of dimension 0

 private:
  std::shared_ptr<void> storage_;
  void* data_ = nullptr;
  Shape shape_;
  DType dtype_ = DType::f32;
};

// Host <-> device copies of float32 host memory, converting to/from the device dtype.
DeviceTensor upload(const float* host, const Shape& shape, DType dtype = DType::f32);
void download(const DeviceTensor& t, float* host);  // host holds t.numel() floats
DeviceTensor to_dtype(const DeviceTensor& t, DType dtype);  // a converted copy (or t itself)

}  // namespace ldm::cuda
