// Lesson 3: noise schedules. See README.md.
//   build/bin/lesson_03_noise_schedules [--image photo.png] [--model M] [--out DIR]
#include <CLI/CLI.hpp>
#include <iostream>

#include "lesson.hpp"

int main(int argc, char** argv) {
  ldm::lessons::noise_schedules::Options o;
  CLI::App app{"Lesson 3: betas, alphas_cumprod, SNR and sigmas of linear vs scaled_linear, and x_t at several t"};
  app.add_option("--model", o.model, "take SD1.5's schedule from this model's scheduler_config.json");
  app.add_option("--image", o.image, "image to noise (PNG/JPEG); default: a built-in test pattern");
  app.add_option("--size", o.size, "side the image is cropped and resized to")->capture_default_str();
  app.add_option("--seed", o.seed, "seed of the noise")->capture_default_str();
  app.add_option("--timesteps", o.timesteps, "timesteps to show")->capture_default_str();
  app.add_option("--out", o.out_dir, "folder for the pictures (\"\" for none)")->capture_default_str();
  CLI11_PARSE(app, argc, argv);
  try {
    ldm::lessons::noise_schedules::run(o, std::cout);
  } catch (const std::exception& e) {
    std::cerr << "error: " << e.what() << "\n";
    return 1;
  }
  return 0;
}
