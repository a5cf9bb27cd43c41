// The model `ldm generate` and the lessons use without --model: models/ldm-shapes, the small text-to-image
// model ldm.cpp trained itself (scripts/train_ldm_shapes.sh), looked up beside the executable so
// that it is found from any folder:
//   <exe>/../../models/ldm-shapes      a build tree (build/bin/ldm)
//   <exe>/../share/ldm/models/ldm-shapes   an install prefix (prefix/bin/ldm)
//   ./models/ldm-shapes                 the current folder, last
#pragma once
#include <unistd.h>

#include <filesystem>
#include <string>
#include <vector>

#include "ldm/core/error.hpp"

namespace ldm {

inline constexpr const char* kDefaultModelName = "ldm-shapes";

inline std::string executable_dir() {
  std::string buf(4096, '\0');
  const ssize_t n = ::readlink("/proc/self/exe", buf.data(), buf.size() - 1);
  if (n <= 0) return "";
  buf.resize(size_t(n));
  const size_t slash = buf.rfind('/');
  return slash == std::string::npos ? "" : buf.substr(0, slash);
}

inline std::vector<std::string> default_model_candidates() {
  const std::string exe = executable_dir(), name = std::string("models/") + kDefaultModelName;
  std::vector<std::string> c;
  // lexically_normal: "build/bin/../../models/x" reads as "models/x" in messages
  if (!exe.empty())
    for (const std::string& dir : {exe + "/../../" + name, exe + "/../share/ldm/" + name})
      c.push_back(std::filesystem::path(dir).lexically_normal().string());
  c.push_back(name);
  return c;
}

// The first candidate folder holding a model_index.json.
inline std::string default_model_path() {
  const std::vector<std::string> c = default_model_candidates();
  for (const std::string& dir : c)
    if (std::filesystem::exists(dir + "/model_index.json")) return dir;
  std::string tried;
  for (const std::string& dir : c) tried += "\n  " + dir;
  LDM_FAIL("no --model given and the default model (", kDefaultModelName, ") was not found; looked in:", tried,
           "\ngive --model FOLDER (a diffusers folder), or --model synthetic:sd15 for SD1.5 with synthetic weights");
}

}  // namespace ldm
