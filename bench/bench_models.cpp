// The three SD1.5 models at full size, end to end, on synthetic weights (ldm/core/synth.hpp):
// one U-Net classifier-free-guidance step (batch 2, 64x64 latents, 77x768 context), a VAE
// decode 64x64 -> 512x512 (one image), and the CLIP text encoder (batch 2, 77 tokens). fp32.
//
//   build/bench/bench_models                                    # all three (~2 minutes on 2 cores)
//   build/bench/bench_models --benchmark_filter=UNet            # one model per process: its peak RSS
//   build/bench/bench_models --benchmark_filter=VAE
//   build/bench/bench_models --conv=direct                      # auto (default), direct, f23, f43
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
#include <benchmark/benchmark.h>

#include <cstdlib>
#include <ctime>

#include <cstdio>
#include <fstream>
#include <functional>
#include <memory>
#include <string>

#include "ldm/core/memory.hpp"
#include "ldm/core/synth.hpp"
#include "ldm/core/weights.hpp"
#include "ldm/models/clip_text.hpp"
#include "ldm/models/unet.hpp"
#include "ldm/models/vae.hpp"

using namespace ldm;

namespace {

// ---- FLOP counts from the configs (2 per multiply-add)

double conv_flops(int64_t B, int64_t C, int64_t O, int64_t H, int64_t W, int64_t k) {
  return 2.0 * double(B * O * H * W) * double(C * k * k);
}
double linear_flops(int64_t M, int64_t K, int64_t N) { return 2.0 * double(M) * double(K) * double(N); }

// U-Net forward at batch B, S x S latents, L context tokens (SD1.5 block layout from the config).
double flops_unet(const UNetConfig& c, int64_t B, int64_t S, int64_t L) {
  const int64_t T = c.time_embed_dim(), X = c.cross_attention_dim;
  const auto& ch = c.block_out_channels;
  const int64_t n = c.num_blocks();
  auto resnet = [&](int64_t in, int64_t out, int64_t s) {
    double f = conv_flops(B, in, out, s, s, 3) + conv_flops(B, out, out, s, s, 3) + linear_flops(B, T, out);
    return in != out ? f + conv_flops(B, in, out, s, s, 1) : f;
  };
  auto transformer = [&](int64_t C, int64_t s) {  // proj_in/out 1x1, self-attn, cross-attn, GEGLU FF
    const int64_t N = s * s;
    double f = 2 * conv_flops(B, C, C, s, s, 1);
    f += 4 * linear_flops(B * N, C, C) + 4.0 * double(B * N) * double(N * C);
    f += 2 * linear_flops(B * N, C, C) + 2 * linear_flops(B * L, X, C) + 4.0 * double(B * N) * double(L * C);
    f += linear_flops(B * N, C, 8 * C) + linear_flops(B * N, 4 * C, C);
    return f;
  };
  double f = conv_flops(B, c.in_channels, ch[0], S, S, 3) + linear_flops(B, ch[0], T) + linear_flops(B, T, T);
  int64_t s = S, prev = ch[0];
  for (int64_t i = 0; i < n; ++i) {
    const bool attn = c.down_block_types[size_t(i)] == "CrossAttnDownBlock2D";
    for (int64_t j = 0; j < c.layers_per_block[size_t(i)]; ++j) {
      f += resnet(j == 0 ? prev : ch[size_t(i)], ch[size_t(i)], s);
      if (attn) f += transformer(ch[size_t(i)], s);
    }
    prev = ch[size_t(i)];
    if (i < n - 1) f += conv_flops(B, prev, prev, s / 2, s / 2, 3), s /= 2;
  }
  f += 2 * resnet(ch.back(), ch.back(), s) + transformer(ch.back(), s);
  for (int64_t i = 0; i < n; ++i) {
    const size_t r = size_t(n - 1 - i);
    const int64_t in = ch[r == 0 ? 0 : r - 1], out = ch[r], prev_out = ch[std::min(r + 1, size_t(n - 1))];
    const bool attn = c.up_block_types[size_t(i)] == "CrossAttnUpBlock2D";
    const int64_t layers = c.layers_per_block[r] + 1;
    for (int64_t j = 0; j < layers; ++j) {
      f += resnet((j == 0 ? prev_out : out) + (j == layers - 1 ? in : out), out, s);
      if (attn) f += transformer(out, s);
    }
    if (i < n - 1) s *= 2, f += conv_flops(B, out, out, s, s, 3);
  }
  return f + conv_flops(B, ch[0], c.out_channels, S, S, 3);
}

// VAE decode of one latent s x s -> image 8s x 8s.
double flops_vae_decode(const VAEConfig& c, int64_t s) {
  std::vector<int64_t> rev(c.block_out_channels.rbegin(), c.block_out_channels.rend());
  auto resnet = [&](int64_t in, int64_t out, int64_t h) {
    double f = conv_flops(1, in, out, h, h, 3) + conv_flops(1, out, out, h, h, 3);
    return in != out ? f + conv_flops(1, in, out, h, h, 1) : f;
  };
  const int64_t N = s * s, C = rev[0];
  double f = conv_flops(1, c.latent_channels, c.latent_channels, s, s, 1)  // post_quant_conv
             + conv_flops(1, c.latent_channels, C, s, s, 3);               // conv_in
  f += 2 * resnet(C, C, s) + 4 * linear_flops(N, C, C) + 4.0 * double(N) * double(N * C);  // mid block
  for (size_t i = 0; i < rev.size(); ++i) {
    for (int64_t j = 0; j <= c.layers_per_block; ++j) f += resnet(j == 0 ? rev[i == 0 ? 0 : i - 1] : rev[i], rev[i], s);
    if (i + 1 < rev.size()) s *= 2, f += conv_flops(1, rev[i], rev[i], s, s, 3);
  }
  return f + conv_flops(1, rev.back(), c.out_channels, s, s, 3);
}

double flops_clip(const CLIPTextConfig& c, int64_t B, int64_t L) {
  const int64_t D = c.hidden_size, M = B * L;
  const double layer = 4 * linear_flops(M, D, D) + 4.0 * double(B * L) * double(L * D) +
                       linear_flops(M, D, c.intermediate_size) + linear_flops(M, c.intermediate_size, D);
  return double(c.num_hidden_layers) * layer;
}

constexpr double kUNetIssueFlops = 1.68e12;  // the issue's count for one CFG step

// ---- memory

// Resets the peak-RSS high-water mark (Linux >= 4.0); false where /proc is not writable.
bool reset_peak_rss() {
  std::ofstream f("/proc/self/clear_refs");
  if (!f) return false;
  f << "5";
  return bool(f.flush());
}

// VmHWM in bytes since the last reset, or -1.
double peak_rss_since_reset_bytes() {
  std::ifstream f("/proc/self/status");
  std::string line;
  while (std::getline(f, line))
    if (line.rfind("VmHWM:", 0) == 0) return std::stod(line.substr(6)) * 1024.0;  // "VmHWM:  123 kB"
  return -1.0;
}

// ---- one model alive at a time, loaded on first use and kept across the repetitions

std::shared_ptr<void> g_model;
std::string g_model_name;
ConvAlgo g_conv = ConvAlgo::automatic;  // --conv: the U-Net's and the VAE's convolutions

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
double seconds(clockid_t clock) {
  timespec t{};
  clock_gettime(clock, &t);
  return double(t.tv_sec) + 1e-9 * double(t.tv_nsec);
}

template <typename F>
void timed(benchmark::State& state, double flops, F f) {
  double load1 = -1.0;
  getloadavg(&load1, 1);
  const bool reset = reset_peak_rss();
  const double c0 = seconds(CLOCK_PROCESS_CPUTIME_ID), w0 = seconds(CLOCK_MONOTONIC);
  for (auto _ : state) benchmark::DoNotOptimize(f().data());
  state.counters["cores"] = (seconds(CLOCK_PROCESS_CPUTIME_ID) - c0) / (seconds(CLOCK_MONOTONIC) - w0);
  state.counters["load1"] = load1;
  state.counters["GFLOP/s"] = benchmark::Counter(flops * 1e-9 * double(state.iterations()), benchmark::Counter::kIsRate);
  state.counters["peak_RSS_GB"] = (reset ? peak_rss_since_reset_bytes() : ldm::peak_rss_bytes()) / 1e9;
  state.counters["maxrss_GB"] = ldm::peak_rss_bytes() / 1e9;
}

// ---- the benchmarks

// One CFG step: latents [2, 4, 64, 64] at t = 981, context [2, 77, 768].
void BM_UNetStep(benchmark::State& state) {
  const int64_t B = 2, S = state.range(0), L = 77;
  const auto& unet = model<UNet2DConditionModel>("unet", [](UNet2DConditionModel& u) {
    WeightStore w(std::make_shared<SyntheticSource>());
    w.set_conv_algo(g_conv);
    u.load(w, "", UNetConfig{});
    w.finish();
  });
  const Tensor x = synth::tensor("input.unet_64.sample", {B, 4, S, S});
  const Tensor ctx = synth::tensor("input.unet_64.context", {B, L, 768});
  static bool warm = false;
  if (!warm) benchmark::DoNotOptimize(unet.forward(x, 981.0f, ctx).data()), warm = true;
  timed(state, kUNetIssueFlops * double(S * S) / (64.0 * 64.0), [&] { return unet.forward(x, 981.0f, ctx); });
}

// Decode of one latent [1, 4, 64, 64] -> image [1, 3, 512, 512].
void BM_VAEDecode(benchmark::State& state) {
  const int64_t s = state.range(0);
  const auto& vae = model<AutoencoderKL>("vae", [](AutoencoderKL& v) {
    WeightStore w(std::make_shared<SyntheticSource>());
    w.set_conv_algo(g_conv);
    v.load(w, "", VAEConfig{});
    w.finish();
  });
  const Tensor z = synth::tensor("input.vae_64.latent", {1, 4, s, s});
  static bool warm = false;
  if (!warm) benchmark::DoNotOptimize(vae.decode(z).data()), warm = true;
  timed(state, flops_vae_decode(VAEConfig{}, s), [&] { return vae.decode(z); });
}

// Prompt and empty prompt of one CFG step: ids [2, 77].
void BM_CLIPText(benchmark::State& state) {
  const int64_t B = 2, L = 77;
  const auto& clip = model<CLIPTextModel>("clip", [](CLIPTextModel& c) {
    WeightStore w(std::make_shared<SyntheticSource>());
    c.load(w, "text_model", CLIPTextConfig{});
    w.finish();
  });
  std::vector<int64_t> ids(size_t(B * L), 49407);  // <|endoftext|> padding
  ids[0] = ids[size_t(L)] = 49406;                  // <|startoftext|>
  for (int64_t i = 1; i <= 10; ++i) ids[size_t(i)] = 320 + i;  // a 10-token prompt in row 0
  static bool warm = false;
  if (!warm) benchmark::DoNotOptimize(clip.encode(ids, B).data()), warm = true;
  timed(state, flops_clip(CLIPTextConfig{}, B, L), [&] { return clip.encode(ids, B); });
}

void configure(benchmark::internal::Benchmark* b) {
  b->Iterations(1)->Repetitions(3)->UseRealTime()->Unit(benchmark::kSecond);
}

BENCHMARK(BM_UNetStep)->Arg(64)->Apply(configure);
BENCHMARK(BM_VAEDecode)->Arg(64)->Apply(configure);
BENCHMARK(BM_CLIPText)->Apply(configure)->Unit(benchmark::kMillisecond);

}  // namespace

int main(int argc, char** argv) {
  // --conv=NAME (ours, taken out before Google Benchmark reads the rest)
  int kept = 1;
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    if (a.rfind("--conv=", 0) == 0) {
      try {
        g_conv = parse_conv_algo(a.substr(7));
      } catch (const std::exception& e) {
        std::fprintf(stderr, "bench_models: %s\n", e.what());
        return 1;
      }
    } else {
      argv[kept++] = argv[i];
    }
  }
  argc = kept;
  std::printf("convolutions: --conv=%s\n", conv_algo_name(g_conv));
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
