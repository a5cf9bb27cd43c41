// The GPU's basic ops against their CPU twins: element-wise ops and layouts
// (kernels/elementwise.cu), GroupNorm in both versions (kernels/group_norm.cu), LayerNorm
// (kernels/layer_norm.cu) and the row softmax (kernels/softmax.cu), plus DeviceTensor's
// reshape / slice0 / to_dtype / upload / download.
//
// Each case builds random inputs with a fixed seed at SD1.5-like shapes (and at odd shapes
// that force the kernels' scalar fallbacks and tails), computes the CPU result from
// include/ldm/nn, and only then, if a GPU is present, runs the op on the GPU in fp32, fp16
// and bf16 and compares: relative L2 <= 1e-5 in fp32, <= 2e-2 in fp16 / bf16 (inputs are
// uploaded from the same float32 values, so the 16-bit error includes the input rounding).
// The pure copies (concatenation, transposes, upsampling) must be exact in fp32.
// Without a GPU the CPU side still runs and tests/cuda_main.cpp exits with 77 (skipped).
#include <cmath>
#include <iterator>
#include <random>
#include <string>
#include <vector>

#include "ldm/blocks/timestep_embedding.hpp"
#include "ldm/cuda/ops.hpp"
#include "ldm/cuda/transfer.hpp"
#include "ldm/nn/activations.hpp"
#include "ldm/nn/elementwise.hpp"
#include "ldm/nn/group_norm.hpp"
#include "ldm/nn/layer_norm.hpp"
#include "reference.hpp"

using namespace ldm;
using Catch::Contains;
using cuda::DeviceTensor;

namespace {

const cuda::DType kOpDtypes[] = {cuda::DType::f32, cuda::DType::f16, cuda::DType::bf16};

double tol(cuda::DType t) { return t == cuda::DType::f32 ? 1e-5 : 2e-2; }
double copy_tol(cuda::DType t) { return t == cuda::DType::f32 ? 0.0 : 2e-2; }  // exact in fp32

using ldm::test::random_tensor;

std::string label(const std::string& op, const Shape& shape, cuda::DType t, const std::string& extra = "") {
  return op + " " + shape_str(shape) + (extra.empty() ? "" : " " + extra) + " " + cuda::dtype_name(t);
}

void check(const DeviceTensor& got, const Tensor& ref, cuda::DType t, double tolerance, const std::string& what) {
  REQUIRE(got.dtype() == t);
  test::require_close(cuda::to_host(got), ref, tolerance, what);
}

}  // namespace

TEST_CASE("cuda activations: silu_, gelu_, quick_gelu_, silu", "[cuda][elementwise]") {
  struct Op {
    const char* name;
    void (*cpu)(Tensor&);
    void (*gpu)(DeviceTensor&);
  };
  const Op ops[] = {{"silu_", ldm::silu_, cuda::silu_},
                    {"gelu_", ldm::gelu_, cuda::gelu_},
                    {"quick_gelu_", ldm::quick_gelu_, cuda::quick_gelu_}};
  struct Case {
    Tensor x, silu;
    std::vector<Tensor> refs;  // one per op
  };
  std::vector<Case> cases;
  for (const Shape& shape : {Shape{2, 320, 64, 64}, Shape{1000003}}) {  // SD1.5; an odd length (tail)
    Case c{random_tensor(shape, 11, -6.0f, 6.0f), {}, {}};
    for (const Op& op : ops) {
      Tensor r = c.x.clone();
      op.cpu(r);
      c.refs.push_back(r);
    }
    c.silu = ldm::silu(c.x);
    cases.push_back(c);
  }
  if (!cuda::available()) return;
  for (const Case& c : cases) {
    for (cuda::DType t : kOpDtypes) {
      for (size_t k = 0; k < c.refs.size(); ++k) {
        DeviceTensor d = cuda::to_device(c.x, t);
        ops[k].gpu(d);
        check(d, c.refs[k], t, tol(t), label(ops[k].name, c.x.shape(), t));
      }
      const DeviceTensor d = cuda::to_device(c.x, t);
      check(cuda::silu(d), c.silu, t, tol(t), label("silu", c.x.shape(), t));
      check(d, c.x, t, tol(t), label("silu leaves its input", c.x.shape(), t));
    }
  }
}

TEST_CASE("cuda activations on an unaligned view", "[cuda][elementwise]") {
  const int64_t n = 4099;
  const Tensor x = random_tensor({n}, 12, -6.0f, 6.0f);
  Tensor ref = x.clone();
  Tensor tail = ref.slice0(1, n);
  ldm::gelu_(tail);  // element 0 untouched, the rest GELU'd in place
  if (!cuda::available()) return;
  for (cuda::DType t : kOpDtypes) {
    DeviceTensor d = cuda::to_device(x, t);
    DeviceTensor view = d.slice0(1, n);  // 4 or 2 bytes past a 16-byte boundary
    cuda::gelu_(view);
    check(d, ref, t, tol(t), label("gelu_ on slice0(1, n)", {n}, t));
  }
}

TEST_CASE("cuda geglu", "[cuda][elementwise]") {
  std::vector<std::pair<Tensor, Tensor>> cases;  // (h, reference)
  for (const Shape& shape : {Shape{2, 4096, 2560}, Shape{3, 5, 26}}) {  // SD1.5 down block 1; F = 13 (scalar path)
    const Tensor h = random_tensor(shape, 21, -4.0f, 4.0f);
    cases.emplace_back(h, ldm::geglu(h));
  }
  if (!cuda::available()) return;
  for (const auto& [h, ref] : cases)
    for (cuda::DType t : kOpDtypes) check(cuda::geglu(cuda::to_device(h, t)), ref, t, tol(t), label("geglu", h.shape(), t));
}

TEST_CASE("cuda add_, add, scale_", "[cuda][elementwise]") {
  struct Case {
    Tensor a, b, sum, scaled;
  };
  std::vector<Case> cases;
  for (const Shape& shape : {Shape{2, 320, 64, 64}, Shape{7, 13}}) {
    Case c{random_tensor(shape, 31), random_tensor(shape, 32), {}, {}};
    c.sum = ldm::add(c.a, c.b);
    c.scaled = c.a.clone();
    ldm::scale_(c.scaled, 0.18215f);
    cases.push_back(c);
  }
  // Views at an odd offset: the scalar path.
  const int64_t n = 1001;
  const Tensor a1 = random_tensor({n}, 33), b1 = random_tensor({n}, 34);
  Tensor ref1 = a1.clone();
  Tensor tail = ref1.slice0(1, n);
  ldm::add_(tail, b1.slice0(0, n - 1).clone());
  if (!cuda::available()) return;
  for (const auto& [a, b, sum, scaled] : cases) {
    const Shape& shape = a.shape();
    for (cuda::DType t : kOpDtypes) {
      const DeviceTensor da = cuda::to_device(a, t), db = cuda::to_device(b, t);
      check(cuda::add(da, db), sum, t, tol(t), label("add", shape, t));
      check(da, a, t, tol(t), label("add leaves its input", shape, t));
      DeviceTensor acc = cuda::to_device(a, t);
      cuda::add_(acc, db);
      check(acc, sum, t, tol(t), label("add_", shape, t));
      DeviceTensor s = cuda::to_device(a, t);
      cuda::scale_(s, 0.18215f);
      check(s, scaled, t, tol(t), label("scale_", shape, t));
    }
  }
  for (cuda::DType t : kOpDtypes) {
    DeviceTensor da = cuda::to_device(a1, t);
    DeviceTensor view = da.slice0(1, n);
    cuda::add_(view, cuda::to_device(b1, t).slice0(0, n - 1));
    check(da, ref1, t, tol(t), label("add_ on slice0(1, n)", {n}, t));
  }
}

TEST_CASE("cuda add_channel_bias_", "[cuda][elementwise]") {
  struct Case {
    Shape x;
    bool per_batch;
  };
  const Case cases[] = {{{2, 320, 64, 64}, true}, {{2, 320, 64, 64}, false}, {{2, 5, 3, 3}, true}, {{3, 4, 7}, false}};
  std::vector<Tensor> xs, vs, refs;
  for (const Case& c : cases) {
    const int64_t B = c.x[0], C = c.x[1];
    xs.push_back(random_tensor(c.x, 41));
    vs.push_back(c.per_batch ? random_tensor({B, C}, 42) : random_tensor({C}, 42));
    Tensor v_full = Tensor::empty({B, C});  // the CPU op takes [B, C]: repeat a [C] vector
    for (int64_t i = 0; i < B * C; ++i) v_full[i] = c.per_batch ? vs.back()[i] : vs.back()[i % C];
    refs.push_back(xs.back().clone());
    ldm::add_channel_bias_(refs.back(), v_full);
  }
  if (!cuda::available()) return;
  for (size_t k = 0; k < std::size(cases); ++k) {
    const Case& c = cases[k];
    for (cuda::DType t : kOpDtypes) {
      DeviceTensor d = cuda::to_device(xs[k], t);
      // the [C] case passes v in fp32 whatever x's dtype: the op converts it
      cuda::add_channel_bias_(d, cuda::to_device(vs[k], c.per_batch ? t : cuda::DType::f32));
      check(d, refs[k], t, tol(t), label("add_channel_bias_", c.x, t, c.per_batch ? "v [B, C]" : "v [C]"));
    }
  }
}

TEST_CASE("cuda cat_channels", "[cuda][layout]") {
  const std::pair<Shape, Shape> cases[] = {
      {{2, 640, 32, 32}, {2, 320, 32, 32}}, {{2, 3, 5, 7}, {2, 1, 5, 7}}, {{3, 2, 9}, {3, 5, 9}}};
  std::vector<Tensor> as, bs, refs;
  for (const auto& [sa, sb] : cases) {
    as.push_back(random_tensor(sa, 51));
    bs.push_back(random_tensor(sb, 52));
    refs.push_back(ldm::cat_channels(as.back(), bs.back()));
  }
  if (!cuda::available()) return;
  for (size_t k = 0; k < as.size(); ++k)
    for (cuda::DType t : kOpDtypes)
      check(cuda::cat_channels(cuda::to_device(as[k], t), cuda::to_device(bs[k], t)), refs[k], t, copy_tol(t),
            label("cat_channels", as[k].shape(), t, "++ " + bs[k].shape_str()));
}

TEST_CASE("cuda image_to_tokens and tokens_to_image", "[cuda][layout]") {
  const Shape images[] = {{2, 320, 64, 64}, {2, 37, 5, 7}, {1, 3, 40, 41}};
  std::vector<Tensor> xs, tokens_refs, image_refs;
  for (const Shape& shape : images) {
    xs.push_back(random_tensor(shape, 61));
    tokens_refs.push_back(ldm::image_to_tokens(xs.back()));
    image_refs.push_back(ldm::tokens_to_image(tokens_refs.back(), shape[2], shape[3]));
  }
  if (!cuda::available()) return;
  for (size_t k = 0; k < xs.size(); ++k) {
    const Tensor &x = xs[k], &tokens = tokens_refs[k], &back = image_refs[k];
    const Shape& shape = x.shape();
    for (cuda::DType t : kOpDtypes) {
      const DeviceTensor d = cuda::image_to_tokens(cuda::to_device(x, t));
      check(d, tokens, t, copy_tol(t), label("image_to_tokens", shape, t));
      check(cuda::tokens_to_image(cuda::to_device(tokens, t), shape[2], shape[3]), back, t, copy_tol(t),
            label("tokens_to_image", tokens.shape(), t));
    }
  }
}

TEST_CASE("cuda upsample_nearest2x", "[cuda][layout]") {
  const Shape shapes[] = {{2, 1280, 16, 16}, {1, 3, 5, 7}, {1, 2, 3, 200}};
  std::vector<std::pair<Tensor, Tensor>> cases;  // (x, reference)
  for (const Shape& shape : shapes) {
    const Tensor x = random_tensor(shape, 71);
    cases.emplace_back(x, ldm::upsample_nearest2x(x));
  }
  if (!cuda::available()) return;
  for (const auto& [x, ref] : cases)
    for (cuda::DType t : kOpDtypes)
      check(cuda::upsample_nearest2x(cuda::to_device(x, t)), ref, t, copy_tol(t),
            label("upsample_nearest2x", x.shape(), t));
}

TEST_CASE("cuda timestep_embedding", "[cuda][elementwise]") {
  struct Case {
    int64_t dim;
    bool flip;
    float shift;
  };
  const std::vector<float> timesteps = {999.0f, 981.0f, 500.5f, 20.0f, 1.0f, 0.0f};
  const Case cases[] = {{320, true, 0.0f}, {7, false, 1.0f}, {1, true, 0.0f}};  // SD1.5; odd dims
  std::vector<Tensor> refs;
  for (const Case& c : cases) refs.push_back(ldm::get_timestep_embedding(timesteps, c.dim, c.flip, c.shift));
  if (!cuda::available()) return;
  for (size_t k = 0; k < refs.size(); ++k) {
    const Case& c = cases[k];
    for (cuda::DType t : kOpDtypes)
      check(cuda::timestep_embedding(timesteps, c.dim, c.flip, c.shift, t), refs[k], t, tol(t),
            label("timestep_embedding", refs[k].shape(), t, c.flip ? "flip" : "no flip"));
  }
}

TEST_CASE("cuda group_norm, both versions", "[cuda][norm]") {
  struct Case {
    Shape x;
    int64_t groups;
    float eps;
    float offset;  // added to x: a mean far from zero against the spread
  };
  const Case cases[] = {
      {{2, 320, 64, 64}, 32, 1e-5f, 0.0f},   // U-Net resnet, 64x64 latents
      {{2, 512, 64, 64}, 32, 1e-6f, 0.0f},   // VAE
      {{2, 1280, 8, 8}, 32, 1e-5f, 0.0f},    // U-Net mid block
      {{2, 320, 32, 32}, 32, 1e-5f, 4.0f},   // offset mean
      {{2, 64, 100}, 32, 1e-5f, 0.0f},       // [B, C, L]; S % 8 != 0: fp16 scalar path
      {{1, 96, 7, 9}, 32, 1e-5f, 0.0f},      // odd S: scalar path
      {{3, 64}, 16, 1e-5f, 0.0f},            // S = 1
  };
  const cuda::GroupNormImpl impls[] = {cuda::GroupNormImpl::v1_naive, cuda::GroupNormImpl::v2_block_reduce};
  struct Data {
    Tensor x, w, b, refs[2];  // refs: without, with SiLU
  };
  std::vector<Data> data;
  for (const Case& c : cases) {
    const int64_t C = c.x[1];
    Data d{random_tensor(c.x, 81, -1.0f + c.offset, 1.0f + c.offset), random_tensor({C}, 82, 0.5f, 1.5f),
           random_tensor({C}, 83, -0.5f, 0.5f), {}};
    d.refs[0] = ldm::group_norm(d.x, d.w, d.b, c.groups, c.eps, false);
    d.refs[1] = ldm::group_norm(d.x, d.w, d.b, c.groups, c.eps, true);
    data.push_back(d);
  }
  // weight and bias in fp32 while x is 16-bit: converted by the op.
  const Tensor x16 = random_tensor({2, 64, 16, 16}, 84), w32 = random_tensor({64}, 85, 0.5f, 1.5f),
               b32 = random_tensor({64}, 86, -0.5f, 0.5f);
  const Tensor ref16 = ldm::group_norm(x16, w32, b32, 32, 1e-5f, true);
  if (!cuda::available()) return;
  for (size_t k = 0; k < std::size(cases); ++k) {
    const Case& c = cases[k];
    const Tensor &x = data[k].x, &w = data[k].w, &b = data[k].b;
    const Tensor* refs = data[k].refs;
    for (cuda::DType t : kOpDtypes) {
      // bf16 keeps 8 significant bits: at |x| ~ 4 its input rounding alone (~1.6% of the
      // spread) would be what the comparison measures, so the offset case skips bf16.
      if (c.offset != 0.0f && t == cuda::DType::bf16) continue;
      const DeviceTensor dx = cuda::to_device(x, t), dw = cuda::to_device(w, t), db = cuda::to_device(b, t);
      for (cuda::GroupNormImpl impl : impls)
        for (int silu = 0; silu < 2; ++silu) {
          const DeviceTensor y = cuda::group_norm(dx, dw, db, c.groups, c.eps, silu == 1, impl);
          check(y, refs[silu], t, tol(t),
                label("group_norm", c.x, t,
                      std::string(cuda::group_norm_impl_name(impl)) + (silu ? " +silu" : "") +
                          (c.offset != 0.0f ? " offset" : "")));
        }
    }
  }
  const DeviceTensor y =
      cuda::group_norm(cuda::to_device(x16, cuda::DType::f16), cuda::to_device(w32), cuda::to_device(b32), 32, 1e-5f, true);
  check(y, ref16, cuda::DType::f16, tol(cuda::DType::f16), "group_norm fp16 x, fp32 weight and bias");
}

TEST_CASE("cuda layer_norm", "[cuda][norm]") {
  struct Case {
    Shape x;
    float offset;
  };
  const Case cases[] = {{{2, 4096, 320}, 0.0f}, {{2, 77, 768}, 0.0f}, {{4, 1280}, 4.0f}, {{5, 100}, 0.0f},
                        {{3, 37}, 0.0f}};
  std::vector<Tensor> xs, refs;
  std::vector<LayerNorm> lns;
  for (const Case& c : cases) {
    const int64_t D = c.x.back();
    xs.push_back(random_tensor(c.x, 91, -1.0f + c.offset, 1.0f + c.offset));
    LayerNorm ln;
    ln.weight = random_tensor({D}, 92, 0.5f, 1.5f);
    ln.bias = random_tensor({D}, 93, -0.5f, 0.5f);
    ln.eps = 1e-5f;
    refs.push_back(ln.forward(xs.back()));
    lns.push_back(ln);
  }
  if (!cuda::available()) return;
  for (size_t k = 0; k < std::size(cases); ++k) {
    const Case& c = cases[k];
    const Tensor &x = xs[k], &ref = refs[k];
    const LayerNorm& ln = lns[k];
    for (cuda::DType t : kOpDtypes) {
      if (c.offset != 0.0f && t == cuda::DType::bf16) continue;  // see group_norm
      const DeviceTensor y =
          cuda::layer_norm(cuda::to_device(x, t), cuda::to_device(ln.weight, t), cuda::to_device(ln.bias, t), ln.eps);
      check(y, ref, t, tol(t), label("layer_norm", c.x, t, c.offset != 0.0f ? "offset" : ""));
    }
  }
}

TEST_CASE("cuda softmax_rows_", "[cuda][softmax]") {
  // Attention probabilities with CLIP's 77 tokens (one warp per row), 4096-token rows (one
  // block per row), a row just past the warp limit, one-column rows (all ones), and scores
  // near 100, where exp() overflows float unless the row maximum is subtracted first.
  struct Case {
    Shape shape;
    float lo, hi;
  };
  const Case cases[] = {{{8, 77, 77}, -4.0f, 4.0f},
                        {{2, 16, 4096}, -4.0f, 4.0f},
                        {{3, 1025}, -4.0f, 4.0f},
                        {{5, 1}, -4.0f, 4.0f},
                        {{4, 77}, 90.0f, 100.0f},
                        {{2, 2000}, 90.0f, 100.0f}};
  std::vector<std::pair<Tensor, Tensor>> data;  // (x, reference)
  for (const Case& c : cases) {
    const Tensor x = random_tensor(c.shape, 101, c.lo, c.hi);
    Tensor ref = x.clone();
    ldm::softmax_(ref);
    data.emplace_back(x, ref);
  }
  if (!cuda::available()) return;
  for (size_t k = 0; k < std::size(cases); ++k) {
    const auto& [x, ref] = data[k];
    const bool large = cases[k].hi > 50.0f;
    for (cuda::DType t : kOpDtypes) {
      // 16-bit storage of scores near 100 keeps only steps of 1/16 (fp16) or 1/2 (bf16): its
      // rounding would be what the comparison measures, so the large case is fp32 only.
      if (large && t != cuda::DType::f32) continue;
      DeviceTensor d = cuda::to_device(x, t);
      cuda::softmax_rows_(d);
      check(d, ref, t, tol(t), label("softmax_rows_", x.shape(), t, large ? "scores ~100" : ""));
    }
  }
}

TEST_CASE("cuda DeviceTensor: upload, download, reshape, slice0, to_dtype", "[cuda][tensor]") {
  // Quarter steps in [-10, 5): at most 6 significant bits, exact in fp16 and bf16, so the round trips must be exact.
  Tensor x = Tensor::empty({4, 3, 5});
  for (int64_t i = 0; i < x.numel(); ++i) x[i] = 0.25f * float(i % 97) - 10.0f;
  if (!cuda::available()) return;

  const DeviceTensor d = cuda::to_device(x);
  REQUIRE(d.defined());
  REQUIRE(d.dtype() == cuda::DType::f32);
  REQUIRE(d.shape() == Shape{4, 3, 5});
  REQUIRE(d.numel() == 60);
  REQUIRE(d.bytes() == 240);
  REQUIRE(test::rel_l2(cuda::to_host(d), x) == 0.0);

  const DeviceTensor r = d.reshape({-1, 5});
  REQUIRE(r.shape() == Shape{12, 5});
  REQUIRE(r.data() == d.data());
  REQUIRE_THROWS_WITH(d.reshape({7, 9}), Contains("reshape"));

  const DeviceTensor s = d.slice0(1, 3);
  REQUIRE(s.shape() == Shape{2, 3, 5});
  REQUIRE(test::rel_l2(cuda::to_host(s), x.slice0(1, 3).clone()) == 0.0);
  REQUIRE_THROWS_WITH(d.slice0(2, 5), Contains("slice0"));

  for (cuda::DType t : {cuda::DType::f16, cuda::DType::bf16}) {
    const DeviceTensor h = cuda::to_dtype(d, t);
    REQUIRE(h.dtype() == t);
    REQUIRE(h.bytes() == 120);
    REQUIRE(test::rel_l2(cuda::to_host(h), x) == 0.0);
    REQUIRE(test::rel_l2(cuda::to_host(cuda::to_dtype(h, cuda::DType::f32)), x) == 0.0);
    REQUIRE(test::rel_l2(cuda::to_host(cuda::to_device(x, t)), x) == 0.0);
  }
  REQUIRE(cuda::to_dtype(d, cuda::DType::f32).data() == d.data());  // no copy when the dtype matches

  const DeviceTensor z = DeviceTensor::zeros({3, 7}, cuda::DType::bf16);
  REQUIRE(test::rel_l2(cuda::to_host(z), Tensor::full({3, 7}, 0.0f)) == 0.0);
}

// The shape checks run on the host before any device call, so they can be exercised here
// without a GPU: a default DeviceTensor has no storage but may be given any shape with a zero
// dimension, which is enough to reach each op's checks.
TEST_CASE("cuda basic ops: bad shapes are refused before touching the device", "[cuda][errors]") {
  auto shaped = [](Shape s) { return DeviceTensor().reshape(std::move(s)); };
  const DeviceTensor none;
  REQUIRE_THROWS_WITH(cuda::group_norm(shaped({2, 30, 0}), none, none, 32, 1e-5f),
                      Contains("group_norm") && Contains("do not split into 32 groups"));
  REQUIRE_THROWS_WITH(cuda::group_norm(shaped({2, 32, 0}), none, shaped({0}), 32, 1e-5f),
                      Contains("group_norm") && Contains("must have 32 values"));
  REQUIRE_THROWS_WITH(cuda::group_norm(shaped({0}), none, none, 32, 1e-5f), Contains("group_norm: expected x"));
  REQUIRE_THROWS_WITH(cuda::layer_norm(none, none, none, 1e-5f), Contains("layer_norm: expected x"));
  REQUIRE_THROWS_WITH(cuda::layer_norm(shaped({0, 8}), none, none, 1e-5f),
                      Contains("layer_norm") && Contains("must have 8 values"));
  DeviceTensor scalar;
  REQUIRE_THROWS_WITH(cuda::softmax_rows_(scalar), Contains("softmax_rows_"));
  REQUIRE_THROWS_WITH(cuda::geglu(shaped({0, 7})), Contains("geglu") && Contains("even"));
  DeviceTensor a = shaped({0, 2});
  REQUIRE_THROWS_WITH(cuda::add_(a, shaped({2, 0})), Contains("add_: shapes [0, 2] and [2, 0] differ"));
  REQUIRE_THROWS_WITH(cuda::add(a, shaped({2, 0})), Contains("add: shapes"));
  DeviceTensor x = shaped({2, 3, 0});
  REQUIRE_THROWS_WITH(cuda::add_channel_bias_(x, shaped({0})), Contains("add_channel_bias_") && Contains("does not fit"));
  REQUIRE_THROWS_WITH(cuda::cat_channels(shaped({2, 3, 0}), shaped({3, 3, 0})),
                      Contains("cat_channels") && Contains("every dimension but 1"));
  REQUIRE_THROWS_WITH(cuda::image_to_tokens(shaped({2, 0, 3})), Contains("image_to_tokens: expected [B, C, H, W]"));
  REQUIRE_THROWS_WITH(cuda::tokens_to_image(shaped({2, 0, 3}), 2, 2), Contains("are not a 2x2 image"));
  REQUIRE_THROWS_WITH(cuda::upsample_nearest2x(shaped({0, 2, 2})), Contains("upsample_nearest2x: expected"));
  REQUIRE_THROWS_WITH(cuda::timestep_embedding({1.0f}, -1, true, 0.0f), Contains("timestep_embedding: negative dim"));
}
