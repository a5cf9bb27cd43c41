// The nn/ primitives against plain loops in double precision: gemm, Linear, conv2d,
// GroupNorm, LayerNorm, the activations, softmax, attention and the layout helpers.
// Inputs are small random tensors, so every edge (padding, tails of the GEMM tiles, tiny
// images, causal masks) is exercised without reference files.
#include <sys/resource.h>

#include <cmath>
#include <random>

#include "ldm/nn/activations.hpp"
#include "ldm/nn/attention.hpp"
#include "ldm/nn/conv2d.hpp"
#include "ldm/nn/elementwise.hpp"
#include "ldm/nn/gemm.hpp"
#include "ldm/nn/group_norm.hpp"
#include "ldm/nn/layer_norm.hpp"
#include "ldm/nn/linear.hpp"
#include "reference.hpp"

using namespace ldm;
using ldm::test::random_tensor;
using ldm::test::require_close;

namespace {

constexpr double kLoopTol = 1e-6;  // float32 against a double loop: ~sqrt(K) * 6e-8 at these sizes

// Row-major matrix helpers for the naive references.
double at(const Tensor& t, int64_t i) { return double(t[i]); }

Tensor from_double(Shape shape, const std::vector<double>& v) {
  Tensor t = Tensor::empty(std::move(shape));
  for (int64_t i = 0; i < t.numel(); ++i) t[i] = float(v[size_t(i)]);
  return t;
}

// out[b, o, y, x] = bias[o] + sum w[o, c, i, j] * x[b, c, y*s - top + i, x*s - left + j]
Tensor naive_conv2d(const Tensor& x, const Tensor& w, const Tensor& bias, int stride, Padding pad) {
  const int64_t B = x.dim(0), C = x.dim(1), H = x.dim(2), W = x.dim(3);
  const int64_t O = w.dim(0), kh = w.dim(2), kw = w.dim(3);
  const int64_t Ho = (H + pad.top + pad.bottom - kh) / stride + 1, Wo = (W + pad.left + pad.right - kw) / stride + 1;
  std::vector<double> out(size_t(B * O * Ho * Wo));
  for (int64_t b = 0; b < B; ++b)
    for (int64_t o = 0; o < O; ++o)
      for (int64_t y = 0; y < Ho; ++y)
        for (int64_t xx = 0; xx < Wo; ++xx) {
          double s = bias.defined() ? bias[o] : 0.0;
          for (int64_t c = 0; c < C; ++c)
            for (int64_t i = 0; i < kh; ++i)
              for (int64_t j = 0; j < kw; ++j) {
                const int64_t iy = y * stride - pad.top + i, ix = xx * stride - pad.left + j;
                if (iy < 0 || iy >= H || ix < 0 || ix >= W) continue;
                s += at(w, ((o * C + c) * kh + i) * kw + j) * at(x, ((b * C + c) * H + iy) * W + ix);
              }
          out[size_t(((b * O + o) * Ho + y) * Wo + xx)] = s;
        }
  return from_double({B, O, Ho, Wo}, out);
}

// softmax(q k^T * scale) v per batch item and head, the mask hiding keys j > i when causal.
Tensor naive_attention(const Tensor& q, const Tensor& k, const Tensor& v, int64_t heads, bool causal) {
  const int64_t B = q.dim(0), Lq = q.dim(1), Lk = k.dim(1), D = q.dim(2), Dv = v.dim(2);
  const int64_t d = D / heads, dv = Dv / heads;
  std::vector<double> out(size_t(B * Lq * Dv));
  std::vector<double> p(static_cast<size_t>(Lk));
  for (int64_t b = 0; b < B; ++b)
    for (int64_t h = 0; h < heads; ++h)
      for (int64_t i = 0; i < Lq; ++i) {
        const int64_t visible = causal ? std::min(Lk, i + 1) : Lk;
        double mx = -1e300, sum = 0;
        for (int64_t j = 0; j < visible; ++j) {
          double s = 0;
          for (int64_t t = 0; t < d; ++t)
            s += at(q, (b * Lq + i) * D + h * d + t) * at(k, (b * Lk + j) * D + h * d + t);
          p[size_t(j)] = s / std::sqrt(double(d));
          mx = std::max(mx, p[size_t(j)]);
        }
        for (int64_t j = 0; j < visible; ++j) sum += p[size_t(j)] = std::exp(p[size_t(j)] - mx);
        for (int64_t t = 0; t < dv; ++t) {
          double o = 0;
          for (int64_t j = 0; j < visible; ++j) o += p[size_t(j)] * at(v, (b * Lk + j) * Dv + h * dv + t);
          out[size_t((b * Lq + i) * Dv + h * dv + t)] = o / sum;
        }
      }
  return from_double({B, Lq, Dv}, out);
}

Tensor naive_group_norm(const Tensor& x, const Tensor& w, const Tensor& b, int64_t groups, double eps, bool silu) {
  const int64_t B = x.dim(0), C = x.dim(1), S = x.numel() / (B * C), Cg = C / groups;
  std::vector<double> out(size_t(x.numel()));
  for (int64_t n = 0; n < B; ++n)
    for (int64_t g = 0; g < groups; ++g) {
      const int64_t base = (n * C + g * Cg) * S, count = Cg * S;
      double mean = 0, var = 0;
      for (int64_t i = 0; i < count; ++i) mean += at(x, base + i);
      mean /= double(count);
      for (int64_t i = 0; i < count; ++i) var += (at(x, base + i) - mean) * (at(x, base + i) - mean);
      var /= double(count);
      for (int64_t i = 0; i < count; ++i) {
        const int64_t c = g * Cg + i / S;
        double y = (at(x, base + i) - mean) / std::sqrt(var + eps) * w[c] + b[c];
        out[size_t(base + i)] = silu ? y / (1 + std::exp(-y)) : y;
      }
    }
  return from_double(x.shape(), out);
}

// Elementwise f over a tensor, in double.
template <typename F>
Tensor naive_map(const Tensor& x, F f) {
  std::vector<double> out(size_t(x.numel()));
  for (int64_t i = 0; i < x.numel(); ++i) out[size_t(i)] = f(double(x[i]));
  return from_double(x.shape(), out);
}

}  // namespace

TEST_CASE("nn: conv2d 3x3 on [1,128,512,512] -> 128 channels stays within 256 MiB of scratch") {
  // The VAE decoder's last convolutions: a whole-image im2col would be 1.2 GB.
  const Shape x_shape{1, 128, 512, 512}, w_shape{128, 128, 3, 3};
  const int64_t scratch = conv2d_scratch_bytes(x_shape, w_shape, 1, Padding::same(1));
  std::printf("  conv2d [1,128,512,512] 3x3: %.1f MiB of scratch\n", double(scratch) / (1 << 20));
  REQUIRE(scratch <= 256ll << 20);

  // And the process really does not grow by more than output + scratch (+ allocator slack).
  Tensor x = random_tensor(x_shape, 1), w = random_tensor(w_shape, 2, -0.03f, 0.03f), b = random_tensor({128}, 3);
  rusage before{}, after{};
  getrusage(RUSAGE_SELF, &before);
  Tensor y = conv2d(x, w, b, 1, Padding::same(1));
  getrusage(RUSAGE_SELF, &after);
  const double grown_mib = double(after.ru_maxrss - before.ru_maxrss) / 1024.0;  // ru_maxrss is in KiB
  std::printf("  peak RSS grew by %.1f MiB (output 128 MiB)\n", grown_mib);
  REQUIRE(grown_mib <= 128 + 256);
  // Spot-check a few outputs, corners and the interior, against the direct sum.
  for (auto [o, yy, xx] : {std::tuple<int, int, int>{0, 0, 0}, {5, 511, 511}, {127, 0, 511}, {64, 300, 17}}) {
    double s = b[o];
    for (int c = 0; c < 128; ++c)
      for (int i = 0; i < 3; ++i)
        for (int j = 0; j < 3; ++j) {
          const int iy = yy - 1 + i, ix = xx - 1 + j;
          if (iy >= 0 && iy < 512 && ix >= 0 && ix < 512)
            s += double(w[((o * 128 + c) * 3 + i) * 3 + j]) * x[(int64_t(c) * 512 + iy) * 512 + ix];
        }
    REQUIRE(std::fabs(y[(int64_t(o) * 512 + yy) * 512 + xx] - s) <= 1e-4 * (1 + std::fabs(s)));
  }
}

TEST_CASE("nn: gemm, all four transposes, tile edges, alpha and beta") {
  // Sizes straddle the register tile (16) and the K block (256) in every dimension.
  for (auto [M, N, K] : {std::tuple<int64_t, int64_t, int64_t>{1, 1, 1},
                         {17, 33, 5},
                         {40, 77, 300},
                         {154, 320, 768},
                         {257, 18, 513},
                         {3, 100, 40}}) {
    for (int t = 0; t < 4; ++t) {
      const bool ta = t & 1, tb = t & 2;
      Tensor A = random_tensor(ta ? Shape{K, M} : Shape{M, K}, 1), B = random_tensor(tb ? Shape{N, K} : Shape{K, N}, 2);
      Tensor C0 = random_tensor({M, N}, 3);
      for (float beta : {0.0f, 1.0f, 0.5f}) {
        const float alpha = 0.75f;
        std::vector<double> ref(size_t(M * N));
        for (int64_t i = 0; i < M; ++i)
          for (int64_t j = 0; j < N; ++j) {
            double s = 0;
            for (int64_t k = 0; k < K; ++k) s += at(A, ta ? k * M + i : i * K + k) * at(B, tb ? j * K + k : k * N + j);
            ref[size_t(i * N + j)] = alpha * s + beta * at(C0, i * N + j);
          }
        Tensor C = C0.clone();
        if (beta == 0.0f) std::fill(C.begin(), C.end(), NAN);  // beta 0 must not read C
        gemm(ta, tb, M, N, K, alpha, A.data(), ta ? M : K, B.data(), tb ? K : N, beta, C.data(), N);
        const std::string what = "gemm " + std::to_string(M) + "x" + std::to_string(N) + "x" + std::to_string(K) +
                                 (ta ? " A^T" : "") + (tb ? " B^T" : "") +
                                 (beta == 0.0f   ? " beta 0"
                                  : beta == 1.0f ? " beta 1"
                                                 : " beta 0.5");
        require_close(C, from_double({M, N}, ref), kLoopTol, what);
        Tensor Cs = C0.clone();
        gemm_serial(ta, tb, M, N, K, alpha, A.data(), ta ? M : K, B.data(), tb ? K : N, beta, Cs.data(), N);
        REQUIRE(test::max_abs_diff(Cs, C) == 0.0);  // the threaded and serial paths agree bit for bit
      }
    }
  }
  // Leading dimensions larger than the rows: a sub-block of a bigger matrix, output included.
  Tensor A = random_tensor({20, 50}, 4), B = random_tensor({30, 60}, 5), C = Tensor::full({20, 70}, 7.0f);
  gemm(false, true, 20, 30, 40, 1.0f, A.data(), 50, B.data(), 60, 0.0f, C.data(), 70);
  for (int64_t i = 0; i < 20; ++i) {
    for (int64_t j = 0; j < 30; ++j) {
      double s = 0;
      for (int64_t k = 0; k < 40; ++k) s += at(A, i * 50 + k) * at(B, j * 60 + k);
      REQUIRE(std::fabs(C[i * 70 + j] - s) <= 1e-5);
    }
    for (int64_t j = 30; j < 70; ++j) REQUIRE(C[i * 70 + j] == 7.0f);  // untouched past N
  }
}

TEST_CASE("nn: Linear with and without bias") {
  // 96 -> 40 fits one K block; 300 -> 33 spans two, with the bias added on the first only.
  for (auto [in, out] : {std::pair<int64_t, int64_t>{96, 40}, {300, 33}}) {
    for (bool has_bias : {true, false}) {
      Linear lin;
      lin.in_features = in;
      lin.out_features = out;
      lin.weight = random_tensor({out, in}, 1);
      if (has_bias) lin.bias = random_tensor({out}, 2);
      Tensor x = random_tensor({2, 77, in}, 3);
      std::vector<double> ref(size_t(2 * 77 * out));
      for (int64_t r = 0; r < 2 * 77; ++r)
        for (int64_t o = 0; o < out; ++o) {
          double s = has_bias ? lin.bias[o] : 0.0;
          for (int64_t i = 0; i < in; ++i) s += at(x, r * in + i) * at(lin.weight, o * in + i);
          ref[size_t(r * out + o)] = s;
        }
      const std::string what =
          "linear " + std::to_string(in) + " -> " + std::to_string(out) + (has_bias ? " + bias" : "");
      require_close(lin.forward(x), from_double({2, 77, out}, ref), kLoopTol, what);
    }
  }
  Linear lin;
  lin.in_features = 8;
  lin.out_features = 4;
  lin.weight = random_tensor({4, 8}, 1);
  REQUIRE_THROWS_WITH(lin.forward(Tensor({3, 7})), Catch::Contains("expected last dimension 8"));
}

TEST_CASE("nn: Winograd F(2x2,3x3) conv2d against a direct convolution") {
  // conv2d takes the Winograd path for these (3x3, stride 1, pad 1, >= 64 channels, W % 32 == 0,
  // H even); the panels at the image's left and right edges and the padded top and bottom rows
  // are all exercised, a batch, and a layer wide enough to split an image into bands of tile rows.
  struct Case {
    const char* what;
    int64_t B, C, H, W, O;
  };
  for (const Case& c : {Case{"64 -> 64, 8x32", 1, 64, 8, 32, 64}, Case{"batch 2, 80 -> 96, 6x64", 2, 80, 6, 64, 96},
                        Case{"batch 3, 64 -> 72, 34x96", 3, 64, 34, 96, 72},
                        Case{"64 -> 1024, 40x32 (two bands of tile rows: 16 + 4)", 1, 64, 40, 32, 1024}}) {
    const Shape xs{c.B, c.C, c.H, c.W}, ws{c.O, c.C, 3, 3};
    REQUIRE(detail::conv_shape(xs, ws, 1, Padding::same(1)).algo == ConvAlgo::f23);
    REQUIRE(detail::conv_shape(xs, ws, 1, Padding::same(1), ConvAlgo::direct).algo == ConvAlgo::direct);
    Tensor x = random_tensor(xs, 1), w = random_tensor(ws, 2, -0.1f, 0.1f);
    Tensor b = random_tensor({c.O}, 3);
    const Tensor expected = naive_conv2d(x, w, b, 1, Padding::same(1));
    require_close(conv2d(x, w, b, 1, Padding::same(1)), expected, kLoopTol, c.what);
    require_close(conv2d(x, w, b, 1, Padding::same(1), ConvAlgo::f23), expected, kLoopTol, c.what);
    // the direct path on the same case
    require_close(conv2d(x, w, b, 1, Padding::same(1), ConvAlgo::direct), expected, kLoopTol, c.what);
  }
}

TEST_CASE("nn: ConvAlgo picks the algorithm where it fits, by one rule") {
  using A = ConvAlgo;
  struct Case {
    const char* what;
    Shape x, w;
    int stride;
    A automatic, automatic_u_net, direct, f23, f43;  // what runs for each ask (u_net: auto_f43)
  };
  // F(2x2) needs W % 32 == 0 and H even; F(4x4) sides multiples of 4 and W >= 16; automatic
  // takes F(4x4) only with the owner's leave: from 32x32 up, and below where F(2x2) does not
  // fit (U kept from 64x64 up, below made in the call: detail::ConvShape::keep_u).
  for (const Case& c : {
           Case{"64 -> 64, 32x32", {1, 64, 32, 32}, {64, 64, 3, 3}, 1, A::f23, A::f43, A::direct, A::f23, A::f43},
           Case{"64 -> 64, 16x32", {1, 64, 16, 32}, {64, 64, 3, 3}, 1, A::f23, A::f23, A::direct, A::f23, A::f43},
           Case{"64 -> 64, 16x16", {1, 64, 16, 16}, {64, 64, 3, 3}, 1, A::direct, A::f43, A::direct, A::direct, A::f43},
           Case{"64 -> 64, 8x8", {1, 64, 8, 8}, {64, 64, 3, 3}, 1, A::direct, A::direct, A::direct, A::direct, A::direct},
           Case{"64 -> 64, 34x96", {1, 64, 34, 96}, {64, 64, 3, 3}, 1, A::f23, A::f23, A::direct, A::f23, A::f23},
           Case{"64 -> 64, 30x30", {1, 64, 30, 30}, {64, 64, 3, 3}, 1, A::direct, A::direct, A::direct, A::direct,
                A::direct},
           // Winograd from kWinogradMinChannels (32) input and output channels.
           Case{"32 -> 64, 32x32", {1, 32, 32, 32}, {64, 32, 3, 3}, 1, A::f23, A::f43, A::direct, A::f23, A::f43},
           Case{"16 -> 64, 32x32 (few channels)", {1, 16, 32, 32}, {64, 16, 3, 3}, 1, A::direct, A::direct, A::direct,
                A::direct, A::direct},
           Case{"64 -> 16, 32x32 (few channels)", {1, 64, 32, 32}, {16, 64, 3, 3}, 1, A::direct, A::direct, A::direct,
                A::direct, A::direct},
           Case{"64 -> 64, 32x32, stride 2", {1, 64, 32, 32}, {64, 64, 3, 3}, 2, A::direct, A::direct, A::direct,
                A::direct, A::direct},
           Case{"64 -> 64, 1x1", {1, 64, 32, 32}, {64, 64, 1, 1}, 1, A::direct, A::direct, A::direct, A::direct,
                A::direct}}) {
    INFO(c.what);
    const Padding pad = Padding::same(int(c.w[2] / 2));
    auto run = [&](A asked, bool auto_f43 = false) { return detail::conv_shape(c.x, c.w, c.stride, pad, asked, auto_f43).algo; };
    CHECK(run(A::automatic) == c.automatic);
    CHECK(run(A::automatic, true) == c.automatic_u_net);
    CHECK(run(A::direct, true) == c.direct);
    CHECK(run(A::f23, true) == c.f23);
    CHECK(run(A::f43) == c.f43);
    const detail::ConvShape u_net = detail::conv_shape(c.x, c.w, c.stride, pad, A::automatic, true);
    CHECK(u_net.keep_u == (u_net.algo == A::f23 || (u_net.algo == A::f43 && c.x[2] >= 64 && c.x[3] >= 64)));
  }
  for (A a : {A::automatic, A::direct, A::f23, A::f43}) CHECK(parse_conv_algo(conv_algo_name(a)) == a);
  REQUIRE_THROWS_WITH(parse_conv_algo("winograd"),
                      Catch::Contains("unknown convolution algorithm 'winograd': expected auto, direct, f23 or f43"));

  // A Conv2d takes its algorithm from the WeightStore it is loaded from (LoadOptions::conv).
  WeightStore store(std::make_shared<SyntheticSource>());
  store.set_conv_algo(A::direct);
  Conv2d conv;
  conv.load(store, "conv", 64, 64, 3, 1, 1);
  REQUIRE(conv.algo == A::direct);
  Tensor x = random_tensor({1, 64, 32, 32}, 1);
  require_close(conv.forward(x), naive_conv2d(x, conv.weight, conv.bias, 1, Padding::same(1)), kLoopTol, "direct");
  REQUIRE(conv.winograd_tile == 0);  // no Winograd transform made
}

// proj_in / proj_out of a Transformer2DModel: the 1x1 convolution into and out of tokens is
// the image-major one with the layout change, bit for bit (the same sums, in the same order),
// with float32 and fp16 weights: a ragged 5x7 image and a 24x24 one, 300 channels (two k blocks).
TEST_CASE("nn: Conv2d forward_to_tokens / forward_from_tokens are forward with image_to_tokens / tokens_to_image") {
  for (const bool fp16 : {false, true}) {
    WeightStore store(std::make_shared<SyntheticSource>());
    store.set_keep_fp16(fp16);
    Conv2d conv;
    conv.load(store, "proj", 300, 40, 1);
    REQUIRE(conv.weight.defined() == !fp16);
    Conv2d back;
    back.load(store, "proj_back", 40, 300, 1);
    for (const auto& [H, W] : {std::pair<int64_t, int64_t>{5, 7}, {24, 24}}) {
      const std::string what = std::string(fp16 ? "fp16" : "fp32") + ", " + std::to_string(H) + "x" + std::to_string(W);
      INFO(what);
      const Tensor x = random_tensor({2, 300, H, W}, 1);
      const Tensor tokens = conv.forward_to_tokens(x);
      REQUIRE(tokens.shape() == Shape{2, H * W, 40});
      REQUIRE(test::max_abs_diff(tokens, image_to_tokens(conv.forward(x))) == 0.0);
      const Tensor y = back.forward_from_tokens(tokens, H, W);
      REQUIRE(y.shape() == Shape{2, 300, H, W});
      REQUIRE(test::max_abs_diff(y, back.forward(tokens_to_image(tokens, H, W))) == 0.0);
    }
    REQUIRE_THROWS_WITH(back.forward_from_tokens(Tensor({2, 30, 40}), 5, 7), Catch::Contains("5x7 image"));
  }
  Conv2d k3;
  WeightStore store(std::make_shared<SyntheticSource>());
  k3.load(store, "conv", 8, 8, 3, 1, 1);
  REQUIRE_THROWS_WITH(k3.forward_to_tokens(Tensor({1, 8, 4, 4})), Catch::Contains("needs a 1x1 convolution"));
}

TEST_CASE("nn: Winograd F(4x4,3x3) in Conv2d against a direct convolution") {
  // A Conv2d that allows it (the U-Net's) with float32 weights takes F(4x4, 3x3) on images of
  // at least 32x32 with sides multiples of 4, and keeps U from 64x64 up: groups of 16 tiles
  // that fill a tile row and parts of one (16, 17 and 24 tiles per row), and a layer wide
  // enough for several bands of tile rows, which span two images.
  // Its transforms scale by up to 25 and by 1/6, 1/12, 1/24, so it rounds several times more
  // than a direct sum (about 1.4e-6 relative L2 here, against 2e-7): it is held to the
  // project's tolerance for ops and blocks (../shared/README.md), not to kLoopTol.
  constexpr double kF43Tol = 1e-5;
  struct Case {
    const char* what;
    int64_t B, C, H, W, O;
  };
  for (const Case& c : {Case{"64 -> 64, 64x64 (16 tiles per row)", 1, 64, 64, 64, 64},
                        Case{"batch 2, 80 -> 96, 64x68 (17 tiles per row)", 2, 80, 64, 68, 96},
                        Case{"64 -> 72, 64x96 (24 tiles per row)", 1, 64, 64, 96, 72},
                        Case{"batch 3, 32 -> 1536, 64x64 (four bands of 12 tile rows, across the images)", 3, 32, 64, 64, 1536}}) {
    Conv2d conv;
    conv.auto_f43 = true;
    conv.weight = random_tensor({c.O, c.C, 3, 3}, 2, -0.1f, 0.1f);
    conv.bias = random_tensor({c.O}, 3);
    conv.padding = Padding::same(1);
    Tensor x = random_tensor({c.B, c.C, c.H, c.W}, 1);
    const Tensor expected = naive_conv2d(x, conv.weight, conv.bias, 1, Padding::same(1));
    require_close(conv.forward(x), expected, kF43Tol, c.what);
    REQUIRE(conv.winograd_tile == 4);
    require_close(conv.forward(x), expected, kF43Tol, c.what);  // again, with the kept U
    // Asked for explicitly (ConvAlgo::f43), without the owner's leave; and by conv2d itself.
    Conv2d asked = conv;
    asked.auto_f43 = false;
    asked.algo = ConvAlgo::f43;
    asked.winograd_u.reset();
    require_close(asked.forward(x), expected, kF43Tol, c.what);
    REQUIRE(asked.winograd_tile == 4);
    require_close(conv2d(x, conv.weight, conv.bias, 1, Padding::same(1), ConvAlgo::f43), expected, kF43Tol, c.what);
  }
  // Under 64x64 (the U-Net's 32x32 and 16x16 levels) U is made in each call, 48 output channels
  // (4 A panels) at a time, and nothing is kept: a block and a part of one (72 outputs),
  // channels in and out of groups of 16 (40 inputs), k blocks (1280 inputs: 5 of 256; 300: 2 of
  // 150, whose 9 x 150 weights per row end in a part of 16), a lone 4-row panel (100 outputs),
  // 4, 5 and 8 tiles per row, one image and two; and the same bits as with a kept U.
  for (const Case& c : {Case{"batch 2, 40 -> 72, 16x16", 2, 40, 16, 16, 72},
                        Case{"64 -> 128, 16x20", 1, 64, 16, 20, 128},
                        Case{"batch 2, 1280 -> 64, 16x16", 2, 1280, 16, 16, 64},
                        Case{"batch 2, 300 -> 100, 16x16", 2, 300, 16, 16, 100},
                        Case{"64 -> 64, 32x32 (8 tiles per row)", 1, 64, 32, 32, 64}}) {
    Conv2d conv;
    conv.auto_f43 = true;
    conv.weight = random_tensor({c.O, c.C, 3, 3}, 2, -0.1f, 0.1f);
    conv.bias = random_tensor({c.O}, 3);
    conv.padding = Padding::same(1);
    const Tensor x = random_tensor({c.B, c.C, c.H, c.W}, 1);
    const Tensor y = conv.forward(x);
    require_close(y, naive_conv2d(x, conv.weight, conv.bias, 1, Padding::same(1)), kF43Tol, c.what);
    CHECK(conv.winograd_u == nullptr);  // nothing kept
    CHECK(conv.winograd_tile == 0);
    const std::vector<float> u = winograd_f43_weights(conv.weight.data(), c.O, c.C);
    Tensor kept = Tensor::empty(y.shape());
    winograd_f43_conv3x3(x.data(), c.B, c.C, c.H, c.W, u.data(), c.O, conv.bias.data(), kept.data());
    CHECK(test::max_abs_diff(y, kept) == 0.0);
    CHECK(test::max_abs_diff(conv2d(x, conv.weight, conv.bias, 1, Padding::same(1), ConvAlgo::f43), y) == 0.0);
  }

  // Without the owner's leave, F(2x2, 3x3) (whose transform is 16/9 the weight's size); with
  // ConvAlgo::f23, F(2x2) despite the leave.
  Conv2d conv;
  conv.weight = random_tensor({64, 64, 3, 3}, 2, -0.1f, 0.1f);
  conv.padding = Padding::same(1);
  Tensor x = random_tensor({1, 64, 32, 32}, 1);
  const Tensor expected = naive_conv2d(x, conv.weight, Tensor(), 1, Padding::same(1));
  require_close(conv.forward(x), expected, kLoopTol, "F(2x2)");
  REQUIRE(conv.winograd_tile == 2);
  conv.auto_f43 = true;
  conv.algo = ConvAlgo::f23;
  require_close(conv.forward(x), expected, kLoopTol, "F(2x2) asked for");
  REQUIRE(conv.winograd_tile == 2);
  // F(4x4)'s working memory besides U stays bounded (bands of tile rows) on the VAE's largest image.
  const int64_t scratch = conv2d_scratch_bytes({1, 128, 512, 512}, {128, 128, 3, 3}, 1, Padding::same(1), ConvAlgo::f43);
  std::printf("  F(4x4) conv2d [1,128,512,512] 3x3: %.1f MiB of scratch\n", double(scratch) / (1 << 20));
  REQUIRE(scratch <= 256ll << 20);
}

TEST_CASE("nn: conv2d against a direct convolution") {
  struct Case {
    const char* what;
    int64_t B, C, H, W, O, k;
    int stride;
    Padding pad;
    bool bias;
  };
  for (const Case& c : {
           Case{"3x3 pad 1", 2, 5, 9, 11, 7, 3, 1, Padding::same(1), true},
           Case{"3x3 pad 1, 40 channels (K > one block)", 1, 40, 8, 8, 20, 3, 1, Padding::same(1), true},
           Case{"3x3 stride 2 pad 1", 2, 4, 9, 10, 6, 3, 2, Padding::same(1), true},
           Case{"3x3 stride 2, asymmetric pad (0,0,1,1)", 1, 4, 8, 8, 5, 3, 2, Padding{0, 0, 1, 1}, true},
           Case{"3x3 asymmetric pad (2,0,1,3)", 1, 3, 6, 7, 4, 3, 1, Padding{2, 0, 1, 3}, true},
           Case{"1x1", 2, 24, 5, 6, 33, 1, 1, Padding{}, true},
           Case{"1x1 no bias", 1, 8, 3, 3, 4, 1, 1, Padding{}, false},
           Case{"1x1 stride 2", 1, 8, 5, 5, 4, 1, 2, Padding{}, true},
           Case{"3x3 pad 1 on a 1x1 image", 2, 6, 1, 1, 5, 3, 1, Padding::same(1), true},
           Case{"3x3 stride 2 pad 1 on a 1x1 image", 1, 6, 1, 1, 5, 3, 2, Padding::same(1), true},
           Case{"3x3 stride 2 pad 1 on a 2x2 image", 2, 6, 2, 2, 5, 3, 2, Padding::same(1), true},
           Case{"3x3 stride 2 pad (0,0,1,1) on a 2x2 image", 1, 6, 2, 2, 5, 3, 2, Padding{0, 0, 1, 1}, true},
           Case{"3x3 no padding", 1, 3, 5, 4, 2, 3, 1, Padding{}, false},
           Case{"3x3 pad 1, batch 2 of 32x40 (one GEMM per image)", 2, 3, 32, 40, 4, 3, 1, Padding::same(1), true},
           Case{"3x3 stride 2 pad (0,0,1,1), batch 3 of 9x9", 3, 5, 9, 9, 6, 3, 2, Padding{0, 0, 1, 1}, true},
       }) {
    Tensor x = random_tensor({c.B, c.C, c.H, c.W}, 1), w = random_tensor({c.O, c.C, c.k, c.k}, 2);
    Tensor b = c.bias ? random_tensor({c.O}, 3) : Tensor();
    require_close(conv2d(x, w, b, c.stride, c.pad), naive_conv2d(x, w, b, c.stride, c.pad), kLoopTol, c.what);
  }
  Tensor x = random_tensor({1, 3, 4, 4}, 1), w = random_tensor({2, 4, 3, 3}, 2);
  REQUIRE_THROWS_WITH(conv2d(x, w, Tensor(), 1, Padding::same(1)), Catch::Contains("input channels"));
  REQUIRE_THROWS_WITH(conv2d(Tensor({1, 4, 1, 1}), w, Tensor(), 1, Padding{}), Catch::Contains("too small"));
}

TEST_CASE("nn: GroupNorm, eps 1e-5 and 1e-6, with and without fused SiLU") {
  Tensor x = random_tensor({2, 64, 5, 7}, 1, -2.0f, 3.0f);
  Tensor w = random_tensor({64}, 2, 0.5f, 1.5f), b = random_tensor({64}, 3);
  for (float eps : {1e-5f, 1e-6f}) {
    for (bool silu : {false, true}) {
      const std::string what =
          std::string("group_norm eps ") + (eps == 1e-5f ? "1e-5" : "1e-6") + (silu ? " + silu" : "");
      require_close(group_norm(x, w, b, 32, eps, silu), naive_group_norm(x, w, b, 32, eps, silu), kLoopTol, what);
    }
  }
  // A nearly constant group: the variance is tiny, eps decides the scale, and subtracting a
  // float-rounded mean would lose ~1e-5 of relative precision.
  Tensor flat = Tensor::full({1, 4, 3, 3}, 0.25f);
  flat[0] = 0.2501f;
  Tensor w4 = random_tensor({4}, 4), b4 = random_tensor({4}, 5);
  require_close(group_norm(flat, w4, b4, 2, 1e-6f), naive_group_norm(flat, w4, b4, 2, 1e-6, false), kLoopTol,
                "group_norm, near-constant group");
  GroupNorm gn;
  gn.weight = w;
  gn.bias = b;
  REQUIRE_THROWS_WITH(gn.forward(Tensor({1, 32, 2, 2})), Catch::Contains("expected 64 channels"));
  REQUIRE_THROWS_WITH(group_norm(Tensor({1, 30, 2, 2}), Tensor({30}), Tensor({30}), 32, 1e-5f),
                      Catch::Contains("do not split"));
}

TEST_CASE("nn: LayerNorm over the last dimension") {
  LayerNorm ln;
  ln.weight = random_tensor({320}, 1, 0.5f, 1.5f);
  ln.bias = random_tensor({320}, 2);
  Tensor x = random_tensor({2, 33, 320}, 3, -1.0f, 4.0f);
  std::vector<double> ref(size_t(x.numel()));
  for (int64_t r = 0; r < 66; ++r) {
    double mean = 0, var = 0;
    for (int64_t i = 0; i < 320; ++i) mean += at(x, r * 320 + i) / 320.0;
    for (int64_t i = 0; i < 320; ++i) var += std::pow(at(x, r * 320 + i) - mean, 2) / 320.0;
    for (int64_t i = 0; i < 320; ++i)
      ref[size_t(r * 320 + i)] = (at(x, r * 320 + i) - mean) / std::sqrt(var + 1e-5) * ln.weight[i] + ln.bias[i];
  }
  require_close(ln.forward(x), from_double(x.shape(), ref), kLoopTol, "layer_norm");
  REQUIRE_THROWS_WITH(ln.forward(Tensor({2, 3, 300})), Catch::Contains("expected last dimension 320"));
}

TEST_CASE("nn: activations SiLU, GELU (exact, tanh), quick_gelu, GEGLU") {
  // Wide range, with the tails where exp overflows or erf saturates; odd length for the tails of the vector loops.
  Tensor x = random_tensor({3, 1001}, 1, -12.0f, 12.0f);
  x[0] = 0.0f, x[1] = -90.0f, x[2] = 90.0f, x[3] = 1e-4f;
  const double k = std::sqrt(2.0 / M_PI);
  auto check = [&](void (*op)(Tensor&), auto f, const char* what) {
    Tensor y = x.clone();
    op(y);
    require_close(y, naive_map(x, f), kLoopTol, what);
  };
  check(
      silu_, [](double v) { return v / (1 + std::exp(-v)); }, "silu_");
  check(
      gelu_, [](double v) { return 0.5 * v * (1 + std::erf(v / std::sqrt(2.0))); }, "gelu_ (exact)");
  check(
      gelu_tanh_, [k](double v) { return 0.5 * v * (1 + std::tanh(k * (v + 0.044715 * v * v * v))); }, "gelu_tanh_");
  check(
      quick_gelu_, [](double v) { return v / (1 + std::exp(-1.702 * v)); }, "quick_gelu_");
  require_close(silu(x), naive_map(x, [](double v) { return v / (1 + std::exp(-v)); }), kLoopTol, "silu (copy)");

  Tensor h = random_tensor({2, 5, 2 * 37}, 2, -4.0f, 4.0f);  // [..., 2F] -> [..., F]
  std::vector<double> ref(size_t(2 * 5 * 37));
  for (int64_t r = 0; r < 10; ++r)
    for (int64_t i = 0; i < 37; ++i) {
      const double a = h[r * 74 + i], g = h[r * 74 + 37 + i];
      ref[size_t(r * 37 + i)] = a * 0.5 * g * (1 + std::erf(g / std::sqrt(2.0)));
    }
  require_close(geglu(h), from_double({2, 5, 37}, ref), kLoopTol, "geglu");
}

TEST_CASE("nn: softmax over the last dimension") {
  Tensor x = random_tensor({4, 3, 77}, 1, -30.0f, 30.0f);
  x[5] = 80.0f;  // exp would overflow without the max subtraction
  std::vector<double> ref(size_t(x.numel()));
  for (int64_t r = 0; r < 12; ++r) {
    double mx = -1e300, sum = 0;
    for (int64_t i = 0; i < 77; ++i) mx = std::max(mx, at(x, r * 77 + i));
    for (int64_t i = 0; i < 77; ++i) sum += std::exp(at(x, r * 77 + i) - mx);
    for (int64_t i = 0; i < 77; ++i) ref[size_t(r * 77 + i)] = std::exp(at(x, r * 77 + i) - mx) / sum;
  }
  Tensor y = x.clone();
  softmax_(y);
  require_close(y, from_double(x.shape(), ref), kLoopTol, "softmax_");
}

TEST_CASE("nn: scaled_dot_product_attention, self / cross / multi-head / causal") {
  struct Case {
    const char* what;
    int64_t B, Lq, Lk, D, Dv, heads;
    bool causal;
  };
  for (const Case& c : {
           Case{"self, one head", 1, 37, 37, 16, 16, 1, false},
           Case{"self, 8 heads of 40, > one query block", 2, 300, 300, 320, 320, 8, false},
           Case{"cross, 77 keys", 2, 70, 77, 64, 64, 4, false},
           Case{"cross, head dims of q/k and v differ", 1, 20, 9, 24, 40, 4, false},
           Case{"causal, 77 tokens, 12 heads", 2, 77, 77, 96, 96, 12, true},
           Case{"causal, > one query block", 1, 300, 300, 32, 32, 2, true},
           Case{"single key", 1, 5, 1, 8, 8, 2, false},
           Case{"one head of 300 (> 256: both products in k blocks), 70 queries", 1, 70, 270, 300, 300, 1, false},
       }) {
    Tensor q = random_tensor({c.B, c.Lq, c.D}, 1, -2.0f, 2.0f), k = random_tensor({c.B, c.Lk, c.D}, 2, -2.0f, 2.0f);
    Tensor v = random_tensor({c.B, c.Lk, c.Dv}, 3);
    require_close(scaled_dot_product_attention(q, k, v, c.heads, c.causal), naive_attention(q, k, v, c.heads, c.causal),
                  kLoopTol, c.what);
  }
  REQUIRE_THROWS_WITH(scaled_dot_product_attention(Tensor({1, 4, 10}), Tensor({1, 4, 10}), Tensor({1, 4, 10}), 3),
                      Catch::Contains("do not split"));
  REQUIRE_THROWS_WITH(scaled_dot_product_attention(Tensor({1, 4, 8}), Tensor({1, 5, 8}), Tensor({1, 4, 8}), 2),
                      Catch::Contains("do not fit"));
}

TEST_CASE("nn: cat_channels, image_to_tokens / tokens_to_image, upsample_nearest2x") {
  Tensor a = random_tensor({2, 3, 4, 5}, 1), b = random_tensor({2, 2, 4, 5}, 2);
  Tensor c = cat_channels(a, b);
  REQUIRE(c.shape() == Shape{2, 5, 4, 5});
  for (int64_t n = 0; n < 2; ++n)
    for (int64_t ch = 0; ch < 5; ++ch)
      for (int64_t p = 0; p < 20; ++p)
        REQUIRE(c[(n * 5 + ch) * 20 + p] == (ch < 3 ? a[(n * 3 + ch) * 20 + p] : b[(n * 2 + ch - 3) * 20 + p]));
  REQUIRE_THROWS_WITH(cat_channels(a, Tensor({2, 2, 4, 4})), Catch::Contains("differ"));

  Tensor t = image_to_tokens(a);  // [2, 20, 3]
  REQUIRE(t.shape() == Shape{2, 20, 3});
  for (int64_t n = 0; n < 2; ++n)
    for (int64_t ch = 0; ch < 3; ++ch)
      for (int64_t p = 0; p < 20; ++p) REQUIRE(t[(n * 20 + p) * 3 + ch] == a[(n * 3 + ch) * 20 + p]);
  Tensor back = tokens_to_image(t, 4, 5);
  REQUIRE(back.shape() == a.shape());
  REQUIRE(test::max_abs_diff(back, a) == 0.0);
  REQUIRE_THROWS_WITH(tokens_to_image(t, 5, 5), Catch::Contains("not a 5x5 image"));

  Tensor u = upsample_nearest2x(a);
  REQUIRE(u.shape() == Shape{2, 3, 8, 10});
  for (int64_t nc = 0; nc < 6; ++nc)
    for (int64_t y = 0; y < 8; ++y)
      for (int64_t x = 0; x < 10; ++x) REQUIRE(u[(nc * 8 + y) * 10 + x] == a[(nc * 4 + y / 2) * 5 + x / 2]);
}

// The same at sizes that take the threaded paths: chunks of 2^14 values that straddle the two
// inputs of a concatenation, transposes in 64 x 64 tiles with ragged edges on both sides.
TEST_CASE("nn: cat_channels, image_to_tokens / tokens_to_image and add_ over the threads") {
  Tensor a = random_tensor({2, 7, 75, 75}, 1), b = random_tensor({2, 5, 75, 75}, 2);
  const int64_t S = 75 * 75;
  Tensor c = cat_channels(a, b);
  REQUIRE(c.shape() == Shape{2, 12, 75, 75});
  int64_t wrong = 0;
  for (int64_t n = 0; n < 2; ++n)
    for (int64_t ch = 0; ch < 12; ++ch)
      for (int64_t p = 0; p < S; ++p)
        wrong += c[(n * 12 + ch) * S + p] != (ch < 7 ? a[(n * 7 + ch) * S + p] : b[(n * 5 + ch - 7) * S + p]);
  REQUIRE(wrong == 0);

  Tensor t = image_to_tokens(c);  // [2, S, 12]
  REQUIRE(t.shape() == Shape{2, S, 12});
  for (int64_t n = 0; n < 2; ++n)
    for (int64_t ch = 0; ch < 12; ++ch)
      for (int64_t p = 0; p < S; ++p) wrong += t[(n * S + p) * 12 + ch] != c[(n * 12 + ch) * S + p];
  REQUIRE(wrong == 0);
  REQUIRE(test::max_abs_diff(tokens_to_image(t, 75, 75), c) == 0.0);

  Tensor sum = a.clone();
  add_(sum, a);
  for (int64_t i = 0; i < a.numel(); ++i) wrong += sum[i] != 2.0f * a[i];
  REQUIRE(wrong == 0);
}
