// Test helpers: find ../shared/reference, read a reference case, compare tensors.
//
// Comparison is two-part (DESIGN.md point 7): relative L2 over the whole tensor,
// ||a - r|| / ||r||, against the tolerance of ../shared/README.md, and, on failure,
// the first mismatching elements and the largest difference, so a failure says where.
#pragma once
#include <catch2/catch.hpp>
#include <cmath>
#include <cstdlib>
#include <nlohmann/json.hpp>
#include <sstream>
#include <string>
#include <sys/stat.h>

#include "ldm/core/safetensors.hpp"
#include "ldm/core/tensor.hpp"

namespace ldm::test {

// The shared/ folder: $LDM_SHARED, else the one CMake saw beside the repo. "" when absent.
inline std::string shared_dir() {
  const char* env = std::getenv("LDM_SHARED");
  std::string d = env && *env ? env : LDM_SHARED_DIR;
  struct stat st {};
  return stat((d + "/reference").c_str(), &st) == 0 ? d : std::string();
}

inline std::string reference_path(const std::string& file) {
  std::string d = shared_dir();
  return d.empty() ? std::string() : d + "/reference/" + file;
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

// Skips the calling test (with a visible warning) when ../shared is not there.
#define LDM_REQUIRE_REFERENCE(path_var, file)                                     \
  const std::string path_var = ::ldm::test::reference_path(file);                \
  if (path_var.empty()) {                                                          \
    WARN("skipped: ../shared/reference not found (set LDM_SHARED to the folder)"); \
    return;                                                                        \
  }

inline double rel_l2(const Tensor& a, const Tensor& r) {
  double num = 0, den = 0;
  for (int64_t i = 0; i < r.numel(); ++i) {
    double d = double(a[i]) - double(r[i]);
    num += d * d;
    den += double(r[i]) * double(r[i]);
  }
  return den > 0 ? std::sqrt(num / den) : std::sqrt(num);
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
