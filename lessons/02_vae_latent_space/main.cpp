// Lesson 2: the VAE's latent space. See README.md.
//   build/bin/lesson_02_vae_latent_space [--image photo.png] [--size 128] [--model M] [--out DIR]
#include <CLI/CLI.hpp>
#include <iostream>

#include "lesson.hpp"

int main(int argc, char** argv) {
  ldm::lessons::vae_latent_space::Options o;
  CLI::App app{"Lesson 2: encode an image to SD1.5's latent space, look at the latent, decode it back"};
  app.add_option("--model", o.model, "SD1.5 model: diffusers folder, .safetensors file, or synthetic:sd15")
      ->capture_default_str();
  app.add_option("--image", o.image, "image to encode (PNG/JPEG); default: a built-in test pattern");
  app.add_option("--size", o.size, "side the image is cropped and resized to (a multiple of 8)")->capture_default_str();
  app.add_option("--seed", o.seed, "seed of the posterior sample")->capture_default_str();
  app.add_option("--out", o.out_dir, "folder for the pictures (\"\" for none)")->capture_default_str();
  CLI11_PARSE(app, argc, argv);
  try {
    ldm::lessons::vae_latent_space::run(o, std::cout);
  } catch (const std::exception& e) {
    std::cerr << "error: " << e.what() << "\n";
    return 1;
  }
  return 0;
}
