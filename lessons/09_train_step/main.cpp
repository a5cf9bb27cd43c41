// Lesson 9: one training step of latent diffusion. See README.md.
//   build/bin/lesson_09_train_step [--batch 4] [--sgd-steps 3] [--model M] [--out DIR]
#include <CLI/CLI.hpp>
#include <iostream>

#include "lesson.hpp"

int main(int argc, char** argv) {
  ldm::lessons::train_step::Options o;
  CLI::App app{"Lesson 9: encode, noise at a random t, predict the noise, MSE; and a gradient step on one tensor"};
  app.add_option("--model", o.model, "SD1.5 model (diffusers folder, .safetensors, synthetic:sd15); default: tiny models");
  app.add_option("--image", o.image, "training image (PNG/JPEG); default: a built-in test pattern");
  app.add_option("--caption", o.caption, "its caption")->capture_default_str();
  app.add_option("--tokenizer", o.tokenizer, "folder with vocab.json and merges.txt");
  app.add_option("--size", o.size, "image side")->capture_default_str();
  app.add_option("--batch", o.batch, "batch size")->capture_default_str();
  app.add_option("--sgd-steps", o.sgd_steps, "gradient steps on conv_out.bias")->capture_default_str();
  app.add_option("--lr", o.lr, "their learning rate")->capture_default_str();
  app.add_option("--seed", o.seed, "seed of t, the noise and the posterior sample")->capture_default_str();
  app.add_option("--out", o.out_dir, "folder for the picture (\"\" for none)")->capture_default_str();
  CLI11_PARSE(app, argc, argv);
  try {
    ldm::lessons::train_step::run(o, std::cout);
  } catch (const std::exception& e) {
    std::cerr << "error: " << e.what() << "\n";
    return 1;
  }
  return 0;
}
