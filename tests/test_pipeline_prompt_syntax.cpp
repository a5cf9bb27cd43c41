// generate() with A1111's prompt syntax (the default) and diffusers' plain one, on the shipped
// models/ldm-shapes (64x64, a few steps: milliseconds): a prompt without brackets, BREAK or 76+
// tokens gives the same picture, bit for bit, either way (the parity with diffusers stands);
// emphasis, BREAK and a long prompt change it; a prompt and a negative prompt of different chunk
// counts are padded to the same length. The encodings themselves are checked against A1111 in
// test_prompt_emphasis.cpp.
#include <catch2/catch.hpp>

#include <cstring>

#include "ldm/core/rng_ldm.hpp"
#include "ldm/load.hpp"
#include "ldm/pipeline.hpp"
#include "reference.hpp"
#include "shapes_model.hpp"

using namespace ldm;
using ldm::test::same_bits;
using ldm::test::shapes_model;

namespace {

Tensor latents_of(const std::string& prompt, PromptSyntax syntax, const std::string& negative = "") {
  GenerationParams p;
  p.prompt = prompt;
  p.negative_prompt = negative;
  p.prompt_syntax = syntax;
  p.scheduler = "euler";
  p.steps = 3;
  p.guidance_scale = 2.0f;
  p.width = p.height = 64;
  LdmGenerator gen(7);
  return generate(shapes_model(), p, gen).latents;
}

}  // namespace

TEST_CASE("generate: a plain prompt is read the same by A1111's syntax and diffusers'", "[prompt]") {
  const std::string prompt = "a large red circle at the top left on a black background";
  CHECK(same_bits(latents_of(prompt, PromptSyntax::a1111), latents_of(prompt, PromptSyntax::plain)));
  CHECK(same_bits(latents_of(prompt, PromptSyntax::a1111, "a blue square"),
             latents_of(prompt, PromptSyntax::plain, "a blue square")));
}

TEST_CASE("generate: emphasis, BREAK and long prompts change the context; unequal lengths are padded", "[prompt]") {
  const std::string prompt = "a large red circle at the top left on a black background";
  const Tensor base = latents_of(prompt, PromptSyntax::a1111);
  CHECK_FALSE(same_bits(latents_of("a large (red:1.4) circle at the top left on a black background", PromptSyntax::a1111),
                   base));
  CHECK_FALSE(same_bits(latents_of("a large red circle BREAK at the top left on a black background", PromptSyntax::a1111),
                   base));
  std::string long_prompt = prompt;
  for (int i = 0; i < 9; ++i) long_prompt += ", " + prompt;  // ~120 tokens: two chunks
  const Tensor long_a1111 = latents_of(long_prompt, PromptSyntax::a1111);  // prompt 154 tokens, negative "" 77: padded
  CHECK(long_a1111.shape() == base.shape());
  CHECK_FALSE(same_bits(long_a1111, latents_of(long_prompt, PromptSyntax::plain)));  // plain truncates at 77
  // the negative prompt the longer one: the prompt is padded
  CHECK(latents_of(prompt, PromptSyntax::a1111, long_prompt).shape() == base.shape());
}
