// The three SD1.5 models at full size, end to end, on synthetic weights (ldm/core/synth.hpp):
// one U-Net classifier-free-guidance step (batch 2, 64x64 latents, 77x768 context), a VAE
// decode 64x64 -> 512x512 (one image), and the CLIP text encoder (batch 2, 77 tokens). fp32.
//
//   build/bench/bench_models                                    # all three (~2 minutes on 2 cores)
//   build/bench/bench_models --benchmark_filter=UNet            # one model per process: its peak RSS
//   build/bench/bench_models --benchmark_filter=VAE
//   build/bench/bench_models --conv=direct                      # auto (default), direct, f23, f43
//   build/bench/bench_models --profile --benchmark_filter=UNet  # and a per-op table of one run
//   build/bench/bench_models --fp16-weights                     # weights kept in fp16 (LoadOptions::fp16_weights)
//   build/bench/bench_models --malloc=default                   # glibc's policy instead of keep_freed_memory
//
// Each model is loaded once (not timed), run once untimed as a warm-up, then timed in
// Iterations(1) x Repetitions(3) of real (wall) time; docs/performance_models.md quotes the
// median. Only one model is alive at a time (~3.4 GB of weights for the U-Net).
//
// Counters:
//   GFLOP/s     from the FLOPs below (multiply-adds of the GEMMs, convolutions and attention
//               products, counted x2; norms and element-wise work not counted)
//   peak_RSS_GB the process's peak resident set (weights + activations) during that
//               repetition: the high-water mark is reset (/proc/self/clear_refs "5") before
//               it and read (VmHWM) after; getrusage's ru_maxrss (lifetime peak, shown as
//               maxrss_GB) stands in where /proc is not writable
//   cores       CPU seconds of the process / wall seconds of the repetition: 2.0 on a quiet
//               2-core machine, less when other processes take the cores
//   load1       the 1-minute load average when the repetition started (this process's own
//               threads included: ~2 from the warm-up alone)
//
// FLOPs. The U-Net counts 1.68 TFLOP per CFG step in the issue; the analytic count here
// (flops_unet) gives 1.607 TFLOP (the convolutions, the transformer linears with GEGLU's 2x
// wide projection, and Q K^T and P V). GFLOP/s uses the issue's 1.68 so that figures stay
// comparable with it. VAE decode 64 -> 512: 2.515 TFLOP (conv MACs per the SD1.5 config plus
// the mid-block's single-head attention over 4096 pixels). CLIP: 26.6 GFLOP for batch 2.
// The counts are printed at start-up.
//
// --profile: after the warm-up, one more untimed run of each model with an OpProfile installed
// (ldm/core/op_profile.hpp): per op and shape its calls, time, share of the run, GFLOP/s, and
// that rate against a plain GEMM's on this machine (2048 x 640 x 640, the U-Net's 32x32
// projections: the median of 5), so the layers far below the GEMM's throughput stand out.
#include <benchmark/benchmark.h>

#include <chrono>
#include <cstdio>
#include <functional>
#include <memory>
#include <string>

#include "bench_common.hpp"
#include "ldm/core/clock.hpp"
#include "ldm/core/memory.hpp"
#include "ldm/core/op_profile.hpp"
#include "ldm/core/synth.hpp"
#include "ldm/core/weights.hpp"

using namespace ldm;
using namespace ldm::bench;

namespace {

constexpr double kUNetIssueFlops = 1.68e12;  // the issue's count for one CFG step

// ---- one model alive at a time, loaded on first use and kept across the repetitions

std::shared_ptr<void> g_model;
std::string g_model_name;
ConvAlgo g_conv = ConvAlgo::automatic;  // --conv: the U-Net's and the VAE's convolutions
bool g_profile = false;                  // --profile: a per-op table after the warm-up
bool g_fp16 = false;                     // --fp16-weights: every model's large matrices kept in fp16

// The synthetic weights, as the options ask for them.
WeightStore weights() {
  WeightStore w(std::make_shared<SyntheticSource>());
  w.set_conv_algo(g_conv);
  w.set_keep_fp16(g_fp16);
  return w;
}

// GFLOP/s of a plain GEMM of 2048 x 640 x 640 (C = A B^T), median of 5: what the profile's
// "of GEMM" column is relative to.
double gemm_gflops() {
  const int64_t M = 2048, N = 640, K = 640;
  const Tensor a = synth::tensor("profile.gemm.a", {M, K}), b = synth::tensor("profile.gemm.b", {N, K});
  Tensor c = Tensor::empty({M, N});
  std::vector<double> t;
  for (int i = 0; i < 6; ++i) {
    const auto t0 = std::chrono::steady_clock::now();
    gemm(false, true, M, N, K, 1.0f, a.data(), K, b.data(), K, 0.0f, c.data(), N);
    if (i > 0) t.push_back(seconds_since(t0));  // the first call warms up
  }
  std::sort(t.begin(), t.end());
  return linear_flops(M, K, N) / t[t.size() / 2] * 1e-9;
}

// With --profile: one run of f under an OpProfile, its table printed.
template <typename F>
void print_profile(const char* what, const F& f) {
  static const double gemm_rate = gemm_gflops();
  OpProfile profile;
  const auto t0 = std::chrono::steady_clock::now();
  {
    OpProfile::Scope on(profile);
    benchmark::DoNotOptimize(f().data());
  }
  const double total = seconds_since(t0);
  std::printf("\n%s, one run: %.3f s; a plain GEMM 2048 x 640 x 640 runs at %.0f GFLOP/s here\n%s\n", what, total,
              gemm_rate, profile.table(total, gemm_rate).c_str());
  std::fflush(stdout);
}

// The first time only: one untimed run of f (the warm-up: Winograd transforms made, pages
// touched), then with --profile one more under the profiler.
template <typename F>
void warm_up(bool& warm, const char* what, const F& f) {
  if (warm) return;
  warm = true;
  benchmark::DoNotOptimize(f().data());
  if (g_profile) print_profile(what, f);
}

template <typename M>
const M& model(const std::string& name, const std::function<void(M&)>& load) {
  if (g_model_name != name) {
    g_model.reset();  // free the previous model first
    auto m = std::make_shared<M>();
    load(*m);
    g_model = m;
    g_model_name = name;
  }
  return *static_cast<const M*>(g_model.get());
}

// Times f once per iteration (Iterations(1)), reporting GFLOP/s and the peak RSS of the run.
template <typename F>
void timed(benchmark::State& state, double flops, F f) {
  const MachineShare share;
  const bool reset = reset_peak_rss();
  for (auto _ : state) benchmark::DoNotOptimize(f().data());
  share.report(state);
  state.counters["GFLOP/s"] = gflops_rate(flops, state);
  state.counters["peak_RSS_GB"] = (reset ? peak_rss_since_reset_bytes() : ldm::peak_rss_bytes()) / 1e9;
  state.counters["maxrss_GB"] = ldm::peak_rss_bytes() / 1e9;
}

// ---- the benchmarks

// One CFG step: latents [2, 4, 64, 64] at t = 981, context [2, 77, 768].
void BM_UNetStep(benchmark::State& state) {
  const int64_t B = 2, S = state.range(0), L = 77;
  const auto& unet = model<UNet2DConditionModel>("unet", [](UNet2DConditionModel& u) {
    WeightStore w = weights();
    u.load(w, "", UNetConfig{});
    w.finish();
  });
  const Tensor x = synth::tensor("input.unet_64.sample", {B, 4, S, S});
  const Tensor ctx = synth::tensor("input.unet_64.context", {B, L, 768});
  const auto step = [&] { return unet.forward(x, 981.0f, ctx); };
  static bool warm = false;
  warm_up(warm, "U-Net CFG step", step);
  timed(state, kUNetIssueFlops * double(S * S) / (64.0 * 64.0), step);
}

// Decode of one latent [1, 4, 64, 64] -> image [1, 3, 512, 512].
void BM_VAEDecode(benchmark::State& state) {
  const int64_t s = state.range(0);
  const auto& vae = model<AutoencoderKL>("vae", [](AutoencoderKL& v) {
    WeightStore w = weights();
    v.load(w, "", VAEConfig{});
    w.finish();
  });
  const Tensor z = synth::tensor("input.vae_64.latent", {1, 4, s, s});
  const auto decode = [&] { return vae.decode(z); };
  static bool warm = false;
  warm_up(warm, "VAE decode", decode);
  timed(state, flops_vae_decode(VAEConfig{}, s), decode);
}

// Prompt and empty prompt of one CFG step: ids [2, 77].
void BM_CLIPText(benchmark::State& state) {
  const int64_t B = 2, L = 77;
  const auto& clip = model<CLIPTextModel>("clip", [](CLIPTextModel& c) {
    WeightStore w = weights();
    c.load(w, "text_model", CLIPTextConfig{});
    w.finish();
  });
  std::vector<int64_t> ids(size_t(B * L), 49407);  // <|endoftext|> padding
  ids[0] = ids[size_t(L)] = 49406;                  // <|startoftext|>
  for (int64_t i = 1; i <= 10; ++i) ids[size_t(i)] = 320 + i;  // a 10-token prompt in row 0
  const auto encode = [&] { return clip.encode(ids, B); };
  static bool warm = false;
  warm_up(warm, "CLIP text encoder", encode);
  timed(state, flops_clip(CLIPTextConfig{}, B, L), encode);
}

void configure(benchmark::internal::Benchmark* b) {
  b->Iterations(1)->Repetitions(3)->UseRealTime()->Unit(benchmark::kSecond);
}

BENCHMARK(BM_UNetStep)->Arg(64)->Apply(configure);
BENCHMARK(BM_VAEDecode)->Arg(64)->Apply(configure);
BENCHMARK(BM_CLIPText)->Apply(configure)->Unit(benchmark::kMillisecond);

}  // namespace

int main(int argc, char** argv) {
  if (!take_conv_option(argc, argv, g_conv, "bench_models")) return 1;
  bool unknown = false;
  take_option(argc, argv, "--profile", [&](const std::string& rest) { (rest.empty() ? g_profile : unknown) = true; });
  take_option(argc, argv, "--fp16-weights", [&](const std::string& rest) { (rest.empty() ? g_fp16 : unknown) = true; });
  if (unknown) return std::fprintf(stderr, "bench_models: unknown option (--profile, --fp16-weights take no value)\n"), 1;
  if (!take_malloc_option(argc, argv, "bench_models", "ldm generate")) return 1;  // ldm/core/memory.hpp
  std::printf("convolutions: --conv=%s; weights: %s\n", conv_algo_name(g_conv), g_fp16 ? "fp16 (--fp16-weights)" : "fp32");
  std::printf("FLOPs counted (2 per multiply-add):\n");
  std::printf("  U-Net CFG step, batch 2, 64x64, 77 tokens: %.4g TFLOP (this count), %.4g TFLOP (issue; used)\n",
              flops_unet(UNetConfig{}, 2, 64, 77) * 1e-12, kUNetIssueFlops * 1e-12);
  std::printf("  VAE decode 64x64 -> 512x512, one image:   %.4g TFLOP\n", flops_vae_decode(VAEConfig{}, 64) * 1e-12);
  std::printf("  CLIP text encoder, batch 2, 77 tokens:     %.4g GFLOP\n",
              flops_clip(CLIPTextConfig{}, 2, 77) * 1e-9);
  std::fflush(stdout);
  benchmark::Initialize(&argc, argv);
  if (benchmark::ReportUnrecognizedArguments(argc, argv)) return 1;
  benchmark::RunSpecifiedBenchmarks();
  benchmark::Shutdown();
  return 0;
}
