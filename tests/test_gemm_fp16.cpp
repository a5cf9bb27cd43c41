// fp16 operands in the GEMM (--fp16-weights): a matrix kept in fp16 is converted as the GEMM packs
// it, so the product equals, bit for bit, the float32 GEMM of the converted matrix; Linear and
// Conv2d with fp16 weights compute what they compute from those weights in float32 (Winograd
// within fp16 rounding of its kept transform).
#include <catch2/catch.hpp>
#include <array>
#include <cmath>
#include <map>
#include <cstring>
#include <vector>

#include "ldm/core/half.hpp"
#include "ldm/core/synth.hpp"
#include "ldm/nn/conv2d.hpp"
#include "ldm/nn/gemm.hpp"
#include "ldm/nn/linear.hpp"

using namespace ldm;

namespace {

// n values as fp16, and the same values as float.
struct Halves {
  std::vector<uint16_t> h;
  std::vector<float> f;
};
Halves halves(const std::string& name, int64_t n) {
  const Tensor t = synth::tensor(name, {n});
  Halves r;
  for (int64_t i = 0; i < n; ++i) {
    r.h.push_back(float_to_fp16(t[i]));
    r.f.push_back(fp16_to_float(r.h.back()));
  }
  return r;
}

bool same_bits(const std::vector<float>& a, const std::vector<float>& b) {
  return a.size() == b.size() && std::memcmp(a.data(), b.data(), a.size() * sizeof(float)) == 0;
}
bool same_bits(const Tensor& a, const Tensor& b) {
  return a.shape() == b.shape() && std::memcmp(a.data(), b.data(), size_t(a.numel()) * sizeof(float)) == 0;
}

double rel_l2(const Tensor& a, const Tensor& b) {
  double d = 0, n = 0;
  for (int64_t i = 0; i < a.numel(); ++i) d += (a[i] - b[i]) * double(a[i] - b[i]), n += double(b[i]) * b[i];
  return std::sqrt(d / n);
}

// The weights of a store kept in fp16 (as LoadOptions::fp16_weights keeps them; biases stay
// float32), as float32 tensors holding the same fp16-rounded values.
std::map<std::string, Tensor> rounded(const std::map<std::string, Tensor>& m) {
  std::map<std::string, Tensor> r;
  for (const auto& [k, v] : m) r[k] = k.find(".weight") != std::string::npos ? HalfTensor::from_float(v).to_float() : v;
  return r;
}

}  // namespace

TEST_CASE("gemm with an fp16 operand: bit for bit the float32 GEMM of the converted matrix") {
  for (const auto& mnk : {std::array<int64_t, 3>{37, 45, 300}, {16, 16, 16}, {1, 70, 5}, {130, 33, 513}}) {
    const int64_t M = mnk[0], N = mnk[1], K = mnk[2];  // not a structured binding: lambdas below capture N
    const Halves a = halves("gemm16.a", M * K);
    const Tensor b = synth::tensor("gemm16.b", {K * N});
    for (bool ta : {false, true}) {
      for (bool tb : {false, true}) {
        INFO("M " << M << " N " << N << " K " << K << " ta " << ta << " tb " << tb);
        const int64_t lda = ta ? M : K, ldb = tb ? K : N;
        std::vector<float> c16(size_t(M * N), 1.0f), c32(size_t(M * N), 1.0f);
        gemm_serial(ta, tb, M, N, K, 0.5f, a.h.data(), lda, b.data(), ldb, 2.0f, c16.data(), N);
        gemm_serial(ta, tb, M, N, K, 0.5f, a.f.data(), lda, b.data(), ldb, 2.0f, c32.data(), N);
        CHECK(same_bits(c16, c32));
      }
    }
    // gemm_bias: W [N, K] in fp16.
    const Halves w = halves("gemm16.w", N * K);
    const Tensor x = synth::tensor("gemm16.x", {M * K}), bias = synth::tensor("gemm16.bias", {N});
    std::vector<float> y16(size_t(M * N)), y32(size_t(M * N));
    gemm_bias(M, N, K, x.data(), K, w.h.data(), K, bias.data(), y16.data(), N);
    gemm_bias(M, N, K, x.data(), K, w.f.data(), K, bias.data(), y32.data(), N);
    CHECK(same_bits(y16, y32));
    // gemm_packed_b: A [M, K] in fp16, B [K, N] packed by the caller.
    const GemmPackB pack = [&](int64_t k0, int64_t kc, int64_t j0, float* dst) {
      for (int64_t k = 0; k < kc; ++k)
        for (int64_t j = 0; j < kGemmPanelWidth; ++j) dst[k * kGemmPanelWidth + j] = j0 + j < N ? b[(k0 + k) * N + j0 + j] : 0.0f;
    };
    const Tensor row_bias = synth::tensor("gemm16.row_bias", {M});
    gemm_packed_b(M, N, K, a.h.data(), K, pack, row_bias.data(), y16.data(), N);
    gemm_packed_b(M, N, K, a.f.data(), K, pack, row_bias.data(), y32.data(), N);
    CHECK(same_bits(y16, y32));
  }
}

TEST_CASE("Linear and Conv2d with fp16 weights compute what float32 weights of the same values do") {
  const int64_t C = 64, O = 64;
  std::map<std::string, Tensor> m = {
      {"lin.weight", synth::tensor("f16.lin.weight", {96, C})},     {"lin.bias", synth::tensor("f16.lin.bias", {96})},
      {"c3.weight", synth::tensor("f16.c3.weight", {O, C, 3, 3})},   {"c3.bias", synth::tensor("f16.c3.bias", {O})},
      {"c1.weight", synth::tensor("f16.c1.weight", {O, C, 1, 1})},   {"c1.bias", synth::tensor("f16.c1.bias", {O})},
      {"cs.weight", synth::tensor("f16.cs.weight", {O, C, 3, 3})},   {"cs.bias", synth::tensor("f16.cs.bias", {O})}};
  WeightStore w16(std::make_shared<MapSource>(m)), w32(std::make_shared<MapSource>(rounded(m)));
  w16.set_keep_fp16(true);

  Linear l16, l32;
  l16.load(w16, "lin", C, 96), l32.load(w32, "lin", C, 96);
  REQUIRE((l16.weight_f16.defined() && !l16.weight.defined()));
  const Tensor t = synth::tensor("f16.tokens", {2, 50, C});
  CHECK(same_bits(l16.forward(t), l32.forward(t)));

  // Direct convolutions (3x3 on an 8x8 image, 1x1, strided 3x3): the same bits.
  Conv2d c3_16, c3_32, c1_16, c1_32, cs_16, cs_32;
  c3_16.load(w16, "c3", C, O, 3, 1, 1), c3_32.load(w32, "c3", C, O, 3, 1, 1);
  c1_16.load(w16, "c1", C, O, 1), c1_32.load(w32, "c1", C, O, 1);
  cs_16.load(w16, "cs", C, O, 3, 2, 1), cs_32.load(w32, "cs", C, O, 3, 2, 1);
  for (int64_t size : {8, 12}) {
    const Tensor x = synth::tensor("f16.x" + std::to_string(size), {2, C, size, size});
    CHECK(same_bits(c3_16.forward(x), c3_32.forward(x)));
    CHECK(same_bits(c1_16.forward(x), c1_32.forward(x)));
    CHECK(same_bits(cs_16.forward(x), cs_32.forward(x)));
  }
  // F(4x4) at 16x16 where the owner allows it: U made in the call from the fp16 weight (16
  // values converted at a time as a block of it is transposed), nothing kept: the same bits as
  // from the float32 weight.
  {
    c3_16.auto_f43 = c3_32.auto_f43 = true;
    const Tensor x16 = synth::tensor("f16.x16", {2, C, 16, 16});
    CHECK(same_bits(c3_16.forward(x16), c3_32.forward(x16)));
    CHECK(c3_16.winograd_u_f16 == nullptr);
    c3_16.auto_f43 = c3_32.auto_f43 = false;
  }
  // Winograd at 64x64 (F(2x2); F(4x4) where the owner allows it): the transform kept in fp16,
  // within its rounding of the float32 path's.
  const Tensor x = synth::tensor("f16.x64", {2, C, 64, 64});
  for (bool f43 : {false, true}) {
    INFO("auto_f43 " << f43);
    c3_16.auto_f43 = c3_32.auto_f43 = f43;
    const Tensor y16 = c3_16.forward(x), y32 = c3_32.forward(x);
    REQUIRE(c3_16.winograd_u_f16 != nullptr);
    CHECK(c3_16.winograd_u_f16->size() == size_t((f43 ? 36 : 16) * O * C));
    const double e = rel_l2(y16, y32);
    std::printf("  Conv2d 3x3 at 64x64, %s, fp16-kept transform: rel-L2 %.2e from float32\n", f43 ? "F(4x4)" : "F(2x2)", e);
    // U's fp16 rounding (2^-11 relative) grows through the output transform, more for F(4x4),
    // whose coefficients reach 8 (measured: 3.3e-4 and 2.1e-3; a model stays within 2e-2).
    CHECK(e < (f43 ? 5e-3 : 1e-3));
    CHECK(same_bits(c3_16.forward(x), y16));  // the kept transform, reused
  }
}
