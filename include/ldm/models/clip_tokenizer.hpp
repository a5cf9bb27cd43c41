// transformers.CLIPTokenizer / OpenAI CLIP simple_tokenizer.SimpleTokenizer
// Byte-level BPE (Sennrich et al. 2016, GPT-2 byte mapping) with CLIP's "</w>" end-of-word marker.
//
//   text -> clean (html unescape, whitespace collapse, lower-case)
//        -> split by CLIP's regex -> UTF-8 bytes mapped to printable code points
//        -> BPE merges by rank -> vocabulary ids
//
// An SD1.5 `tokenizer/` folder holds vocab.json (token -> id, 49408 entries) and
// merges.txt (48894 merges, best first), or both inside tokenizer.json. Prompts become 77 ids: BOS, tokens, EOS, EOS padding.
#pragma once
#include <memory>
#include <string>
#include <unordered_map>
#include <utility>
#include <vector>

namespace ldm {

class CLIPTokenizer {
 public:
  using Vocab = std::unordered_map<std::string, int>;             // token -> id
  using Merges = std::vector<std::pair<std::string, std::string>>;  // rank order, best first

  // Reads `dir`/vocab.json and `dir`/merges.txt (a diffusers `tokenizer/` folder), or where
  // those are absent `dir`/tokenizer.json (the only file transformers >= 5 saves): its BPE
  // model's vocab and merges, which are the same tables.
  explicit CLIPTokenizer(const std::string& dir);
  // Whether `dir` holds a tokenizer the constructor reads.
  static bool files_in(const std::string& dir);
  // From memory; tokens are in byte-mapped form (space is "Ġ"-style, word ends carry "</w>").
  // The vocabulary must contain "<|startoftext|>" and "<|endoftext|>".
  CLIPTokenizer(Vocab vocab, const Merges& merges);

  // Token ids of `text` without BOS/EOS.
  std::vector<int> encode(const std::string& text) const;
  // [BOS, ids..., EOS] truncated to max_length (the last kept id is EOS), padded with EOS;
  // *truncated (if given) says whether ids were dropped.
  std::vector<int> encode_padded(const std::string& text, int max_length = 77,
                                 bool* truncated = nullptr) const;
  // Text of ids ("</w>" becomes a space), for debugging.
  std::string decode(const std::vector<int>& ids) const;

  int bos_id() const { return bos_id_; }  // <|startoftext|>, 49406 in CLIP
  int eos_id() const { return eos_id_; }  // <|endoftext|>,   49407 in CLIP
  int pad_id() const { return eos_id_; }  // SD1.5 pads with EOS
  int vocab_size() const { return static_cast<int>(decoder_.size()); }

  // The steps of encode, exposed for tests and lessons.
  // basic_clean + whitespace_clean + lower(): html unescape (twice), curly quotes -> ASCII,
  // NFC composition, whitespace runs -> one space, strip, lower-case.
  static std::string clean_text(const std::string& text);
  // CLIP's pre-tokenizer regex:
  // <\|startoftext\|>|<\|endoftext\|>|'s|'t|'re|'ve|'m|'ll|'d|[\p{L}]+|[\p{N}]|[^\s\p{L}\p{N}]+
  static std::vector<std::string> split_words(const std::string& text);
  // BPE of one pre-token (raw UTF-8): its vocabulary pieces, the last ending in "</w>".
  std::vector<std::string> bpe(const std::string& word) const;

 private:
  struct Cache;
  void init(const Merges& merges);
  int token_id(const std::string& piece) const;

  Vocab encoder_;
  std::vector<std::string> decoder_;                  // id -> token
  std::unordered_map<std::string, int> merge_ranks_;  // "a b" -> rank
  int bos_id_ = -1, eos_id_ = -1;
  std::shared_ptr<Cache> cache_;  // word -> ids, shared by copies (thread-safe)
};

}  // namespace ldm
