// Lesson 2: the VAE's latent space. See README.md.
//   build/bin/lesson_02_vae_latent_space [--image photo.png] [--size N] [--model M] [--out DIR]
#include <CLI/CLI.hpp>
#include <iostream>

#include "lesson.hpp"

int main(int argc, char** argv) {
  ldm::lessons::vae_latent_space::Options o;
  CLI::App app{"Lesson 2: encode pictures to a latent space, look at the latents, decode them, compute the VAE loss"};
  app.add_option("--model", o.model,
                 "model: a diffusers folder, a .safetensors file, or synthetic:sd15 (default: models/ldm-shapes)");
  app.add_option("--image", o.image, "picture to encode (PNG/JPEG); default: four pictures of the shapes dataset");
  app.add_option("--size", o.size, "side the pictures are resized to, a multiple of 8 (default: the VAE's own)");
  app.add_option("--seed", o.seed, "seed of the posterior sample")->capture_default_str();
  app.add_option("--kl-weight", o.kl_weight, "beta, the KL term's weight in the VAE loss")->capture_default_str();
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
