// Reading a diffusers / transformers config.json into a Config struct: a key that is absent
// or null keeps the struct's default (SD1.5's value); a key of the wrong type is an error
// that names it. Strict on types, because nlohmann's get<int>() truncates 4.7 to 4 and wraps
// 2^64-1 to -1: an integer field takes a JSON integer only (4.0 and 4.7 are refused alike)
// within the field's type, a floating-point field a finite number, a bool true/false, a
// string a string, a list a list of those. `what` names the file (or the struct) in errors.
#pragma once
#include <cmath>
#include <cstdint>
#include <limits>
#include <string>
#include <type_traits>
#include <vector>

#include <nlohmann/json.hpp>

#include "ldm/core/error.hpp"

namespace ldm {

namespace detail {
template <typename T>
struct is_vector : std::false_type {};
template <typename T>
struct is_vector<std::vector<T>> : std::true_type {};

// What a field of type T takes, for error messages.
template <typename T>
std::string config_type_name() {
  if constexpr (is_vector<T>::value) {
    return "a list, each entry " + config_type_name<typename T::value_type>();
  } else if constexpr (std::is_same_v<T, bool>) {
    return "a boolean";
  } else if constexpr (std::is_same_v<T, int64_t>) {
    return "an integer";
  } else if constexpr (std::is_integral_v<T>) {
    return str("an integer in [", std::numeric_limits<T>::min(), ", ", std::numeric_limits<T>::max(), "]");
  } else if constexpr (std::is_floating_point_v<T>) {
    return "a finite number";
  } else {
    return "a string";
  }
}

// j as a T, or false where a lenient conversion would bend it (see the top of this file).
template <typename T>
bool config_get(const nlohmann::json& j, T& out) {
  if constexpr (is_vector<T>::value) {
    if (!j.is_array()) return false;
    T v(j.size());
    for (size_t i = 0; i < j.size(); ++i)
      if (!config_get(j[i], v[i])) return false;
    out = std::move(v);
  } else if constexpr (std::is_same_v<T, bool>) {
    if (!j.is_boolean()) return false;
    out = j.get<bool>();
  } else if constexpr (std::is_integral_v<T>) {
    if (!j.is_number_integer()) return false;
    if (j.is_number_unsigned()) {
      const uint64_t u = j.get<uint64_t>();
      if (u > uint64_t(std::numeric_limits<T>::max())) return false;
      out = T(u);
    } else {
      const int64_t v = j.get<int64_t>();
      if (v < int64_t(std::numeric_limits<T>::min()) || v > int64_t(std::numeric_limits<T>::max())) return false;
      out = T(v);
    }
  } else if constexpr (std::is_floating_point_v<T>) {
    if (!j.is_number()) return false;
    const double d = j.get<double>();
    if (!std::isfinite(d) || std::abs(d) > double(std::numeric_limits<T>::max())) return false;
    out = T(d);
  } else {
    if (!j.is_string()) return false;
    out = j.get<std::string>();
  }
  return true;
}
}  // namespace detail

template <typename T>
void read_config(const nlohmann::json& j, const char* key, T& field, const std::string& what) {
  auto it = j.find(key);
  if (it == j.end() || it->is_null()) return;
  LDM_CHECK(detail::config_get(*it, field), what, ": \"", key, "\" must be ", detail::config_type_name<T>(), ", got ",
            it->dump());
}

// A config value within [lo, hi], else an error naming the file (what) and the field.
template <typename T>
void check_config_range(const std::string& what, const std::string& key, T value, T lo, T hi) {
  LDM_CHECK(value >= lo && value <= hi, what, ": \"", key, "\" = ", value, " is out of range: expected ", lo, " to ", hi);
}
template <typename T>
void check_config_range(const std::string& what, const std::string& key, const std::vector<T>& values, T lo, T hi) {
  for (size_t i = 0; i < values.size(); ++i) check_config_range(what, str(key, "[", i, "]"), values[i], lo, hi);
}

// Bounds for the sizes in a config: several times anything published for SD-like models, yet
// far below what would overflow a size or exhaust memory before a clear error could be given.
namespace config_limits {
constexpr int64_t kWidth = 16384;   // channels, hidden and MLP sizes (SD1.5: at most 1280 / 3072)
constexpr int64_t kIO = 256;        // image / latent channels (SD1.5: 3 and 4; inpainting: 9)
constexpr int64_t kBlocks = 8;      // resolution levels (SD1.5: 4)
constexpr int64_t kLayers = 64;     // layers per block or encoder (SD1.5: 2 resnets, 12 CLIP layers)
constexpr int64_t kSize = 65536;    // sample sizes, token positions (SD1.5: 64 / 512, 77)
constexpr int64_t kVocab = 1 << 20; // token vocabulary (CLIP: 49408)
}  // namespace config_limits

}  // namespace ldm
