// CPU vs GPU at SD1.5 shapes: the ops (every GPU implementation, teaching versions included),
// the three models on the GPU in each precision, and a whole 50-step 512x512 txt2img.
//
//   build/bench/bench_cuda                                   # everything (GPU ones skip without a GPU)
//   build/bench/bench_cuda --benchmark_filter='^gpu/unet'    # U-Net steps only
//   build/bench/bench_cuda --benchmark_filter='^(gpu|cpu)/op' --benchmark_format=json
//
// Names: cpu/op/..., gpu/op/<op>/<shape>/<impl>/<dtype>, gpu/unet_step/<dtype>[/graphs],
// gpu/vae_decode_512/<dtype>, gpu/clip/<dtype>, gpu/txt2img_512_50steps/<dtype>[/graphs].
// CPU model timings are in bench/bench_models.cpp (not repeated here).
//
// Timing. GPU work is timed with CUDA events on the library's stream around each iteration
// (UseManualTime): the time from the first kernel of the iteration to the end of the last,
// launch gaps included, host synchronisation excluded. Calls that return host tensors (CLIP,
// txt2img) are timed by the host clock between two synchronisations. One untimed warm-up runs
// first (cuBLAS set-up, memory pool growth).
//
// Counters:
//   TFLOP/s     from the FLOPs below; GB/s for GroupNorm (bytes read + written)
//   peak_frac   TFLOP/s over the GPU's peak for the dtype. Figures used (NVIDIA H100/H200 SXM
//               datasheets, dense): fp16 and bf16 on tensor cores 989.4 TFLOP/s; fp32 without
//               tensor cores (TF32 is off for parity) 66.9 TFLOP/s. Printed at start-up with the
//               device; on another GPU the fraction is against these H100/H200 figures.
//   ms_per_step U-Net and txt2img: milliseconds per U-Net step (one CFG step = batch 2)
//   GPU_peak_GiB  txt2img: the most memory the library's allocator held during the image,
//               weights included (cuda::peak_memory_allocated_bytes); graph_pool_MiB: what
//               CUDA graphs hold besides (graph memory nodes)
// FLOPs (2 per multiply-add): GEMM 2MNK; conv 2*B*O*Ho*Wo*C*kh*kw; attention 4*B*Lq*Lk*D;
// U-Net CFG step 1.68 TFLOP (the count; bench_models.cpp's analytic count is 1.607);
// VAE decode 64 -> 512 2.5145 TFLOP; CLIP batch 2 x 77 tokens 26.6 GFLOP.
#include <benchmark/benchmark.h>
#include <cuda_runtime_api.h>

#include <algorithm>
#include <array>
#include <chrono>
#include <cstdio>
#include <functional>
#include <memory>
#include <random>
#include <string>
#include <vector>

#include "ldm/core/synth.hpp"
#include "ldm/core/weights.hpp"
#include "ldm/cuda/clip_text.hpp"
#include "ldm/cuda/ops.hpp"
#include "ldm/cuda/runner.hpp"
#include "ldm/cuda/transfer.hpp"
#include "ldm/cuda/unet.hpp"
#include "ldm/cuda/unet_graph.hpp"
#include "ldm/cuda/vae.hpp"
#include "ldm/core/rng.hpp"
#include "ldm/nn/attention.hpp"
#include "ldm/nn/conv2d.hpp"
#include "ldm/nn/gemm.hpp"
#include "ldm/nn/group_norm.hpp"
#include "ldm/pipeline.hpp"

namespace {

using ldm::Shape;
using ldm::Tensor;
using ldm::cuda::DeviceTensor;
using ldm::cuda::DType;

constexpr double kPeakTensorFp16 = 989.4e12;  // H100/H200 SXM dense fp16/bf16 (tensor cores)
constexpr double kPeakFp32 = 66.9e12;         // H100/H200 SXM fp32, no tensor cores
constexpr double kUNetStepFlops = 1.68e12, kVAEDecodeFlops = 2.5145e12, kCLIPFlops = 26.6e9;

double peak_flops(DType t) { return t == DType::f32 ? kPeakFp32 : kPeakTensorFp16; }

bool have_gpu() {
  static const bool yes = ldm::cuda::available();
  return yes;
}

#define LDM_BENCH_NEED_GPU(state)               \
  if (!have_gpu()) {                            \
    (state).SkipWithError("no CUDA device");    \
    return;                                     \
  }

Tensor random_tensor(Shape shape, float scale = 1.0f, unsigned seed = 0) {
  Tensor t = Tensor::empty(std::move(shape));
  std::mt19937 gen(seed);
  std::uniform_real_distribution<float> u(-scale, scale);
  for (float& v : t) v = u(gen);
  return t;
}

DeviceTensor random_device(Shape shape, DType dtype, float scale = 1.0f, unsigned seed = 0) {
  return ldm::cuda::to_device(random_tensor(std::move(shape), scale, seed), dtype);
}

// ---- timing

// Seconds of GPU time between two events on the library's stream around f().
class EventTimer {
 public:
  EventTimer() {
    check(cudaEventCreate(&start_), "cudaEventCreate");
    check(cudaEventCreate(&stop_), "cudaEventCreate");
  }
  ~EventTimer() {
    cudaEventDestroy(start_);
    cudaEventDestroy(stop_);
  }
  template <typename F>
  double seconds(F&& f) {
    check(cudaEventRecord(start_, ldm::cuda::stream()), "cudaEventRecord");
    f();
    check(cudaEventRecord(stop_, ldm::cuda::stream()), "cudaEventRecord");
    check(cudaEventSynchronize(stop_), "cudaEventSynchronize");
    float ms = 0;
    check(cudaEventElapsedTime(&ms, start_, stop_), "cudaEventElapsedTime");
    return double(ms) * 1e-3;
  }

 private:
  static void check(cudaError_t e, const char* what) {
    if (e != cudaSuccess) LDM_FAIL("bench_cuda: ", what, ": ", cudaGetErrorString(e));
  }
  cudaEvent_t start_ = nullptr, stop_ = nullptr;
};

// One warm-up, then every iteration timed by the host clock between synchronisations.
template <typename F>
void host_loop(benchmark::State& state, F f) {
  f();
  ldm::cuda::synchronize();
  for (auto _ : state) {
    const auto t0 = std::chrono::steady_clock::now();
    f();
    ldm::cuda::synchronize();
    state.SetIterationTime(std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count());
  }
}

double mean(const std::vector<double>& times) {
  double s = 0;
  for (double t : times) s += t;
  return times.empty() ? 0.0 : s / double(times.size());
}

// One warm-up, then every iteration timed by events; returns the per-iteration seconds.
template <typename F>
std::vector<double> gpu_loop_times(benchmark::State& state, F f) {
  f();
  ldm::cuda::synchronize();
  EventTimer timer;
  std::vector<double> times;
  for (auto _ : state) {
    const double t = timer.seconds(f);
    times.push_back(t);
    state.SetIterationTime(t);
  }
  return times;
}

void report_rate(benchmark::State& state, const std::vector<double>& times, double flops, DType dtype) {
  const double t = mean(times);
  if (t <= 0) return;
  state.counters["TFLOP/s"] = flops / t * 1e-12;
  state.counters["peak_frac"] = flops / t / peak_flops(dtype);
}

const std::vector<DType> kDTypes{DType::f32, DType::f16, DType::bf16};

// ---- ops: GPU, every implementation and dtype

void gpu_gemm(benchmark::State& state, int64_t M, int64_t N, int64_t K, ldm::cuda::GemmImpl impl, DType dt) {
  LDM_BENCH_NEED_GPU(state);
  // C[M, N] = A[M, K] B[N, K]^T: torch.nn.Linear's layout
  const DeviceTensor a = random_device({M, K}, dt), b = random_device({N, K}, dt, 0.05f, 1);
  DeviceTensor c = DeviceTensor::empty({M, N}, dt);
  const auto times = gpu_loop_times(state, [&] {
    ldm::cuda::gemm(false, true, M, N, K, 1.0f, a.data(), K, b.data(), K, 0.0f, c.data(), N, dt, impl);
  });
  report_rate(state, times, 2.0 * double(M) * double(N) * double(K), dt);
}

void gpu_conv(benchmark::State& state, int64_t C, int64_t O, int64_t S, int64_t k, ldm::cuda::ConvImpl impl, DType dt) {
  LDM_BENCH_NEED_GPU(state);
  const int64_t B = 2;
  const DeviceTensor x = random_device({B, C, S, S}, dt), w = random_device({O, C, k, k}, dt, 0.05f, 1),
                     b = random_device({O}, dt, 0.05f, 2);
  const auto times = gpu_loop_times(
      state, [&] { (void)ldm::cuda::conv2d(x, w, b, 1, ldm::cuda::Padding::same(int(k / 2)), impl); });
  report_rate(state, times, 2.0 * double(B * O * S * S) * double(C * k * k), dt);
}

void gpu_group_norm(benchmark::State& state, int64_t C, int64_t S, ldm::cuda::GroupNormImpl impl, DType dt) {
  LDM_BENCH_NEED_GPU(state);
  const DeviceTensor x = random_device({2, C, S, S}, dt), w = random_device({C}, dt, 1.0f, 1),
                     b = random_device({C}, dt, 1.0f, 2);
  const auto times = gpu_loop_times(
      state, [&] { (void)ldm::cuda::group_norm(x, w, b, 32, 1e-5f, /*fuse_silu=*/true, impl); });
  const double t = mean(times);
  if (t > 0) state.counters["GB/s"] = 2.0 * double(x.bytes()) / t * 1e-9;
}

void gpu_attention(benchmark::State& state, int64_t Lq, int64_t Lk, int64_t D, ldm::cuda::AttentionImpl impl, DType dt) {
  LDM_BENCH_NEED_GPU(state);
  const int64_t B = 2, heads = 8;
  const DeviceTensor q = random_device({B, Lq, D}, dt), k = random_device({B, Lk, D}, dt, 1.0f, 1),
                     v = random_device({B, Lk, D}, dt, 1.0f, 2);
  const auto times =
      gpu_loop_times(state, [&] { (void)ldm::cuda::attention(q, k, v, heads, false, impl); });
  report_rate(state, times, 4.0 * double(B * Lq * Lk) * double(D), dt);
}

// ---- ops: CPU at the same shapes (fp32; bench_ops.cpp has the full CPU set)

void cpu_gemm(benchmark::State& state, int64_t M, int64_t N, int64_t K) {
  Tensor a = random_tensor({M, K}), b = random_tensor({N, K}, 0.05f, 1), c = Tensor::empty({M, N});
  for (auto _ : state) {
    ldm::gemm(false, true, M, N, K, 1.0f, a.data(), K, b.data(), K, 0.0f, c.data(), N);
    benchmark::DoNotOptimize(c.data());
  }
  state.counters["TFLOP/s"] =
      benchmark::Counter(2e-12 * double(M) * double(N) * double(K) * double(state.iterations()), benchmark::Counter::kIsRate);
}

void cpu_conv(benchmark::State& state, int64_t C, int64_t O, int64_t S, int64_t k) {
  const int64_t B = 2;
  Tensor x = random_tensor({B, C, S, S}), w = random_tensor({O, C, k, k}, 0.05f, 1), b = random_tensor({O}, 0.05f, 2);
  for (auto _ : state) benchmark::DoNotOptimize(ldm::conv2d(x, w, b, 1, ldm::Padding::same(int(k / 2))).data());
  state.counters["TFLOP/s"] = benchmark::Counter(2e-12 * double(B * O * S * S) * double(C * k * k) * double(state.iterations()),
                                                 benchmark::Counter::kIsRate);
}

void cpu_group_norm(benchmark::State& state, int64_t C, int64_t S) {
  Tensor x = random_tensor({2, C, S, S}), w = random_tensor({C}, 1.0f, 1), b = random_tensor({C}, 1.0f, 2);
  for (auto _ : state) benchmark::DoNotOptimize(ldm::group_norm(x, w, b, 32, 1e-5f, true).data());
  state.counters["GB/s"] = benchmark::Counter(2.0 * 4 * double(x.numel()) * 1e-9 * double(state.iterations()),
                                              benchmark::Counter::kIsRate);
}

void cpu_attention(benchmark::State& state, int64_t Lq, int64_t Lk, int64_t D) {
  const int64_t B = 2;
  Tensor q = random_tensor({B, Lq, D}), k = random_tensor({B, Lk, D}, 1.0f, 1), v = random_tensor({B, Lk, D}, 1.0f, 2);
  for (auto _ : state) benchmark::DoNotOptimize(ldm::scaled_dot_product_attention(q, k, v, 8).data());
  state.counters["TFLOP/s"] =
      benchmark::Counter(4e-12 * double(B * Lq * Lk) * double(D) * double(state.iterations()), benchmark::Counter::kIsRate);
}

// ---- models: loaded once per precision, one precision alive at a time

struct Models {
  DType dtype = DType::f32;
  bool loaded_any = false;
  std::shared_ptr<ldm::cuda::UNet2DConditionModel> unet;
  std::shared_ptr<ldm::cuda::AutoencoderKL> vae;
  std::shared_ptr<ldm::cuda::CLIPTextModel> clip;
};
Models g_models;

Models& models(DType dt) {
  if (!g_models.loaded_any || g_models.dtype != dt) {
    g_models = Models{};  // frees the other precision's weights first
    g_models.dtype = dt;
    g_models.loaded_any = true;
  }
  return g_models;
}

const ldm::cuda::UNet2DConditionModel& unet(DType dt) {
  Models& m = models(dt);
  if (!m.unet) {
    ldm::WeightStore w(std::make_shared<ldm::SyntheticSource>());
    m.unet = std::make_shared<ldm::cuda::UNet2DConditionModel>();
    m.unet->load(w, "", ldm::UNetConfig{}, dt);
    w.finish();
  }
  return *m.unet;
}

const ldm::cuda::AutoencoderKL& vae(DType dt) {
  Models& m = models(dt);
  if (!m.vae) {
    ldm::WeightStore w(std::make_shared<ldm::SyntheticSource>());
    m.vae = std::make_shared<ldm::cuda::AutoencoderKL>();
    m.vae->load(w, "", ldm::VAEConfig{}, dt);
    w.finish();
  }
  return *m.vae;
}

const ldm::cuda::CLIPTextModel& clip(DType dt) {
  Models& m = models(dt);
  if (!m.clip) {
    ldm::WeightStore w(std::make_shared<ldm::SyntheticSource>());
    m.clip = std::make_shared<ldm::cuda::CLIPTextModel>();
    m.clip->load(w, "text_model", ldm::CLIPTextConfig{}, dt);
    w.finish();
  }
  return *m.clip;
}

// The prompt and empty prompt of bench_models.cpp's CLIP benchmark: ids [2, 77].
std::vector<int64_t> prompt_ids(int64_t B) {
  const int64_t L = 77;
  std::vector<int64_t> ids(size_t(B * L), 49407);  // <|endoftext|> padding
  for (int64_t b = 0; b < B; ++b) ids[size_t(b * L)] = 49406;  // <|startoftext|>
  for (int64_t i = 1; i <= 10; ++i) ids[size_t(i)] = 320 + i;  // a 10-token prompt in row 0
  return ids;
}

// One CFG step: latents [2, 4, 64, 64] at t = 981, context [2, 77, 768] (bench_models.cpp's inputs).
void gpu_unet_step(benchmark::State& state, DType dt, bool graphs) {
  LDM_BENCH_NEED_GPU(state);
  const auto& u = unet(dt);
  const DeviceTensor x = ldm::cuda::to_device(ldm::synth::tensor("input.unet_64.sample", {2, 4, 64, 64}), dt);
  const DeviceTensor ctx = ldm::cuda::to_device(ldm::synth::tensor("input.unet_64.context", {2, 77, 768}), dt);
  std::vector<double> times;
  if (graphs) {
    // Shares the model; the first two calls are eager and recording (see unet_graph.hpp).
    ldm::cuda::UNetGraphs g(std::shared_ptr<const ldm::cuda::UNet2DConditionModel>(g_models.unet));
    g.forward(x, 981.0f, ctx);
    times = gpu_loop_times(state, [&] { (void)g.forward(x, 981.0f, ctx); });
    state.counters["graphs_on"] = g.enabled() ? 1.0 : 0.0;
    state.counters["graph_pool_MiB"] = double(ldm::cuda::graph_pool_bytes()) / double(1 << 20);
  } else {
    times = gpu_loop_times(state, [&] { (void)u.forward(x, {981.0f}, ctx); });
  }
  report_rate(state, times, kUNetStepFlops, dt);
  state.counters["ms_per_step"] = mean(times) * 1e3;
}

// Decode of one latent [1, 4, 64, 64] -> image [1, 3, 512, 512].
void gpu_vae_decode(benchmark::State& state, DType dt) {
  LDM_BENCH_NEED_GPU(state);
  const auto& v = vae(dt);
  const DeviceTensor z = ldm::cuda::to_device(ldm::synth::tensor("input.vae_64.latent", {1, 4, 64, 64}), dt);
  const auto times = gpu_loop_times(state, [&] { (void)v.decode(z); });
  report_rate(state, times, kVAEDecodeFlops, dt);
}

// Prompt and empty prompt: ids [2, 77] -> host [2, 77, 768] (encode returns a host tensor).
void gpu_clip(benchmark::State& state, DType dt) {
  LDM_BENCH_NEED_GPU(state);
  const auto& c = clip(dt);
  const std::vector<int64_t> ids = prompt_ids(2);
  host_loop(state, [&] { benchmark::DoNotOptimize(c.encode(ids, 2, 1).data()); });
  state.counters["TFLOP/s"] = benchmark::Counter(kCLIPFlops * 1e-12 * double(state.iterations()), benchmark::Counter::kIsRate);
}

// The whole image: CLIP (prompt + empty prompt), 50 PNDM steps with CFG 7.5 at 64x64 latents,
// VAE decode to 512x512, through ldm::generate with the GPU runner (host scheduler).
void gpu_txt2img(benchmark::State& state, DType dt, bool graphs) {
  LDM_BENCH_NEED_GPU(state);
  unet(dt);
  vae(dt);
  clip(dt);
  ldm::StableDiffusion sd;
  sd.text_encoder_config = g_models.clip->config;
  sd.unet_config = g_models.unet->config;
  sd.vae_config = g_models.vae->config;
  sd.scheduler_config = ldm::SchedulerConfig::from_json(nlohmann::json::object());
  auto runner = std::make_shared<ldm::cuda::CudaModelRunner>(g_models.clip, g_models.unet, g_models.vae, dt, graphs);
  sd.runner = runner;
  ldm::GenerationParams p;
  const std::vector<int64_t> ids = prompt_ids(2);
  p.prompt_ids.assign(ids.begin(), ids.begin() + 77);
  p.negative_prompt_ids.assign(ids.begin() + 77, ids.end());
  p.scheduler = "pndm";
  p.steps = 50;
  p.width = p.height = 512;
  p.init_latents = ldm::synth::tensor("input.txt2img.latents", {1, 4, 64, 64});
  int steps_run = 0;  // U-Net calls per image (PNDM runs steps + 1)
  auto run = [&] {
    ldm::LdmGenerator gen(0);
    return ldm::generate(sd, p, gen, [&](int, int total, double) { steps_run = total; });
  };
  run();                 // warm-up (with graphs: every timestep seen once)
  if (graphs) run();     // with graphs: every timestep recorded
  ldm::cuda::synchronize();
  ldm::cuda::reset_peak_memory();
  double sampling = 0;
  for (auto _ : state) {
    const auto t0 = std::chrono::steady_clock::now();
    ldm::GenerationResult r = run();
    ldm::cuda::synchronize();
    state.SetIterationTime(std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count());
    sampling += r.timings.sampling;
  }
  state.counters["ms_per_step"] = sampling / double(std::max<int64_t>(1, state.iterations())) / std::max(1, steps_run) * 1e3;
  state.counters["GPU_peak_GiB"] = double(ldm::cuda::peak_memory_allocated_bytes()) / double(1ull << 30);
  if (graphs) {
    state.counters["graphs_on"] = runner->graphs()->enabled() ? 1.0 : 0.0;
    state.counters["graph_pool_MiB"] = double(ldm::cuda::graph_pool_bytes()) / double(1 << 20);
  }
}

// ---- registration

std::string shape_name(std::initializer_list<int64_t> dims) {
  std::string s;
  for (int64_t d : dims) s += (s.empty() ? "" : "x") + std::to_string(d);
  return s;
}

void register_all() {
  using ldm::cuda::AttentionImpl;
  using ldm::cuda::ConvImpl;
  using ldm::cuda::GemmImpl;
  using ldm::cuda::GroupNormImpl;
  using ldm::cuda::dtype_name;
  // An op or model that throws (an implementation refusing a dtype, out of memory, a CUDA
  // error) is reported as that benchmark's error; the others still run.
  auto op = [](const std::string& name, std::function<void(benchmark::State&)> fn) {
    auto guarded = [fn](benchmark::State& s) {
      try {
        fn(s);
      } catch (const std::exception& e) {
        s.SkipWithError(e.what());
      }
    };
    return benchmark::RegisterBenchmark(name.c_str(), guarded)->UseManualTime()->Unit(benchmark::kMillisecond);
  };
  auto cpu = [](const std::string& name, auto fn) {
    return benchmark::RegisterBenchmark(name.c_str(), fn)->UseRealTime()->Unit(benchmark::kMillisecond);
  };

  // GEMM: the 64x64 transformer projections (M = 2 x 4096 tokens).
  for (const auto& mnk : {std::array<int64_t, 3>{8192, 320, 320}, std::array<int64_t, 3>{8192, 2560, 320}}) {
    const int64_t M = mnk[0], N = mnk[1], K = mnk[2];
    const std::string shape = shape_name({M, N, K});
    cpu("cpu/op/gemm/" + shape + "/fp32", [=](benchmark::State& s) { cpu_gemm(s, M, N, K); });
    for (GemmImpl impl : {GemmImpl::v1_naive, GemmImpl::v2_smem_tiled, GemmImpl::v3_register_tiled, GemmImpl::cublas})
      for (DType dt : kDTypes)
        op("gpu/op/gemm/" + shape + "/" + ldm::cuda::gemm_impl_name(impl) + "/" + dtype_name(dt),
           [=](benchmark::State& s) { gpu_gemm(s, M, N, K, impl, dt); });
  }
  // conv2d 3x3, 320 -> 320 channels at 64x64, batch 2.
  cpu("cpu/op/conv3x3/2x320x64x64/fp32", [](benchmark::State& s) { cpu_conv(s, 320, 320, 64, 3); });
  for (ConvImpl impl : {ConvImpl::v1_direct, ConvImpl::v2_implicit_gemm, ConvImpl::im2col_cublas})
    for (DType dt : kDTypes)
      op(std::string("gpu/op/conv3x3/2x320x64x64/") + ldm::cuda::conv_impl_name(impl) + "/" + dtype_name(dt),
         [=](benchmark::State& s) { gpu_conv(s, 320, 320, 64, 3, impl, dt); });
  // GroupNorm(32) + SiLU on [2, 320, 64, 64].
  cpu("cpu/op/group_norm_silu/2x320x64x64/fp32", [](benchmark::State& s) { cpu_group_norm(s, 320, 64); });
  for (GroupNormImpl impl : {GroupNormImpl::v1_naive, GroupNormImpl::v2_block_reduce})
    for (DType dt : kDTypes)
      op(std::string("gpu/op/group_norm_silu/2x320x64x64/") + ldm::cuda::group_norm_impl_name(impl) + "/" +
             dtype_name(dt),
         [=](benchmark::State& s) { gpu_group_norm(s, 320, 64, impl, dt); });
  // Self-attention over 4096 tokens (64x64), 8 heads of 40, batch 2; cross-attention to 77 tokens.
  cpu("cpu/op/attention/4096x4096x320/fp32", [](benchmark::State& s) { cpu_attention(s, 4096, 4096, 320); });
  for (AttentionImpl impl : {AttentionImpl::v1_naive, AttentionImpl::v2_flash, AttentionImpl::v3_flash_mma})
    for (DType dt : kDTypes)
      op(std::string("gpu/op/attention/4096x4096x320/") + ldm::cuda::attention_impl_name(impl) + "/" + dtype_name(dt),
         [=](benchmark::State& s) { gpu_attention(s, 4096, 4096, 320, impl, dt); });
  for (DType dt : kDTypes)
    op(std::string("gpu/op/attention/4096x77x320/v3_flash_mma/") + dtype_name(dt),
       [=](benchmark::State& s) { gpu_attention(s, 4096, 77, 320, AttentionImpl::v3_flash_mma, dt); });

  // Models, grouped by precision so that each precision's weights are loaded once.
  for (DType dt : {DType::f16, DType::bf16, DType::f32}) {
    const std::string d = dtype_name(dt);
    op("gpu/unet_step/" + d, [=](benchmark::State& s) { gpu_unet_step(s, dt, false); });
    if (dt == DType::f16)
      op("gpu/unet_step/" + d + "/graphs", [=](benchmark::State& s) { gpu_unet_step(s, dt, true); });
    op("gpu/vae_decode_512/" + d, [=](benchmark::State& s) { gpu_vae_decode(s, dt); });
    op("gpu/clip/" + d, [=](benchmark::State& s) { gpu_clip(s, dt); });
    if (dt != DType::f32) {
      op("gpu/txt2img_512_50steps/" + d, [=](benchmark::State& s) { gpu_txt2img(s, dt, false); })
          ->Iterations(1)
          ->Repetitions(3)
          ->Unit(benchmark::kSecond);
      if (dt == DType::f16)
        op("gpu/txt2img_512_50steps/" + d + "/graphs", [=](benchmark::State& s) { gpu_txt2img(s, dt, true); })
            ->Iterations(1)
            ->Repetitions(3)
            ->Unit(benchmark::kSecond);
    }
  }
}

}  // namespace

int main(int argc, char** argv) {
  std::printf("device: %s\n", ldm::cuda::device_description().c_str());
  std::printf("peak figures used for peak_frac (NVIDIA H100/H200 SXM, dense): fp16/bf16 tensor cores %.1f TFLOP/s, "
              "fp32 (no TF32) %.1f TFLOP/s\n",
              kPeakTensorFp16 * 1e-12, kPeakFp32 * 1e-12);
  std::printf("FLOPs: U-Net CFG step %.3g TFLOP, VAE decode 512 %.4g TFLOP, CLIP batch 2 %.3g GFLOP\n",
              kUNetStepFlops * 1e-12, kVAEDecodeFlops * 1e-12, kCLIPFlops * 1e-9);
  std::fflush(stdout);
  register_all();
  benchmark::Initialize(&argc, argv);
  if (benchmark::ReportUnrecognizedArguments(argc, argv)) return 1;
  benchmark::RunSpecifiedBenchmarks();
  benchmark::Shutdown();
  return 0;
}
