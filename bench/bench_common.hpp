// What the model benchmarks (bench_models.cpp, bench_train.cpp) share: FLOP counts of the SD1.5
// models from their configs, the peak-RSS reset and read, the --conv= option, and the "cores" / "load1" counters
// that say how much of the shared 2-core machine a repetition got.
#pragma once
#include <benchmark/benchmark.h>

#include <algorithm>
#include <cstdint>
#include <cstdio>
#include <exception>
#include <cstdlib>
#include <ctime>
#include <fstream>
#include <string>
#include <vector>

#include "ldm/core/memory.hpp"
#include "ldm/nn/conv_algo.hpp"
#include "ldm/models/clip_text.hpp"
#include "ldm/models/unet.hpp"
#include "ldm/models/vae.hpp"

namespace ldm::bench {

// ---- FLOP counts from the configs (2 per multiply-add; norms and element-wise work not counted)

inline double conv_flops(int64_t B, int64_t C, int64_t O, int64_t H, int64_t W, int64_t k) {
  return 2.0 * double(B * O * H * W) * double(C * k * k);
}
inline double linear_flops(int64_t M, int64_t K, int64_t N) { return 2.0 * double(M) * double(K) * double(N); }

// U-Net forward at batch B, S x S latents, L context tokens (the block layout from the config:
// resnets with their time projection, spatial transformers with proj_in/out, self- and
// cross-attention and GEGLU's 2x wide projection, Q K^T and P V, down- and upsamplers).
inline double flops_unet(const UNetConfig& c, int64_t B, int64_t S, int64_t L) {
  const int64_t T = c.time_embed_dim(), X = c.cross_attention_dim;
  const auto& ch = c.block_out_channels;
  const int64_t n = c.num_blocks();
  auto resnet = [&](int64_t in, int64_t out, int64_t s) {
    double f = conv_flops(B, in, out, s, s, 3) + conv_flops(B, out, out, s, s, 3) + linear_flops(B, T, out);
    return in != out ? f + conv_flops(B, in, out, s, s, 1) : f;
  };
  auto transformer = [&](int64_t C, int64_t s, int64_t layers) {  // proj_in/out 1x1, `layers` blocks
    const int64_t N = s * s;
    double block = 4 * linear_flops(B * N, C, C) + 4.0 * double(B * N) * double(N * C);  // self-attention
    block += 2 * linear_flops(B * N, C, C) + 2 * linear_flops(B * L, X, C) + 4.0 * double(B * N) * double(L * C);
    block += linear_flops(B * N, C, 8 * C) + linear_flops(B * N, 4 * C, C);  // GEGLU feed-forward
    return 2 * conv_flops(B, C, C, s, s, 1) + double(layers) * block;
  };
  double f = conv_flops(B, c.in_channels, ch[0], S, S, 3) + linear_flops(B, ch[0], T) + linear_flops(B, T, T);
  int64_t s = S, prev = ch[0];
  for (int64_t i = 0; i < n; ++i) {
    const bool attn = c.down_block_types[size_t(i)] == "CrossAttnDownBlock2D";
    for (int64_t j = 0; j < c.layers_per_block[size_t(i)]; ++j) {
      f += resnet(j == 0 ? prev : ch[size_t(i)], ch[size_t(i)], s);
      if (attn) f += transformer(ch[size_t(i)], s, c.transformer_layers_per_block[size_t(i)]);
    }
    prev = ch[size_t(i)];
    if (i < n - 1) f += conv_flops(B, prev, prev, s / 2, s / 2, 3), s /= 2;
  }
  f += 2 * resnet(ch.back(), ch.back(), s) + transformer(ch.back(), s, c.transformer_layers_per_block.back());
  for (int64_t i = 0; i < n; ++i) {
    const size_t r = size_t(n - 1 - i);
    const int64_t in = ch[r == 0 ? 0 : r - 1], out = ch[r], prev_out = ch[std::min(r + 1, size_t(n - 1))];
    const bool attn = c.up_block_types[size_t(i)] == "CrossAttnUpBlock2D";
    const int64_t layers = c.layers_per_block[r] + 1;
    for (int64_t j = 0; j < layers; ++j) {
      f += resnet((j == 0 ? prev_out : out) + (j == layers - 1 ? in : out), out, s);
      if (attn) f += transformer(out, s, c.transformer_layers_per_block[r]);
    }
    if (i < n - 1) s *= 2, f += conv_flops(B, out, out, s, s, 3);
  }
  return f + conv_flops(B, ch[0], c.out_channels, S, S, 3);
}

// The VAE's resnet (two 3x3 convolutions, a 1x1 shortcut where the width changes) and its
// mid-block's single-head attention over the N = s x s pixels, per image.
inline double flops_vae_resnet(int64_t in, int64_t out, int64_t s) {
  const double f = conv_flops(1, in, out, s, s, 3) + conv_flops(1, out, out, s, s, 3);
  return in != out ? f + conv_flops(1, in, out, s, s, 1) : f;
}
inline double flops_vae_mid(int64_t C, int64_t s) {
  const int64_t N = s * s;
  return 2 * flops_vae_resnet(C, C, s) + 4 * linear_flops(N, C, C) + 4.0 * double(N) * double(N * C);
}

// VAE decode of one latent s x s -> image (2^(levels-1) s)^2, post_quant_conv included.
inline double flops_vae_decode(const VAEConfig& c, int64_t s) {
  std::vector<int64_t> rev(c.block_out_channels.rbegin(), c.block_out_channels.rend());
  double f = conv_flops(1, c.latent_channels, c.latent_channels, s, s, 1)  // post_quant_conv
             + conv_flops(1, c.latent_channels, rev[0], s, s, 3)           // conv_in
             + flops_vae_mid(rev[0], s);
  for (size_t i = 0; i < rev.size(); ++i) {
    for (int64_t j = 0; j <= c.layers_per_block; ++j)
      f += flops_vae_resnet(j == 0 ? rev[i == 0 ? 0 : i - 1] : rev[i], rev[i], s);
    if (i + 1 < rev.size()) s *= 2, f += conv_flops(1, rev[i], rev[i], s, s, 3);
  }
  return f + conv_flops(1, rev.back(), c.out_channels, s, s, 3);
}

// VAE encode of one S x S image to the moments [2 latent, S/f, S/f], quant_conv included.
inline double flops_vae_encode(const VAEConfig& c, int64_t S) {
  const auto& ch = c.block_out_channels;
  double f = conv_flops(1, c.in_channels, ch[0], S, S, 3);  // conv_in
  int64_t s = S;
  for (size_t i = 0; i < ch.size(); ++i) {
    for (int64_t j = 0; j < c.layers_per_block; ++j)
      f += flops_vae_resnet(j == 0 ? ch[i == 0 ? 0 : i - 1] : ch[i], ch[i], s);
    if (i + 1 < ch.size()) s /= 2, f += conv_flops(1, ch[i], ch[i], s, s, 3);  // stride-2 downsampler
  }
  f += flops_vae_mid(ch.back(), s);
  return f + conv_flops(1, ch.back(), 2 * c.latent_channels, s, s, 3)             // conv_out
         + conv_flops(1, 2 * c.latent_channels, 2 * c.latent_channels, s, s, 1);  // quant_conv
}

// CLIP text encoder layers at batch B, L tokens (the embeddings are a lookup).
inline double flops_clip(const CLIPTextConfig& c, int64_t B, int64_t L) {
  const int64_t D = c.hidden_size, M = B * L;
  const double layer = 4 * linear_flops(M, D, D) + 4.0 * double(B * L) * double(L * D) +
                       linear_flops(M, D, c.intermediate_size) + linear_flops(M, c.intermediate_size, D);
  return double(c.num_hidden_layers) * layer;
}

// ---- memory

// Resets the peak-RSS high-water mark (Linux >= 4.0); false where /proc is not writable.
inline bool reset_peak_rss() {
  std::ofstream f("/proc/self/clear_refs");
  if (!f) return false;
  f << "5";
  return bool(f.flush());
}

// A "Vm...:  123 kB" line of /proc/self/status in bytes (VmHWM: the peak since the last reset;
// VmRSS: now), or -1.
inline double proc_status_bytes(const std::string& key) {
  std::ifstream f("/proc/self/status");
  std::string line;
  while (std::getline(f, line))
    if (line.rfind(key + ":", 0) == 0) return std::stod(line.substr(key.size() + 1)) * 1024.0;
  return -1.0;
}
inline double peak_rss_since_reset_bytes() { return proc_status_bytes("VmHWM"); }
inline double rss_bytes() { return proc_status_bytes("VmRSS"); }

// ---- time and the share of the machine

inline double seconds(clockid_t clock) {
  timespec t{};
  clock_gettime(clock, &t);
  return double(t.tv_sec) + 1e-9 * double(t.tv_nsec);
}

// Started before a repetition, report()ed after it:
//   cores  CPU seconds of the process / wall seconds: 2.0 on a quiet 2-core machine, less when
//          other processes take the cores
//   load1  the 1-minute load average when the repetition started (this process's own threads
//          included)
struct MachineShare {
  double load1 = -1.0, cpu0 = 0.0, wall0 = 0.0;
  MachineShare() {
    getloadavg(&load1, 1);
    cpu0 = seconds(CLOCK_PROCESS_CPUTIME_ID);
    wall0 = seconds(CLOCK_MONOTONIC);
  }
  void report(benchmark::State& state) const {
    state.counters["cores"] = (seconds(CLOCK_PROCESS_CPUTIME_ID) - cpu0) / (seconds(CLOCK_MONOTONIC) - wall0);
    state.counters["load1"] = load1;
  }
};

// GFLOP/s of `flops` per iteration over the benchmark's (real or manual) time.
inline benchmark::Counter gflops_rate(double flops, const benchmark::State& state) {
  return benchmark::Counter(flops * 1e-9 * double(state.iterations()), benchmark::Counter::kIsRate);
}

// Takes every argument that starts with `prefix` out of argv (before Google Benchmark reads the
// rest), handing each one's remainder to `take`, and keeps the others in order.
template <class Take>
void take_option(int& argc, char** argv, const std::string& prefix, Take take) {
  int kept = 1;
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    if (a.rfind(prefix, 0) == 0) take(a.substr(prefix.size()));
    else argv[kept++] = argv[i];
  }
  argc = kept;
}

// Takes our own --conv=NAME out of argv into `conv`. False, with the message printed, for an
// unknown algorithm name.
// --malloc=keep (default: freed memory kept for reuse, ldm::keep_freed_memory, as `ldm generate`
// and `ldm train` run) or --malloc=default (glibc's policy). Applies it and prints which;
// false (after a message) for another value.
inline bool take_malloc_option(int& argc, char** argv, const char* program, const char* as_run_by) {
  bool keep_freed = true, ok = true;
  take_option(argc, argv, "--malloc=", [&](const std::string& policy) {
    if (policy == "default") keep_freed = false;
    else if (policy != "keep") ok = false;
  });
  if (!ok) return std::fprintf(stderr, "%s: --malloc= takes keep or default\n", program), false;
  if (keep_freed) ldm::keep_freed_memory();
  if (keep_freed) std::printf("memory: --malloc=keep (freed memory reused, as %s runs)\n", as_run_by);
  else std::printf("memory: --malloc=default (glibc's policy)\n");
  return true;
}

inline bool take_conv_option(int& argc, char** argv, ConvAlgo& conv, const char* program) {
  bool ok = true;
  take_option(argc, argv, "--conv=", [&](const std::string& name) {
    try {
      conv = parse_conv_algo(name);
    } catch (const std::exception& e) {
      std::fprintf(stderr, "%s: %s\n", program, e.what());
      ok = false;
    }
  });
  return ok;
}

}  // namespace ldm::bench
