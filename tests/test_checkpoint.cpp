// Checkpoint loading: the single-file <-> diffusers name rules are a bijection on every SD1.5
// tensor (../shared/reference/sd15_keys.json), written checkpoints (single file and diffusers
// folder, F32 and F16) load back to the synthetic values, problems are reported by name, and
// every wrong input gets an error that says what was found and what is expected.
#include <catch2/catch.hpp>
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <map>
#include <set>
#include <string>
#include <unistd.h>

#include "ldm/core/checkpoint.hpp"
#include "ldm/core/half.hpp"
#include "ldm/load.hpp"
#include "ldm/models/clip_tokenizer.hpp"
#include "reference.hpp"
#include "tmp_path.hpp"

using namespace ldm;
using Catch::Contains;
namespace fs = std::filesystem;

namespace {

const Component kComponents[] = {Component::UNet, Component::VAE, Component::TextEncoder};

using ldm::test::TmpPath;
using ldm::test::Timer;

void write_bytes(const std::string& path, const std::string& bytes) {
  std::ofstream f(path, std::ios::binary);
  f << bytes;
}

double file_mb(const std::string& path) { return double(fs::file_size(path)) / (1 << 20); }

std::vector<TensorSpec> key_list(const std::string& json, Component c) { return read_key_list(json, c); }

// The tensors of at most 256K numbers (every kind of name: norms, biases, 1x1 convs, time
// embedding, ...): 459 of the U-Net's 686 tensors at 0.9% of its bytes.
std::vector<TensorSpec> small_tensors(const std::string& json, Component c) {
  std::vector<TensorSpec> r;
  for (auto& t : key_list(json, c))
    if (numel_of(t.shape) <= (1 << 18)) r.push_back(t);
  return r;
}

// Loads every tensor of `specs` through a WeightStore, as a model does, and checks it is
// synth::param(name, shape), rounded to fp16 when the file is F16 (so: exact either way).
// Returns the largest relative L2 error against the fp32 values (the fp16 rounding error).
double check_loads_synthetic(const std::shared_ptr<const WeightSource>& source, const std::vector<TensorSpec>& specs,
                             DType dtype) {
  WeightStore w(source);
  double worst = 0;
  for (const auto& s : specs) {
    const Tensor got = w.get(s.name, s.shape);
    const Tensor want = synth::param(s.name, s.shape);
    REQUIRE(got.shape() == want.shape());
    const bool fp16 = dtype == DType::F16;
    const int64_t n = want.numel();
    int64_t bad = 0;
    double num = 0, den = 0;
#pragma omp parallel for reduction(+ : bad, num, den) if (n > (1 << 16))
    for (int64_t i = 0; i < n; ++i) {
      const float expected = fp16 ? fp16_to_float(float_to_fp16(want[i])) : want[i];
      bad += got[i] != expected;
      const double d = double(got[i]) - double(want[i]);
      num += d * d;
      den += double(want[i]) * double(want[i]);
    }
    if (bad) FAIL_CHECK(s.name << ": " << bad << " of " << n << " values differ from synth::param\n"
                               << ldm::test::mismatch_report(got, want, 0, 0));
    worst = std::max(worst, std::sqrt(num / den));
  }
  w.finish(/*check_unexpected=*/true);  // nothing missing, nothing left over (extras are ignored)
  return worst;
}

size_t count_numbers(const std::vector<TensorSpec>& specs) {
  size_t n = 0;
  for (const auto& s : specs) n += size_t(numel_of(s.shape));
  return n;
}

}  // namespace

TEST_CASE("checkpoint names: the conversion script's rules on known names") {
  const std::pair<const char*, const char*> unet[] = {
      {"conv_in.weight", "input_blocks.0.0.weight"},
      {"time_embedding.linear_2.bias", "time_embed.2.bias"},
      {"down_blocks.0.resnets.1.time_emb_proj.weight", "input_blocks.2.0.emb_layers.1.weight"},
      {"down_blocks.1.attentions.0.proj_in.weight", "input_blocks.4.1.proj_in.weight"},
      {"down_blocks.2.downsamplers.0.conv.weight", "input_blocks.9.0.op.weight"},
      {"down_blocks.3.resnets.1.conv2.bias", "input_blocks.11.0.out_layers.3.bias"},
      {"mid_block.resnets.1.norm1.weight", "middle_block.2.in_layers.0.weight"},
      {"mid_block.attentions.0.transformer_blocks.0.norm1.weight", "middle_block.1.transformer_blocks.0.norm1.weight"},
      {"up_blocks.0.upsamplers.0.conv.weight", "output_blocks.2.1.conv.weight"},
      {"up_blocks.1.upsamplers.0.conv.bias", "output_blocks.5.2.conv.bias"},
      {"up_blocks.3.resnets.2.conv_shortcut.weight", "output_blocks.11.0.skip_connection.weight"},
      {"up_blocks.3.attentions.2.transformer_blocks.0.ff.net.0.proj.weight",
       "output_blocks.11.1.transformer_blocks.0.ff.net.0.proj.weight"},
      {"conv_norm_out.bias", "out.0.bias"},
  };
  const std::pair<const char*, const char*> vae[] = {
      {"encoder.down_blocks.1.resnets.0.conv_shortcut.weight", "encoder.down.1.block.0.nin_shortcut.weight"},
      {"encoder.down_blocks.2.downsamplers.0.conv.weight", "encoder.down.2.downsample.conv.weight"},
      {"decoder.up_blocks.0.resnets.2.norm1.bias", "decoder.up.3.block.2.norm1.bias"},
      {"decoder.up_blocks.2.upsamplers.0.conv.weight", "decoder.up.1.upsample.conv.weight"},
      {"decoder.mid_block.resnets.0.conv2.weight", "decoder.mid.block_1.conv2.weight"},
      {"encoder.mid_block.attentions.0.group_norm.bias", "encoder.mid.attn_1.norm.bias"},
      {"encoder.mid_block.attentions.0.to_out.0.weight", "encoder.mid.attn_1.proj_out.weight"},
      {"decoder.conv_norm_out.weight", "decoder.norm_out.weight"},
      {"post_quant_conv.weight", "post_quant_conv.weight"},
  };
  for (const auto& p : unet) {
    const std::string file = std::string("model.diffusion_model.") + p.second;
    CHECK(single_file_name(Component::UNet, p.first) == file);
    Component c;
    std::string back;
    REQUIRE(diffusers_name(file, &c, &back));
    CHECK(c == Component::UNet);
    CHECK(back == p.first);
  }
  for (const auto& p : vae) {
    const std::string file = std::string("first_stage_model.") + p.second;
    CHECK(single_file_name(Component::VAE, p.first) == file);
    Component c;
    std::string back;
    REQUIRE(diffusers_name(file, &c, &back));
    CHECK(c == Component::VAE);
    CHECK(back == p.first);
  }
  CHECK(single_file_name(Component::TextEncoder, "text_model.final_layer_norm.weight") ==
        "cond_stage_model.transformer.text_model.final_layer_norm.weight");
  CHECK(is_vae_attention_projection("decoder.mid_block.attentions.0.to_v.weight"));
  CHECK_FALSE(is_vae_attention_projection("decoder.mid_block.attentions.0.to_v.bias"));
  // What real files carry besides the three models is no component's.
  for (const char* extra : {"betas", "alphas_cumprod", "model_ema.decay", "model_ema.diffusion_modelinput_blocks00weight",
                            "cond_stage_model.transformer.text_model.embeddings.position_ids", "logvar"})
    CHECK_FALSE(diffusers_name(extra, nullptr, nullptr));
}

TEST_CASE("checkpoint names: a bijection on every SD1.5 tensor of sd15_keys.json, shapes included") {
  LDM_REQUIRE_REFERENCE(path, "sd15_keys.json");
  std::ifstream f(path);
  const nlohmann::json keys = nlohmann::json::parse(f);
  std::map<std::string, Shape> single;
  for (const auto& kv : keys["single_file"].items()) single[kv.key()] = kv.value().get<Shape>();

  // diffusers -> single file: each name lands on a distinct single-file tensor of the right shape.
  std::set<std::string> hit;
  size_t total = 0;
  for (Component c : kComponents) {
    for (const auto& t : read_key_list(path, c)) {
      ++total;
      const std::string sf = single_file_name(c, t.name);
      INFO(component_name(c) << " " << t.name << " -> " << sf);
      REQUIRE(single.count(sf));
      Shape want = t.shape;
      if (c == Component::VAE && is_vae_attention_projection(t.name)) want = {t.shape[0], t.shape[1], 1, 1};
      CHECK(single[sf] == want);
      CHECK(hit.insert(sf).second);
    }
  }
  CHECK(total == single.size());
  CHECK(hit.size() == single.size());  // onto: every single-file tensor is some diffusers tensor

  // single file -> diffusers: each name comes back to the component and name it came from.
  std::map<Component, std::map<std::string, Shape>> diff;
  for (Component c : kComponents)
    for (const auto& t : read_key_list(path, c)) diff[c][t.name] = t.shape;
  for (const auto& kv : single) {
    Component c;
    std::string name;
    INFO(kv.first);
    REQUIRE(diffusers_name(kv.first, &c, &name));
    REQUIRE(diff[c].count(name));
    CHECK(single_file_name(c, name) == kv.first);
  }
  std::printf("  name rules: %zu tensors (unet %zu, vae %zu, text_encoder %zu), bijective, shapes match\n", total,
              diff[Component::UNet].size(), diff[Component::VAE].size(), diff[Component::TextEncoder].size());
}

TEST_CASE("checkpoint: a written single file loads back, F32 exact and F16 rounded (VAE, CLIP, U-Net small tensors)") {
  LDM_REQUIRE_REFERENCE(keys, "sd15_keys.json");
  const std::vector<TensorSpec> vae = key_list(keys, Component::VAE), clip = key_list(keys, Component::TextEncoder),
                                unet = small_tensors(keys, Component::UNet);
  for (DType dtype : {DType::F32, DType::F16}) {
    DYNAMIC_SECTION(dtype_name(dtype)) {
      TmpPath file(std::string("single_") + dtype_name(dtype) + ".safetensors");
      Timer tw;
      write_single_file(file, {{Component::UNet, unet, nullptr}, {Component::VAE, vae, nullptr}, {Component::TextEncoder, clip, nullptr}},
                        dtype);
      const double write_s = tw.seconds();

      Timer tl;
      const ModelFiles m = open_model(file);
      CHECK_THAT(m.description, Contains("single-file checkpoint") && Contains(dtype_name(dtype)));
      CHECK(m.unet_config.empty());  // SD1.5 defaults
      CHECK(m.tokenizer_dir.empty());
      double worst = 0;
      worst = std::max(worst, check_loads_synthetic(m.vae, vae, dtype));
      worst = std::max(worst, check_loads_synthetic(m.text_encoder, clip, dtype));
      worst = std::max(worst, check_loads_synthetic(m.unet, unet, dtype));
      const double load_s = tl.seconds();
      if (dtype == DType::F32) CHECK(worst == 0);
      else CHECK(worst < 1e-3);  // fp16 keeps 11 significant bits: 2^-11 = 4.9e-4 relative at most
      std::printf("  single file %s: %zu tensors, %.1f M numbers, %.0f MB: write %.2f s, load+check %.2f s, "
                  "max rel L2 vs fp32 %.2e\n",
                  dtype_name(dtype), vae.size() + clip.size() + unet.size(),
                  double(count_numbers(vae) + count_numbers(clip) + count_numbers(unet)) / 1e6, file_mb(file), write_s,
                  load_s, worst);
    }
  }
}

TEST_CASE("checkpoint: a written diffusers folder (fp16 variant) loads back with its configs") {
  LDM_REQUIRE_REFERENCE(keys, "sd15_keys.json");
  // Names pass through unchanged here, so the small tensors of each component suffice.
  const std::vector<TensorSpec> vae = small_tensors(keys, Component::VAE),
                                clip = small_tensors(keys, Component::TextEncoder),
                                unet = small_tensors(keys, Component::UNet);
  TmpPath dir("diffusers_fp16");
  Timer tw;
  write_diffusers_folder(dir, {{Component::UNet, unet, nullptr}, {Component::VAE, vae, nullptr}, {Component::TextEncoder, clip, nullptr}},
                         DType::F16, "fp16");
  const double write_s = tw.seconds();
  REQUIRE(fs::exists(dir.path + "/unet/diffusion_pytorch_model.fp16.safetensors"));
  REQUIRE(fs::exists(dir.path + "/text_encoder/model.fp16.safetensors"));

  Timer tl;
  const ModelFiles m = open_model(dir);  // no variant asked: the fp16 files are all there is
  CHECK_THAT(m.description, Contains("diffusers folder") && Contains("F16"));
  CHECK(m.unet_config.at("cross_attention_dim") == 768);
  CHECK(m.vae_config.at("scaling_factor") == Approx(0.18215));
  CHECK(m.text_encoder_config.at("hidden_act") == "quick_gelu");
  CHECK(m.scheduler_config.at("_class_name") == "PNDMScheduler");
  CHECK(m.tokenizer_dir.empty());
  double worst = std::max({check_loads_synthetic(m.vae, vae, DType::F16),
                           check_loads_synthetic(m.text_encoder, clip, DType::F16),
                           check_loads_synthetic(m.unet, unet, DType::F16)});
  CHECK(worst < 1e-3);
  std::printf("  diffusers folder F16: %.1f M numbers: write %.2f s, load+check %.2f s, max rel L2 vs fp32 %.2e\n",
              double(count_numbers(vae) + count_numbers(clip) + count_numbers(unet)) / 1e6, write_s, tl.seconds(), worst);

  // With a tokenizer folder, it is found; with variant fp16 asked, the same files open.
  fs::create_directories(dir.path + "/tokenizer");
  write_bytes(dir.path + "/tokenizer/vocab.json", "{}");
  write_bytes(dir.path + "/tokenizer/merges.txt", "");
  CHECK(open_model(dir, "fp16").tokenizer_dir == dir.path + "/tokenizer");
}

TEST_CASE("checkpoint: missing, mis-shaped and unexpected tensors are reported by name") {
  TmpPath file("broken_vae.safetensors");
  // A VAE fragment as a single file: conv_out written at the wrong width, post_quant_conv
  // left out, one tensor the model does not know.
  const std::vector<TensorSpec> written = {
      {"decoder.conv_in.weight", {512, 4, 3, 3}},
      {"decoder.mid_block.attentions.0.to_q.weight", {512, 512}},
      {"decoder.mid_block.attentions.0.to_q.bias", {512}},
      {"decoder.conv_out.weight", {3, 64, 3, 3}},
      {"decoder.extra.weight", {2}},
  };
  write_single_file(file, {{Component::VAE, written, nullptr}});
  auto st = std::make_shared<const SafeTensors>(file.path);
  CHECK(st->info("first_stage_model.decoder.mid.attn_1.q.weight").shape == Shape{512, 512, 1, 1});  // a 1x1 conv

  auto vae = std::make_shared<SingleFileSource>(st, Component::VAE);
  WeightStore w(vae);
  const Tensor q = w.get("decoder.mid_block.attentions.0.to_q.weight", {512, 512});  // reshaped to Linear
  CHECK(q.shape() == Shape{512, 512});
  CHECK(q[12345] == synth::param("decoder.mid_block.attentions.0.to_q.weight", {512, 512})[12345]);
  w.get("decoder.conv_in.weight", {512, 4, 3, 3});
  w.get("decoder.mid_block.attentions.0.to_q.bias", {512});
  w.get("decoder.conv_out.weight", {3, 128, 3, 3});
  w.get("post_quant_conv.weight", {4, 4, 1, 1});
  CHECK_THROWS_WITH(w.finish(), Contains("1 missing") && Contains("post_quant_conv.weight [4, 4, 1, 1]") &&
                                    Contains("decoder.conv_out.weight: file has [3, 64, 3, 3], model expects [3, 128, 3, 3]") &&
                                    Contains(file.path));
  // Unexpected: only the unknown tensor, not the extras every real file carries (betas, model_ema.*, ...).
  try {
    w.finish(true);
    FAIL("finish(true) should have thrown");
  } catch (const Error& e) {
    const std::string msg = e.what();
    CHECK_THAT(msg, Contains("1 unexpected") && Contains("decoder.extra.weight"));
    CHECK_THAT(msg, !Contains("betas") && !Contains("model_ema") && !Contains("position_ids"));
  }
}

TEST_CASE("checkpoint: names older files use (diffusers VAE query/key/value, CLIP without text_model.)") {
  TmpPath vae_file("old_vae.safetensors"), sf_file("old_clip.safetensors");
  const Tensor w8 = synth::param("w", {8, 8}), b8 = synth::param("b", {8});
  {
    SafeTensorsWriter w;
    w.add("decoder.mid_block.attentions.0.query.weight", w8);
    w.add("decoder.mid_block.attentions.0.proj_attn.bias", b8);
    w.add("decoder.mid_block.attentions.0.group_norm.weight", b8);
    w.save(vae_file);
  }
  DiffusersFileSource vae(std::make_shared<const SafeTensors>(vae_file.path), Component::VAE);
  CHECK(vae.has("decoder.mid_block.attentions.0.to_q.weight"));
  CHECK(vae.has("decoder.mid_block.attentions.0.to_out.0.bias"));
  CHECK(vae.load("decoder.mid_block.attentions.0.to_q.weight", {8, 8})[7] == w8[7]);
  auto names = vae.names();
  CHECK(std::set<std::string>(names.begin(), names.end()) ==
        std::set<std::string>{"decoder.mid_block.attentions.0.to_q.weight", "decoder.mid_block.attentions.0.to_out.0.bias",
                              "decoder.mid_block.attentions.0.group_norm.weight"});
  {
    SafeTensorsWriter w;
    w.add("cond_stage_model.transformer.embeddings.token_embedding.weight", w8);
    w.add_i64("cond_stage_model.transformer.embeddings.position_ids", {1, 3}, {0, 1, 2});
    w.save(sf_file);
  }
  SingleFileSource clip(std::make_shared<const SafeTensors>(sf_file.path), Component::TextEncoder);
  CHECK(clip.has("text_model.embeddings.token_embedding.weight"));
  CHECK(clip.load("text_model.embeddings.token_embedding.weight", {8, 8})[3] == w8[3]);
  CHECK(clip.names() == std::vector<std::string>{"text_model.embeddings.token_embedding.weight"});  // position_ids skipped

  // A VAE-only file (vae-ft-mse-840000-ema-pruned.safetensors style): original names, no prefix.
  TmpPath vae_only("vae_only.safetensors");
  {
    SafeTensorsWriter w;
    w.add("decoder.mid.attn_1.k.weight", w8.reshape({8, 8, 1, 1}));
    w.add("decoder.up.0.block.1.norm1.bias", b8);
    w.add("model_ema.decay", Tensor::full({}, 0.9999f));
    w.save(vae_only);
  }
  SingleFileSource ft(std::make_shared<const SafeTensors>(vae_only.path), Component::VAE, "");
  CHECK(ft.shape("decoder.mid_block.attentions.0.to_k.weight") == Shape{8, 8});
  CHECK(ft.load("decoder.mid_block.attentions.0.to_k.weight", {8, 8})[9] == w8[9]);
  names = ft.names();
  CHECK(std::set<std::string>(names.begin(), names.end()) ==
        std::set<std::string>{"decoder.mid_block.attentions.0.to_k.weight", "decoder.up_blocks.3.resnets.1.norm1.bias"});
}

TEST_CASE("checkpoint: synthetic:sd15 gives synth::param under diffusers names") {
  const ModelFiles m = open_model("synthetic:sd15");
  CHECK(m.unet_config.empty());
  WeightStore unet(m.unet), clip(m.text_encoder);
  CHECK(unet.get("conv_in.weight", {320, 4, 3, 3})[5] == synth::param("conv_in.weight", {320, 4, 3, 3})[5]);
  const Shape ln{768};
  CHECK(clip.get("text_model.final_layer_norm.weight", ln)[0] == synth::param("text_model.final_layer_norm.weight", ln)[0]);
  CHECK(m.source(Component::VAE) == m.vae);
}

TEST_CASE("checkpoint: every wrong input gets an error saying what is expected") {
  SECTION("unknown spec") {
    CHECK_THROWS_WITH(open_model("/nonexistent/model"), Contains("no such file or folder") && Contains("diffusers folder") &&
                                                            Contains("synthetic:sd15"));
    CHECK_THROWS_WITH(open_model("synthetic:sdxl"), Contains("synthetic:sd15"));
    CHECK_THROWS_WITH(open_model("synthetic:sd15", "bf16"), Contains("unknown weights variant"));
  }
  SECTION("a pickle checkpoint, whatever its extension") {
    TmpPath zip("model.ckpt"), legacy("renamed.safetensors");
    write_bytes(zip, std::string("PK\x03\x04", 4) + "archive/data.pkl");
    write_bytes(legacy, std::string("\x80\x02\x8a\x0a", 4) + "pickle bytes");
    for (const std::string& p : {zip.path, legacy.path})
      CHECK_THROWS_WITH(open_model(p), Contains("PyTorch pickle") && Contains("only .safetensors") &&
                                           Contains("weights_only=True") && Contains(p));
  }
  SECTION("a file of another kind") {
    TmpPath txt("notes.txt");
    write_bytes(txt, "hello, this is not a model");
    CHECK_THROWS_WITH(open_model(txt), Contains("neither a safetensors file nor a folder"));
  }
  SECTION("safetensors files that are not a whole SD1.x model") {
    TmpPath unet_file("unet_only.safetensors"), sd2("sd2.safetensors"), no_vae("no_vae.safetensors");
    const Tensor t = Tensor::full({2}, 1.0f);
    {
      SafeTensorsWriter w;
      w.add("time_embedding.linear_1.weight", t);
      w.save(unet_file);
    }
    CHECK_THROWS_WITH(open_model(unet_file), Contains("U-Net file of a diffusers folder") && Contains("model_index.json"));
    {
      SafeTensorsWriter w;
      w.add("model.diffusion_model.input_blocks.0.0.bias", t);
      w.add("cond_stage_model.model.ln_final.weight", t);
      w.save(sd2);
    }
    CHECK_THROWS_WITH(open_model(sd2), Contains("Stable Diffusion 2.x"));
    {
      SafeTensorsWriter w;
      w.add("model.diffusion_model.input_blocks.0.0.bias", t);
      w.add("cond_stage_model.transformer.text_model.final_layer_norm.bias", t);
      w.save(no_vae);
    }
    CHECK_THROWS_WITH(open_model(no_vae), Contains("has no VAE") && Contains("first_stage_model."));
  }
  SECTION("folders") {
    TmpPath dir("folder");
    fs::create_directories(dir.path);
    CHECK_THROWS_WITH(open_model(dir), Contains("not a diffusers Stable Diffusion pipeline") && Contains("model_index.json"));
    write_bytes(dir.path + "/config.json", "{}");
    CHECK_THROWS_WITH(open_model(dir), Contains("component folder") && Contains("model_index.json"));
  }
  SECTION("JSON files of a diffusers folder: invalid, or of the wrong form") {
    TmpPath dir("bad_json");
    write_diffusers_folder(dir, {{Component::UNet, {{"conv_in.bias", {320}}}, nullptr},
                                 {Component::VAE, {{"conv_in.bias", {128}}}, nullptr},
                                 {Component::TextEncoder, {{"text_model.final_layer_norm.bias", {768}}}, nullptr}});
    write_bytes(dir.path + "/unet/config.json", "{\"in_channels\": 4,\n\"layers_per_block\": }");
    CHECK_THROWS_WITH(open_model(dir), Contains("unet config '" + dir.path + "/unet/config.json' is not valid JSON: parse error at line 2") &&
                                           !Contains("json.exception"));
    write_bytes(dir.path + "/unet/config.json", "{}");
    write_bytes(dir.path + "/model_index.json", "[1, 2]");
    CHECK_THROWS_WITH(open_model(dir), Contains("pipeline index '" + dir.path + "/model_index.json' must be a JSON object, not array"));
    write_bytes(dir.path + "/model_index.json", "{\"_class_name\": 5}");
    CHECK_NOTHROW(open_model(dir));
  }
  SECTION("a key list whose shapes are not lists of integers") {
    TmpPath keys("keys.json");
    write_bytes(keys, R"({"diffusers": {"unet": {"conv_in.bias": [320.5]}}})");
    CHECK_THROWS_WITH(read_key_list(keys, Component::UNet), Contains("the shape of 'conv_in.bias' is [320.5]"));
    write_bytes(keys, R"({"diffusers": {"unet": {"conv_in.bias": [18014398509481984, 1024]}}})");
    CHECK_THROWS_WITH(read_key_list(keys, Component::UNet), Contains("more than 2^40 elements"));
    write_bytes(keys, R"({"diffusers": []})");
    CHECK_THROWS_WITH(read_key_list(keys, Component::UNet), Contains("has no diffusers.unet key list"));
  }
  SECTION("a diffusers folder with a component missing or in .bin form") {
    TmpPath dir("incomplete");
    write_diffusers_folder(dir, {{Component::UNet, {{"conv_in.bias", {320}}}, nullptr}});
    CHECK_THROWS_WITH(open_model(dir), Contains("has no vae weights") &&
                                           Contains(dir.path + "/vae/diffusion_pytorch_model.safetensors"));
    fs::create_directories(dir.path + "/vae");
    write_bytes(dir.path + "/vae/diffusion_pytorch_model.bin", std::string("PK\x03\x04", 4));
    CHECK_THROWS_WITH(open_model(dir), Contains("vae/diffusion_pytorch_model.bin is a PyTorch pickle") &&
                                           Contains("not supported") && Contains("save_pretrained"));
  }
}

TEST_CASE("open_model: a folder as transformers >= 5 saves it (tokenizer.json only, text encoder names without text_model.) loads as before") {
  TmpPath dir("transformers5_folder");
  fs::copy("models/ldm-shapes", dir.path, fs::copy_options::recursive);
  const std::string te = dir.path + "/text_encoder/model.safetensors";
  {
    const SafeTensors file("models/ldm-shapes/text_encoder/model.safetensors");
    SafeTensorsWriter out;
    for (const auto& n : file.names()) {
      REQUIRE(n.rfind("text_model.", 0) == 0);
      out.add(n.substr(std::strlen("text_model.")), file.load(n), file.info(n).dtype);
    }
    out.save(te);
  }
  {
    nlohmann::json merges = nlohmann::json::array();
    std::ifstream mf(dir.path + "/tokenizer/merges.txt");
    for (std::string line; std::getline(mf, line);)
      if (!line.empty() && line.rfind("#version", 0) != 0) merges.push_back(line);  // "left right"
    std::ifstream vf(dir.path + "/tokenizer/vocab.json");
    const nlohmann::json j = {{"model", {{"type", "BPE"}, {"vocab", nlohmann::json::parse(vf)}, {"merges", merges}}}};
    std::ofstream(dir.path + "/tokenizer/tokenizer.json") << j.dump();
    fs::remove(dir.path + "/tokenizer/vocab.json");
    fs::remove(dir.path + "/tokenizer/merges.txt");
  }
  const ModelFiles ours = open_model("models/ldm-shapes"), saved = open_model(dir.path);
  REQUIRE(saved.tokenizer_dir == dir.path + "/tokenizer");
  const std::string prompt = "a large red circle at the top left on a black background";
  const std::vector<int> ids = CLIPTokenizer(saved.tokenizer_dir).encode_padded(prompt);
  CHECK(ids == CLIPTokenizer(ours.tokenizer_dir).encode_padded(prompt));

  // The names as the loader asks for them, and the same encoding, bit for bit.
  const std::vector<std::string> names = saved.text_encoder->names();
  CHECK(std::find(names.begin(), names.end(), "text_model.final_layer_norm.weight") != names.end());
  CHECK(names == ours.text_encoder->names());
  const std::vector<int64_t> ids64(ids.begin(), ids.end());
  const Tensor a = load_text_encoder(ours).encode(ids64, 1, 1), b = load_text_encoder(saved).encode(ids64, 1, 1);
  REQUIRE(a.shape() == b.shape());
  CHECK(std::memcmp(a.data(), b.data(), size_t(a.numel()) * sizeof(float)) == 0);
}
