// Tensor: a contiguous float32 array with a shape, in PyTorch order.
//
// The one layout of the library is NCHW for images ([batch, channels, height, width])
// and [batch, tokens, features] for sequences, row-major, last index fastest, exactly
// as torch.Tensor.contiguous(). A Tensor shares its storage when copied (like a
// torch.Tensor); clone() makes an independent copy. A view (wrap) can point into memory
// owned by something else, e.g. an mmap-ed safetensors file, and keeps its owner alive.
#pragma once
#include <Eigen/Core>
#include <algorithm>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <initializer_list>
#include <memory>
#include <string>
#include <vector>

#include "ldm/core/error.hpp"
#include "ldm/core/shape.hpp"

namespace ldm {

// Row-major Eigen views over tensor memory, for matrix work.
using RowMatrix = Eigen::Matrix<float, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;
using MatrixMap = Eigen::Map<RowMatrix>;
using ConstMatrixMap = Eigen::Map<const RowMatrix>;
using VectorMap = Eigen::Map<Eigen::VectorXf>;
using ConstVectorMap = Eigen::Map<const Eigen::VectorXf>;

// 64-byte aligned float buffer (one AVX-512 register / cache line); n <= kMaxNumel (a checked
// count), so the byte size cannot wrap.
inline std::shared_ptr<float> alloc_floats(int64_t n) {
  size_t bytes = ((size_t(std::max<int64_t>(n, 1)) * sizeof(float) + 63) / 64) * 64;
  void* p = std::aligned_alloc(64, bytes);
  LDM_CHECK(p, "out of memory allocating ", bytes / (1 << 20), " MiB");
  return std::shared_ptr<float>(static_cast<float*>(p), [](float* q) { std::free(q); });
}

class Tensor {
 public:
  Tensor() = default;
  // Zero-filled, owning.
  // Every constructor counts its elements with numel_of, which refuses negative and absurd shapes.
  explicit Tensor(Shape shape) : shape_(std::move(shape)) {
    storage_ = alloc_floats(numel_of(shape_));
    data_ = storage_.get();
    std::memset(data_, 0, size_t(numel()) * sizeof(float));
  }
  Tensor(std::initializer_list<int64_t> shape) : Tensor(Shape(shape)) {}

  // Uninitialised, owning (for outputs every element of which is written).
  static Tensor empty(Shape shape) {
    Tensor t;
    t.shape_ = std::move(shape);
    t.storage_ = alloc_floats(numel_of(t.shape_));
    t.data_ = t.storage_.get();
    return t;
  }
  static Tensor full(Shape shape, float value) {
    Tensor t = empty(std::move(shape));
    std::fill(t.data_, t.data_ + t.numel(), value);
    return t;
  }
  static Tensor from(Shape shape, const std::vector<float>& values) {
    LDM_CHECK(int64_t(values.size()) == numel_of(shape), "Tensor::from: ", values.size(),
              " values do not fill shape ", ldm::shape_str(shape));
    Tensor t = empty(std::move(shape));
    std::copy(values.begin(), values.end(), t.data_);
    return t;
  }
  // A view of memory owned elsewhere; `owner` (may be null) is kept alive with it.
  static Tensor wrap(float* data, Shape shape, std::shared_ptr<void> owner = nullptr) {
    Tensor t;
    t.shape_ = std::move(shape);
    numel_of(t.shape_);
    t.storage_ = std::shared_ptr<float>(std::move(owner), data);
    t.data_ = data;
    return t;
  }

  float* data() { return data_; }
  const float* data() const { return data_; }
  float* begin() { return data_; }
  float* end() { return data_ + numel(); }
  const float* begin() const { return data_; }
  const float* end() const { return data_ + numel(); }
  float& operator[](int64_t i) { return data_[i]; }
  float operator[](int64_t i) const { return data_[i]; }

  const Shape& shape() const { return shape_; }
  int ndim() const { return int(shape_.size()); }
  // dim(-1) is the last dimension, as in PyTorch.
  int64_t dim(int i) const {
    int n = ndim();
    LDM_CHECK(i >= -n && i < n, "dim(", i, ") out of range for a ", n, "-d tensor ", ldm::shape_str(shape_));
    return shape_[size_t(i < 0 ? i + n : i)];
  }
  int64_t numel() const { return data_ ? numel_of(shape_) : 0; }
  bool defined() const { return data_ != nullptr; }
  std::string shape_str() const { return ldm::shape_str(shape_); }

  // Same storage, new shape; one dimension may be -1.
  Tensor reshape(Shape shape) const {
    shape = infer_shape(std::move(shape), numel(), shape_str());
    Tensor t = *this;
    t.shape_ = std::move(shape);
    return t;
  }
  // Rows [begin, end) of dimension 0, sharing storage (e.g. one image of a batch).
  Tensor slice0(int64_t begin, int64_t end) const {
    LDM_CHECK(ndim() >= 1 && begin >= 0 && begin <= end && end <= shape_[0], "slice0: [", begin, ", ", end,
              ") out of range for ", shape_str());
    Tensor t = *this;
    t.shape_[0] = end - begin;
    t.data_ = data_ + begin * (numel() / std::max<int64_t>(shape_[0], 1));
    return t;
  }
  Tensor clone() const {
    Tensor t = empty(shape_);
    std::copy(begin(), end(), t.data_);
    return t;
  }

  // The tensor seen as a rows x cols row-major matrix (cols = last dimension by default).
  MatrixMap matrix(int64_t rows, int64_t cols) {
    LDM_CHECK(rows * cols == numel(), "matrix: ", rows, "x", cols, " does not match ", shape_str());
    return MatrixMap(data_, rows, cols);
  }
  ConstMatrixMap matrix(int64_t rows, int64_t cols) const {
    LDM_CHECK(rows * cols == numel(), "matrix: ", rows, "x", cols, " does not match ", shape_str());
    return ConstMatrixMap(data_, rows, cols);
  }
  MatrixMap matrix() { return matrix(numel() / dim(-1), dim(-1)); }
  ConstMatrixMap matrix() const { return matrix(numel() / dim(-1), dim(-1)); }
  VectorMap vec() { return VectorMap(data_, numel()); }
  ConstVectorMap vec() const { return ConstVectorMap(data_, numel()); }

 private:
  std::shared_ptr<float> storage_;
  float* data_ = nullptr;
  Shape shape_;
};

inline void check_shape(const Tensor& t, const Shape& expected, const char* what) {
  LDM_CHECK(t.shape() == expected, what, ": expected shape ", shape_str(expected), ", got ", t.shape_str());
}

}  // namespace ldm
