// `ldm eval` as a user runs it: each component of synthetic:sd15 on the inputs of a full-size
// reference case (written to a safetensors file the way a user would from PyTorch), its output
// file against diffusers/transformers (full size fp32: relative L2 <= 1e-4), and every wrong
// input (tensor name or shape, component, model) ends with a non-zero exit status and a
// message that names what is wrong.
#include <catch2/catch.hpp>
#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <limits>
#include <string>
#include <unistd.h>

#include "ldm/core/safetensors.hpp"
#include "ldm/core/synth.hpp"
#include "cli_run.hpp"
#include "reference.hpp"
#ifdef LDM_WITH_CUDA
#include "ldm/cuda/device_tensor.hpp"
#endif

using namespace ldm;
using Catch::Contains;
using ldm::test::ldm_run;
using ldm::test::Reference;
using ldm::test::Run;
using ldm::test::TmpPath;
namespace fs = std::filesystem;

namespace {

constexpr double kFullTol = 1e-4;  // full-size fp32 models (../shared/README.md)

// `ldm eval ARGS`.
Run ldm_eval(const std::string& args) { return ldm_run("eval " + args); }

std::string eval_args(const std::string& component, const std::string& inputs, const std::string& output,
                      const std::string& model = "synthetic:sd15") {
  return component + " --model " + model + " --inputs " + inputs + " --output " + output;
}

// Runs a component that must succeed and compares each named output with the reference case.
void check_eval(const std::string& component, const std::string& inputs, const Reference& ref, const std::string& case_name,
                const std::vector<std::string>& outputs) {
  TmpPath out(case_name + "_out.safetensors");
  const Run r = ldm_eval(eval_args(component, inputs, out));
  INFO(r.err);
  REQUIRE(r.status == 0);
  SafeTensors got(out);
  for (const auto& name : outputs)
    ldm::test::require_close(got.load(name), ref.get(case_name, name), kFullTol, "ldm eval " + component + ": " + case_name + "." + name);
}

}  // namespace

TEST_CASE("ldm eval clip: input_ids of ref_clip_full -> last_hidden_state, penultimate", "[full]") {
  LDM_REQUIRE_REFERENCE(path, "ref_clip_full.safetensors");
  Reference ref(path);
  TmpPath in("clip_in.safetensors");
  SafeTensorsWriter w;
  w.add_i64("input_ids", ref.file.info("clip_full.input_ids").shape, ref.file.load_i64("clip_full.input_ids"));
  w.save(in);
  check_eval("clip", in, ref, "clip_full", {"last_hidden_state", "penultimate"});
}

TEST_CASE("ldm eval vae-decode and vae-encode: vae_decode_32, vae_encode_256", "[full]") {
  LDM_REQUIRE_REFERENCE(path, "ref_vae_full.safetensors");
  Reference ref(path);
  TmpPath dec_in("vae_decode_in.safetensors"), enc_in("vae_encode_in.safetensors");
  {
    SafeTensorsWriter w;
    w.add("latent", ref.get("vae_decode_32", "latent"));
    w.save(dec_in);
  }
  {
    SafeTensorsWriter w;
    w.add("image", ref.get("vae_encode_256", "image"));
    w.save(enc_in);
  }
  check_eval("vae-decode", dec_in, ref, "vae_decode_32", {"image"});
  check_eval("vae-encode", enc_in, ref, "vae_encode_256", {"mean", "logvar"});
}

TEST_CASE("ldm eval unet: unet_32 (t = 1)", "[full]") {
  LDM_REQUIRE_REFERENCE(path, "ref_unet_full.safetensors");
  Reference ref(path);
  TmpPath in("unet_in.safetensors");
  SafeTensorsWriter w;
  for (const char* name : {"sample", "timestep", "context"}) w.add(name, ref.get("unet_32", name));
  w.save(in);
  check_eval("unet", in, ref, "unet_32", {"out"});
}

// Every error is found before a model is loaded, so these run in well under a second each.
TEST_CASE("ldm eval: wrong inputs, component or model exit non-zero with a message naming the problem") {
  TmpPath out("err_out.safetensors");
  const Tensor latent = Tensor::full({1, 4, 8, 8}, 0.1f);

  SECTION("an input tensor under another name") {
    TmpPath in("misnamed.safetensors");
    SafeTensorsWriter w;
    w.add("latents", latent);  // vae-decode reads 'latent'
    w.save(in);
    Run r = ldm_eval(eval_args("vae-decode", in, out));
    CHECK(r.status != 0);
    CHECK_THAT(r.err, Contains("no tensor 'latent'") && Contains(in.path));

    TmpPath ids("misnamed_ids.safetensors");
    SafeTensorsWriter wi;
    wi.add_i64("ids", {1, 77}, std::vector<int64_t>(77, 49407));  // clip reads 'input_ids'
    wi.save(ids);
    r = ldm_eval(eval_args("clip", ids, out));
    CHECK(r.status != 0);
    CHECK_THAT(r.err, Contains("no tensor 'input_ids'"));

    TmpPath unet_in("unet_no_context.safetensors");
    SafeTensorsWriter wu;
    wu.add("sample", latent);
    wu.add("timestep", Tensor::full({1}, 981.0f));
    wu.add("encoder_hidden_states", Tensor::full({1, 77, 768}, 0.0f));  // diffusers' name; eval reads 'context'
    wu.save(unet_in);
    r = ldm_eval(eval_args("unet", unet_in, out));
    CHECK(r.status != 0);
    CHECK_THAT(r.err, Contains("no tensor 'context'"));
  }
  SECTION("an input tensor of the wrong shape") {
    TmpPath in("misshaped.safetensors");
    SafeTensorsWriter w;
    w.add("latent", Tensor::full({1, 3, 8, 8}, 0.1f));  // an image where a latent belongs
    w.add("image", Tensor::full({1, 3, 20, 20}, 0.1f));  // not a multiple of 8
    w.add("sample", Tensor::full({4, 8, 8}, 0.1f));      // 3-d
    w.save(in);
    Run r = ldm_eval(eval_args("vae-decode", in, out));
    CHECK(r.status != 0);
    CHECK_THAT(r.err, Contains("'latent'") && Contains("[1, 3, 8, 8]"));
    r = ldm_eval(eval_args("vae-encode", in, out));
    CHECK(r.status != 0);
    CHECK_THAT(r.err, Contains("'image'") && Contains("[1, 3, 20, 20]"));
    r = ldm_eval(eval_args("unet", in, out));
    CHECK(r.status != 0);
    CHECK_THAT(r.err, Contains("'sample'") && Contains("4-d"));

    TmpPath ctx("bad_context.safetensors");
    SafeTensorsWriter wc;
    wc.add("sample", latent);
    wc.add("timestep", Tensor::full({1}, 981.0f));
    wc.add("context", Tensor::full({1, 77, 1024}, 0.0f));  // SD 2.x's OpenCLIP width
    wc.save(ctx);
    r = ldm_eval(eval_args("unet", ctx, out));
    CHECK(r.status != 0);
    CHECK_THAT(r.err, Contains("'context'") && Contains("[1, 77, 1024]") && Contains("768"));

    TmpPath ids("short_ids.safetensors");
    SafeTensorsWriter wi;
    wi.add_i64("input_ids", {1, 10}, std::vector<int64_t>(10, 49407));
    wi.save(ids);
    r = ldm_eval(eval_args("clip", ids, out));
    CHECK(r.status != 0);
    CHECK_THAT(r.err, Contains("'input_ids'") && Contains("[B, 77]") && Contains("[1, 10]"));
  }
  // A batch of 0 reached a division by zero (SIGFPE) in the first resnet block; a timestep of
  // shape [0] was read past its end.
  SECTION("an empty, non-finite or inconsistent input") {
    TmpPath in("bad_values.safetensors");
    auto expect = [&](const std::string& component, const std::vector<std::pair<std::string, Tensor>>& tensors,
                      const std::string& message) {
      SafeTensorsWriter w;
      for (const auto& [name, t] : tensors) w.add(name, t);
      w.save(in);
      const Run r = ldm_eval(eval_args(component, in, out));
      CHECK(r.status == 1);
      CHECK_THAT(r.err, Contains("error: ") && Contains(message));
    };
    const Tensor t1 = Tensor::full({1}, 981.0f), ctx = Tensor::full({1, 77, 768}, 0.0f);
    const float nan = std::numeric_limits<float>::quiet_NaN(), inf = std::numeric_limits<float>::infinity();
    expect("unet", {{"sample", Tensor::full({0, 4, 8, 8}, 0.0f)}, {"timestep", t1}, {"context", ctx}},
           "tensor 'sample' in '" + in.path + "' is empty: [0, 4, 8, 8]");
    expect("unet", {{"sample", latent}, {"timestep", Tensor::full({0}, 0.0f)}, {"context", ctx}},
           "tensor 'timestep' in '" + in.path + "' is empty: [0]");
    expect("unet", {{"sample", latent}, {"timestep", Tensor::full({3}, 1.0f)}, {"context", ctx}},
           "tensor 'timestep' [3] does not fit sample [1, 4, 8, 8]: expected [1]");
    expect("unet", {{"sample", latent}, {"timestep", Tensor::full({1}, nan)}, {"context", ctx}},
           "tensor 'timestep' in '" + in.path + "' holds NaN or infinite values");
    expect("unet", {{"sample", latent}, {"timestep", t1}, {"context", Tensor::full({1, 0, 768}, 0.0f)}},
           "tensor 'context' in '" + in.path + "' is empty: [1, 0, 768]");
    expect("unet", {{"sample", Tensor::full({1, 4, 8, 8}, inf)}, {"timestep", t1}, {"context", ctx}},
           "tensor 'sample' in '" + in.path + "' holds NaN or infinite values");
    expect("unet", {{"sample", Tensor::full({1, 4, 12, 12}, 0.0f)}, {"timestep", t1}, {"context", ctx}},
           "H and W multiples of 8, got [1, 4, 12, 12]");
    expect("vae-decode", {{"latent", Tensor::full({1, 4, 0, 8}, 0.0f)}}, "is empty: [1, 4, 0, 8]");
    expect("vae-decode", {{"latent", Tensor::full({1, 4, 8, 8}, nan)}}, "holds NaN or infinite values");
    expect("vae-encode", {{"image", Tensor::full({0, 3, 8, 8}, 0.0f)}}, "is empty: [0, 3, 8, 8]");
    expect("vae-encode", {{"image", Tensor::full({1, 3, 8, 8}, -inf)}}, "holds NaN or infinite values");

    for (int64_t id : {int64_t(-1), int64_t(49408), int64_t(1) << 40}) {
      std::vector<int64_t> ids(77, 49407);
      ids[5] = id;
      SafeTensorsWriter w;
      w.add_i64("input_ids", {1, 77}, ids);
      w.save(in);
      const Run r = ldm_eval(eval_args("clip", in, out));
      CHECK(r.status == 1);
      CHECK_THAT(r.err, Contains("id " + std::to_string(id) + " at [0, 5] is outside the vocabulary [0, 49408)"));
    }
    SafeTensorsWriter w;
    w.add_i64("input_ids", {0, 77}, {});
    w.save(in);
    const Run r = ldm_eval(eval_args("clip", in, out));
    CHECK(r.status == 1);
    CHECK_THAT(r.err, Contains("tensor 'input_ids' should be [B, 77] with B >= 1, got [0, 77]"));
  }
  SECTION("an output folder that does not exist, found before the model is opened") {
    TmpPath in("latent_for_output.safetensors");
    SafeTensorsWriter w;
    w.add("latent", latent);
    w.save(in);
    const std::string missing = out.path + "_missing/out.safetensors";
    const Run r = ldm_eval(eval_args("vae-decode", in, missing, "/nonexistent_model"));
    CHECK(r.status == 1);
    CHECK_THAT(r.err, Contains("--output '" + missing + "': its folder '" + out.path +
                               "_missing' cannot be used: No such file or directory"));
  }
  SECTION("an unknown component") {
    TmpPath in("latent.safetensors");
    SafeTensorsWriter w;
    w.add("latent", latent);
    w.save(in);
    const Run r = ldm_eval(eval_args("vae", in, out));
    CHECK(r.status != 0);
    CHECK_THAT(r.err, Contains("vae") && Contains("unet") && Contains("vae-decode") && Contains("clip"));
  }
  SECTION("a model folder that does not exist or is not a pipeline, an inputs file that does not exist") {
    TmpPath in("latent.safetensors");
    SafeTensorsWriter w;
    w.add("latent", latent);
    w.save(in);
    const std::string missing = "/tmp/ldm_test_eval_no_such_model_" + std::to_string(::getpid());
    Run r = ldm_eval(eval_args("vae-decode", in, out, missing));
    CHECK(r.status != 0);
    CHECK_THAT(r.err, Contains("no such file or folder") && Contains(missing));
    TmpPath empty("empty_model_folder");  // a folder, but not a pipeline
    fs::create_directories(empty.path);
    r = ldm_eval(eval_args("vae-decode", in, out, empty));
    CHECK(r.status != 0);
    CHECK_THAT(r.err, Contains("not a diffusers Stable Diffusion pipeline") && Contains(empty.path));
    r = ldm_eval(eval_args("vae-decode", missing + ".safetensors", out));
    CHECK(r.status != 0);
    CHECK_THAT(r.err, Contains(missing + ".safetensors"));
  }
  CHECK_FALSE(fs::exists(out.path));  // nothing written when the run fails
}

// Built with and without CUDA: `--device cuda` names what is missing, the CUDA build or the GPU
// (with both, tests/test_cuda_cli.cpp runs the real thing). Found before anything is read.
TEST_CASE("ldm eval --device cuda: a clear error without a CUDA build or without a GPU") {
#ifdef LDM_WITH_CUDA
  if (ldm::cuda::available()) return;
  const std::string expected = "--device cuda: no CUDA device";
#else
  const std::string expected = "this build has no CUDA: nvcc was not found when it was configured";
#endif
  const Run r = ldm_eval("unet --device cuda --precision fp16 --inputs /nonexistent.safetensors --output /tmp/x.safetensors");
  CHECK(r.status == 1);
  CHECK_THAT(r.err, Contains("error: ") && Contains(expected));
}

// --conv picks the CPU convolution algorithm (nn/conv_algo.hpp): each one gives the same image
// within the full-size tolerance (the VAE decoder's 3x3 convolutions at 8x8 .. 64x64 take F(2x2)
// under auto, F(4x4) with f43, the im2col GEMM with direct); an unknown name or --device cuda
// is refused before anything loads.
TEST_CASE("ldm eval --conv: every algorithm decodes the same image; wrong uses are refused") {
  TmpPath in("conv_in.safetensors");
  {
    SafeTensorsWriter w;
    w.add("latent", synth::tensor("test.latent", {1, 4, 8, 8}));
    w.save(in);
  }
  TmpPath ref_out("conv_auto.safetensors");
  REQUIRE(ldm_eval(eval_args("vae-decode", in, ref_out) + " --conv auto").status == 0);
  const Tensor ref = SafeTensors(ref_out).load("image");
  for (const char* algo : {"direct", "f23", "f43"}) {
    TmpPath out(std::string("conv_") + algo + ".safetensors");
    REQUIRE(ldm_eval(eval_args("vae-decode", in, out) + " --conv " + algo).status == 0);
    ldm::test::require_close(SafeTensors(out).load("image"), ref, kFullTol, std::string("vae-decode --conv ") + algo);
  }
  TmpPath out("conv_err.safetensors");
  Run r = ldm_eval(eval_args("vae-decode", in, out) + " --conv winograd");
  CHECK(r.status != 0);
  CHECK_THAT(r.err, Contains("--conv") && Contains("winograd"));
  r = ldm_eval(eval_args("vae-decode", in, out) + " --conv direct --device cuda");
  CHECK(r.status == 1);
  CHECK_THAT(r.err, Contains("error: --conv direct is for the CPU path"));
  CHECK_FALSE(fs::exists(out.path));
}

TEST_CASE("ldm eval clip --prompt: the prompt's chunks, weights and context as generate() encodes it") {
  TmpPath out("prompt.safetensors");
  const std::string model = "models/ldm-shapes";  // tests run in the source folder; its tokenizer/ and a 64-wide CLIP
  Run r = ldm_eval("clip --model " + model + " --prompt \"a large (red:1.5) circle BREAK on a [black] background\" "
                   "--output " + out.path);
  REQUIRE(r.status == 0);
  {
    const SafeTensors f(out.path);
    CHECK(f.info("input_ids").shape == Shape({2, 77}));
    CHECK(f.load("context").shape() == Shape({1, 154, 64}));
    const Tensor m = f.load("multipliers");  // [2, 77]: BOS, a, large, red (1.5), circle, EOS...
    REQUIRE(m.shape() == Shape({2, 77}));
    CHECK(m[3] == 1.5f);
    CHECK(m[0] == 1.0f);
    CHECK(m[77 + 3] == Approx(1 / 1.1));  // second chunk: BOS, on, a, black
  }
  r = ldm_eval("clip --model " + model + " --prompt \"a large (red:1.5) circle\" --prompt-syntax plain --output " +
               out.path);
  REQUIRE(r.status == 0);
  const SafeTensors f(out.path);
  CHECK(f.info("input_ids").shape == Shape({1, 77}));
  const Tensor m = f.load("multipliers");
  CHECK(std::all_of(m.begin(), m.end(), [](float v) { return v == 1.0f; }));

  r = ldm_eval("clip --model " + model + " --prompt \"a\" --inputs x.safetensors --output " + out.path);
  CHECK(r.status != 0);
  CHECK_THAT(r.err, Contains("either --inputs (token ids) or --prompt (text), not both"));
  r = ldm_eval("unet --model " + model + " --prompt \"a\" --output " + out.path);
  CHECK(r.status != 0);
  CHECK_THAT(r.err, Contains("--prompt goes with `ldm eval clip`"));
  r = ldm_eval("clip --model " + model + " --output " + out.path);
  CHECK(r.status != 0);
  CHECK_THAT(r.err, Contains("needs --inputs FILE (or, for clip, --prompt TEXT)"));
}
