// OpProfile (ldm/core/op_profile.hpp): the per-op timing behind `bench_models --profile`.
// Ops record only while a profile is installed, under the right name, shape and FLOP count,
// and profiling leaves their results unchanged.
#include <catch2/catch.hpp>

#include "ldm/core/op_profile.hpp"
#include "ldm/nn/activations.hpp"
#include "ldm/nn/attention.hpp"
#include "ldm/nn/conv2d.hpp"
#include "ldm/nn/group_norm.hpp"
#include "ldm/nn/linear.hpp"
#include "reference.hpp"

using namespace ldm;
using ldm::test::random_tensor;

namespace {

Conv2d conv3x3(int64_t in, int64_t out) {
  Conv2d c;
  c.weight = random_tensor({out, in, 3, 3}, 1);
  c.bias = random_tensor({out}, 2);
  c.padding = Padding::same(1);
  return c;
}

const OpProfile::Entry* find(const OpProfile& p, const std::string& op) {
  for (const OpProfile::Entry& e : p.entries())
    if (e.op == op) return &e;
  return nullptr;
}

}  // namespace

TEST_CASE("ops record into the installed profile only, with their shapes and FLOPs, results unchanged") {
  const Conv2d conv = conv3x3(4, 8);  // 4 channels: too few for Winograd, the direct convolution
  Linear lin;
  lin.weight = random_tensor({5, 16}, 3), lin.bias = random_tensor({5}, 4), lin.in_features = 16,
  lin.out_features = 5;
  GroupNorm gn;
  gn.weight = random_tensor({8}, 5), gn.bias = random_tensor({8}, 6), gn.groups = 2;
  const Tensor x = random_tensor({1, 4, 8, 8}, 7), h = random_tensor({2, 3, 16}, 8);
  const Tensor q = random_tensor({2, 6, 8}, 9), kv = random_tensor({2, 5, 8}, 10);

  const Tensor y0 = conv.forward(x), l0 = lin.forward(h), a0 = scaled_dot_product_attention(q, kv, kv, 2);
  REQUIRE(OpProfile::current() == nullptr);

  OpProfile profile;
  Tensor y1, y2, l1, a1;
  {
    OpProfile::Scope on(profile);
    REQUIRE(OpProfile::current() == &profile);
    y1 = conv.forward(x), y2 = conv.forward(x), l1 = lin.forward(h), a1 = scaled_dot_product_attention(q, kv, kv, 2);
    gn.forward(y1, true);
    {
      OpProfile inner;  // scopes nest: the inner one takes the ops while it lives
      OpProfile::Scope on_inner(inner);
      lin.forward(h);
      CHECK(inner.entries().size() == 1);
    }
    REQUIRE(OpProfile::current() == &profile);
  }
  REQUIRE(OpProfile::current() == nullptr);
  conv.forward(x);  // after the scope: not recorded

  CHECK(profile.entries().size() == 4);
  const OpProfile::Entry* c = find(profile, "conv3x3 direct");
  REQUIRE(c != nullptr);
  CHECK(c->calls == 2);
  CHECK(c->shape == "[1, 4, 8, 8] -> 8");
  CHECK(c->flops == 2 * 2.0 * 8 * 64 * 4 * 9);  // 2 calls x 2 x O x pixels x C x 9
  const OpProfile::Entry* l = find(profile, "linear");
  REQUIRE(l != nullptr);
  CHECK(l->calls == 1);  // the inner scope's call went to the inner profile
  CHECK(l->shape == "[2, 3, 16] -> 5");
  CHECK(l->flops == 2.0 * 6 * 5 * 16);
  const OpProfile::Entry* a = find(profile, "attention");
  REQUIRE(a != nullptr);
  CHECK(a->flops == 2.0 * 2 * 6 * 5 * (8 + 8));  // Q K^T and P V
  const OpProfile::Entry* g = find(profile, "group_norm+silu");
  REQUIRE(g != nullptr);
  CHECK(g->flops == 0);
  for (const OpProfile::Entry& e : profile.entries()) CHECK(e.seconds >= 0);

  // Bit for bit what the ops give without a profile.
  for (int64_t i = 0; i < y0.numel(); ++i) REQUIRE((y1[i] == y0[i] && y2[i] == y0[i]));
  for (int64_t i = 0; i < l0.numel(); ++i) REQUIRE(l1[i] == l0[i]);
  for (int64_t i = 0; i < a0.numel(); ++i) REQUIRE(a1[i] == a0[i]);

  const std::string table = profile.table(1.0, 100.0);
  CHECK_THAT(table, Catch::Contains("conv3x3 direct"));
  CHECK_THAT(table, Catch::Contains("[1, 4, 8, 8] -> 8"));
  CHECK_THAT(table, Catch::Contains("-- by op"));
  CHECK_THAT(table, Catch::Contains("not in an op"));
  CHECK_THAT(table, Catch::Contains("of GEMM"));
}

TEST_CASE("a Winograd convolution is named by its algorithm") {
  Conv2d conv = conv3x3(32, 32);  // enough channels for Winograd
  conv.algo = ConvAlgo::f23;
  OpProfile profile;
  {
    OpProfile::Scope on(profile);
    conv.forward(random_tensor({1, 32, 32, 32}, 11));  // F(2x2) wants widths of a multiple of 32
  }
  REQUIRE(profile.entries().size() == 1);
  CHECK(profile.entries()[0].op == "conv3x3 f23");
}
