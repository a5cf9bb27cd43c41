// The GPU attention kernels (kernels/attention.cu) against the CPU's scaled_dot_product_attention.
//
// Every implementation (v1 naive, v2 flash, v3 flash on tensor cores) in fp32, fp16 and bf16, at
// the SD1.5 shapes (the U-Net's self-attention at 64x64 / 32x32 / 16x16 latents with heads of
// 40 / 80 / 160, its cross-attention to 77 text tokens, the VAE's single head of 512, CLIP's
// causal 77 tokens with 12 heads of 64) and at odd sizes that leave every tile partial (head dims
// not a multiple of 16 or of 8, dv != d, causal with Lq > Lk, a single key). Inputs are standard
// normal with a fixed seed; fp16/bf16 runs round them on the GPU (to_dtype) and are compared with
// the fp32 reference at 2e-2, fp32 runs at 1e-5. The CPU side (inputs and references) runs on
// every machine; the GPU side only where there is a GPU.
#include <cstdio>
#include <random>
#include <string>
#include <vector>

#include "ldm/cuda/ops.hpp"
#include "ldm/cuda/transfer.hpp"
#include "ldm/nn/attention.hpp"
#include "reference.hpp"

using namespace ldm;
using ldm::test::require_close;

namespace {

Tensor randn(Shape shape, unsigned seed) {
  Tensor t = Tensor::empty(std::move(shape));
  std::mt19937 gen(seed);
  std::normal_distribution<float> n(0.0f, 1.0f);
  for (float& x : t) x = n(gen);
  return t;
}

struct Case {
  const char* what;
  int64_t B, Lq, Lk, D, Dv, heads;
  bool causal;
};

const std::vector<Case>& cases() {
  static const std::vector<Case> all = {
      {"U-Net self 64x64 [2,4096,320] 8x40", 2, 4096, 4096, 320, 320, 8, false},
      {"U-Net cross [2,4096,320] x [2,77,320]", 2, 4096, 77, 320, 320, 8, false},
      {"U-Net self 32x32 [2,1024,640] 8x80", 2, 1024, 1024, 640, 640, 8, false},
      {"U-Net self 16x16 [2,256,1280] 8x160", 2, 256, 256, 1280, 1280, 8, false},
      {"VAE mid [1,4096,512] 1x512", 1, 4096, 4096, 512, 512, 1, false},
      {"CLIP [2,77,768] 12x64 causal", 2, 77, 77, 768, 768, 12, true},
      {"odd Lq37 Lk53 3x24", 2, 37, 53, 72, 72, 3, false},
      {"odd Lq37 Lk53 3x24 causal", 2, 37, 53, 72, 72, 3, true},
      {"odd d20 dv12 (unaligned) causal", 2, 37, 53, 60, 36, 3, true},
      {"causal Lq70 > Lk37 2x48", 1, 70, 37, 96, 96, 2, true},
      {"single key", 2, 5, 1, 16, 16, 2, false},
  };
  return all;
}

struct Prepared {
  Tensor q, k, v, ref;
};

// The CPU side: inputs and fp32 references (about a second each for the 4096-token cases).
std::vector<Prepared> prepare() {
  std::vector<Prepared> out;
  unsigned seed = 100;
  for (const Case& c : cases()) {
    Prepared p;
    p.q = randn({c.B, c.Lq, c.D}, seed++);
    p.k = randn({c.B, c.Lk, c.D}, seed++);
    p.v = randn({c.B, c.Lk, c.Dv}, seed++);
    p.ref = scaled_dot_product_attention(p.q, p.k, p.v, c.heads, c.causal);
    REQUIRE(p.ref.shape() == Shape({c.B, c.Lq, c.Dv}));
    out.push_back(std::move(p));
  }
  return out;
}

constexpr cuda::AttentionImpl kImpls[] = {cuda::AttentionImpl::v1_naive, cuda::AttentionImpl::v2_flash,
                                          cuda::AttentionImpl::v3_flash_mma};
constexpr cuda::DType kAttentionDtypes[] = {cuda::DType::f32, cuda::DType::f16, cuda::DType::bf16};

}  // namespace

TEST_CASE("cuda attention: implementation names") {
  CHECK(std::string(cuda::attention_impl_name(cuda::AttentionImpl::v1_naive)) == "v1_naive");
  CHECK(std::string(cuda::attention_impl_name(cuda::AttentionImpl::v2_flash)) == "v2_flash");
  CHECK(std::string(cuda::attention_impl_name(cuda::AttentionImpl::v3_flash_mma)) == "v3_flash_mma");
}

TEST_CASE("cuda attention: every implementation and dtype against the CPU reference") {
  const std::vector<Prepared> prepared = prepare();
  if (!cuda::available()) return;

  for (size_t n = 0; n < cases().size(); ++n) {
    const Case& c = cases()[n];
    const Prepared& p = prepared[n];
    const cuda::DeviceTensor q32 = cuda::to_device(p.q), k32 = cuda::to_device(p.k), v32 = cuda::to_device(p.v);
    for (cuda::DType dt : kAttentionDtypes) {
      const cuda::DeviceTensor q = cuda::to_dtype(q32, dt), k = cuda::to_dtype(k32, dt), v = cuda::to_dtype(v32, dt);
      for (cuda::AttentionImpl impl : kImpls) {
        const std::string what =
            std::string(c.what) + " " + cuda::attention_impl_name(impl) + " " + cuda::dtype_name(dt);
        const cuda::DeviceTensor out = cuda::attention(q, k, v, c.heads, c.causal, impl);
        REQUIRE(out.dtype() == dt);
        require_close(cuda::to_host(out), p.ref, dt == cuda::DType::f32 ? 1e-5 : 2e-2, what);
      }
    }
  }
}

TEST_CASE("cuda attention: the flash kernels keep the scores out of global memory; shape errors") {
  const Case& c = cases()[0];  // [2, 4096, 320], 8 heads: a score matrix would be 1 GiB
  const Tensor q = randn({c.B, c.Lq, c.D}, 7), k = randn({c.B, c.Lk, c.D}, 8), v = randn({c.B, c.Lk, c.Dv}, 9);
  if (!cuda::available()) return;

  for (cuda::DType dt : kAttentionDtypes) {
    const cuda::DeviceTensor qd = cuda::to_device(q, dt), kd = cuda::to_device(k, dt), vd = cuda::to_device(v, dt);
    for (cuda::AttentionImpl impl : {cuda::AttentionImpl::v2_flash, cuda::AttentionImpl::v3_flash_mma}) {
      cuda::synchronize();
      cuda::reset_peak_memory();
      const int64_t before = cuda::memory_allocated_bytes();
      const cuda::DeviceTensor out = cuda::attention(qd, kd, vd, c.heads, c.causal, impl);
      cuda::synchronize();
      const int64_t extra = cuda::peak_memory_allocated_bytes() - before;
      INFO(cuda::attention_impl_name(impl) << " " << cuda::dtype_name(dt) << ": " << extra << " bytes allocated, output "
                                           << out.bytes());
      CHECK(extra <= out.bytes() + (1 << 20));
    }
  }

  const cuda::DeviceTensor x = cuda::DeviceTensor::zeros({1, 4, 10});
  REQUIRE_THROWS_WITH(cuda::attention(x, x, x, 3), Catch::Contains("do not split"));
  const cuda::DeviceTensor k5 = cuda::DeviceTensor::zeros({1, 5, 10});
  REQUIRE_THROWS_WITH(cuda::attention(x, k5, x, 2), Catch::Contains("do not fit"));
  const cuda::DeviceTensor x16 = cuda::DeviceTensor::zeros({1, 4, 10}, cuda::DType::f16);
  REQUIRE_THROWS_WITH(cuda::attention(x16, x, x, 2), Catch::Contains("dtypes"));
}
