// An output path checked before any slow work (model load, generation), so that a typo in
// a folder name fails in a second with the OS's reason rather than after minutes of compute.
#pragma once
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <filesystem>
#include <string>

#include "ldm/core/error.hpp"

namespace ldm::cli {

// `path` (given as `option`) must name a file in an existing folder this process may write to.
inline void check_output_path(const std::string& path, const char* option) {
  const std::filesystem::path p(path);
  const std::string dir = p.has_parent_path() ? p.parent_path().string() : ".";
  struct stat st {};
  if (::stat(dir.c_str(), &st) != 0) {
    const int err = errno;
    LDM_FAIL(option, " '", path, "': its folder '", dir, "' cannot be used: ", std::strerror(err));
  }
  LDM_CHECK(S_ISDIR(st.st_mode), option, " '", path, "': '", dir, "' is not a folder");
  if (::access(dir.c_str(), W_OK) != 0) {
    const int err = errno;
    LDM_FAIL(option, " '", path, "': cannot write into the folder '", dir, "': ", std::strerror(err));
  }
  LDM_CHECK(::stat(path.c_str(), &st) != 0 || !S_ISDIR(st.st_mode), option, " '", path,
            "' is a folder: give a file name");
}

}  // namespace ldm::cli
