// Lesson 5: the blocks of the SD1.5 U-Net. See README.md.
//   build/bin/lesson_05_unet_blocks [--latent-size 16] [--model M] [--out DIR]
#include <CLI/CLI.hpp>
#include <iostream>

#include "lesson.hpp"

int main(int argc, char** argv) {
  ldm::lessons::unet_blocks::Options o;
  CLI::App app{"Lesson 5: walk the SD1.5 U-Net block by block: output shapes, parameters, time"};
  app.add_option("--model", o.model, "model: a diffusers folder, a .safetensors file, or synthetic:sd15 (default: models/ldm-shapes)")
      ->capture_default_str();
  app.add_option("--latent-size", o.latent_size, "side of the latent run through the blocks (default: the model's own)")
      ->capture_default_str();
  app.add_option("--out", o.out_dir, "folder for the picture (\"\" for none)")->capture_default_str();
  CLI11_PARSE(app, argc, argv);
  try {
    ldm::lessons::unet_blocks::run(o, std::cout);
  } catch (const std::exception& e) {
    std::cerr << "error: " << e.what() << "\n";
    return 1;
  }
  return 0;
}
