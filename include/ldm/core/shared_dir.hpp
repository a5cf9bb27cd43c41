// The project's shared/ folder (reference tensors, a CLIP tokenizer: ../shared/README.md), for
// the tests and the lessons: $LDM_SHARED when set, else the folder CMake saw beside the
// repository (LDM_SHARED_DIR). The variable wins even when it names no folder, so a run can be
// pointed away from the compiled-in default (to check that tests skip without it).
#pragma once
#include <cstdlib>
#include <string>
#include <sys/stat.h>

namespace ldm {

inline std::string shared_dir() {
  if (const char* env = std::getenv("LDM_SHARED"); env && *env) return env;
#ifdef LDM_SHARED_DIR
  return LDM_SHARED_DIR;
#else
  return "";
#endif
}

// shared_dir()/relative ("reference", "clip-tokenizer") when it exists, else "".
inline std::string shared_path(const std::string& relative) {
  const std::string dir = shared_dir();
  if (dir.empty()) return "";
  const std::string path = dir + "/" + relative;
  struct stat st {};
  return stat(path.c_str(), &st) == 0 ? path : std::string();
}

}  // namespace ldm
