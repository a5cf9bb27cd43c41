// transformers.CLIPTextModel (transformers.models.clip.modeling_clip, CLIPTextTransformer inside):
// the CLIP ViT-L/14 text encoder that turns SD1.5's 77 token ids into the U-Net's context
// (Radford et al. 2021; GPT-2 style pre-LayerNorm transformer with a causal mask).
//
//   x = token_embedding[ids] + position_embedding[0..L)                  [B, L, 768]
//   12 x:  x = x + out_proj(causal_self_attention(layer_norm1(x)))       (12 heads of 64)
//          x = x + fc2(quick_gelu(fc1(layer_norm2(x))))                  (768 -> 3072 -> 768)
//   last_hidden_state = final_layer_norm(x)                              [B, L, 768]
//
// Checkpoint keys sit under "text_model." (diffusers text_encoder/model.safetensors):
// text_model.embeddings.token_embedding.weight, text_model.encoder.layers.N.self_attn.q_proj.weight, ...
// An original single-file SD1.5 checkpoint keeps the same names under
// "cond_stage_model.transformer.text_model": pass that as the prefix.
//
// Clip skip. hidden_states are output_hidden_states=True's: [embeddings, layer 1, ..., layer 12],
// none of them through final_layer_norm. encode(ids, B, clip_skip) follows the A1111 / ComfyUI
// "Clip skip" setting: 1 = last_hidden_state, k > 1 = final_layer_norm(hidden_states[-k]).
// diffusers' StableDiffusionPipeline(clip_skip=c) computes final_layer_norm(hidden_states[-(c + 1)]),
// so diffusers' c is encode(..., c + 1), and diffusers' clip_skip=None is encode(..., 1).
// penultimate() is hidden_states[-2] as it is, without the final norm (the raw layer 11 output).
#pragma once
#include <limits>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "ldm/core/config_json.hpp"
#include "ldm/nn/activations.hpp"
#include "ldm/nn/attention.hpp"
#include "ldm/nn/elementwise.hpp"
#include "ldm/nn/layer_norm.hpp"
#include "ldm/nn/linear.hpp"

namespace ldm {

// Defaults: openai/clip-vit-large-patch14's text config, as in SD1.5's text_encoder/config.json.
struct CLIPTextConfig {
  int64_t vocab_size = 49408;              // BPE vocabulary incl. <|startoftext|> 49406, <|endoftext|> 49407
  int64_t hidden_size = 768;               // width of every token vector (the U-Net's cross_attention_dim)
  int64_t intermediate_size = 3072;        // MLP width, 4 x hidden
  int64_t num_hidden_layers = 12;          // encoder layers
  int64_t num_attention_heads = 12;        // 12 heads of 64
  int64_t max_position_embeddings = 77;    // longest token sequence (SD1.5 always feeds 77)
  std::string hidden_act = "quick_gelu";   // "quick_gelu" (OpenAI CLIP) | "gelu" (exact erf GELU)
  float layer_norm_eps = 1e-5f;

  // A transformers config.json (CLIPTextConfig, or a full CLIPConfig with a "text_config");
  // keys not given keep the defaults above, unrelated keys (projection_dim, dropout, ...) are ignored.
  // `what` names the file in errors.
  static CLIPTextConfig from_json(const nlohmann::json& j, const std::string& what = "CLIP text config") {
    LDM_CHECK(j.is_object(), what, ": expected a JSON object, got ", j.type_name());
    if (j.contains("text_config") && j["text_config"].is_object()) return from_json(j["text_config"], what);
    CLIPTextConfig c;
    auto read = [&](const char* key, auto& field) { read_config(j, key, field, what); };
    read("vocab_size", c.vocab_size);
    read("hidden_size", c.hidden_size);
    read("intermediate_size", c.intermediate_size);
    read("num_hidden_layers", c.num_hidden_layers);
    read("num_attention_heads", c.num_attention_heads);
    read("max_position_embeddings", c.max_position_embeddings);
    read("hidden_act", c.hidden_act);
    read("layer_norm_eps", c.layer_norm_eps);
    c.validate(what);
    return c;
  }

  // Every field within its range, before anything is allocated.
  void validate(const std::string& what = "CLIP text config") const {
    namespace lim = config_limits;
    check_config_range(what, "vocab_size", vocab_size, int64_t(1), lim::kVocab);
    check_config_range(what, "hidden_size", hidden_size, int64_t(1), lim::kWidth);
    check_config_range(what, "intermediate_size", intermediate_size, int64_t(1), lim::kWidth);
    check_config_range(what, "num_hidden_layers", num_hidden_layers, int64_t(1), lim::kLayers);
    check_config_range(what, "num_attention_heads", num_attention_heads, int64_t(1), hidden_size);
    check_config_range(what, "max_position_embeddings", max_position_embeddings, int64_t(1), lim::kSize);
    check_config_range(what, "layer_norm_eps", layer_norm_eps, std::numeric_limits<float>::min(), 1.0f);
    LDM_CHECK(hidden_size % num_attention_heads == 0, what, ": hidden_size ", hidden_size, " does not split into ",
              num_attention_heads, " attention heads (num_attention_heads)");
    LDM_CHECK(hidden_act == "quick_gelu" || hidden_act == "gelu", what, ": hidden_act \"", hidden_act,
              "\" is not supported (use quick_gelu or gelu)");
  }
};

// CLIPTextEmbeddings: token lookup plus learned absolute positions.
struct CLIPTextEmbeddings {
  struct Embedding {  // torch.nn.Embedding
    Tensor weight;    // [num_embeddings, dim]
    Tensor grad_weight;  // accumulated by backward (nn/grad.hpp)
  };
  Embedding token_embedding;     // [vocab_size, hidden]
  Embedding position_embedding;  // [max_position_embeddings, hidden]

  void load(WeightStore& w, const std::string& prefix, const CLIPTextConfig& c) {
    token_embedding.weight = w.get(join(prefix, "token_embedding.weight"), {c.vocab_size, c.hidden_size});
    position_embedding.weight =
        w.get(join(prefix, "position_embedding.weight"), {c.max_position_embeddings, c.hidden_size});
  }

  // ids [B * L] (already range-checked) -> [B, L, hidden]; positions are 0..L-1 (position_ids = arange).
  Tensor forward(const std::vector<int64_t>& ids, int64_t B, int64_t L) const {
    const int64_t D = token_embedding.weight.dim(1);
    Tensor x = Tensor::empty({B, L, D});
    for (int64_t b = 0; b < B; ++b)
      for (int64_t t = 0; t < L; ++t) {
        const float* tok = token_embedding.weight.data() + ids[size_t(b * L + t)] * D;
        const float* pos = position_embedding.weight.data() + t * D;
        float* o = x.data() + (b * L + t) * D;
        for (int64_t i = 0; i < D; ++i) o[i] = tok[i] + pos[i];
      }
    return x;
  }

  // Saves the ids. dy [B, L, hidden] -> nothing (ids have no gradient); an embedding lookup's
  // backward is a scatter-add: each token's row of dy is added to the gradient row of its id
  // (a repeated id sums), and to that of its position.
  void backward(const std::vector<int64_t>& ids, int64_t B, int64_t L, const Tensor& dy) {
    const int64_t D = token_embedding.weight.dim(1);
    LDM_CHECK(dy.shape() == Shape({B, L, D}) && int64_t(ids.size()) == B * L, "CLIPTextEmbeddings::backward: gradient ",
              dy.shape_str(), " does not match ", ids.size(), " ids as [", B, ", ", L, ", ", D, "]");
    float* gt = grad_buffer(token_embedding.grad_weight, token_embedding.weight.shape()).data();
    float* gp = grad_buffer(position_embedding.grad_weight, position_embedding.weight.shape()).data();
    for (int64_t b = 0; b < B; ++b)
      for (int64_t t = 0; t < L; ++t) {
        Eigen::Map<const Eigen::ArrayXf> d(dy.data() + (b * L + t) * D, D);
        Eigen::Map<Eigen::ArrayXf>(gt + ids[size_t(b * L + t)] * D, D) += d;
        Eigen::Map<Eigen::ArrayXf>(gp + t * D, D) += d;
      }
  }

  void parameters(const std::string& prefix, std::vector<Parameter>& out) {
    add_parameter(out, join(prefix, "token_embedding.weight"), token_embedding.weight, token_embedding.grad_weight);
    add_parameter(out, join(prefix, "position_embedding.weight"), position_embedding.weight,
                  position_embedding.grad_weight);
  }
};

// CLIPAttention: multi-head self-attention with q/k/v/out biases, causal for text.
// transformers multiplies q by head_dim^-0.5 before q k^T; scaling the scores is the same math.
struct CLIPAttention {
  Linear q_proj, k_proj, v_proj, out_proj;
  int64_t heads = 12;

  void load(WeightStore& w, const std::string& prefix, int64_t dim, int64_t heads_) {
    heads = heads_;
    q_proj.load(w, join(prefix, "q_proj"), dim, dim);
    k_proj.load(w, join(prefix, "k_proj"), dim, dim);
    v_proj.load(w, join(prefix, "v_proj"), dim, dim);
    out_proj.load(w, join(prefix, "out_proj"), dim, dim);
  }

  // [B, L, dim] -> [B, L, dim]
  Tensor forward(const Tensor& x) const {
    Tensor q = q_proj.forward(x), k = k_proj.forward(x), v = v_proj.forward(x);             // [B, L, dim] each
    return out_proj.forward(scaled_dot_product_attention(q, k, v, heads, /*causal=*/true));  // token i sees 0..i
  }

  // Training: the inputs of every projection.
  struct Saved {
    Tensor x, q, k, v, o;  // [B, L, dim] each; o = the attention's output
  };
  Tensor forward(const Tensor& x, Saved& s) const {
    s.x = x;
    s.q = q_proj.forward(x), s.k = k_proj.forward(x), s.v = v_proj.forward(x);
    s.o = scaled_dot_product_attention(s.q, s.k, s.v, heads, /*causal=*/true);
    return out_proj.forward(s.o);
  }
  // dy [B, L, dim] -> dx [B, L, dim]. Frees `s`.
  Tensor backward(Saved& s, const Tensor& dy) {
    const AttentionGrad g =
        scaled_dot_product_attention_backward(s.q, s.k, s.v, out_proj.backward(s.o, dy), heads, /*causal=*/true);
    Tensor dx = q_proj.backward(s.x, g.q);
    add_(dx, k_proj.backward(s.x, g.k));
    add_(dx, v_proj.backward(s.x, g.v));
    s = Saved();
    return dx;
  }
  void parameters(const std::string& prefix, std::vector<Parameter>& out) {
    q_proj.parameters(join(prefix, "q_proj"), out);
    k_proj.parameters(join(prefix, "k_proj"), out);
    v_proj.parameters(join(prefix, "v_proj"), out);
    out_proj.parameters(join(prefix, "out_proj"), out);
  }
};

// CLIPMLP: fc1 -> activation -> fc2.
struct CLIPMLP {
  Linear fc1, fc2;
  bool quick_gelu = true;  // false: exact GELU

  void load(WeightStore& w, const std::string& prefix, const CLIPTextConfig& c) {
    fc1.load(w, join(prefix, "fc1"), c.hidden_size, c.intermediate_size);
    fc2.load(w, join(prefix, "fc2"), c.intermediate_size, c.hidden_size);
    quick_gelu = c.hidden_act == "quick_gelu";
  }

  // [B, L, hidden] -> [B, L, hidden]
  Tensor forward(const Tensor& x) const {
    Tensor h = fc1.forward(x);  // [B, L, intermediate]
    if (quick_gelu)
      quick_gelu_(h);
    else
      gelu_(h);
    return fc2.forward(h);  // [B, L, hidden]
  }

  // Training: the input and fc1's output (the activation's input; its output is recomputed).
  struct Saved {
    Tensor x, h;  // [B, L, hidden], [B, L, intermediate]
  };
  Tensor forward(const Tensor& x, Saved& s) const {
    s.x = x;
    s.h = fc1.forward(x);
    return fc2.forward(activation(s.h));
  }
  // dy [B, L, hidden] -> dx [B, L, hidden]. Frees `s`.
  Tensor backward(Saved& s, const Tensor& dy) {
    const Tensor da = fc2.backward(activation(s.h), dy);  // [B, L, intermediate]
    const Tensor dx = fc1.backward(s.x, quick_gelu ? quick_gelu_backward(s.h, da) : gelu_backward(s.h, da));
    s = Saved();
    return dx;
  }
  Tensor activation(Tensor h) const {
    h = h.clone();
    if (quick_gelu)
      quick_gelu_(h);
    else
      gelu_(h);
    return h;
  }
  void parameters(const std::string& prefix, std::vector<Parameter>& out) {
    fc1.parameters(join(prefix, "fc1"), out);
    fc2.parameters(join(prefix, "fc2"), out);
  }
};

// CLIPEncoderLayer: pre-LayerNorm residual block.
struct CLIPEncoderLayer {
  CLIPAttention self_attn;
  LayerNorm layer_norm1;
  CLIPMLP mlp;
  LayerNorm layer_norm2;

  void load(WeightStore& w, const std::string& prefix, const CLIPTextConfig& c) {
    self_attn.load(w, join(prefix, "self_attn"), c.hidden_size, c.num_attention_heads);
    layer_norm1.load(w, join(prefix, "layer_norm1"), c.hidden_size, c.layer_norm_eps);
    mlp.load(w, join(prefix, "mlp"), c);
    layer_norm2.load(w, join(prefix, "layer_norm2"), c.hidden_size, c.layer_norm_eps);
  }

  // [B, L, hidden] -> [B, L, hidden]
  Tensor forward(const Tensor& x) const {
    Tensor h = add(x, self_attn.forward(layer_norm1.forward(x)));  // x + attn(ln1(x))
    add_(h, mlp.forward(layer_norm2.forward(h)));                  // h + mlp(ln2(h))
    return h;
  }

  // Training: the two norms' inputs; their outputs are the sub-blocks' saved inputs.
  struct Saved {
    Tensor x, h;  // [B, L, hidden]: the input, after the attention
    CLIPAttention::Saved self_attn;
    CLIPMLP::Saved mlp;
  };
  Tensor forward(const Tensor& x, Saved& s) const {
    s.x = x;
    s.h = add(x, self_attn.forward(layer_norm1.forward(x), s.self_attn));
    return add(s.h, mlp.forward(layer_norm2.forward(s.h), s.mlp));
  }
  // dy [B, L, hidden] -> dx. Frees `s`.
  Tensor backward(Saved& s, const Tensor& dy) {
    Tensor d = dy.clone();                                                   // the residual path
    add_(d, layer_norm2.backward(s.h, mlp.backward(s.mlp, d)));              // h + mlp(ln2(h))
    add_(d, layer_norm1.backward(s.x, self_attn.backward(s.self_attn, d)));  // x + attn(ln1(x))
    s = Saved();
    return d;
  }
  void parameters(const std::string& prefix, std::vector<Parameter>& out) {
    self_attn.parameters(join(prefix, "self_attn"), out);
    layer_norm1.parameters(join(prefix, "layer_norm1"), out);
    mlp.parameters(join(prefix, "mlp"), out);
    layer_norm2.parameters(join(prefix, "layer_norm2"), out);
  }
};

struct CLIPEncoder {
  std::vector<CLIPEncoderLayer> layers;

  void load(WeightStore& w, const std::string& prefix, const CLIPTextConfig& c) {
    layers.assign(size_t(c.num_hidden_layers), CLIPEncoderLayer{});
    for (size_t i = 0; i < layers.size(); ++i) layers[i].load(w, join(prefix, "layers." + std::to_string(i)), c);
  }
};

struct CLIPTextOutput {
  Tensor last_hidden_state;           // [B, L, hidden], after final_layer_norm
  std::vector<Tensor> hidden_states;  // with output_hidden_states: embeddings + each layer's output
                                      // (num_hidden_layers + 1 tensors [B, L, hidden], no final norm)
};

// CLIPTextModel; members are those of its .text_model (CLIPTextTransformer).
struct CLIPTextModel {
  CLIPTextConfig config;
  CLIPTextEmbeddings embeddings;
  CLIPEncoder encoder;
  LayerNorm final_layer_norm;

  // prefix "text_model" for a diffusers text_encoder/model.safetensors.
  void load(WeightStore& w, const std::string& prefix = "text_model", const CLIPTextConfig& c = CLIPTextConfig{}) {
    c.validate();
    config = c;
    embeddings.load(w, join(prefix, "embeddings"), c);
    encoder.load(w, join(prefix, "encoder"), c);
    final_layer_norm.load(w, join(prefix, "final_layer_norm"), c.hidden_size, c.layer_norm_eps);
  }

  // input_ids: batch rows of L ids each (L = 77 for SD1.5; any L <= max_position_embeddings).
  CLIPTextOutput forward(const std::vector<int64_t>& input_ids, int64_t batch, bool output_hidden_states = false) const {
    CLIPTextOutput out;
    Tensor h = run(input_ids, batch, config.num_hidden_layers, output_hidden_states ? &out.hidden_states : nullptr);
    out.last_hidden_state = final_layer_norm.forward(h);  // [B, L, hidden]
    return out;
  }

  // The prompt embedding a pipeline feeds the U-Net, with A1111-style clip skip (see the top
  // of this file): 1 = last_hidden_state, k > 1 = final_layer_norm(hidden_states[-k]).
  // Only the layers needed are run. [B, L, hidden]
  Tensor encode(const std::vector<int64_t>& ids, int64_t batch, int clip_skip = 1) const {
    LDM_CHECK(clip_skip >= 1 && clip_skip <= config.num_hidden_layers + 1, "CLIPTextModel: clip_skip must be in [1, ",
              config.num_hidden_layers + 1, "] (1 = last layer, 2 = penultimate), got ", clip_skip);
    return final_layer_norm.forward(run(ids, batch, config.num_hidden_layers - (clip_skip - 1), nullptr));
  }

  // hidden_states[-2] without final_layer_norm: the output of the second-to-last layer. [B, L, hidden]
  Tensor penultimate(const std::vector<int64_t>& ids, int64_t batch) const {
    return run(ids, batch, config.num_hidden_layers - 1, nullptr);
  }

  // ---- training: last_hidden_state with saved activations, then backward
  struct Saved {
    std::vector<int64_t> ids;
    int64_t B = 0, L = 0;
    std::vector<CLIPEncoderLayer::Saved> layers;
    Tensor h;  // final_layer_norm's input [B, L, hidden]
  };
  // input_ids as forward -> last_hidden_state [B, L, hidden].
  Tensor forward(const std::vector<int64_t>& input_ids, int64_t batch, Saved& s) const {
    s.h = run(input_ids, batch, 0, nullptr);  // checks the ids, embeds them
    s.ids = input_ids, s.B = batch, s.L = int64_t(input_ids.size()) / batch;
    s.layers.resize(encoder.layers.size());
    for (size_t i = 0; i < encoder.layers.size(); ++i) s.h = encoder.layers[i].forward(s.h, s.layers[i]);
    return final_layer_norm.forward(s.h);
  }
  // d last_hidden_state [B, L, hidden] -> every parameter's gradient accumulates (the ids have
  // none). Frees `s`.
  void backward(Saved& s, const Tensor& dy) {
    LDM_CHECK(s.h.defined(), "CLIPTextModel::backward: no saved activations (run forward(..., saved) first)");
    LDM_CHECK(dy.shape() == s.h.shape(), "CLIPTextModel::backward: the gradient of last_hidden_state ",
              dy.shape_str(), " must have its shape ", s.h.shape_str());
    Tensor d = final_layer_norm.backward(s.h, dy);
    for (size_t i = encoder.layers.size(); i-- > 0;) d = encoder.layers[i].backward(s.layers[i], d);
    embeddings.backward(s.ids, s.B, s.L, d);
    s = Saved();
  }
  // Every parameter under its transformers name; prefix "text_model" for a diffusers text_encoder.
  void parameters(const std::string& prefix, std::vector<Parameter>& out) {
    embeddings.parameters(join(prefix, "embeddings"), out);
    for (size_t i = 0; i < encoder.layers.size(); ++i)
      encoder.layers[i].parameters(join(prefix, "encoder.layers." + std::to_string(i)), out);
    final_layer_norm.parameters(join(prefix, "final_layer_norm"), out);
  }

 private:
  // Embeddings, then the first n_layers encoder layers; collects every intermediate when asked.
  Tensor run(const std::vector<int64_t>& ids, int64_t B, int64_t n_layers, std::vector<Tensor>* hidden) const {
    LDM_CHECK(!encoder.layers.empty(), "CLIPTextModel: call load() before forward()");
    LDM_CHECK(B > 0 && !ids.empty() && int64_t(ids.size()) % B == 0, "CLIPTextModel: ", ids.size(),
              " input ids do not split into a batch of ", B, " sequences");
    const int64_t L = int64_t(ids.size()) / B;
    LDM_CHECK(L <= config.max_position_embeddings, "CLIPTextModel: sequences of ", L, " tokens are longer than the ",
              config.max_position_embeddings, " positions the model has; truncate the prompt (the tokenizer's ",
              "encode_padded(text, ", config.max_position_embeddings, ") does)");
    for (size_t i = 0; i < ids.size(); ++i)
      LDM_CHECK(ids[i] >= 0 && ids[i] < config.vocab_size, "CLIPTextModel: token id ", ids[i], " at position ",
                int64_t(i) % L, " of sequence ", int64_t(i) / L, " is outside the vocabulary [0, ", config.vocab_size,
                "); was the prompt tokenized with this model's tokenizer?");

    Tensor h = embeddings.forward(ids, B, L);  // [B, L, hidden]
    if (hidden) hidden->push_back(h);
    for (int64_t i = 0; i < n_layers; ++i) {
      h = encoder.layers[size_t(i)].forward(h);  // [B, L, hidden]
      if (hidden) hidden->push_back(h);
    }
    return h;
  }
};

}  // namespace ldm
