// `ldm demo`: one resnet block and one spatial transformer of the SD1.5 U-Net's first level,
// at full size (batch 2 = one classifier-free-guidance step, 64x64 latents, 77 text tokens),
// on synthetic weights. Prints what each block did and how fast.
#include <chrono>
#include <cstdio>

#include "commands.hpp"
#include "ldm/blocks/resnet_block.hpp"
#include "ldm/blocks/timestep_embedding.hpp"
#include "ldm/blocks/transformer_2d.hpp"
#include "ldm/core/clock.hpp"

namespace ldm::cli {
namespace {

void run_demo(int size) {
  using clock = std::chrono::steady_clock;
  WeightStore w(std::make_shared<SyntheticSource>());
  ResnetBlock2D resnet;
  Transformer2DModel transformer;
  TimestepEmbedding time_embedding;
  resnet.load(w, "down_blocks.0.resnets.0", 320, 320, 1280);
  transformer.load(w, "down_blocks.0.attentions.0", 320, 8, 40, 768);
  time_embedding.load(w, "time_embedding", 320, 1280);
  w.finish();

  Tensor x = synth::tensor("demo.sample", {2, 320, size, size});
  Tensor context = synth::tensor("demo.context", {2, 77, 768});
  std::printf("input  x        %s  (batch 2 = uncond + text, %dx%d latent pixels, 320 channels)\n",
              x.shape_str().c_str(), size, size);
  std::printf("input  context  %s  (77 CLIP tokens x 768)\n", context.shape_str().c_str());

  auto t0 = clock::now();
  Tensor temb = time_embedding.forward(get_timestep_embedding({981.0f, 981.0f}, 320));
  std::printf("timestep 981 -> sinusoidal [2, 320] -> MLP %s\n", temb.shape_str().c_str());
  Tensor h = resnet.forward(x, temb);
  const double t_res = seconds_since(t0);
  const double px = double(size) * size;
  const double res_flop = 2.0 * 2 * px * 320 * 320 * 9 * 2;  // two 3x3 convs, batch 2
  std::printf("ResnetBlock2D        -> %s  %.3f s  (%.1f GFLOP/s in its convolutions)\n", h.shape_str().c_str(), t_res,
              res_flop / t_res * 1e-9);
  t0 = clock::now();
  Tensor out = transformer.forward(h, context);
  const double t_tr = seconds_since(t0);
  std::printf("Transformer2DModel   -> %s  %.3f s  (self-attention over %d tokens, cross-attention to 77)\n",
              out.shape_str().c_str(), t_tr, size * size);
  double sum = 0;
  for (float v : out) sum += double(v) * v;
  std::printf("output rms %.4f; every weight was synth.param(name), as in the diffusers references\n",
              std::sqrt(sum / double(out.numel())));
}

}  // namespace

void add_demo(CLI::App& app) {
  auto* cmd = app.add_subcommand("demo", "Run SD1.5 U-Net blocks end to end on synthetic weights");
  static int size = 64;
  cmd->add_option("--size", size, "latent height and width (64 = a 512x512 image)")->check(CLI::Range(8, 128));
  cmd->callback([] { run_demo(size); });
}

}  // namespace ldm::cli
