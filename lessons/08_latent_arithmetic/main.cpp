// Lesson 8: arithmetic on VAE latents. See README.md.
//   build/bin/lesson_08_latent_arithmetic [--image-a A.png --image-b B.png --image-c C.png] [--size 128] [--model M]
#include <CLI/CLI.hpp>
#include <iostream>

#include "lesson.hpp"

int main(int argc, char** argv) {
  ldm::lessons::latent_arithmetic::Options o;
  CLI::App app{"Lesson 8: (z_a + z_b) / 2 and z_b + (z_c - z_a) on VAE latents, beside the same on pixels"};
  app.add_option("--model", o.model, "SD1.5 model: diffusers folder, .safetensors file, or synthetic:sd15")
      ->capture_default_str();
  app.add_option("--image-a", o.image_a, "image a (PNG/JPEG); default: a built-in test pattern");
  app.add_option("--image-b", o.image_b, "image b; default: the test pattern mirrored");
  app.add_option("--image-c", o.image_c, "image c; default: the test pattern at dusk");
  app.add_option("--size", o.size, "side the images are cropped and resized to (a multiple of 8)")
      ->capture_default_str();
  app.add_option("--out", o.out_dir, "folder for the picture (\"\" for none)")->capture_default_str();
  CLI11_PARSE(app, argc, argv);
  try {
    ldm::lessons::latent_arithmetic::run(o, std::cout);
  } catch (const std::exception& e) {
    std::cerr << "error: " << e.what() << "\n";
    return 1;
  }
  return 0;
}
