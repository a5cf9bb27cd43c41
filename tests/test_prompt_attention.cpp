// ldm::parse_prompt_attention against AUTOMATIC1111's own parse_prompt_attention on 38 prompts
// (tests/data/prompt_attention_reference.json, made by scripts/make_prompt_attention_reference.py
// from A1111's modules/prompt_parser.py): the same runs of text and the same weights, compared
// as doubles with ==, since both compute them by the same multiplications in the same order.
#include <catch2/catch.hpp>

#include <nlohmann/json.hpp>

#include "ldm/core/files.hpp"
#include "ldm/models/prompt_attention.hpp"

using ldm::PromptRun;

namespace {

const nlohmann::json& reference() {
  static const nlohmann::json r = [] {
    const std::string f = __FILE__;
    return ldm::read_json_file(f.substr(0, f.rfind('/')) + "/data/prompt_attention_reference.json",
                               "prompt attention reference");
  }();
  return r;
}

std::string runs_str(const std::vector<PromptRun>& runs) {
  std::string s;
  for (const PromptRun& r : runs) s += "['" + r.text + "', " + std::to_string(r.weight) + "] ";
  return s;
}

}  // namespace

TEST_CASE("prompt emphasis: A1111's runs and weights on every reference prompt", "[prompt]") {
  const nlohmann::json& cases = reference().at("cases");
  REQUIRE(cases.size() >= 30);
  int errors = 0;
  for (const nlohmann::json& c : cases) {
    const std::string prompt = c.at("prompt");
    INFO("prompt '" << prompt << "'");
    if (c.value("error", false)) {  // A1111 raises (float() of a non-number): a clear error here
      ++errors;
      CHECK_THROWS_WITH(ldm::parse_prompt_attention(prompt), Catch::Contains("has no number after the ':'"));
      continue;
    }
    std::vector<PromptRun> want;
    for (const nlohmann::json& r : c.at("runs")) want.push_back({r.at(0).get<std::string>(), r.at(1).get<double>()});
    const std::vector<PromptRun> got = ldm::parse_prompt_attention(prompt);
    INFO("got  " << runs_str(got) << "\nwant " << runs_str(want));
    CHECK(got == want);
  }
  CHECK(errors == 2);
}

TEST_CASE("prompt emphasis: the rules, spelled out", "[prompt]") {
  using V = std::vector<PromptRun>;
  CHECK(ldm::parse_prompt_attention("a (red) circle") == V{{"a ", 1.0}, {"red", 1.1}, {" circle", 1.0}});
  CHECK(ldm::parse_prompt_attention("[a]") == V{{"a", 1 / 1.1}});
  CHECK(ldm::parse_prompt_attention("((a))") == V{{"a", 1.1 * 1.1}});
  CHECK(ldm::parse_prompt_attention("(a:1.5)") == V{{"a", 1.5}});
  CHECK(ldm::parse_prompt_attention("x BREAK y") == V{{"x", 1.0}, {"BREAK", ldm::kBreakWeight}, {"y", 1.0}});
  CHECK(ldm::parse_prompt_attention("\\(a\\)") == V{{"(a)", 1.0}});
  CHECK(ldm::parse_prompt_attention("") == V{{"", 1.0}});
}
