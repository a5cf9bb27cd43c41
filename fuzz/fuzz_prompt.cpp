// Fuzz target: a prompt as the pipeline turns it into the text encoder's input (prompt_token_ids:
// BOS, tokens truncated to fit, EOS, EOS padding), with the invariants the text encoder relies on;
// as A1111's emphasis parser reads it (at least one run, whatever the brackets); and its <lora:...>
// tags taken out.
#include "fuzz_input.hpp"
#include "ldm/lora_tags.hpp"
#include "ldm/models/prompt_attention.hpp"
#include "ldm/pipeline.hpp"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  static const ldm::StableDiffusion sd = [] {
    ldm::StableDiffusion s;
    s.tokenizer = ldm::fuzz::tokenizer();
    return s;
  }();
  const ldm::CLIPTokenizer& tok = *sd.tokenizer;
  const std::string prompt(reinterpret_cast<const char*>(data), size);
  try {
    bool truncated = false;
    const std::vector<int64_t> ids = ldm::prompt_token_ids(sd, prompt, {}, &truncated);
    if (ids.size() != 77 || ids.front() != tok.bos_id() || ids.back() != tok.eos_id()) __builtin_trap();
    for (int64_t id : ids)
      if (id < 0 || id >= tok.vocab_size()) __builtin_trap();
    if (truncated != (tok.encode(prompt).size() > 75)) __builtin_trap();  // 75 tokens fit between BOS and EOS
  } catch (const ldm::Error&) {
  }
  try {
    if (ldm::parse_prompt_attention(prompt).empty()) __builtin_trap();
  } catch (const ldm::Error&) {  // a weight that is not a number: "(a:1.2.3)"
  }
  try {  // <lora:NAME:M> tags come out of the text, nothing else does
    const ldm::PromptLoras r = ldm::extract_lora_tags(prompt);
    if (r.prompt.size() > prompt.size() || (r.tags.empty() && r.prompt != prompt)) __builtin_trap();
  } catch (const ldm::Error&) {  // a multiplier that is not a number: "<lora:a:b>"
  }
  return 0;
}
