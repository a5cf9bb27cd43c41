// Long prompts and prompt emphasis against AUTOMATIC1111's own code (its FrozenCLIPEmbedderWith-
// CustomWords with the default options, run by scripts/make_prompt_emphasis_reference.py on a small
// CLIP with synthetic weights and the real CLIP tokenizer) on 23 prompts: nesting, escapes, BREAK,
// a 200-token prompt, the 75-token boundary, comma backtracking. The chunks' token ids, their
// weights (== on doubles) and A1111's token count exactly; the encoded prompt [1, 77 k, 64]
// within 1e-5 relative L2 (a tiny model against float64). Needs ../shared/clip-tokenizer.
#include <catch2/catch.hpp>

#include <nlohmann/json.hpp>

#include "ldm/core/files.hpp"
#include "ldm/core/safetensors.hpp"
#include "ldm/core/weights.hpp"
#include "ldm/models/clip_text.hpp"
#include "ldm/models/prompt_emphasis.hpp"
#include "skip.hpp"
#include "test_data.hpp"

using namespace ldm;
using ldm::test::data_path;

namespace {

double rel_l2(const Tensor& a, const Tensor& b) {
  return (a.vec().cast<double>() - b.vec().cast<double>()).norm() / b.vec().cast<double>().norm();
}

}  // namespace

TEST_CASE("prompt emphasis and long prompts: A1111's chunks, weights and encoding", "[prompt]") {
  LDM_REQUIRE_SHARED(tok_dir, "clip-tokenizer");
  const CLIPTokenizer tok(tok_dir);
  const nlohmann::json ref = read_json_file(data_path("prompt_emphasis_reference.json"), "prompt emphasis reference");
  const SafeTensors z_ref(data_path("prompt_emphasis_reference.safetensors"));

  WeightStore w(std::make_shared<SyntheticSource>());
  CLIPTextModel clip;
  clip.load(w, "text_model", CLIPTextConfig::from_json(ref.at("clip_config")));

  const nlohmann::json& cases = ref.at("cases");
  REQUIRE(cases.size() >= 20);
  double worst = 0;
  int multi_chunk = 0;
  for (size_t i = 0; i < cases.size(); ++i) {
    const nlohmann::json& c = cases[i];
    const std::string prompt = c.at("prompt");
    INFO("case " << i << ": '" << prompt << "'");
    const PromptChunks got = prompt_chunks(tok, parse_prompt_attention(prompt));
    CHECK(got.tokens == c.at("tokens").get<std::vector<std::vector<int>>>());
    CHECK(got.multipliers == c.at("multipliers").get<std::vector<std::vector<double>>>());
    CHECK(got.token_count == c.at("token_count").get<int>());
    multi_chunk += got.tokens.size() > 1;

    const Tensor z = encode_weighted_chunks(got, [&](const std::vector<int64_t>& ids) { return clip.encode(ids, 1); });
    const Tensor want = z_ref.load("case" + std::to_string(i) + ".z");
    REQUIRE(z.shape() == want.shape());
    const double err = rel_l2(z, want);
    CHECK(err <= 1e-5);
    worst = std::max(worst, err);
  }
  CHECK(multi_chunk >= 8);
  std::printf("  prompt emphasis: %zu prompts (%d of several chunks), worst relative L2 %.2e\n", cases.size(),
              multi_chunk, worst);
}

TEST_CASE("prompt emphasis: all-zero weights are an error, not a division by zero", "[prompt]") {
  Tensor z = Tensor::full({1, 3, 2}, 0.5f);
  REQUIRE_THROWS_WITH(apply_emphasis_original(z, {0.0, 0.0, 0.0}), Catch::Contains("are all the weights 0?"));
  Tensor y = Tensor::full({1, 3, 2}, 0.5f);
  REQUIRE_THROWS_WITH(apply_emphasis_original(y, {1.0, 1.0}), Catch::Contains("does not match its 2 token weights"));
}
