// AutoencoderKL against diffusers (float64 truth): the tiny VAE of ref_blocks.safetensors at
// relative L2 <= 1e-5, the full-size SD1.5 VAE of ref_vae_full.safetensors at <= 1e-4.
// Weights are synth.param(key), key relative to the VAE (encoder.conv_in.weight, ...).
// The full-size VAE (84M parameters) is built once and shared by the full-size cases.
#include <unistd.h>

#include <catch2/catch.hpp>
#include <chrono>
#include <cstdio>
#include <ctime>
#include <fstream>

#include "ldm/core/memory.hpp"
#include "ldm/models/vae.hpp"
#include "reference.hpp"
#include "synthetic.hpp"

using namespace ldm;
using ldm::test::Reference;
using ldm::test::synthetic;
using ldm::test::require_close;

namespace {
constexpr double kTolTiny = 1e-5;  // ../shared/README.md: tiny models
constexpr double kTolFull = 1e-4;  // ../shared/README.md: full-size models in float32

// The full-size synthetic VAE, configured from the reference's own config, built on first use.
const AutoencoderKL& full_vae(const Reference& ref) {
  static const AutoencoderKL vae = synthetic<AutoencoderKL>("", VAEConfig::from_json(ref.meta("vae_decode_64").at("config")));
  return vae;
}

// Wall and CPU time of a stretch of work (CPU time counts every thread; on a busy machine it
// shows what the work cost when wall time does not).
struct WallCpuTimer {
  std::chrono::steady_clock::time_point wall = std::chrono::steady_clock::now();
  std::clock_t cpu = std::clock();
  double seconds() const { return std::chrono::duration<double>(std::chrono::steady_clock::now() - wall).count(); }
  double cpu_seconds() const { return double(std::clock() - cpu) / CLOCKS_PER_SEC; }
  // "12.34 s (CPU 24.10 s, 104 GFLOP/s)"
  std::string report(double gflop) const {
    char buf[96];
    std::snprintf(buf, sizeof buf, "%.2f s (CPU %.2f s, %.0f GFLOP/s)", seconds(), cpu_seconds(), gflop / seconds());
    return buf;
  }
};

// Resident memory now (Linux /proc/self/statm); the peak so far is ldm::peak_rss_bytes().
double rss_mib() {
  long pages = 0, resident = 0;
  if (FILE* f = std::fopen("/proc/self/statm", "r")) {
    if (std::fscanf(f, "%ld %ld", &pages, &resident) != 2) resident = 0;
    std::fclose(f);
  }
  return double(resident) * double(sysconf(_SC_PAGESIZE)) / (1 << 20);
}
}  // namespace

TEST_CASE("vae: VAEConfig from a diffusers config.json") {
  const auto j = nlohmann::json::parse(R"({
    "_class_name": "AutoencoderKL", "act_fn": "silu", "block_out_channels": [128, 256, 512, 512],
    "down_block_types": ["DownEncoderBlock2D", "DownEncoderBlock2D", "DownEncoderBlock2D", "DownEncoderBlock2D"],
    "in_channels": 3, "latent_channels": 4, "layers_per_block": 2, "norm_num_groups": 32, "out_channels": 3,
    "sample_size": 512, "scaling_factor": 0.18215, "force_upcast": true,
    "up_block_types": ["UpDecoderBlock2D", "UpDecoderBlock2D", "UpDecoderBlock2D", "UpDecoderBlock2D"]})");
  VAEConfig c = VAEConfig::from_json(j);
  CHECK(c.block_out_channels == std::vector<int64_t>{128, 256, 512, 512});
  CHECK(c.latent_channels == 4);
  CHECK(c.scaling_factor == 0.18215);
  CHECK(c.downscale_factor() == 8);

  auto bad = j;
  bad["act_fn"] = "gelu";
  CHECK_THROWS_WITH(VAEConfig::from_json(bad), Catch::Contains("act_fn") && Catch::Contains("not supported"));
  bad = j;
  bad["norm_num_groups"] = 48;
  CHECK_THROWS_WITH(VAEConfig::from_json(bad), Catch::Contains("multiple of norm_num_groups"));
  bad = j;
  bad["latent_channels"] = "four";
  CHECK_THROWS_WITH(VAEConfig::from_json(bad), Catch::Contains("latent_channels") && Catch::Contains("must be an integer"));
}

TEST_CASE("vae: DiagonalGaussian splits moments, clamps logvar, samples mean + std * noise") {
  // moments [1, 2, 1, 2]: mean channel (0.5, -1), logvar channel (log 4, 100 -> clamped to 20)
  auto g = DiagonalGaussian::from_moments(Tensor::from({1, 2, 1, 2}, {0.5f, -1.0f, std::log(4.0f), 100.0f}));
  CHECK(g.mean.shape() == Shape{1, 1, 1, 2});
  CHECK(g.logvar[1] == 20.0f);
  Tensor s = g.std();
  CHECK(s[0] == Approx(2.0));
  CHECK(s[1] == Approx(std::exp(10.0)));
  Tensor z = g.sample(Tensor::from({1, 1, 1, 2}, {1.0f, 0.0f}));
  CHECK(z[0] == Approx(2.5));
  CHECK(z[1] == Approx(-1.0));
  CHECK(g.mode()[0] == 0.5f);
  CHECK_THROWS_WITH(g.sample(Tensor({1, 2, 1, 2})), Catch::Contains("latent's shape"));
}

TEST_CASE("vae: tiny AutoencoderKL encode (mean, logvar) and decode") {
  LDM_REQUIRE_REFERENCE(path, "ref_blocks.safetensors");
  Reference ref(path);
  AutoencoderKL vae = synthetic<AutoencoderKL>("", VAEConfig::from_json(ref.meta("tiny_vae").at("config")));
  DiagonalGaussian post = vae.encode(ref.get("tiny_vae", "image"));
  require_close(post.mean, ref.get("tiny_vae", "mean"), kTolTiny, "tiny_vae mean");
  require_close(post.logvar, ref.get("tiny_vae", "logvar"), kTolTiny, "tiny_vae logvar");
  require_close(vae.decode(ref.get("tiny_vae", "latent")), ref.get("tiny_vae", "decoded"), kTolTiny,
                "tiny_vae decoded");

  // A batch is its images one by one (encode and decode run per image): [x; -x/2].
  auto batch_of_two = [](const Tensor& x) {
    Shape s = x.shape();
    s[0] = 2;
    Tensor r = Tensor::empty(s);
    std::copy(x.begin(), x.end(), r.begin());
    std::transform(x.begin(), x.end(), r.begin() + x.numel(), [](float v) { return -0.5f * v; });
    return r;
  };
  Tensor lat2 = batch_of_two(ref.get("tiny_vae", "latent")), img2 = batch_of_two(ref.get("tiny_vae", "image"));
  Tensor dec2 = vae.decode(lat2);
  DiagonalGaussian post2 = vae.encode(img2);
  for (int64_t b = 0; b < 2; ++b) {  // equal up to the summation order the GEMM may vary
    CHECK(ldm::test::rel_l2(dec2.slice0(b, b + 1), vae.decode(lat2.slice0(b, b + 1))) < 1e-6);
    CHECK(ldm::test::rel_l2(post2.mean.slice0(b, b + 1), vae.encode(img2.slice0(b, b + 1)).mean) < 1e-6);
  }
}

TEST_CASE("vae: a wrong channel count is a clear error") {
  VAEConfig c;
  c.block_out_channels = {32, 64};
  AutoencoderKL vae = synthetic<AutoencoderKL>("", c);
  CHECK_THROWS_WITH(
      vae.decode(Tensor({1, 3, 16, 16})),
      Catch::Contains("expected a latent [B, 4, h, w], got [1, 3, 16, 16]") && Catch::Contains("decode takes latents"));
  CHECK_THROWS_WITH(vae.decode(Tensor({4, 16, 16})), Catch::Contains("expected a latent [B, 4, h, w]"));
  CHECK_THROWS_WITH(vae.encode(Tensor({1, 4, 32, 32})),
                    Catch::Contains("expected an image [B, 3, H, W] with values in [-1, 1], got [1, 4, 32, 32]"));
  CHECK_THROWS_WITH(vae.encode(Tensor({1, 3, 1, 1})), Catch::Contains("smaller than the VAE's downscale factor"));
  CHECK_THROWS_WITH(vae.decode(Tensor({1, 4, 0, 16})), Catch::Contains("the latent [1, 4, 0, 16] has no pixels"));
  CHECK_THROWS_WITH(vae.decode(Tensor({0, 4, 16, 16})), Catch::Contains("the batch [0, 4, 16, 16] is empty"));

  // A checkpoint of another width: every mis-shaped tensor is named at load time.
  WeightStore w(
      std::make_shared<MapSource>(std::map<std::string, Tensor>{{"decoder.conv_in.weight", Tensor({64, 8, 3, 3})}}));
  AutoencoderKL other;
  other.load(w, "", c);
  CHECK_THROWS_WITH(w.finish(),
                    Catch::Contains("decoder.conv_in.weight: file has [64, 8, 3, 3], model expects [64, 4, 3, 3]"));
}

// The SD1.5 vae/ file's tensor names and shapes (sd15_keys.json), no values: what load() asks
// for must be exactly what a real checkpoint holds, nothing missing, mis-shaped or left over.
class KeysOnlySource : public WeightSource {
 public:
  explicit KeysOnlySource(std::map<std::string, Shape> shapes) : shapes_(std::move(shapes)) {}
  bool has(const std::string& name) const override { return shapes_.count(name) != 0; }
  Shape shape(const std::string& name) const override { return shapes_.at(name); }
  Tensor load(const std::string&, const Shape& expected) const override { return Tensor::empty(expected); }
  std::vector<std::string> names() const override {
    std::vector<std::string> r;
    for (const auto& kv : shapes_) r.push_back(kv.first);
    return r;
  }
  std::string describe() const override { return "the SD1.5 vae/ key list"; }

 private:
  std::map<std::string, Shape> shapes_;
};

TEST_CASE("vae: load() asks for exactly the tensors of the SD1.5 vae/ checkpoint") {
  LDM_REQUIRE_REFERENCE(path, "sd15_keys.json");
  std::ifstream f(path);
  const auto keys = nlohmann::json::parse(f).at("diffusers").at("vae");
  std::map<std::string, Shape> shapes;
  for (const auto& [name, shape] : keys.items()) shapes[name] = shape.get<Shape>();
  WeightStore w(std::make_shared<KeysOnlySource>(shapes));
  AutoencoderKL vae;
  vae.load(w, "", VAEConfig{});
  CHECK_NOTHROW(w.finish(/*check_unexpected=*/true));
  CHECK(w.num_loaded() == shapes.size());
}

// Work of each full-size case, in GFLOP (2 x multiply-adds of the convolutions and attention).
constexpr double kGflopDecode64 = 2514.5, kGflopDecode32 = 622.2, kGflopEncode256 = 272.7;

TEST_CASE("vae: full-size SD1.5 decode 64x64 -> 512x512", "[full]") {
  LDM_REQUIRE_REFERENCE(path, "ref_vae_full.safetensors");
  Reference ref(path);
  WallCpuTimer build;
  const AutoencoderKL& vae = full_vae(ref);
  std::printf("  full-size VAE built in %.2f s\n", build.seconds());
  Tensor latent = ref.get("vae_decode_64", "latent");
  const double before = rss_mib();
  WallCpuTimer t;
  Tensor image = vae.decode(latent);
  const std::string time = t.report(kGflopDecode64);
  require_close(image, ref.get("vae_decode_64", "image"), kTolFull, "vae_decode_64 image");
  // Peak RSS of the process so far: the weights (335 MB) plus the largest activations of the
  // decode (the [1, 256, 512, 512] input of up_blocks.3 with its group norm and conv1 output).
  const double peak = peak_rss_bytes() / (1 << 20);
  std::printf("  vae_decode_64: %s, RSS before %.0f MiB, peak RSS %.0f MiB\n", time.c_str(), before, peak);
  CHECK(peak < 2048.0);
}

TEST_CASE("vae: full-size SD1.5 decode 32x32 -> 256x256", "[full]") {
  LDM_REQUIRE_REFERENCE(path, "ref_vae_full.safetensors");
  Reference ref(path);
  const AutoencoderKL& vae = full_vae(ref);
  WallCpuTimer t;
  Tensor image = vae.decode(ref.get("vae_decode_32", "latent"));
  std::printf("  vae_decode_32: %s\n", t.report(kGflopDecode32).c_str());
  require_close(image, ref.get("vae_decode_32", "image"), kTolFull, "vae_decode_32 image");
}

TEST_CASE("vae: full-size SD1.5 encode 256x256 -> 32x32", "[full]") {
  LDM_REQUIRE_REFERENCE(path, "ref_vae_full.safetensors");
  Reference ref(path);
  const AutoencoderKL& vae = full_vae(ref);
  WallCpuTimer t;
  DiagonalGaussian post = vae.encode(ref.get("vae_encode_256", "image"));
  std::printf("  vae_encode_256: %s\n", t.report(kGflopEncode256).c_str());
  require_close(post.mean, ref.get("vae_encode_256", "mean"), kTolFull, "vae_encode_256 mean");
  require_close(post.logvar, ref.get("vae_encode_256", "logvar"), kTolFull, "vae_encode_256 logvar");
}
