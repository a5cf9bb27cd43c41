// The committed test data of tests/data/ (references made by scripts/make_*_reference.py), found
// beside this header wherever the tests run from.
#pragma once
#include <string>

namespace ldm::test {

inline std::string data_path(const std::string& name) {
  const std::string f = __FILE__;
  return f.substr(0, f.rfind('/')) + "/data/" + name;
}

}  // namespace ldm::test
