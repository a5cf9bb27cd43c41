// Weight loading: a module asks for its tensors by `prefix + "." + member` with the shape
// it expects; a WeightSource says where they come from (a safetensors file, synthetic
// values, tensors in memory). The WeightStore collects every problem (missing tensors,
// wrong shapes, and with finish(), tensors nobody asked for) and reports them all by name
// at once, so a user with the wrong checkpoint sees the whole picture in one error. Problems
// cost no memory (zero stand-ins are unbacked mappings), and a store set to check_only reads
// nothing at all: a model loaded through one first (load.hpp) reports a file missing most of
// its tensors before gigabytes are allocated.
//
//   WeightStore w(std::make_shared<SyntheticSource>());
//   block.load(w, "down_blocks.0.resnets.0");   // asks for ...conv1.weight [320, 320, 3, 3], ...
//   w.finish();                                  // throws if anything was missing or mis-shaped
#pragma once
#include <sys/mman.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <map>
#include <memory>
#include <optional>
#include <set>
#include <string>
#include <vector>

#include "ldm/core/half.hpp"
#include "ldm/core/safetensors.hpp"
#include "ldm/core/synth.hpp"
#include "ldm/core/tensor.hpp"
#include "ldm/nn/conv_algo.hpp"

namespace ldm {

inline std::string join(const std::string& prefix, const std::string& member) {
  return prefix.empty() ? member : prefix + "." + member;
}

// A weight kept in fp16 in memory (to halve the weights' footprint), converted to float32
// each time a layer uses it; the converted copy lives only while that layer runs.
struct HalfTensor {
  Shape shape;
  std::shared_ptr<uint16_t> data;

  bool defined() const { return data != nullptr; }
  static HalfTensor from_float(const Tensor& t) {
    HalfTensor h{t.shape(), std::shared_ptr<uint16_t>(new uint16_t[size_t(t.numel())], std::default_delete<uint16_t[]>())};
    uint16_t* d = h.data.get();
    const float* x = t.data();
    const int64_t n = t.numel();
#pragma omp parallel for if (n > (1 << 16))
    for (int64_t i = 0; i < n; ++i) d[i] = float_to_fp16(x[i]);
    return h;
  }
  Tensor to_float() const {
    Tensor t = Tensor::empty(shape);
    float* o = t.data();
    const uint16_t* d = data.get();
    const int64_t n = t.numel();
#pragma omp parallel for if (n > (1 << 16))
    for (int64_t i = 0; i < n; ++i) o[i] = fp16_to_float(d[i]);
    return t;
  }
};

// A zero tensor of `shape` that costs no memory: a read-only anonymous mapping, backed by the
// kernel's one zero page however large (weights are never written to).
inline Tensor zero_stand_in(const Shape& shape) {
  const size_t bytes = std::max<size_t>(size_t(numel_of(shape)) * sizeof(float), 1);
  void* p = mmap(nullptr, bytes, PROT_READ, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
  LDM_CHECK(p != MAP_FAILED, "cannot map ", bytes >> 20, " MiB of address space for a stand-in of shape ",
            shape_str(shape), ": ", std::strerror(errno));
  std::shared_ptr<void> mapping(p, [bytes](void* q) { munmap(q, bytes); });
  return Tensor::wrap(static_cast<float*>(p), shape, std::move(mapping));
}

class WeightSource {
 public:
  virtual ~WeightSource() = default;
  virtual bool has(const std::string& name) const = 0;
  virtual Shape shape(const std::string& name) const = 0;  // only called when has(name)
  // The tensor as float32; `expected` is the shape the module wants (synthetic sources use it).
  virtual Tensor load(const std::string& name, const Shape& expected) const = 0;
  // Every name the source holds (empty when unknowable, e.g. synthetic).
  virtual std::vector<std::string> names() const = 0;
  virtual std::string describe() const = 0;
  // Lets the process's copy of the source's file pages go until they are read again
  // (SafeTensors::release_pages); nothing for sources that hold no file.
  virtual void release_pages() const {}
};

// Values from synth.py's rule: any name exists, with whatever shape is asked for.
class SyntheticSource : public WeightSource {
 public:
  bool has(const std::string&) const override { return true; }
  Shape shape(const std::string&) const override { return {}; }
  Tensor load(const std::string& name, const Shape& expected) const override { return synth::param(name, expected); }
  std::vector<std::string> names() const override { return {}; }
  std::string describe() const override { return "synthetic weights"; }
};

// Tensors of a safetensors file, converted to float32 on load.
class SafeTensorsSource : public WeightSource {
 public:
  explicit SafeTensorsSource(const std::string& path) : file_(std::make_shared<SafeTensors>(path)) {}
  explicit SafeTensorsSource(std::shared_ptr<const SafeTensors> file) : file_(std::move(file)) {}
  bool has(const std::string& name) const override { return file_->contains(name); }
  Shape shape(const std::string& name) const override { return file_->info(name).shape; }
  // float32 tensors are views of the mapped file: the weights are held once, by the page cache.
  Tensor load(const std::string& name, const Shape&) const override { return file_->view(name); }
  std::vector<std::string> names() const override { return file_->names(); }
  std::string describe() const override { return "'" + file_->path() + "'"; }
  void release_pages() const override { file_->release_pages(); }
  const SafeTensors& file() const { return *file_; }

 private:
  std::shared_ptr<const SafeTensors> file_;
};

// Tensors held in memory (tests, converted checkpoints).
class MapSource : public WeightSource {
 public:
  explicit MapSource(std::map<std::string, Tensor> tensors) : tensors_(std::move(tensors)) {}
  bool has(const std::string& name) const override { return tensors_.count(name) != 0; }
  Shape shape(const std::string& name) const override { return tensors_.at(name).shape(); }
  Tensor load(const std::string& name, const Shape&) const override { return tensors_.at(name); }
  std::vector<std::string> names() const override {
    std::vector<std::string> r;
    for (const auto& kv : tensors_) r.push_back(kv.first);
    return r;
  }
  std::string describe() const override { return "in-memory tensors"; }

 private:
  std::map<std::string, Tensor> tensors_;
};

class WeightStore {
 public:
  explicit WeightStore(std::shared_ptr<const WeightSource> source, std::string prefix = "")
      : source_(std::move(source)), prefix_(std::move(prefix)) {}

  // The tensor `name` (under the store's prefix) of the given shape. A missing or mis-shaped
  // tensor is recorded (reported by finish()) and a zero stand-in returned, so that loading
  // goes on and every problem is found in one pass.
  Tensor get(const std::string& name, const Shape& shape) {
    std::optional<Tensor> t = find(name, shape);
    return t ? *std::move(t) : zero_stand_in(shape);
  }

  // With check_only, get() and get_half() check names and shapes but read nothing: every
  // tensor is a stand-in (a HalfTensor without data).
  void set_check_only(bool on) { check_only_ = on; }

  // With keep_fp16, the large matrices of Linear and Conv2d layers are kept as fp16
  // (get_half); norms, biases and embeddings stay float32.
  void set_keep_fp16(bool on) { keep_fp16_ = on; }
  bool keep_fp16() const { return keep_fp16_; }
  HalfTensor get_half(const std::string& name, const Shape& shape) {
    std::optional<Tensor> t = find(name, shape);
    if (!t) return HalfTensor{shape, nullptr};
    HalfTensor h = HalfTensor::from_float(*t);
    // A float32 view of a mapped file is not read again: its pages go now, not after the whole
    // model (loading SD1.5's U-Net so from an fp32 file would touch 3.4 GB before letting go).
    release_file_pages(t->data(), size_t(t->numel()) * sizeof(float));
    return h;
  }

  // The algorithm of the Conv2d layers loaded from here (LoadOptions::conv).
  void set_conv_algo(ConvAlgo a) { conv_algo_ = a; }
  ConvAlgo conv_algo() const { return conv_algo_; }

  // Throws one error listing every missing and mis-shaped tensor; with check_unexpected,
  // also the tensors under the prefix that the model never asked for.
  void finish(bool check_unexpected = false) const {
    std::vector<std::string> unexpected;
    if (check_unexpected)
      for (const auto& n : source_->names())
        if (n.compare(0, prefix_.size(), prefix_) == 0 && !requested_.count(n)) unexpected.push_back(n);
    if (missing_.empty() && misshaped_.empty() && unexpected.empty()) return;
    std::string msg = "weights from " + source_->describe() + " do not fit the model:";
    auto list = [&msg](const char* title, const std::vector<std::string>& v) {
      if (v.empty()) return;
      msg += str("\n  ", v.size(), " ", title, ":");
      for (size_t i = 0; i < v.size() && i < 20; ++i) msg += "\n    " + v[i];
      if (v.size() > 20) msg += str("\n    ... and ", v.size() - 20, " more");
    };
    list("missing", missing_);
    list("with the wrong shape", misshaped_);
    list("unexpected", unexpected);
    LDM_FAIL(msg);
  }

  const WeightSource& source() const { return *source_; }
  size_t num_loaded() const { return requested_.size(); }
  // Every tensor the model asked for (full name -> the shape it wants), e.g. after a check-only load.
  const std::map<std::string, Shape>& requested() const { return requested_; }

 private:
  // The tensor as the model wants it; nothing when it is missing or mis-shaped (recorded) or
  // when the store only checks.
  std::optional<Tensor> find(const std::string& name, const Shape& shape) {
    const std::string full = join(prefix_, name);
    requested_[full] = shape;
    if (!source_->has(full)) {
      missing_.push_back(full + " " + shape_str(shape));
      return std::nullopt;
    }
    Shape have = source_->shape(full);
    if (!have.empty() && have != shape) {
      misshaped_.push_back(full + ": file has " + shape_str(have) + ", model expects " + shape_str(shape));
      return std::nullopt;
    }
    if (check_only_) return std::nullopt;
    Tensor t = source_->load(full, shape);
    return t.shape() == shape ? t : t.reshape(shape);
  }

  std::shared_ptr<const WeightSource> source_;
  std::string prefix_;
  std::map<std::string, Shape> requested_;  // every name asked for, with the shape the model wants
  std::vector<std::string> missing_, misshaped_;
  bool keep_fp16_ = false;
  bool check_only_ = false;
  ConvAlgo conv_algo_ = ConvAlgo::automatic;
};

}  // namespace ldm
