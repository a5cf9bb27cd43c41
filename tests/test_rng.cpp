// Random generators: TorchCpuGenerator bit for bit against torch (../shared/reference/
// torch_randn.safetensors and values printed by torch), TorchCudaGenerator to ~1e-6,
// LdmGenerator's definition, determinism and moments, and make_generator.
#include <chrono>
#include <cmath>
#include <cstring>
#include <vector>

#include "ldm/core/rng.hpp"
#include "ldm/core/rng_philox.hpp"
#include "reference.hpp"

using namespace ldm;

namespace {

std::vector<float> draw(Generator& g, int64_t n) {
  std::vector<float> v(size_t(n), 0.0f);
  g.randn(v.data(), n);
  return v;
}

// Elements whose bits differ (so -0 vs +0 and NaN count too).
int64_t bit_mismatches(const float* a, const float* b, int64_t n) {
  int64_t k = 0;
  for (int64_t i = 0; i < n; ++i) k += std::memcmp(a + i, b + i, sizeof(float)) != 0;
  return k;
}

}  // namespace

TEST_CASE("rng: Philox4x32-10 matches the Random123 known-answer vectors") {
  CHECK(philox4x32_10({0, 0, 0, 0}, {0, 0}) == PhiloxCounter{0x6627e8d5u, 0xe169c58du, 0xbc57ac4cu, 0x9b00dbd8u});
  CHECK(philox4x32_10({~0u, ~0u, ~0u, ~0u}, {~0u, ~0u}) ==
        PhiloxCounter{0x408f276du, 0x41c83b0eu, 0xa20bc7c6u, 0x6d5451fdu});
  CHECK(philox4x32_10({0x243f6a88u, 0x85a308d3u, 0x13198a2eu, 0x03707344u}, {0xa4093822u, 0x299f31d0u}) ==
        PhiloxCounter{0xd16cfe09u, 0x94fdccebu, 0x5001e420u, 0x24126ea1u});
}

TEST_CASE("rng: TorchCpuGenerator equals torch.randn on a seeded CPU generator, bit for bit") {
  LDM_REQUIRE_REFERENCE(path, "torch_randn.safetensors");
  SafeTensors file(path);
  struct Case {
    const char* name;
    uint64_t seed;
  };
  // [1,4,64,64] (SD1.5 512x512 latents), [2,4,32,32] (a batch), [8] (the small-tensor path).
  const Case cases[] = {{"cpu_seed0", 0}, {"cpu_seed1234", 1234}, {"cpu_seed42", 42},
                        {"cpu_seed7_2x4x32x32", 7}, {"cpu_seed7_small_8", 7}};
  for (const auto& c : cases) {
    Tensor ref = file.load(c.name);
    TorchCpuGenerator g(c.seed);
    Tensor got = g.randn(ref.shape());
    const double maxd = test::max_abs_diff(got, ref);
    std::printf("  torch-cpu %-22s max |diff| %g\n", c.name, maxd);
    INFO(c.name << "\n" << test::mismatch_report(got, ref, 0, 0));
    CHECK(maxd == 0.0);
    CHECK(bit_mismatches(got.data(), ref.data(), ref.numel()) == 0);
  }
}

TEST_CASE("rng: TorchCpuGenerator continues the stream across draws as torch does") {
  SECTION("two [1,4,32,32] draws are one [2,4,32,32] draw (16 divides the first)") {
    LDM_REQUIRE_REFERENCE(path, "torch_randn.safetensors");
    Tensor ref = SafeTensors(path).load("cpu_seed7_2x4x32x32");
    TorchCpuGenerator g(7);
    Tensor a = g.randn({1, 4, 32, 32});
    Tensor b = g.randn({1, 4, 32, 32});
    CHECK(bit_mismatches(a.data(), ref.data(), 4096) == 0);
    CHECK(bit_mismatches(b.data(), ref.data() + 4096, 4096) == 0);
  }
  SECTION("mixed sizes: torch.randn 5, 20, 3, 1, 16 from manual_seed(99)") {
    // Printed by torch 2.15 (CPU). The 5 leaves a cached sine that the 3 uses first; the 20
    // (vector path, tail recomputed) does not touch the cache.
    const std::vector<std::vector<double>> expected = {
        {0.6126858592033386, -1.1753536462783813, -0.7646492719650269, -0.6665656566619873, 0.7443659901618958},
        {0.5948395729064941, 1.5866377353668213, 1.163318157196045, 1.2178893089294434, 0.32161375880241394,
         0.8502882122993469, 0.6470543146133423, 1.2965465784072876, 1.115404486656189, -1.0094980001449585,
         0.6205565929412842, 0.4542126953601837, 0.8401968479156494, -2.018794298171997, -0.39639827609062195,
         -0.5167348384857178, -2.33622670173645, 0.7005530595779419, -0.2804567515850067, 1.4555810689926147},
        {-0.6453173756599426, 0.863068699836731, -1.542959451675415},
        {-1.6754004955291748},
        {0.9761531352996826, -0.7722686529159546, 1.2163771390914917, -0.8999497890472412, 0.9539632797241211,
         0.34177178144454956, -0.3876684010028839, -0.72762531042099, 0.14817602932453156, -0.5636746287345886,
         -1.3093966245651245, 2.1453568935394287, 1.766922116279602, 1.276541829109192, -0.7921982407569885,
         -0.9962745904922485},
    };
    TorchCpuGenerator g(99);
    for (const auto& e : expected) {
      std::vector<float> got = draw(g, int64_t(e.size()));
      for (size_t i = 0; i < e.size(); ++i) {
        INFO("draw of " << e.size() << ", element " << i);
        CHECK(got[i] == float(e[i]));
      }
    }
  }
  SECTION("small draws share Box-Muller pairs: randn(5) then randn(3) is randn(8)") {
    TorchCpuGenerator a(3), b(3);
    std::vector<float> x = draw(a, 5), y = draw(a, 3), z = draw(b, 8);
    x.insert(x.end(), y.begin(), y.end());
    CHECK(bit_mismatches(x.data(), z.data(), 8) == 0);
  }
  SECTION("manual_seed restarts the stream and drops the cached sample") {
    TorchCpuGenerator g(3);
    std::vector<float> first = draw(g, 5);
    g.manual_seed(3);
    CHECK(draw(g, 5) == first);
  }
  SECTION("only the low 32 bits of the seed matter (torch: manual_seed(2**40 + 5) == manual_seed(5))") {
    TorchCpuGenerator big((uint64_t(1) << 40) + 5), small(5);
    CHECK(draw(big, 4) == draw(small, 4));
    TorchCpuGenerator g(5);
    const std::vector<float> v = draw(g, 4);  // printed by torch
    CHECK(v[0] == float(-0.4867807626724243));
    CHECK(v[3] == float(0.6675242781639099));
  }
}

TEST_CASE("rng: TorchCudaGenerator matches torch.randn on a seeded CUDA generator to ~1e-6") {
  LDM_REQUIRE_REFERENCE(path, "torch_randn.safetensors");
  SafeTensors file(path);
  const std::pair<const char*, uint64_t> cases[] = {{"cuda_seed0", 0}, {"cuda_seed1234", 1234}, {"cuda_seed42", 42}};
  for (const auto& [name, seed] : cases) {
    Tensor ref = file.load(name);
    TorchCudaGenerator g(seed);
    Tensor got = g.randn(ref.shape());
    const double maxd = test::max_abs_diff(got, ref), rel = test::rel_l2(got, ref);
    std::printf("  torch-cuda %-15s max |diff| %.3g  rel L2 %.3g (GPU __sincosf vs libm)\n", name, maxd, rel);
    INFO(name << "\n" << test::mismatch_report(got, ref, 1e-5, 0));
    CHECK(maxd < 1e-5);
    CHECK(rel < 1e-6);
    CHECK(g.offset() == 4);  // 16384 values: one curand_normal4 per thread
  }
}

TEST_CASE("rng: LdmGenerator follows its documented definition") {
  // Values of the definition in rng_ldm.hpp, computed independently in Python.
  LdmGenerator g0(0), g42(42);
  const std::vector<float> a = draw(g0, 6), b = draw(g42, 6);
  const float a_ref[] = {-0.121517979f, -1.35003269f, -0.0818742067f, -0.22270906f, 1.77642429f, 2.1735208f};
  const float b_ref[] = {0.886497498f, 0.439356059f, -0.156609625f, -0.0137186786f, -0.494100511f, -0.372166872f};
  for (int i = 0; i < 6; ++i) {
    CHECK(a[i] == a_ref[i]);
    CHECK(b[i] == b_ref[i]);
  }
}

TEST_CASE("rng: LdmGenerator is deterministic, continues its stream, and is standard normal") {
  const int64_t n = 1 << 20;  // large enough for the parallel path
  LdmGenerator a(1234), b(1234), c(1235);
  const std::vector<float> x = draw(a, n), y = draw(b, n), z = draw(c, n);
  CHECK(x == y);
  CHECK(bit_mismatches(x.data(), z.data(), n) > n - 16);

  SECTION("even-sized draws concatenate; an odd draw ends its last pair") {
    LdmGenerator g(1234);
    std::vector<float> parts = draw(g, 10);
    for (int64_t len : {int64_t(6), int64_t(1000), n - 10 - 6 - 1000}) {
      std::vector<float> p = draw(g, len);
      parts.insert(parts.end(), p.begin(), p.end());
    }
    CHECK(parts == x);
    LdmGenerator h(1234);
    draw(h, 3);  // pairs 0, 1
    CHECK(draw(h, 2) == std::vector<float>(x.begin() + 4, x.begin() + 6));
    CHECK(h.offset() == 3);
    h.manual_seed(1234);
    CHECK(draw(h, 4) == std::vector<float>(x.begin(), x.begin() + 4));
  }

  double sum = 0, sq = 0, m4 = 0;
  int64_t beyond3 = 0;
  for (float v : x) {
    sum += v;
    sq += double(v) * v;
    m4 += double(v) * v * v * v;
    beyond3 += std::fabs(v) > 3;
  }
  const double mean = sum / n, var = sq / n - mean * mean, kurt = m4 / n / (var * var);
  std::printf("  ldm: mean %.5f  std %.5f  kurtosis %.4f  P(|x|>3) %.5f (normal: 0, 1, 3, 0.0027)\n", mean,
              std::sqrt(var), kurt, double(beyond3) / n);
  CHECK(std::fabs(mean) < 5e-3);  // 5 standard errors at n = 2^20
  CHECK(std::fabs(std::sqrt(var) - 1) < 5e-3);
  CHECK(std::fabs(kurt - 3) < 0.05);
  CHECK(std::fabs(double(beyond3) / n - 0.0027) < 5e-4);
}

TEST_CASE("rng: make_generator builds each generator by name and rejects others") {
  for (const std::string& name : generator_names()) {
    std::unique_ptr<Generator> g = make_generator(name, 42);
    REQUIRE(g);
    Tensor t = g->randn({1, 4, 64, 64});
    CHECK(t.numel() == 16384);
  }
  std::unique_ptr<Generator> t = make_generator("torch-cpu", 42);
  CHECK(dynamic_cast<TorchCpuGenerator*>(t.get()) != nullptr);
  std::unique_ptr<Generator> l = make_generator("ldm", 42);
  LdmGenerator direct(42);
  CHECK(draw(*l, 32) == draw(direct, 32));
  CHECK_THROWS_WITH(make_generator("numpy", 1), Catch::Contains("unknown random generator \"numpy\"") &&
                                                    Catch::Contains("torch-cpu"));
  CHECK_THROWS_AS(make_generator("", 1), Error);
}

TEST_CASE("rng: time of one SD1.5 latent draw [1,4,64,64]") {
  for (const std::string& name : generator_names()) {
    std::unique_ptr<Generator> g = make_generator(name, 0);
    std::vector<float> buf(16384);
    g->randn(buf.data(), 16384);  // warm up (page faults, libm first calls)
    const auto t0 = std::chrono::steady_clock::now();
    for (int i = 0; i < 20; ++i) g->randn(buf.data(), 16384);
    const double ms = std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count() / 20;
    std::printf("  %-10s %.3f ms per 16384 values (%.0f Mvalues/s)\n", name.c_str(), ms, 16384 / ms / 1e3);
    CHECK(ms > 0);
  }
}
