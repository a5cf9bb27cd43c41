// The GPU GEMM, linear and conv2d (kernels/gemm.cu, kernels/conv2d.cu) against the CPU ops
// ldm::gemm, ldm::gemm_bias and ldm::conv2d, every implementation (teaching and production)
// in fp32, fp16 and bf16.
//
// Inputs are random with fixed seeds; the CPU results are computed first (that part runs on
// any machine), then, when a GPU is present, each implementation must match them within
// relative L2 1e-5 (fp32) or 2e-2 (fp16/bf16, inputs rounded to 16 bits on upload). Shapes are
// SD1.5's (projections, GEGLU, conv_in, the 3x3 and 1x1 convs of the U-Net, the VAE's
// asymmetric stride-2 downsample, a 256x256 VAE conv whose col matrix needs several slabs)
// plus odd sizes, transposes, padded leading dimensions and strided batches.
#include <cmath>
#include <random>
#include <string>
#include <vector>

#include "ldm/cuda/ops.hpp"
#include "ldm/cuda/transfer.hpp"
#include "ldm/nn/conv2d.hpp"
#include "ldm/nn/gemm.hpp"
#include "reference.hpp"

using namespace ldm;
namespace cu = ldm::cuda;
using ldm::test::require_close;

namespace {

const cu::DType kDTypes[] = {cu::DType::f32, cu::DType::f16, cu::DType::bf16};
const cu::GemmImpl kGemmImpls[] = {cu::GemmImpl::v1_naive, cu::GemmImpl::v2_smem_tiled,
                                   cu::GemmImpl::v3_register_tiled, cu::GemmImpl::cublas};
const cu::ConvImpl kConvImpls[] = {cu::ConvImpl::v1_direct, cu::ConvImpl::v2_implicit_gemm,
                                   cu::ConvImpl::im2col_cublas};

double gemm_tolerance(cu::DType t) { return t == cu::DType::f32 ? 1e-5 : 2e-2; }

using ldm::test::random_tensor;

std::string label(const std::string& what, cu::DType t, const char* impl) {
  return what + " " + cu::dtype_name(t) + " " + impl;
}

// ---- GEMM -----------------------------------------------------------------------------------
constexpr float kPad = 7.0f;  // C outside the product (leading-dimension and batch padding): untouched

struct GemmCase {
  std::string what;
  bool ta, tb;
  int64_t M, N, K;
  float alpha = 1.0f, beta = 0.0f;
  int64_t batch = 1;
  int64_t lda = 0, ldb = 0, ldc = 0;  // 0: the row length
  int64_t sa = 0, sb = 0, sc = 0;     // 0: one matrix after the other
};

// Elements spanned by `batch` matrices of rows x cols, leading dim ld, `stride` apart.
int64_t span(int64_t batch, int64_t stride, int64_t rows, int64_t ld, int64_t cols) {
  if (rows == 0 || cols == 0) return std::max<int64_t>(1, (batch - 1) * stride + 1);
  return (batch - 1) * stride + (rows - 1) * ld + cols;
}

// A case with its operands and the CPU result, prepared without a GPU.
struct GemmProblem {
  GemmCase c;
  Tensor A, B, C0, ref;      // flat buffers; C0 NaN inside the product when beta == 0
  std::vector<char> inside;  // C positions the product writes
};

GemmProblem prepare(GemmCase c, unsigned seed) {
  const int64_t rows_a = c.ta ? c.K : c.M, cols_a = c.ta ? c.M : c.K;
  const int64_t rows_b = c.tb ? c.N : c.K, cols_b = c.tb ? c.K : c.N;
  if (!c.lda) c.lda = std::max<int64_t>(1, cols_a);
  if (!c.ldb) c.ldb = std::max<int64_t>(1, cols_b);
  if (!c.ldc) c.ldc = std::max<int64_t>(1, c.N);
  if (!c.sa) c.sa = rows_a * c.lda;
  if (!c.sb) c.sb = rows_b * c.ldb;
  if (!c.sc) c.sc = c.M * c.ldc;
  GemmProblem p;
  p.A = random_tensor({span(c.batch, c.sa, rows_a, c.lda, cols_a)}, seed);
  p.B = random_tensor({span(c.batch, c.sb, rows_b, c.ldb, cols_b)}, seed + 1);
  const Tensor Cr = random_tensor({span(c.batch, c.sc, c.M, c.ldc, c.N)}, seed + 2);
  p.C0 = Tensor::full(Cr.shape(), kPad);
  p.inside.assign(size_t(Cr.numel()), 0);
  for (int64_t z = 0; z < c.batch; ++z)
    for (int64_t i = 0; i < c.M; ++i)
      for (int64_t j = 0; j < c.N; ++j) {
        const int64_t at = z * c.sc + i * c.ldc + j;
        p.inside[size_t(at)] = 1;
        p.C0[at] = c.beta == 0.0f ? NAN : Cr[at];  // beta 0 must not read C
      }
  p.ref = p.C0.clone();
  for (int64_t z = 0; z < c.batch; ++z) {
    float* Cz = p.ref.data() + z * c.sc;
    if (c.K == 0) {  // an empty sum: C = beta C
      for (int64_t i = 0; i < c.M; ++i)
        for (int64_t j = 0; j < c.N; ++j) Cz[i * c.ldc + j] = c.beta == 0.0f ? 0.0f : c.beta * Cz[i * c.ldc + j];
      continue;
    }
    ldm::gemm(c.ta, c.tb, c.M, c.N, c.K, c.alpha, p.A.data() + z * c.sa, c.lda, p.B.data() + z * c.sb, c.ldb, c.beta,
              Cz, c.ldc);
  }
  p.c = c;
  return p;
}

// The product's elements of a C buffer, as one flat tensor.
Tensor gather_inside(const Tensor& C, const std::vector<char>& inside) {
  std::vector<float> v;
  for (size_t i = 0; i < inside.size(); ++i)
    if (inside[i]) v.push_back(C[int64_t(i)]);
  Tensor t = Tensor::empty({int64_t(v.size())});
  std::copy(v.begin(), v.end(), t.begin());
  return t;
}

std::vector<GemmCase> gemm_cases() {
  std::vector<GemmCase> cs = {
      {"8192x320x320 (attention projection, x W^T)", false, true, 8192, 320, 320},
      {"154x320x768 (context projection)", false, true, 154, 320, 768},
      {"4096x2560x320 (GEGLU projection)", false, true, 4096, 2560, 320},
      {"8192x1280x320, A B", false, false, 8192, 1280, 320},
      {"129x131x17 (tile edges), beta 1", false, false, 129, 131, 17, 1.0f, 1.0f},
      {"1x1x1", false, false, 1, 1, 1},
      {"5x7x0 (empty sum), beta 0.5", false, false, 5, 7, 0, 1.0f, 0.5f},
      {"5x7x0 (empty sum), beta 0", true, true, 5, 7, 0},
  };
  // Attention scores per head: q, k [L, H*d] with the 8 heads as a batch, head h at column
  // h*40 (lda = ldb = 320, stride 40), S_h = q_h k_h^T / sqrt(40) [256, 77].
  GemmCase att{"8 heads of q k^T, 256x77x40, strided batch", false, true, 256, 77, 40, 1.0f / std::sqrt(40.0f)};
  att.batch = 8, att.lda = 320, att.ldb = 320, att.sa = 40, att.sb = 40;
  cs.push_back(att);
  // Odd sizes, every transpose, leading dimensions past the rows, gaps between the batches.
  for (int t = 0; t < 4; ++t) {
    for (float beta : {0.0f, 0.5f}) {
      const bool ta = t & 1, tb = t & 2;
      GemmCase c{std::string("77x100x33") + (ta ? " A^T" : "") + (tb ? " B^T" : "") + " batch 3, padded, beta " +
                     (beta == 0.0f ? "0" : "0.5"),
                 ta, tb, 77, 100, 33, 0.75f, beta};
      c.batch = 3;
      c.lda = (ta ? 77 : 33) + 3, c.ldb = (tb ? 33 : 100) + 5, c.ldc = 100 + 7;
      c.sa = (ta ? 33 : 77) * c.lda + 11, c.sb = (tb ? 100 : 33) * c.ldb + 13, c.sc = 77 * c.ldc + 17;
      cs.push_back(c);
    }
  }
  return cs;
}

// ---- conv2d ---------------------------------------------------------------------------------
struct ConvCase {
  std::string what;
  int64_t B, C, H, W, O, kh, kw;
  int stride;
  Padding pad;
  bool bias;
};

}  // namespace

TEST_CASE("cuda: gemm, every impl and dtype, SD1.5 shapes, transposes, strided batches") {
  std::vector<GemmProblem> problems;
  unsigned seed = 1;
  for (const GemmCase& c : gemm_cases()) problems.push_back(prepare(c, seed += 10));
  REQUIRE(problems.size() == 17);
  if (!cu::available()) return;

  for (const GemmProblem& p : problems) {
    const GemmCase& c = p.c;
    const Tensor ref = gather_inside(p.ref, p.inside);
    for (cu::DType dt : kDTypes) {
      const cu::DeviceTensor A = cu::to_device(p.A, dt), B = cu::to_device(p.B, dt);
      for (cu::GemmImpl impl : kGemmImpls) {
        cu::DeviceTensor C = cu::to_device(p.C0, dt);
        cu::gemm(c.ta, c.tb, c.M, c.N, c.K, c.alpha, A.data(), c.lda, B.data(), c.ldb, c.beta, C.data(), c.ldc, dt,
                 impl, c.batch, c.sa, c.sb, c.sc);
        const Tensor got = cu::to_host(C);
        const std::string what = label("gemm " + c.what, dt, cu::gemm_impl_name(impl));
        require_close(gather_inside(got, p.inside), ref, gemm_tolerance(dt), what);
        int64_t touched = 0;  // padding written by mistake
        for (int64_t i = 0; i < got.numel(); ++i) touched += !p.inside[size_t(i)] && got[i] != kPad;
        INFO(what);
        REQUIRE(touched == 0);
      }
    }
  }
}

TEST_CASE("cuda: linear with and without bias, every impl and dtype") {
  struct Case {
    std::string what;
    Shape x;
    int64_t out;
    bool bias;
  };
  const std::vector<Case> cases = {
      {"[2, 77, 768] -> 320 + bias (to_k on the text context)", {2, 77, 768}, 320, true},
      {"[2, 4096, 320] -> 2560 + bias (GEGLU proj)", {2, 4096, 320}, 2560, true},
      {"[2, 1024, 320] -> 320, no bias (to_q)", {2, 1024, 320}, 320, false},
      {"[3, 5, 33] -> 100 + bias", {3, 5, 33}, 100, true},
      {"[1, 40] -> 7, no bias", {1, 40}, 7, false},
  };
  struct Prepared {
    Tensor x, w, b, ref;
  };
  std::vector<Prepared> prepared;
  unsigned seed = 100;
  for (const Case& c : cases) {
    Prepared p;
    const int64_t in = c.x.back();
    p.x = random_tensor(c.x, seed++);
    p.w = random_tensor({c.out, in}, seed++);
    if (c.bias) p.b = random_tensor({c.out}, seed++);
    Shape ys = c.x;
    ys.back() = c.out;
    p.ref = Tensor::empty(ys);
    const int64_t rows = p.x.numel() / in;
    gemm_bias(rows, c.out, in, p.x.data(), in, p.w.data(), in, c.bias ? p.b.data() : nullptr, p.ref.data(), c.out);
    prepared.push_back(std::move(p));
  }
  if (!cu::available()) return;

  for (size_t n = 0; n < cases.size(); ++n) {
    const Prepared& p = prepared[n];
    for (cu::DType dt : kDTypes) {
      const cu::DeviceTensor x = cu::to_device(p.x, dt), w = cu::to_device(p.w, dt);
      const cu::DeviceTensor b = p.b.defined() ? cu::to_device(p.b, dt) : cu::DeviceTensor();
      for (cu::GemmImpl impl : kGemmImpls) {
        const Tensor got = cu::to_host(cu::linear(x, w, b, impl));
        require_close(got, p.ref, gemm_tolerance(dt), label("linear " + cases[n].what, dt, cu::gemm_impl_name(impl)));
      }
    }
  }
  const cu::DeviceTensor x = cu::DeviceTensor::zeros({2, 7}), w = cu::DeviceTensor::zeros({3, 8});
  REQUIRE_THROWS_WITH(cu::linear(x, w), Catch::Contains("expected last dimension 8"));
  REQUIRE_THROWS_WITH(cu::linear(x.reshape({2, 7}), cu::DeviceTensor::zeros({3, 7}), cu::DeviceTensor::zeros({4})),
                      Catch::Contains("bias"));
}

TEST_CASE("cuda: conv2d, every impl and dtype, SD1.5 shapes and odd ones") {
  const std::vector<ConvCase> cases = {
      {"[2,4,64,64] -> 320 3x3 pad 1 (conv_in)", 2, 4, 64, 64, 320, 3, 3, 1, Padding::same(1), true},
      {"[2,320,64,64] -> 320 3x3 pad 1", 2, 320, 64, 64, 320, 3, 3, 1, Padding::same(1), true},
      {"[2,320,64,64] -> 320 3x3 stride 2 pad 1 (downsample)", 2, 320, 64, 64, 320, 3, 3, 2, Padding::same(1), true},
      {"[1,128,64,64] -> 128 3x3 stride 2 pad (0,0,1,1) (VAE)", 1, 128, 64, 64, 128, 3, 3, 2, Padding{0, 0, 1, 1},
       true},
      {"[2,640,16,16] -> 320 1x1 (shortcut)", 2, 640, 16, 16, 320, 1, 1, 1, Padding{}, true},
      {"[2,1280,8,8] -> 1280 3x3 pad 1", 2, 1280, 8, 8, 1280, 3, 3, 1, Padding::same(1), true},
      {"[1,128,256,256] -> 128 3x3 pad 1 (col in slabs)", 1, 128, 256, 256, 128, 3, 3, 1, Padding::same(1), true},
      {"[1,4,64,64] -> 4 1x1, no bias", 1, 4, 64, 64, 4, 1, 1, 1, Padding{}, false},
      {"[3,5,9,7] -> 6 3x3 pad (2,0,1,3)", 3, 5, 9, 7, 6, 3, 3, 1, Padding{2, 0, 1, 3}, true},
      {"[2,6,1,1] -> 5 3x3 stride 2 pad 1", 2, 6, 1, 1, 5, 3, 3, 2, Padding::same(1), true},
      {"[1,8,5,5] -> 4 1x1 stride 2", 1, 8, 5, 5, 4, 1, 1, 2, Padding{}, true},
      {"[2,7,10,13] -> 9 3x1 pad (1,0,1,0), no bias", 2, 7, 10, 13, 9, 3, 1, 1, Padding{1, 0, 1, 0}, false},
      {"[2,3,17,19] -> 70 5x5 stride 3, no padding", 2, 3, 17, 19, 70, 5, 5, 3, Padding{}, true},
  };
  struct Prepared {
    Tensor x, w, b, ref;
  };
  std::vector<Prepared> prepared;
  unsigned seed = 200;
  for (const ConvCase& c : cases) {
    Prepared p;
    p.x = random_tensor({c.B, c.C, c.H, c.W}, seed++);
    p.w = random_tensor({c.O, c.C, c.kh, c.kw}, seed++);
    // keep the outputs O(1) whatever the fan-in
    const float scale = 1.0f / std::sqrt(float(c.C * c.kh * c.kw));
    for (float& v : p.w) v *= scale;
    if (c.bias) p.b = random_tensor({c.O}, seed++);
    p.ref = conv2d(p.x, p.w, p.b, c.stride, c.pad);
    prepared.push_back(std::move(p));
  }
  if (!cu::available()) return;

  for (size_t n = 0; n < cases.size(); ++n) {
    const ConvCase& c = cases[n];
    const Prepared& p = prepared[n];
    for (cu::DType dt : kDTypes) {
      const cu::DeviceTensor x = cu::to_device(p.x, dt), w = cu::to_device(p.w, dt);
      const cu::DeviceTensor b = p.b.defined() ? cu::to_device(p.b, dt) : cu::DeviceTensor();
      for (cu::ConvImpl impl : kConvImpls) {
        const Tensor got = cu::to_host(cu::conv2d(x, w, b, c.stride, c.pad, impl));
        require_close(got, p.ref, gemm_tolerance(dt), label("conv2d " + c.what, dt, cu::conv_impl_name(impl)));
      }
    }
  }
  const cu::DeviceTensor x = cu::DeviceTensor::zeros({1, 3, 4, 4}), w = cu::DeviceTensor::zeros({2, 4, 3, 3});
  REQUIRE_THROWS_WITH(cu::conv2d(x, w, {}, 1, cu::Padding::same(1)), Catch::Contains("input channels"));
  REQUIRE_THROWS_WITH(cu::conv2d(cu::DeviceTensor::zeros({1, 4, 1, 1}), w, {}, 1, cu::Padding{}),
                      Catch::Contains("too small"));
}
