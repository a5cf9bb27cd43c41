// Single-file <-> diffusers tensor names of SD1.5, as rules. See include/ldm/core/checkpoint.hpp.
//
// The tables mirror diffusers' scripts/convert_diffusers_to_original_stable_diffusion.py:
// a few whole names, then block prefixes built by the same loops (SD1.5's fixed counts:
// 4 levels, 2 resnets down, 3 up), then a rename of the first member inside a block
// (a U-Net resnet's norm1 is in_layers.0, a VAE attention's to_q is q, ...). Each name
// matches at most one prefix, so the mapping reads the same both ways.
#include <string>
#include <utility>
#include <vector>

#include "ldm/core/checkpoint.hpp"

namespace ldm {

namespace {

bool starts_with(const std::string& s, const std::string& p) { return s.compare(0, p.size(), p) == 0; }

// How the part of a name after a block prefix is renamed.
enum class Inner { Same, UNetResnet, VAEResnet, VAEAttention };

struct Pair {
  std::string model, file;  // diffusers, single file
};

struct PrefixRule {
  std::string model, file;
  Inner inner;
};

struct Rules {
  std::vector<Pair> exact;
  std::vector<PrefixRule> prefixes;
};

const std::vector<Pair>& inner_pairs(Inner inner) {
  static const std::vector<Pair> none;
  static const std::vector<Pair> unet_resnet = {
      {"norm1", "in_layers.0"},  {"conv1", "in_layers.2"},         {"norm2", "out_layers.0"},
      {"conv2", "out_layers.3"}, {"time_emb_proj", "emb_layers.1"}, {"conv_shortcut", "skip_connection"},
  };
  static const std::vector<Pair> vae_resnet = {{"conv_shortcut", "nin_shortcut"}};
  static const std::vector<Pair> vae_attention = {
      {"group_norm", "norm"}, {"to_q", "q"}, {"to_k", "k"}, {"to_v", "v"}, {"to_out.0", "proj_out"},
  };
  switch (inner) {
    case Inner::UNetResnet: return unet_resnet;
    case Inner::VAEResnet: return vae_resnet;
    case Inner::VAEAttention: return vae_attention;
    case Inner::Same: break;
  }
  return none;
}

const Rules& unet_rules() {
  static const Rules rules = [] {
    Rules r;
    r.exact = {
        {"time_embedding.linear_1.weight", "time_embed.0.weight"},
        {"time_embedding.linear_1.bias", "time_embed.0.bias"},
        {"time_embedding.linear_2.weight", "time_embed.2.weight"},
        {"time_embedding.linear_2.bias", "time_embed.2.bias"},
        {"conv_in.weight", "input_blocks.0.0.weight"},
        {"conv_in.bias", "input_blocks.0.0.bias"},
        {"conv_norm_out.weight", "out.0.weight"},
        {"conv_norm_out.bias", "out.0.bias"},
        {"conv_out.weight", "out.2.weight"},
        {"conv_out.bias", "out.2.bias"},
    };
    auto add = [&r](std::string model, std::string file, Inner inner) {
      r.prefixes.push_back({std::move(model), std::move(file), inner});
    };
    const auto s = [](int v) { return std::to_string(v); };
    for (int i = 0; i < 4; ++i) {
      // input_blocks: [conv_in], then per level 2 x (resnet, attention) and a downsampler.
      for (int j = 0; j < 2; ++j) {
        add("down_blocks." + s(i) + ".resnets." + s(j) + ".", "input_blocks." + s(3 * i + j + 1) + ".0.", Inner::UNetResnet);
        if (i < 3)  // down_blocks.3 has no attention
          add("down_blocks." + s(i) + ".attentions." + s(j) + ".", "input_blocks." + s(3 * i + j + 1) + ".1.", Inner::Same);
      }
      // output_blocks: per level 3 x (resnet, attention), the last with the upsampler.
      for (int j = 0; j < 3; ++j) {
        add("up_blocks." + s(i) + ".resnets." + s(j) + ".", "output_blocks." + s(3 * i + j) + ".0.", Inner::UNetResnet);
        if (i > 0)  // up_blocks.0 has no attention
          add("up_blocks." + s(i) + ".attentions." + s(j) + ".", "output_blocks." + s(3 * i + j) + ".1.", Inner::Same);
      }
      if (i < 3) {
        add("down_blocks." + s(i) + ".downsamplers.0.conv.", "input_blocks." + s(3 * (i + 1)) + ".0.op.", Inner::Same);
        add("up_blocks." + s(i) + ".upsamplers.0.", "output_blocks." + s(3 * i + 2) + "." + (i == 0 ? "1." : "2."),
            Inner::Same);
      }
    }
    add("mid_block.attentions.0.", "middle_block.1.", Inner::Same);
    for (int j = 0; j < 2; ++j) add("mid_block.resnets." + s(j) + ".", "middle_block." + s(2 * j) + ".", Inner::UNetResnet);
    return r;
  }();
  return rules;
}

const Rules& vae_rules() {
  static const Rules rules = [] {
    Rules r;
    auto add = [&r](std::string model, std::string file, Inner inner) {
      r.prefixes.push_back({std::move(model), std::move(file), inner});
    };
    const auto s = [](int v) { return std::to_string(v); };
    for (int i = 0; i < 4; ++i) {
      for (int j = 0; j < 2; ++j)
        add("encoder.down_blocks." + s(i) + ".resnets." + s(j) + ".", "encoder.down." + s(i) + ".block." + s(j) + ".",
            Inner::VAEResnet);
      // The decoder's up blocks are numbered from the bottom in the original code.
      for (int j = 0; j < 3; ++j)
        add("decoder.up_blocks." + s(i) + ".resnets." + s(j) + ".", "decoder.up." + s(3 - i) + ".block." + s(j) + ".",
            Inner::VAEResnet);
      if (i < 3) {
        add("encoder.down_blocks." + s(i) + ".downsamplers.0.", "encoder.down." + s(i) + ".downsample.", Inner::Same);
        add("decoder.up_blocks." + s(i) + ".upsamplers.0.", "decoder.up." + s(3 - i) + ".upsample.", Inner::Same);
      }
    }
    for (const std::string part : {"encoder.", "decoder."}) {
      for (int j = 0; j < 2; ++j)
        add(part + "mid_block.resnets." + s(j) + ".", part + "mid.block_" + s(j + 1) + ".", Inner::VAEResnet);
      add(part + "mid_block.attentions.0.", part + "mid.attn_1.", Inner::VAEAttention);
      add(part + "conv_norm_out.", part + "norm_out.", Inner::Same);
    }
    return r;
  }();
  return rules;
}

// Renames the first member of `rest` (the part after a block prefix).
std::string rename_inner(Inner inner, const std::string& rest, bool to_file) {
  for (const Pair& p : inner_pairs(inner)) {
    const std::string& from = to_file ? p.model : p.file;
    if (starts_with(rest, from + ".")) return (to_file ? p.file : p.model) + rest.substr(from.size());
  }
  return rest;
}

// Names no rule mentions are the same in both layouts (conv_in, quant_conv, CLIP, ...).
std::string convert(const Rules& r, const std::string& name, bool to_file) {
  for (const Pair& e : r.exact)
    if (name == (to_file ? e.model : e.file)) return to_file ? e.file : e.model;
  for (const PrefixRule& p : r.prefixes) {
    const std::string& from = to_file ? p.model : p.file;
    if (starts_with(name, from)) return (to_file ? p.file : p.model) + rename_inner(p.inner, name.substr(from.size()), to_file);
  }
  return name;
}

const Rules* rules_of(Component c) {
  switch (c) {
    case Component::UNet: return &unet_rules();
    case Component::VAE: return &vae_rules();
    case Component::TextEncoder: return nullptr;  // transformers' CLIPTextModel names, unchanged
  }
  return nullptr;
}

}  // namespace

const char* component_name(Component c) {
  switch (c) {
    case Component::UNet: return "unet";
    case Component::VAE: return "vae";
    case Component::TextEncoder: return "text_encoder";
  }
  return "?";
}

const char* single_file_prefix(Component c) {
  switch (c) {
    case Component::UNet: return "model.diffusion_model.";
    case Component::VAE: return "first_stage_model.";
    case Component::TextEncoder: return "cond_stage_model.transformer.";
  }
  return "";
}

std::string single_file_layout_name(Component c, const std::string& diffusers_name) {
  const Rules* r = rules_of(c);
  return r ? convert(*r, diffusers_name, true) : diffusers_name;
}

std::string diffusers_layout_name(Component c, const std::string& file_name) {
  const Rules* r = rules_of(c);
  if (r) return convert(*r, file_name, false);
  // Checkpoints made with transformers 4.x before text_model existed omit it.
  return starts_with(file_name, "text_model.") ? file_name : "text_model." + file_name;
}

std::string single_file_name(Component c, const std::string& diffusers_name) {
  return single_file_prefix(c) + single_file_layout_name(c, diffusers_name);
}

bool diffusers_name(const std::string& file_name, Component* c, std::string* name) {
  for (Component k : {Component::UNet, Component::VAE, Component::TextEncoder}) {
    const std::string prefix = single_file_prefix(k);
    if (!starts_with(file_name, prefix)) continue;
    std::string n = diffusers_layout_name(k, file_name.substr(prefix.size()));
    if (n == "text_model.embeddings.position_ids") return false;  // a buffer, not a weight
    if (c) *c = k;
    if (name) *name = std::move(n);
    return true;
  }
  return false;
}

bool is_vae_attention_projection(const std::string& name) {
  for (const char* part : {"encoder.", "decoder."})
    for (const char* proj : {"to_q", "to_k", "to_v", "to_out.0"})
      if (name == std::string(part) + "mid_block.attentions.0." + proj + ".weight") return true;
  return false;
}

}  // namespace ldm
