#!/usr/bin/env python3
"""Reference for ldm.cpp's LoRA loading (include/ldm/lora.hpp): diffusers' own merge.

Builds the SD1.5 U-Net and CLIP text encoder with synthetic weights (synth.param of
../shared/reference/synth.py: what ldm.cpp's synthetic:sd15 holds), writes three synthetic LoRA
files, and for each one runs diffusers' StableDiffusionPipeline.load_lora_weights(file) +
fuse_lora(lora_scale=M) on fresh base weights, then the U-Net (sample [1, 4, 8, 8], t = 500,
a synthetic context [1, 77, 768]) and the text encoder (fixed token ids) once:

  kohya_r4_alpha.safetensors    kohya/A1111 layout, rank 4, alpha 2 (scale 0.5), M = 0.8: U-Net
                                attention q/k/v/out (self and cross), feed-forward, proj_in/out (1x1
                                conv), time_emb_proj, resnet conv1 (3x3 LoCon) and conv_shortcut
                                (1x1 conv); text encoder q/k/v/out_proj and mlp fc1/fc2 of two layers
  kohya_r16.safetensors         kohya layout, rank 16, no alpha (scale 1), M = 1.0, fewer modules
  peft_r4.safetensors           diffusers/PEFT layout (unet.<path>.lora_A/B.weight,
                                text_encoder.<path>...), rank 4, M = 0.6, a 3x3 conv among them

LoRA values: synth.tensor(<file>/<key>, shape, 0, s) with s chosen so each delta is a few % of its
weight. Files go to tests/data/lora/, the outputs to tests/data/lora_reference.safetensors
(test_lora.cpp). float32 throughout (the full-size models: relative L2 <= 1e-4).

    pip install peft   # diffusers' LoRA loading needs it
    python3 scripts/make_lora_reference.py
"""
import json
import math
import os
import sys

import numpy as np
import torch
from diffusers import AutoencoderKL, DDIMScheduler, StableDiffusionPipeline, UNet2DConditionModel
from safetensors.numpy import save_file
from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer

HERE = os.path.dirname(os.path.abspath(__file__))
SHARED = os.path.join(HERE, "..", "..", "shared")
sys.path.insert(0, os.path.join(SHARED, "reference"))
import synth  # noqa: E402

OUT_DIR = os.path.join(HERE, "..", "tests", "data")
T = "down_blocks.0.attentions.0.transformer_blocks.0"
UNET_MODULES_A = [  # (module path, conv kernel or None for linear)
    f"{T}.attn1.to_q", f"{T}.attn1.to_k", f"{T}.attn1.to_v", f"{T}.attn1.to_out.0", f"{T}.attn2.to_k",
    f"{T}.attn2.to_v", f"{T}.ff.net.0.proj", f"{T}.ff.net.2", "down_blocks.0.attentions.0.proj_in",
    "down_blocks.0.attentions.0.proj_out", "down_blocks.1.resnets.0.time_emb_proj", "down_blocks.1.resnets.0.conv1",
    "down_blocks.1.resnets.0.conv_shortcut", "mid_block.attentions.0.transformer_blocks.0.attn2.to_q",
    "up_blocks.3.attentions.2.transformer_blocks.0.attn1.to_out.0",
]
UNET_MODULES_B = [f"{T}.attn2.to_q", f"{T}.attn2.to_out.0", "up_blocks.1.resnets.2.conv2",
                  "up_blocks.2.attentions.1.transformer_blocks.0.ff.net.2"]
UNET_MODULES_C = [f"{T}.attn1.to_q", f"{T}.attn2.to_k", "down_blocks.2.resnets.1.conv2",
                  "mid_block.attentions.0.proj_in"]
TE_MODULES_A = [f"text_model.encoder.layers.{i}.{m}" for i in (0, 11)
                for m in ("self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj", "self_attn.out_proj", "mlp.fc1",
                          "mlp.fc2")]
# out_proj is there for diffusers' sake: diffusers 0.42 converts a kohya text-encoder LoRA's q/k/v
# modules only when the file also has an out_proj one (else it drops them with an "UNEXPECTED"
# warning); ldm.cpp, like AUTOMATIC1111, merges every module it is given.
TE_MODULES_B = ["text_model.encoder.layers.3.self_attn.v_proj", "text_model.encoder.layers.3.self_attn.out_proj",
                "text_model.encoder.layers.5.mlp.fc2"]
TE_MODULES_C = ["text_model.encoder.layers.1.self_attn.q_proj", "text_model.encoder.layers.10.mlp.fc1"]

CASES = [  # name, layout, rank, alpha, multiplier, unet modules, text encoder modules
    ("kohya_r4_alpha", "kohya", 4, 2.0, 0.8, UNET_MODULES_A, TE_MODULES_A),
    ("kohya_r16", "kohya", 16, None, 1.0, UNET_MODULES_B, TE_MODULES_B),
    ("peft_r4", "peft", 4, None, 0.6, UNET_MODULES_C, TE_MODULES_C),
]


def load_synthetic(module, prefix=""):
    sd = module.state_dict()
    new = {k: torch.from_numpy(synth.param(prefix + k, tuple(v.shape))) if v.is_floating_point() else v
           for k, v in sd.items()}
    module.load_state_dict(new, strict=True)
    return {k: v.clone() for k, v in module.state_dict().items()}


def lora_tensors(case, layout, rank, alpha, modules, weights, component):
    """The LoRA file's tensors for one component's modules."""
    out = {}
    for path in modules:
        w = weights[path + ".weight"]
        out_f, in_f = w.shape[0], w.shape[1]
        kernel = tuple(w.shape[2:]) if w.ndim == 4 else None
        down_shape = (rank, in_f) + (kernel or ())
        up_shape = (out_f, rank) + ((1, 1) if kernel else ())
        fan = in_f * (kernel[0] * kernel[1] if kernel else 1)
        # each delta a few % of its weight (whose rows have unit gain): down rows of unit gain,
        # up ~ U(-0.1, 0.1) / sqrt(rank)
        down = synth.tensor(f"{case}/{path}.down", down_shape, 0.0, math.sqrt(3.0 / fan))
        up = synth.tensor(f"{case}/{path}.up", up_shape, 0.0, 0.1 / math.sqrt(rank))
        if layout == "kohya":
            name = ("lora_unet_" if component == "unet" else "lora_te_") + path.replace(".", "_")
            out[name + ".lora_down.weight"] = down
            out[name + ".lora_up.weight"] = up
            if alpha is not None:
                out[name + ".alpha"] = np.array(alpha, dtype=np.float32)
        else:
            prefix = "unet." if component == "unet" else "text_encoder."
            out[prefix + path + ".lora_A.weight"] = down
            out[prefix + path + ".lora_B.weight"] = up
    return out


def main():
    torch.set_grad_enabled(False)
    unet = UNet2DConditionModel(sample_size=64, cross_attention_dim=768).eval()  # the SD1.5 config's defaults
    unet_base = load_synthetic(unet)
    te_cfg = CLIPTextConfig(vocab_size=49408, hidden_size=768, intermediate_size=3072, num_hidden_layers=12,
                            num_attention_heads=12, max_position_embeddings=77, hidden_act="quick_gelu",
                            projection_dim=768)
    te = CLIPTextModel(te_cfg).eval()
    prefix = "text_model." if not any(k.startswith("text_model.") for k in te.state_dict()) else ""
    te_base = load_synthetic(te, prefix)
    tok = CLIPTokenizer.from_pretrained(os.path.join(SHARED, "clip-tokenizer"))
    vae = AutoencoderKL(block_out_channels=[32, 64], down_block_types=["DownEncoderBlock2D"] * 2,
                        up_block_types=["UpDecoderBlock2D"] * 2, norm_num_groups=32)
    pipe = StableDiffusionPipeline(vae=vae, text_encoder=te, tokenizer=tok, unet=unet, scheduler=DDIMScheduler(),
                                   safety_checker=None, feature_extractor=None, requires_safety_checker=False)

    sample = synth.tensor("input.lora.sample", (1, 4, 8, 8))
    context = synth.tensor("input.lora.context", (1, 77, 768))
    ids = np.array([[49406] + [320 + 7 * i for i in range(20)] + [49407] * 56], dtype=np.int64)

    def run():
        out = unet(torch.from_numpy(sample), torch.tensor(500.0), encoder_hidden_states=torch.from_numpy(context)).sample
        hidden = te(torch.from_numpy(ids)).last_hidden_state
        return out.numpy().copy(), hidden.numpy().copy()

    ref = {"input_ids": ids}
    ref["base.unet_out"], ref["base.last_hidden_state"] = run()
    meta = {}
    os.makedirs(os.path.join(OUT_DIR, "lora"), exist_ok=True)
    te_weights = {(k if k.startswith("text_model.") else "text_model." + k): v for k, v in te_base.items()}
    for name, layout, rank, alpha, mult, umods, tmods in CASES:
        tensors = lora_tensors(name, layout, rank, alpha, umods, unet_base, "unet")
        tensors.update(lora_tensors(name, layout, rank, alpha, tmods, te_weights, "text_encoder"))
        path = os.path.join(OUT_DIR, "lora", name + ".safetensors")
        save_file(tensors, path)
        unet.load_state_dict(unet_base)
        te.load_state_dict(te_base)
        pipe.load_lora_weights(path, adapter_name=name)
        pipe.fuse_lora(lora_scale=mult, adapter_names=[name])
        ref[f"{name}.unet_out"], ref[f"{name}.last_hidden_state"] = run()
        pipe.unfuse_lora()
        pipe.unload_lora_weights()
        d_u = np.linalg.norm(ref[f"{name}.unet_out"] - ref["base.unet_out"]) / np.linalg.norm(ref["base.unet_out"])
        d_t = np.linalg.norm(ref[f"{name}.last_hidden_state"] - ref["base.last_hidden_state"]) / np.linalg.norm(
            ref["base.last_hidden_state"])
        meta[name] = dict(file=f"lora/{name}.safetensors", multiplier=mult, rank=rank, alpha=alpha, layout=layout,
                          unet_change=float(d_u), text_change=float(d_t))
        print(f"{name}: {len(tensors)} tensors; the LoRA changes the U-Net output by {d_u:.3g}, "
              f"the text encoder's by {d_t:.3g} (relative L2)", flush=True)
    unet.load_state_dict(unet_base)
    te.load_state_dict(te_base)
    again = run()
    assert np.array_equal(again[0], ref["base.unet_out"]), "base weights not restored"
    save_file({k: np.ascontiguousarray(v) for k, v in ref.items()}, os.path.join(OUT_DIR, "lora_reference.safetensors"),
              metadata={"cases": json.dumps(meta), "sample_key": "input.lora.sample", "context_key": "input.lora.context",
                        "timestep": "500"})
    print("wrote", os.path.join(OUT_DIR, "lora_reference.safetensors"))


if __name__ == "__main__":
    main()
