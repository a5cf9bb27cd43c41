// LoRA (lora.hpp, lora_tags.hpp): merged weights against diffusers' load_lora_weights +
// fuse_lora on the full-size synthetic SD1.5 U-Net and text encoder (three files: kohya with
// alpha, kohya rank 16 without, diffusers/PEFT; scripts/make_lora_reference.py; relative L2 <=
// 1e-4), and on models/ldm-shapes: a merged weight is exactly W + M (alpha / rank) up @ down,
// for linear and 3x3 conv LoRAs, with --fp16-weights too; every wrong file is refused naming its
// first offending key; prompt tags; the CLI.
#include <catch2/catch.hpp>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <nlohmann/json.hpp>

#include "cli_run.hpp"
#include "ldm/core/image.hpp"
#include "ldm/core/safetensors.hpp"
#include "ldm/core/sha256.hpp"
#include "ldm/core/synth.hpp"
#include "ldm/load.hpp"
#include "ldm/lora.hpp"
#include "ldm/lora_tags.hpp"
#include "ldm/train/parameter.hpp"
#include "reference.hpp"
#include "test_data.hpp"

using namespace ldm;
using ldm::test::data_path;
using Catch::Contains;
using ldm::test::TmpPath;

namespace {

const char* kShapes = "models/ldm-shapes";  // tests run in the source folder
const std::string kToQ = "down_blocks.0.attentions.0.transformer_blocks.0.attn1.to_q";  // [64, 64]
const std::string kConv = "down_blocks.0.resnets.0.conv1";                              // [64, 64, 3, 3]
const std::string kProjIn = "down_blocks.0.attentions.0.proj_in";                       // [64, 64, 1, 1]
const std::string kTeQ = "text_model.encoder.layers.0.self_attn.q_proj";                // [64, 64]

// A kohya LoRA for ldm-shapes: to_q (linear, rank 2, alpha 1), conv1 (3x3 LoCon, rank 3, no
// alpha), proj_in (1x1 conv) and the text encoder's q_proj.
void write_kohya(const std::string& path) {
  SafeTensorsWriter w;
  w.add("lora_unet_" + std::string("down_blocks_0_attentions_0_transformer_blocks_0_attn1_to_q") + ".lora_down.weight",
        synth::tensor("l.q.d", {2, 64}, 0, 0.2f));
  w.add("lora_unet_down_blocks_0_attentions_0_transformer_blocks_0_attn1_to_q.lora_up.weight",
        synth::tensor("l.q.u", {64, 2}, 0, 0.2f));
  w.add("lora_unet_down_blocks_0_attentions_0_transformer_blocks_0_attn1_to_q.alpha", Tensor::full({}, 1.0f));
  w.add("lora_unet_down_blocks_0_resnets_0_conv1.lora_down.weight", synth::tensor("l.c.d", {3, 64, 3, 3}, 0, 0.1f));
  w.add("lora_unet_down_blocks_0_resnets_0_conv1.lora_up.weight", synth::tensor("l.c.u", {64, 3, 1, 1}, 0, 0.1f));
  w.add("lora_unet_down_blocks_0_attentions_0_proj_in.lora_down.weight", synth::tensor("l.p.d", {2, 64, 1, 1}, 0, 0.2f));
  w.add("lora_unet_down_blocks_0_attentions_0_proj_in.lora_up.weight", synth::tensor("l.p.u", {64, 2, 1, 1}, 0, 0.2f));
  w.add("lora_te_text_model_encoder_layers_0_self_attn_q_proj.lora_down.weight", synth::tensor("l.t.d", {4, 64}, 0, 0.2f));
  w.add("lora_te_text_model_encoder_layers_0_self_attn_q_proj.lora_up.weight", synth::tensor("l.t.u", {64, 4}, 0, 0.2f));
  w.save(path);
}

const Tensor& weight_of(std::vector<Parameter>& ps, const std::string& name) {
  for (const Parameter& p : ps)
    if (p.name == name) return *p.value;
  FAIL("no parameter " << name);
  static Tensor none;
  return none;
}

// up @ down * scale, as the test computes it (double).
Tensor expected_delta(const Tensor& down, const Tensor& up, double scale, const Shape& target) {
  const int64_t r = down.dim(0), out = up.dim(0), in = down.numel() / r;
  Tensor d = Tensor::empty(target);
  for (int64_t o = 0; o < out; ++o)
    for (int64_t i = 0; i < in; ++i) {
      double s = 0;
      for (int64_t k = 0; k < r; ++k) s += double(up[o * r + k]) * double(down[k * in + i]);
      d[o * in + i] = float(s * scale);
    }
  return d;
}

double max_abs(const Tensor& a, const Tensor& b) {
  REQUIRE(a.shape() == b.shape());
  double m = 0;
  for (int64_t i = 0; i < a.numel(); ++i) m = std::max(m, double(std::abs(a[i] - b[i])));
  return m;
}

void expect_refused(const std::map<std::string, Tensor>& tensors, const std::string& message) {
  TmpPath f("bad_lora.safetensors");
  SafeTensorsWriter w;
  for (const auto& [k, t] : tensors) w.add(k, t);
  w.save(f.path);
  LoadOptions o;
  o.loras = {{f.path, 1.0, 1.0}};
  const ModelFiles files = open_model(kShapes);
  CHECK_THROWS_WITH(load_unet(files, o), Contains(message));
}

}  // namespace

TEST_CASE("lora: merged weights are W + M (alpha / rank) up @ down, linear and conv, fp32 and fp16", "[lora]") {
  TmpPath f("kohya.safetensors");
  write_kohya(f.path);
  const ModelFiles files = open_model(kShapes);
  UNet2DConditionModel base = load_unet(files);
  LoadOptions o;
  o.loras = {{f.path, 0.7, 0.5}};  // text encoder 0.7, U-Net 0.5
  UNet2DConditionModel merged = load_unet(files, o);
  std::vector<Parameter> pb = parameters_of(base), pm = parameters_of(merged);
  const SafeTensors lf(f.path);
  auto check = [&](const std::string& module, const std::string& kohya, double scale) {
    const Tensor& w0 = weight_of(pb, module + ".weight");
    const Tensor& w1 = weight_of(pm, module + ".weight");
    Tensor want = expected_delta(lf.load(kohya + ".lora_down.weight"), lf.load(kohya + ".lora_up.weight"), scale, w0.shape());
    want.vec() += w0.vec();
    CHECK(max_abs(w1, want) < 1e-6);
    CHECK(max_abs(w1, w0) > 1e-3);  // it did change
  };
  check(kToQ, "lora_unet_down_blocks_0_attentions_0_transformer_blocks_0_attn1_to_q", 0.5 * 1.0 / 2);  // alpha 1, rank 2
  check(kConv, "lora_unet_down_blocks_0_resnets_0_conv1", 0.5);                                         // no alpha: 1
  check(kProjIn, "lora_unet_down_blocks_0_attentions_0_proj_in", 0.5);
  CHECK(max_abs(weight_of(pm, "conv_in.weight"), weight_of(pb, "conv_in.weight")) == 0);  // untouched

  CLIPTextModel te0 = load_text_encoder(files), te1 = load_text_encoder(files, o);
  std::vector<Parameter> tb = parameters_of(te0, "text_model"), tm = parameters_of(te1, "text_model");
  Tensor want = expected_delta(lf.load("lora_te_text_model_encoder_layers_0_self_attn_q_proj.lora_down.weight"),
                               lf.load("lora_te_text_model_encoder_layers_0_self_attn_q_proj.lora_up.weight"), 0.7,
                               weight_of(tb, kTeQ + ".weight").shape());
  want.vec() += weight_of(tb, kTeQ + ".weight").vec();
  CHECK(max_abs(weight_of(tm, kTeQ + ".weight"), want) < 1e-6);

  // --fp16-weights: the merge happens before the fp16 conversion (the U-Net agrees to fp16's precision)
  o.fp16_weights = true;
  const UNet2DConditionModel half = load_unet(files, o);
  const Tensor x = synth::tensor("lora.x", {1, 4, 8, 8}), c = synth::tensor("lora.c", {1, 77, 64});
  const Tensor y32 = merged.forward(x, 500.0f, c), y16 = half.forward(x, 500.0f, c), y0 = base.forward(x, 500.0f, c);
  CHECK(ldm::test::rel_l2(y16, y32) < 2e-3);
  CHECK(ldm::test::rel_l2(y16, y0) > 10 * ldm::test::rel_l2(y16, y32));
}

TEST_CASE("lora: a diffusers/PEFT file gives the same merge as the kohya file of the same weights", "[lora]") {
  TmpPath k("kohya.safetensors"), p("peft.safetensors");
  SafeTensorsWriter wk, wp;
  const Tensor d = synth::tensor("peft.d", {3, 64, 3, 3}, 0, 0.1f), u = synth::tensor("peft.u", {64, 3, 1, 1}, 0, 0.1f);
  const Tensor td = synth::tensor("peft.td", {2, 64}, 0, 0.2f), tu = synth::tensor("peft.tu", {64, 2}, 0, 0.2f);
  wk.add("lora_unet_down_blocks_0_resnets_0_conv1.lora_down.weight", d);
  wk.add("lora_unet_down_blocks_0_resnets_0_conv1.lora_up.weight", u);
  wk.add("lora_te_text_model_encoder_layers_0_self_attn_q_proj.lora_down.weight", td);
  wk.add("lora_te_text_model_encoder_layers_0_self_attn_q_proj.lora_up.weight", tu);
  wp.add("unet." + kConv + ".lora_A.weight", d);
  wp.add("unet." + kConv + ".lora_B.weight", u);
  wp.add("text_encoder." + kTeQ + ".lora_A.weight", td);
  wp.add("text_encoder." + kTeQ + ".lora_B.weight", tu);
  wk.save(k.path);
  wp.save(p.path);
  const ModelFiles files = open_model(kShapes);
  LoadOptions ok, op;
  ok.loras = {{k.path, 0.9, 0.9}};
  op.loras = {{p.path, 0.9, 0.9}};
  UNet2DConditionModel a = load_unet(files, ok), b = load_unet(files, op);
  std::vector<Parameter> pa = parameters_of(a), pb = parameters_of(b);
  CHECK(max_abs(weight_of(pa, kConv + ".weight"), weight_of(pb, kConv + ".weight")) == 0);
  CLIPTextModel ta = load_text_encoder(files, ok), tb = load_text_encoder(files, op);
  std::vector<Parameter> qa = parameters_of(ta, "text_model"), qb = parameters_of(tb, "text_model");
  CHECK(max_abs(weight_of(qa, kTeQ + ".weight"), weight_of(qb, kTeQ + ".weight")) == 0);
}

TEST_CASE("lora: files for other models or in unknown layouts are refused, naming the first offending key", "[lora]") {
  const Tensor d = synth::tensor("bad.d", {2, 64}), u = synth::tensor("bad.u", {64, 2});
  expect_refused({{"lora_unet_input_blocks_4_1_proj_in.lora_down.weight", d}, {"lora_unet_input_blocks_4_1_proj_in.lora_up.weight", u}},
                 "lora_unet_input_blocks_4_1_proj_in");
  expect_refused({{"lora_te2_text_model_encoder_layers_0_mlp_fc1.lora_down.weight", d}}, "second text encoder");
  expect_refused({{"lora_unet_down_blocks_0_attentions_0_transformer_blocks_0_attn1_to_q.lora_down.weight", d},
                  {"lora_unet_down_blocks_0_attentions_0_transformer_blocks_0_attn1_to_q.lora_up.weight", u},
                  {"some_other_tensor", d}},
                 "some_other_tensor");
  expect_refused({{"lora_unet_down_blocks_9_attentions_0_proj_in.lora_down.weight", d},
                  {"lora_unet_down_blocks_9_attentions_0_proj_in.lora_up.weight", u}},
                 "lora_unet_down_blocks_9_attentions_0_proj_in names no weight of this model's unet");
  expect_refused({{"lora_unet_down_blocks_0_attentions_0_transformer_blocks_0_attn1_to_q.lora_down.weight",
                   synth::tensor("bad.wide", {2, 768})},
                  {"lora_unet_down_blocks_0_attentions_0_transformer_blocks_0_attn1_to_q.lora_up.weight", u}},
                 "a LoRA for another model?");
  expect_refused({{"unet." + kToQ + ".lora_A.weight", d}}, "no up (lora_up / lora_B) weight");
  expect_refused({{"unet." + kToQ + ".lora_A.weight", d}, {"unet." + kToQ + ".lora_B.weight", synth::tensor("bad.r", {64, 3})}},
                 "does not fit down");
}

TEST_CASE("lora: prompt tags <lora:NAME:M> are read as AUTOMATIC1111 reads them", "[lora]") {
  PromptLoras r = extract_lora_tags("a red circle <lora:shapes:0.8>, on black <lora:other> <hypernet:x:1>");
  CHECK(r.prompt == "a red circle , on black  <hypernet:x:1>");
  REQUIRE(r.tags.size() == 2);
  CHECK(r.tags[0].name == "shapes");
  CHECK(r.tags[0].text_encoder_multiplier == 0.8);
  CHECK(r.tags[0].unet_multiplier == 0.8);
  CHECK(r.tags[1].name == "other");
  CHECK(r.tags[1].unet_multiplier == 1.0);
  r = extract_lora_tags("<lora:a:0.5:1.5>x");
  CHECK(r.prompt == "x");
  CHECK(r.tags[0].text_encoder_multiplier == 0.5);
  CHECK(r.tags[0].unet_multiplier == 1.5);
  CHECK(extract_lora_tags("no tags (at:1.2)").prompt == "no tags (at:1.2)");
  CHECK_THROWS_WITH(extract_lora_tags("<lora:a:strong>"), Contains("'strong' is not a number"));
  CHECK_THROWS_WITH(extract_lora_tags("<lora:a:1:2:3>"), Contains("expected <lora:NAME>"));
}

TEST_CASE("lora: SHA-256 and the short hash AUTOMATIC1111 writes for a LoRA", "[lora]") {
  auto sha = [](const std::string& s) {
    Sha256 h;
    h.update(s.data(), s.size());
    return h.hex();
  };
  CHECK(sha("") == "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
  CHECK(sha("abc") == "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
  CHECK(sha("abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq") ==
        "248d6a61d20638b8e5c026930c3e6039a33ce45964ff2167f6ecedd419db06c1");
  Sha256 pieces;  // fed in uneven pieces, across block boundaries
  const std::string million(1000000, 'a');
  for (size_t i = 0; i < million.size(); i += 777) pieces.update(million.data() + i, std::min<size_t>(777, million.size() - i));
  CHECK(pieces.hex() == "cdc76e5c9914fb9281a1c7e284d73e67f1809a48a497200e046d39ccc7112cd0");
  // hashlib.sha256(file[8 + header length:]).hexdigest()[:12], as A1111's addnet hash
  CHECK(lora_short_hash(data_path("lora/kohya_r4_alpha.safetensors")) == "e8b2713372af");
  CHECK(lora_short_hash(data_path("lora/kohya_r16.safetensors")) == "c638f8dc0006");
  CHECK(lora_short_hash(data_path("lora/peft_r4.safetensors")) == "8d3683493ae0");
}

TEST_CASE("lora: ldm generate --lora FILE:M and <lora:NAME:M> in the prompt", "[lora][cli]") {
  TmpPath dir("lora_dir");
  std::filesystem::create_directories(dir.path);
  write_kohya(dir.path + "/shapes.safetensors");
  TmpPath a("a.png"), b("b.png"), c("c.png"), t("t.safetensors"), u("u.safetensors"), v("v.safetensors");
  const std::string common = "generate --model models/ldm-shapes --steps 3 --seed 5 ";
  const std::string prompt = "a large red circle at the top left on a black background";
  using ldm::test::ldm_run;
  REQUIRE(ldm_run(common + "--prompt \"" + prompt + "\" --output " + a.path + " --output-tensors " + t.path).status == 0);
  REQUIRE(ldm_run(common + "--prompt \"" + prompt + "\" --lora " + dir.path + "/shapes.safetensors:0.5 --output " + b.path +
                  " --output-tensors " + u.path).status == 0);
  REQUIRE(ldm_run(common + "--prompt \"" + prompt + " <lora:shapes:0.5>\" --lora-dir " + dir.path + " --output " + c.path +
                  " --output-tensors " + v.path).status == 0);
  const Tensor la = SafeTensors(t.path).load("latents"), lb = SafeTensors(u.path).load("latents"),
               lc = SafeTensors(v.path).load("latents");
  CHECK(max_abs(lb, lc) == 0);  // the tag (removed from the text) is the same LoRA
  CHECK(max_abs(la, lb) > 1e-4);
  const std::string hashes = "Lora hashes: \"shapes: " + lora_short_hash(dir.path + "/shapes.safetensors") + "\"";
  CHECK_THAT(read_png_text(b.path).at("parameters"), Contains(hashes));
  CHECK_THAT(read_png_text(c.path).at("parameters"), Contains(hashes) && Contains("<lora:shapes:0.5>"));
  CHECK_THAT(read_png_text(a.path).at("parameters"), !Contains("Lora hashes"));
  ldm::test::Run r = ldm_run(common + "--prompt \"x <lora:missing:1>\" --lora-dir " + dir.path + " --output " + a.path);
  CHECK(r.status != 0);
  CHECK_THAT(r.err, Contains("<lora:missing> names a LoRA that is not in --lora-dir"));
  r = ldm_run(common + "--prompt x --lora /nonexistent.safetensors:0.5 --output " + a.path);
  CHECK(r.status != 0);
  CHECK_THAT(r.err, Contains("--lora '/nonexistent.safetensors' does not exist"));
}

TEST_CASE("lora: three LoRA files on the SD1.5 U-Net and text encoder, as diffusers fuses them", "[lora][full]") {
  const std::string ref_path = data_path("lora_reference.safetensors");
  const SafeTensors ref(ref_path);
  const nlohmann::json cases = nlohmann::json::parse(ref.metadata().at("cases"));
  const Tensor sample = synth::tensor(ref.metadata().at("sample_key"), {1, 4, 8, 8});
  const Tensor context = synth::tensor(ref.metadata().at("context_key"), {1, 77, 768});
  const std::vector<int64_t> ids = ref.load_i64("input_ids");
  const ModelFiles files = open_model("synthetic:sd15");
  for (auto it = cases.begin(); it != cases.end(); ++it) {
    const std::string name = it.key();
    const double m = it.value().at("multiplier").get<double>();
    LoadOptions o;
    o.loras = {{data_path(it.value().at("file").get<std::string>()), m, m}};
    {
      const UNet2DConditionModel unet = load_unet(files, o);
      ldm::test::require_close(unet.forward(sample, 500.0f, context), ref.load(name + ".unet_out"), 1e-4,
                               name + ": U-Net output");
    }
    const CLIPTextModel te = load_text_encoder(files, o);
    ldm::test::require_close(te.forward(ids, 1).last_hidden_state, ref.load(name + ".last_hidden_state"), 1e-4,
                             name + ": text encoder output");
  }
}
