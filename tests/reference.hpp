// Test helpers: find ../shared/reference, read a reference case, compare tensors.
//
// Comparison is two-part (DESIGN.md point 7): relative L2 over the whole tensor,
// ||a - r|| / ||r||, against the tolerance of ../shared/README.md, and, on failure,
// the first mismatching elements and the largest difference, so a failure says where.
#pragma once
#include <catch2/catch.hpp>
#include <cmath>
#include <cstring>
#include <nlohmann/json.hpp>
#include <random>
#include <sstream>
#include <string>

#include "ldm/core/safetensors.hpp"
#include "ldm/core/tensor.hpp"
#include "skip.hpp"

namespace ldm::test {

// ../shared/reference/FILE ($LDM_SHARED, else the folder CMake saw: core/shared_dir.hpp); "" when
// the reference folder is absent.
inline std::string reference_path(const std::string& file) {
  const std::string d = shared_path("reference");
  return d.empty() ? std::string() : d + "/" + file;
}

// A reference file with its case metadata ("cases" JSON in __metadata__).
struct Reference {
  SafeTensors file;
  nlohmann::json cases;
  explicit Reference(const std::string& path) : file(path) {
    auto it = file.metadata().find("cases");
    cases = it == file.metadata().end() ? nlohmann::json::object() : nlohmann::json::parse(it->second);
  }
  Tensor get(const std::string& case_name, const std::string& tensor) const { return file.load(case_name + "." + tensor); }
  const nlohmann::json& meta(const std::string& case_name) const { return cases.at(case_name); }
};

// `path_var` = reference_path(file), or the calling test returns as skipped.
#define LDM_REQUIRE_REFERENCE(path_var, file)                 \
  LDM_REQUIRE_SHARED(path_var##_reference_dir, "reference")  \
  const std::string path_var = path_var##_reference_dir + "/" + (file);

inline double rel_l2(const Tensor& a, const Tensor& r) {
  double num = 0, den = 0;
  for (int64_t i = 0; i < r.numel(); ++i) {
    double d = double(a[i]) - double(r[i]);
    num += d * d;
    den += double(r[i]) * double(r[i]);
  }
  return den > 0 ? std::sqrt(num / den) : std::sqrt(num);
}

// Values uniform in [lo, hi) from a seed (std::mt19937).
inline Tensor random_tensor(Shape shape, unsigned seed, float lo = -1.0f, float hi = 1.0f) {
  Tensor t = Tensor::empty(std::move(shape));
  std::mt19937 gen(seed);
  std::uniform_real_distribution<float> u(lo, hi);
  for (float& v : t) v = u(gen);
  return t;
}

// Bit for bit the same (shape and every float).
inline bool same_bits(const Tensor& a, const Tensor& b) {
  return a.shape() == b.shape() && std::memcmp(a.data(), b.data(), size_t(a.numel()) * sizeof(float)) == 0;
}

inline double max_abs_diff(const Tensor& a, const Tensor& r) {
  double m = 0;
  for (int64_t i = 0; i < r.numel(); ++i) m = std::max(m, std::fabs(double(a[i]) - double(r[i])));
  return m;
}

// Where two tensors differ: the first few elements outside atol + rtol*|ref|, and the max.
inline std::string mismatch_report(const Tensor& a, const Tensor& r, double atol = 1e-5, double rtol = 1e-4) {
  std::ostringstream os;
  int shown = 0;
  int64_t argmax = 0;
  double maxd = -1;
  for (int64_t i = 0; i < r.numel(); ++i) {
    double d = std::fabs(double(a[i]) - double(r[i]));
    if (d > maxd) maxd = d, argmax = i;
    if (d > atol + rtol * std::fabs(r[i]) && shown < 5) {
      os << "  [" << i << "] got " << a[i] << " expected " << r[i] << "\n";
      ++shown;
    }
  }
  os << "  max |diff| " << maxd << " at [" << argmax << "] (got " << a[argmax] << ", expected " << r[argmax] << ")";
  return os.str();
}

// REQUIREs same shape and relative L2 <= tol; prints the error reached either way.
inline double require_close(const Tensor& got, const Tensor& ref, double tol, const std::string& what) {
  INFO(what << ": got shape " << got.shape_str() << ", reference " << ref.shape_str());
  REQUIRE(got.shape() == ref.shape());
  const double e = rel_l2(got, ref);
  UNSCOPED_INFO(what << ": relative L2 " << e << " (tolerance " << tol << ")");
  if (!(e <= tol)) FAIL(what << ": relative L2 " << e << " > " << tol << "\n" << mismatch_report(got, ref));
  std::printf("  %-40s rel L2 %.3e  (tol %.0e)\n", what.c_str(), e, tol);
  return e;
}

}  // namespace ldm::test
