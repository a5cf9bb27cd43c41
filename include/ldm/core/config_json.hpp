// Reading a diffusers / transformers config.json into a Config struct: a key that is absent
// or null keeps the struct's default (SD1.5's value); a key of the wrong type is an error
// that names it.
#pragma once
#include <nlohmann/json.hpp>

#include "ldm/core/error.hpp"

namespace ldm {

template <typename T>
void read_config(const nlohmann::json& j, const char* key, T& field, const char* what) {
  auto it = j.find(key);
  if (it == j.end() || it->is_null()) return;
  try {
    it->get_to(field);
  } catch (const nlohmann::json::exception&) {
    LDM_FAIL(what, ": \"", key, "\" has the wrong type (", it->type_name(), ")");
  }
}

}  // namespace ldm
