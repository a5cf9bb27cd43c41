// Prompts longer than CLIP's 77 tokens, as AUTOMATIC1111 encodes them (modules/sd_hijack_clip.py,
// FrozenCLIPEmbedderWithCustomWordsBase.tokenize_line): the prompt's emphasis runs
// (models/prompt_attention.hpp) are tokenized run by run and laid into chunks of 75 tokens, each
// chunk then encoded by CLIP on its own as [BOS, 75 tokens, EOS] and the chunks' outputs
// concatenated: 77 k tokens of context for k chunks. Each token keeps its run's weight.
//
//   a chunk fills up     -> the next chunk starts; but when the chunk's last comma is at most
//                           `comma_backtrack` (A1111's default 20) tokens from its end, the
//                           tokens after that comma move to the next chunk with it
//   a BREAK run          -> the chunk ends here (padded), the next one starts
//   a chunk's tail       -> padded with EOS, weight 1; BOS and EOS have weight 1
//
//   prompt_chunks(tok, parse_prompt_attention("a (red:1.3) circle"))
//     -> tokens      [[BOS, a, red, circle, EOS, EOS, ...]]          (77)
//        multipliers [[1,   1, 1.3, 1,      1,   1,   ...]]          (77)
//
// token_count is A1111's count of the prompt's tokens ("12/75" in its UI): 75 per full chunk,
// the last one's own. Textual-inversion embeddings (A1111's `fixes`) are not supported.
#pragma once
#include <algorithm>
#include <string>
#include <vector>

#include "ldm/models/clip_tokenizer.hpp"
#include "ldm/models/prompt_attention.hpp"

namespace ldm {

constexpr int kPromptChunkLength = 75;  // tokens of a chunk between its BOS and EOS

struct PromptChunks {
  std::vector<std::vector<int>> tokens;          // [chunks][77]
  std::vector<std::vector<double>> multipliers;  // [chunks][77]
  int token_count = 0;
};

// A chunk of nothing: BOS, then EOS to the end, every weight 1 (what pads the shorter of a
// prompt and its negative prompt to the longer's chunk count).
inline void add_empty_chunk(const CLIPTokenizer& tok, PromptChunks& c) {
  std::vector<int> t(kPromptChunkLength + 2, tok.eos_id());
  t[0] = tok.bos_id();
  c.tokens.push_back(std::move(t));
  c.multipliers.emplace_back(kPromptChunkLength + 2, 1.0);
}

inline PromptChunks prompt_chunks(const CLIPTokenizer& tok, const std::vector<PromptRun>& runs,
                                  int comma_backtrack = 20) {
  const std::vector<int> comma_ids = tok.encode(",");
  const int comma = comma_ids.size() == 1 ? comma_ids[0] : -1;  // ",</w>"
  PromptChunks out;
  std::vector<int> tokens;  // the chunk being filled, without BOS / EOS
  std::vector<double> mults;
  int last_comma = -1;      // index in `tokens` of its last comma, -1: none
  auto next_chunk = [&](bool is_last) {
    out.token_count += is_last ? int(tokens.size()) : kPromptChunkLength;
    tokens.resize(kPromptChunkLength, tok.eos_id());
    mults.resize(kPromptChunkLength, 1.0);
    tokens.insert(tokens.begin(), tok.bos_id());
    tokens.push_back(tok.eos_id());
    mults.insert(mults.begin(), 1.0);
    mults.push_back(1.0);
    out.tokens.push_back(std::move(tokens));
    out.multipliers.push_back(std::move(mults));
    tokens.clear();
    mults.clear();
    last_comma = -1;
  };
  for (const PromptRun& run : runs) {
    if (run.text == "BREAK" && run.weight == kBreakWeight) {
      next_chunk(false);
      continue;
    }
    for (int token : tok.encode(run.text)) {
      const int n = int(tokens.size());
      if (token == comma) {
        last_comma = n;
      } else if (comma_backtrack != 0 && n == kPromptChunkLength && last_comma != -1 &&
                 n - last_comma <= comma_backtrack) {
        // the tokens after the comma go to the next chunk
        const std::vector<int> moved_tokens(tokens.begin() + last_comma + 1, tokens.end());
        const std::vector<double> moved_mults(mults.begin() + last_comma + 1, mults.end());
        tokens.resize(size_t(last_comma + 1));
        mults.resize(size_t(last_comma + 1));
        next_chunk(false);
        tokens = moved_tokens;
        mults = moved_mults;
      }
      if (int(tokens.size()) == kPromptChunkLength) next_chunk(false);
      tokens.push_back(token);
      mults.push_back(run.weight);
    }
  }
  if (!tokens.empty() || out.tokens.empty()) next_chunk(true);
  return out;
}

// How prompt text becomes token chunks.
enum class PromptSyntax {
  a1111,  // AUTOMATIC1111's: (emphasis:1.2), [less], BREAK, any length in 75-token chunks
  plain,  // diffusers': the text as it is, one chunk truncated to 77 tokens, every weight 1
};

// A prompt's chunks by `syntax`. A prompt without brackets, BREAK or 76+ tokens gives the same
// single chunk either way. truncated: set when the plain reading cut the prompt.
inline PromptChunks prompt_chunks_of(const CLIPTokenizer& tok, const std::string& text, PromptSyntax syntax,
                                     bool* truncated = nullptr) {
  if (truncated) *truncated = false;
  if (syntax == PromptSyntax::a1111) return prompt_chunks(tok, parse_prompt_attention(text));
  PromptChunks c;
  c.tokens.push_back(tok.encode_padded(text, kPromptChunkLength + 2, truncated));
  c.multipliers.emplace_back(kPromptChunkLength + 2, 1.0);
  c.token_count = std::min(int(tok.encode(text).size()), kPromptChunkLength);
  return c;
}

}  // namespace ldm
