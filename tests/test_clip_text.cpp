// ldm::CLIPTextModel against transformers.CLIPTextModel: the tiny 2-layer model of
// ref_blocks.safetensors (relative L2 <= 1e-5) and the full-size ViT-L/14 text encoder of
// ref_clip_full.safetensors (<= 1e-4), last_hidden_state and hidden_states[-2]. Weights are
// synth.param(key) with the diffusers keys (text_model.embeddings.token_embedding.weight, ...).
#include <catch2/catch.hpp>

#include <chrono>
#include <cmath>
#include <cstdio>

#include "ldm/core/clock.hpp"
#include "ldm/models/clip_text.hpp"
#include "ldm/models/clip_tokenizer.hpp"
#include "reference.hpp"
#include "synthetic.hpp"

using namespace ldm;
using ldm::test::Reference;
using ldm::test::require_close;

namespace {

using ldm::test::synthetic_weights;

CLIPTextModel tiny_model(const Reference& ref) {
  CLIPTextModel m;
  auto w = synthetic_weights();
  m.load(w, "text_model", CLIPTextConfig::from_json(ref.meta("tiny_clip").at("config")));
  w.finish();
  return m;
}

}  // namespace

TEST_CASE("clip_text: config defaults are SD1.5's and from_json reads a transformers config") {
  CLIPTextConfig d;
  CHECK(d.vocab_size == 49408);
  CHECK(d.hidden_size == 768);
  CHECK(d.num_hidden_layers == 12);
  CHECK(d.hidden_act == "quick_gelu");

  auto j = nlohmann::json::parse(R"({"architectures": ["CLIPTextModel"], "hidden_size": 64, "num_attention_heads": 4,
    "num_hidden_layers": 2, "hidden_act": "gelu", "layer_norm_eps": 1e-6, "projection_dim": 768, "dropout": 0.0})");
  CLIPTextConfig c = CLIPTextConfig::from_json(j);
  CHECK(c.hidden_size == 64);
  CHECK(c.num_hidden_layers == 2);
  CHECK(c.hidden_act == "gelu");
  CHECK(c.layer_norm_eps == Approx(1e-6));
  CHECK(c.vocab_size == 49408);  // not given: default

  CHECK(CLIPTextConfig::from_json(nlohmann::json{{"text_config", {{"hidden_size", 128}, {"num_attention_heads", 2}}}})
            .hidden_size == 128);
  CHECK_THROWS_WITH(CLIPTextConfig::from_json(nlohmann::json{{"hidden_act", "relu"}}),
                    Catch::Contains("hidden_act \"relu\" is not supported"));
  CHECK_THROWS_WITH(CLIPTextConfig::from_json(nlohmann::json{{"hidden_size", 100}}),
                    Catch::Contains("does not split into 12 attention heads"));
  CHECK_THROWS_WITH(CLIPTextConfig::from_json(nlohmann::json{{"hidden_size", "big"}}),
                    Catch::Contains("\"hidden_size\" must be an integer"));
}

TEST_CASE("clip_text: tiny CLIPTextModel (2 layers, hidden 64, 4 heads)") {
  LDM_REQUIRE_REFERENCE(path, "ref_blocks.safetensors");
  Reference ref(path);
  const auto t0 = std::chrono::steady_clock::now();
  CLIPTextModel m = tiny_model(ref);
  const std::vector<int64_t> ids = ref.file.load_i64("tiny_clip.input_ids");
  CLIPTextOutput o = m.forward(ids, 2, /*output_hidden_states=*/true);
  REQUIRE(o.hidden_states.size() == 3);  // embeddings + 2 layers
  require_close(o.last_hidden_state, ref.get("tiny_clip", "last_hidden_state"), 1e-5, "tiny_clip last_hidden_state");
  require_close(o.hidden_states[1], ref.get("tiny_clip", "penultimate"), 1e-5, "tiny_clip hidden_states[-2]");
  require_close(m.penultimate(ids, 2), ref.get("tiny_clip", "penultimate"), 1e-5, "tiny_clip penultimate()");

  // encode: clip_skip 1 is last_hidden_state; 2 is final_layer_norm(hidden_states[-2]) (diffusers clip_skip=1).
  // Not bit-equal between runs: the attention's softmax rounding depends on its scratch buffer's alignment.
  require_close(m.encode(ids, 2), o.last_hidden_state, 1e-6, "tiny_clip encode(clip_skip 1)");
  require_close(m.encode(ids, 2, 2), m.final_layer_norm.forward(ref.get("tiny_clip", "penultimate")), 1e-5,
                "tiny_clip encode(clip_skip 2)");
  require_close(m.encode(ids, 2, 3), m.final_layer_norm.forward(o.hidden_states[0]), 1e-6,
                "tiny_clip encode(clip_skip 3)");
  std::printf("  tiny_clip: %.3f s\n", seconds_since(t0));
}

TEST_CASE("clip_text: causal mask, so a token does not see the ones after it") {
  LDM_REQUIRE_REFERENCE(path, "ref_blocks.safetensors");
  Reference ref(path);
  CLIPTextModel m = tiny_model(ref);
  std::vector<int64_t> a(77, 999), b(77, 999);
  a[0] = b[0] = 998;
  for (int i = 1; i < 6; ++i) a[size_t(i)] = b[size_t(i)] = 10 + i;
  b[6] = 500;  // differs from position 6 on
  Tensor ha = m.encode(a, 1), hb = m.encode(b, 1);
  const int64_t D = ha.dim(-1);
  for (int64_t i = 0; i < 6 * D; ++i) REQUIRE(ha[i] == Approx(hb[i]).margin(1e-5));
  double changed = 0;
  for (int64_t i = 6 * D; i < 7 * D; ++i) changed = std::max(changed, double(std::fabs(ha[i] - hb[i])));
  CHECK(changed > 1e-2);

  // A shorter sequence gives the same first tokens (positions are 0..L-1 either way).
  Tensor h8 = m.encode(std::vector<int64_t>(a.begin(), a.begin() + 8), 1);
  CHECK(h8.shape() == Shape{1, 8, D});
  for (int64_t i = 0; i < 8 * D; ++i) REQUIRE(h8[i] == Approx(ha[i]).margin(1e-5));
}

TEST_CASE("clip_text: bad input gets a clear error") {
  LDM_REQUIRE_REFERENCE(path, "ref_blocks.safetensors");
  Reference ref(path);
  CLIPTextModel m = tiny_model(ref);
  std::vector<int64_t> ids(77, 999);
  ids[5] = 1000;
  CHECK_THROWS_WITH(m.encode(ids, 1), Catch::Contains("token id 1000 at position 5") &&
                                          Catch::Contains("outside the vocabulary [0, 1000)"));
  ids[5] = -1;
  CHECK_THROWS_WITH(m.forward(ids, 1), Catch::Contains("token id -1"));
  CHECK_THROWS_WITH(m.forward(std::vector<int64_t>(78, 999), 1), Catch::Contains("longer than the 77 positions"));
  CHECK_THROWS_WITH(m.forward(std::vector<int64_t>(77, 999), 2), Catch::Contains("do not split into a batch of 2"));
  CHECK_THROWS_WITH(m.encode(std::vector<int64_t>(77, 999), 1, 0), Catch::Contains("clip_skip must be in [1, 3]"));
  CHECK_THROWS_WITH(m.encode(std::vector<int64_t>(77, 999), 1, 4), Catch::Contains("clip_skip must be in [1, 3]"));
  CHECK_THROWS_WITH(CLIPTextModel{}.forward(std::vector<int64_t>(77, 0), 1), Catch::Contains("call load()"));
}

TEST_CASE("clip_text: wrong checkpoint shapes are reported by name") {
  std::map<std::string, Tensor> t;
  t["text_model.embeddings.token_embedding.weight"] = Tensor({10, 8});
  WeightStore w(std::make_shared<MapSource>(t));
  CLIPTextConfig c;
  c.vocab_size = 10, c.hidden_size = 16, c.intermediate_size = 32, c.num_hidden_layers = 1, c.num_attention_heads = 2;
  CLIPTextModel m;
  m.load(w, "text_model", c);
  CHECK_THROWS_WITH(w.finish(), Catch::Contains("text_model.embeddings.token_embedding.weight: file has [10, 8]") &&
                                    Catch::Contains("text_model.final_layer_norm.weight"));
}

TEST_CASE("clip_text: full-size CLIP ViT-L/14 text encoder, 3 prompts", "[full]") {
  LDM_REQUIRE_REFERENCE(path, "ref_clip_full.safetensors");
  Reference ref(path);
  const nlohmann::json& meta = ref.meta("clip_full");
  const std::vector<int64_t> ids = ref.file.load_i64("clip_full.input_ids");
  const int64_t B = 3;
  REQUIRE(ids.size() == size_t(B * 77));

  // The stored ids are what our tokenizer makes of the stored prompts (when the vocabulary is there).
  const std::string tok_dir = ldm::shared_path("clip-tokenizer");
  if (!tok_dir.empty()) {
    CLIPTokenizer tok(tok_dir);
    const auto& prompts = meta.at("prompts");
    REQUIRE(int64_t(prompts.size()) == B);
    for (int64_t b = 0; b < B; ++b) {
      const std::vector<int> got = tok.encode_padded(prompts[size_t(b)].get<std::string>(), 77);
      INFO("prompt " << b << ": \"" << prompts[size_t(b)].get<std::string>() << "\"");
      REQUIRE(std::vector<int64_t>(got.begin(), got.end()) ==
              std::vector<int64_t>(ids.begin() + b * 77, ids.begin() + (b + 1) * 77));
    }
  } else {
    ldm::test::skip("the tokenizer check: ../shared/clip-tokenizer not found (set LDM_SHARED to the shared folder)");
  }

  auto t0 = std::chrono::steady_clock::now();
  CLIPTextModel m;
  auto w = synthetic_weights();
  m.load(w, "text_model", CLIPTextConfig::from_json(meta.at("config")));
  w.finish();
  REQUIRE(w.num_loaded() == meta.at("weights_count").get<size_t>());
  const double t_load = seconds_since(t0);

  t0 = std::chrono::steady_clock::now();
  CLIPTextOutput o = m.forward(ids, B, /*output_hidden_states=*/true);
  const double t_fwd = seconds_since(t0);
  REQUIRE(o.hidden_states.size() == 13);
  require_close(o.last_hidden_state, ref.get("clip_full", "last_hidden_state"), 1e-4, "clip_full last_hidden_state");
  require_close(o.hidden_states[11], ref.get("clip_full", "penultimate"), 1e-4, "clip_full hidden_states[-2]");
  std::printf("  clip_full: synthetic weights %.2f s, forward batch 3 x 77 %.2f s\n", t_load, t_fwd);
}
