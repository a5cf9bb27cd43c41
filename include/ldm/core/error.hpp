// Errors a user can act on: an exception that carries file, line and a sentence.
//   LDM_CHECK(x.dim(1) == in_channels, "conv2d: expected ", in_channels, " input channels, got ", x.dim(1));
#pragma once
#include <sstream>
#include <stdexcept>
#include <string>

namespace ldm {

template <typename... Args>
std::string str(const Args&... args) {
  std::ostringstream os;
  (os << ... << args);
  return os.str();
}

struct Error : std::runtime_error {
  Error(const char* file, int line, const std::string& what)
      : std::runtime_error(what + "  [" + file + ":" + std::to_string(line) + "]") {}
};

}  // namespace ldm

#define LDM_FAIL(...) throw ::ldm::Error(__FILE__, __LINE__, ::ldm::str(__VA_ARGS__))
#define LDM_CHECK(cond, ...)            \
  do {                                  \
    if (!(cond)) LDM_FAIL(__VA_ARGS__); \
  } while (0)
