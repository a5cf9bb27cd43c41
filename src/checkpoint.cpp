// Opening and writing SD1.5 checkpoints. See include/ldm/core/checkpoint.hpp.
#include "ldm/core/checkpoint.hpp"

#include <sys/stat.h>

#include <algorithm>
#include <cerrno>
#include <cmath>
#include <cstring>
#include <fstream>
#include <functional>
#include <map>
#include <set>

#include "ldm/core/files.hpp"
#include "ldm/models/clip_tokenizer.hpp"
#include "ldm/core/half.hpp"

namespace ldm {

namespace {

bool starts_with(const std::string& s, const std::string& p) { return s.compare(0, p.size(), p) == 0; }

bool is_file(const std::string& p) {
  struct stat st {};
  return stat(p.c_str(), &st) == 0 && S_ISREG(st.st_mode);
}

// Exists, whatever it is: a reader then refuses it by name unless it is a regular file (a FIFO
// named config.json is an error, not a missing config).
bool exists(const std::string& p) {
  struct stat st {};
  return stat(p.c_str(), &st) == 0;
}

bool is_dir(const std::string& p) {
  struct stat st {};
  return stat(p.c_str(), &st) == 0 && S_ISDIR(st.st_mode);
}

std::string path_join(const std::string& a, const std::string& b) {
  return a.empty() || a.back() == '/' ? a + b : a + "/" + b;
}

const char* kAcceptedForms =
    "ldm.cpp opens (1) a diffusers folder (model_index.json with unet/, vae/, text_encoder/ holding "
    ".safetensors weights), (2) a single-file SD1.5 checkpoint in .safetensors form "
    "(e.g. v1-5-pruned-emaonly.safetensors), or (3) \"synthetic:sd15\" (synthetic weights, no file)";

void write_json(const std::string& path, const nlohmann::json& j) {
  std::ofstream f(path);
  LDM_CHECK(f, "cannot write '", path, "'");
  f << j.dump(2) << "\n";
  LDM_CHECK(f.good(), "error while writing '", path, "' (disk full?)");
}

void make_dir(const std::string& p) {
  if (is_dir(p)) return;
  LDM_CHECK(::mkdir(p.c_str(), 0755) == 0, "cannot create folder '", p, "': ", std::strerror(errno));
}

// ---------------------------------------------------------------- what kind of file is it

enum class FileKind { SafeTensors, Pickle, Unknown };

// By content, not by extension: a .ckpt renamed .safetensors is still a pickle.
FileKind sniff(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  unsigned char b[9] = {};
  f.read(reinterpret_cast<char*>(b), 9);
  const auto n = f.gcount();
  if (n >= 4 && b[0] == 'P' && b[1] == 'K' && b[2] == 3 && b[3] == 4) return FileKind::Pickle;  // torch.save zip
  if (n >= 2 && b[0] == 0x80 && b[1] >= 2 && b[1] <= 5) return FileKind::Pickle;                // legacy torch.save
  if (n == 9 && b[8] == '{') return FileKind::SafeTensors;
  return FileKind::Unknown;
}

std::string pickle_error(const std::string& path) {
  return str("'", path,
             "' is a PyTorch pickle checkpoint (.ckpt/.pt/.bin). ldm.cpp reads only .safetensors "
             "(loading a pickle can run arbitrary code). Convert it once with Python:\n"
             "  python -c \"import torch; from safetensors.torch import save_file; "
             "sd = torch.load('",
             path,
             "', map_location='cpu', weights_only=True); sd = sd.get('state_dict', sd); "
             "save_file({k: v.contiguous().clone() for k, v in sd.items() if isinstance(v, torch.Tensor)}, '",
             path, ".safetensors')\"");
}

std::string dtype_summary(const SafeTensors& f, const std::vector<std::string>& names) {
  std::map<std::string, size_t> count;
  for (const auto& n : names) ++count[dtype_name(f.info(n).dtype)];
  std::string r;
  for (const auto& kv : count) r += (r.empty() ? "" : "+") + kv.first;
  return r;
}

// ---------------------------------------------------------------- deprecated diffusers names

// diffusers before 0.14 wrote the VAE attention as query/key/value/proj_attn; the runwayml
// SD1.5 repository still ships such files.
const std::pair<const char*, const char*> kDeprecatedVaeAttention[] = {
    {"to_q.", "query."}, {"to_k.", "key."}, {"to_v.", "value."}, {"to_out.0.", "proj_attn."}};

std::string rename_vae_attention(const std::string& name, bool to_deprecated) {
  const std::string block = "mid_block.attentions.0.";
  const size_t at = name.find(block);
  if (at == std::string::npos) return name;
  const std::string head = name.substr(0, at + block.size()), rest = name.substr(at + block.size());
  for (const auto& p : kDeprecatedVaeAttention) {
    const std::string from = to_deprecated ? p.first : p.second, to = to_deprecated ? p.second : p.first;
    if (starts_with(rest, from)) return head + to + rest.substr(from.size());
  }
  return name;
}

}  // namespace

// ---------------------------------------------------------------- SingleFileSource

SingleFileSource::SingleFileSource(std::shared_ptr<const SafeTensors> file, Component c)
    : SingleFileSource(std::move(file), c, single_file_prefix(c)) {}

SingleFileSource::SingleFileSource(std::shared_ptr<const SafeTensors> file, Component c, std::string prefix)
    : file_(std::move(file)), component_(c), prefix_(std::move(prefix)) {}

std::string SingleFileSource::locate(const std::string& name) const {
  std::string n = prefix_ + single_file_layout_name(component_, name);
  if (file_->contains(n)) return n;
  if (component_ == Component::TextEncoder && starts_with(name, "text_model.")) {
    n = prefix_ + name.substr(std::strlen("text_model."));  // the layout without text_model.
    if (file_->contains(n)) return n;
  }
  return "";
}

Shape SingleFileSource::shape(const std::string& name) const {
  Shape s = file_->info(locate(name)).shape;
  if (is_vae_attention_projection(name) && s.size() == 4 && s[2] == 1 && s[3] == 1) return {s[0], s[1]};
  return s;
}

Tensor SingleFileSource::load(const std::string& name, const Shape&) const {
  Tensor t = file_->view(locate(name));  // float32: no copy, the mapped file holds it
  const Shape s = shape(name);
  return t.shape() == s ? t : t.reshape(s);
}

std::vector<std::string> SingleFileSource::names() const {
  std::vector<std::string> r;
  for (const auto& n : file_->names()) {
    // EMA copies and training losses come along in files without a prefix (VAE-only files).
    if (!starts_with(n, prefix_) || starts_with(n, "model_ema.") || starts_with(n, "loss.")) continue;
    std::string d = diffusers_layout_name(component_, n.substr(prefix_.size()));
    if (d != "text_model.embeddings.position_ids") r.push_back(std::move(d));
  }
  return r;
}

void SingleFileSource::release_pages() const {
  for (const auto& n : file_->names())
    if (starts_with(n, prefix_)) file_->release_pages(n);
}

std::string SingleFileSource::describe() const {
  return str("single-file checkpoint '", file_->path(), "' (", component_name(component_), ": ",
             prefix_.empty() ? std::string("all tensors") : prefix_ + "*", ")");
}

// ---------------------------------------------------------------- DiffusersFileSource

std::string DiffusersFileSource::locate(const std::string& name) const {
  if (file_->contains(name)) return name;
  if (component_ == Component::VAE) {
    std::string old = rename_vae_attention(name, true);
    if (old != name && file_->contains(old)) return old;
  }
  // transformers >= 5 saves CLIPTextModel's weights without the text_model. prefix.
  if (component_ == Component::TextEncoder && starts_with(name, "text_model.")) {
    std::string bare = name.substr(std::strlen("text_model."));
    if (file_->contains(bare)) return bare;
  }
  return "";
}

Shape DiffusersFileSource::shape(const std::string& name) const {
  Shape s = file_->info(locate(name)).shape;
  // Some converters keep the VAE projections as 1x1 convs in a diffusers file too.
  if (is_vae_attention_projection(name) && s.size() == 4 && s[2] == 1 && s[3] == 1) return {s[0], s[1]};
  return s;
}

Tensor DiffusersFileSource::load(const std::string& name, const Shape&) const {
  Tensor t = file_->view(locate(name));  // float32: no copy, the mapped file holds it
  const Shape s = shape(name);
  return t.shape() == s ? t : t.reshape(s);
}

std::vector<std::string> DiffusersFileSource::names() const {
  std::vector<std::string> r;
  for (const auto& n : file_->names()) {
    // The names as the loader asks for them (locate's inverse): text_model. restored, the VAE's
    // attention projections under their current names.
    std::string d = component_ == Component::VAE ? rename_vae_attention(n, false) : n;
    if (component_ == Component::TextEncoder && !starts_with(d, "text_model.")) d = "text_model." + d;
    if (d != "text_model.embeddings.position_ids") r.push_back(std::move(d));
  }
  return r;
}

std::string DiffusersFileSource::describe() const {
  return str("diffusers ", component_name(component_), " file '", file_->path(), "'");
}

// ---------------------------------------------------------------- open_model

const std::shared_ptr<const WeightSource>& ModelFiles::source(Component c) const {
  switch (c) {
    case Component::UNet: return unet;
    case Component::VAE: return vae;
    case Component::TextEncoder: break;
  }
  return text_encoder;
}

namespace {

ModelFiles open_synthetic() {
  ModelFiles m;
  auto s = std::make_shared<SyntheticSource>();
  m.unet = m.vae = m.text_encoder = s;
  m.description = "synthetic SD1.5 weights (synth.py rule, no file)";
  return m;
}

ModelFiles open_single_file(const std::string& path) {
  auto file = std::make_shared<const SafeTensors>(path);
  std::map<Component, std::vector<std::string>> parts;
  bool sd2 = false, sdxl = false;
  for (const auto& n : file->names()) {
    Component c;
    if (diffusers_name(n, &c, nullptr)) parts[c].push_back(n);
    sd2 = sd2 || starts_with(n, "cond_stage_model.model.");
    sdxl = sdxl || starts_with(n, "conditioner.embedders.");
  }
  LDM_CHECK(!sdxl, "'", path, "' is an SDXL checkpoint (it has conditioner.embedders.* tensors); ldm.cpp runs Stable Diffusion 1.x");
  LDM_CHECK(!sd2, "'", path,
            "' is a Stable Diffusion 2.x checkpoint (its text encoder is OpenCLIP, cond_stage_model.model.*); "
            "ldm.cpp runs Stable Diffusion 1.x");
  if (parts[Component::UNet].empty()) {
    if (file->contains("time_embedding.linear_1.weight"))
      LDM_FAIL("'", path,
               "' is the U-Net file of a diffusers folder, not a whole model: pass the folder that holds "
               "model_index.json, or a single-file checkpoint (model.diffusion_model.* tensors)");
    if (file->contains("encoder.down.0.block.0.conv1.weight") || file->contains("encoder.down_blocks.0.resnets.0.conv1.weight"))
      LDM_FAIL("'", path, "' holds only a VAE, not a whole Stable Diffusion model");
    if (file->contains("text_model.encoder.layers.0.mlp.fc1.weight"))
      LDM_FAIL("'", path, "' holds only a CLIP text encoder, not a whole Stable Diffusion model");
    LDM_FAIL("'", path,
             "' is a safetensors file but not a Stable Diffusion checkpoint: it has no model.diffusion_model.* "
             "(U-Net) tensors. ",
             kAcceptedForms);
  }
  LDM_CHECK(!parts[Component::VAE].empty(), "single-file checkpoint '", path,
            "' has no VAE (no first_stage_model.* tensors); ldm.cpp needs all of U-Net, VAE and text encoder in it");
  LDM_CHECK(!parts[Component::TextEncoder].empty(), "single-file checkpoint '", path,
            "' has no text encoder (no cond_stage_model.transformer.* tensors); ldm.cpp needs all of U-Net, VAE and "
            "text encoder in it");

  ModelFiles m;
  m.unet = std::make_shared<SingleFileSource>(file, Component::UNet);
  // An inpainting checkpoint (sd-v1-5-inpainting) is told apart by its U-Net's first convolution:
  // 9 input channels (latents, mask, masked image latents) instead of 4.
  const std::string conv_in = "model.diffusion_model.input_blocks.0.0.weight";
  if (file->contains(conv_in) && file->info(conv_in).shape.size() == 4 && file->info(conv_in).shape[1] != 4)
    m.unet_config = {{"in_channels", file->info(conv_in).shape[1]}};
  m.vae = std::make_shared<SingleFileSource>(file, Component::VAE);
  m.text_encoder = std::make_shared<SingleFileSource>(file, Component::TextEncoder);
  std::vector<std::string> all;
  for (const auto& kv : parts) all.insert(all.end(), kv.second.begin(), kv.second.end());
  m.description = str("single-file checkpoint '", path, "' (", all.size(), " tensors, ", dtype_summary(*file, all), ")");
  return m;
}

// The weights file of one component of a diffusers folder, or an error that says what is there instead.
std::string find_component_file(const std::string& dir, Component c, const std::string& variant) {
  const std::string sub = path_join(dir, component_name(c));
  const std::string base = c == Component::TextEncoder ? "model" : "diffusion_pytorch_model";
  const std::string full = base + ".safetensors", half = base + ".fp16.safetensors";
  const std::string expected = str(component_name(c), "/", full, " (or ", component_name(c), "/", half, ")");
  for (const auto& name : variant == "fp16" ? std::vector<std::string>{half, full} : std::vector<std::string>{full, half})
    if (exists(path_join(sub, name))) return path_join(sub, name);
  const std::string pickle_base = c == Component::TextEncoder ? "pytorch_model" : "diffusion_pytorch_model";
  for (const auto& name : {pickle_base + ".bin", pickle_base + ".fp16.bin"})
    if (is_file(path_join(sub, name)))
      LDM_FAIL("diffusers folder '", dir, "': ", component_name(c), "/", name, " is a PyTorch pickle; .bin pickles are not "
               "supported (loading one can run arbitrary code). Expected ", expected,
               ". Convert the folder once with Python:\n  python -c \"from diffusers import StableDiffusionPipeline; "
               "StableDiffusionPipeline.from_pretrained('", dir, "').save_pretrained('", dir,
               "-safetensors', safe_serialization=True)\"");
  for (const auto& name : {full + ".index.json", half + ".index.json"})
    if (is_file(path_join(sub, name)))
      LDM_FAIL("diffusers folder '", dir, "': ", component_name(c), "/", name,
               " describes sharded weights, which ldm.cpp does not read; expected one file, ", expected);
  LDM_FAIL("diffusers folder '", dir, "' has no ", component_name(c), " weights: expected '", path_join(sub, full),
           "' (or ", half, ")");
}

nlohmann::json read_optional_json(const std::string& path, const std::string& what) {
  return exists(path) ? read_json_file(path, what) : nlohmann::json::object();
}

ModelFiles open_diffusers_folder(const std::string& dir, const std::string& variant) {
  const std::string index_path = path_join(dir, "model_index.json");
  const bool has_index = exists(index_path);
  if (!has_index && !is_dir(path_join(dir, "unet"))) {
    if (is_file(path_join(dir, "config.json")))
      LDM_FAIL("'", dir,
               "' looks like one component folder of a diffusers pipeline (it has config.json): pass the pipeline "
               "folder above it, the one with model_index.json");
    LDM_FAIL("'", dir,
             "' is a folder but not a diffusers Stable Diffusion pipeline: it has neither model_index.json nor a "
             "unet/ subfolder. ",
             kAcceptedForms);
  }
  if (has_index) {
    const nlohmann::json index = read_json_file(index_path, "pipeline index");
    LDM_CHECK(index.is_object(), "pipeline index '", index_path, "' must be a JSON object, not ", index.type_name());
    const auto it = index.find("_class_name");
    const std::string cls = it != index.end() && it->is_string() ? it->get<std::string>() : "";
    LDM_CHECK(cls.find("XL") == std::string::npos, "'", dir, "' is an SDXL pipeline (", cls,
              "); ldm.cpp runs Stable Diffusion 1.x");
  }
  ModelFiles m;
  std::string summary;
  for (Component c : {Component::UNet, Component::VAE, Component::TextEncoder}) {
    const std::string path = find_component_file(dir, c, variant);
    auto file = std::make_shared<const SafeTensors>(path);
    auto source = std::make_shared<DiffusersFileSource>(file, c);
    const std::string config_path = path_join(path_join(dir, component_name(c)), "config.json");
    const nlohmann::json config = read_optional_json(config_path, str(component_name(c), " config"));
    const std::string found = exists(config_path) ? config_path : "";
    switch (c) {
      case Component::UNet: m.unet = source, m.unet_config = config, m.unet_config_path = found; break;
      case Component::VAE: m.vae = source, m.vae_config = config, m.vae_config_path = found; break;
      case Component::TextEncoder:
        m.text_encoder = source, m.text_encoder_config = config, m.text_encoder_config_path = found;
        break;
    }
    summary += str(summary.empty() ? "" : ", ", component_name(c), " ", dtype_summary(*file, file->names()));
  }
  const std::string scheduler_path = path_join(dir, "scheduler/scheduler_config.json");
  m.scheduler_config = read_optional_json(scheduler_path, "scheduler config");
  if (exists(scheduler_path)) m.scheduler_config_path = scheduler_path;
  const std::string tok = path_join(dir, "tokenizer");
  if (CLIPTokenizer::files_in(tok)) m.tokenizer_dir = tok;
  const std::string defaults_path = path_join(dir, "generation_defaults.json");
  m.generation_defaults = read_optional_json(defaults_path, "generation defaults");
  if (exists(defaults_path)) {
    LDM_CHECK(m.generation_defaults.is_object(), "generation defaults '", defaults_path, "' must be a JSON object, not ",
              m.generation_defaults.type_name());
    m.generation_defaults_path = defaults_path;
  }
  m.description = str("diffusers folder '", dir, "' (", summary, ")");
  return m;
}

}  // namespace

ModelFiles open_model(const std::string& spec, const std::string& variant) {
  LDM_CHECK(variant.empty() || variant == "fp16", "unknown weights variant \"", variant, "\" (use \"\" or \"fp16\")");
  if (starts_with(spec, "synthetic:")) {
    LDM_CHECK(spec == "synthetic:sd15" || spec == "synthetic:sd15-inpainting", "unknown synthetic model \"", spec,
              "\" (there are synthetic:sd15 and synthetic:sd15-inpainting)");
    ModelFiles m = open_synthetic();
    if (spec == "synthetic:sd15-inpainting") {  // SD1.5's inpainting U-Net: 9 input channels
      m.unet_config = {{"in_channels", 9}};
      m.description = "synthetic SD1.5 inpainting weights (synth.py rule, no file)";
    }
    return m;
  }
  if (is_dir(spec)) return open_diffusers_folder(spec, variant);
  LDM_CHECK(exists(spec), "no such file or folder: '", spec, "'. ", kAcceptedForms);
  check_regular_file(spec, "model");
  switch (sniff(spec)) {
    case FileKind::SafeTensors: return open_single_file(spec);
    case FileKind::Pickle: LDM_FAIL(pickle_error(spec));
    case FileKind::Unknown: break;
  }
  LDM_FAIL("'", spec, "' is neither a safetensors file nor a folder. ", kAcceptedForms);
}

// ---------------------------------------------------------------- key lists

std::vector<TensorSpec> read_key_list(const std::string& path, Component c) {
  const nlohmann::json j = read_json_file(path, "key list");
  LDM_CHECK(j.is_object() && j.contains("diffusers") && j["diffusers"].is_object() &&
                j["diffusers"].contains(component_name(c)) && j["diffusers"][component_name(c)].is_object(),
            "'", path, "' has no diffusers.", component_name(c), " key list (expected the form of sd15_keys.json)");
  std::vector<TensorSpec> r;
  for (const auto& kv : j["diffusers"][component_name(c)].items()) {
    Shape shape;
    bool ok = kv.value().is_array();
    for (const auto& d : kv.value()) {
      ok = ok && d.is_number_unsigned();
      if (ok) shape.push_back(d.get<int64_t>());
    }
    LDM_CHECK(ok, "key list '", path, "': the shape of '", kv.key(), "' is ", kv.value().dump(),
              ", not a list of non-negative integers");
    checked_numel(shape, str("tensor '", kv.key(), "' in key list '", path, "'"));
    r.push_back({kv.key(), std::move(shape)});
  }
  return r;
}

// ---------------------------------------------------------------- writing

namespace {

// A safetensors file written tensor by tensor, so that a 4 GB checkpoint never sits in memory;
// laid out by aligned_before, as SafeTensorsWriter does.
class StreamingWriter {
 public:
  void add(const std::string& name, const Shape& shape, DType dtype, std::function<Tensor()> make) {
    LDM_CHECK(dtype == DType::F32 || dtype == DType::F16 || dtype == DType::BF16, "cannot write float tensor '", name,
              "' as ", dtype_name(dtype), " (use F32, F16 or BF16)");
    entries_.push_back({name, dtype, shape, std::move(make), {}});
  }
  void add_i64(const std::string& name, const Shape& shape, std::vector<int64_t> values) {
    entries_.push_back({name, DType::I64, shape, nullptr, std::move(values)});
  }

  void save(const std::string& path) const {
    std::vector<const Entry*> order;
    for (const auto& e : entries_) order.push_back(&e);
    std::stable_sort(order.begin(), order.end(),
                     [](const Entry* a, const Entry* b) { return aligned_before(a->dtype, b->dtype); });
    nlohmann::ordered_json header;
    header["__metadata__"] = {{"format", "pt"}};
    uint64_t offset = 0;
    for (const Entry* e : order) {
      const uint64_t bytes = checked_bytes(e->shape, dtype_size(e->dtype), "tensor '" + e->name + "'");
      header[e->name] = {{"dtype", dtype_name(e->dtype)}, {"shape", e->shape}, {"data_offsets", {offset, offset + bytes}}};
      offset += bytes;
    }
    std::string h = header.dump();
    h.append((8 - h.size() % 8) % 8, ' ');  // 8-byte aligned data, as safetensors writes it
    std::ofstream f(path, std::ios::binary);
    LDM_CHECK(f, "cannot write '", path, "'");
    const uint64_t n = h.size();
    f.write(reinterpret_cast<const char*>(&n), 8);
    f.write(h.data(), std::streamsize(h.size()));
    std::vector<uint16_t> half;
    for (const Entry* pe : order) {
      const Entry& e = *pe;
      if (e.dtype == DType::I64) {
        f.write(reinterpret_cast<const char*>(e.ints.data()), std::streamsize(e.ints.size() * 8));
        continue;
      }
      const Tensor t = e.make();
      LDM_CHECK(t.numel() == numel_of(e.shape), "writing '", e.name, "': got ", t.shape_str(), " for shape ",
                shape_str(e.shape));
      const int64_t count = t.numel();
      const float* x = t.data();
      if (e.dtype == DType::F32) {
        f.write(reinterpret_cast<const char*>(x), std::streamsize(count * 4));
        continue;
      }
      half.resize(size_t(count));
      const bool fp16 = e.dtype == DType::F16;
#pragma omp parallel for if (count > (1 << 16))
      for (int64_t i = 0; i < count; ++i) half[size_t(i)] = fp16 ? float_to_fp16(x[i]) : float_to_bf16(x[i]);
      f.write(reinterpret_cast<const char*>(half.data()), std::streamsize(count * 2));
    }
    f.flush();
    LDM_CHECK(f.good(), "error while writing '", path, "' (disk full?)");
  }

 private:
  struct Entry {
    std::string name;
    DType dtype;
    Shape shape;
    std::function<Tensor()> make;
    std::vector<int64_t> ints;
  };
  std::vector<Entry> entries_;
};

std::function<Tensor()> value_of(const ComponentWeights& part, const TensorSpec& t) {
  std::shared_ptr<const WeightSource> values = part.values;
  return [values, name = t.name, shape = t.shape] {
    return values ? values->load(name, shape) : synth::param(name, shape);
  };
}

// The DDPM schedule tensors the original LatentDiffusion module registers as buffers.
void add_single_file_extras(StreamingWriter& w, bool text_encoder) {
  constexpr int n = 1000;
  std::vector<double> betas(n), cum(n);
  double prod = 1;
  for (int i = 0; i < n; ++i) {
    const double b = std::sqrt(0.00085) + (std::sqrt(0.012) - std::sqrt(0.00085)) * i / (n - 1);
    betas[i] = b * b;
    prod *= 1 - betas[i];
    cum[i] = prod;
  }
  auto buffer = [&w](const std::string& name, const std::function<double(int)>& f) {
    Tensor t = Tensor::empty({n});
    for (int i = 0; i < n; ++i) t[i] = float(f(i));
    w.add(name, {n}, DType::F32, [t] { return t; });
  };
  buffer("betas", [&betas](int i) { return betas[size_t(i)]; });
  buffer("alphas_cumprod", [&cum](int i) { return cum[size_t(i)]; });
  buffer("alphas_cumprod_prev", [&cum](int i) { return i ? cum[size_t(i - 1)] : 1.0; });
  buffer("sqrt_alphas_cumprod", [&cum](int i) { return std::sqrt(cum[size_t(i)]); });
  buffer("sqrt_one_minus_alphas_cumprod", [&cum](int i) { return std::sqrt(1 - cum[size_t(i)]); });
  buffer("log_one_minus_alphas_cumprod", [&cum](int i) { return std::log(1 - cum[size_t(i)]); });
  buffer("sqrt_recip_alphas_cumprod", [&cum](int i) { return 1 / std::sqrt(cum[size_t(i)]); });
  buffer("posterior_variance", [&betas](int i) { return betas[size_t(i)] * 0.5; });
  w.add("model_ema.decay", {}, DType::F32, [] { return Tensor::full({}, 0.9999f); });
  w.add_i64("model_ema.num_updates", {}, {0});
  // EMA copies keep the module path with the dots removed.
  w.add("model_ema.diffusion_modelinput_blocks00weight", {320, 4, 3, 3}, DType::F32,
        [] { return synth::param("model_ema.diffusion_modelinput_blocks00weight", {320, 4, 3, 3}); });
  if (text_encoder) {
    std::vector<int64_t> ids(77);
    for (int i = 0; i < 77; ++i) ids[size_t(i)] = i;
    w.add_i64("cond_stage_model.transformer.text_model.embeddings.position_ids", {1, 77}, ids);
  }
}

// runwayml/stable-diffusion-v1-5's configs.
nlohmann::json sd15_config(Component c) {
  switch (c) {
    case Component::UNet:
      return {{"_class_name", "UNet2DConditionModel"},
              {"act_fn", "silu"},
              {"attention_head_dim", 8},
              {"block_out_channels", {320, 640, 1280, 1280}},
              {"center_input_sample", false},
              {"cross_attention_dim", 768},
              {"down_block_types", {"CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"}},
              {"downsample_padding", 1},
              {"flip_sin_to_cos", true},
              {"freq_shift", 0},
              {"in_channels", 4},
              {"layers_per_block", 2},
              {"mid_block_scale_factor", 1},
              {"norm_eps", 1e-5},
              {"norm_num_groups", 32},
              {"out_channels", 4},
              {"sample_size", 64},
              {"up_block_types", {"UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"}}};
    case Component::VAE:
      return {{"_class_name", "AutoencoderKL"},
              {"act_fn", "silu"},
              {"block_out_channels", {128, 256, 512, 512}},
              {"down_block_types", {"DownEncoderBlock2D", "DownEncoderBlock2D", "DownEncoderBlock2D", "DownEncoderBlock2D"}},
              {"in_channels", 3},
              {"latent_channels", 4},
              {"layers_per_block", 2},
              {"norm_num_groups", 32},
              {"out_channels", 3},
              {"sample_size", 512},
              {"scaling_factor", 0.18215},
              {"up_block_types", {"UpDecoderBlock2D", "UpDecoderBlock2D", "UpDecoderBlock2D", "UpDecoderBlock2D"}}};
    case Component::TextEncoder:
      return {{"architectures", {"CLIPTextModel"}},
              {"attention_dropout", 0.0},
              {"bos_token_id", 0},
              {"eos_token_id", 2},
              {"hidden_act", "quick_gelu"},
              {"hidden_size", 768},
              {"intermediate_size", 3072},
              {"layer_norm_eps", 1e-5},
              {"max_position_embeddings", 77},
              {"model_type", "clip_text_model"},
              {"num_attention_heads", 12},
              {"num_hidden_layers", 12},
              {"pad_token_id", 1},
              {"projection_dim", 768},
              {"vocab_size", 49408}};
  }
  return nlohmann::json::object();
}

}  // namespace

void write_single_file(const std::string& path, const std::vector<ComponentWeights>& parts, DType dtype, bool extras) {
  StreamingWriter w;
  bool text_encoder = false;
  for (const auto& part : parts) {
    text_encoder = text_encoder || part.component == Component::TextEncoder;
    for (const auto& t : part.tensors) {
      Shape shape = t.shape;
      if (part.component == Component::VAE && is_vae_attention_projection(t.name)) shape = {shape[0], shape[1], 1, 1};
      w.add(single_file_name(part.component, t.name), shape, dtype, value_of(part, t));
    }
  }
  if (extras) add_single_file_extras(w, text_encoder);
  w.save(path);
}

void write_diffusers_folder(const std::string& dir, const std::vector<ComponentWeights>& parts, DType dtype,
                            const std::string& variant) {
  LDM_CHECK(variant.empty() || variant == "fp16", "unknown weights variant \"", variant, "\" (use \"\" or \"fp16\")");
  make_dir(dir);
  write_json(path_join(dir, "model_index.json"),
             {{"_class_name", "StableDiffusionPipeline"},
              {"scheduler", {"diffusers", "PNDMScheduler"}},
              {"text_encoder", {"transformers", "CLIPTextModel"}},
              {"tokenizer", {"transformers", "CLIPTokenizer"}},
              {"unet", {"diffusers", "UNet2DConditionModel"}},
              {"vae", {"diffusers", "AutoencoderKL"}}});
  make_dir(path_join(dir, "scheduler"));
  write_json(path_join(dir, "scheduler/scheduler_config.json"),
             {{"_class_name", "PNDMScheduler"},
              {"beta_start", 0.00085},
              {"beta_end", 0.012},
              {"beta_schedule", "scaled_linear"},
              {"num_train_timesteps", 1000},
              {"set_alpha_to_one", false},
              {"skip_prk_steps", true},
              {"steps_offset", 1},
              {"clip_sample", false},
              {"prediction_type", "epsilon"},
              {"timestep_spacing", "leading"},
              {"trained_betas", nullptr}});
  for (const auto& part : parts) {
    const std::string sub = path_join(dir, component_name(part.component));
    make_dir(sub);
    write_json(path_join(sub, "config.json"), sd15_config(part.component));
    StreamingWriter w;
    for (const auto& t : part.tensors) w.add(t.name, t.shape, dtype, value_of(part, t));
    const std::string base = part.component == Component::TextEncoder ? "model" : "diffusion_pytorch_model";
    w.save(path_join(sub, base + (variant.empty() ? "" : "." + variant) + ".safetensors"));
  }
}

}  // namespace ldm
