// Fuzz target: any bytes as text through SD1.5's CLIP tokenizer, step by step (clean, split,
// BPE) and whole (encode, decode). Every id must be in the vocabulary.
#include "fuzz_input.hpp"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const ldm::CLIPTokenizer& tok = ldm::fuzz::tokenizer();
  const std::string text(reinterpret_cast<const char*>(data), size);
  try {
    for (const std::string& word : ldm::CLIPTokenizer::split_words(ldm::CLIPTokenizer::clean_text(text)))
      if (tok.bpe(word).empty()) __builtin_trap();  // a word is at least one piece
    const std::vector<int> ids = tok.encode(text);
    for (int id : ids)
      if (id < 0 || id >= tok.vocab_size()) __builtin_trap();
    tok.decode(ids);
  } catch (const ldm::Error&) {
  }
  return 0;
}
