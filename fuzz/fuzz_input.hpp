// What the fuzz targets share: the fuzzer's bytes as a file (the readers under test take a path,
// as the CLI gives them one) and the tokenizer the text targets run.
//
// A target's contract: any input either works or throws ldm::Error (a sentence for the user).
// Everything else is a finding: a crash, a sanitizer report, a hang, an out-of-memory, and any
// other exception (bad_alloc, json::exception, out_of_range), which escapes to libFuzzer.
#pragma once
#include <unistd.h>

#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <string>

#include "ldm/core/error.hpp"
#include "ldm/core/shared_dir.hpp"
#include "ldm/models/clip_tokenizer.hpp"

namespace ldm::fuzz {

// One file per process under $TMPDIR, rewritten for every input, removed at exit.
class InputFile {
 public:
  explicit InputFile(const char* suffix) {
    const char* tmp = std::getenv("TMPDIR");
    path_ = std::string(tmp && *tmp ? tmp : "/tmp") + "/ldm_fuzz_" + std::to_string(::getpid()) + suffix;
  }
  ~InputFile() { std::remove(path_.c_str()); }

  const std::string& write(const uint8_t* data, size_t size) {
    std::FILE* f = std::fopen(path_.c_str(), "wb");
    LDM_CHECK(f, "fuzz: cannot write ", path_);
    const bool ok = std::fwrite(data, 1, size, f) == size;
    LDM_CHECK(std::fclose(f) == 0 && ok, "fuzz: cannot write ", path_);
    return path_;
  }

 private:
  std::string path_;
};

// SD1.5's CLIP tokenizer from shared/clip-tokenizer (core/shared_dir.hpp: $LDM_SHARED, else the folder CMake saw).
inline const CLIPTokenizer& tokenizer() {
  static const CLIPTokenizer tok(shared_dir() + "/clip-tokenizer");
  return tok;
}

}  // namespace ldm::fuzz
