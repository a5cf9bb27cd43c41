// The full-size SD1.5 networks on the GPU against the float64 truths, with the synthetic
// weights of ../shared/README.md: ref_unet_full (64x64 batch 2 at t=981, 32x32 batch 1 at
// t=1), ref_vae_full (decode 64 -> 512, decode 32 -> 256, encode 256 -> 32), ref_clip_full
// (last_hidden_state and hidden_states[-2] of 3 prompts). Relative L2 <= 1e-4 in fp32,
// <= 2e-2 in fp16 (all three) and bf16 (the U-Net).
//
// Each CPU model is built once (synthetic weights take seconds to generate: 860M parameters
// for the U-Net) and uploaded in each precision (cuda::X::upload). Without a GPU a case reads
// its reference tensors, checks their shapes and returns; the CPU models are not built then.
#include <catch2/catch.hpp>

#include <chrono>
#include <cstdio>
#include <string>
#include <tuple>
#include <vector>

#include "ldm/cuda/clip_text.hpp"
#include "ldm/cuda/unet.hpp"
#include "ldm/cuda/vae.hpp"
#include "reference.hpp"

using namespace ldm;
using ldm::test::Reference;
using ldm::test::require_close;

namespace {

double model_tolerance(cuda::DType t) { return t == cuda::DType::f32 ? 1e-4 : 2e-2; }  // full-size models
std::string model_case(const std::string& name, cuda::DType t) { return name + " " + cuda::dtype_name(t); }

// Wall time of GPU work: synchronises before reading the clock.
struct GpuTimer {
  std::chrono::steady_clock::time_point t0;
  GpuTimer() {
    cuda::synchronize();
    t0 = std::chrono::steady_clock::now();
  }
  double ms() const {
    cuda::synchronize();
    return std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count();
  }
};

double gib(int64_t bytes) { return double(bytes) / double(1 << 30); }

template <typename CpuModel, typename Config>
CpuModel build_cpu(const std::string& prefix, const Config& cfg, const char* what) {
  const auto t0 = std::chrono::steady_clock::now();
  WeightStore w(std::make_shared<SyntheticSource>());
  CpuModel m;
  m.load(w, prefix, cfg);
  w.finish();
  std::printf("  %s: synthetic weights built in %.1f s\n", what,
              std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count());
  return m;
}

// Uploads `cpu` in dtype t into a fresh GPU model and reports the time and GPU memory.
template <typename GpuModel, typename CpuModel>
GpuModel upload_model(const CpuModel& cpu, cuda::DType t, const char* what) {
  GpuModel m;
  GpuTimer timer;
  m.upload(cpu, t);
  std::printf("  %s %s: uploaded in %.0f ms, %.2f GiB on the GPU\n", what, cuda::dtype_name(t), timer.ms(),
              gib(cuda::memory_allocated_bytes()));
  return m;
}

const ldm::UNet2DConditionModel& cpu_unet() {
  static const auto m = build_cpu<ldm::UNet2DConditionModel>("", UNetConfig{}, "full-size U-Net");
  return m;
}
const ldm::AutoencoderKL& cpu_vae(const VAEConfig& cfg) {
  static const auto m = build_cpu<ldm::AutoencoderKL>("", cfg, "full-size VAE");
  return m;
}
const ldm::CLIPTextModel& cpu_clip(const CLIPTextConfig& cfg) {
  static const auto m = build_cpu<ldm::CLIPTextModel>("text_model", cfg, "full-size CLIP text encoder");
  return m;
}

// ---- U-Net

struct UNetCase {
  std::string name;
  Tensor sample, context, out;
  float timestep;
};

void check_unet(cuda::DType t) {
  LDM_REQUIRE_REFERENCE(path, "ref_unet_full.safetensors");
  Reference ref(path);
  std::vector<UNetCase> cases;
  for (const char* name : {"unet_64", "unet_32"})
    cases.push_back({name, ref.get(name, "sample"), ref.get(name, "context"), ref.get(name, "out"),
                     ref.get(name, "timestep")[0]});
  REQUIRE(cases[0].sample.shape() == Shape{2, 4, 64, 64});
  REQUIRE(cases[0].context.shape() == Shape{2, 77, 768});
  REQUIRE(cases[1].sample.shape() == Shape{1, 4, 32, 32});
  REQUIRE(cases[1].context.shape() == Shape{1, 77, 768});
  for (const auto& c : cases) REQUIRE(c.out.shape() == c.sample.shape());
  if (!cuda::available()) return;

  const auto unet = upload_model<cuda::UNet2DConditionModel>(cpu_unet(), t, "U-Net");
  for (const auto& c : cases) {
    // The sample as float32 (as the pipeline keeps it), the context in the model's dtype.
    const cuda::DeviceTensor x = cuda::to_device(c.sample), ctx = cuda::to_device(c.context, t);
    cuda::reset_peak_memory();
    GpuTimer timer;
    const cuda::DeviceTensor eps = unet.forward(x, std::vector<float>{c.timestep}, ctx);
    const double ms = timer.ms();
    REQUIRE(eps.dtype() == cuda::DType::f32);
    require_close(cuda::to_host(eps), c.out, model_tolerance(t), model_case(c.name, t));
    std::printf("  %-40s forward %.1f ms (first call included), peak GPU memory %.2f GiB\n", model_case(c.name, t).c_str(),
                ms, gib(cuda::peak_memory_allocated_bytes()));
  }
}

}  // namespace

TEST_CASE("cuda models: full-size SD1.5 U-Net fp32 (64x64 batch 2 t=981, 32x32 batch 1 t=1)") {
  check_unet(cuda::DType::f32);
}
TEST_CASE("cuda models: full-size SD1.5 U-Net fp16") { check_unet(cuda::DType::f16); }
TEST_CASE("cuda models: full-size SD1.5 U-Net bf16") { check_unet(cuda::DType::bf16); }

// ---- VAE

namespace {
void check_vae(cuda::DType t) {
  LDM_REQUIRE_REFERENCE(path, "ref_vae_full.safetensors");
  Reference ref(path);
  const VAEConfig cfg = VAEConfig::from_json(ref.meta("vae_decode_64").at("config"));
  const Tensor lat64 = ref.get("vae_decode_64", "latent"), img64 = ref.get("vae_decode_64", "image");
  const Tensor lat32 = ref.get("vae_decode_32", "latent"), img32 = ref.get("vae_decode_32", "image");
  const Tensor image = ref.get("vae_encode_256", "image");
  const Tensor mean = ref.get("vae_encode_256", "mean"), logvar = ref.get("vae_encode_256", "logvar");
  REQUIRE(lat64.shape() == Shape{1, 4, 64, 64});
  REQUIRE(img64.shape() == Shape{1, 3, 512, 512});
  REQUIRE(lat32.shape() == Shape{1, 4, 32, 32});
  REQUIRE(img32.shape() == Shape{1, 3, 256, 256});
  REQUIRE(image.shape() == Shape{1, 3, 256, 256});
  REQUIRE(mean.shape() == Shape{1, 4, 32, 32});
  REQUIRE(logvar.shape() == mean.shape());
  if (!cuda::available()) return;

  const auto vae = upload_model<cuda::AutoencoderKL>(cpu_vae(cfg), t, "VAE");
  const double tol = model_tolerance(t);
  for (auto [name, lat, img] : {std::make_tuple("vae_decode_64", &lat64, &img64),
                                std::make_tuple("vae_decode_32", &lat32, &img32)}) {
    cuda::reset_peak_memory();
    GpuTimer timer;
    const cuda::DeviceTensor out = vae.decode(cuda::to_device(*lat, t));
    const double ms = timer.ms();
    require_close(cuda::to_host(out), *img, tol, model_case(name, t));
    std::printf("  %-40s %.1f ms, peak GPU memory %.2f GiB\n", model_case(name, t).c_str(), ms,
                gib(cuda::peak_memory_allocated_bytes()));
  }
  cuda::DeviceTensor m, lv;
  GpuTimer timer;
  vae.encode_moments(cuda::to_device(image, t), m, lv);
  const double ms = timer.ms();
  require_close(cuda::to_host(m), mean, tol, model_case("vae_encode_256 mean", t));
  require_close(cuda::to_host(lv), logvar, tol, model_case("vae_encode_256 logvar", t));
  std::printf("  %-40s %.1f ms\n", model_case("vae_encode_256", t).c_str(), ms);
}
}  // namespace

TEST_CASE("cuda models: full-size SD1.5 VAE fp32 (decode 64 -> 512, 32 -> 256, encode 256)") {
  check_vae(cuda::DType::f32);
}
TEST_CASE("cuda models: full-size SD1.5 VAE fp16") { check_vae(cuda::DType::f16); }

// ---- CLIP text encoder

namespace {
void check_clip(cuda::DType t) {
  LDM_REQUIRE_REFERENCE(path, "ref_clip_full.safetensors");
  Reference ref(path);
  const nlohmann::json& meta = ref.meta("clip_full");
  const CLIPTextConfig cfg = CLIPTextConfig::from_json(meta.at("config"));
  const std::vector<int64_t> ids = ref.file.load_i64("clip_full.input_ids");
  const Tensor last = ref.get("clip_full", "last_hidden_state"), penult = ref.get("clip_full", "penultimate");
  const int64_t B = 3;
  REQUIRE(ids.size() == size_t(B * 77));
  REQUIRE(last.shape() == Shape{B, 77, 768});
  REQUIRE(penult.shape() == last.shape());
  if (!cuda::available()) return;

  const auto clip = upload_model<cuda::CLIPTextModel>(cpu_clip(cfg), t, "CLIP");
  GpuTimer timer;
  const CLIPTextOutput o = clip.forward(ids, B, /*output_hidden_states=*/true);
  const double ms = timer.ms();
  REQUIRE(o.hidden_states.size() == 13);
  require_close(o.last_hidden_state, last, model_tolerance(t), model_case("clip_full last_hidden_state", t));
  require_close(o.hidden_states[11], penult, model_tolerance(t), model_case("clip_full hidden_states[-2]", t));
  require_close(clip.penultimate(ids, B), penult, model_tolerance(t), model_case("clip_full penultimate()", t));
  require_close(clip.encode(ids, B), last, model_tolerance(t), model_case("clip_full encode()", t));
  std::printf("  %-40s forward batch 3 x 77 with hidden states %.1f ms\n", model_case("clip_full", t).c_str(), ms);
}
}  // namespace

TEST_CASE("cuda models: full-size CLIP ViT-L/14 text encoder fp32 (last, penultimate)") { check_clip(cuda::DType::f32); }
TEST_CASE("cuda models: full-size CLIP ViT-L/14 text encoder fp16") { check_clip(cuda::DType::f16); }
