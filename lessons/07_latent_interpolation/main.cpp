// Lesson 7: interpolating between latents, straight (lerp) and along the sphere (slerp). See README.md.
//   build/bin/lesson_07_latent_interpolation [--seed-a 1 --seed-b 2 | --image-a A.png --image-b B.png] [--denoise]
#include <CLI/CLI.hpp>
#include <iostream>

#include "lesson.hpp"

int main(int argc, char** argv) {
  ldm::lessons::latent_interpolation::Options o;
  CLI::App app{
      "Lesson 7: images along (1 - a) z1 + a z2 and along the great circle (slerp), and why the length matters"};
  app.add_option("--model", o.model, "SD1.5 model: diffusers folder, .safetensors file, or synthetic:sd15")
      ->capture_default_str();
  app.add_option("--seed-a", o.seed_a, "seed of z1, the first starting noise")->capture_default_str();
  app.add_option("--seed-b", o.seed_b, "seed of z2, the second starting noise")->capture_default_str();
  app.add_option("--rng", o.rng, "ldm, or torch-cpu for diffusers' torch.Generator(\"cpu\") draws")
      ->capture_default_str();
  app.add_option("--image-a", o.image_a, "instead of noise: interpolate the latents of this image ...");
  app.add_option("--image-b", o.image_b, "... and this one (PNG/JPEG, centre-cropped to --size)");
  app.add_option("--size", o.size, "image side, a multiple of 8")->capture_default_str();
  app.add_option("--alphas", o.alphas, "the interpolation points a")->delimiter(',')->capture_default_str();
  app.add_flag("--denoise", o.denoise, "also run the pipeline from each interpolated noise (loads the whole model)");
  app.add_option("--tokenizer", o.tokenizer,
                 "with --denoise: folder with vocab.json and merges.txt (default: the "
                 "model's, else ../shared/clip-tokenizer)");
  app.add_option("--prompt", o.prompt, "with --denoise: the text")->capture_default_str();
  app.add_option("--steps", o.steps, "with --denoise: denoising steps")->capture_default_str();
  app.add_option("--scheduler", o.scheduler, "with --denoise: " + ldm::scheduler_names_joined("|"))
      ->capture_default_str();
  app.add_option("--guidance", o.guidance_scale, "with --denoise: classifier-free guidance scale")
      ->capture_default_str();
  app.add_option("--out", o.out_dir, "folder for the pictures (\"\" for none)")->capture_default_str();
  CLI11_PARSE(app, argc, argv);
  try {
    ldm::lessons::latent_interpolation::run(o, std::cout);
  } catch (const std::exception& e) {
    std::cerr << "error: " << e.what() << "\n";
    return 1;
  }
  return 0;
}
