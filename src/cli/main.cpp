// ldm: Stable Diffusion 1.5 from the shell.
//   ldm generate --prompt ...     txt2img / img2img
//   ldm eval unet|vae-encode|vae-decode|clip[-backward] ...   one component (or its backward) on tensors from a file
//   ldm train vae|unet ...        train a model from scratch (the shapes dataset)
//   ldm train-step ...            one U-Net training step's loss and gradients on a batch from a file
//   ldm demo                      run SD1.5 building blocks end to end on synthetic weights
//   ldm dataset shapes|analyse    write the captioned-shapes dataset; score pictures against captions
#include <cstdio>
#include <exception>
#include <new>
#include <stdexcept>

#include "commands.hpp"
#include "ldm/core/error.hpp"

int main(int argc, char** argv) {
  CLI::App app{"ldm.cpp: Stable Diffusion 1.5 in C++"};
  app.require_subcommand(1);
  ldm::cli::add_generate(app);
  ldm::cli::add_eval(app);
  ldm::cli::add_train_step(app);
  ldm::cli::add_train(app);
  ldm::cli::add_demo(app);
  ldm::cli::add_dataset(app);
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    return app.exit(e);
  } catch (const std::bad_alloc&) {
    // The last resort: files are checked before anything is sized by them, so this is a real
    // shortage (a large --width/--height or --batch, or a model bigger than the RAM).
    std::fprintf(stderr, "error: out of memory: this run needs more RAM than the machine has free (try a smaller "
                         "--width/--height or --batch, or --fp16-weights)\n");
    return 1;
  } catch (const std::length_error& e) {
    std::fprintf(stderr, "error: a size too large to allocate (%s): a corrupt input file or an absurd option value\n",
                 e.what());
    return 1;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "error: %s\n", e.what());
    return 1;
  }
  return 0;
}
