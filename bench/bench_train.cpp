// Training speed and memory: the forward that saves activations and the backward of the three
// models, on synthetic weights (ldm/core/synth.hpp), fp32, at the tiny configs of the tests, the
// small configs of the ldm-shapes job (../shared/notes/ldm-shapes-calibration.md) and SD1.5 at
// small sizes. Issue 11 asks for a backward at most 2.5x its forward's time, and for a training
// step of the SD1.5 U-Net at 32x32 latents, batch 1, that fits 24 GB.
//
//   build/bench/bench_train                                      # everything (~5 minutes on 2 cores)
//   build/bench/bench_train --benchmark_filter=unet_sd15         # one case
//   build/bench/bench_train --benchmark_filter='/backward'       # the backwards only (and their ratios)
//   build/bench/bench_train --benchmark_filter=memory            # the SD1.5 U-Net step's memory alone
//   build/bench/bench_train --conv=direct                        # forwards without Winograd (auto, direct, f23, f43)
//   OMP_NUM_THREADS=1 build/bench/bench_train                    # one core: steadier on a shared machine
//   build/bench/bench_train --malloc=default                     # glibc's allocator policy, not `ldm train`'s
//
// Cases (each name is <case>/<phase>):
//   unet_test       the tests' unet_tiny: [32, 64], 2 layers, 8 heads, batch 2, 16x16, context [2, 7, 32]
//   unet_small      [64, 128, 128], 1 layer, cross-attention 64, 4 heads, batch 64, 8x8, context [64, 77, 64]
//   unet_sd15       SD1.5 U-Net, batch 1, 32x32 latents, context [1, 77, 768]
//   vae_test_*      the tests' vae_tiny: [32, 64], 2 layers, 32 groups; 32x32 image <-> 16x16 latent, batch 1
//   vae_small_*     [32, 64, 64, 64], 1 layer, 16 groups; 64x64 images <-> 8x8 latents, batch 32
//   vae_sd15_*      SD1.5 VAE, 128x128 image <-> 16x16 latent, batch 1  (* = encode: encoder + quant_conv,
//                   decode: post_quant_conv + decoder; whole batch at once, as training runs them)
//   clip_small      CLIP-shaped: hidden 64, MLP 256, 2 layers, 4 heads, full 49408 vocabulary, batch 64, 77 tokens
//   clip_sd15       SD1.5 CLIP text encoder, batch 1, 77 tokens
// Phases:
//   inference   forward without saving (the sampling path), steady state
//   forward     forward saving activations (U-Net: + the MSE loss to the noise), timed; then an
//               untimed backward, as in a training step (a backward drops the kept Winograd
//               transforms, so each training forward remakes them: counted here, as in training)
//   backward    an untimed forward, then the backward alone (loss gradient included), timed;
//               bwd/fwd is this backward over the forward of the same iteration
//   memory      (unet_sd15 only, run first) a training step (forward, loss, backward, AdamW) with
//               every parameter's gradient and the optimizer's state allocated, as a training loop
//               has them: its peak RSS, and the bytes of the saved activations per block
//
// Each case is loaded once (not timed; one model alive at a time), warmed up with one inference,
// forward and backward, then timed: the SD1.5 cases Iterations(1) x Repetitions(3), the others
// as many iterations as fill 0.2 s x Repetitions(5). Times are manual (the timed part only, wall
// clock); docs/performance_training.md quotes the medians.
//
// Counters:
//   GFLOP/s     forward: the model's FLOPs (bench_common.hpp: GEMMs, convolutions, attention
//               products, 2 per multiply-add; norms and element-wise work not counted) over the
//               time; backward: twice those (dX and dW), over the backward's time. Work the
//               backward repeats (the attention probabilities, GroupNorm+SiLU outputs) is not counted.
//   fwd_ms      backward phase: the forward of the same iterations, ms
//   bwd/fwd     backward phase: backward time / forward time (issue 11: at most 2.5)
//   bwd/fwd_cpu the same ratio of the process's CPU time: steadier than wall time where other
//               processes take the cores (with OMP_NUM_THREADS=1 it is the ratio of the work)
//   saved_MB    forward phase: bytes of the tensors in the model's Saved struct, each buffer once
//               (10^6 bytes)
//   cores       CPU seconds / wall seconds of the repetition (timed and untimed parts): 2.0 on
//               a quiet 2-core machine
//   load1       the 1-minute load average when the repetition started
//   memory:     peak_RSS_GB (high-water mark of the step, /proc/self/clear_refs reset before it),
//               rss_before_GB, no_optimizer_peak_RSS_GB (the first step's forward + backward, before
//               AdamW's state exists), params_GB, grads_GB, adamw_GB, maxrss_GB (the process's
//               lifetime peak), saved_MB and saved_MB:<block> (also printed as a table); time: the step
#include <benchmark/benchmark.h>

#include <cstdio>
#include <memory>
#include <set>
#include <string>
#include <utility>
#include <vector>

#include "bench_common.hpp"
#include "ldm/core/memory.hpp"
#include "ldm/core/synth.hpp"
#include "ldm/core/weights.hpp"
#include "ldm/nn/losses.hpp"
#include "ldm/train/adamw.hpp"
#include "ldm/train/parameter.hpp"

using namespace ldm;
using namespace ldm::bench;

namespace {

// ---- bytes of the saved activations: every tensor of a Saved struct, each buffer counted once
// (a tensor that two layers save, such as the time embedding every resnet keeps, is one buffer)

struct SavedBytes {
  std::set<const float*> seen;
  double bytes = 0;
  void operator()(const Tensor& t) {
    if (t.defined() && seen.insert(t.data()).second) bytes += double(t.numel()) * sizeof(float);
  }
};

void add(const ResnetBlock2D::Saved& s, SavedBytes& b) { b(s.x), b(s.h), b(s.temb); }
void add(const Attention::Saved& s, SavedBytes& b) { b(s.x), b(s.context), b(s.q), b(s.k), b(s.v), b(s.o); }
void add(const FeedForward::Saved& s, SavedBytes& b) { b(s.x), b(s.h); }
void add(const BasicTransformerBlock::Saved& s, SavedBytes& b) {
  b(s.x), b(s.h1), b(s.h2);
  add(s.attn1, b), add(s.attn2, b), add(s.ff, b);
}
void add(const Transformer2DModel::Saved& s, SavedBytes& b) {
  b(s.x), b(s.h);
  for (const auto& t : s.blocks) add(t, b);
}
void add(const UNetDownBlock::Saved& s, SavedBytes& b) {
  for (const auto& r : s.resnets) add(r, b);
  for (const auto& a : s.attentions) add(a, b);
  b(s.down_x);
}
void add(const UNetMidBlock2DCrossAttn::Saved& s, SavedBytes& b) {
  for (const auto& r : s.resnets) add(r, b);
  for (const auto& a : s.attentions) add(a, b);
}
void add(const UNetUpBlock::Saved& s, SavedBytes& b) {
  for (const auto& r : s.resnets) add(r, b);
  for (const auto& a : s.attentions) add(a, b);
  b(s.up_x);
}
void add(const VAEAttention::Saved& s, SavedBytes& b) { b(s.x), add(s.attn, b); }
void add(const UNetMidBlock2D::Saved& s, SavedBytes& b) {
  for (const auto& r : s.resnets) add(r, b);
  for (const auto& a : s.attentions) add(a, b);
}
void add(const DownEncoderBlock2D::Saved& s, SavedBytes& b) {
  for (const auto& r : s.resnets) add(r, b);
  b(s.down_x);
}
void add(const UpDecoderBlock2D::Saved& s, SavedBytes& b) {
  for (const auto& r : s.resnets) add(r, b);
  b(s.up_x);
}
void add(const AutoencoderKL::EncodeSaved& s, SavedBytes& b) {
  b(s.encoder.x), b(s.encoder.h), b(s.h), b(s.moments);
  for (const auto& d : s.encoder.down_blocks) add(d, b);
  add(s.encoder.mid_block, b);
}
void add(const AutoencoderKL::DecodeSaved& s, SavedBytes& b) {
  b(s.z), b(s.decoder.z), b(s.decoder.h);
  add(s.decoder.mid_block, b);
  for (const auto& u : s.decoder.up_blocks) add(u, b);
}
void add(const CLIPTextModel::Saved& s, SavedBytes& b) {
  b(s.h);
  for (const auto& l : s.layers)
    b(l.x), b(l.h), b(l.self_attn.x), b(l.self_attn.q), b(l.self_attn.k), b(l.self_attn.v), b(l.self_attn.o),
        b(l.mlp.x), b(l.mlp.h);
}

// The U-Net's saved bytes per block, in the forward's order; "other": conv_in's input, the time
// embedding, conv_norm_out's input, the context.
std::vector<std::pair<std::string, double>> unet_saved_by_block(const UNet2DConditionModel::Saved& s) {
  SavedBytes b;
  std::vector<std::pair<std::string, double>> out;
  auto take = [&](const std::string& name) {
    out.emplace_back(name, b.bytes);
    b.bytes = 0;
  };
  b(s.x), b(s.temb), b(s.time_embedding.x), b(s.time_embedding.h), b(s.h), b(s.context);
  take("other");
  for (size_t i = 0; i < s.down_blocks.size(); ++i) add(s.down_blocks[i], b), take("down_blocks." + std::to_string(i));
  add(s.mid_block, b), take("mid_block");
  for (size_t i = 0; i < s.up_blocks.size(); ++i) add(s.up_blocks[i], b), take("up_blocks." + std::to_string(i));
  return out;
}

// ---- the cases: a model, its inputs, and its three passes

struct Case {
  std::string name;
  double flops = 0;   // forward FLOPs at the case's shapes
  bool full = false;  // full-size SD1.5: Iterations(1) x 3
  virtual ~Case() = default;
  virtual void load() = 0;                 // model and inputs
  virtual void unload() = 0;               // frees both
  virtual void infer() = 0;                // forward without saving
  virtual void forward() = 0;              // forward saving activations
  virtual void backward() = 0;             // backward of the last forward; frees what it saved
  virtual double saved_bytes() const = 0;  // after forward()
};

ConvAlgo g_conv = ConvAlgo::automatic;  // --conv: the convolutions, forward and backward (direct: no Winograd either way)

template <typename M, typename Config>
M load_synthetic(const std::string& prefix, const Config& c) {
  WeightStore w(std::make_shared<SyntheticSource>());
  w.set_conv_algo(g_conv);
  M m;
  m.load(w, prefix, c);
  w.finish();
  return m;
}

struct UNetCase : Case {
  UNetConfig config;
  int64_t B, S, L;
  std::unique_ptr<UNet2DConditionModel> unet;
  Tensor sample, context, target, pred;
  std::vector<float> timesteps;
  UNet2DConditionModel::Saved saved;

  UNetCase(std::string name_, UNetConfig c, int64_t B_, int64_t S_, int64_t L_, bool full_)
      : config(std::move(c)), B(B_), S(S_), L(L_) {
    name = std::move(name_), full = full_, flops = flops_unet(config, B, S, L);
  }
  void load() override {
    unet = std::make_unique<UNet2DConditionModel>(load_synthetic<UNet2DConditionModel>("", config));
    sample = synth::tensor("input.train.sample", {B, config.in_channels, S, S});
    target = synth::tensor("input.train.noise", {B, config.out_channels, S, S});
    context = synth::tensor("input.train.context", {B, L, config.cross_attention_dim});
    timesteps.clear();
    for (int64_t b = 0; b < B; ++b) timesteps.push_back(float((b * 389 + 981) % 1000));  // spread over [0, 1000)
  }
  void unload() override {
    unet.reset();
    sample = context = target = pred = Tensor();
    saved = UNet2DConditionModel::Saved();
  }
  void infer() override { benchmark::DoNotOptimize(unet->forward(sample, timesteps, context).data()); }
  void forward() override {
    pred = unet->forward(sample, timesteps, context, saved);
    benchmark::DoNotOptimize(mse_loss(pred, target));
  }
  void backward() override {
    benchmark::DoNotOptimize(unet->backward(saved, mse_loss_backward(pred, target)).sample.data());
  }
  double saved_bytes() const override {
    double n = 0;
    for (const auto& [block, bytes] : unet_saved_by_block(saved)) n += bytes;
    return n;
  }
};

struct VAECase : Case {
  VAEConfig config;
  bool encode;
  int64_t B, S;  // batch, image side
  std::unique_ptr<AutoencoderKL> vae;
  Tensor x, target, y;  // input (image or latent), a target for the loss, the output
  DiagonalGaussian posterior;
  AutoencoderKL::EncodeSaved esaved;
  AutoencoderKL::DecodeSaved dsaved;

  VAECase(std::string name_, VAEConfig c, bool encode_, int64_t B_, int64_t S_, bool full_)
      : config(std::move(c)), encode(encode_), B(B_), S(S_) {
    name = std::move(name_), full = full_;
    flops =
        double(B) * (encode ? flops_vae_encode(config, S) : flops_vae_decode(config, S / config.downscale_factor()));
  }
  void load() override {
    vae = std::make_unique<AutoencoderKL>(load_synthetic<AutoencoderKL>("", config));
    const int64_t s = S / config.downscale_factor();
    x = encode ? synth::tensor("input.train.image", {B, config.in_channels, S, S})
               : synth::tensor("input.train.latent", {B, config.latent_channels, s, s});
    target = encode ? synth::tensor("input.train.latent", {B, config.latent_channels, s, s})
                    : synth::tensor("input.train.image", {B, config.out_channels, S, S});
  }
  void unload() override {
    vae.reset();
    x = target = y = Tensor();
    posterior = DiagonalGaussian();
    esaved = AutoencoderKL::EncodeSaved();
    dsaved = AutoencoderKL::DecodeSaved();
  }
  void infer() override {
    // The training path's shapes: the whole batch at once (AutoencoderKL::encode/decode go image by image).
    const Tensor out = encode ? vae->quant_conv.forward(vae->encoder.forward(x))
                              : vae->decoder.forward(vae->post_quant_conv.forward(x));
    benchmark::DoNotOptimize(out.data());
  }
  void forward() override {
    if (encode) {
      posterior = vae->encode(x, esaved);
      benchmark::DoNotOptimize(mse_loss(posterior.mean, target));
    } else {
      y = vae->decode(x, dsaved);
      benchmark::DoNotOptimize(mse_loss(y, target));
    }
  }
  void backward() override {
    // Encode: a loss on the mean (and a zero one on the logvar); decode: MSE to an image.
    const Tensor d = encode ? vae->encode_backward(
                                  esaved, {mse_loss_backward(posterior.mean, target), Tensor(posterior.logvar.shape())})
                            : vae->decode_backward(dsaved, mse_loss_backward(y, target));
    benchmark::DoNotOptimize(d.data());
  }
  double saved_bytes() const override {
    SavedBytes b;
    if (encode)
      add(esaved, b);
    else
      add(dsaved, b);
    return b.bytes;
  }
};

struct CLIPCase : Case {
  CLIPTextConfig config;
  int64_t B, L = 77;
  std::unique_ptr<CLIPTextModel> clip;
  std::vector<int64_t> ids;
  Tensor y, target;
  CLIPTextModel::Saved saved;

  CLIPCase(std::string name_, CLIPTextConfig c, int64_t B_, bool full_) : config(std::move(c)), B(B_) {
    name = std::move(name_), full = full_, flops = flops_clip(config, B, L);
  }
  void load() override {
    clip = std::make_unique<CLIPTextModel>(load_synthetic<CLIPTextModel>("text_model", config));
    ids.assign(size_t(B * L), config.vocab_size - 1);  // <|endoftext|> padding
    for (int64_t b = 0; b < B; ++b) {
      ids[size_t(b * L)] = config.vocab_size - 2;  // <|startoftext|>
      for (int64_t i = 1; i <= 10; ++i) ids[size_t(b * L + i)] = (320 + 7 * b + i) % (config.vocab_size - 2);
    }
    target = synth::tensor("input.train.text", {B, L, config.hidden_size});
  }
  void unload() override {
    clip.reset();
    y = target = Tensor();
    saved = CLIPTextModel::Saved();
  }
  void infer() override { benchmark::DoNotOptimize(clip->forward(ids, B).last_hidden_state.data()); }
  void forward() override {
    y = clip->forward(ids, B, saved);
    benchmark::DoNotOptimize(mse_loss(y, target));
  }
  void backward() override { clip->backward(saved, mse_loss_backward(y, target)); }
  double saved_bytes() const override {
    SavedBytes b;
    add(saved, b);
    return b.bytes;
  }
};

// ---- one case alive at a time, loaded and warmed up on first use

Case* g_current = nullptr;

void use(Case& c) {
  if (g_current == &c) return;
  if (g_current) g_current->unload();
  g_current = nullptr;
  c.load();
  c.infer(), c.forward(), c.backward();  // allocates the gradients, touches every buffer once
  g_current = &c;
}

double now() { return seconds(CLOCK_MONOTONIC); }
double cpu_now() { return seconds(CLOCK_PROCESS_CPUTIME_ID); }

void run_inference(benchmark::State& state, Case* c) {
  use(*c);
  c->infer();  // remakes the Winograd transforms a backward dropped: steady-state sampling speed
  const MachineShare share;
  for (auto _ : state) {
    const double t0 = now();
    c->infer();
    state.SetIterationTime(now() - t0);
  }
  share.report(state);
  state.counters["GFLOP/s"] = gflops_rate(c->flops, state);
}

void run_forward(benchmark::State& state, Case* c) {
  use(*c);
  const MachineShare share;
  double saved = 0;
  for (auto _ : state) {
    const double t0 = now();
    c->forward();
    state.SetIterationTime(now() - t0);
    saved = c->saved_bytes();
    c->backward();
  }
  share.report(state);
  state.counters["GFLOP/s"] = gflops_rate(c->flops, state);
  state.counters["saved_MB"] = saved / 1e6;
}

void run_backward(benchmark::State& state, Case* c) {
  use(*c);
  const MachineShare share;
  double fwd = 0, bwd = 0, fwd_cpu = 0, bwd_cpu = 0;
  for (auto _ : state) {
    const double t0 = now(), c0 = cpu_now();
    c->forward();
    const double t1 = now(), c1 = cpu_now();
    c->backward();
    const double t2 = now(), c2 = cpu_now();
    state.SetIterationTime(t2 - t1);
    fwd += t1 - t0, bwd += t2 - t1, fwd_cpu += c1 - c0, bwd_cpu += c2 - c1;
  }
  share.report(state);
  state.counters["GFLOP/s"] = gflops_rate(2 * c->flops, state);
  state.counters["fwd_ms"] = 1e3 * fwd / double(state.iterations());
  state.counters["bwd/fwd"] = bwd / fwd;
  state.counters["bwd/fwd_cpu"] = bwd_cpu / fwd_cpu;
}

// Training steps of the U-Net as a training loop runs them: forward, MSE loss, backward, AdamW
// step. The first step's forward and backward run before any optimizer state exists (their
// peak: no_optimizer_peak_RSS_GB), then its AdamW step allocates the two moments; the second
// step is measured whole: the RSS before it (weights, gradients, AdamW's moments), its peak
// (the high-water mark, reset before it), its time, and the saved activations per block. Loaded here without the timing
// cases' warm-up, so that the memory case run alone (--benchmark_filter=memory) or first is a fresh process's first
// steps.
void run_memory(benchmark::State& state, UNetCase* c) {
  if (g_current != c) {
    if (g_current) g_current->unload();
    g_current = nullptr;
    c->load();
    g_current = c;
  }
  std::vector<Parameter> params = parameters_of(*c->unet);  // allocates every gradient
  double params_bytes = 0;
  for (const Parameter& p : params) params_bytes += double(p.value->numel()) * sizeof(float);
  AdamW opt;
  opt.lr = 1e-6;
  std::vector<std::pair<std::string, double>> blocks;
  double rss_before = 0, peak = 0, seconds_step = 0, rss_before_1 = 0, peak_1 = 0;
  for (auto _ : state) {
    // First step: no optimizer state yet (what forward + backward alone need), then AdamW's.
    rss_before_1 = rss_bytes();
    const bool reset_1 = reset_peak_rss();
    zero_grad(params);
    c->forward();
    c->backward();
    peak_1 = reset_1 ? peak_rss_since_reset_bytes() : ldm::peak_rss_bytes();
    opt.step(params);  // allocates AdamW's state
    rss_before = rss_bytes();
    const bool reset = reset_peak_rss();
    const double t0 = now();
    zero_grad(params);
    c->forward();
    blocks = unet_saved_by_block(c->saved);
    c->backward();
    opt.step(params);
    seconds_step = now() - t0;
    state.SetIterationTime(seconds_step);
    peak = reset ? peak_rss_since_reset_bytes() : ldm::peak_rss_bytes();
  }
  double total = 0;
  std::printf("\nsaved activations of one %s training step (each buffer once; MB = 10^6 bytes):\n", c->name.c_str());
  for (const auto& [block, bytes] : blocks) {
    std::printf("  %-14s %9.1f MB\n", block.c_str(), bytes / 1e6);
    state.counters["saved_MB:" + block] = bytes / 1e6;
    total += bytes;
  }
  std::printf("  %-14s %9.1f MB\n", "total", total / 1e6);
  std::printf("parameters %.3f GB, gradients %.3f GB, AdamW state %.3f GB (GB = 10^9 bytes)\n", params_bytes / 1e9,
              params_bytes / 1e9, 2 * params_bytes / 1e9);
  std::printf("first step, forward + backward (no optimizer state yet): RSS before %.3f GB, peak %.3f GB\n",
              rss_before_1 / 1e9, peak_1 / 1e9);
  std::printf("second step, forward + backward + AdamW: RSS before %.3f GB, peak %.3f GB; %.2f s\n", rss_before / 1e9,
              peak / 1e9, seconds_step);
  std::printf("process lifetime peak %.3f GB\n\n", ldm::peak_rss_bytes() / 1e9);
  std::fflush(stdout);
  state.counters["saved_MB"] = total / 1e6;
  state.counters["params_GB"] = params_bytes / 1e9;
  state.counters["grads_GB"] = params_bytes / 1e9;  // one gradient per parameter, all allocated
  state.counters["adamw_GB"] = 2 * params_bytes / 1e9;
  state.counters["rss_before_GB"] = rss_before / 1e9;
  state.counters["peak_RSS_GB"] = peak / 1e9;
  state.counters["no_optimizer_peak_RSS_GB"] = peak_1 / 1e9;
  state.counters["maxrss_GB"] = ldm::peak_rss_bytes() / 1e9;
}

// ---- the configs

// The tests' unet_tiny (tests/data/grad_blocks.safetensors, scripts/make_grad_reference_models.py).
UNetConfig unet_test_config() {
  UNetConfig c;
  c.block_out_channels = {32, 64};
  c.layers_per_block = {2, 2};
  c.down_block_types = {"CrossAttnDownBlock2D", "DownBlock2D"};
  c.up_block_types = {"UpBlock2D", "CrossAttnUpBlock2D"};
  c.cross_attention_dim = 32;
  c.attention_head_dim = {8, 8};
  c.transformer_layers_per_block = {1, 1};
  c.norm_num_groups = 32;
  c.sample_size = 16;
  return c;
}

// The ldm-shapes U-Net (../shared/notes/ldm-shapes-calibration.md): 5.8M parameters.
UNetConfig unet_small_config() {
  UNetConfig c;
  c.block_out_channels = {64, 128, 128};
  c.layers_per_block = {1, 1, 1};
  c.down_block_types = {"CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"};
  c.up_block_types = {"UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"};
  c.cross_attention_dim = 64;
  c.attention_head_dim = {4, 4, 4};
  c.transformer_layers_per_block = {1, 1, 1};
  c.sample_size = 8;
  return c;
}

VAEConfig vae_test_config() {  // the tests' vae_tiny
  VAEConfig c;
  c.block_out_channels = {32, 64};
  c.layers_per_block = 2;
  c.sample_size = 32;
  return c;
}

VAEConfig vae_small_config() {  // the ldm-shapes VAE: 1.25M parameters
  VAEConfig c;
  c.block_out_channels = {32, 64, 64, 64};
  c.layers_per_block = 1;
  c.norm_num_groups = 16;
  c.sample_size = 64;
  return c;
}

CLIPTextConfig clip_small_config() {  // the ldm-shapes text encoder: CLIP-shaped, hidden 64, 2 layers
  CLIPTextConfig c;
  c.hidden_size = 64;
  c.intermediate_size = 256;
  c.num_hidden_layers = 2;
  c.num_attention_heads = 4;
  return c;
}

std::vector<std::unique_ptr<Case>> g_cases;

void register_case(std::unique_ptr<Case> c) {
  Case* p = c.get();
  g_cases.push_back(std::move(c));
  auto configure = [p](benchmark::internal::Benchmark* b) {
    b->UseManualTime()->Unit(benchmark::kMillisecond);
    if (p->full)
      b->Iterations(1)->Repetitions(3);
    else
      b->MinTime(0.2)->Repetitions(5)->ReportAggregatesOnly(true);
  };
  configure(benchmark::RegisterBenchmark((p->name + "/inference").c_str(), run_inference, p));
  configure(benchmark::RegisterBenchmark((p->name + "/forward").c_str(), run_forward, p));
  configure(benchmark::RegisterBenchmark((p->name + "/backward").c_str(), run_backward, p));
}

}  // namespace

int main(int argc, char** argv) {
  register_case(std::make_unique<UNetCase>("unet_test", unet_test_config(), 2, 16, 7, false));
  register_case(std::make_unique<UNetCase>("unet_small", unet_small_config(), 64, 8, 77, false));
  auto sd15 = std::make_unique<UNetCase>("unet_sd15", UNetConfig{}, 1, 32, 77, true);
  benchmark::RegisterBenchmark("unet_sd15/memory", run_memory, sd15.get())  // first: a fresh load
      ->Iterations(1)
      ->Repetitions(1)
      ->UseManualTime()
      ->Unit(benchmark::kSecond);
  register_case(std::move(sd15));
  for (const bool encode : {true, false}) {
    const std::string what = encode ? "_encode" : "_decode";
    register_case(std::make_unique<VAECase>("vae_test" + what, vae_test_config(), encode, 1, 32, false));
    register_case(std::make_unique<VAECase>("vae_small" + what, vae_small_config(), encode, 32, 64, false));
    register_case(std::make_unique<VAECase>("vae_sd15" + what, VAEConfig{}, encode, 1, 128, true));
  }
  register_case(std::make_unique<CLIPCase>("clip_small", clip_small_config(), 64, false));
  register_case(std::make_unique<CLIPCase>("clip_sd15", CLIPTextConfig{}, 1, true));

  if (!take_conv_option(argc, argv, g_conv, "bench_train")) return 1;
  if (!take_malloc_option(argc, argv, "bench_train", "ldm train")) return 1;  // ldm/core/memory.hpp
  std::printf("convolutions: --conv=%s (a 3x3 backward's dX follows the forward's rule, its dW is Winograd's\n"
              "adjoint where it pays; direct: im2col + GEMM both ways)\n",
              conv_algo_name(g_conv));
  std::printf("forward FLOPs counted (2 per multiply-add; a backward counts twice these):\n");
  for (const auto& c : g_cases) std::printf("  %-18s %10.4g GFLOP\n", c->name.c_str(), c->flops * 1e-9);
  std::fflush(stdout);
  benchmark::Initialize(&argc, argv);
  if (benchmark::ReportUnrecognizedArguments(argc, argv)) return 1;
  benchmark::RunSpecifiedBenchmarks();
  benchmark::Shutdown();
  if (g_current) g_current->unload();
  return 0;
}
