// safetensors reader (mmap) and writer. See include/ldm/core/safetensors.hpp.
#include "ldm/core/safetensors.hpp"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <fstream>
#include <nlohmann/json.hpp>
#include <set>

#include "ldm/core/atomic_file.hpp"
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

DType dtype_from_name(const std::string& n) {
  for (DType d : {DType::F32, DType::F16, DType::BF16, DType::F64, DType::I64, DType::I32, DType::U8, DType::BOOL})
    if (n == dtype_name(d)) return d;
  LDM_FAIL("unknown safetensors dtype \"", n, "\" (supported: F32, F16, BF16, F64, I64, I32, U8, BOOL)");
}

namespace {

struct Mapping {
  void* addr = nullptr;
  size_t size = 0;
  ~Mapping() {
    if (addr && addr != MAP_FAILED) munmap(addr, size);
  }
};

}  // namespace

SafeTensors::SafeTensors(const std::string& path) : path_(path) {
  const std::string where = "safetensors file '" + path + "'";
  int fd = ::open(path.c_str(), O_RDONLY);
  LDM_CHECK(fd >= 0, "cannot open ", where, ": ", std::strerror(errno));
  struct stat st {};
  if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
    ::close(fd);
    LDM_FAIL(where, " is not a regular file");
  }
  const uint64_t file_size = uint64_t(st.st_size);
  if (file_size < 8) {
    ::close(fd);
    LDM_FAIL(where, " is truncated: ", file_size, " bytes, too short for the 8-byte header length");
  }
  auto map = std::make_shared<Mapping>();
  map->size = size_t(file_size);
  map->addr = mmap(nullptr, map->size, PROT_READ, MAP_PRIVATE, fd, 0);
  ::close(fd);
  LDM_CHECK(map->addr != MAP_FAILED, "cannot mmap ", where, ": ", std::strerror(errno));
  const auto* bytes = static_cast<const uint8_t*>(map->addr);

  uint64_t header_len = 0;
  std::memcpy(&header_len, bytes, 8);  // little-endian, as is every machine we build for
  LDM_CHECK(header_len <= file_size - 8, where, " is truncated or not a safetensors file: header length ", header_len,
            " exceeds the ", file_size - 8, " bytes after it");

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
    LDM_FAIL(where, " has a corrupt header (not valid JSON): ", e.what());
  }
  LDM_CHECK(duplicate.empty(), where, " names tensor '", duplicate, "' twice");
  LDM_CHECK(header.is_object(), where, " has a header that is not a JSON object");

  data_ = bytes + 8 + header_len;
  data_size_ = file_size - 8 - header_len;
  for (auto it = header.begin(); it != header.end(); ++it) {
    const std::string& name = it.key();
    if (name == "__metadata__") {
      LDM_CHECK(it->is_object(), where, ": __metadata__ must be an object of strings");
      for (auto m = it->begin(); m != it->end(); ++m)
        metadata_[m.key()] = m->is_string() ? m->get<std::string>() : m->dump();
      continue;
    }
    const auto& e = *it;
    LDM_CHECK(e.is_object() && e.contains("dtype") && e.contains("shape") && e.contains("data_offsets"), where,
              ": entry for tensor '", name, "' needs dtype, shape and data_offsets");
    TensorInfo info;
    info.name = name;
    try {
      info.dtype = dtype_from_name(e["dtype"].get<std::string>());
      for (const auto& d : e["shape"]) {
        LDM_CHECK(d.is_number_integer() && d.get<int64_t>() >= 0, "bad dimension");
        info.shape.push_back(d.get<int64_t>());
      }
      LDM_CHECK(e["data_offsets"].size() == 2, "data_offsets must be [begin, end]");
      info.begin = e["data_offsets"][0].get<uint64_t>();
      info.end = e["data_offsets"][1].get<uint64_t>();
    } catch (const std::exception& ex) {
      LDM_FAIL(where, ": bad entry for tensor '", name, "': ", ex.what());
    }
    LDM_CHECK(info.begin <= info.end && info.end <= data_size_, where, ": tensor '", name, "' has data offsets [",
              info.begin, ", ", info.end, ") outside the ", data_size_, "-byte data section (file truncated?)");
    const uint64_t expected = uint64_t(numel_of(info.shape)) * dtype_size(info.dtype);
    LDM_CHECK(info.end - info.begin == expected, where, ": tensor '", name, "' of shape ", shape_str(info.shape), " ",
              dtype_name(info.dtype), " needs ", expected, " bytes but its offsets span ", info.end - info.begin);
    index_.emplace(name, std::move(info));
  }
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
    case DType::F32: std::memcpy(o, p, size_t(n) * 4); break;
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
  if (ti.dtype != DType::F32) return load(name);
  // The mapping is PROT_READ: a write through this view would fault, which is the point.
  return Tensor::wrap(const_cast<float*>(reinterpret_cast<const float*>(data_ + ti.begin)), ti.shape, map_);
}

std::vector<int64_t> SafeTensors::load_i64(const std::string& name) const {
  const TensorInfo& ti = info(name);
  const uint8_t* p = data_ + ti.begin;
  const int64_t n = numel_of(ti.shape);
  std::vector<int64_t> r(static_cast<size_t>(n));
  if (ti.dtype == DType::I64) {
    std::memcpy(r.data(), p, size_t(n) * 8);
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
    case DType::F32: std::memcpy(b, x, size_t(n) * 4); break;
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
  std::memcpy(e.bytes.data(), values.data(), e.bytes.size());
  entries_.push_back(std::move(e));
}

void SafeTensorsWriter::save(const std::string& path) const {
  nlohmann::ordered_json header = nlohmann::ordered_json::object();  // "{}" when there are no tensors
  if (!metadata_.empty()) header["__metadata__"] = metadata_;
  uint64_t offset = 0;
  for (const auto& e : entries_) {
    header[e.name] = {{"dtype", dtype_name(e.dtype)}, {"shape", e.shape}, {"data_offsets", {offset, offset + e.bytes.size()}}};
    offset += e.bytes.size();
  }
  std::string h = header.dump();
  h.append((8 - h.size() % 8) % 8, ' ');  // keep the data section 8-byte aligned
  AtomicFile f(path);  // an existing file survives a failed write
  const uint64_t n = h.size();
  f.write(&n, 8);
  f.write(h.data(), h.size());
  for (const auto& e : entries_) f.write(e.bytes.data(), e.bytes.size());
  f.commit();
}

}  // namespace ldm
