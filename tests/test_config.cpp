// config.json validation: read_config is type-strict (no truncated floats, no wrapped integers),
// every field of the U-Net, VAE, CLIP text and scheduler configs is range-checked, and the
// error names the config.json and the field, before any weight is allocated.
#include <catch2/catch.hpp>
#include <filesystem>
#include <fstream>
#include <limits>

#include "ldm/load.hpp"
#include "tmp_path.hpp"

using namespace ldm;
using Catch::Contains;
using nlohmann::json;
namespace fs = std::filesystem;

namespace {

// A diffusers folder whose weight files hold no tensors: enough for open_model to read the
// configs, which must fail before anything asks for a weight.
void write_tiny_folder(const std::string& dir, const std::string& component, const json& config) {
  for (const char* c : {"unet", "vae", "text_encoder"}) {
    fs::create_directories(dir + "/" + c);
    SafeTensorsWriter().save(dir + "/" + c + (std::string(c) == "text_encoder" ? "/model.safetensors"
                                                                                : "/diffusion_pytorch_model.safetensors"));
  }
  fs::create_directories(dir + "/scheduler");
  std::ofstream(dir + "/model_index.json") << R"({"_class_name": "StableDiffusionPipeline"})";
  std::ofstream(dir + "/" + component) << config.dump();
}

}  // namespace

TEST_CASE("config: read_config takes integers only as JSON integers, within the field's type") {
  json j = json::parse(R"({"f": 4.7, "g": 4.0, "i": 4, "big": 18446744073709551615, "b": 1, "s": 3, "l": [1, 2.5],
                           "neg": -3, "x": 3000000000, "big_float": 1e300, "t": true})");
  j["inf"] = std::numeric_limits<double>::infinity();
  int64_t i = 0;
  CHECK_THROWS_WITH(read_config(j, "f", i, "'c.json'"), Contains("'c.json': \"f\" must be an integer") && Contains("4.7"));
  CHECK_THROWS_WITH(read_config(j, "g", i, "'c.json'"), Contains("\"g\" must be an integer"));
  CHECK_THROWS_WITH(read_config(j, "big", i, "'c.json'"), Contains("\"big\" must be an integer"));
  read_config(j, "i", i, "'c.json'");
  CHECK(i == 4);
  read_config(j, "neg", i, "'c.json'");
  CHECK(i == -3);
  int narrow = 0;
  CHECK_THROWS_WITH(read_config(j, "x", narrow, "'c.json'"), Contains("\"x\" must be an integer in [-2147483648"));
  float f = 0;
  read_config(j, "i", f, "'c.json'");  // an integer is a fine number
  CHECK(f == 4.0f);
  CHECK_THROWS_WITH(read_config(j, "t", i, "'c.json'"), Contains("\"t\" must be an integer, got true"));
  CHECK_THROWS_WITH(read_config(j, "big_float", f, "'c.json'"), Contains("\"big_float\" must be a finite number"));
  double d = 0;
  CHECK_THROWS_WITH(read_config(j, "inf", d, "'c.json'"), Contains("\"inf\" must be a finite number"));
  bool b = false;
  CHECK_THROWS_WITH(read_config(j, "b", b, "'c.json'"), Contains("\"b\" must be a boolean"));
  std::string s;
  CHECK_THROWS_WITH(read_config(j, "s", s, "'c.json'"), Contains("\"s\" must be a string"));
  std::vector<int64_t> l;
  CHECK_THROWS_WITH(read_config(j, "l", l, "'c.json'"), Contains("\"l\" must be a list, each entry an integer, got [1,2.5]"));
  read_config(j, "absent", d, "'c.json'");  // absent: the default stays
  CHECK(d == 0);
}

TEST_CASE("config: every U-Net field is range-checked, naming the field") {
  auto bad = [](const json& fields, const std::string& message) {
    json j = json::object();
    j.update(fields);
    INFO(fields.dump());
    CHECK_THROWS_WITH(UNetConfig::from_json(j, "'unet/config.json'"), Contains("'unet/config.json'") && Contains(message));
  };
  bad({{"norm_num_groups", 0}}, "\"norm_num_groups\" = 0 is out of range");
  bad({{"norm_num_groups", -32}}, "\"norm_num_groups\" = -32 is out of range");
  bad({{"norm_num_groups", 48}}, "block_out_channels[0] = 320 channels do not split into norm_num_groups = 48");
  bad({{"in_channels", 4.7}}, "\"in_channels\" must be an integer");
  bad({{"in_channels", 0}}, "\"in_channels\" = 0 is out of range");
  bad({{"out_channels", 4000}}, "\"out_channels\" = 4000 is out of range");
  bad({{"layers_per_block", 1e9}}, "\"layers_per_block\" must be an integer");
  bad({{"layers_per_block", 1000000000}}, "\"layers_per_block[0]\" = 1000000000 is out of range");
  bad({{"block_out_channels", {3200, 6400, 12800, 128000}}}, "\"block_out_channels[3]\" = 128000 is out of range");
  bad({{"block_out_channels", json::array()}}, "\"number of block_out_channels\" = 0 is out of range");
  bad({{"block_out_channels", {320, 640}}}, "down_block_types has 4 entries for 2 blocks");
  bad({{"attention_head_dim", 7}}, "block_out_channels[0] = 320 channels do not split into attention_head_dim[0] = 7");
  bad({{"attention_head_dim", 0}}, "\"attention_head_dim[0]\" = 0 is out of range");
  bad({{"transformer_layers_per_block", {1, 1, 1, -1}}}, "\"transformer_layers_per_block[3]\" = -1 is out of range");
  bad({{"cross_attention_dim", 0}}, "\"cross_attention_dim\" = 0 is out of range");
  bad({{"norm_eps", 0}}, "\"norm_eps\" = 0 is out of range");
  bad({{"norm_eps", -1e-5}}, "\"norm_eps\" = -1e-05 is out of range");
  bad({{"freq_shift", 160}}, "\"freq_shift\" = 160 is out of range");
  bad({{"downsample_padding", 3}}, "\"downsample_padding\" = 3 is out of range");
  bad({{"sample_size", 0}}, "\"sample_size\" = 0 is out of range");
  bad({{"center_input_sample", 1}}, "\"center_input_sample\" must be a boolean");
  // A DownBlock2D level without attention needs no head split; SD1.5's defaults validate.
  UNetConfig ok = UNetConfig::from_json(json::object());
  CHECK(ok.norm_num_groups == 32);
}

TEST_CASE("config: every VAE, CLIP text and scheduler field is range-checked, naming the field") {
  auto vae = [](const json& j, const std::string& message) {
    INFO(j.dump());
    CHECK_THROWS_WITH(VAEConfig::from_json(j, "'vae/config.json'"), Contains("'vae/config.json'") && Contains(message));
  };
  vae({{"norm_num_groups", 0}}, "\"norm_num_groups\" = 0 is out of range");
  vae({{"latent_channels", 4.5}}, "\"latent_channels\" must be an integer");
  vae({{"latent_channels", 0}}, "\"latent_channels\" = 0 is out of range");
  vae({{"layers_per_block", 100000}}, "\"layers_per_block\" = 100000 is out of range");
  vae({{"in_channels", -3}}, "\"in_channels\" = -3 is out of range");
  vae({{"scaling_factor", 0}}, "\"scaling_factor\" = 0 is out of range");
  vae({{"scaling_factor", "0.18215"}}, "\"scaling_factor\" must be a finite number");
  vae({{"block_out_channels", {128, 256, 512, 513}}}, "block_out_channels[3] = 513 must be a multiple of norm_num_groups");
  vae({{"block_out_channels", {128, 256, 512, 5120000}}}, "\"block_out_channels[3]\" = 5120000 is out of range");

  auto clip = [](const json& j, const std::string& message) {
    INFO(j.dump());
    CHECK_THROWS_WITH(CLIPTextConfig::from_json(j, "'text_encoder/config.json'"),
                      Contains("'text_encoder/config.json'") && Contains(message));
  };
  clip({{"num_attention_heads", 0}}, "\"num_attention_heads\" = 0 is out of range");
  clip({{"num_attention_heads", 5}}, "hidden_size 768 does not split into 5 attention heads");
  clip({{"vocab_size", 0}}, "\"vocab_size\" = 0 is out of range");
  clip({{"hidden_size", 768.5}}, "\"hidden_size\" must be an integer");
  clip({{"num_hidden_layers", 1000}}, "\"num_hidden_layers\" = 1000 is out of range");
  clip({{"max_position_embeddings", -77}}, "\"max_position_embeddings\" = -77 is out of range");
  clip({{"layer_norm_eps", 0}}, "\"layer_norm_eps\" = 0 is out of range");
  clip({{"text_config", {{"intermediate_size", 0}}}}, "\"intermediate_size\" = 0 is out of range");

  auto sched = [](const json& j, const std::string& message) {
    INFO(j.dump());
    CHECK_THROWS_WITH(SchedulerConfig::from_json(j, SchedulerConfig{}, "'scheduler/scheduler_config.json'"),
                      Contains("'scheduler/scheduler_config.json'") && Contains(message));
  };
  sched({{"num_train_timesteps", 0}}, "\"num_train_timesteps\" = 0 is out of range");
  sched({{"num_train_timesteps", 1000.5}}, "\"num_train_timesteps\" must be an integer");
  sched({{"num_train_timesteps", 10000000000}}, "\"num_train_timesteps\" must be an integer in [-2147483648");
  sched({{"beta_start", 0}}, "\"beta_start\" = 0 is out of range");
  sched({{"beta_end", 1.5}}, "\"beta_end\" = 1.5 is out of range");
  sched({{"beta_start", 0.02}, {"beta_end", 0.01}}, "\"beta_end\" = 0.01 is out of range");
  sched({{"steps_offset", -1}}, "\"steps_offset\" = -1 is out of range");
  sched({{"steps_offset", 1000}}, "\"steps_offset\" = 1000 is out of range");
  sched({{"clip_sample_range", 0}}, "\"clip_sample_range\" = 0 is out of range");
  sched({{"num_train_timesteps", 2}, {"steps_offset", 0}, {"trained_betas", {0.1, 1.0}}},
        "\"trained_betas[1]\" = 1 is out of range");
  sched({{"trained_betas", {0.1, 0.2}}}, "2 trained_betas for num_train_timesteps 1000");
}

// `norm_num_groups: 0` used to reach a division by zero (SIGFPE) in the first GroupNorm.
TEST_CASE("config: a bad config.json in a model folder is an error naming that file, before any weight is read") {
  for (const std::string component :
       {"unet/config.json", "vae/config.json", "text_encoder/config.json", "scheduler/scheduler_config.json"}) {
    test::TmpPath dir("config_folder");
    const std::string field = component == "text_encoder/config.json"         ? "num_attention_heads"
                              : component == "scheduler/scheduler_config.json" ? "num_train_timesteps"
                                                                                : "norm_num_groups";
    write_tiny_folder(dir, component, json{{field, 0}});
    INFO(component);
    const std::string message = "'" + dir.path + "/" + component + "': \"" + field + "\" = 0 is out of range";
    LoadOptions no_tokenizer;  // the configs are checked first, before the tokenizer and any weight
    no_tokenizer.tokenizer_dir = "/nonexistent";
    CHECK_THROWS_WITH(load_stable_diffusion(dir.path, no_tokenizer), Contains(message));
    const ModelFiles files = open_model(dir.path);
    if (component[0] == 'u') CHECK_THROWS_WITH(unet_config(files), Contains(message));
    if (component[0] == 'v') CHECK_THROWS_WITH(vae_config(files), Contains(message));
    if (component[0] == 't') CHECK_THROWS_WITH(text_encoder_config(files), Contains(message));
    if (component[0] == 's') CHECK_THROWS_WITH(scheduler_config(files), Contains(message));
  }
}
