// Lesson 9: training latent diffusion, with the exact gradient. See README.md.
//   build/bin/lesson_09_train_step [--batch 8] [--train-steps 300] [--model M] [--out DIR]
#include <CLI/CLI.hpp>
#include <iostream>

#include "lesson.hpp"

int main(int argc, char** argv) {
  ldm::lessons::train_step::Options o;
  CLI::App app{"Lesson 9: the course's train_step with its exact gradient, then a small U-Net trained from scratch"};
  app.add_option("--model", o.model, "model of 64x64 pictures whose VAE and text encoder are used (default: models/ldm-shapes)");
  app.add_option("--batch", o.batch, "part 1: pictures in the batch")->capture_default_str();
  app.add_option("--seed", o.seed, "seed of t, the noise, the posterior samples and the initial weights")
      ->capture_default_str();
  app.add_option("--train-steps", o.train_steps, "part 2: training steps (0: skip part 2)")->capture_default_str();
  app.add_option("--train-batch", o.train_batch, "part 2: batch size")->capture_default_str();
  app.add_option("--lr", o.lr, "part 2: peak learning rate of AdamW")->capture_default_str();
  app.add_option("--pictures", o.pictures, "part 2: dataset pictures to train on")->capture_default_str();
  app.add_option("--channels", o.channels, "part 2: the small U-Net's two widths")->delimiter(',')->capture_default_str();
  app.add_option("--out", o.out_dir, "folder for the pictures (\"\" for none)")->capture_default_str();
  CLI11_PARSE(app, argc, argv);
  try {
    ldm::lessons::train_step::run(o, std::cout);
  } catch (const std::exception& e) {
    std::cerr << "error: " << e.what() << "\n";
    return 1;
  }
  return 0;
}
