// LoRA: low-rank weight deltas merged into a model's weights as they load, as diffusers'
// load_lora_weights + fuse_lora(lora_scale=multiplier) and AUTOMATIC1111 merge them:
//
//   W' = W + multiplier * (alpha / rank) * up @ down          rank = down's first dimension
//
//   linear       down [r, in]           up [out, r]           -> dW [out, in]
//   conv (LoCon) down [r, in, kh, kw]   up [out, r, 1, 1]     -> dW [out, in, kh, kw]
//                (dW = up[:, :, 0, 0] @ down.reshape(r, in kh kw), as kohya and PEFT define it)
//
// Two file layouts, told apart by their keys:
//   kohya / A1111     lora_unet_<module path, dots as _>.lora_down.weight / .lora_up.weight / .alpha
//                     lora_te_<...> for the text encoder (lora_te_text_model_encoder_layers_0_self_attn_q_proj)
//   diffusers / PEFT  unet.<module path>.lora_A.weight (down) / .lora_B.weight (up),
//                     text_encoder.<module path>...; no alpha: alpha = rank (scale 1)
// A kohya name is matched back to the model's own parameter names (each of which, dots turned
// to underscores, is unique). A kohya LoRA without .alpha has scale 1 (A1111's rule).
//
// The merge happens in the weight source (LoraSource below), before a weight is converted to fp16,
// transformed for Winograd or copied to the GPU: every load path gets merged weights.
#pragma once
#include <cstdint>
#include <fstream>
#include <map>
#include <memory>
#include <set>
#include <string>
#include <vector>

#include "ldm/core/checkpoint.hpp"
#include "ldm/core/safetensors.hpp"
#include "ldm/core/sha256.hpp"
#include "ldm/core/tensor.hpp"
#include "ldm/core/weights.hpp"

namespace ldm {

// A LoRA file and its multipliers (--lora FILE:M, or <lora:NAME:M> / <lora:NAME:TE:UNET> in a prompt).
struct LoraSpec {
  std::string path;
  double text_encoder_multiplier = 1.0, unet_multiplier = 1.0;
  double multiplier(Component c) const { return c == Component::UNet ? unet_multiplier : text_encoder_multiplier; }
};

// One low-rank delta, aimed at one weight of a component.
struct LoraDelta {
  std::string key;     // the file's name for it, for errors: lora_unet_..._to_q or unet.<path>
  std::string target;  // the model's weight: down_blocks.0.attentions.0...to_q.weight
  Tensor down, up;     // as stored
  double scale = 1.0;  // multiplier * alpha / rank
};

namespace detail {

inline bool starts_with(const std::string& s, const std::string& p) { return s.compare(0, p.size(), p) == 0; }
inline bool ends_with_str(const std::string& s, const std::string& p) {
  return s.size() >= p.size() && s.compare(s.size() - p.size(), p.size(), p) == 0;
}
inline std::string underscored(std::string s) {
  for (char& c : s)
    if (c == '.') c = '_';
  return s;
}

// The file's LoRA modules for one component: module name (as the file names it, without the
// component prefix) -> the keys of its down, up and alpha tensors.
struct LoraModuleKeys {
  std::string down, up, alpha;
};

}  // namespace detail

// Every tensor of a LoRA file sorted by component; anything that is neither an SD1.5 U-Net nor
// text-encoder LoRA in a layout above is an error that lists those keys.
struct LoraFile {
  std::string path;
  std::shared_ptr<const SafeTensors> file;
  bool kohya = false;
  std::map<std::string, detail::LoraModuleKeys> unet, text_encoder;  // module (file spelling) -> keys

  explicit LoraFile(const std::string& p) : path(p), file(std::make_shared<SafeTensors>(p)) {
    using detail::ends_with_str;
    using detail::starts_with;
    std::vector<std::string> unknown, sdxl;
    for (const std::string& k : file->names()) {
      auto add = [&](std::map<std::string, detail::LoraModuleKeys>& m, const std::string& module, std::string detail::LoraModuleKeys::*field) {
        m[module].*field = k;
      };
      if (starts_with(k, "lora_te2_") || starts_with(k, "text_encoder_2.") || starts_with(k, "lora_unet_input_blocks") ||
          starts_with(k, "lora_unet_output_blocks") || starts_with(k, "lora_unet_middle_block")) {
        sdxl.push_back(k);
        continue;
      }
      const bool ku = starts_with(k, "lora_unet_"), kt = starts_with(k, "lora_te_") || starts_with(k, "lora_te1_");
      if (ku || kt) {
        kohya = true;
        const size_t dot = k.find('.');
        const std::string module = k.substr(0, dot), rest = dot == std::string::npos ? "" : k.substr(dot + 1);
        const std::string bare = module.substr(module.find('_', 5) + 1);  // after lora_unet_ / lora_te_ / lora_te1_
        auto& m = ku ? unet : text_encoder;
        if (rest == "lora_down.weight") add(m, bare, &detail::LoraModuleKeys::down);
        else if (rest == "lora_up.weight") add(m, bare, &detail::LoraModuleKeys::up);
        else if (rest == "alpha") add(m, bare, &detail::LoraModuleKeys::alpha);
        else unknown.push_back(k);
        continue;
      }
      const bool pu = starts_with(k, "unet."), pt = starts_with(k, "text_encoder.");
      const bool a = ends_with_str(k, ".lora_A.weight"), b = ends_with_str(k, ".lora_B.weight");
      if ((pu || pt) && (a || b)) {
        const size_t from = pu ? 5 : 13, to = k.size() - std::string(".lora_A.weight").size();
        add(pu ? unet : text_encoder, k.substr(from, to - from), a ? &detail::LoraModuleKeys::down : &detail::LoraModuleKeys::up);
        continue;
      }
      unknown.push_back(k);
    }
    auto listed = [](const std::vector<std::string>& v) {
      std::string s;
      for (size_t i = 0; i < v.size() && i < 10; ++i) s += "\n  " + v[i];
      if (v.size() > 10) s += str("\n  ... and ", v.size() - 10, " more");
      return s;
    };
    LDM_CHECK(sdxl.empty(), "LoRA '", p, "': ", sdxl.size(), " of its tensors name modules in the original ",
              "LDM/SGM layout (input_blocks, middle_block, output_blocks) or a second text encoder, as SDXL LoRAs do; ",
              "ldm.cpp reads SD1.5 LoRAs in the diffusers module layout. The first: ", sdxl[0]);
    LDM_CHECK(unknown.empty(), "LoRA '", p, "': ", unknown.size(), " tensor(s) in neither the kohya/A1111 layout ",
              "(lora_unet_*/lora_te_*.lora_down.weight, .lora_up.weight, .alpha) nor the diffusers/PEFT one ",
              "(unet.*/text_encoder.*.lora_A.weight, .lora_B.weight):", listed(unknown));
    for (const auto* m : {&unet, &text_encoder})
      for (const auto& [name, keys] : *m)
        LDM_CHECK(!keys.down.empty() && !keys.up.empty(), "LoRA '", p, "': module ", name, " has ",
                  keys.down.empty() ? "no down (lora_down / lora_A)" : "no up (lora_up / lora_B)", " weight");
    LDM_CHECK(!unet.empty() || !text_encoder.empty(), "LoRA '", p, "' holds no LoRA weights");
  }

  const std::map<std::string, detail::LoraModuleKeys>& modules(Component c) const {
    LDM_CHECK(c == Component::UNet || c == Component::TextEncoder, "LoRA: only the U-Net and the text encoder take one");
    return c == Component::UNet ? unet : text_encoder;
  }
};

// dW = scale * up @ down, shaped as the target weight [out, ...].
inline Tensor lora_delta_weight(const LoraDelta& d, const Shape& target) {
  const int64_t r = d.down.dim(0), out = d.up.dim(0);
  const int64_t in = d.down.numel() / r;
  LDM_CHECK(d.up.numel() == out * r && (d.up.ndim() == 2 || (d.up.ndim() == 4 && d.up.dim(2) == 1 && d.up.dim(3) == 1)),
            "LoRA ", d.key, ": up ", d.up.shape_str(), " does not fit down ", d.down.shape_str(), " (rank ", r, ")");
  int64_t target_in = 1;
  for (size_t i = 1; i < target.size(); ++i) target_in *= target[i];
  LDM_CHECK(!target.empty() && target[0] == out && target_in == in, "LoRA ", d.key, ": down ", d.down.shape_str(),
            " and up ", d.up.shape_str(), " give a ", out, " x ", in, " delta, but ", d.target, " is ",
            shape_str(target), " (a LoRA for another model?)");
  using Mat = Eigen::Matrix<float, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;
  const Eigen::Map<const Mat> U(d.up.data(), out, r), D(d.down.data(), r, in);
  Tensor dw = Tensor::empty(target);
  Eigen::Map<Mat>(dw.data(), out, in) = (U.cast<double>() * D.cast<double>() * d.scale).cast<float>();
  return dw;
}

// The deltas of one LoRA file for one component. params: the model's weights by name with their
// shapes (what its load asked for: WeightStore::requested()).
inline std::vector<LoraDelta> lora_deltas(const LoraFile& f, Component c, const std::map<std::string, Shape>& params,
                                          double multiplier) {
  std::map<std::string, std::string> by_underscored;  // kohya spelling -> weight name
  if (f.kohya)
    for (const auto& [name, shape] : params) {
      if (!detail::ends_with_str(name, ".weight")) continue;
      const std::string module = name.substr(0, name.size() - 7);
      const auto [it, fresh] = by_underscored.emplace(detail::underscored(module), name);
      LDM_CHECK(fresh, "LoRA: the model's weights ", it->second, " and ", name, " have the same kohya name");
    }
  std::vector<LoraDelta> out;
  for (const auto& [module, keys] : f.modules(c)) {
    LoraDelta d;
    d.key = keys.down.substr(0, keys.down.rfind(f.kohya ? ".lora_down" : ".lora_A"));
    if (f.kohya) {
      auto it = by_underscored.find(module);
      LDM_CHECK(it != by_underscored.end(), "LoRA '", f.path, "': ", d.key, " names no weight of this model's ",
                component_name(c), " (a LoRA for another architecture?)");
      d.target = it->second;
    } else {
      d.target = module + ".weight";
      LDM_CHECK(params.count(d.target), "LoRA '", f.path, "': ", d.key, " names no weight of this model's ",
                component_name(c), " (a LoRA for another architecture?)");
    }
    d.down = f.file->load(keys.down);
    d.up = f.file->load(keys.up);
    LDM_CHECK(d.down.ndim() == 2 || d.down.ndim() == 4, "LoRA '", f.path, "': ", keys.down, " is ", d.down.shape_str(),
              ", expected [rank, in] or [rank, in, kh, kw]");
    const double rank = double(d.down.dim(0));
    double alpha = rank;
    if (!keys.alpha.empty()) {
      const Tensor a = f.file->load(keys.alpha);
      LDM_CHECK(a.numel() == 1, "LoRA '", f.path, "': ", keys.alpha, " is ", a.shape_str(), ", expected one number");
      alpha = double(a[0]);
    }
    d.scale = multiplier * alpha / rank;
    lora_delta_weight(d, params.at(d.target));  // checks the shapes now, naming the key
    out.push_back(std::move(d));
  }
  return out;
}

// A weight source with LoRA deltas added to the weights they aim at (the others pass through).
class LoraSource : public WeightSource {
 public:
  LoraSource(std::shared_ptr<const WeightSource> base, std::vector<LoraDelta> deltas) : base_(std::move(base)) {
    for (LoraDelta& d : deltas) deltas_.emplace(d.target, std::move(d));
  }
  bool has(const std::string& name) const override { return base_->has(name); }
  Shape shape(const std::string& name) const override { return base_->shape(name); }
  Tensor load(const std::string& name, const Shape& expected) const override {
    auto [first, last] = deltas_.equal_range(name);
    if (first == last) return base_->load(name, expected);
    Tensor w = base_->load(name, expected).clone();  // the base may be a view of a mapped file
    if (w.shape() != expected) w = w.reshape(expected);
    for (auto it = first; it != last; ++it) w.vec() += lora_delta_weight(it->second, expected).vec();
    return w;
  }
  std::vector<std::string> names() const override { return base_->names(); }
  std::string describe() const override { return base_->describe() + " with LoRA"; }
  void release_pages() const override { base_->release_pages(); }
  size_t num_deltas() const { return deltas_.size(); }

 private:
  std::shared_ptr<const WeightSource> base_;
  std::multimap<std::string, LoraDelta> deltas_;
};

// AUTOMATIC1111's hash of a LoRA file, as its "Lora hashes" infotext writes it: the first 12 hex
// digits of the SHA-256 of the safetensors file after its header (the "addnet" hash).
inline std::string lora_short_hash(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  LDM_CHECK(f.good(), "LoRA '", path, "' cannot be read");
  uint8_t len[8];
  f.read(reinterpret_cast<char*>(len), 8);
  LDM_CHECK(f.gcount() == 8, "LoRA '", path, "' is not a safetensors file");
  uint64_t n = 0;
  for (int i = 7; i >= 0; --i) n = n << 8 | len[i];
  f.seekg(std::streamoff(8 + n));
  Sha256 h;
  std::vector<char> buf(1 << 20);
  while (f) {
    f.read(buf.data(), std::streamsize(buf.size()));
    h.update(buf.data(), size_t(f.gcount()));
  }
  return h.hex().substr(0, 12);
}

// The source of component c with every LoRA of `loras` merged in (base itself when none touches c).
inline std::shared_ptr<const WeightSource> with_loras(std::shared_ptr<const WeightSource> base, Component c,
                                                      const std::vector<LoraSpec>& loras,
                                                      const std::map<std::string, Shape>& params) {
  std::vector<LoraDelta> all;
  for (const LoraSpec& s : loras) {
    const LoraFile f(s.path);
    for (LoraDelta& d : lora_deltas(f, c, params, s.multiplier(c))) all.push_back(std::move(d));
  }
  if (all.empty()) return base;
  return std::make_shared<LoraSource>(std::move(base), std::move(all));
}

}  // namespace ldm
