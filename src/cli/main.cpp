// ldm: Stable Diffusion 1.5 from the shell.
//   ldm generate --prompt ...     txt2img / img2img
//   ldm eval unet|vae-encode|vae-decode|clip ...   one component on tensors from a file
//   ldm demo                      run SD1.5 building blocks end to end on synthetic weights
#include <cstdio>
#include <exception>

#include "commands.hpp"
#include "ldm/core/error.hpp"

int main(int argc, char** argv) {
  CLI::App app{"ldm.cpp: Stable Diffusion 1.5 in C++"};
  app.require_subcommand(1);
  ldm::cli::add_generate(app);
  ldm::cli::add_eval(app);
  ldm::cli::add_demo(app);
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    return app.exit(e);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "error: %s\n", e.what());
    return 1;
  }
  return 0;
}
