// Synthetic weights for tests: every tensor's values from its name by the formula the
// references were made with (ldm/core/weights.hpp's SyntheticSource, ../shared/reference/synth.py).
#pragma once
#include <memory>
#include <string>

#include "ldm/core/weights.hpp"

namespace ldm::test {

// A weight store that makes any tensor asked of it.
inline WeightStore synthetic_weights() { return WeightStore(std::make_shared<SyntheticSource>()); }

// A block or model loaded from synthetic weights under the reference's names:
// m.load(w, prefix, args...), e.g. synthetic<AutoencoderKL>("", config).
template <typename M, typename... Args>
M synthetic(const std::string& prefix, const Args&... args) {
  WeightStore w = synthetic_weights();
  M m;
  m.load(w, prefix, args...);
  w.finish();
  return m;
}

}  // namespace ldm::test
