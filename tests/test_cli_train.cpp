// `ldm train vae` and `ldm train unet` as scripts/train_ldm_shapes.sh runs them, a few steps at a
// tiny batch on the ldm-shapes configs (configs/ldm-shapes): every file a run leaves behind,
// a resumed run equal to the uninterrupted one bit for bit, and clear errors for a run folder
// that is not ready.
#include <catch2/catch.hpp>

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <string>

#include "cli_run.hpp"
#include "ldm/core/files.hpp"
#include "ldm/core/safetensors.hpp"
#include "tmp_path.hpp"

using ldm::test::ldm_run;
using ldm::test::Run;
using ldm::test::TmpPath;
namespace fs = std::filesystem;

namespace {

// A fresh run folder: a copy of the model's configs, as the training script makes one.
void new_run(const std::string& dir) {
  fs::remove_all(dir);
  fs::copy("configs/ldm-shapes", dir, fs::copy_options::recursive);
}

// Constant learning rate (no warm-up, no decay), so that a run of n steps continued to 2n is the
// run of 2n steps: the schedule does not depend on the total.
const std::string kConstantLr = " --warmup 0 --min-lr-ratio 1 --lr 1e-3 ";
const std::string kVae = "train vae --seed 3 --batch 2 --eval-images 4 --sample-every 2 --checkpoint-every 2 --dtype fp32" + kConstantLr;
const std::string kUnet = "train unet --seed 4 --batch 2 --latent-cache 8 --sample-count 2 --sample-steps 2 "
                          "--sample-every 2 --checkpoint-every 2 --dtype fp32" + kConstantLr;

void require_same_tensors(const std::string& a, const std::string& b) {
  const ldm::SafeTensors x(a), y(b);
  REQUIRE(x.names() == y.names());
  for (const std::string& n : x.names()) {
    INFO(n);
    const ldm::Tensor u = x.load(n), v = y.load(n);
    REQUIRE(u.shape() == v.shape());
    CHECK(std::equal(u.begin(), u.end(), v.begin()));
  }
}

}  // namespace

TEST_CASE("ldm train vae: weights, scaling_factor, loss log and curve, reconstructions; --resume continues exactly") {
  TmpPath a("train_vae_a"), b("train_vae_b");
  new_run(a.path);
  const Run r = ldm_run(kVae + "--run " + a.path + " --steps 4");
  REQUIRE(r.status == 0);
  CHECK_THAT(r.err, Catch::Contains("vae      4/4") && Catch::Contains("PSNR") && Catch::Contains("scaling_factor"));
  for (const char* f : {"vae/diffusion_pytorch_model.safetensors", "train/vae_checkpoint.safetensors",
                        "train/vae_loss.csv", "train/vae_loss.png", "train/vae_samples_000002.png",
                        "train/vae_samples_000004.png"})
    CHECK(fs::exists(a.path + "/" + f));
  const nlohmann::json cfg = ldm::read_json_file(a.path + "/vae/config.json", "vae config");
  CHECK(cfg.at("scaling_factor").get<double>() != 0.5);  // set from the latents' std
  std::ifstream csv(a.path + "/train/vae_loss.csv");
  int lines = 0;
  for (std::string l; std::getline(csv, l);) ++lines;
  CHECK(lines == 5);  // header + 4 steps

  // 2 steps, then --resume to 4: the same weights as 4 steps at once.
  new_run(b.path);
  REQUIRE(ldm_run(kVae + "--run " + b.path + " --steps 2").status == 0);
  const Run resumed = ldm_run(kVae + "--run " + b.path + " --steps 4 --resume");
  REQUIRE(resumed.status == 0);
  CHECK_THAT(resumed.err, Catch::Contains("resumed from") && Catch::Contains("at step 2"));
  require_same_tensors(a.path + "/vae/diffusion_pytorch_model.safetensors",
                       b.path + "/vae/diffusion_pytorch_model.safetensors");

  // The U-Net of the same run: its weights, the sample grid read back, and resume.
  fs::copy(a.path, b.path, fs::copy_options::recursive | fs::copy_options::overwrite_existing);
  const Run u = ldm_run(kUnet + "--run " + a.path + " --steps 4");
  REQUIRE(u.status == 0);
  CHECK_THAT(u.err, Catch::Contains("unet      4/4") && Catch::Contains("samples: background"));
  for (const char* f : {"unet/diffusion_pytorch_model.safetensors", "text_encoder/model.safetensors",
                        "train/unet_checkpoint.safetensors", "train/unet_loss.png", "train/unet_samples_000004.png"})
    CHECK(fs::exists(a.path + "/" + f));
  REQUIRE(ldm_run(kUnet + "--run " + b.path + " --steps 2").status == 0);
  REQUIRE(ldm_run(kUnet + "--run " + b.path + " --steps 4 --resume").status == 0);
  require_same_tensors(a.path + "/unet/diffusion_pytorch_model.safetensors",
                       b.path + "/unet/diffusion_pytorch_model.safetensors");
  require_same_tensors(a.path + "/text_encoder/model.safetensors", b.path + "/text_encoder/model.safetensors");

  // What a trained run folder is: a model `ldm generate` draws with.
  const Run g = ldm_run("generate --model " + a.path + " --prompt \"a red circle\" --steps 2 --output " + a.path +
                        "/out.png");
  REQUIRE(g.status == 0);
  CHECK_THAT(g.err, Catch::Contains("64x64, euler"));
}

TEST_CASE("ldm train vae --isotropy-weight: the penalty changes the encoder's training; the latent spectrum is reported") {
  TmpPath a("train_vae_iso_a"), b("train_vae_iso_b");
  new_run(a.path);
  new_run(b.path);
  const Run plain = ldm_run(kVae + "--run " + a.path + " --steps 2");
  const Run iso = ldm_run(kVae + "--run " + b.path + " --steps 2 --isotropy-weight 0.5");
  REQUIRE(plain.status == 0);
  REQUIRE(iso.status == 0);
  CHECK_THAT(iso.err, Catch::Contains("latent std along its principal directions") && Catch::Contains("effective)"));
  const ldm::SafeTensors pa(a.path + "/vae/diffusion_pytorch_model.safetensors"),
      pb(b.path + "/vae/diffusion_pytorch_model.safetensors");
  // The encoder saw the penalty's gradient: the weights part.
  const ldm::Tensor ea = pa.load("encoder.conv_in.weight"), eb = pb.load("encoder.conv_in.weight");
  CHECK_FALSE(std::equal(ea.begin(), ea.end(), eb.begin()));
  // One picture has no covariance across pictures: refused before training, with the fix.
  const Run one = ldm_run("train vae --run " + b.path + " --steps 1 --batch 1 --isotropy-weight 0.5");
  CHECK(one.status != 0);
  CHECK_THAT(one.err, Catch::Contains("--batch 2 or more"));
}

TEST_CASE("ldm train vae --decoder-only: the decoder learns, the encoder and scaling_factor stay as they were") {
  TmpPath run("train_vae_decoder");
  new_run(run.path);
  const std::string weights = run.path + "/vae/diffusion_pytorch_model.safetensors";
  Run r = ldm_run(kVae + "--run " + run.path + " --steps 2 --decoder-only");
  CHECK(r.status == 1);
  CHECK_THAT(r.err, Catch::Contains("does not exist: --decoder-only fine-tunes a trained VAE"));
  REQUIRE(ldm_run(kVae + "--run " + run.path + " --steps 2").status == 0);
  fs::copy_file(weights, run.path + "/before.safetensors");
  const double scaling_factor =
      ldm::read_json_file(run.path + "/vae/config.json", "vae config").at("scaling_factor").get<double>();

  r = ldm_run(kVae + "--run " + run.path + " --steps 2 --decoder-only");
  REQUIRE(r.status == 0);
  CHECK_THAT(r.err, Catch::Contains("the encoder frozen") && Catch::Contains("vae_decoder      2/2"));
  for (const char* f : {"train/vae_decoder_checkpoint.safetensors", "train/vae_decoder_loss.png",
                        "train/vae_decoder_samples_000002.png"})
    CHECK(fs::exists(run.path + "/" + f));
  CHECK(ldm::read_json_file(run.path + "/vae/config.json", "vae config").at("scaling_factor").get<double>() ==
        scaling_factor);
  const ldm::SafeTensors before(run.path + "/before.safetensors"), after(weights);
  REQUIRE(before.names() == after.names());
  int decoder_changed = 0, encoder_changed = 0;
  for (const std::string& n : before.names()) {
    const ldm::Tensor u = before.load(n), v = after.load(n);
    const bool same = std::equal(u.begin(), u.end(), v.begin());
    const bool decoder = n.rfind("decoder.", 0) == 0 || n.rfind("post_quant_conv.", 0) == 0;
    (decoder ? decoder_changed : encoder_changed) += !same;
  }
  CHECK(encoder_changed == 0);
  CHECK(decoder_changed > 0);

  // A second decoder stage under its own --name keeps the first one's checkpoint and log.
  const auto first_checkpoint = fs::last_write_time(run.path + "/train/vae_decoder_checkpoint.safetensors");
  r = ldm_run(kVae + "--run " + run.path + " --steps 2 --decoder-only --name vae_decoder2");
  REQUIRE(r.status == 0);
  CHECK_THAT(r.err, Catch::Contains("vae_decoder2      2/2"));
  for (const char* f : {"train/vae_decoder2_checkpoint.safetensors", "train/vae_decoder2_loss.png",
                        "train/vae_decoder2_samples_000002.png"})
    CHECK(fs::exists(run.path + "/" + f));
  CHECK(fs::last_write_time(run.path + "/train/vae_decoder_checkpoint.safetensors") == first_checkpoint);
  r = ldm_run(kVae + "--run " + run.path + " --steps 2 --decoder-only --name ../x");
  CHECK(r.status != 0);
  CHECK_THAT(r.err, Catch::Contains("--name takes lower-case letters"));

  // The U-Net's timestep options are checked before its (slow) latent cache is built.
  r = ldm_run(kUnet + "--run " + run.path + " --steps 1 --timestep-bias-strategy later --timestep-bias-portion 2");
  CHECK(r.status == 1);
  CHECK_THAT(r.err, Catch::Contains("--timestep-bias-portion must be in (0, 1]"));
  CHECK_THAT(r.err, !Catch::Contains("encoding the dataset"));
}

TEST_CASE("ldm train: a run folder that is not ready gets a clear error") {
  TmpPath run("train_errors");
  fs::create_directories(run.path);
  Run r = ldm_run("train vae --run " + run.path + " --steps 1");
  CHECK(r.status == 1);
  CHECK_THAT(r.err, Catch::Contains("has no vae/config.json") && Catch::Contains("cp -r configs/ldm-shapes"));
  new_run(run.path);
  r = ldm_run("train unet --run " + run.path + " --steps 1");
  CHECK(r.status == 1);
  CHECK_THAT(r.err, Catch::Contains("train the VAE first"));
  r = ldm_run("train vae --run " + run.path + " --steps 1 --resume");
  CHECK(r.status == 1);
  CHECK_THAT(r.err, Catch::Contains("--resume: no checkpoint"));
}

TEST_CASE("ldm train unet --init-from: a fine-tune starts from the model's weights, under its own names") {
  TmpPath run("train_unet_finetune");
  new_run(run.path);
  for (const char* f : {"config.json", "diffusion_pytorch_model.safetensors"})
    fs::copy_file("models/ldm-shapes/vae/" + std::string(f), run.path + "/vae/" + f,
                  fs::copy_options::overwrite_existing);
  // lr 0: the weights written at the end are the model's own (EMA of unchanging weights).
  const std::string finetune = "train unet --seed 4 --batch 2 --latent-cache 8 --sample-count 2 --sample-steps 2 "
                               "--sample-every 2 --checkpoint-every 2 --dtype fp32 --warmup 0 --lr 0 --steps 2 --run " +
                               run.path;
  Run r = ldm_run(finetune + " --init-from " + run.path + "/vae");
  CHECK(r.status == 1);
  CHECK_THAT(r.err, Catch::Contains("unet/diffusion_pytorch_model.safetensors' does not exist: give a model folder"));
  CHECK_THAT(r.err, !Catch::Contains("encoding the dataset"));  // said before the latent cache is built

  r = ldm_run(finetune + " --init-from models/ldm-shapes");
  REQUIRE(r.status == 0);
  CHECK_THAT(r.err, Catch::Contains("unet_finetune      2/2") && Catch::Contains("samples: background"));
  for (const char* f : {"train/unet_finetune_checkpoint.safetensors", "train/unet_finetune_loss.png",
                        "train/unet_finetune_samples_000002.png"})
    CHECK(fs::exists(run.path + "/" + f));
  CHECK(!fs::exists(run.path + "/train/unet_checkpoint.safetensors"));
  for (const char* part : {"unet/diffusion_pytorch_model.safetensors", "text_encoder/model.safetensors"}) {
    const ldm::SafeTensors model("models/ldm-shapes/" + std::string(part)), tuned(run.path + "/" + part);
    REQUIRE(model.names() == tuned.names());
    double worst = 0;  // |tuned - model| / max |model| over each tensor
    for (const std::string& n : model.names()) {
      const ldm::Tensor u = model.load(n), v = tuned.load(n);
      REQUIRE(u.shape() == v.shape());
      double diff = 0, scale = 1e-30;
      for (int64_t i = 0; i < u.numel(); ++i)
        diff = std::max(diff, double(std::abs(u[i] - v[i]))), scale = std::max(scale, double(std::abs(u[i])));
      worst = std::max(worst, diff / scale);
    }
    INFO(part);
    CHECK(worst < 1e-6);
  }
}
