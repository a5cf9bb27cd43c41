// The CLIP ViT-L/14 text encoder on the GPU: the twin of include/ldm/models/clip_text.hpp (read
// that for the architecture and the clip-skip conventions), same config (ldm::CLIPTextConfig),
// same checkpoint names, same API: forward / encode / penultimate take token ids and return
// host float32 tensors, so a pipeline calls either model the same way.
//
// The token-embedding lookup is a gather of 77 rows per prompt: it runs on the host, with the
// CPU module and its weights (kept in host memory), and only its result [B, L, hidden] is
// uploaded. The 12 encoder layers and the final LayerNorm run on the GPU in the model's DType.
//
//   cuda::CLIPTextModel clip;
//   clip.load(w, "text_model", CLIPTextConfig::from_json(config_json), cuda::DType::f16);
//   Tensor context = clip.encode(ids /*B * 77*/, B);           // [B, 77, 768], host float32
//   DeviceTensor c = clip.encode_device(ids, B);                // the same, left on the GPU
#pragma once
#include <string>
#include <vector>

#include "ldm/cuda/modules.hpp"
#include "ldm/models/clip_text.hpp"

namespace ldm::cuda {

// Causal multi-head self-attention with q/k/v/out biases.
struct CLIPAttention {
  Linear q_proj, k_proj, v_proj, out_proj;
  int64_t heads = 12;

  void upload(const ldm::CLIPAttention& m, DType dtype) {
    q_proj.upload(m.q_proj, dtype);
    k_proj.upload(m.k_proj, dtype);
    v_proj.upload(m.v_proj, dtype);
    out_proj.upload(m.out_proj, dtype);
    heads = m.heads;
  }
  // [B, L, dim] -> [B, L, dim]
  DeviceTensor forward(const DeviceTensor& x) const {
    const DeviceTensor q = q_proj.forward(x), k = k_proj.forward(x), v = v_proj.forward(x);  // [B, L, dim] each
    return out_proj.forward(attention(q, k, v, heads, /*causal=*/true));                     // token i sees 0..i
  }
};

// fc1 -> quick_gelu (or exact GELU) -> fc2
struct CLIPMLP {
  Linear fc1, fc2;
  bool quick_gelu = true;

  void upload(const ldm::CLIPMLP& m, DType dtype) {
    fc1.upload(m.fc1, dtype);
    fc2.upload(m.fc2, dtype);
    quick_gelu = m.quick_gelu;
  }
  // [B, L, hidden] -> [B, L, hidden]
  DeviceTensor forward(const DeviceTensor& x) const {
    DeviceTensor h = fc1.forward(x);  // [B, L, intermediate]
    if (quick_gelu)
      quick_gelu_(h);
    else
      gelu_(h);
    return fc2.forward(h);
  }
};

// h = x + attn(ln1(x)); h + mlp(ln2(h))
struct CLIPEncoderLayer {
  CLIPAttention self_attn;
  LayerNorm layer_norm1;
  CLIPMLP mlp;
  LayerNorm layer_norm2;

  void upload(const ldm::CLIPEncoderLayer& m, DType dtype) {
    self_attn.upload(m.self_attn, dtype);
    layer_norm1.upload(m.layer_norm1, dtype);
    mlp.upload(m.mlp, dtype);
    layer_norm2.upload(m.layer_norm2, dtype);
  }
  // [B, L, hidden] -> [B, L, hidden]
  DeviceTensor forward(const DeviceTensor& x) const {
    DeviceTensor h = add(x, self_attn.forward(layer_norm1.forward(x)));
    add_(h, mlp.forward(layer_norm2.forward(h)));
    return h;
  }
};

struct CLIPEncoder {
  std::vector<CLIPEncoderLayer> layers;
  void upload(const ldm::CLIPEncoder& m, DType dtype) { upload_all(layers, m.layers, dtype); }
};

struct CLIPTextModel {
  ldm::CLIPTextConfig config;
  DType dtype = DType::f32;
  ldm::CLIPTextEmbeddings embeddings;  // host: token and position tables, float32
  CLIPEncoder encoder;
  LayerNorm final_layer_norm;

  // prefix "text_model" for a diffusers text_encoder/model.safetensors.
  void load(WeightStore& w, const std::string& prefix, const ldm::CLIPTextConfig& c, DType dtype_) {
    ldm::CLIPTextModel cpu;
    cpu.load(w, prefix, c);
    upload(cpu, dtype_);
  }
  void upload(const ldm::CLIPTextModel& m, DType dtype_) {
    LDM_CHECK(!m.encoder.layers.empty(), "cuda::CLIPTextModel: upload of a CPU model that was never loaded");
    config = m.config;
    dtype = dtype_;
    embeddings = m.embeddings;  // shares the host tensors
    encoder.upload(m.encoder, dtype);
    final_layer_norm.upload(m.final_layer_norm, dtype);
  }

  // As ldm::CLIPTextModel::forward: last_hidden_state, and with output_hidden_states the
  // embeddings and every layer's output (no final norm); host float32 [B, L, hidden] each.
  CLIPTextOutput forward(const std::vector<int64_t>& input_ids, int64_t batch, bool output_hidden_states = false) const {
    CLIPTextOutput out;
    std::vector<DeviceTensor> hidden;
    const DeviceTensor h = run(input_ids, batch, config.num_hidden_layers, output_hidden_states ? &hidden : nullptr);
    out.last_hidden_state = to_host(final_layer_norm.forward(h));
    for (const auto& t : hidden) out.hidden_states.push_back(to_host(t));
    return out;
  }

  // The U-Net's context with A1111-style clip skip: 1 = last_hidden_state, k > 1 =
  // final_layer_norm(hidden_states[-k]); only the layers needed are run. [B, L, hidden] in the
  // model's dtype, on the GPU.
  DeviceTensor encode_device(const std::vector<int64_t>& ids, int64_t batch, int clip_skip = 1) const {
    LDM_CHECK(clip_skip >= 1 && clip_skip <= config.num_hidden_layers + 1,
              "cuda::CLIPTextModel: clip_skip must be in [1, ", config.num_hidden_layers + 1,
              "] (1 = last layer, 2 = penultimate), got ", clip_skip);
    return final_layer_norm.forward(run(ids, batch, config.num_hidden_layers - (clip_skip - 1), nullptr));
  }
  // The same, as host float32 (as ldm::CLIPTextModel::encode).
  Tensor encode(const std::vector<int64_t>& ids, int64_t batch, int clip_skip = 1) const {
    return to_host(encode_device(ids, batch, clip_skip));
  }

  // hidden_states[-2] without final_layer_norm. Host float32 [B, L, hidden].
  Tensor penultimate(const std::vector<int64_t>& ids, int64_t batch) const {
    return to_host(run(ids, batch, config.num_hidden_layers - 1, nullptr));
  }

 private:
  // Embeddings (host lookup, uploaded), then the first n_layers encoder layers on the GPU.
  DeviceTensor run(const std::vector<int64_t>& ids, int64_t B, int64_t n_layers,
                   std::vector<DeviceTensor>* hidden) const {
    LDM_CHECK(!encoder.layers.empty(), "cuda::CLIPTextModel: call load() before forward()");
    LDM_CHECK(B > 0 && !ids.empty() && int64_t(ids.size()) % B == 0, "cuda::CLIPTextModel: ", ids.size(),
              " input ids do not split into a batch of ", B, " sequences");
    const int64_t L = int64_t(ids.size()) / B;
    LDM_CHECK(L <= config.max_position_embeddings, "cuda::CLIPTextModel: sequences of ", L,
              " tokens are longer than the ", config.max_position_embeddings, " positions the model has");
    for (size_t i = 0; i < ids.size(); ++i)
      LDM_CHECK(ids[i] >= 0 && ids[i] < config.vocab_size, "cuda::CLIPTextModel: token id ", ids[i], " at position ",
                int64_t(i) % L, " of sequence ", int64_t(i) / L, " is outside the vocabulary [0, ", config.vocab_size,
                ")");

    DeviceTensor h = to_device(embeddings.forward(ids, B, L), dtype);  // [B, L, hidden]
    if (hidden) hidden->push_back(h);
    for (int64_t i = 0; i < n_layers; ++i) {
      h = encoder.layers[size_t(i)].forward(h);
      if (hidden) hidden->push_back(h);
    }
    return h;
  }
};

}  // namespace ldm::cuda
