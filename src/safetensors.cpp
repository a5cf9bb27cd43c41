// safetensors reader (mmap) and writer. See include/ldm/core/safetensors.hpp.
#include "ldm/core/safetensors.hpp"

#include <sys/mman.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <fstream>
#include <map>
#include <mutex>
#include <new>
#include <nlohmann/json.hpp>
#include <set>

#include "ldm/core/atomic_file.hpp"
#include "ldm/core/files.hpp"
#include "ldm/core/half.hpp"

namespace ldm {

const char* dtype_name(DType d) {
  switch (d) {
    case DType::F32: return "F32";
    case DType::F16: return "F16";
    case DType::BF16: return "BF16";
    case DType::F64: return "F64";
    case DType::I64: return "I64";
    case DType::I32: return "I32";
    case DType::U8: return "U8";
    case DType::BOOL: return "BOOL";
  }
  return "?";
}

size_t dtype_size(DType d) {
  switch (d) {
    case DType::F64:
    case DType::I64: return 8;
    case DType::F32:
    case DType::I32: return 4;
    case DType::F16:
    case DType::BF16: return 2;
    case DType::U8:
    case DType::BOOL: return 1;
  }
  return 0;
}

namespace {

const DType kDTypes[] = {DType::F32, DType::F16, DType::BF16, DType::F64, DType::I64, DType::I32, DType::U8, DType::BOOL};
const char* const kSupported = "(supported: F32, F16, BF16, F64, I64, I32, U8, BOOL)";

bool find_dtype(const std::string& n, DType* d) {
  for (DType k : kDTypes)
    if (n == dtype_name(k)) return *d = k, true;
  return false;
}

}  // namespace

DType dtype_from_name(const std::string& n) {
  DType d;
  LDM_CHECK(find_dtype(n, &d), "unknown safetensors dtype \"", n, "\" ", kSupported);
  return d;
}

namespace {

// The reference implementation's limit: a larger header is a corrupt or hostile file.
constexpr uint64_t kMaxHeaderBytes = 100'000'000;

// The address ranges of every mapped file (begin -> end), for release_file_pages.
struct MappedRanges {
  std::mutex mutex;
  std::map<uintptr_t, uintptr_t> ranges;
};
MappedRanges& mapped_ranges() {
  static MappedRanges* r = new MappedRanges;  // never destroyed: mappings may outlive static destruction
  return *r;
}

struct Mapping {
  void* addr = nullptr;
  size_t size = 0;
  void add_to_ranges() {
    MappedRanges& r = mapped_ranges();
    std::lock_guard<std::mutex> lock(r.mutex);
    r.ranges[reinterpret_cast<uintptr_t>(addr)] = reinterpret_cast<uintptr_t>(addr) + size;
  }
  ~Mapping() {
    if (!addr || addr == MAP_FAILED) return;
    {
      MappedRanges& r = mapped_ranges();
      std::lock_guard<std::mutex> lock(r.mutex);
      r.ranges.erase(reinterpret_cast<uintptr_t>(addr));
    }
    munmap(addr, size);
  }
};

// A JSON value for a message, cut short.
std::string brief(const nlohmann::json& j) {
  std::string s = j.dump();
  return s.size() > 60 ? s.substr(0, 57) + "..." : s;
}

// One header entry, checked as the format requires: "dtype" a known name, "shape" a list of
// non-negative integers, "data_offsets" two non-negative integers spanning exactly the bytes
// of that shape, inside the data section.
TensorInfo parse_entry(const std::string& where, const std::string& name, const nlohmann::json& e, uint64_t data_size) {
  const std::string tensor = "tensor '" + name + "'";
  LDM_CHECK(e.is_object() && e.contains("dtype") && e.contains("shape") && e.contains("data_offsets"), where,
            ": entry for ", tensor, " needs dtype, shape and data_offsets");
  TensorInfo info;
  info.name = name;
  const auto& dtype = e["dtype"];
  LDM_CHECK(dtype.is_string(), where, ": ", tensor, " has \"dtype\": ", brief(dtype), "; expected a name such as \"F32\"");
  LDM_CHECK(find_dtype(dtype.get<std::string>(), &info.dtype), where, ": ", tensor, " has unknown safetensors dtype ",
            dtype.dump(), " ", kSupported);
  const auto& shape = e["shape"];
  bool ok = shape.is_array();
  for (const auto& d : shape) {
    ok = ok && d.is_number_unsigned() && d.get<uint64_t>() <= uint64_t(INT64_MAX);
    if (ok) info.shape.push_back(int64_t(d.get<uint64_t>()));
  }
  LDM_CHECK(ok, where, ": ", tensor, " has \"shape\": ", brief(shape),
            "; a shape is a list of non-negative integers such as [320, 4, 3, 3]");
  const auto& offsets = e["data_offsets"];
  LDM_CHECK(offsets.is_array() && offsets.size() == 2 && offsets[0].is_number_unsigned() &&
                offsets[1].is_number_unsigned(),
            where, ": ", tensor, " has \"data_offsets\": ", brief(offsets),
            "; expected two non-negative integers [begin, end]");
  info.begin = offsets[0].get<uint64_t>();
  info.end = offsets[1].get<uint64_t>();
  LDM_CHECK(info.begin <= info.end && info.end <= data_size, where, ": ", tensor, " has data offsets [", info.begin,
            ", ", info.end, ") outside the ", data_size, "-byte data section (file truncated?)");
  const uint64_t expected = checked_bytes(info.shape, dtype_size(info.dtype), tensor + " in " + where);
  LDM_CHECK(info.end - info.begin == expected, where, ": ", tensor, " of shape ", shape_str(info.shape), " ",
            dtype_name(info.dtype), " needs ", expected, " bytes but its offsets span ", info.end - info.begin);
  return info;
}

// The tensors, in offset order, must tile the data section: no overlap, no hole, nothing after.
void check_tiling(const std::string& where, const std::map<std::string, TensorInfo>& index, uint64_t data_size) {
  std::vector<const TensorInfo*> order;
  order.reserve(index.size());
  for (const auto& kv : index) order.push_back(&kv.second);
  std::sort(order.begin(), order.end(), [](const TensorInfo* a, const TensorInfo* b) {
    return a->begin != b->begin ? a->begin < b->begin : a->end < b->end;
  });
  uint64_t covered = 0;
  const TensorInfo* previous = nullptr;
  for (const TensorInfo* t : order) {
    LDM_CHECK(t->begin >= covered, where, ": tensor '", t->name, "' at bytes [", t->begin, ", ", t->end,
              ") overlaps tensor '", previous->name, "' at [", previous->begin, ", ", previous->end,
              "); each tensor must have its own bytes");
    LDM_CHECK(t->begin == covered, where, ": bytes [", covered, ", ", t->begin,
              ") of the data section belong to no tensor (before tensor '", t->name,
              "'); the tensors must cover it without gaps");
    covered = t->end;
    previous = t;
  }
  LDM_CHECK(covered == data_size, where, ": bytes [", covered, ", ", data_size,
            ") at the end of the data section belong to no tensor (file corrupt or not a safetensors file?)");
}

}  // namespace

SafeTensors::SafeTensors(const std::string& path) : path_(path) {
  const std::string where = "safetensors file '" + path + "'";
  uint64_t file_size = 0;
  const int fd = open_regular_file(path, "safetensors file", &file_size);
  if (file_size < 8) {
    ::close(fd);
    LDM_FAIL(where, " is truncated: ", file_size, " bytes, too short for the 8-byte header length");
  }
  auto map = std::make_shared<Mapping>();
  map->size = size_t(file_size);
  map->addr = mmap(nullptr, map->size, PROT_READ, MAP_PRIVATE, fd, 0);
  const int mmap_errno = errno;
  ::close(fd);
  LDM_CHECK(map->addr != MAP_FAILED, "cannot mmap ", where, ": ", std::strerror(mmap_errno));
  map->add_to_ranges();
  const auto* bytes = static_cast<const uint8_t*>(map->addr);

  uint64_t header_len = 0;
  std::memcpy(&header_len, bytes, 8);  // little-endian, as is every machine we build for
  LDM_CHECK(header_len <= file_size - 8, where, " is truncated or not a safetensors file: header length ", header_len,
            " exceeds the ", file_size - 8, " bytes after it");
  LDM_CHECK(header_len <= kMaxHeaderBytes, where, " has a ", header_len >> 20,
            " MiB header, more than the 100 MB a safetensors header may have (corrupt file?)");

  // Parse the header, refusing duplicate tensor names (JSON parsers keep the last silently).
  std::set<std::string> seen;
  std::string duplicate;
  nlohmann::json header;
  try {
    header = nlohmann::json::parse(
        bytes + 8, bytes + 8 + header_len,
        [&](int depth, nlohmann::json::parse_event_t ev, nlohmann::json& j) {
          if (depth == 1 && ev == nlohmann::json::parse_event_t::key) {
            std::string k = j.get<std::string>();
            if (!seen.insert(k).second && duplicate.empty()) duplicate = k;
          }
          return true;
        });
  } catch (const nlohmann::json::exception& e) {
    LDM_FAIL(where, " has a corrupt header (not valid JSON): ", json_error_reason(e));
  } catch (const std::bad_alloc&) {
    LDM_FAIL("out of memory parsing the ", header_len >> 20, " MiB header of ", where);
  }
  LDM_CHECK(duplicate.empty(), where, " names tensor '", duplicate, "' twice");
  LDM_CHECK(header.is_object(), where, " has a header that is not a JSON object");

  data_ = bytes + 8 + header_len;
  data_size_ = file_size - 8 - header_len;
  for (auto it = header.begin(); it != header.end(); ++it) {
    if (it.key() == "__metadata__") {
      LDM_CHECK(it->is_object(), where, ": __metadata__ must be an object of strings");
      for (auto m = it->begin(); m != it->end(); ++m) {
        LDM_CHECK(m->is_string(), where, ": __metadata__ maps strings to strings, but \"", m.key(), "\" is ",
                  brief(*m));
        metadata_[m.key()] = m->get<std::string>();
      }
      continue;
    }
    index_.emplace(it.key(), parse_entry(where, it.key(), *it, data_size_));
  }
  check_tiling(where, index_, data_size_);
  map_ = std::move(map);
}

const TensorInfo& SafeTensors::info(const std::string& name) const {
  auto it = index_.find(name);
  LDM_CHECK(it != index_.end(), "tensor '", name, "' not found in '", path_, "'");
  return it->second;
}

std::vector<std::string> SafeTensors::names() const {
  std::vector<std::string> r;
  r.reserve(index_.size());
  for (const auto& kv : index_) r.push_back(kv.first);
  return r;
}

const uint8_t* SafeTensors::raw(const std::string& name) const { return data_ + info(name).begin; }

namespace {
template <typename T>
T read_at(const uint8_t* p, int64_t i) {
  T v;
  std::memcpy(&v, p + i * int64_t(sizeof(T)), sizeof(T));
  return v;
}
}  // namespace

Tensor SafeTensors::load(const std::string& name) const {
  const TensorInfo& ti = info(name);
  const uint8_t* p = data_ + ti.begin;
  const int64_t n = numel_of(ti.shape);
  Tensor t = Tensor::empty(ti.shape);
  float* o = t.data();
  switch (ti.dtype) {
    case DType::F32:
      if (n > 0) std::memcpy(o, p, size_t(n) * 4);  // an empty tensor has no data pointer
      break;
    case DType::F16:
#pragma omp parallel for if (n > (1 << 16))
      for (int64_t i = 0; i < n; ++i) o[i] = fp16_to_float(read_at<uint16_t>(p, i));
      break;
    case DType::BF16:
#pragma omp parallel for if (n > (1 << 16))
      for (int64_t i = 0; i < n; ++i) o[i] = bf16_to_float(read_at<uint16_t>(p, i));
      break;
    case DType::F64:
      for (int64_t i = 0; i < n; ++i) o[i] = float(read_at<double>(p, i));
      break;
    case DType::I64:
      for (int64_t i = 0; i < n; ++i) o[i] = float(read_at<int64_t>(p, i));
      break;
    case DType::I32:
      for (int64_t i = 0; i < n; ++i) o[i] = float(read_at<int32_t>(p, i));
      break;
    case DType::U8:
    case DType::BOOL:
      for (int64_t i = 0; i < n; ++i) o[i] = float(p[i]);
      break;
  }
  return t;
}

Tensor SafeTensors::view(const std::string& name) const {
  const TensorInfo& ti = info(name);
  // A file whose header is not padded to 8 bytes (or whose F32 tensor follows an odd-sized
  // F16 one) has float data at an address a float* must not point to: copy that.
  const bool aligned = reinterpret_cast<uintptr_t>(data_ + ti.begin) % alignof(float) == 0;
  if (ti.dtype != DType::F32 || !aligned) return load(name);
  // The mapping is PROT_READ: a write through this view would fault, which is the point.
  return Tensor::wrap(const_cast<float*>(reinterpret_cast<const float*>(data_ + ti.begin)), ti.shape, map_);
}

namespace {
// MADV_DONTNEED on the pages that hold [begin, end), rounded out to whole pages (a neighbour
// sharing a page only has to map it back).
void release_range(const uint8_t* begin, const uint8_t* end) {
  if (end <= begin) return;
  static const uintptr_t page = uintptr_t(sysconf(_SC_PAGESIZE));
  const uintptr_t first = reinterpret_cast<uintptr_t>(begin) & ~(page - 1);
  const uintptr_t last = (reinterpret_cast<uintptr_t>(end) + page - 1) & ~(page - 1);
  madvise(reinterpret_cast<void*>(first), last - first, MADV_DONTNEED);  // advice: a failure only keeps the pages
}
}  // namespace

void SafeTensors::release_pages(const std::string& name) const {
  const TensorInfo& ti = info(name);
  release_range(data_ + ti.begin, data_ + ti.end);
}

void SafeTensors::release_pages() const { release_range(data_, data_ + data_size_); }

void release_file_pages(const void* p, size_t bytes) {
  const auto begin = reinterpret_cast<uintptr_t>(p), end = begin + bytes;
  MappedRanges& r = mapped_ranges();
  std::lock_guard<std::mutex> lock(r.mutex);
  auto it = r.ranges.upper_bound(begin);  // the first mapping after p; the one before may hold it
  if (it == r.ranges.begin()) return;
  --it;
  if (begin >= it->first && end <= it->second)
    release_range(static_cast<const uint8_t*>(p), static_cast<const uint8_t*>(p) + bytes);
}

std::vector<int64_t> SafeTensors::load_i64(const std::string& name) const {
  const TensorInfo& ti = info(name);
  const uint8_t* p = data_ + ti.begin;
  const int64_t n = numel_of(ti.shape);
  std::vector<int64_t> r(static_cast<size_t>(n));
  if (ti.dtype == DType::I64) {
    if (n > 0) std::memcpy(r.data(), p, size_t(n) * 8);
  } else if (ti.dtype == DType::I32) {
    for (int64_t i = 0; i < n; ++i) r[size_t(i)] = read_at<int32_t>(p, i);
  } else {
    LDM_FAIL("tensor '", name, "' in '", path_, "' is ", dtype_name(ti.dtype), ", expected an integer tensor (I64 or I32)");
  }
  return r;
}

// ---------------------------------------------------------------------------- writer

void SafeTensorsWriter::add(const std::string& name, const Tensor& t, DType dtype) {
  Entry e{name, dtype, t.shape(), {}};
  const int64_t n = t.numel();
  e.bytes.resize(size_t(n) * dtype_size(dtype));
  uint8_t* b = e.bytes.data();
  const float* x = t.data();
  switch (dtype) {
    case DType::F32:
      if (n > 0) std::memcpy(b, x, size_t(n) * 4);  // an empty tensor has no data pointer to copy from
      break;
    case DType::F16:
      for (int64_t i = 0; i < n; ++i) {
        uint16_t h = float_to_fp16(x[i]);
        std::memcpy(b + 2 * i, &h, 2);
      }
      break;
    case DType::BF16:
      for (int64_t i = 0; i < n; ++i) {
        uint16_t h = float_to_bf16(x[i]);
        std::memcpy(b + 2 * i, &h, 2);
      }
      break;
    default: LDM_FAIL("SafeTensorsWriter::add: cannot store float tensor '", name, "' as ", dtype_name(dtype));
  }
  entries_.push_back(std::move(e));
}

void SafeTensorsWriter::add_i64(const std::string& name, const Shape& shape, const std::vector<int64_t>& values) {
  LDM_CHECK(int64_t(values.size()) == numel_of(shape), "add_i64: ", values.size(), " values for shape ", shape_str(shape));
  Entry e{name, DType::I64, shape, std::vector<uint8_t>(values.size() * 8)};
  if (!values.empty()) std::memcpy(e.bytes.data(), values.data(), e.bytes.size());
  entries_.push_back(std::move(e));
}

void SafeTensorsWriter::save(const std::string& path) const {
  std::vector<const Entry*> order;
  for (const auto& e : entries_) order.push_back(&e);
  std::stable_sort(order.begin(), order.end(), [](const Entry* a, const Entry* b) { return aligned_before(a->dtype, b->dtype); });
  nlohmann::ordered_json header = nlohmann::ordered_json::object();  // "{}" when there are no tensors
  if (!metadata_.empty()) header["__metadata__"] = metadata_;
  uint64_t offset = 0;
  for (const Entry* e : order) {
    header[e->name] = {{"dtype", dtype_name(e->dtype)}, {"shape", e->shape}, {"data_offsets", {offset, offset + e->bytes.size()}}};
    offset += e->bytes.size();
  }
  std::string h = header.dump();
  h.append((8 - h.size() % 8) % 8, ' ');  // keep the data section 8-byte aligned
  AtomicFile f(path);  // an existing file survives a failed write
  const uint64_t n = h.size();
  f.write(&n, 8);
  f.write(h.data(), h.size());
  for (const Entry* e : order) f.write(e->bytes.data(), e->bytes.size());
  f.commit();
}

}  // namespace ldm
