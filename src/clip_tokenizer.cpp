// transformers.CLIPTokenizer / OpenAI CLIP simple_tokenizer.SimpleTokenizer
#include "ldm/models/clip_tokenizer.hpp"

#include <sys/stat.h>

#include <algorithm>
#include <array>
#include <mutex>
#include <nlohmann/json.hpp>
#include <string_view>

#include "ldm/core/error.hpp"
#include "ldm/core/files.hpp"
#include "ldm/core/unicode.hpp"

namespace ldm {
namespace {

namespace uc = unicode;

const char* const kBos = "<|startoftext|>";
const char* const kEos = "<|endoftext|>";

// GPT-2's bytes_to_unicode(): printable bytes stand for themselves, the other 68 bytes
// map to U+0100.. in order, so every byte string becomes printable text without spaces.
struct ByteMap {
  std::array<std::string, 256> encode;  // byte -> UTF-8 of its code point
  std::array<int, 512> decode;          // code point -> byte, -1 if none

  ByteMap() {
    decode.fill(-1);
    int n = 0;
    for (int b = 0; b < 256; ++b) {
      const bool printable = (b >= '!' && b <= '~') || (b >= 0xA1 && b <= 0xAC) || (b >= 0xAE);
      const char32_t cp = printable ? b : 256 + n++;
      encode[b].clear();
      uc::utf8_append(encode[b], cp);
      decode[cp] = b;
    }
  }
};

const ByteMap& byte_map() {
  static const ByteMap m;
  return m;
}

std::string read_tokenizer_file(const std::string& path) { return read_file(path, "CLIP tokenizer file"); }

bool exists(const std::string& path) {
  struct stat st {};
  return stat(path.c_str(), &st) == 0;
}
std::string path_join(const std::string& dir, const std::string& name) {
  return dir.empty() || dir.back() == '/' ? dir + name : dir + "/" + name;
}

nlohmann::json parse_json_file(const std::string& path) {
  try {
    return nlohmann::json::parse(read_tokenizer_file(path));
  } catch (const nlohmann::json::exception& e) {
    LDM_FAIL("CLIPTokenizer: ", path, " is not valid JSON: ", json_error_reason(e));
  }
}

// {token: id}; `path` (with where in it) names the table in errors.
CLIPTokenizer::Vocab parse_vocab(const nlohmann::json& j, const std::string& path) {
  LDM_CHECK(j.is_object(), "CLIPTokenizer: ", path, " must be a JSON object {token: id}");
  CLIPTokenizer::Vocab vocab;
  vocab.reserve(j.size());
  for (auto it = j.begin(); it != j.end(); ++it) {
    // The ids number the tokens 0..N-1: a larger one would size the id -> token table by it.
    LDM_CHECK(it.value().is_number_unsigned() && it.value().get<uint64_t>() < j.size(), "CLIPTokenizer: ", path,
              ": id of token '", it.key(), "' is ", it.value().dump(), ", not an integer in [0, ", j.size(),
              ") (the file's ", j.size(), " tokens are numbered from 0)");
    vocab.emplace(it.key(), it.value().get<int>());
  }
  return vocab;
}

CLIPTokenizer::Vocab parse_vocab(const std::string& path) { return parse_vocab(parse_json_file(path), path); }

CLIPTokenizer::Merges parse_merges(const std::string& path) {
  const std::string text = read_tokenizer_file(path);
  CLIPTokenizer::Merges merges;
  merges.reserve(49152);
  size_t line_no = 0;
  for (size_t pos = 0; pos < text.size();) {
    size_t end = text.find('\n', pos);
    if (end == std::string::npos) end = text.size();
    std::string line = text.substr(pos, end - pos);
    pos = end + 1;
    ++line_no;
    if (!line.empty() && line.back() == '\r') line.pop_back();
    if (line.empty() || (line_no == 1 && line.rfind("#version", 0) == 0)) continue;
    const size_t space = line.find(' ');
    LDM_CHECK(space != std::string::npos && space > 0 && space + 1 < line.size() &&
                  line.find(' ', space + 1) == std::string::npos,
              "CLIPTokenizer: ", path, " line ", line_no, ": expected 'left right', got '", line, "'");
    merges.emplace_back(line.substr(0, space), line.substr(space + 1));
  }
  return merges;
}

// tokenizer.json (Hugging Face tokenizers): {"model": {"type": "BPE", "vocab": {token: id},
// "merges": ["left right", ...] or [["left", "right"], ...]}, ...}; the other sections (the
// normalizer, pre-tokenizer, ...) describe CLIP's text cleaning, which this class does itself.
std::pair<CLIPTokenizer::Vocab, CLIPTokenizer::Merges> parse_tokenizer_json(const std::string& path) {
  const nlohmann::json j = parse_json_file(path);
  LDM_CHECK(j.is_object() && j.contains("model") && j["model"].is_object(), "CLIPTokenizer: ", path,
            " has no \"model\" object (not a Hugging Face tokenizer.json?)");
  const nlohmann::json& m = j["model"];
  const std::string type = m.contains("type") && m["type"].is_string() ? m["type"].get<std::string>() : "?";
  LDM_CHECK(type == "BPE", "CLIPTokenizer: ", path, " holds a ", type, " model; CLIP's tokenizer is BPE");
  LDM_CHECK(m.contains("vocab") && m.contains("merges") && m["merges"].is_array(), "CLIPTokenizer: ", path,
            ": the BPE model lacks \"vocab\" or a \"merges\" list");
  CLIPTokenizer::Vocab vocab = parse_vocab(m["vocab"], path + " (model.vocab)");
  CLIPTokenizer::Merges merges;
  merges.reserve(m["merges"].size());
  for (size_t i = 0; i < m["merges"].size(); ++i) {
    const nlohmann::json& e = m["merges"][i];
    if (e.is_string()) {
      const std::string line = e.get<std::string>();
      const size_t space = line.find(' ');
      LDM_CHECK(space != std::string::npos && space > 0 && space + 1 < line.size() &&
                    line.find(' ', space + 1) == std::string::npos,
                "CLIPTokenizer: ", path, " model.merges[", i, "]: expected 'left right', got '", line, "'");
      merges.emplace_back(line.substr(0, space), line.substr(space + 1));
    } else {
      LDM_CHECK(e.is_array() && e.size() == 2 && e[0].is_string() && e[1].is_string(), "CLIPTokenizer: ", path,
                " model.merges[", i, "]: expected \"left right\" or [\"left\", \"right\"], got ", e.dump());
      merges.emplace_back(e[0].get<std::string>(), e[1].get<std::string>());
    }
  }
  return {std::move(vocab), std::move(merges)};
}

// html.unescape: named (&amp; &eacute; and legacy &amp without ';') and numeric references.
std::u32string html_unescape(const std::u32string& s) {
  if (s.find(U'&') == std::u32string::npos) return s;
  auto is_digit = [](char32_t c) { return c >= '0' && c <= '9'; };
  auto hex_value = [](char32_t c) -> int {
    if (c >= '0' && c <= '9') return static_cast<int>(c - '0');
    if (c >= 'a' && c <= 'f') return static_cast<int>(c - 'a' + 10);
    if (c >= 'A' && c <= 'F') return static_cast<int>(c - 'A' + 10);
    return -1;
  };
  std::u32string out;
  out.reserve(s.size());
  const size_t n = s.size();
  size_t i = 0;
  while (i < n) {
    if (s[i] != U'&') {
      out += s[i++];
      continue;
    }
    size_t j = i + 1;
    if (j < n && s[j] == U'#') {  // &#123; or &#x7b;
      const bool hex = j + 1 < n && (s[j + 1] == U'x' || s[j + 1] == U'X');
      size_t k = j + (hex ? 2 : 1);
      const size_t digits_begin = k;
      long long num = 0;
      while (k < n && (hex ? hex_value(s[k]) >= 0 : is_digit(s[k]))) {
        num = std::min<long long>(num * (hex ? 16 : 10) + (hex ? hex_value(s[k]) : s[k] - '0'), 0x7FFFFFFF);
        ++k;
      }
      if (k == digits_begin) {  // no digits: not a reference
        out += s[i++];
        continue;
      }
      if (k < n && s[k] == U';') ++k;
      const auto c = static_cast<char32_t>(num);
      auto invalid = [](char32_t v) {
        return (v >= 0x1 && v <= 0x8) || v == 0xB || (v >= 0xE && v <= 0x1F) || (v >= 0x7F && v <= 0x9F) ||
               (v >= 0xFDD0 && v <= 0xFDEF) || (v & 0xFFFE) == 0xFFFE;
      };
      if (c == 0) out += U'\uFFFD';
      else if (c == 0xD) out += U'\r';
      else if (c >= 0x80 && c <= 0x9F) out += uc::cp1252(c);
      else if ((c >= 0xD800 && c <= 0xDFFF) || c > 0x10FFFF) out += U'\uFFFD';
      else if (!invalid(c)) out += c;
      i = k;
      continue;
    }
    // Named: up to 32 characters other than \t \n \f space < & # ;, then an optional ';'.
    size_t k = j;
    while (k < n && k - j < 32 && std::u32string_view(U"\t\n\f <&#;").find(s[k]) == std::u32string_view::npos) ++k;
    if (k == j) {
      out += s[i++];
      continue;
    }
    const bool semicolon = k < n && s[k] == U';';
    const std::u32string name = s.substr(j, k - j);
    const size_t end = k + (semicolon ? 1 : 0);
    auto ascii = [](const std::u32string& u, size_t len, std::string* a) {
      a->clear();
      for (size_t t = 0; t < len; ++t) {
        if (u[t] >= 0x80) return false;
        *a += static_cast<char>(u[t]);
      }
      return true;
    };
    std::string a;
    char32_t cp = ascii(name, name.size(), &a) ? uc::html_entity(a, semicolon) : 0;
    if (cp) {
      out += cp;
      i = end;
      continue;
    }
    // Longest legacy entity that prefixes the match (Python: s[:x] for x = len(s)-1 .. 2).
    const size_t s_len = name.size() + (semicolon ? 1 : 0);
    size_t x = s_len - 1;
    for (; x >= 2; --x) {
      if (ascii(name, x, &a) && (cp = uc::html_entity(a, false)) != 0) break;
    }
    if (x >= 2) {
      out += cp;
      i = j + x;  // the rest of the match is kept as text
    } else {
      out += s.substr(i, end - i);
      i = end;
    }
  }
  return out;
}

// The parts of ftfy.fix_text that change prompts: curly quotes -> ASCII, then NFC.
std::u32string fix_text(std::u32string s) {
  for (char32_t& c : s) {
    if (c == 0x2BC || (c >= 0x2018 && c <= 0x201B)) c = U'\'';
    if (c >= 0x201C && c <= 0x201F) c = U'"';
  }
  return uc::nfc(s);
}

// re.sub(r"\s+", " ", text).strip()
std::u32string whitespace_clean(const std::u32string& s) {
  std::u32string out;
  out.reserve(s.size());
  for (char32_t c : s) {
    if (!uc::is_space(c)) out += c;
    else if (out.empty() || out.back() != U' ') out += U' ';
  }
  size_t b = 0, e = out.size();
  while (b < e && uc::is_py_space(out[b])) ++b;
  while (e > b && uc::is_py_space(out[e - 1])) --e;
  return out.substr(b, e - b);
}

// str.lower(), including its two context/multi-character cases.
std::u32string lower(const std::u32string& s) {
  std::u32string out;
  out.reserve(s.size());
  for (size_t i = 0; i < s.size(); ++i) {
    const char32_t c = s[i];
    if (c == 0x130) {  // capital I with dot above -> i + combining dot above
      out += U'i';
      out += char32_t(0x307);
    } else if (c == 0x3A3) {  // capital sigma: final form when it ends a word
      // Final_Sigma: \p{cased} \p{case-ignorable}* SIGMA !(\p{case-ignorable}* \p{cased})
      size_t b = i;
      while (b > 0 && uc::is_case_ignorable(s[b - 1])) --b;
      size_t a = i + 1;
      while (a < s.size() && uc::is_case_ignorable(s[a])) ++a;
      const bool is_final = b > 0 && uc::is_cased(s[b - 1]) && !(a < s.size() && uc::is_cased(s[a]));
      out += is_final ? char32_t(0x3C2) : char32_t(0x3C3);
    } else {
      out += uc::to_lower(c);
    }
  }
  return out;
}

// The regex runs with re.IGNORECASE: ASCII letters match either case, and 's' also matches
// U+017F (long s), its simple case fold.
bool fold_equal(char32_t c, char lower_ascii) {
  if (c == 0x17F) return lower_ascii == 's';
  return c < 0x80 && (c | 0x20) == static_cast<char32_t>(lower_ascii);
}

// [^\s\p{L}\p{N}] under re.IGNORECASE. U+0345 (combining ypogegrammeni, a mark) folds to
// iota, a letter, so the negated class rejects it while [\p{L}] does not take it either:
// the regex skips it like whitespace.
bool is_other(char32_t c) {
  return c != 0x345 && !uc::is_space(c) && !uc::is_letter(c) && !uc::is_number(c);
}

bool match_at(const std::u32string& s, size_t i, const char* lit) {
  for (; *lit; ++lit, ++i) {
    if (i >= s.size()) return false;
    const char ch = *lit;
    const bool letter = ch >= 'a' && ch <= 'z';
    if (letter ? !fold_equal(s[i], ch) : s[i] != static_cast<char32_t>(ch)) return false;
  }
  return true;
}

}  // namespace

struct CLIPTokenizer::Cache {
  std::mutex mutex;
  std::unordered_map<std::string, std::vector<int>> ids;  // pre-token -> ids
};

bool CLIPTokenizer::files_in(const std::string& dir) {
  return (exists(path_join(dir, "vocab.json")) && exists(path_join(dir, "merges.txt"))) ||
         exists(path_join(dir, "tokenizer.json"));
}

CLIPTokenizer::CLIPTokenizer(const std::string& dir) {
  const std::string vocab = path_join(dir, "vocab.json"), merges = path_join(dir, "merges.txt");
  if (exists(vocab) || exists(merges) || !exists(path_join(dir, "tokenizer.json"))) {
    encoder_ = parse_vocab(vocab);  // either missing: the error names it
    init(parse_merges(merges));
    return;
  }
  auto [v, m] = parse_tokenizer_json(path_join(dir, "tokenizer.json"));
  encoder_ = std::move(v);
  init(m);
}

CLIPTokenizer::CLIPTokenizer(Vocab vocab, const Merges& merges) : encoder_(std::move(vocab)) { init(merges); }

void CLIPTokenizer::init(const Merges& merges) {
  int max_id = -1;
  for (const auto& [token, id] : encoder_) {
    LDM_CHECK(id >= 0, "CLIPTokenizer: token '", token, "' has negative id ", id);
    max_id = std::max(max_id, id);
  }
  decoder_.assign(static_cast<size_t>(max_id + 1), std::string());
  for (const auto& [token, id] : encoder_) decoder_[static_cast<size_t>(id)] = token;

  auto bos = encoder_.find(kBos), eos = encoder_.find(kEos);
  LDM_CHECK(bos != encoder_.end() && eos != encoder_.end(), "CLIPTokenizer: the vocabulary lacks ",
            bos == encoder_.end() ? kBos : kEos, "; is this a CLIP tokenizer?");
  bos_id_ = bos->second;
  eos_id_ = eos->second;

  merge_ranks_.reserve(merges.size());
  for (size_t r = 0; r < merges.size(); ++r)
    merge_ranks_.insert_or_assign(merges[r].first + " " + merges[r].second, static_cast<int>(r));  // as dict(): last wins
  cache_ = std::make_shared<Cache>();
}

std::string CLIPTokenizer::clean_text(const std::string& text) {
  std::u32string s = uc::utf8_decode(text);
  s = fix_text(html_unescape(html_unescape(s)));
  return uc::utf8_encode(lower(whitespace_clean(s)));
}

std::vector<std::string> CLIPTokenizer::split_words(const std::string& text) {
  const std::u32string s = uc::utf8_decode(text);
  std::vector<std::string> words;
  const size_t n = s.size();
  size_t i = 0;
  while (i < n) {
    size_t len = 0;
    if (match_at(s, i, kBos)) {
      len = 15;
    } else if (match_at(s, i, kEos)) {
      len = 13;
    } else if (s[i] == U'\'' && (match_at(s, i, "'re") || match_at(s, i, "'ve") || match_at(s, i, "'ll"))) {
      len = 3;
    } else if (s[i] == U'\'' && (match_at(s, i, "'s") || match_at(s, i, "'t") || match_at(s, i, "'m") ||
                                 match_at(s, i, "'d"))) {
      len = 2;
    } else if (uc::is_letter(s[i])) {  // [\p{L}]+
      while (i + len < n && uc::is_letter(s[i + len])) ++len;
    } else if (uc::is_number(s[i])) {  // [\p{N}]
      len = 1;
    } else if (is_other(s[i])) {  // [^\s\p{L}\p{N}]+
      while (i + len < n && is_other(s[i + len])) ++len;
    }
    if (len == 0) {  // whitespace between matches
      ++i;
      continue;
    }
    words.push_back(uc::utf8_encode(s.substr(i, len)));
    i += len;
  }
  return words;
}

std::vector<std::string> CLIPTokenizer::bpe(const std::string& word) const {
  // One symbol per byte (as its mapped code point); the last one carries the end-of-word mark.
  std::vector<std::string> parts;
  parts.reserve(word.size());
  for (unsigned char b : word) parts.push_back(byte_map().encode[b]);
  if (parts.empty()) return parts;
  parts.back() += "</w>";

  // Repeatedly merge the adjacent pair with the lowest rank, every occurrence left to right.
  std::string key;
  while (parts.size() > 1) {
    int best_rank = -1;
    size_t best = 0;
    for (size_t i = 0; i + 1 < parts.size(); ++i) {
      key.assign(parts[i]).append(" ").append(parts[i + 1]);
      auto it = merge_ranks_.find(key);
      if (it != merge_ranks_.end() && (best_rank < 0 || it->second < best_rank)) {
        best_rank = it->second;
        best = i;
      }
    }
    if (best_rank < 0) break;
    const std::string first = parts[best], second = parts[best + 1];
    std::vector<std::string> merged;
    merged.reserve(parts.size());
    for (size_t i = 0; i < parts.size();) {
      if (i + 1 < parts.size() && parts[i] == first && parts[i + 1] == second) {
        merged.push_back(first + second);
        i += 2;
      } else {
        merged.push_back(std::move(parts[i]));
        i += 1;
      }
    }
    parts = std::move(merged);
  }
  return parts;
}

int CLIPTokenizer::token_id(const std::string& piece) const {
  auto it = encoder_.find(piece);
  return it != encoder_.end() ? it->second : eos_id_;  // transformers maps unknown pieces to unk = EOS
}

std::vector<int> CLIPTokenizer::encode(const std::string& text) const {
  std::vector<int> ids;
  for (const std::string& word : split_words(clean_text(text))) {
    if (word == kBos || word == kEos) {  // special tokens written in the prompt
      ids.push_back(word == kBos ? bos_id_ : eos_id_);
      continue;
    }
    {
      std::lock_guard<std::mutex> lock(cache_->mutex);
      auto it = cache_->ids.find(word);
      if (it != cache_->ids.end()) {
        ids.insert(ids.end(), it->second.begin(), it->second.end());
        continue;
      }
    }
    std::vector<int> word_ids;
    for (const std::string& piece : bpe(word)) word_ids.push_back(token_id(piece));
    ids.insert(ids.end(), word_ids.begin(), word_ids.end());
    std::lock_guard<std::mutex> lock(cache_->mutex);
    if (cache_->ids.size() >= 65536) cache_->ids.clear();  // bound memory on endless streams of text
    cache_->ids.emplace(word, std::move(word_ids));
  }
  return ids;
}

std::vector<int> CLIPTokenizer::encode_padded(const std::string& text, int max_length, bool* truncated) const {
  LDM_CHECK(max_length >= 2, "CLIPTokenizer: max_length must leave room for BOS and EOS, got ", max_length);
  std::vector<int> ids = encode(text);
  const size_t room = static_cast<size_t>(max_length - 2);
  if (truncated) *truncated = ids.size() > room;
  if (ids.size() > room) ids.resize(room);
  std::vector<int> out;
  out.reserve(static_cast<size_t>(max_length));
  out.push_back(bos_id_);
  out.insert(out.end(), ids.begin(), ids.end());
  out.push_back(eos_id_);
  out.resize(static_cast<size_t>(max_length), pad_id());  // [BOS, ids, EOS, EOS, ...]
  return out;
}

std::string CLIPTokenizer::decode(const std::vector<int>& ids) const {
  std::string bytes;
  for (int id : ids) {
    LDM_CHECK(id >= 0 && id < vocab_size(), "CLIPTokenizer::decode: id ", id, " outside the vocabulary [0, ",
              vocab_size(), ")");
    for (char32_t c : uc::utf8_decode(decoder_[static_cast<size_t>(id)])) {
      const int b = c < 512 ? byte_map().decode[c] : -1;
      if (b >= 0) bytes += static_cast<char>(b);
      else uc::utf8_append(bytes, c);
    }
  }
  std::string text = uc::utf8_encode(uc::utf8_decode(bytes));  // invalid UTF-8 -> U+FFFD
  std::string out;
  out.reserve(text.size());
  for (size_t i = 0; i < text.size();) {
    if (text.compare(i, 4, "</w>") == 0) {
      out += ' ';
      i += 4;
    } else {
      out += text[i++];
    }
  }
  return out;
}

}  // namespace ldm
