// What `ldm train vae` and `ldm train unet` share: the run folder (a diffusers folder being
// filled in: configs from the start, weights as each part is trained, training state under
// train/), weight files written from a parameter list, and the optimizer settings.
//
//   RUN/vae/config.json, RUN/unet/config.json, ...   the model's configs (scripts copy them in)
//   RUN/<part>/<weights>.safetensors                 written when that part's training ends
//   RUN/train/<part>_checkpoint.safetensors          weights + AdamW + EMA + RNG, for --resume
//   RUN/train/<part>_loss.csv, <part>_loss.png       every step's loss, the curve
//   RUN/train/<part>_samples_<step>.png              what the model makes, every --sample-every steps
#pragma once
#include <sys/stat.h>

#include <cerrno>
#include <cstring>
#include <string>
#include <vector>

#include <CLI/CLI.hpp>

#include "ldm/core/error.hpp"
#include "ldm/core/files.hpp"
#include "ldm/core/safetensors.hpp"
#include "ldm/train/parameter.hpp"

namespace ldm::cli {

inline bool path_exists(const std::string& p) {
  struct stat st {};
  return ::stat(p.c_str(), &st) == 0;
}

inline void make_folder(const std::string& p) {
  struct stat st {};
  if (::stat(p.c_str(), &st) == 0 && S_ISDIR(st.st_mode)) return;
  LDM_CHECK(::mkdir(p.c_str(), 0755) == 0, "cannot create folder '", p, "': ", std::strerror(errno));
}

// RUN/<part>/config.json, read and checked: the run folder must hold the model's configs.
inline nlohmann::json run_config(const std::string& run, const std::string& part) {
  const std::string path = run + "/" + part + "/config.json";
  LDM_CHECK(path_exists(path), "'", run, "' has no ", part, "/config.json: a training run folder starts as a copy of ",
            "the model's configs (e.g. cp -r configs/ldm-shapes RUN)");
  return read_json_file(path, part + " config");
}

// --dtype of the final weights ("fp16" or "fp32", checked by CLI11) as the writer's DType.
inline DType weights_dtype(const std::string& name) { return name == "fp16" ? DType::F16 : DType::F32; }

// The parameters as a weights file of the part (diffusers names), in `dtype` (F32 or F16).
inline void save_weights(const std::string& path, const std::vector<Parameter>& params, DType dtype,
                         const std::string& strip_prefix = "") {
  SafeTensorsWriter w;
  for (const Parameter& p : params) {
    std::string name = p.name;
    if (!strip_prefix.empty() && name.rfind(strip_prefix, 0) == 0) name = name.substr(strip_prefix.size());
    w.add(name, p.as_stored(*p.value), dtype);
  }
  w.save(path);
}

// Optimizer settings common to both trainings.
struct OptimOptions {
  int64_t steps = 1000;     // optimizer steps in all
  int64_t batch = 32;       // examples per step
  double lr = 1e-3;         // peak learning rate (AdamW)
  int64_t warmup = 100;     // linear warm-up steps, then a cosine decay to lr * min_lr_ratio
  double min_lr_ratio = 0.05;
  double weight_decay = 0.0;
  double max_grad_norm = 1.0;
  uint64_t seed = 0;        // weights' initial values, data stream, noise
  int64_t log_every = 10, sample_every = 250, checkpoint_every = 250;
  bool resume = false;      // continue from RUN/train/<part>_checkpoint.safetensors
  std::string name;         // <part>: names the checkpoint, loss log and sample grids ("": the command's own)

  // The stage's <part>: --name, or the command's own name for it.
  std::string part(const std::string& command_default) const { return name.empty() ? command_default : name; }
};

inline void add_optim_options(CLI::App* c, OptimOptions& o) {
  c->add_option("--name", o.name,
                "name of this stage's checkpoint, loss log and sample grids in RUN/train (default: vae, vae_decoder, "
                "unet or unet_finetune), so that two stages of one kind keep theirs apart")
      ->check([](const std::string& n) {
        const bool ok = !n.empty() && n.find_first_not_of("abcdefghijklmnopqrstuvwxyz0123456789_-") == std::string::npos;
        return ok ? std::string() : "--name takes lower-case letters, digits, _ and -";
      });
  c->add_option("--steps", o.steps, "optimizer steps")->capture_default_str()->check(CLI::Range(int64_t(1), int64_t(1) << 40));
  c->add_option("--batch", o.batch, "examples per step")->capture_default_str()->check(CLI::Range(int64_t(1), int64_t(4096)));
  c->add_option("--lr", o.lr, "peak learning rate (AdamW)")->capture_default_str()->check(CLI::Range(0.0, 1.0));
  c->add_option("--warmup", o.warmup, "linear warm-up steps, then a cosine decay")
      ->capture_default_str()
      ->check(CLI::Range(int64_t(0), int64_t(1) << 40));
  c->add_option("--min-lr-ratio", o.min_lr_ratio, "floor of the cosine decay, as a fraction of --lr")
      ->capture_default_str()
      ->check(CLI::Range(0.0, 1.0));
  c->add_option("--weight-decay", o.weight_decay, "AdamW's decoupled weight decay")->capture_default_str()->check(CLI::Range(0.0, 1.0));
  c->add_option("--max-grad-norm", o.max_grad_norm, "clip the gradients' global L2 norm to this")
      ->capture_default_str()
      ->check(CLI::PositiveNumber);
  c->add_option("--seed", o.seed, "seed of the initial weights, the data stream and the noise")->capture_default_str();
  c->add_option("--log-every", o.log_every, "print a progress line every N steps")->capture_default_str()->check(CLI::PositiveNumber);
  c->add_option("--sample-every", o.sample_every, "write a sample grid every N steps")->capture_default_str()->check(CLI::PositiveNumber);
  c->add_option("--checkpoint-every", o.checkpoint_every, "write a training checkpoint every N steps")
      ->capture_default_str()
      ->check(CLI::PositiveNumber);
  c->add_flag("--resume", o.resume, "continue from the run's last training checkpoint");
}

}  // namespace ldm::cli
