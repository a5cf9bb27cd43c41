// Lesson 6: classifier-free guidance, swept. See README.md.
//   build/bin/lesson_06_guidance_sweep [--prompt "..."]... [--scales 1,2,3,7,12,20] [--seeds 3] [--model M]
#include <CLI/CLI.hpp>
#include <iostream>

#include "lesson.hpp"

int main(int argc, char** argv) {
  ldm::lessons::guidance_sweep::Options o;
  CLI::App app{"Lesson 6: several prompts and seeds at several classifier-free guidance scales w, read back"};
  app.add_option("--model", o.model,
                 "model: a diffusers folder, a .safetensors file, or synthetic:sd15 (default: models/ldm-shapes)");
  app.add_option("--tokenizer", o.tokenizer,
                 "folder with vocab.json and merges.txt (default: the model's, else ../shared/clip-tokenizer)");
  std::vector<std::string> prompts;
  app.add_option("--prompt", prompts, "a prompt (repeatable; default: six captions of the shapes dataset)");
  app.add_option("--negative-prompt", o.negative_prompt, "what to steer away from (default: the empty prompt)");
  app.add_option("--scales", o.scales, "guidance scales w, each >= 1")->delimiter(',')->capture_default_str();
  app.add_option("--seeds", o.seeds, "starting latents per prompt")->capture_default_str();
  app.add_option("--size", o.size, "image side, a multiple of 8 (default: the model's own, at most 128)");
  app.add_option("--steps", o.steps, "denoising steps (default: the model's recommendation, else 20)");
  app.add_option("--scheduler", o.scheduler, ldm::scheduler_names_joined("|") + " (default: the model's)");
  app.add_option("--seed", o.seed, "seed of the first starting latent (the same for every w)")->capture_default_str();
  app.add_option("--rng", o.rng, "ldm, or torch-cpu for diffusers' torch.Generator(\"cpu\") draws")
      ->capture_default_str();
  app.add_option("--out", o.out_dir, "folder for the pictures (\"\" for none)")->capture_default_str();
  CLI11_PARSE(app, argc, argv);
  if (!prompts.empty()) o.prompts = prompts;
  try {
    ldm::lessons::guidance_sweep::run(o, std::cout);
  } catch (const std::exception& e) {
    std::cerr << "error: " << e.what() << "\n";
    return 1;
  }
  return 0;
}
