// safetensors: the tensor file format of Hugging Face (and of every SD1.5 download).
//
// Layout: [u64 little-endian N][N bytes of JSON header][data]. The header maps each tensor
// name to {"dtype", "shape", "data_offsets": [begin, end]} (offsets relative to the data
// section) and may hold "__metadata__": {string: string}.
//
// The reader mmaps the file and converts on load (F32, F16, BF16, F64, I64, I32 -> float32),
// so a fp32 checkpoint costs no copy until a tensor is asked for. It is as strict as the
// reference implementation (the safetensors crate): integer offsets whose tensors tile the data
// section exactly, shapes that are lists of non-negative integers, string-to-string metadata.
// Every malformed file gets an ldm::Error that names the file and what is wrong with it.
#pragma once
#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "ldm/core/tensor.hpp"

namespace ldm {

enum class DType { F32, F16, BF16, F64, I64, I32, U8, BOOL };

const char* dtype_name(DType d);
size_t dtype_size(DType d);
DType dtype_from_name(const std::string& name);  // "F32", "F16", ...; throws on unknown

struct TensorInfo {
  std::string name;
  DType dtype;
  Shape shape;
  uint64_t begin = 0, end = 0;  // byte offsets within the data section
};

class SafeTensors {
 public:
  explicit SafeTensors(const std::string& path);

  const std::string& path() const { return path_; }
  bool contains(const std::string& name) const { return index_.count(name) != 0; }
  const TensorInfo& info(const std::string& name) const;
  std::vector<std::string> names() const;  // sorted
  const std::map<std::string, std::string>& metadata() const { return metadata_; }

  // The tensor as float32 (converted from its stored dtype; integers are cast).
  Tensor load(const std::string& name) const;
  // A float32 tensor without a copy: a read-only view of the mapped file that keeps the
  // mapping alive (weights are never written to). Other dtypes, and float32 data not aligned
  // for floats (a header not padded to 8 bytes), are copied as by load().
  Tensor view(const std::string& name) const;
  // Integer tensors (I64, I32) as int64.
  std::vector<int64_t> load_i64(const std::string& name) const;
  // The stored bytes, for zero-copy use of a tensor already in the wanted dtype (not
  // necessarily aligned for it: read them with memcpy).
  const uint8_t* raw(const std::string& name) const;

  // Lets the process's copy of a tensor's pages go (of every tensor: release_pages()). The file
  // stays in the page cache, where the kernel may reclaim it, and a later read of a view maps the
  // same bytes back: for weights not in use (ldm/model_runner.hpp), which the peak memory of a
  // process (its RSS) then does not count. Safe at any time: the mapping is read-only and never
  // written, so nothing but those pages' residence is lost.
  void release_pages(const std::string& name) const;
  void release_pages() const;

 private:
  std::string path_;
  std::shared_ptr<void> map_;  // the mmap, released when the last view of it goes
  const uint8_t* data_ = nullptr;
  uint64_t data_size_ = 0;
  std::map<std::string, TensorInfo> index_;
  std::map<std::string, std::string> metadata_;
};

// Lets the pages of [p, p + bytes) go as SafeTensors::release_pages does, when they lie in a
// mapped safetensors file; nothing for any other memory. For a layer that keeps a derived copy
// of a weight and never reads the weight again (Conv2d and its Winograd transform).
void release_file_pages(const void* p, size_t bytes);

// The order in which writers lay tensors out: larger dtypes first (stable otherwise), so that
// after the header, padded to 8 bytes, every tensor starts aligned for its dtype (as the
// safetensors crate writes them).
inline bool aligned_before(DType a, DType b) { return dtype_size(a) > dtype_size(b); }

// Writes a safetensors file; tensors are laid out by aligned_before, then in insertion order.
class SafeTensorsWriter {
 public:
  void add(const std::string& name, const Tensor& t, DType dtype = DType::F32);  // F32, F16 or BF16
  void add_i64(const std::string& name, const Shape& shape, const std::vector<int64_t>& values);
  void set_metadata(const std::string& key, const std::string& value) { metadata_[key] = value; }
  void save(const std::string& path) const;

 private:
  struct Entry {
    std::string name;
    DType dtype;
    Shape shape;
    std::vector<uint8_t> bytes;
  };
  std::vector<Entry> entries_;
  std::map<std::string, std::string> metadata_;
};

}  // namespace ldm
