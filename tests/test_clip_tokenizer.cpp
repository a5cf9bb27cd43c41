// Tests for ldm::CLIPTokenizer (transformers.CLIPTokenizer): the BPE algorithm on a toy
// vocabulary, text clean-up and splitting, and every case of ../shared/clip-tokenizer.
#include <catch2/catch.hpp>

#include <chrono>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>

#include "ldm/core/error.hpp"
#include "ldm/models/clip_tokenizer.hpp"
#include "skip.hpp"

namespace fs = std::filesystem;
using ldm::CLIPTokenizer;
using Strings = std::vector<std::string>;

namespace {

// A toy tokenizer: single characters, a few merges, and the two special tokens.
CLIPTokenizer toy_tokenizer() {
  CLIPTokenizer::Vocab vocab;
  const Strings tokens = {"l",    "o",     "w",        "e",    "r",    "a",         "l</w>",         "o</w>",
                          "w</w>", "e</w>", "r</w>",    "a</w>", "!</w>", "lo",        "low",           "er</w>",
                          "lower</w>", "aa", "aaaa</w>", "<|startoftext|>", "<|endoftext|>"};
  for (size_t i = 0; i < tokens.size(); ++i) vocab[tokens[i]] = static_cast<int>(i);
  const CLIPTokenizer::Merges merges = {
      {"l", "o"},     // 0
      {"e", "r</w>"},  // 1
      {"lo", "w"},    // 2
      {"low", "er</w>"},  // 3
      {"w", "e"},     // 4: loses to "e r</w>" (rank 1) in "lower"
      {"a", "a"},     // 5
      {"aa", "aa</w>"},  // 6: needs "aa</w>", which never forms
  };
  return CLIPTokenizer(vocab, merges);
}

}  // namespace

TEST_CASE("BPE merges by rank on a toy vocabulary", "[clip_tokenizer]") {
  const CLIPTokenizer tok = toy_tokenizer();
  CHECK(tok.bos_id() == 19);
  CHECK(tok.eos_id() == 19 + 1);
  CHECK(tok.vocab_size() == 21);

  CHECK(tok.bpe("lower") == Strings{"lower</w>"});  // l o w e r</w> -> lo -> er</w> -> low -> lower</w>
  CHECK(tok.bpe("low") == Strings{"lo", "w</w>"});  // "lo w</w>" is no merge
  CHECK(tok.bpe("a") == Strings{"a</w>"});
  // Every occurrence of the best pair merges, left to right without overlap.
  CHECK(tok.bpe("aaaa") == Strings{"aa", "a", "a</w>"});
  CHECK(tok.bpe("aaaaa") == Strings{"aa", "aa", "a</w>"});
  // Bytes map to printable code points (GPT-2 bytes_to_unicode): space -> U+0120, NUL -> U+0100.
  CHECK(tok.bpe("\xc3\xa9") == Strings{"\xc3\x83", "\xc2\xa9</w>"});  // e-acute = bytes C3 A9
  CHECK(tok.bpe(" ") == Strings{"\xc4\xa0</w>"});
  CHECK(tok.bpe(std::string(1, '\0')) == Strings{"\xc4\x80</w>"});

  CHECK(tok.encode("Lower  low!") == std::vector<int>{16, 13, 8, 12});
  CHECK(tok.encode("Lower  low!") == std::vector<int>{16, 13, 8, 12});  // again, from the cache
  CHECK(tok.encode("lowz") == std::vector<int>{14, 20});                // unknown "z</w>" -> unk = EOS
  CHECK(tok.decode({16, 13, 8, 12}) == "lower low ! ");
}

TEST_CASE("encode_padded adds BOS/EOS, truncates and pads", "[clip_tokenizer]") {
  const CLIPTokenizer tok = toy_tokenizer();
  bool truncated = true;
  CHECK(tok.encode_padded("lower", 5, &truncated) == std::vector<int>{19, 16, 20, 20, 20});
  CHECK_FALSE(truncated);
  CHECK(tok.encode_padded("lower lower lower lower", 4, &truncated) == std::vector<int>{19, 16, 16, 20});
  CHECK(truncated);
  CHECK(tok.encode_padded("", 3) == std::vector<int>{19, 20, 20});
  CHECK_THROWS_AS(tok.encode_padded("x", 1), ldm::Error);
}

TEST_CASE("text clean-up follows simple_tokenizer", "[clip_tokenizer]") {
  // html.unescape twice, named (with and without ';') and numeric references
  CHECK(CLIPTokenizer::clean_text("Cats &amp; Dogs") == "cats & dogs");
  CHECK(CLIPTokenizer::clean_text("&amp;lt;b&amp;gt;") == "<b>");
  CHECK(CLIPTokenizer::clean_text("&#65;&#x42;&#X43") == "abc");
  CHECK(CLIPTokenizer::clean_text("&copy2024 &eacute;t&eacute;") == "\xc2\xa9" "2024 \xc3\xa9t\xc3\xa9");
  CHECK(CLIPTokenizer::clean_text("&#150; &nosuch; & &;") == "\xe2\x80\x93 &nosuch; & &;");
  // whitespace runs (tabs, newlines, no-break space) collapse; ends are stripped
  CHECK(CLIPTokenizer::clean_text("  a \t\n b&nbsp;&nbsp;c  ") == "a b c");
  // Unicode lower-case: Latin, Greek (final sigma), Cyrillic, dotted I
  CHECK(CLIPTokenizer::clean_text("\xc3\x80\xc3\x89\xc3\x8e \xce\x9f\xce\x94\xce\xa5\xce\xa3\xce\xa3\xce\x95\xce\xa5\xce\xa3") ==
        "\xc3\xa0\xc3\xa9\xc3\xae \xce\xbf\xce\xb4\xcf\x85\xcf\x83\xcf\x83\xce\xb5\xcf\x85\xcf\x82");
  CHECK(CLIPTokenizer::clean_text("\xd0\x9f\xd0\xa0\xd0\x98\xd0\x92\xd0\x95\xd0\xa2") ==
        "\xd0\xbf\xd1\x80\xd0\xb8\xd0\xb2\xd0\xb5\xd1\x82");
  CHECK(CLIPTokenizer::clean_text("\xc4\xb0") == "i\xcc\x87");
  // ftfy: curly quotes become ASCII, decomposed accents compose (NFC)
  CHECK(CLIPTokenizer::clean_text("it\xe2\x80\x99s \xe2\x80\x9cok\xe2\x80\x9d") == "it's \"ok\"");
  CHECK(CLIPTokenizer::clean_text("cafe\xcc\x81") == "caf\xc3\xa9");
  CHECK(CLIPTokenizer::clean_text("a\xcc\x82\xcc\xa3") == "\xe1\xba\xad");  // marks reordered, then a-circumflex-dot
  CHECK(CLIPTokenizer::clean_text("\xe2\x84\xab") == "\xc3\xa5");          // ANGSTROM SIGN -> a-ring
  CHECK(CLIPTokenizer::clean_text("\xe1\x84\x80\xe1\x85\xa1") == "\xea\xb0\x80");  // Hangul jamo -> syllable
}

TEST_CASE("pre-tokenizer regex splits like CLIP", "[clip_tokenizer]") {
  CHECK(CLIPTokenizer::split_words("it's 3.14!! we'll") == Strings{"it", "'s", "3", ".", "1", "4", "!!", "we", "'ll"});
  CHECK(CLIPTokenizer::split_words("x!!'s") == Strings{"x", "!!'", "s"});  // the greedy run eats the apostrophe
  CHECK(CLIPTokenizer::split_words("<|endoftext|>a<|startoftext|>") ==
        Strings{"<|endoftext|>", "a", "<|startoftext|>"});
  CHECK(CLIPTokenizer::split_words("caf\xc3\xa9 \xe6\x9c\xba\xe5\x99\xa8 \xe2\x85\xa7") ==
        Strings{"caf\xc3\xa9", "\xe6\x9c\xba\xe5\x99\xa8", "\xe2\x85\xa7"});  // letters; Roman numeral is \p{N}
  CHECK(CLIPTokenizer::split_words(" \t ").empty());
  // U+0345 folds to a letter under IGNORECASE, so no alternative takes it: it is skipped.
  CHECK(CLIPTokenizer::split_words("a\xcd\x85!") == Strings{"a", "!"});
}

TEST_CASE("a missing tokenizer file gives a clear error", "[clip_tokenizer]") {
  const fs::path dir = fs::temp_directory_path() / "ldm_test_clip_tokenizer";
  fs::remove_all(dir);
  fs::create_directories(dir);
  CHECK_THROWS_WITH(CLIPTokenizer(dir.string()), Catch::Contains("vocab.json"));

  std::ofstream(dir / "vocab.json") << R"({"a</w>": 0, "<|startoftext|>": 1, "<|endoftext|>": 2})";
  CHECK_THROWS_WITH(CLIPTokenizer(dir.string()), Catch::Contains("merges.txt"));

  std::ofstream(dir / "merges.txt") << "#version: 0.2\na b c\n";
  CHECK_THROWS_WITH(CLIPTokenizer(dir.string()), Catch::Contains("line 2"));

  std::ofstream(dir / "merges.txt") << "#version: 0.2\n";
  CHECK(CLIPTokenizer(dir.string()).encode("a") == std::vector<int>{0});

  std::ofstream(dir / "vocab.json") << R"({"a</w>": 0})";
  CHECK_THROWS_WITH(CLIPTokenizer(dir.string()), Catch::Contains("<|startoftext|>"));

  // An id beyond the tokens' count would size the id -> token table by it (2e9 strings:
  // std::bad_alloc); a fractional or negative one is no id.
  for (const char* id : {"2000000000", "2.5", "-1", "\"1\""}) {
    std::ofstream(dir / "vocab.json") << R"({"a</w>": 0, "<|startoftext|>": 1, "<|endoftext|>": )" << id << "}";
    CHECK_THROWS_WITH(CLIPTokenizer(dir.string()), Catch::Contains("id of token '<|endoftext|>' is " + std::string(id) +
                                                                   ", not an integer in [0, 3)"));
  }
  std::ofstream(dir / "vocab.json") << "{\"a</w>\": 0,";
  CHECK_THROWS_WITH(CLIPTokenizer(dir.string()), Catch::Contains("vocab.json is not valid JSON: parse error") &&
                                                     !Catch::Contains("json.exception"));
  fs::remove_all(dir);
}

TEST_CASE("CLIP ViT-L/14 tokenizer reproduces the reference ids", "[clip_tokenizer][shared]") {
  LDM_REQUIRE_SHARED(dir, "clip-tokenizer");
  const auto t0 = std::chrono::steady_clock::now();
  const CLIPTokenizer tok(dir);
  const double load_ms = std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count();
  WARN("vocab.json + merges.txt loaded in " << load_ms << " ms");
  CHECK(tok.vocab_size() == 49408);

  std::ifstream f(fs::path(dir) / "tokenizer_cases.json");
  const nlohmann::json ref = nlohmann::json::parse(f);
  CHECK(tok.bos_id() == ref.at("bos").get<int>());
  CHECK(tok.eos_id() == ref.at("eos").get<int>());
  CHECK(tok.pad_id() == ref.at("pad").get<int>());
  const int max_length = ref.at("max_length").get<int>();

  int passed = 0;
  for (const auto& c : ref.at("cases")) {
    const std::string prompt = c.at("prompt").get<std::string>();
    const auto ids = c.at("ids").get<std::vector<int>>();
    const auto ids77 = c.at("input_ids_77").get<std::vector<int>>();
    INFO("prompt: " << prompt);
    bool truncated = false;
    const std::vector<int> got = tok.encode(prompt);
    const std::vector<int> got77 = tok.encode_padded(prompt, max_length, &truncated);
    CHECK(got == ids);
    CHECK(got77 == ids77);
    CHECK(truncated == (ids.size() + 2 > static_cast<size_t>(max_length)));
    passed += (got == ids && got77 == ids77);
  }
  CHECK(passed == static_cast<int>(ref.at("cases").size()));
  WARN(passed << "/" << ref.at("cases").size() << " reference prompts match");

  CHECK(tok.decode(tok.encode("A photo of an astronaut, riding!")) == "a photo of an astronaut , riding ! ");
}

TEST_CASE("a tokenizer.json alone (what transformers >= 5 saves) reads as vocab.json + merges.txt", "[clip_tokenizer]") {
  const fs::path dir = fs::temp_directory_path() / "ldm_test_clip_tokenizer_json";
  fs::remove_all(dir);
  fs::create_directories(dir);
  CHECK_FALSE(CLIPTokenizer::files_in(dir.string()));
  const std::string vocab = R"({"l": 0, "o": 1, "w</w>": 2, "lo": 3, "low</w>": 4, "l</w>": 5, "<|startoftext|>": 6, "<|endoftext|>": 7})";
  // Merges as strings (tokenizers < 0.20) and as pairs (later): the same tokenizer.
  for (const char* merges : {R"(["l o", "lo w</w>"])", R"([["l", "o"], ["lo", "w</w>"]])"}) {
    INFO(merges);
    std::ofstream(dir / "tokenizer.json") << R"({"version": "1.0", "added_tokens": [], "model": {"type": "BPE", "vocab": )"
                                          << vocab << R"(, "merges": )" << merges << "}}";
    CHECK(CLIPTokenizer::files_in(dir.string()));
    const CLIPTokenizer tok(dir.string());
    CHECK(tok.encode("low lol") == std::vector<int>{4, 3, 5});
    CHECK(tok.encode_padded("low", 4) == std::vector<int>{6, 4, 7, 7});
  }
  // Errors name the file and what is wrong.
  std::ofstream(dir / "tokenizer.json") << R"({"model": {"type": "Unigram", "vocab": []}})";
  CHECK_THROWS_WITH(CLIPTokenizer(dir.string()), Catch::Contains("tokenizer.json holds a Unigram model"));
  std::ofstream(dir / "tokenizer.json") << R"({"version": "1.0"})";
  CHECK_THROWS_WITH(CLIPTokenizer(dir.string()), Catch::Contains("has no \"model\" object"));
  std::ofstream(dir / "tokenizer.json") << R"({"model": {"type": "BPE", "vocab": )" << vocab
                                        << R"(, "merges": ["l o", ["lo"]]}})";
  CHECK_THROWS_WITH(CLIPTokenizer(dir.string()), Catch::Contains("model.merges[1]: expected"));
  std::ofstream(dir / "tokenizer.json") << R"({"model": {"type": "BPE", "vocab": {"a": -1}, "merges": []}})";
  CHECK_THROWS_WITH(CLIPTokenizer(dir.string()), Catch::Contains("tokenizer.json (model.vocab): id of token 'a'"));
  // vocab.json and merges.txt, where present, are read instead.
  std::ofstream(dir / "vocab.json") << R"({"a</w>": 0, "<|startoftext|>": 1, "<|endoftext|>": 2})";
  std::ofstream(dir / "merges.txt") << "#version: 0.2\n";
  CHECK(CLIPTokenizer(dir.string()).encode("a") == std::vector<int>{0});
  fs::remove(dir / "merges.txt");  // one of the two alone: an error naming the missing one
  CHECK_THROWS_WITH(CLIPTokenizer(dir.string()), Catch::Contains("merges.txt"));
  fs::remove_all(dir);
}

TEST_CASE("CLIP ViT-L/14 from a tokenizer.json gives the reference ids", "[clip_tokenizer][shared]") {
  LDM_REQUIRE_SHARED(ref_dir, "clip-tokenizer");
  // The reference tokenizer's vocab.json and merges.txt, written as the tokenizer.json of a
  // folder saved by transformers >= 5 (merges as pairs).
  const fs::path dir = fs::temp_directory_path() / "ldm_test_clip_tokenizer_json_full";
  fs::remove_all(dir);
  fs::create_directories(dir);
  nlohmann::json merges = nlohmann::json::array();
  std::ifstream mf(fs::path(ref_dir) / "merges.txt");
  for (std::string line; std::getline(mf, line);) {
    if (line.empty() || line.rfind("#version", 0) == 0) continue;
    const size_t space = line.find(' ');
    merges.push_back({line.substr(0, space), line.substr(space + 1)});
  }
  std::ifstream vf(fs::path(ref_dir) / "vocab.json");
  const nlohmann::json j = {{"model", {{"type", "BPE"}, {"vocab", nlohmann::json::parse(vf)}, {"merges", merges}}}};
  std::ofstream(dir / "tokenizer.json") << j.dump();
  const CLIPTokenizer tok(dir.string());
  CHECK(tok.vocab_size() == 49408);

  std::ifstream f(fs::path(ref_dir) / "tokenizer_cases.json");
  const nlohmann::json ref = nlohmann::json::parse(f);
  const int max_length = ref.at("max_length").get<int>();
  int passed = 0;
  for (const auto& c : ref.at("cases")) {
    INFO("prompt: " << c.at("prompt").get<std::string>());
    const std::vector<int> got77 = tok.encode_padded(c.at("prompt").get<std::string>(), max_length);
    CHECK(got77 == c.at("input_ids_77").get<std::vector<int>>());
    passed += got77 == c.at("input_ids_77").get<std::vector<int>>();
  }
  CHECK(passed == static_cast<int>(ref.at("cases").size()));
  WARN(passed << "/" << ref.at("cases").size() << " reference prompts match from tokenizer.json");
  fs::remove_all(dir);
}
