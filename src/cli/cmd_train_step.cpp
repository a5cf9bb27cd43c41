// `ldm train-step`: one step of the course's LatentDiffusion.train_step on a batch from a file,
// its loss and every gradient, so that the function can be compared with a PyTorch run of it
// (scripts/make_train_step_reference.py does that run with diffusers):
//   latents [B,C,h,w] (already scaled), noise [B,C,h,w], timesteps [B] (int64 or float, in [0, T)),
//   context [B,L,D]
//     noisy_latents = sqrt(abar_t) latents + sqrt(1 - abar_t) noise     (DDPMScheduler.add_noise)
//     target        = noise, or sqrt(abar_t) noise - sqrt(1 - abar_t) latents under v_prediction
//     loss          = mean((unet(noisy_latents, t, context) - target)^2)
//   -> loss [1], noisy_latents, grad.context, grad.<name> for every U-Net parameter.
// abar and prediction_type come from the model's scheduler config. CPU, float32 weights.
#include <cmath>
#include <cstdio>
#include <string>
#include <vector>

#include "commands.hpp"
#include "ldm/core/memory.hpp"
#include "ldm/load.hpp"
#include "ldm/nn/losses.hpp"
#include "ldm/schedulers/noise_schedule.hpp"
#include "ldm/train/parameter.hpp"
#include "input_tensor.hpp"
#include "output_path.hpp"

namespace ldm::cli {
namespace {

struct TrainStepOptions {
  std::string model = "synthetic:sd15", inputs, output;
};

struct Batch {
  Tensor latents, noise, context;  // [B, C, h, w], [B, C, h, w], [B, L, D]
  std::vector<float> timesteps;    // [B], whole numbers in [0, T)
};

Batch read_batch(const SafeTensors& in, const UNetConfig& c, int num_train_timesteps) {
  Batch x;
  const int64_t m = c.size_multiple();
  x.latents = input(in, "latents", 4, str("[B, ", c.in_channels, ", h, w] latents, already scaled"));
  const int64_t B = x.latents.dim(0);
  LDM_CHECK(x.latents.dim(1) == c.in_channels && x.latents.dim(2) % m == 0 && x.latents.dim(3) % m == 0,
            "tensor 'latents' must be [B, ", c.in_channels, ", h, w] with h and w multiples of ", m, ", got ",
            x.latents.shape_str());
  x.noise = input_shaped(in, "noise", x.latents.shape(), "the noise added to the latents");
  const Tensor t = input_shaped(in, "timesteps", {B}, "one training timestep per latent");
  for (int64_t b = 0; b < B; ++b)
    LDM_CHECK(t[b] == std::floor(t[b]) && t[b] >= 0 && t[b] < float(num_train_timesteps), "tensor 'timesteps' in '",
              in.path(), "': ", t[b], " at [", b, "] is not a whole number in [0, ", num_train_timesteps,
              ") (the scheduler's num_train_timesteps)");
  x.timesteps.assign(t.begin(), t.end());
  x.context = input(in, "context", 3, str("[B, L, ", c.cross_attention_dim, "] text embeddings"));
  LDM_CHECK(x.context.dim(0) == B && x.context.dim(2) == c.cross_attention_dim, "tensor 'context' ",
            x.context.shape_str(), " does not fit latents ", x.latents.shape_str(), ": expected [", B, ", L, ",
            c.cross_attention_dim, "]");
  return x;
}

// a x + b y, per batch item: a[b], b[b] scale item b of the [B, ...] tensors x and y.
Tensor per_item_mix(const std::vector<float>& a, const Tensor& x, const std::vector<float>& b, const Tensor& y) {
  Tensor out = Tensor::empty(x.shape());
  const int64_t n = x.numel() / x.dim(0);
  for (int64_t i = 0; i < x.numel(); ++i)
    out[i] = float(double(a[size_t(i / n)]) * x[i] + double(b[size_t(i / n)]) * y[i]);
  return out;
}

void run_train_step(const TrainStepOptions& o) {
  check_output_path(o.output, "--output");
  SafeTensors in(o.inputs);
  ModelFiles files = open_model(o.model);
  const SchedulerConfig sc = scheduler_config(files);
  const Batch x = read_batch(in, unet_config(files), sc.num_train_timesteps);

  const auto t0 = std::chrono::steady_clock::now();
  UNet2DConditionModel unet = load_unet(files, LoadOptions{});
  std::vector<Parameter> params = parameters_of(unet);
  const double load_s = seconds_since(t0);

  const auto t1 = std::chrono::steady_clock::now();
  const NoiseSchedule schedule(sc);
  std::vector<float> sqrt_abar, sqrt_one_minus_abar;  // per batch item, float32 as diffusers
  for (float t : x.timesteps) {
    const float abar = schedule.alphas_cumprod(size_t(t));
    sqrt_abar.push_back(std::sqrt(abar));
    sqrt_one_minus_abar.push_back(std::sqrt(1.0f - abar));
  }
  const Tensor noisy = per_item_mix(sqrt_abar, x.latents, sqrt_one_minus_abar, x.noise);
  std::vector<float> minus_sqrt_one_minus_abar;
  for (float s : sqrt_one_minus_abar) minus_sqrt_one_minus_abar.push_back(-s);
  const Tensor target = sc.prediction_type == "v_prediction"
                            ? per_item_mix(sqrt_abar, x.noise, minus_sqrt_one_minus_abar, x.latents)
                            : x.noise;
  UNet2DConditionModel::Saved saved;
  const Tensor pred = unet.forward(noisy, x.timesteps, x.context, saved);  // [B, C, h, w]
  const float loss = mse_loss(pred, target);
  const UNet2DConditionModel::Grad g = unet.backward(saved, mse_loss_backward(pred, target));
  const double step_s = seconds_since(t1);

  SafeTensorsWriter out;
  out.add("loss", Tensor::full({1}, loss));
  out.add("noisy_latents", noisy);
  out.add("grad.context", g.context);
  for (const Parameter& p : params) out.add("grad." + p.name, p.as_stored(*p.grad));
  out.save(o.output);
  std::fprintf(stderr, "train-step (%s): loss %.6g; load %.1f s, forward and backward %.3f s, peak memory %.2f GB; wrote %s\n",
               sc.prediction_type.c_str(), double(loss), load_s, step_s, peak_rss_gb(), o.output.c_str());
}

}  // namespace

void add_train_step(CLI::App& app) {
  static TrainStepOptions o;
  auto* c = app.add_subcommand("train-step",
                               "One training step of the U-Net on a batch from a file: loss and every gradient (CPU)");
  c->add_option("--model", o.model, "diffusers folder, single .safetensors checkpoint, or synthetic:sd15")
      ->capture_default_str();
  c->add_option("--inputs", o.inputs, "safetensors file with latents, noise, timesteps, context")->required();
  c->add_option("--output", o.output, "safetensors file to write (loss, noisy_latents, grad.*)")->required();
  c->callback([] { run_train_step(o); });
}

}  // namespace ldm::cli
