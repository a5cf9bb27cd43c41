// Lesson 7: interpolating between latents, straight (lerp) and along the sphere (slerp). See README.md.
//   build/bin/lesson_07_latent_interpolation [--seed-a 1 --seed-b 2 | --image-a A.png --image-b B.png] [--denoise]
#include <CLI/CLI.hpp>
#include <iostream>

#include "lesson.hpp"

int main(int argc, char** argv) {
  ldm::lessons::latent_interpolation::Options o;
  CLI::App app{"Lesson 7: between two pictures' latents (lerp, slerp, pixel cross-fade) and between two prompts' "
               "starting noises through the denoiser"};
  app.add_option("--model", o.model,
                 "model: a diffusers folder, a .safetensors file, or synthetic:sd15 (default: models/ldm-shapes)");
  app.add_option("--prompt-a", o.prompt_a, "the first prompt (and, as the dataset draws it, the first picture)")
      ->capture_default_str();
  app.add_option("--prompt-b", o.prompt_b, "the second")->capture_default_str();
  app.add_option("--image-a", o.image_a, "part 1: encode this picture instead of the first prompt's ...");
  app.add_option("--image-b", o.image_b, "... and this one (PNG/JPEG, centre-cropped to --size)");
  app.add_option("--seed-a", o.seed_a, "part 2: seed of the first starting noise")->capture_default_str();
  app.add_option("--seed-b", o.seed_b, "part 2: seed of the second")->capture_default_str();
  app.add_option("--rng", o.rng, "ldm, or torch-cpu for diffusers' torch.Generator(\"cpu\") draws")
      ->capture_default_str();
  app.add_option("--size", o.size, "image side, a multiple of 8 (default: the model's own, at most 128)");
  app.add_option("--alphas", o.alphas, "the interpolation points a")->delimiter(',')->capture_default_str();
  app.add_flag("!--no-denoise", o.denoise, "skip part 2 (the VAE is then all that loads)");
  app.add_option("--tokenizer", o.tokenizer,
                 "folder with vocab.json and merges.txt (default: the model's, else ../shared/clip-tokenizer)");
  app.add_option("--steps", o.steps, "part 2: denoising steps (default: the model's recommendation, else 20)");
  app.add_option("--scheduler", o.scheduler, "part 2: " + ldm::scheduler_names_joined("|"))->capture_default_str();
  app.add_option("--guidance", o.guidance_scale, "part 2: guidance scale (default: the model's recommendation, else 7.5)");
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
