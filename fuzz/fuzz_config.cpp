// Fuzz target: a config.json as every component reads it (U-Net, VAE, CLIP text, scheduler).
// A scheduler config that is accepted then runs each sampler for a few steps with a stand-in
// model (eps = 0.8 * x_in, as the reference trajectories), and must give finite latents: a config
// that leads to NaN is one to refuse, not to compute with.
#include <cmath>

#include "fuzz_input.hpp"
#include "ldm/core/rng.hpp"
#include "ldm/models/clip_text.hpp"
#include "ldm/models/unet.hpp"
#include "ldm/models/vae.hpp"
#include "ldm/schedulers/scheduler.hpp"

namespace {

void run_samplers(const ldm::SchedulerConfig& config) {
  for (const std::string& name : ldm::scheduler_names()) {
    for (int steps : {1, 3, 20}) {
      try {
        auto s = ldm::make_scheduler(name, config);
        s->set_timesteps(steps);
        auto gen = ldm::make_generator("torch-cpu", 1);
        ldm::Tensor x = gen->randn({1, 4, 2, 2});
        x.vec() *= s->init_noise_sigma();
        for (double t : s->timesteps()) {
          ldm::Tensor eps = s->scale_model_input(x, t);
          eps.vec() *= 0.8f;
          x = s->step(eps, t, x, gen.get());
        }
        for (float v : x)
          if (!std::isfinite(v)) __builtin_trap();
      } catch (const ldm::Error&) {
      }
    }
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const nlohmann::json j = nlohmann::json::parse(data, data + size, nullptr, /*allow_exceptions=*/false);
  if (j.is_discarded()) return 0;  // not JSON: the config reader says so before any parser sees it
  try {
    ldm::UNetConfig::from_json(j);
  } catch (const ldm::Error&) {
  }
  try {
    ldm::VAEConfig::from_json(j).downscale_factor();
  } catch (const ldm::Error&) {
  }
  try {
    ldm::CLIPTextConfig::from_json(j);
  } catch (const ldm::Error&) {
  }
  try {
    run_samplers(ldm::SchedulerConfig::from_json(j));
  } catch (const ldm::Error&) {
  }
  return 0;
}
