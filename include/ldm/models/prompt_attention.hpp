// Prompt emphasis as AUTOMATIC1111 parses it (modules/prompt_parser.py, parse_prompt_attention):
// a prompt becomes runs of text, each with the weight its CLIP token outputs are multiplied by.
//
//   (text)       weight x 1.1                 [text]   weight / 1.1
//   (text:1.5)   weight x 1.5                 nesting multiplies: ((a)) = 1.21
//   \( \) \[ \]  literal brackets             \\ a literal backslash
//   BREAK        (a word of its own) starts a new 75-token chunk: a run {"BREAK", -1}
//   an unclosed ( or [ applies to the end of the prompt; a stray ) or ] is text
//
//   parse_prompt_attention("a (red:1.3) [circle]")  ->  {"a ", 1}, {"red", 1.3}, {" ", 1}, {"circle", 1/1.1}
//
// The same steps as A1111's, so the weights are the same doubles, bit for bit: the prompt is cut
// into the tokens of its re_attention (tried in its order at each position), every bracket
// multiplies the weights of the runs opened since it, unclosed brackets are closed at the end
// (round ones first), and neighbouring runs of equal weight are merged. Its quirks are kept: a
// BREAK inside brackets gets its weight multiplied too (and is then text, not a break), and two
// BREAKs in a row merge into one run "BREAKBREAK". A weight A1111 cannot read (":1.2.3)") is
// an error here, not a Python traceback. tests/test_prompt_attention.cpp checks ~30 prompts
// against A1111's own function (scripts/make_prompt_attention_reference.py).
#pragma once
#include <cstddef>
#include <cstdlib>
#include <string>
#include <utility>
#include <vector>

#include "ldm/core/error.hpp"

namespace ldm {

struct PromptRun {
  std::string text;
  double weight = 1.0;  // -1 (and "BREAK"): a chunk break
  bool operator==(const PromptRun& o) const { return text == o.text && weight == o.weight; }
};

constexpr double kBreakWeight = -1.0;

namespace detail {

// One token of A1111's re_attention at `pos`: its length, and the weight of ":<number>)".
struct AttentionToken {
  size_t length = 0;
  bool weight_given = false;
  std::string weight;  // the number's text
};

inline bool is_attention_special(char c) { return c == '\\' || c == '(' || c == ')' || c == '[' || c == ']' || c == ':'; }

inline AttentionToken attention_token(const std::string& s, size_t pos) {
  const char c = s[pos];
  if (c == '\\') {  // \( \) \[ \] \\ (two characters), else a lone backslash
    const char n = pos + 1 < s.size() ? s[pos + 1] : '\0';
    return {n == '(' || n == ')' || n == '[' || n == ']' || n == '\\' ? size_t(2) : size_t(1), false, {}};
  }
  if (c == '(' || c == '[' || c == ')' || c == ']') return {1, false, {}};
  if (c == ':') {  // ":([+-]?[.\d]+)\)", else a lone ':'
    size_t e = pos + 1;
    if (e < s.size() && (s[e] == '+' || s[e] == '-')) ++e;
    const size_t digits = e;
    while (e < s.size() && (s[e] == '.' || (s[e] >= '0' && s[e] <= '9'))) ++e;
    if (e > digits && e < s.size() && s[e] == ')') return {e + 1 - pos, true, s.substr(pos + 1, e - pos - 1)};
    return {1, false, {}};
  }
  size_t e = pos;  // "[^\\()\[\]:]+"
  while (e < s.size() && !is_attention_special(s[e])) ++e;
  return {e - pos, false, {}};
}

// Python's float() of "[+-]?[.\d]+" (which may not be a number: "1.2.3", ".").
inline double attention_weight(const std::string& w) {
  const bool ok = w.find_first_of("0123456789") != std::string::npos &&
                  w.find('.') == w.rfind('.');  // at most one point, at least one digit
  LDM_CHECK(ok, "prompt emphasis: '(…:", w, ")' has no number after the ':' (write e.g. (red:1.2), or \\( \\) for "
            "literal brackets)");
  return std::strtod(w.c_str(), nullptr);
}

// A word character of Python's \b on str: letters, digits, '_' (and, here, any byte of a
// non-ASCII UTF-8 character: the letters of other scripts).
inline bool is_word_char(unsigned char c) {
  return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '_' || c >= 0x80;
}

inline bool is_space(char c) { return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\f' || c == '\v'; }

// re.split(r"\s*\bBREAK\b\s*", text): the parts between the BREAK words.
inline std::vector<std::string> split_on_break(const std::string& t) {
  std::vector<std::string> parts;
  size_t start = 0, search = 0;
  while (true) {
    size_t k = t.find("BREAK", search);
    // \bBREAK\b: no word character just before or just after
    while (k != std::string::npos && ((k > 0 && is_word_char(t[k - 1])) ||
                                      (k + 5 < t.size() && is_word_char(t[k + 5]))))
      k = t.find("BREAK", k + 1);
    if (k == std::string::npos) break;
    size_t a = k, b = k + 5;
    while (a > start && is_space(t[a - 1])) --a;  // \s* before, back to the previous match's end
    while (b < t.size() && is_space(t[b])) ++b;
    parts.push_back(t.substr(start, a - start));
    start = search = b;
  }
  parts.push_back(t.substr(start));
  return parts;
}

}  // namespace detail

inline std::vector<PromptRun> parse_prompt_attention(const std::string& text) {
  constexpr double kRound = 1.1, kSquare = 1 / 1.1;
  std::vector<PromptRun> res;
  std::vector<size_t> round_brackets, square_brackets;
  auto multiply_range = [&res](size_t start, double m) {
    for (size_t p = start; p < res.size(); ++p) res[p].weight *= m;
  };
  for (size_t pos = 0; pos < text.size();) {
    const detail::AttentionToken tok = detail::attention_token(text, pos);
    const std::string t = text.substr(pos, tok.length);
    pos += tok.length;
    if (t[0] == '\\') {
      res.push_back({t.substr(1), 1.0});
    } else if (t == "(") {
      round_brackets.push_back(res.size());
    } else if (t == "[") {
      square_brackets.push_back(res.size());
    } else if (tok.weight_given && !round_brackets.empty()) {
      multiply_range(round_brackets.back(), detail::attention_weight(tok.weight));
      round_brackets.pop_back();
    } else if (t == ")" && !round_brackets.empty()) {
      multiply_range(round_brackets.back(), kRound);
      round_brackets.pop_back();
    } else if (t == "]" && !square_brackets.empty()) {
      multiply_range(square_brackets.back(), kSquare);
      square_brackets.pop_back();
    } else {
      const std::vector<std::string> parts = detail::split_on_break(t);
      for (size_t i = 0; i < parts.size(); ++i) {
        if (i > 0) res.push_back({"BREAK", kBreakWeight});
        res.push_back({parts[i], 1.0});
      }
    }
  }
  for (size_t p : round_brackets) multiply_range(p, kRound);
  for (size_t p : square_brackets) multiply_range(p, kSquare);
  if (res.empty()) res.push_back({"", 1.0});
  for (size_t i = 0; i + 1 < res.size();) {  // merge runs of identical weights
    if (res[i].weight == res[i + 1].weight) {
      res[i].text += res[i + 1].text;
      res.erase(res.begin() + std::ptrdiff_t(i) + 1);
    } else {
      ++i;
    }
  }
  return res;
}

}  // namespace ldm
