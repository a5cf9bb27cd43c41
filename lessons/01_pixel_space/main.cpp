// Lesson 1: the pixel-space problem. See README.md.
//   build/bin/lesson_01_pixel_space [--size 512] [--model M] [--out DIR]
#include <CLI/CLI.hpp>
#include <iostream>

#include "lesson.hpp"

int main(int argc, char** argv) {
  ldm::lessons::pixel_space::Options o;
  CLI::App app{"Lesson 1: what one U-Net step costs on 512x512x3 pixels vs a 64x64x4 latent"};
  app.add_option("--model", o.model,
                 "model: a diffusers folder, a .safetensors file, or synthetic:sd15 (default: models/ldm-shapes)");
  app.add_option("--size", o.image_size, "picture side in pixels (default: the model's own)");
  app.add_option("--repeats", o.repeats, "timed runs of each forward")->capture_default_str();
  app.add_option("--budget", o.budget_gflop, "largest pixel-space forward run, GFLOP (beyond: extrapolated)")
      ->capture_default_str();
  app.add_option("--out", o.out_dir, "folder for the picture (\"\" for none)")->capture_default_str();
  CLI11_PARSE(app, argc, argv);
  try {
    ldm::lessons::pixel_space::run(o, std::cout);
  } catch (const std::exception& e) {
    std::cerr << "error: " << e.what() << "\n";
    return 1;
  }
  return 0;
}
