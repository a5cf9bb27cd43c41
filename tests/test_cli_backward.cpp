// `ldm eval <component>-backward` and `ldm train-step` as a user runs them, on tiny diffusers
// folders (synthetic weights, the configs of tests/data/grad_blocks.safetensors' model cases):
// outputs within 1e-5 relative L2 and every gradient (inputs, context, each parameter under its
// diffusers name) within 1e-4 of float64 torch autograd (scripts/make_grad_reference_models.py,
// scripts/make_train_step_reference.py), and wrong inputs end with a message naming the tensor.
#include <catch2/catch.hpp>
#include <cstdlib>
#include <deque>
#include <fstream>
#include <set>
#include <sstream>
#include <string>
#include <sys/wait.h>

#include "grad_reference.hpp"
#include "ldm/core/checkpoint.hpp"
#include "ldm/models/clip_text.hpp"
#include "ldm/models/unet.hpp"
#include "ldm/models/vae.hpp"
#include "cli_run.hpp"
#include "tmp_path.hpp"

using namespace ldm;
using ldm::test::ldm_run;
using ldm::test::Run;
using Catch::Contains;
using ldm::test::get;
using ldm::test::grad_ref;
using ldm::test::kBlockGradTol;
using ldm::test::kBlockOutTol;
using ldm::test::require_close;
using ldm::test::grad_config;
using ldm::test::synthetic;
using ldm::test::TmpPath;

namespace {


// The tensors (names and shapes) of one component of a folder: those its parameters() lists.
template <typename M>
std::vector<TensorSpec> specs_of(M& m, const std::string& prefix = "") {
  std::vector<TensorSpec> r;
  for (const Parameter& p : parameters_of(m, prefix)) r.push_back({p.name, p.value->shape()});
  return r;
}

void write_config(const std::string& path, const nlohmann::json& j) {
  std::ofstream f(path);
  f << j.dump(2);
}

// A diffusers folder of synthetic weights (synth::param, as the reference's) with these configs.
void write_tiny_folder(const std::string& dir, const nlohmann::json& unet_cfg, const nlohmann::json& vae_cfg,
                       const nlohmann::json& clip_cfg) {
  auto unet = synthetic<UNet2DConditionModel>("", UNetConfig::from_json(unet_cfg));
  auto vae = synthetic<AutoencoderKL>("", VAEConfig::from_json(vae_cfg));
  auto clip = synthetic<CLIPTextModel>("text_model", CLIPTextConfig::from_json(clip_cfg));
  write_diffusers_folder(dir, {{Component::UNet, specs_of(unet), nullptr},
                               {Component::VAE, specs_of(vae), nullptr},
                               {Component::TextEncoder, specs_of(clip, "text_model"), nullptr}});
  write_config(dir + "/unet/config.json", unet_cfg);
  write_config(dir + "/vae/config.json", vae_cfg);
  write_config(dir + "/text_encoder/config.json", clip_cfg);
}


std::string args(const std::string& command, const std::string& model, const std::string& in, const std::string& out) {
  return command + " --model " + model + " --inputs " + in + " --output " + out;
}

// Writes the named tensors of reference case `c` (renamed: {file name, reference name}).
void write_inputs(const std::string& path, const std::string& c,
                  const std::vector<std::pair<std::string, std::string>>& names) {
  SafeTensorsWriter w;
  for (const auto& [name, ref] : names) w.add(name, get(c, ref));
  w.save(path);
}

// The output file's grad.<name> tensors other than `inputs`' gradients, as Parameters (value and
// grad both the file's gradient) for check_parameter_grads; `store` keeps the tensors.
std::vector<Parameter> parameter_grads(const SafeTensors& f, const std::set<std::string>& inputs, std::deque<Tensor>& store) {
  std::vector<Parameter> r;
  for (const std::string& n : f.names()) {
    if (n.rfind("grad.", 0) != 0 || inputs.count(n.substr(5))) continue;
    store.push_back(f.load(n));
    r.push_back({n.substr(5), &store.back(), &store.back()});
  }
  return r;
}

// Runs a backward component that must succeed; compares outputs (1e-5), input gradients and
// every parameter's gradient (1e-4) with reference case `c`.
void check_backward(const std::string& component, const std::string& model, const std::string& in, const std::string& c,
                    const std::vector<std::pair<std::string, std::string>>& outputs, const std::set<std::string>& input_grads) {
  TmpPath out(c + "_backward_out.safetensors");
  const Run r = ldm_run(args("eval " + component, model, in, out));
  INFO(r.err);
  REQUIRE(r.status == 0);
  const SafeTensors got(out);
  for (const auto& [name, ref] : outputs) require_close(got.load(name), get(c, ref), kBlockOutTol, c + "." + name);
  for (const std::string& g : input_grads)
    require_close(got.load("grad." + g), get(c, "grad." + g), kBlockGradTol, c + ".grad." + g);
  std::deque<Tensor> store;
  test::check_parameter_grads(c, parameter_grads(got, input_grads, store));
}

// The folder of configuration set `v` ("tiny" or "b") of the reference's models.
void write_folder(const std::string& dir, const std::string& v) {
  write_tiny_folder(dir, grad_config("unet_" + v), grad_config("vae_" + v + "_encode"), grad_config("clip_" + v));
}

}  // namespace

TEST_CASE("ldm eval unet-backward: out, grad.sample, grad.context and every parameter's gradient", "[cli][backward]") {
  for (const std::string v : {"tiny", "b"}) {
    TmpPath dir("backward_folder_" + v), in("unet_backward_in.safetensors");
    write_folder(dir, v);
    const std::string c = "unet_" + v;
    write_inputs(in, c, {{"sample", "sample"}, {"timestep", "timesteps"}, {"context", "context"}, {"grad_out", "grad_out"}});
    check_backward("unet-backward", dir, in, c, {{"out", "out"}}, {"sample", "context"});

    // The forward too takes the config's widths (unet_b: 3 channels, a 20-wide context), not SD1.5's.
    TmpPath out("unet_forward_out.safetensors");
    REQUIRE(ldm_run(args("eval unet", dir, in, out)).status == 0);
    require_close(SafeTensors(out).load("out"), get(c, "out"), kBlockOutTol, c + ": ldm eval unet");
  }
}

TEST_CASE("ldm eval vae-encode-backward and vae-decode-backward", "[cli][backward]") {
  for (const std::string v : {"tiny", "b"}) {
    TmpPath dir("backward_folder_" + v), enc_in("vae_encode_backward_in.safetensors"),
        dec_in("vae_decode_backward_in.safetensors");
    write_folder(dir, v);
    const std::string e = "vae_" + v + "_encode", d = "vae_" + v + "_decode";
    write_inputs(enc_in, e, {{"image", "image"}, {"grad_mean", "grad_mean"}, {"grad_logvar", "grad_logvar"}});
    check_backward("vae-encode-backward", dir, enc_in, e, {{"mean", "mean"}, {"logvar", "logvar"}}, {"image"});
    write_inputs(dec_in, d, {{"latent", "latent"}, {"grad_image", "grad_out"}});
    check_backward("vae-decode-backward", dir, dec_in, d, {{"image", "out"}}, {"latent"});
  }
}

TEST_CASE("ldm eval clip-backward: last_hidden_state and every text_model parameter's gradient", "[cli][backward]") {
  for (const std::string v : {"tiny", "b"}) {
    TmpPath dir("backward_folder_" + v), in("clip_backward_in.safetensors");
    write_folder(dir, v);
    const std::string c = "clip_" + v;
    SafeTensorsWriter w;
    w.add_i64("input_ids", grad_ref().file.info(c + ".input_ids").shape, grad_ref().file.load_i64(c + ".input_ids"));
    w.add("grad_last_hidden_state", get(c, "grad_last_hidden_state"));
    w.save(in);
    check_backward("clip-backward", dir, in, c, {{"last_hidden_state", "last_hidden_state"}}, {});
  }
}

// scripts/make_train_step_reference.py: diffusers' DDPMScheduler.add_noise (SD1.5 schedule),
// the tiny U-Net's prediction against the noise ("train_step") or, with prediction_type
// v_prediction in the folder's scheduler config, against get_velocity ("train_step_v"),
// F.mse_loss, float64 autograd; a few parameters' gradients.
TEST_CASE("ldm train-step: loss, noisy latents and gradients of the course's train_step", "[cli][backward]") {
  const std::string f = __FILE__;
  const test::Reference ref(f.substr(0, f.rfind('/')) + "/data/train_step_reference.safetensors");
  for (const std::string c : {"train_step", "train_step_v"}) {
    TmpPath dir("train_step_folder"), in("train_step_in.safetensors"), out("train_step_out.safetensors");
    write_tiny_folder(dir, ref.meta(c).at("config"), grad_config("vae_tiny_encode"), grad_config("clip_tiny"));
    write_config(dir.path + "/scheduler/scheduler_config.json", ref.meta(c).at("scheduler"));
    SafeTensorsWriter w;
    for (const char* name : {"latents", "noise", "context"}) w.add(name, ref.get(c, name));
    w.add_i64("timesteps", ref.file.info(c + ".timesteps").shape, ref.file.load_i64(c + ".timesteps"));
    w.save(in);
    const Run r = ldm_run(args("train-step", dir, in, out));
    INFO(r.err);
    REQUIRE(r.status == 0);
    const SafeTensors got(out);
    require_close(got.load("loss"), ref.get(c, "loss"), kBlockOutTol, c + ".loss");
    require_close(got.load("noisy_latents"), ref.get(c, "noisy_latents"), kBlockOutTol, c + ".noisy_latents");
    require_close(got.load("grad.context"), ref.get(c, "grad.context"), kBlockGradTol, c + ".grad.context");
    for (const std::string name : ref.meta(c).at("parameters"))
      require_close(got.load("grad." + name), ref.get(c, "grad." + name), kBlockGradTol, c + ".grad." + name);
    // Every U-Net parameter has its gradient in the file.
    auto unet = synthetic<UNet2DConditionModel>("", UNetConfig::from_json(ref.meta(c).at("config")));
    for (const Parameter& p : parameters_of(unet)) {
      INFO(p.name);
      CHECK(got.contains("grad." + p.name));
    }
  }
}

// Every error is found before a model is loaded, with the tensor or option at fault named.
TEST_CASE("ldm eval *-backward and ldm train-step: wrong inputs exit non-zero naming the tensor", "[cli][backward]") {
  TmpPath dir("backward_folder_errors"), in("backward_err_in.safetensors"), out("backward_err_out.safetensors");
  write_folder(dir, "tiny");
  const std::string c = "unet_tiny";
  auto write = [&](std::initializer_list<std::pair<const char*, Tensor>> tensors) {
    SafeTensorsWriter w;
    for (const auto& [name, t] : tensors) w.add(name, t);
    w.save(in);
  };
  const Tensor sample = get(c, "sample"), t = get(c, "timesteps"), ctx = get(c, "context");

  SECTION("unet-backward without grad_out, or with the wrong shape") {
    write({{"sample", sample}, {"timestep", t}, {"context", ctx}});
    Run r = ldm_run(args("eval unet-backward", dir, in, out));
    CHECK(r.status != 0);
    CHECK_THAT(r.err, Contains("has no tensor 'grad_out' (the gradient of the U-Net's output)"));
    write({{"sample", sample}, {"timestep", t}, {"context", ctx}, {"grad_out", Tensor({2, 4, 8, 8})}});
    r = ldm_run(args("eval unet-backward", dir, in, out));
    CHECK(r.status != 0);
    CHECK_THAT(r.err, Contains("tensor 'grad_out'") && Contains("must be [2, 4, 16, 16]") && Contains("got [2, 4, 8, 8]"));
  }
  SECTION("a context of SD1.5's width for a U-Net of another cross_attention_dim") {
    write({{"sample", sample}, {"timestep", t}, {"context", Tensor({2, 7, 768})}, {"grad_out", sample}});
    const Run r = ldm_run(args("eval unet-backward", dir, in, out));
    CHECK(r.status != 0);
    CHECK_THAT(r.err, Contains("tensor 'context' [2, 7, 768] does not fit sample") && Contains("expected [2, L, 32]"));
  }
  SECTION("--device cuda and --fp16-weights") {
    write({{"sample", sample}, {"timestep", t}, {"context", ctx}, {"grad_out", sample}});
    Run r = ldm_run(args("eval unet-backward", dir, in, out) + " --device cuda");
    CHECK(r.status != 0);
    CHECK_THAT(r.err, Contains("the backwards run on the CPU only"));
    r = ldm_run(args("eval unet-backward", dir, in, out) + " --fp16-weights");
    CHECK(r.status != 0);
    CHECK_THAT(r.err, Contains("a backward needs float32 weights"));
  }
  SECTION("vae-encode-backward without grad_logvar, vae-decode-backward with a wrong grad_image") {
    write({{"image", get("vae_tiny_encode", "image")}, {"grad_mean", get("vae_tiny_encode", "grad_mean")}});
    Run r = ldm_run(args("eval vae-encode-backward", dir, in, out));
    CHECK(r.status != 0);
    CHECK_THAT(r.err, Contains("no tensor 'grad_logvar'"));
    write({{"latent", get("vae_tiny_decode", "latent")}, {"grad_image", Tensor({1, 3, 16, 16})}});
    r = ldm_run(args("eval vae-decode-backward", dir, in, out));
    CHECK(r.status != 0);
    CHECK_THAT(r.err, Contains("tensor 'grad_image'") && Contains("must be [1, 3, 32, 32]"));
  }
  SECTION("clip-backward: more tokens than the position embedding has") {
    SafeTensorsWriter w;
    w.add_i64("input_ids", {1, 78}, std::vector<int64_t>(78, 5));
    w.add("grad_last_hidden_state", Tensor({1, 78, 64}));
    w.save(in);
    const Run r = ldm_run(args("eval clip-backward", dir, in, out));
    CHECK(r.status != 0);
    CHECK_THAT(r.err, Contains("tensor 'input_ids' should be [B, L] with B >= 1 and 1 <= L <= 77") &&
                          Contains("got [1, 78]"));
  }
  SECTION("train-step: a timestep outside the schedule, noise of another shape, no context") {
    const Tensor lat = get(c, "sample");
    write({{"latents", lat}, {"noise", lat}, {"timesteps", Tensor::full({2}, 1000.0f)}, {"context", ctx}});
    Run r = ldm_run(args("train-step", dir, in, out));
    CHECK(r.status != 0);
    CHECK_THAT(r.err, Contains("tensor 'timesteps'") && Contains("1000 at [0] is not a whole number in [0, 1000)"));
    write({{"latents", lat}, {"noise", Tensor({2, 4, 8, 8})}, {"timesteps", t}, {"context", ctx}});
    r = ldm_run(args("train-step", dir, in, out));
    CHECK(r.status != 0);
    CHECK_THAT(r.err, Contains("tensor 'noise'") && Contains("must be [2, 4, 16, 16]"));
    write({{"latents", lat}, {"noise", lat}, {"timesteps", t}});
    r = ldm_run(args("train-step", dir, in, out));
    CHECK(r.status != 0);
    CHECK_THAT(r.err, Contains("has no tensor 'context'"));
  }
}
