// --fp16-weights: the large matrices are kept in fp16 and converted per layer on use. The
// models must stay within the reduced-precision tolerance of ../shared/README.md (2e-2).
#include <catch2/catch.hpp>

#include "ldm/core/memory.hpp"
#include "ldm/models/clip_text.hpp"
#include "ldm/models/unet.hpp"
#include "ldm/models/vae.hpp"
#include "reference.hpp"
#include "synthetic.hpp"

using namespace ldm;

namespace {
WeightStore synthetic_fp16_weights() {
  WeightStore w = ldm::test::synthetic_weights();
  w.set_keep_fp16(true);
  return w;
}
}  // namespace

TEST_CASE("fp16 weights: full-size U-Net and VAE against the diffusers references", "[full]") {
  LDM_REQUIRE_REFERENCE(unet_path, "ref_unet_full.safetensors");
  ldm::test::Reference ref(unet_path);
  {
    auto w = synthetic_fp16_weights();
    UNet2DConditionModel unet;
    unet.load(w, "", UNetConfig{});
    w.finish();
    CHECK(unet.num_parameters() == 859520964);
    Tensor out = unet.forward(ref.get("unet_32", "sample"), ref.get("unet_32", "timestep")[0], ref.get("unet_32", "context"));
    ldm::test::require_close(out, ref.get("unet_32", "out"), 2e-2, "unet_32 with fp16 weights");
    std::printf("  peak RSS after a fp16-weight U-Net step: %.2f GB\n", peak_rss_gb());
  }
  ldm::test::Reference vref(ldm::test::reference_path("ref_vae_full.safetensors"));
  auto w = synthetic_fp16_weights();
  AutoencoderKL vae;
  vae.load(w, "", VAEConfig{});
  w.finish();
  ldm::test::require_close(vae.decode(vref.get("vae_decode_32", "latent")), vref.get("vae_decode_32", "image"), 2e-2,
                           "vae_decode_32 with fp16 weights");
}

TEST_CASE("fp16 weights: CLIP against the reference", "[full]") {
  LDM_REQUIRE_REFERENCE(path, "ref_clip_full.safetensors");
  ldm::test::Reference ref(path);
  auto w = synthetic_fp16_weights();
  CLIPTextModel clip;
  clip.load(w, "text_model", CLIPTextConfig{});
  w.finish();
  CLIPTextOutput r = clip.forward(ref.file.load_i64("clip_full.input_ids"), 3);
  ldm::test::require_close(r.last_hidden_state, ref.get("clip_full", "last_hidden_state"), 2e-2,
                           "clip_full with fp16 weights");
}
