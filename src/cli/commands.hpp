// The `ldm` command line: one function per subcommand, registered on a CLI11 app.
#pragma once
#include <CLI/CLI.hpp>

namespace ldm::cli {

// Each adds its subcommand to `app`; the callback runs it.
void add_demo(CLI::App& app);
void add_generate(CLI::App& app);
void add_eval(CLI::App& app);
void add_train_step(CLI::App& app);
void add_train(CLI::App& app);
void add_dataset(CLI::App& app);

}  // namespace ldm::cli
