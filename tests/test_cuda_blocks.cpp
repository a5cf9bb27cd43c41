// The GPU blocks (ldm/cuda/blocks.hpp) and the tiny models (tiny_unet, tiny_vae, tiny_clip)
// against ref_blocks.safetensors: every case tests/test_blocks.cpp, test_unet.cpp, test_vae.cpp
// and test_clip_text.cpp check on the CPU, with the same synthetic weights and inputs, in fp32
// (relative L2 <= 1e-5) and fp16 (<= 2e-2, ../shared/README.md).
//
// Without a GPU each case still reads its reference tensors, checks their shapes and loads
// the CPU twin of the module (which is what the GPU load does first: names, shapes, config),
// then returns before anything touches the GPU (tests/cuda_main.cpp then exits 77).
#include <catch2/catch.hpp>

#include <algorithm>
#include <cstdio>
#include <string>
#include <vector>

#include "ldm/cuda/blocks.hpp"
#include "ldm/cuda/clip_text.hpp"
#include "ldm/cuda/unet.hpp"
#include "ldm/cuda/vae.hpp"
#include "reference.hpp"
#include "synthetic.hpp"

using namespace ldm;
using ldm::test::Reference;
using ldm::test::require_close;

namespace {

constexpr cuda::DType kBlockDtypes[] = {cuda::DType::f32, cuda::DType::f16};
double block_tolerance(cuda::DType t) { return t == cuda::DType::f32 ? 1e-5 : 2e-2; }  // blocks and tiny models
using ldm::test::synthetic_weights;
std::string block_case(const std::string& name, cuda::DType t) { return name + " " + cuda::dtype_name(t); }

// The CPU twin loaded with synthetic weights: every tensor asked for exists (checked without a GPU).
template <typename CpuModule, typename... Args>
void load_cpu_twin(const Args&... args) {
  auto w = synthetic_weights();
  CpuModule m;
  m.load(w, "", args...);
  w.finish();
}

// Runs `forward` (device inputs in dtype t -> device output) and compares it to `expected`.
template <typename F>
void check_on_gpu(const std::string& name, const Tensor& expected, F forward) {
  for (cuda::DType t : kBlockDtypes) {
    const cuda::DeviceTensor out = forward(t);
    CHECK(out.dtype() == t);
    require_close(cuda::to_host(out), expected, block_tolerance(t), block_case(name, t));
  }
}

cuda::DeviceTensor dev(const Tensor& x, cuda::DType t) { return cuda::to_device(x, t); }

}  // namespace

TEST_CASE("cuda blocks: timestep_embedding (flip_sin_to_cos, shift 0)") {
  LDM_REQUIRE_REFERENCE(path, "ref_blocks.safetensors");
  Reference ref(path);
  const Tensor ts = ref.get("timestep_embedding", "timesteps"), expected = ref.get("timestep_embedding", "out");
  REQUIRE(expected.shape() == Shape{ts.numel(), 320});
  if (!cuda::available()) return;
  const std::vector<float> t(ts.begin(), ts.end());
  check_on_gpu("timestep_embedding", expected, [&](cuda::DType d) { return cuda::timestep_embedding(t, 320, true, 0.0f, d); });
}

TEST_CASE("cuda blocks: TimestepEmbedding MLP") {
  LDM_REQUIRE_REFERENCE(path, "ref_blocks.safetensors");
  Reference ref(path);
  const Tensor x = ref.get("time_mlp", "x"), expected = ref.get("time_mlp", "out");
  REQUIRE(x.shape() == Shape{4, 320});
  REQUIRE(expected.shape() == Shape{4, 1280});
  load_cpu_twin<ldm::TimestepEmbedding>(int64_t(320), int64_t(1280));
  if (!cuda::available()) return;
  check_on_gpu("time_mlp", expected, [&](cuda::DType t) {
    auto w = synthetic_weights();
    cuda::TimestepEmbedding m;
    m.load(w, "", 320, 1280, t);
    return m.forward(dev(x, t));
  });
}

TEST_CASE("cuda blocks: GroupNorm") {
  LDM_REQUIRE_REFERENCE(path, "ref_blocks.safetensors");
  Reference ref(path);
  const Tensor x = ref.get("group_norm", "x"), expected = ref.get("group_norm", "out");
  REQUIRE(x.shape() == Shape{2, 64, 8, 8});
  REQUIRE(expected.shape() == x.shape());
  load_cpu_twin<ldm::GroupNorm>(int64_t(64), int64_t(32), 1e-5f);
  if (!cuda::available()) return;
  check_on_gpu("group_norm", expected, [&](cuda::DType t) {
    auto w = synthetic_weights();
    cuda::GroupNorm m;
    m.load(w, "", 64, 32, 1e-5f, t);
    return m.forward(dev(x, t));
  });
}

TEST_CASE("cuda blocks: ResnetBlock2D with time embedding and 1x1 shortcut (U-Net)") {
  LDM_REQUIRE_REFERENCE(path, "ref_blocks.safetensors");
  Reference ref(path);
  const Tensor x = ref.get("resnet_unet", "x"), temb = ref.get("resnet_unet", "temb");
  const Tensor expected = ref.get("resnet_unet", "out");
  REQUIRE(x.shape() == Shape{2, 64, 8, 8});
  REQUIRE(temb.shape() == Shape{2, 256});
  REQUIRE(expected.shape() == Shape{2, 128, 8, 8});
  load_cpu_twin<ldm::ResnetBlock2D>(int64_t(64), int64_t(128), int64_t(256), int64_t(32), 1e-5f);
  if (!cuda::available()) return;
  check_on_gpu("resnet_unet", expected, [&](cuda::DType t) {
    auto w = synthetic_weights();
    cuda::ResnetBlock2D m;
    m.load(w, "", 64, 128, 256, 32, 1e-5f, t);
    REQUIRE(m.conv_shortcut.has_value());
    return m.forward(dev(x, t), dev(temb, t));
  });
}

TEST_CASE("cuda blocks: ResnetBlock2D without time embedding (VAE, eps 1e-6)") {
  LDM_REQUIRE_REFERENCE(path, "ref_blocks.safetensors");
  Reference ref(path);
  const Tensor x = ref.get("resnet_vae", "x"), expected = ref.get("resnet_vae", "out");
  REQUIRE(x.shape() == Shape{1, 64, 8, 8});
  REQUIRE(expected.shape() == x.shape());
  load_cpu_twin<ldm::ResnetBlock2D>(int64_t(64), int64_t(64), int64_t(0), int64_t(32), 1e-6f);
  if (!cuda::available()) return;
  check_on_gpu("resnet_vae", expected, [&](cuda::DType t) {
    auto w = synthetic_weights();
    cuda::ResnetBlock2D m;
    m.load(w, "", 64, 64, 0, 32, 1e-6f, t);
    REQUIRE_FALSE(m.time_emb_proj.has_value());
    return m.forward(dev(x, t));
  });
}

TEST_CASE("cuda blocks: Downsample2D, U-Net padding=1 and VAE padding=0 (asymmetric pad)") {
  LDM_REQUIRE_REFERENCE(path, "ref_blocks.safetensors");
  Reference ref(path);
  for (auto [name, pad] : {std::pair<const char*, int>{"downsample_unet", 1}, {"downsample_vae", 0}}) {
    const Tensor x = ref.get(name, "x"), expected = ref.get(name, "out");
    REQUIRE(x.ndim() == 4);
    REQUIRE(expected.shape() == Shape{x.dim(0), 64, x.dim(2) / 2, x.dim(3) / 2});
    load_cpu_twin<ldm::Downsample2D>(int64_t(64), int64_t(64), pad);
    if (!cuda::available()) continue;
    check_on_gpu(name, expected, [&, pad = pad](cuda::DType t) {
      auto w = synthetic_weights();
      cuda::Downsample2D m;
      m.load(w, "", 64, 64, pad, t);
      return m.forward(dev(x, t));
    });
  }
}

TEST_CASE("cuda blocks: Upsample2D (nearest x2 + conv)") {
  LDM_REQUIRE_REFERENCE(path, "ref_blocks.safetensors");
  Reference ref(path);
  const Tensor x = ref.get("upsample", "x"), expected = ref.get("upsample", "out");
  REQUIRE(x.shape() == Shape{2, 64, 4, 4});
  REQUIRE(expected.shape() == Shape{2, 64, 8, 8});
  load_cpu_twin<ldm::Upsample2D>(int64_t(64), int64_t(64));
  if (!cuda::available()) return;
  check_on_gpu("upsample", expected, [&](cuda::DType t) {
    auto w = synthetic_weights();
    cuda::Upsample2D m;
    m.load(w, "", 64, 64, t);
    return m.forward(dev(x, t));
  });
}

TEST_CASE("cuda blocks: Attention, cross and self, multi-head") {
  LDM_REQUIRE_REFERENCE(path, "ref_blocks.safetensors");
  Reference ref(path);
  const Tensor xc = ref.get("cross_attention", "x"), ctx = ref.get("cross_attention", "context");
  const Tensor out_c = ref.get("cross_attention", "out");
  const Tensor xs = ref.get("self_attention", "x"), out_s = ref.get("self_attention", "out");
  REQUIRE(xc.shape() == Shape{2, 16, 64});
  REQUIRE(ctx.shape() == Shape{2, 7, 32});
  REQUIRE(out_c.shape() == xc.shape());
  REQUIRE(xs.shape() == Shape{2, 16, 64});
  REQUIRE(out_s.shape() == xs.shape());
  load_cpu_twin<ldm::Attention>(int64_t(64), int64_t(32), int64_t(2), int64_t(32), false);
  load_cpu_twin<ldm::Attention>(int64_t(64), int64_t(0), int64_t(2), int64_t(32), false);
  if (!cuda::available()) return;
  check_on_gpu("cross_attention", out_c, [&](cuda::DType t) {
    auto w = synthetic_weights();
    cuda::Attention m;
    m.load(w, "", 64, 32, 2, 32, false, t);
    return m.forward(dev(xc, t), dev(ctx, t));
  });
  check_on_gpu("self_attention", out_s, [&](cuda::DType t) {
    auto w = synthetic_weights();
    cuda::Attention m;
    m.load(w, "", 64, 0, 2, 32, false, t);
    return m.forward(dev(xs, t));
  });
}

TEST_CASE("cuda blocks: VAE attention (group norm, one head, residual)") {
  LDM_REQUIRE_REFERENCE(path, "ref_blocks.safetensors");
  Reference ref(path);
  const Tensor x = ref.get("vae_attention", "x"), expected = ref.get("vae_attention", "out");
  REQUIRE(x.shape() == Shape{1, 64, 8, 8});
  REQUIRE(expected.shape() == x.shape());
  load_cpu_twin<ldm::VAEAttention>(int64_t(64), int64_t(32), 1e-6f);
  if (!cuda::available()) return;
  check_on_gpu("vae_attention", expected, [&](cuda::DType t) {
    auto w = synthetic_weights();
    cuda::VAEAttention m;
    m.load(w, "", 64, 32, 1e-6f, t);
    return m.forward(dev(x, t));
  });
}

TEST_CASE("cuda blocks: BasicTransformerBlock (self-attn, cross-attn, GEGLU feed-forward)") {
  LDM_REQUIRE_REFERENCE(path, "ref_blocks.safetensors");
  Reference ref(path);
  const Tensor x = ref.get("transformer_block", "x"), ctx = ref.get("transformer_block", "context");
  const Tensor expected = ref.get("transformer_block", "out");
  REQUIRE(x.shape() == Shape{2, 16, 64});
  REQUIRE(ctx.shape() == Shape{2, 7, 32});
  REQUIRE(expected.shape() == x.shape());
  load_cpu_twin<ldm::BasicTransformerBlock>(int64_t(64), int64_t(2), int64_t(32), int64_t(32));
  if (!cuda::available()) return;
  check_on_gpu("transformer_block", expected, [&](cuda::DType t) {
    auto w = synthetic_weights();
    cuda::BasicTransformerBlock m;
    m.load(w, "", 64, 2, 32, 32, t);
    return m.forward(dev(x, t), dev(ctx, t));
  });
}

TEST_CASE("cuda blocks: Transformer2DModel with 1x1 conv proj_in / proj_out") {
  LDM_REQUIRE_REFERENCE(path, "ref_blocks.safetensors");
  Reference ref(path);
  const Tensor x = ref.get("spatial_transformer", "x"), ctx = ref.get("spatial_transformer", "context");
  const Tensor expected = ref.get("spatial_transformer", "out");
  REQUIRE(x.shape() == Shape{2, 64, 4, 4});
  REQUIRE(ctx.shape() == Shape{2, 7, 32});
  REQUIRE(expected.shape() == x.shape());
  load_cpu_twin<ldm::Transformer2DModel>(int64_t(64), int64_t(2), int64_t(32), int64_t(32));
  if (!cuda::available()) return;
  check_on_gpu("spatial_transformer", expected, [&](cuda::DType t) {
    auto w = synthetic_weights();
    cuda::Transformer2DModel m;
    m.load(w, "", 64, 2, 32, 32, 32, 1, t);
    return m.forward(dev(x, t), dev(ctx, t));
  });
}

// ---- tiny models

TEST_CASE("cuda models: tiny U-Net (2 levels, 32/64 channels), also with use_linear_projection") {
  LDM_REQUIRE_REFERENCE(path, "ref_blocks.safetensors");
  Reference ref(path);
  const auto& meta = ref.meta("tiny_unet");
  const UNetConfig cfg = UNetConfig::from_json(meta.at("config"));
  const Tensor sample = ref.get("tiny_unet", "sample"), ctx = ref.get("tiny_unet", "context");
  const Tensor expected = ref.get("tiny_unet", "out");
  const float t = ref.get("tiny_unet", "timestep")[0];
  REQUIRE(t == meta.at("timestep").get<float>());
  REQUIRE(sample.shape() == Shape{2, 4, 16, 16});
  REQUIRE(ctx.shape() == Shape{2, 7, 32});
  REQUIRE(expected.shape() == sample.shape());
  load_cpu_twin<ldm::UNet2DConditionModel>(cfg);
  if (!cuda::available()) return;
  // The sample goes in as float32 (converted inside), the context in the model's dtype; the
  // result has the sample's dtype.
  for (cuda::DType d : kBlockDtypes) {
    auto w = synthetic_weights();
    cuda::UNet2DConditionModel unet;
    unet.load(w, "", cfg, d);
    w.finish();
    const cuda::DeviceTensor out = unet.forward(dev(sample, cuda::DType::f32), t, dev(ctx, d));
    CHECK(out.dtype() == cuda::DType::f32);
    require_close(cuda::to_host(out), expected, block_tolerance(d), block_case("tiny_unet", d));
  }
  // SD2.x layout: 2-d proj_in / proj_out weights (synth values depend on name and fan-in only).
  UNetConfig linear = cfg;
  linear.use_linear_projection = true;
  auto w = synthetic_weights();
  cuda::UNet2DConditionModel unet;
  unet.load(w, "", linear, cuda::DType::f32);
  require_close(cuda::to_host(unet.forward(dev(sample, cuda::DType::f32), std::vector<float>{t}, dev(ctx, cuda::DType::f32))),
                expected, block_tolerance(cuda::DType::f32), "tiny_unet (use_linear_projection) fp32");
}

TEST_CASE("cuda models: tiny AutoencoderKL encode (mean, logvar) and decode, batch of 1 and 2") {
  LDM_REQUIRE_REFERENCE(path, "ref_blocks.safetensors");
  Reference ref(path);
  const VAEConfig cfg = VAEConfig::from_json(ref.meta("tiny_vae").at("config"));
  const Tensor image = ref.get("tiny_vae", "image"), latent = ref.get("tiny_vae", "latent");
  const Tensor mean = ref.get("tiny_vae", "mean"), logvar = ref.get("tiny_vae", "logvar");
  const Tensor decoded = ref.get("tiny_vae", "decoded");
  REQUIRE(image.shape() == Shape{1, 3, 32, 32});
  REQUIRE(latent.shape() == Shape{1, 4, 16, 16});
  REQUIRE(mean.shape() == latent.shape());
  REQUIRE(logvar.shape() == latent.shape());
  REQUIRE(decoded.shape() == image.shape());
  load_cpu_twin<ldm::AutoencoderKL>(cfg);
  if (!cuda::available()) return;
  for (cuda::DType t : kBlockDtypes) {
    auto w = synthetic_weights();
    cuda::AutoencoderKL vae;
    vae.load(w, "", cfg, t);
    w.finish();
    cuda::DeviceTensor m, lv;
    vae.encode_moments(dev(image, t), m, lv);
    CHECK((m.dtype() == t && lv.dtype() == t));
    require_close(cuda::to_host(m), mean, block_tolerance(t), block_case("tiny_vae mean", t));
    require_close(cuda::to_host(lv), logvar, block_tolerance(t), block_case("tiny_vae logvar", t));
    require_close(cuda::to_host(vae.decode(dev(latent, t))), decoded, block_tolerance(t), block_case("tiny_vae decoded", t));

    // A batch is its images one by one, stacked: [x; -x/2] gives the two single-image results.
    auto batch_of_two = [](const Tensor& x) {
      Shape s = x.shape();
      s[0] = 2;
      Tensor r = Tensor::empty(s);
      std::copy(x.begin(), x.end(), r.begin());
      std::transform(x.begin(), x.end(), r.begin() + x.numel(), [](float v) { return -0.5f * v; });
      return r;
    };
    const Tensor lat2 = batch_of_two(latent), img2 = batch_of_two(image);
    const Tensor dec2 = cuda::to_host(vae.decode(dev(lat2, t)));
    cuda::DeviceTensor m2, lv2;
    vae.encode_moments(dev(img2, t), m2, lv2);
    const Tensor mean2 = cuda::to_host(m2), logvar2 = cuda::to_host(lv2);
    REQUIRE(dec2.shape() == Shape{2, 3, 32, 32});
    REQUIRE(mean2.shape() == Shape{2, 4, 16, 16});
    // Same kernels on the same shapes: equal up to a kernel choosing another path for a view's
    // alignment (a misplaced image would be off by ~1). fp16 rounding amplifies such differences.
    const double same = t == cuda::DType::f32 ? 1e-6 : 1e-3;
    for (int64_t b = 0; b < 2; ++b) {
      cuda::DeviceTensor mb, lvb;
      vae.encode_moments(dev(img2.slice0(b, b + 1).clone(), t), mb, lvb);
      const Tensor decb = cuda::to_host(vae.decode(dev(lat2.slice0(b, b + 1).clone(), t)));
      CHECK(ldm::test::rel_l2(dec2.slice0(b, b + 1), decb) < same);
      CHECK(ldm::test::rel_l2(mean2.slice0(b, b + 1), cuda::to_host(mb)) < same);
      CHECK(ldm::test::rel_l2(logvar2.slice0(b, b + 1), cuda::to_host(lvb)) < same);
    }
  }
}

TEST_CASE("cuda models: tiny CLIPTextModel (2 layers, hidden 64, 4 heads), hidden states and clip skip") {
  LDM_REQUIRE_REFERENCE(path, "ref_blocks.safetensors");
  Reference ref(path);
  const CLIPTextConfig cfg = CLIPTextConfig::from_json(ref.meta("tiny_clip").at("config"));
  const std::vector<int64_t> ids = ref.file.load_i64("tiny_clip.input_ids");
  const Tensor last = ref.get("tiny_clip", "last_hidden_state"), penult = ref.get("tiny_clip", "penultimate");
  REQUIRE(ids.size() == 2 * 77);
  REQUIRE(last.shape() == Shape{2, 77, cfg.hidden_size});
  REQUIRE(penult.shape() == last.shape());
  ldm::CLIPTextModel cpu;
  {
    auto w = synthetic_weights();
    cpu.load(w, "text_model", cfg);
    w.finish();
  }
  if (!cuda::available()) return;
  for (cuda::DType t : kBlockDtypes) {
    auto w = synthetic_weights();
    cuda::CLIPTextModel m;
    m.load(w, "text_model", cfg, t);
    w.finish();
    const double tol = block_tolerance(t);
    CLIPTextOutput o = m.forward(ids, 2, /*output_hidden_states=*/true);
    REQUIRE(o.hidden_states.size() == 3);  // embeddings + 2 layers
    require_close(o.last_hidden_state, last, tol, block_case("tiny_clip last_hidden_state", t));
    require_close(o.hidden_states[1], penult, tol, block_case("tiny_clip hidden_states[-2]", t));
    require_close(m.penultimate(ids, 2), penult, tol, block_case("tiny_clip penultimate()", t));
    require_close(m.encode(ids, 2), last, tol, block_case("tiny_clip encode(clip_skip 1)", t));
    // clip_skip 2 = final_layer_norm(hidden_states[-2]): the CPU final norm of the reference penultimate
    require_close(m.encode(ids, 2, 2), cpu.final_layer_norm.forward(penult), tol, block_case("tiny_clip encode(clip_skip 2)", t));
    const cuda::DeviceTensor e = m.encode_device(ids, 2);
    CHECK(e.dtype() == t);
    require_close(cuda::to_host(e), last, tol, block_case("tiny_clip encode_device", t));
  }
}

TEST_CASE("cuda models: using a model before load() is a clear error (no GPU needed)") {
  const std::vector<int64_t> ids(77, 0);
  CHECK_THROWS_WITH(cuda::UNet2DConditionModel{}.forward(cuda::DeviceTensor(), 1.0f, cuda::DeviceTensor()),
                    Catch::Contains("forward called before load()"));
  CHECK_THROWS_WITH(cuda::AutoencoderKL{}.decode(cuda::DeviceTensor()), Catch::Contains("decode called before load()"));
  cuda::DeviceTensor m, lv;
  CHECK_THROWS_WITH(cuda::AutoencoderKL{}.encode_moments(cuda::DeviceTensor(), m, lv),
                    Catch::Contains("encode called before load()"));
  CHECK_THROWS_WITH(cuda::CLIPTextModel{}.encode(ids, 1), Catch::Contains("call load()"));
  CHECK_THROWS_WITH(cuda::CLIPTextModel{}.encode(ids, 1, 0), Catch::Contains("clip_skip must be in [1, 13]"));
  CHECK_THROWS_WITH(cuda::Linear{}.forward(cuda::DeviceTensor()), Catch::Contains("before load()"));
  CHECK_THROWS_WITH(cuda::Conv2d{}.forward(cuda::DeviceTensor()), Catch::Contains("before load()"));
  // Uploading a CPU model that was never loaded is refused before anything reaches the GPU.
  CHECK_THROWS_WITH(cuda::UNet2DConditionModel{}.upload(ldm::UNet2DConditionModel{}, cuda::DType::f16),
                    Catch::Contains("never loaded"));
  CHECK_THROWS_WITH(cuda::AutoencoderKL{}.upload(ldm::AutoencoderKL{}, cuda::DType::f16),
                    Catch::Contains("never loaded"));
  CHECK_THROWS_WITH(cuda::CLIPTextModel{}.upload(ldm::CLIPTextModel{}, cuda::DType::f16),
                    Catch::Contains("never loaded"));
}
