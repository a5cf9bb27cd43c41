// The backward of every nn primitive against float64 PyTorch autograd: for each case of
// tests/data/grad_primitives.safetensors (made by scripts/make_grad_reference.py) the float32
// forward must match the reference output within 1e-5 relative L2 and every gradient (the
// vector-Jacobian product for the stored grad_out) within 1e-4 (../shared/README.md). A
// finite-difference probe on a few elements, independent of PyTorch, checks each op besides.
#include <algorithm>
#include <array>
#include <cmath>
#include <functional>
#include <map>
#include <vector>

#include "ldm/blocks/timestep_embedding.hpp"
#include "ldm/models/clip_text.hpp"
#include "ldm/models/vae.hpp"
#include "ldm/nn/activations.hpp"
#include "ldm/nn/attention.hpp"
#include "ldm/nn/conv2d.hpp"
#include "ldm/nn/elementwise.hpp"
#include "ldm/nn/group_norm.hpp"
#include "ldm/nn/layer_norm.hpp"
#include "ldm/nn/linear.hpp"
#include "ldm/nn/losses.hpp"
#include "ldm/nn/winograd.hpp"
#include "reference.hpp"
#include "tmp_path.hpp"

using namespace ldm;

namespace {

constexpr double kOutTol = 1e-5, kGradTol = 1e-4;

const test::Reference& primitives_ref() {
  static const test::Reference r = [] {
    const std::string f = __FILE__;
    return test::Reference(f.substr(0, f.rfind('/')) + "/data/grad_primitives.safetensors");
  }();
  return r;
}
Tensor ref_get(const std::string& c, const std::string& name) { return primitives_ref().get(c, name); }

std::vector<std::string> cases_of(const std::string& op) {
  std::vector<std::string> r;
  for (auto it = primitives_ref().cases.begin(); it != primitives_ref().cases.end(); ++it)
    if (it.value().at("op") == op) r.push_back(it.key());
  REQUIRE(!r.empty());
  return r;
}

// Worst relative L2 per op over its cases, printed at the end of the op's test.
struct Worst {
  std::string op;
  double out = 0, grad = 0;
  ~Worst() { std::printf("%-16s worst rel L2: output %.2e, gradients %.2e\n", op.c_str(), out, grad); }
  void out_close(const std::string& c, const Tensor& got) {
    out = std::max(out, test::require_close(got, ref_get(c, "out"), kOutTol, c + ".out"));
  }
  void grad_close(const std::string& c, const std::string& name, const Tensor& got) {
    grad = std::max(grad, test::require_close(got, ref_get(c, "grad." + name), kGradTol, c + ".grad." + name));
  }
};

// Finite-difference probe of the float32 op, independent of PyTorch. For a few elements i of
// one input x (by default: the largest gradient and two fixed others), the central difference
// (L(x + h e_i) - L(x - h e_i)) / 2h of L = sum(f(x) * grad_out), summed in double, must match
// the backward's g_i within 1e-2 (|g_i| + rms(g)). h = 1e-2 on inputs of order 1: large enough
// that the float32 rounding of the outputs moves the difference by ~1e-4 at most, small enough
// that the truncation error h^2 L'''/6 of these smooth ops stays near 1e-5. It checks the
// gradient's value and sign element-wise, not its 1e-4 precision (the torch reference does).
void fd_probe(const std::string& what, const Tensor& x, const Tensor& grad_out, const Tensor& g,
              const std::function<Tensor(const Tensor&)>& f, std::vector<int64_t> at = {}) {
  REQUIRE(g.shape() == x.shape());
  const int64_t n = x.numel();
  if (at.empty()) {
    int64_t imax = 0;
    for (int64_t i = 0; i < n; ++i)
      if (std::fabs(g[i]) > std::fabs(g[imax])) imax = i;
    at = {imax, n / 3, (2 * n) / 3 + 1 < n ? (2 * n) / 3 + 1 : n - 1};
  }
  const double rms = std::sqrt(g.vec().cast<double>().squaredNorm() / double(n));
  const float h = 1e-2f;
  auto loss = [&](const Tensor& xp) {
    const Tensor y = f(xp);
    REQUIRE(y.shape() == grad_out.shape());
    return y.vec().cast<double>().dot(grad_out.vec().cast<double>());
  };
  Tensor xp = x.clone();
  for (int64_t i : at) {
    const float x0 = xp[i];
    xp[i] = x0 + h;
    const double lp = loss(xp);
    xp[i] = x0 - h;
    const double lm = loss(xp);
    xp[i] = x0;
    const double fd = (lp - lm) / (2.0 * double(h));
    INFO(what << " element " << i << ": finite difference " << fd << ", backward " << g[i] << ", rms " << rms);
    CHECK(std::fabs(fd - g[i]) <= 1e-2 * (std::fabs(g[i]) + rms));
  }
}

}  // namespace

TEST_CASE("backward: Linear, with and without bias", "[nn][backward]") {
  Worst w{"linear"};
  for (const std::string& c : cases_of("linear")) {
    Linear lin;
    lin.weight = ref_get(c, "weight");
    if (primitives_ref().meta(c).at("bias")) lin.bias = ref_get(c, "bias");
    lin.out_features = lin.weight.dim(0), lin.in_features = lin.weight.dim(1);
    const Tensor x = ref_get(c, "x"), go = ref_get(c, "grad_out");
    w.out_close(c, lin.forward(x));
    const Tensor dx = lin.backward(x, go);
    w.grad_close(c, "x", dx);
    w.grad_close(c, "weight", lin.grad_weight);
    if (lin.bias.defined()) w.grad_close(c, "bias", lin.grad_bias);
    fd_probe(c + ".x", x, go, dx, [&](const Tensor& xp) { return lin.forward(xp); });
    fd_probe(c + ".weight", lin.weight, go, lin.grad_weight, [&](const Tensor& wp) {
      Linear l = lin;
      l.weight = wp;
      return l.forward(x);
    });
  }
}

TEST_CASE("backward: parameter gradients accumulate over calls", "[nn][backward]") {
  const std::string c = "linear.odd";
  Linear lin;
  lin.weight = ref_get(c, "weight"), lin.bias = ref_get(c, "bias");
  lin.out_features = lin.weight.dim(0), lin.in_features = lin.weight.dim(1);
  const Tensor x = ref_get(c, "x"), go = ref_get(c, "grad_out");
  lin.backward(x, go);
  lin.backward(x, go);  // a layer used twice in one forward: its gradient is the sum
  Tensor twice = ref_get(c, "grad.weight");
  scale_(twice, 2.0f);
  test::require_close(lin.grad_weight, twice, kGradTol, c + " grad.weight after two backwards");
  twice = ref_get(c, "grad.bias");
  scale_(twice, 2.0f);
  test::require_close(lin.grad_bias, twice, kGradTol, c + " grad.bias after two backwards");
}

TEST_CASE("backward: conv2d, 1x1, 3x3, stride 2 with the VAE's asymmetric pad, Winograd forward", "[nn][backward]") {
  Worst w{"conv2d"};
  for (const std::string& c : cases_of("conv2d")) {
    const auto& m = primitives_ref().meta(c);
    Conv2d conv;
    conv.weight = ref_get(c, "weight");
    if (m.at("bias")) conv.bias = ref_get(c, "bias");
    conv.stride = m.at("stride");
    const auto p = m.at("pad");
    conv.padding = Padding{p[0], p[1], p[2], p[3]};
    const Tensor x = ref_get(c, "x"), go = ref_get(c, "grad_out");
    w.out_close(c, conv.forward(x));
    const Tensor dx = conv.backward(x, go);
    w.grad_close(c, "x", dx);
    w.grad_close(c, "weight", conv.grad_weight);
    if (conv.bias.defined()) w.grad_close(c, "bias", conv.grad_bias);
    // the free conv2d: Conv2d keeps Winograd weights made from the unperturbed weight
    fd_probe(c + ".x", x, go, dx, [&](const Tensor& xp) { return conv2d(xp, conv.weight, conv.bias, conv.stride, conv.padding); });
    fd_probe(c + ".weight", conv.weight, go, conv.grad_weight,
             [&](const Tensor& wp) { return conv2d(x, wp, conv.bias, conv.stride, conv.padding); });
  }
}

TEST_CASE("backward: conv2d's Winograd weight gradient equals the im2col one", "[nn][backward]") {
  // The 3x3 conv's dW by Winograd's adjoint transforms (winograd_conv3x3_grad_weight) and by the
  // im2col GEMM (ConvAlgo::direct, the road every other convolution takes and that the float64
  // references above check), both against dW in float64; and conv2d_backward's own choice
  // (automatic: winograd_grad_weight_pays). Shapes: the smallest image (2x2), widths that are
  // not a multiple of 32, a batch of small images, and tiles spanning two chunks of the
  // transform buffers (2 x 48 x 96 = 9216 > 8192 tiles at 32 + 32 channels).
  for (const auto& [B, C, H, W, O] : std::vector<std::array<int64_t, 5>>{
           {1, 32, 2, 2, 32}, {3, 32, 6, 10, 48}, {64, 64, 4, 4, 128}, {1, 48, 16, 34, 64}, {2, 32, 96, 192, 32}}) {
    CAPTURE(B, C, H, W, O);
    Tensor x({B, C, H, W}), w({O, C, 3, 3}), go({B, O, H, W});
    for (int64_t i = 0; i < x.numel(); ++i) x[i] = float(std::sin(0.37 * double(i)));
    for (int64_t i = 0; i < w.numel(); ++i) w[i] = float(0.05 * std::cos(0.11 * double(i)));
    for (int64_t i = 0; i < go.numel(); ++i) go[i] = float(std::cos(0.23 * double(i) + 1.0));
    Tensor gw_winograd({O, C, 3, 3}), gw_direct, gw_auto, gb_direct, gb_auto;
    winograd_conv3x3_grad_weight(x.data(), go.data(), B, C, H, W, O, gw_winograd.data());
    const Tensor dx_direct = conv2d_backward(x, w, go, 1, Padding::same(1), gw_direct, &gb_direct, ConvAlgo::direct);
    const Tensor dx_auto = conv2d_backward(x, w, go, 1, Padding::same(1), gw_auto, &gb_auto);
    // dW in float64, from its definition: the sum over pixels of dy[o] times x[c] shifted by the tap.
    Tensor gw_exact({O, C, 3, 3});
    for (int64_t o = 0; o < O; ++o)
      for (int64_t c = 0; c < C; ++c)
        for (int64_t i = 0; i < 3; ++i)
          for (int64_t j = 0; j < 3; ++j) {
            double sum = 0;
            for (int64_t b = 0; b < B; ++b)
              for (int64_t y = std::max<int64_t>(0, 1 - i); y < std::min(H, H + 1 - i); ++y)
                for (int64_t z = std::max<int64_t>(0, 1 - j); z < std::min(W, W + 1 - j); ++z)
                  sum += double(go[((b * O + o) * H + y) * W + z]) * x[((b * C + c) * H + y + i - 1) * W + z + j - 1];
            gw_exact[((o * C + c) * 3 + i) * 3 + j] = float(sum);
          }
    const double e_winograd = test::rel_l2(gw_winograd, gw_exact), e_direct = test::rel_l2(gw_direct, gw_exact);
    INFO("rel L2 to the float64 dW: Winograd " << e_winograd << ", im2col " << e_direct);
    CHECK(e_winograd < 1e-5);  // the suite's gradient tolerance is 1e-4
    CHECK(e_direct < 1e-5);
    CHECK(test::rel_l2(gw_auto, gw_exact) < 1e-5);
    CHECK(test::rel_l2(dx_auto, dx_direct) < 1e-6);
    CHECK(test::max_abs_diff(gb_auto, gb_direct) == 0);
  }
}

TEST_CASE("backward: a training step's new conv weights reach the next Winograd forward", "[nn][backward]") {
  // Conv2d keeps the Winograd transform of its weight; an optimizer changes the weight in place
  // after the backward, so a forward that reused the old transform would train on stale weights.
  Conv2d conv;
  conv.weight = Tensor({64, 64, 3, 3});
  conv.bias = Tensor({64});
  conv.padding = Padding::same(1);
  conv.algo = ConvAlgo::f23;
  Tensor x({1, 64, 32, 32});
  for (int64_t i = 0; i < x.numel(); ++i) x[i] = float(std::sin(0.37 * double(i)));
  for (int64_t i = 0; i < conv.weight.numel(); ++i) conv.weight[i] = float(0.01 * std::cos(0.11 * double(i)));
  const Tensor y0 = conv.forward(x);
  REQUIRE(conv.winograd_tile == 2);
  conv.backward(x, y0);
  for (int64_t i = 0; i < conv.weight.numel(); ++i) conv.weight[i] -= 0.5f * conv.grad_weight[i] / 1000.0f;  // in place
  const Tensor y1 = conv.forward(x);
  const Tensor expected = conv2d(x, conv.weight, conv.bias, 1, Padding::same(1), ConvAlgo::direct);
  double num = 0, den = 0;
  for (int64_t i = 0; i < y1.numel(); ++i) {
    num += (double(y1[i]) - expected[i]) * (double(y1[i]) - expected[i]);
    den += double(expected[i]) * expected[i];
  }
  CHECK(std::sqrt(num / den) < 1e-5);
  // A new weight tensor (a loaded checkpoint) is noticed without a backward.
  conv.weight = Tensor({64, 64, 3, 3});
  const Tensor y2 = conv.forward(x);
  double m = 0;
  for (int64_t i = 0; i < y2.numel(); ++i) m = std::max(m, std::abs(double(y2[i]) - conv.bias[i / (32 * 32)]));
  CHECK(m < 1e-6);  // zero weights: the output is the bias
}

TEST_CASE("backward: GroupNorm, with and without the fused SiLU", "[nn][backward]") {
  Worst w{"group_norm"};
  for (const std::string& c : cases_of("group_norm")) {
    const auto& m = primitives_ref().meta(c);
    GroupNorm gn;
    gn.weight = ref_get(c, "weight"), gn.bias = ref_get(c, "bias");
    gn.groups = m.at("groups"), gn.eps = m.at("eps");
    const bool silu = m.at("silu");
    const Tensor x = ref_get(c, "x"), go = ref_get(c, "grad_out");
    w.out_close(c, gn.forward(x, silu));
    const Tensor dx = gn.backward(x, go, silu);
    w.grad_close(c, "x", dx);
    w.grad_close(c, "weight", gn.grad_weight);
    w.grad_close(c, "bias", gn.grad_bias);
    fd_probe(c + ".x", x, go, dx, [&](const Tensor& xp) { return gn.forward(xp, silu); });
    fd_probe(c + ".weight", gn.weight, go, gn.grad_weight, [&](const Tensor& wp) {
      GroupNorm g = gn;
      g.weight = wp;
      return g.forward(x, silu);
    });
  }
}

TEST_CASE("backward: LayerNorm", "[nn][backward]") {
  Worst w{"layer_norm"};
  for (const std::string& c : cases_of("layer_norm")) {
    LayerNorm ln;
    ln.weight = ref_get(c, "weight"), ln.bias = ref_get(c, "bias"), ln.eps = primitives_ref().meta(c).at("eps");
    const Tensor x = ref_get(c, "x"), go = ref_get(c, "grad_out");
    w.out_close(c, ln.forward(x));
    const Tensor dx = ln.backward(x, go);
    w.grad_close(c, "x", dx);
    w.grad_close(c, "weight", ln.grad_weight);
    w.grad_close(c, "bias", ln.grad_bias);
    fd_probe(c + ".x", x, go, dx, [&](const Tensor& xp) { return ln.forward(xp); });
  }
}

TEST_CASE("backward: SiLU, GELU (exact and tanh), quick_gelu, GEGLU, softmax", "[nn][backward]") {
  using Fn = std::function<Tensor(const Tensor&)>;
  using Bw = std::function<Tensor(const Tensor&, const Tensor&)>;  // (saved, dy) -> dx
  auto inplace = [](void (*f)(Tensor&)) {
    return Fn([f](const Tensor& x) {
      Tensor y = x.clone();
      f(y);
      return y;
    });
  };
  const Fn softmax = [](const Tensor& x) {
    Tensor y = x.clone();
    softmax_(y);
    return y;
  };
  const std::vector<std::tuple<std::string, std::string, Fn, Bw>> ops = {
      {"silu", "x", inplace(silu_), silu_backward},
      {"gelu", "x", inplace(gelu_), gelu_backward},
      {"gelu_tanh", "x", inplace(gelu_tanh_), gelu_tanh_backward},
      {"quick_gelu", "x", inplace(quick_gelu_), quick_gelu_backward},
      {"geglu", "h", Fn(geglu), geglu_backward},
      // softmax's backward takes the output it saved, not the input
      {"softmax", "x", softmax, [&](const Tensor& x, const Tensor& dy) { return softmax_backward(softmax(x), dy); }},
  };
  for (const auto& [op, in, f, bw] : ops) {
    Worst w{op};
    for (const std::string& c : cases_of(op)) {
      const Tensor x = ref_get(c, in), go = ref_get(c, "grad_out");
      w.out_close(c, f(x));
      const Tensor dx = bw(x, go);
      w.grad_close(c, in, dx);
      fd_probe(c + "." + in, x, go, dx, f);
    }
  }
}

TEST_CASE("backward: scaled dot-product attention, several heads and query blocks, causal", "[nn][backward]") {
  Worst w{"attention"};
  for (const std::string& c : cases_of("attention")) {
    const auto& m = primitives_ref().meta(c);
    const int64_t heads = m.at("heads");
    const bool causal = m.at("causal");
    const Tensor q = ref_get(c, "q"), k = ref_get(c, "k"), v = ref_get(c, "v"), go = ref_get(c, "grad_out");
    w.out_close(c, scaled_dot_product_attention(q, k, v, heads, causal));
    const AttentionGrad g = scaled_dot_product_attention_backward(q, k, v, go, heads, causal);
    w.grad_close(c, "q", g.q);
    w.grad_close(c, "k", g.k);
    w.grad_close(c, "v", g.v);
    fd_probe(c + ".q", q, go, g.q, [&](const Tensor& p) { return scaled_dot_product_attention(p, k, v, heads, causal); });
    fd_probe(c + ".k", k, go, g.k, [&](const Tensor& p) { return scaled_dot_product_attention(q, p, v, heads, causal); });
    fd_probe(c + ".v", v, go, g.v, [&](const Tensor& p) { return scaled_dot_product_attention(q, k, p, heads, causal); });
  }
}

TEST_CASE("backward: nearest upsample, channel concat / split, channel bias", "[nn][backward]") {
  {
    Worst w{"upsample"};
    const std::string c = "upsample.a";
    const Tensor x = ref_get(c, "x"), go = ref_get(c, "grad_out");
    w.out_close(c, upsample_nearest2x(x));
    const Tensor dx = upsample_nearest2x_backward(go);
    w.grad_close(c, "x", dx);
    fd_probe(c + ".x", x, go, dx, upsample_nearest2x);
  }
  {
    Worst w{"cat"};
    const std::string c = "cat.a";
    const Tensor a = ref_get(c, "a"), b = ref_get(c, "b"), go = ref_get(c, "grad_out");
    w.out_close(c, cat_channels(a, b));
    const auto [da, db] = split_channels(go, a.dim(1));
    w.grad_close(c, "a", da);
    w.grad_close(c, "b", db);
    fd_probe(c + ".b", b, go, db, [&](const Tensor& p) { return cat_channels(a, p); });
  }
  {
    Worst w{"channel_bias"};
    const std::string c = "channel_bias.a";
    const Tensor x = ref_get(c, "x"), v = ref_get(c, "v"), go = ref_get(c, "grad_out");
    auto f = [&](const Tensor& vp) {
      Tensor y = x.clone();
      add_channel_bias_(y, vp);
      return y;
    };
    w.out_close(c, f(v));
    w.grad_close(c, "x", go);  // the identity
    const Tensor dv = channel_sums(go);
    w.grad_close(c, "v", dv);
    fd_probe(c + ".v", v, go, dv, f);
  }
}

TEST_CASE("backward: token and position embeddings (scatter-add over repeated ids)", "[nn][backward]") {
  Worst w{"embedding"};
  const std::string c = "embedding.a";
  const std::vector<int64_t> ids = primitives_ref().file.load_i64(c + ".ids");
  const Tensor go = ref_get(c, "grad_out");
  const int64_t B = go.dim(0), L = go.dim(1);
  CLIPTextEmbeddings e;
  e.token_embedding.weight = ref_get(c, "token_weight");
  e.position_embedding.weight = ref_get(c, "position_weight");
  w.out_close(c, e.forward(ids, B, L));
  e.backward(ids, B, L, go);
  w.grad_close(c, "token_weight", e.token_embedding.grad_weight);
  w.grad_close(c, "position_weight", e.position_embedding.grad_weight);
  fd_probe(c + ".token_weight", e.token_embedding.weight, go, e.token_embedding.grad_weight, [&](const Tensor& p) {
    CLIPTextEmbeddings f = e;
    f.token_embedding.weight = p;
    return f.forward(ids, B, L);
  });
}

TEST_CASE("backward: timestep embedding MLP (linear, SiLU, linear)", "[nn][backward]") {
  Worst w{"timestep_mlp"};
  const std::string c = "timestep_mlp.a";
  TimestepEmbedding te;
  for (auto [lin, name] : {std::pair{&te.linear_1, "linear_1"}, std::pair{&te.linear_2, "linear_2"}}) {
    lin->weight = ref_get(c, std::string(name) + ".weight"), lin->bias = ref_get(c, std::string(name) + ".bias");
    lin->out_features = lin->weight.dim(0), lin->in_features = lin->weight.dim(1);
  }
  const Tensor x = ref_get(c, "x"), go = ref_get(c, "grad_out");
  TimestepEmbedding::Saved saved;
  w.out_close(c, te.forward(x, saved));
  const Tensor dx = te.backward(saved, go);
  w.grad_close(c, "x", dx);
  w.grad_close(c, "linear_1.weight", te.linear_1.grad_weight);
  w.grad_close(c, "linear_1.bias", te.linear_1.grad_bias);
  w.grad_close(c, "linear_2.weight", te.linear_2.grad_weight);
  w.grad_close(c, "linear_2.bias", te.linear_2.grad_bias);
  fd_probe(c + ".linear_1.weight", te.linear_1.weight, go, te.linear_1.grad_weight, [&](const Tensor& p) {
    TimestepEmbedding t = te;
    t.linear_1.weight = p;
    return t.forward(x);
  });
}

TEST_CASE("backward: DiagonalGaussian sample with a given noise, KL to N(0, I), logvar clamp", "[nn][backward]") {
  {
    Worst w{"gaussian_sample"};
    const std::string c = "gaussian_sample.a";
    const Tensor moments = ref_get(c, "moments"), noise = ref_get(c, "noise"), go = ref_get(c, "grad_out");
    auto f = [&](const Tensor& mo) { return DiagonalGaussian::from_moments(mo).sample(noise); };
    w.out_close(c, f(moments));
    const DiagonalGaussian g = DiagonalGaussian::from_moments(moments);
    const Tensor dm = DiagonalGaussian::from_moments_backward(moments, g.sample_backward(noise, go));
    w.grad_close(c, "moments", dm);
    w.grad_close(c, "noise", [&] {  // d sample / d noise = std
      Tensor d = g.std();
      d.vec() = (d.vec().array() * go.vec().array()).matrix();
      return d;
    }());
    // Away from the three logvars planted at and beyond the clamp (a kink there).
    fd_probe(c + ".moments", moments, go, dm, f, {3, 40, 50, 100, 140});
  }
  {
    Worst w{"gaussian_kl"};
    const std::string c = "gaussian_kl.a";
    const Tensor moments = ref_get(c, "moments"), go = ref_get(c, "grad_out");
    auto f = [](const Tensor& mo) { return DiagonalGaussian::from_moments(mo).kl(); };
    w.out_close(c, f(moments));
    const DiagonalGaussian g = DiagonalGaussian::from_moments(moments);
    const Tensor dm = DiagonalGaussian::from_moments_backward(moments, g.kl_backward(go));
    w.grad_close(c, "moments", dm);
    fd_probe(c + ".moments", moments, go, dm, f);
  }
}

TEST_CASE("backward: MSE and L1 losses (mean reduction)", "[nn][backward]") {
  using Loss = float (*)(const Tensor&, const Tensor&);
  using LossBw = Tensor (*)(const Tensor&, const Tensor&, float);
  for (auto [op, loss, bw] : {std::tuple<std::string, Loss, LossBw>{"mse", mse_loss, mse_loss_backward},
                              std::tuple<std::string, Loss, LossBw>{"l1", l1_loss, l1_loss_backward}}) {
    Worst w{op};
    const std::string c = op + ".a";
    const Tensor x = ref_get(c, "x"), target = ref_get(c, "target"), go = ref_get(c, "grad_out");
    auto f = [&, loss = loss](const Tensor& xp) { return Tensor::from({1}, {loss(xp, target)}); };
    w.out_close(c, f(x));
    const Tensor dx = bw(x, target, go[0]);
    w.grad_close(c, "x", dx);
    Tensor dt = dx.clone();
    scale_(dt, -1.0f);
    w.grad_close(c, "target", dt);
    fd_probe(c + ".x", x, go, dx, f);  // L1 is linear between its kinks, which these elements are away from
  }
}

TEST_CASE("backward: a gradient whose shape does not fit is an error that names it", "[nn][backward]") {
  Linear lin;
  lin.weight = Tensor({4, 3}), lin.out_features = 4, lin.in_features = 3;
  REQUIRE_THROWS_WITH(lin.backward(Tensor({2, 3}), Tensor({2, 5})),
                      Catch::Contains("Linear::backward: gradient [2, 5] does not match the output of input [2, 3]"));
  REQUIRE_THROWS_WITH(conv2d_backward(Tensor({1, 2, 4, 4}), Tensor({3, 2, 3, 3}), Tensor({1, 3, 4, 4}), 1, Padding{},
                                      lin.grad_weight, nullptr),
                      Catch::Contains("conv2d_backward: gradient [1, 3, 4, 4] does not match the output [1, 3, 2, 2]"));
}

TEST_CASE("backward: conv2d backward time against the forward on an SD1.5 shape", "[.bench][backward]") {
  // [1, 320, 64, 64] 3x3 -> 320: the U-Net's first level. Not a test: prints the two times.
  Tensor x({1, 320, 64, 64}), go({1, 320, 64, 64});
  Conv2d conv;
  conv.weight = Tensor({320, 320, 3, 3}), conv.bias = Tensor({320}), conv.padding = Padding::same(1);
  for (int64_t i = 0; i < x.numel(); ++i) x[i] = std::sin(0.1f * float(i)), go[i] = std::cos(0.07f * float(i));
  for (int64_t i = 0; i < conv.weight.numel(); ++i) conv.weight[i] = 0.02f * std::sin(0.3f * float(i));
  conv.forward(x);  // warm-up: Winograd weights, GEMM buffers
  conv.backward(x, go);
  test::Timer tf;
  conv.forward(x);
  const double f = tf.seconds();
  conv.algo = ConvAlgo::direct;
  test::Timer td;
  conv.forward(x);
  const double fd = td.seconds();
  conv.algo = ConvAlgo::automatic;
  test::Timer tb;
  conv.backward(x, go);
  const double b = tb.seconds();
  const double gflop = 2.0 * 320 * 320 * 9 * 64 * 64 / 1e9;  // one direct convolution's multiply-adds
  std::printf("conv2d [1,320,64,64] 3x3: forward %.3f s (Winograd), %.3f s (direct GEMM, %.0f GFLOP/s); backward "
              "%.3f s (%.1fx the Winograd forward; %.0f GFLOP/s over its two GEMMs)\n",
              f, fd, gflop / fd, b, b / f, 2 * gflop / b);
}
