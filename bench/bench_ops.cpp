// The CPU primitives at SD1.5 shapes (batch 2 = one classifier-free-guidance step), timed
// with Google Benchmark and reported as GFLOP/s beside the time.
//
//   build/bench/bench_ops [--benchmark_filter=Conv] [--benchmark_min_time=0.5]
//   build/bench/bench_ops --benchmark_filter='Conv2d/.*/algo:1'   # one algorithm (1: direct)
//   OMP_NUM_THREADS=1 build/bench/bench_ops     # one core: "CPU" is then the time on that core
//
// Real time (not CPU time) is what counts with OpenMP threads. Each benchmark runs 5
// repetitions and reports their mean, median, standard deviation and coefficient of
// variation; docs/performance.md quotes the median. FLOPs counted: 2*M*N*K for a GEMM,
// 2*B*O*Ho*Wo*C*kh*kw for a convolution, 4*B*Lq*Lk*D for attention (Q K^T and P V), and
// ~8 per element for GroupNorm (shown as GB/s of input+output instead, it is memory-bound);
// a backward (Linear, Conv2d) counts twice its forward's: the dX and the dW GEMMs.
//   build/bench/bench_ops --benchmark_filter='BM_Conv2d|BM_Linear'   # the backwards beside the forwards
// docs/performance.md has the figures and the OpenBLAS / PyTorch comparison.
#include <benchmark/benchmark.h>

#include <random>
#include <utility>

#include "ldm/nn/attention.hpp"
#include "ldm/nn/conv2d.hpp"
#include "ldm/nn/gemm.hpp"
#include "ldm/nn/group_norm.hpp"
#include "ldm/nn/linear.hpp"

using namespace ldm;

namespace {

Tensor random_tensor(Shape shape, float scale = 1.0f, unsigned seed = 0) {
  Tensor t = Tensor::empty(std::move(shape));
  std::mt19937 gen(seed);
  std::uniform_real_distribution<float> u(-scale, scale);
  for (float& v : t) v = u(gen);
  return t;
}

void set_flops(benchmark::State& state, double flops_per_iter) {
  state.counters["GFLOP/s"] =
      benchmark::Counter(flops_per_iter * 1e-9 * double(state.iterations()), benchmark::Counter::kIsRate);
}

// C[M, N] = A[M, K] * B[N, K]^T, the layout of torch.nn.Linear (x W^T).
void BM_Gemm(benchmark::State& state) {
  const int64_t M = state.range(0), N = state.range(1), K = state.range(2);
  Tensor a = random_tensor({M, K}), b = random_tensor({N, K}), c = Tensor::empty({M, N});
  for (auto _ : state) {
    gemm(false, true, M, N, K, 1.0f, a.data(), K, b.data(), K, 0.0f, c.data(), N);
    benchmark::DoNotOptimize(c.data());
  }
  set_flops(state, 2.0 * M * N * K);
}

// The same product through Eigen's GEMM (what src/gemm.cpp used before its own kernel).
void BM_GemmEigen(benchmark::State& state) {
  const int64_t M = state.range(0), N = state.range(1), K = state.range(2);
  Tensor a = random_tensor({M, K}), b = random_tensor({N, K}), c = Tensor::empty({M, N});
  for (auto _ : state) {
    c.matrix(M, N).noalias() = a.matrix(M, K) * b.matrix(N, K).transpose();
    benchmark::DoNotOptimize(c.data());
  }
  set_flops(state, 2.0 * M * N * K);
}

// The layers the forward and backward cases share: Linear K -> N with bias, and Conv2d C -> O,
// kernel k, stride 1, "same" padding, with bias.
Linear make_linear(int64_t K, int64_t N) {
  Linear lin;
  lin.in_features = K;
  lin.out_features = N;
  lin.weight = random_tensor({N, K}, 0.05f, 1);
  lin.bias = random_tensor({N}, 0.05f, 2);
  return lin;
}

Conv2d make_conv(int64_t C, int64_t O, int64_t k) {
  Conv2d conv;
  conv.weight = random_tensor({O, C, k, k}, 0.05f, 1);
  conv.bias = random_tensor({O}, 0.05f, 2);
  conv.padding = Padding::same(int(k / 2));
  return conv;
}

// Linear with bias: [M, K] -> [M, N].
void BM_Linear(benchmark::State& state) {
  const int64_t M = state.range(0), N = state.range(1), K = state.range(2);
  Linear lin = make_linear(K, N);
  Tensor x = random_tensor({M, K});
  for (auto _ : state) benchmark::DoNotOptimize(lin.forward(x).data());
  set_flops(state, 2.0 * M * N * K);
}

// Conv2d [2, C, S, S] -> [2, O, S, S], kernel k, stride 1, "same" padding, by algorithm `algo`
// (ConvAlgo: 0 auto, 1 direct, 2 f23, 3 f43; nn/conv_algo.hpp), Winograd's transformed weights
// made before the timing, as a model's layer keeps them. FLOPs are the direct convolution's.
void BM_Conv2d(benchmark::State& state) {
  const int64_t C = state.range(0), O = state.range(1), S = state.range(2), k = state.range(3), B = 2;
  Conv2d conv = make_conv(C, O, k);
  conv.algo = ConvAlgo(state.range(4));
  state.SetLabel(conv_algo_name(conv.algo));
  Tensor x = random_tensor({B, C, S, S});
  benchmark::DoNotOptimize(conv.forward(x).data());  // makes the transformed weights
  for (auto _ : state) benchmark::DoNotOptimize(conv.forward(x).data());
  set_flops(state, 2.0 * B * O * S * S * C * k * k);
}

// The backward of Linear: dX = dY W and dW += dY^T X (two GEMMs of the forward's size) plus
// db; FLOPs 2x the forward's, 4*M*N*K.
void BM_LinearBackward(benchmark::State& state) {
  const int64_t M = state.range(0), N = state.range(1), K = state.range(2);
  Linear lin = make_linear(K, N);
  Tensor x = random_tensor({M, K}), dy = random_tensor({M, N}, 1.0f, 3);
  benchmark::DoNotOptimize(lin.backward(x, dy).data());  // allocates the weight's gradient
  for (auto _ : state) benchmark::DoNotOptimize(lin.backward(x, dy).data());
  set_flops(state, 4.0 * M * N * K);
}

// The backward of Conv2d [2, C, S, S] -> [2, O, S, S] (nn/conv2d.hpp) by algorithm `algo` (0
// auto, 1 direct): for a 3x3, stride 1, padding 1, dX is the forward convolution of dY with the
// flipped, transposed weight (by the forward's algorithm rule) and dW Winograd's adjoint where it
// pays; otherwise dW += dY col^T (im2col + GEMM) and dcol = W^T dY folded back. Plus db; FLOPs
// 2x the direct forward's.
void BM_Conv2dBackward(benchmark::State& state) {
  const int64_t C = state.range(0), O = state.range(1), S = state.range(2), k = state.range(3), B = 2;
  Conv2d conv = make_conv(C, O, k);
  conv.algo = ConvAlgo(state.range(4));
  state.SetLabel(conv_algo_name(conv.algo));
  Tensor x = random_tensor({B, C, S, S}), dy = random_tensor({B, O, S, S}, 1.0f, 3);
  benchmark::DoNotOptimize(conv.backward(x, dy).data());  // allocates the weight's gradient
  for (auto _ : state) benchmark::DoNotOptimize(conv.backward(x, dy).data());
  set_flops(state, 4.0 * B * O * S * S * C * k * k);
}

// GroupNorm(32) + SiLU on [2, C, S, S]; memory-bound, so GB/s of input read + output written.
void BM_GroupNormSiLU(benchmark::State& state) {
  const int64_t C = state.range(0), S = state.range(1), B = 2;
  Tensor x = random_tensor({B, C, S, S}), w = random_tensor({C}, 1.0f, 1), b = random_tensor({C}, 1.0f, 2);
  for (auto _ : state) benchmark::DoNotOptimize(group_norm(x, w, b, 32, 1e-5f, true).data());
  state.counters["GB/s"] =
      benchmark::Counter(2.0 * 4 * x.numel() * 1e-9 * double(state.iterations()), benchmark::Counter::kIsRate);
}

// Attention, batch 2, 8 heads: Lq queries of 320 = 8 x 40 features against Lk keys.
void BM_Attention(benchmark::State& state) {
  const int64_t Lq = state.range(0), Lk = state.range(1), D = state.range(2), heads = 8, B = 2;
  Tensor q = random_tensor({B, Lq, D}), k = random_tensor({B, Lk, D}, 1.0f, 1), v = random_tensor({B, Lk, D}, 1.0f, 2);
  for (auto _ : state) benchmark::DoNotOptimize(scaled_dot_product_attention(q, k, v, heads).data());
  set_flops(state, 4.0 * B * Lq * Lk * D);
}

void Common(benchmark::internal::Benchmark* b) {
  b->UseRealTime()->Unit(benchmark::kMillisecond)->Repetitions(5)->ReportAggregatesOnly(true);
}

}  // namespace

// The transformer projections of the SD1.5 U-Net at each resolution (M = 2 * tokens).
void TransformerShapes(benchmark::internal::Benchmark* b) {
  Common(b);
  b->ArgNames({"M", "N", "K"})
      ->Args({8192, 320, 320})    // 64x64: to_q / to_k / to_v / to_out
      ->Args({8192, 2560, 320})   // 64x64: GEGLU proj
      ->Args({8192, 320, 1280})   // 64x64: ff out
      ->Args({2048, 640, 640})    // 32x32: attention projections
      ->Args({2048, 5120, 640})   // 32x32: GEGLU proj
      ->Args({2048, 640, 2560})   // 32x32: ff out
      ->Args({512, 1280, 1280})   // 16x16: attention projections
      ->Args({512, 10240, 1280})  // 16x16: GEGLU proj
      ->Args({154, 320, 768})     // cross-attention to_k / to_v on the 2 x 77 text tokens
      ->Args({154, 1280, 768});   // the same at 16x16
}
BENCHMARK(BM_Gemm)->Apply(TransformerShapes);
BENCHMARK(BM_GemmEigen)->Apply(TransformerShapes);
BENCHMARK(BM_Linear)
    ->Apply(Common)
    ->ArgNames({"M", "N", "K"})
    ->Args({8192, 320, 320})
    ->Args({8192, 2560, 320})
    ->Args({2048, 5120, 640});
BENCHMARK(BM_LinearBackward)
    ->Apply(Common)
    ->ArgNames({"M", "N", "K"})
    ->Args({8192, 320, 320})
    ->Args({8192, 2560, 320})
    ->Args({2048, 5120, 640});

// 3x3 convolutions of the resnets at each level by each algorithm (where one does not fit, it
// runs the next: conv2d.hpp), and the 1x1 proj_in / shortcut (always direct).
void ConvShapes(benchmark::internal::Benchmark* b) {
  Common(b);
  b->ArgNames({"C", "O", "S", "k", "algo"});
  for (int64_t algo = 0; algo < 4; ++algo)
    for (const auto& [C, S] : {std::pair<int64_t, int64_t>{320, 64}, {640, 32}, {1280, 16}, {1280, 8}})
      b->Args({C, C, S, 3, algo});
  b->Args({320, 320, 64, 1, 0})->Args({640, 640, 32, 1, 0});
}
BENCHMARK(BM_Conv2d)->Apply(ConvShapes);

// The backward at the forward's shapes: 3x3 at each level (the SD1.5 U-Net's at 64x64 and 32x32
// latents, the small models' 64- and 128-channel levels), by each algorithm, and the 1x1
// proj_in / shortcut.
void ConvBackwardShapes(benchmark::internal::Benchmark* b) {
  Common(b);
  b->ArgNames({"C", "O", "S", "k", "algo"});
  for (int64_t algo = 0; algo < 2; ++algo)
    for (const auto& [C, S] : std::vector<std::pair<int64_t, int64_t>>{
             {320, 64}, {640, 32}, {1280, 16}, {1280, 8}, {320, 32}, {640, 16}, {1280, 4}, {64, 64}, {128, 8}, {128, 4}})
      b->Args({C, C, S, 3, algo});
  b->Args({320, 320, 64, 1, 0})->Args({640, 640, 32, 1, 0});
}
BENCHMARK(BM_Conv2dBackward)->Apply(ConvBackwardShapes);

BENCHMARK(BM_GroupNormSiLU)
    ->Apply(Common)
    ->ArgNames({"C", "S"})
    ->Args({320, 64})
    ->Args({640, 32})
    ->Args({1280, 16})
    ->Args({1280, 8});

// Self-attention at 64x64 (4096 tokens) and 32x32; cross-attention to 77 text tokens.
BENCHMARK(BM_Attention)
    ->Apply(Common)
    ->ArgNames({"Lq", "Lk", "D"})
    ->Args({4096, 4096, 320})
    ->Args({1024, 1024, 640})
    ->Args({4096, 77, 320});

BENCHMARK_MAIN();
