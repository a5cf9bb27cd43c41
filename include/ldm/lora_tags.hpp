// LoRAs named in a prompt, as AUTOMATIC1111 reads them (modules/extra_networks.py): a tag
// `<lora:NAME>`, `<lora:NAME:M>` or `<lora:NAME:TE:UNET>` asks for NAME's LoRA with multiplier M
// (1 by default; TE for the text encoder, UNET for the U-Net, UNET = TE when not given), and is
// removed from the prompt's text before it is encoded. Other `<kind:...>` tags stay in the text.
//
//   extract_lora_tags("a red circle <lora:shapes:0.8>")
//     -> prompt "a red circle ", tags [{name "shapes", te 0.8, unet 0.8}]
#pragma once
#include <cmath>
#include <cstdlib>
#include <optional>
#include <regex>
#include <string>
#include <vector>

#include "ldm/core/error.hpp"

namespace ldm {

struct LoraTag {
  std::string name;
  double text_encoder_multiplier = 1.0, unet_multiplier = 1.0;
};

struct PromptLoras {
  std::string prompt;         // the text without its <lora:...> tags
  std::vector<LoraTag> tags;  // in the order they appear
};

// A multiplier: the whole text a finite number, else nothing.
inline std::optional<double> lora_multiplier(const std::string& s) {
  char* end = nullptr;
  const double v = std::strtod(s.c_str(), &end);
  if (s.empty() || end != s.c_str() + s.size() || !std::isfinite(v)) return std::nullopt;
  return v;
}

inline double lora_tag_number(const std::string& s, const std::string& tag) {
  const std::optional<double> v = lora_multiplier(s);
  LDM_CHECK(v.has_value(), "prompt tag ", tag, ": '", s, "' is not a number (expected <lora:NAME:MULTIPLIER>)");
  return *v;
}

inline PromptLoras extract_lora_tags(const std::string& prompt) {
  static const std::regex extra_network(R"(<(\w+):([^>]+)>)");  // A1111's re_extra_net
  PromptLoras r;
  size_t last = 0;
  for (auto it = std::sregex_iterator(prompt.begin(), prompt.end(), extra_network); it != std::sregex_iterator(); ++it) {
    const std::smatch& m = *it;
    if (m[1].str() != "lora") continue;
    std::vector<std::string> args;
    const std::string body = m[2].str();
    for (size_t from = 0;;) {
      const size_t colon = body.find(':', from);
      args.push_back(body.substr(from, colon == std::string::npos ? std::string::npos : colon - from));
      if (colon == std::string::npos) break;
      from = colon + 1;
    }
    const std::string tag = m.str();
    LDM_CHECK(!args[0].empty() && args.size() <= 3, "prompt tag ", tag, ": expected <lora:NAME>, <lora:NAME:M> or ",
              "<lora:NAME:TE:UNET>");
    LoraTag t;
    t.name = args[0];
    if (args.size() > 1) t.text_encoder_multiplier = t.unet_multiplier = lora_tag_number(args[1], tag);
    if (args.size() > 2) t.unet_multiplier = lora_tag_number(args[2], tag);
    r.tags.push_back(t);
    r.prompt += prompt.substr(last, size_t(m.position(0)) - last);
    last = size_t(m.position(0) + m.length(0));
  }
  r.prompt += prompt.substr(last);
  return r;
}

}  // namespace ldm
