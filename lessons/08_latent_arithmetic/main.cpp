// Lesson 8: arithmetic on VAE latents. See README.md.
//   build/bin/lesson_08_latent_arithmetic [--image-a A.png --image-b B.png --image-c C.png] [--size 128] [--model M]
#include <CLI/CLI.hpp>
#include <iostream>

#include "lesson.hpp"

int main(int argc, char** argv) {
  ldm::lessons::latent_arithmetic::Options o;
  CLI::App app{"Lesson 8: red circle - red square + blue square = blue circle? In pixels, VAE latents and text "
               "embeddings, read back by the shapes analyser"};
  app.add_option("--model", o.model, "model of 64x64 pictures (default: models/ldm-shapes)");
  app.add_option("--tokenizer", o.tokenizer,
                 "folder with vocab.json and merges.txt (default: the model's, else ../shared/clip-tokenizer)");
  app.add_option("--a", o.a, "a, in a - b + c: COLOUR SHAPE")->capture_default_str();
  app.add_option("--b", o.b, "b")->capture_default_str();
  app.add_option("--c", o.c, "c")->capture_default_str();
  app.add_option("--background", o.background, "white, black or gray")->capture_default_str();
  app.add_option("--seeds", o.seeds, "text arithmetic: pictures per prompt")->capture_default_str();
  app.add_option("--steps", o.steps, "DDIM steps (default: the model's recommendation, else 20)");
  app.add_option("--guidance", o.guidance, "guidance scale (default: the model's recommendation, else 7.5)");
  app.add_option("--seed", o.seed, "seed of the first picture")->capture_default_str();
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
