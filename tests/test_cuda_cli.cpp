// `ldm generate --device cuda` and `ldm eval ... --device cuda` as a user runs them.
//   No GPU (the CPU side, runs everywhere): both commands exit 1 with "--device cuda: no CUDA device (...)"
//     before loading anything, and a precision without --device cuda is refused.
//   GPU: `ldm eval` of each component in fp32 against the full-size references (rel L2 <= 1e-4)
//     and in fp16 (<= 2e-2), and a small `ldm generate
//     --device cuda --precision fp16` that writes a PNG and reports the GPU's peak memory.
#include <catch2/catch.hpp>
#include <cstdlib>
#include <fstream>
#include <sstream>
#include <string>
#include <sys/wait.h>

#include "ldm/core/image.hpp"
#include "ldm/core/safetensors.hpp"
#include "ldm/cuda/device_tensor.hpp"
#include "reference.hpp"
#include "cli_run.hpp"
#include "tmp_path.hpp"

using namespace ldm;
using ldm::test::ldm_run;
using ldm::test::Run;
using Catch::Contains;
using ldm::test::Reference;
using ldm::test::TmpPath;

namespace {


void expect_cli_error(const std::string& args, const std::string& message) {
  const Run r = ldm_run(args);
  INFO("ldm " << args << "\nstderr: " << r.err);
  CHECK(r.status == 1);  // an error we report, not a crash
  CHECK_THAT(r.err, Contains("error: ") && Contains(message));
}

// `ldm eval COMPONENT --device cuda --precision P` on `inputs`; each output against the case.
void check_eval(const std::string& component, const std::string& inputs, const std::string& precision,
                const Reference& ref, const std::string& case_name, const std::vector<std::string>& outputs) {
  TmpPath out(case_name + "_" + precision + "_out.safetensors");
  const Run r = ldm_run("eval " + component + " --model synthetic:sd15 --device cuda --precision " + precision +
                        " --inputs " + inputs + " --output " + out.path);
  INFO(r.err);
  REQUIRE(r.status == 0);
  CHECK_THAT(r.err, Contains("GPU peak memory"));
  SafeTensors got(out);
  const double tol = precision == "fp32" ? 1e-4 : 2e-2;
  for (const auto& name : outputs)
    ldm::test::require_close(got.load(name), ref.get(case_name, name), tol,
                             "ldm eval " + component + " " + precision + ": " + case_name + "." + name);
}

}  // namespace

TEST_CASE("ldm --device cuda: a clear error without a GPU; --precision needs --device cuda") {
  if (!cuda::available()) {
    const std::string why = "--device cuda: " + cuda::device_description();  // "no CUDA device (...)"
    expect_cli_error("generate --prompt cat --device cuda --width 64 --height 64", why);
    expect_cli_error("eval unet --device cuda --inputs /nonexistent.safetensors --output /tmp/x.safetensors", why);
  }
  expect_cli_error("generate --prompt cat --precision fp16", "is for --device cuda");
  expect_cli_error("eval vae-decode --precision bf16 --inputs /nonexistent.safetensors --output /tmp/x.safetensors",
               "is for --device cuda");
  const Run bad = ldm_run("generate --prompt cat --device tpu");
  CHECK(bad.status != 0);
  CHECK_THAT(bad.err, Contains("--device"));
}

TEST_CASE("ldm eval --device cuda: unet_32, vae_decode_32, vae_encode_256, clip_full in fp32 and fp16") {
  LDM_REQUIRE_REFERENCE(unet_path, "ref_unet_full.safetensors");
  LDM_REQUIRE_REFERENCE(vae_path, "ref_vae_full.safetensors");
  LDM_REQUIRE_REFERENCE(clip_path, "ref_clip_full.safetensors");
  Reference unet_ref(unet_path), vae_ref(vae_path), clip_ref(clip_path);
  TmpPath unet_in("cuda_unet_in.safetensors"), dec_in("cuda_dec_in.safetensors"), enc_in("cuda_enc_in.safetensors"),
      clip_in("cuda_clip_in.safetensors");
  {
    SafeTensorsWriter w;
    for (const char* name : {"sample", "timestep", "context"}) w.add(name, unet_ref.get("unet_32", name));
    w.save(unet_in);
  }
  {
    SafeTensorsWriter w;
    w.add("latent", vae_ref.get("vae_decode_32", "latent"));
    w.save(dec_in);
  }
  {
    SafeTensorsWriter w;
    w.add("image", vae_ref.get("vae_encode_256", "image"));
    w.save(enc_in);
  }
  {
    SafeTensorsWriter w;
    w.add_i64("input_ids", clip_ref.file.info("clip_full.input_ids").shape, clip_ref.file.load_i64("clip_full.input_ids"));
    w.save(clip_in);
  }
  if (!cuda::available()) return;
  for (const std::string precision : {"fp32", "fp16"}) {
    check_eval("unet", unet_in, precision, unet_ref, "unet_32", {"out"});
    check_eval("vae-decode", dec_in, precision, vae_ref, "vae_decode_32", {"image"});
    check_eval("vae-encode", enc_in, precision, vae_ref, "vae_encode_256", {"mean", "logvar"});
    check_eval("clip", clip_in, precision, clip_ref, "clip_full", {"last_hidden_state", "penultimate"});
  }
}

TEST_CASE("ldm generate --device cuda --precision fp16: a PNG and the GPU's peak memory in the summary") {
  LDM_REQUIRE_SHARED(tokenizer, "clip-tokenizer");
  if (!cuda::available()) return;
  TmpPath png("cuda_generate.png");
  const Run r = ldm_run("generate --model synthetic:sd15 --tokenizer " + tokenizer +
                        " --prompt \"a red mug\" --steps 4 --width 256 --height 256 --device cuda "
                        "--precision fp16 --output " +
                        png.path);
  INFO(r.err);
  REQUIRE(r.status == 0);
  CHECK_THAT(r.err, Contains("GPU peak memory") && Contains("cuda fp16"));
  const Tensor img = read_image(png.path);
  CHECK(img.shape() == Shape{1, 3, 256, 256});
}
