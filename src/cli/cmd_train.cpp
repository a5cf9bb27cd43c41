// `ldm train vae|unet`: training from scratch (train_vae.cpp, train_unet.cpp).
#include "commands.hpp"

namespace ldm::cli {

void add_train_vae(CLI::App& train);
void add_train_unet(CLI::App& train);

void add_train(CLI::App& app) {
  auto* train = app.add_subcommand("train", "Train a model from scratch: first its vae, then its unet (with its text "
                                            "encoder); see scripts/train_ldm_shapes.sh");
  train->require_subcommand(1);
  add_train_vae(*train);
  add_train_unet(*train);
}

}  // namespace ldm::cli
