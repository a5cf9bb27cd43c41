// Lesson 10: the sampling loop, step by step. See README.md.
//   build/bin/lesson_10_sampling_loop [--prompt "..."] [--steps 20] [--guidance W] [--model M] [--out DIR]
#include <CLI/CLI.hpp>
#include <iostream>

#include "lesson.hpp"

int main(int argc, char** argv) {
  ldm::lessons::sampling_loop::Options o;
  CLI::App app{"Lesson 10: the denoising loop by hand: x_t and the predicted x0 at every step, DDIM and Euler"};
  app.add_option("--model", o.model,
                 "model: a diffusers folder, a .safetensors file, or synthetic:sd15 (default: models/ldm-shapes)");
  app.add_option("--tokenizer", o.tokenizer,
                 "folder with vocab.json and merges.txt (default: the model's, else ../shared/clip-tokenizer)");
  app.add_option("--prompt", o.prompt, "the text")->capture_default_str();
  app.add_option("--scheduler", o.schedulers, "samplers to compare (repeatable)")->capture_default_str();
  app.add_option("--steps", o.steps, "denoising steps")->capture_default_str();
  app.add_option("--guidance", o.guidance, "guidance scale w (default: the model's recommendation, else 7.5)");
  app.add_option("--size", o.size, "image side, a multiple of 8 (default: the model's own, at most 128)");
  app.add_option("--seed", o.seed, "seed of the starting noise")->capture_default_str();
  app.add_option("--columns", o.columns, "steps shown in the strip")->capture_default_str();
  app.add_option("--out", o.out_dir, "folder for the pictures (\"\" for none)")->capture_default_str();
  CLI11_PARSE(app, argc, argv);
  try {
    ldm::lessons::sampling_loop::run(o, std::cout);
  } catch (const std::exception& e) {
    std::cerr << "error: " << e.what() << "\n";
    return 1;
  }
  return 0;
}
