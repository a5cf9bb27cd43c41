// The shipped models/ldm-shapes as a pipeline, loaded once per test program (tests run in the
// source folder).
#pragma once
#include "ldm/load.hpp"
#include "ldm/pipeline.hpp"

namespace ldm::test {

inline const StableDiffusion& shapes_model() {
  static const StableDiffusion sd = load_stable_diffusion("models/ldm-shapes");
  return sd;
}

}  // namespace ldm::test
