// Shape: the dimensions of a tensor, PyTorch order (NCHW for images, [B, L, C] for sequences).
// Kept apart from Tensor so that code without Eigen (the CUDA kernels) can share it.
#pragma once
#include <cstdint>
#include <string>
#include <vector>

#include "ldm/core/error.hpp"

namespace ldm {

using Shape = std::vector<int64_t>;

// The most elements a tensor may have: 2^40 (4 TiB of float32) is beyond any model and far
// from int64 overflow, so that a byte size computed from a checked count cannot wrap either.
constexpr int64_t kMaxNumel = int64_t(1) << 40;

inline std::string shape_str(const Shape& s) {
  std::string r = "[";
  for (size_t i = 0; i < s.size(); ++i) r += (i ? ", " : "") + std::to_string(s[i]);
  return r + "]";
}

namespace detail {
[[noreturn]] inline void fail_numel(const Shape& s, const char* what) {
  for (int64_t d : s) LDM_CHECK(d >= 0, what, " has a negative dimension in shape ", shape_str(s));
  LDM_FAIL(what, " has shape ", shape_str(s), ": more than 2^40 elements, an absurd size (a corrupt file?)");
}
}  // namespace detail

// The element count of `s`, multiplied with overflow checks: a negative dimension or more than
// kMaxNumel elements is an error naming `what` (e.g. "tensor 'latent' in 'in.safetensors'").
// (A bound checked before each product rather than __builtin_mul_overflow: nvcc compiles this too.)
inline int64_t checked_numel(const Shape& s, const char* what) {
  int64_t n = 1;
  for (int64_t d : s) {
    if (d < 0 || d > kMaxNumel || (d > 0 && n > kMaxNumel / d)) detail::fail_numel(s, what);
    n *= d;  // <= kMaxNumel
  }
  return n;
}
inline int64_t checked_numel(const Shape& s, const std::string& what) { return checked_numel(s, what.c_str()); }

// The byte size of `s` in elements of `element_size` bytes (cannot overflow: checked count x 8 < 2^44).
inline uint64_t checked_bytes(const Shape& s, size_t element_size, const std::string& what) {
  return uint64_t(checked_numel(s, what)) * element_size;
}

inline int64_t numel_of(const Shape& s) { return checked_numel(s, "a tensor"); }

// `shape` with its one -1 (if any) replaced so that it holds `numel` elements (reshape's rule);
// throws unless it then holds exactly that many. `from` (the old shape) goes in the message.
inline Shape infer_shape(Shape shape, int64_t numel, const std::string& from) {
  int64_t known = 1, infer = -1;
  for (size_t i = 0; i < shape.size(); ++i) {
    if (shape[i] == -1) {
      LDM_CHECK(infer < 0, "reshape: only one dimension may be -1");
      infer = int64_t(i);
    } else {
      LDM_CHECK(shape[i] >= 0 && (shape[i] == 0 || known <= kMaxNumel / shape[i]), "reshape: cannot view ", from,
                " as ", shape_str(shape));
      known *= shape[i];
    }
  }
  if (infer >= 0) shape[size_t(infer)] = known ? numel / known : 0;
  LDM_CHECK(numel_of(shape) == numel, "reshape: cannot view ", from, " as ", shape_str(shape));
  return shape;
}

}  // namespace ldm
