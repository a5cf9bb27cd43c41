// Files a user names (checkpoints, configs, tokenizer files, images, --inputs): anything but a
// regular file is refused with an error that says what it is, before a read could block on a
// FIFO or a device; small text files (JSON, merges.txt) are read whole, with a size limit, and
// every failure names the file and the cause.
//
//   check_regular_file(path, "image");                   // before a library opens it by name
//   int fd = open_regular_file(path, "safetensors file", &size);
//   nlohmann::json j = read_json_file(dir + "/config.json", "U-Net config");
#pragma once
#include <cstdint>
#include <nlohmann/json.hpp>
#include <string>

namespace ldm {

// The largest text file read whole: config.json, vocab.json and merges.txt are under 2 MB;
// 100 MB is also the safetensors header limit of the reference implementation.
constexpr uint64_t kMaxTextFileBytes = uint64_t(100) << 20;

// Throws unless `path` (after symlinks) is a regular file: "cannot read <what> '<path>': <OS
// reason>" or "<what> '<path>' is a FIFO (named pipe), not a regular file".
void check_regular_file(const std::string& path, const std::string& what);

// The same, opening it: a read-only descriptor (the caller closes it) and its size. Opened
// non-blocking, so that a FIFO swapped in after a check cannot block the open either.
int open_regular_file(const std::string& path, const std::string& what, uint64_t* size);

// The whole file, refused beyond max_bytes.
std::string read_file(const std::string& path, const std::string& what, uint64_t max_bytes = kMaxTextFileBytes);

// The file parsed as JSON; invalid JSON is an error naming the file, the line and the cause.
nlohmann::json read_json_file(const std::string& path, const std::string& what);

// The cause in a nlohmann::json exception's message, without its "[json.exception.x.n] " tag.
std::string json_error_reason(const std::exception& e);

}  // namespace ldm
