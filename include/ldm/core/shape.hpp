// Shape: the dimensions of a tensor, PyTorch order (NCHW for images, [B, L, C] for sequences).
// Kept apart from Tensor so that code without Eigen (the CUDA kernels) can share it.
#pragma once
#include <cstdint>
#include <string>
#include <vector>

#include "ldm/core/error.hpp"

namespace ldm {

using Shape = std::vector<int64_t>;

inline int64_t numel_of(const Shape& s) {
  int64_t n = 1;
  for (int64_t d : s) n *= d;
  return n;
}

inline std::string shape_str(const Shape& s) {
  std::string r = "[";
  for (size_t i = 0; i < s.size(); ++i) r += (i ? ", " : "") + std::to_string(s[i]);
  return r + "]";
}

// `shape` with its one -1 (if any) replaced so that it holds `numel` elements (reshape's rule);
// throws unless it then holds exactly that many. `from` (the old shape) goes in the message.
inline Shape infer_shape(Shape shape, int64_t numel, const std::string& from) {
  int64_t known = 1, infer = -1;
  for (size_t i = 0; i < shape.size(); ++i) {
    if (shape[i] == -1) {
      LDM_CHECK(infer < 0, "reshape: only one dimension may be -1");
      infer = int64_t(i);
    } else {
      known *= shape[i];
    }
  }
  if (infer >= 0) shape[size_t(infer)] = known ? numel / known : 0;
  LDM_CHECK(numel_of(shape) == numel, "reshape: cannot view ", from, " as ", shape_str(shape));
  return shape;
}

}  // namespace ldm
