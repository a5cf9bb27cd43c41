// Lesson 4: cross-attention. See README.md.
//   build/bin/lesson_04_cross_attention [--prompt "..."] [--image photo.png] [--model M] [--out DIR]
#include <CLI/CLI.hpp>
#include <iostream>

#include "lesson.hpp"

int main(int argc, char** argv) {
  ldm::lessons::cross_attention::Options o;
  CLI::App app{"Lesson 4: how latent pixels attend to the text tokens: one cross-attention by hand, then every "
               "cross-attention's maps while a picture is sampled"};
  app.add_option("--model", o.model,
                 "model: a diffusers folder, a .safetensors file, or synthetic:sd15 (default: models/ldm-shapes)");
  app.add_option("--prompt", o.prompt, "the text")->capture_default_str();
  app.add_option("--tokenizer", o.tokenizer, "folder with vocab.json and merges.txt (default: the model's, else "
                                             "../shared/clip-tokenizer)");
  app.add_option("--image", o.image,
                 "image to encode in part 1 (PNG/JPEG); default: the prompt as the shapes dataset draws it");
  app.add_option("--size", o.size, "image side (a multiple of 8); the latent is size / 8 (default: the VAE's own)");
  app.add_option("--timestep", o.timestep, "noise level of the latent, 0..999")->capture_default_str();
  app.add_option("--query-x", o.query_x, "query pixel, x as a fraction of the width")->capture_default_str();
  app.add_option("--query-y", o.query_y, "query pixel, y as a fraction of the height")->capture_default_str();
  app.add_flag("!--no-maps", o.maps, "skip part 2 (sampling the prompt and reading every cross-attention)");
  app.add_option("--steps", o.map_options.steps, "part 2: DDIM steps")->capture_default_str();
  app.add_option("--guidance", o.map_options.guidance, "part 2: guidance scale w")->capture_default_str();
  app.add_option("--out", o.out_dir, "folder for the pictures (\"\" for none)")->capture_default_str();
  CLI11_PARSE(app, argc, argv);
  try {
    ldm::lessons::cross_attention::run(o, std::cout);
  } catch (const std::exception& e) {
    std::cerr << "error: " << e.what() << "\n";
    return 1;
  }
  return 0;
}
