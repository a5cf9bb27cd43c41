"""Reference gradients of the blocks and models, for tests/test_blocks_backward.cpp and
tests/test_models_backward.cpp.

Each case builds a diffusers / transformers module, fills its weights with the synthetic rule of
../shared/reference/synth.py (key = the module's state_dict key, as the C++ SyntheticSource
does), and runs in float64 autograd the forward and the vector-Jacobian product of
sum(out * grad_out) for a random grad_out. Stored as float32 in tests/data/grad_blocks.safetensors:
"<case>.<input>", "<case>.grad_out" (or grad_<output>), "<case>.out" (or the named outputs),
"<case>.grad.<input>" and "<case>.grad.<parameter name>" for every parameter; the metadata's
"cases" JSON has each case's class, constructor arguments or config, inputs and parameter names.

    python3 scripts/make_grad_reference_models.py    # needs torch, diffusers, transformers, numpy
"""
import json
import os
import sys

import numpy as np
import torch
from safetensors.torch import save_file

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "..", "shared", "reference"))
import synth  # noqa: E402
from diffusers import AutoencoderKL, UNet2DConditionModel  # noqa: E402
from diffusers.models.attention import BasicTransformerBlock  # noqa: E402
from diffusers.models.attention_processor import Attention, AttnProcessor  # noqa: E402
from diffusers.models.downsampling import Downsample2D  # noqa: E402
from diffusers.models.embeddings import TimestepEmbedding  # noqa: E402
from diffusers.models.resnet import ResnetBlock2D  # noqa: E402
from diffusers.models.transformers.transformer_2d import Transformer2DModel  # noqa: E402
from diffusers.models.upsampling import Upsample2D  # noqa: E402
from transformers import CLIPTextConfig, CLIPTextModel  # noqa: E402

torch.manual_seed(0)
D64 = dict(dtype=torch.float64)
tensors, cases = {}, {}


def load_synthetic(module, prefix=""):
    """Every floating parameter from synth.param(prefix + key); returns {name: parameter} under those names."""
    sd = module.state_dict()
    new = {k: torch.from_numpy(synth.param(prefix + k, tuple(v.shape))) if v.is_floating_point() else v
           for k, v in sd.items()}
    module.load_state_dict(new, strict=True)
    module.to(**D64)
    return {prefix + k: p for k, p in module.named_parameters()}


def inp(key, shape):
    return torch.from_numpy(synth.tensor(key, shape)).to(**D64)


def rnd(*shape):
    return torch.randn(*shape, **D64).float().double()


def add_case(name, meta, module, inputs, forward, prefix="", keep=lambda k: True, params=None):
    """inputs: name -> float64 tensor (its gradient stored, unless an integer tensor);
    forward(module, **inputs) -> {output name: tensor}; each output o gets a grad_<o>
    ("grad_out" when there is one output named out). params: {name: parameter} of a module
    already filled (default: fill it with synthetic weights here)."""
    params = params if params is not None else load_synthetic(module, prefix)
    module.eval()
    leaves = {k: v.clone().requires_grad_(v.is_floating_point()) for k, v in inputs.items()}
    outs = forward(module, **leaves)
    loss = 0
    for o, v in outs.items():
        g = rnd(*v.shape)
        tensors[f"{name}.{'grad_out' if o == 'out' else 'grad_' + o}"] = g.float()
        tensors[f"{name}.{o}"] = v.detach().float()
        loss = loss + (v * g).sum()
    loss.backward()
    for k, v in inputs.items():
        tensors[f"{name}.{k}"] = v.float() if v.is_floating_point() else v
        if v.is_floating_point():
            tensors[f"{name}.grad.{k}"] = leaves[k].grad.float()
    names = [k for k in params if keep(k)]
    for k in names:
        g = params[k].grad
        tensors[f"{name}.grad.{k}"] = (g if g is not None else torch.zeros_like(params[k])).float().contiguous()
    cases[name] = dict(meta, inputs=list(inputs), parameters=names)
    print(f"{name}: {len(names)} parameters", flush=True)




def block(name, cls, ctor, inputs, call, **kw):
    extra = {"processor": AttnProcessor()} if cls is Attention else {}
    add_case(name, {"class": cls.__name__, "ctor": ctor}, cls(**ctor, **extra).float(), inputs,
             lambda m, **a: {"out": call(m, **a)}, **kw)


def blocks():
    block("time_mlp", TimestepEmbedding, dict(in_channels=32, time_embed_dim=64, act_fn="silu"),
          {"x": inp("input.time_mlp.x", (3, 32))}, lambda m, x: m(x))
    block("resnet_unet", ResnetBlock2D, dict(in_channels=32, out_channels=48, temb_channels=64, groups=8, eps=1e-5),
          {"x": inp("input.resnet_unet.x", (2, 32, 6, 6)), "temb": inp("input.resnet_unet.temb", (2, 64))},
          lambda m, x, temb: m(x, temb))
    block("resnet_vae", ResnetBlock2D, dict(in_channels=32, out_channels=32, temb_channels=None, groups=16, eps=1e-6),
          {"x": inp("input.resnet_vae.x", (1, 32, 6, 5))}, lambda m, x: m(x, None))
    block("self_attention", Attention, dict(query_dim=48, heads=3, dim_head=16, bias=False, out_bias=True),
          {"x": inp("input.self_attention.x", (2, 10, 48))}, lambda m, x: m(x))
    block("cross_attention", Attention,
          dict(query_dim=48, cross_attention_dim=24, heads=2, dim_head=20, bias=False, out_bias=True),
          {"x": inp("input.cross_attention.x", (2, 10, 48)),
           "context": inp("input.cross_attention.context", (2, 5, 24))},
          lambda m, x, context: m(x, encoder_hidden_states=context))
    block("vae_attention", Attention,
          dict(query_dim=32, heads=1, dim_head=32, eps=1e-6, norm_num_groups=8, residual_connection=True, bias=True,
               upcast_softmax=True, _from_deprecated_attn_block=True),
          {"x": inp("input.vae_attention.x", (1, 32, 5, 4))}, lambda m, x: m(x))
    block("transformer_block", BasicTransformerBlock,
          dict(dim=48, num_attention_heads=3, attention_head_dim=16, cross_attention_dim=24, activation_fn="geglu"),
          {"x": inp("input.transformer_block.x", (2, 12, 48)),
           "context": inp("input.transformer_block.context", (2, 5, 24))},
          lambda m, x, context: m(x, encoder_hidden_states=context))
    block("spatial_transformer", Transformer2DModel,
          dict(num_attention_heads=2, attention_head_dim=24, in_channels=48, cross_attention_dim=24, norm_num_groups=16,
               use_linear_projection=False),
          {"x": inp("input.spatial_transformer.x", (2, 48, 4, 3)),
           "context": inp("input.spatial_transformer.context", (2, 5, 24))},
          lambda m, x, context: m(x, encoder_hidden_states=context).sample)
    for pad in (1, 0):
        block(f"downsample_pad{pad}", Downsample2D,
              dict(channels=16, use_conv=True, out_channels=24, padding=pad, name="op"),
              {"x": inp(f"input.downsample_pad{pad}.x", (2, 16, 6, 7))}, lambda m, x: m(x))
    block("upsample", Upsample2D, dict(channels=16, use_conv=True, out_channels=24),
          {"x": inp("input.upsample.x", (2, 16, 3, 4))}, lambda m, x: m(x))


def unet_call(m, sample, context, timesteps):
    return {"out": m(sample, timesteps, encoder_hidden_states=context).sample}


def models():
    UNETS = {
        # the tiny U-Net of ref_blocks.safetensors (2 levels, 32/64 channels, 32 groups, 8 heads)
        "unet_tiny": (dict(sample_size=16, in_channels=4, out_channels=4, block_out_channels=[32, 64],
                           layers_per_block=2,
                           down_block_types=["CrossAttnDownBlock2D", "DownBlock2D"],
                           up_block_types=["UpBlock2D", "CrossAttnUpBlock2D"], cross_attention_dim=32,
                           attention_head_dim=8, norm_num_groups=32), (2, 4, 16, 16), (2, 7, 32), [10.0, 700.0]),
        # 3 levels of 16/24/32 channels, 8 groups, 2/4/4 heads, one resnet per level, 3 latent
        # channels, a 20-wide context, [sin, cos] with freq_shift 1, the input centred (2 x - 1)
        "unet_b": (dict(sample_size=8, in_channels=3, out_channels=3, center_input_sample=True,
                        block_out_channels=[16, 24, 32], layers_per_block=1,
                        down_block_types=["CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"],
                        up_block_types=["UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"],
                        cross_attention_dim=20,
                        attention_head_dim=[2, 4, 4], norm_num_groups=8, flip_sin_to_cos=False, freq_shift=1),
                   (2, 3, 8, 8), (2, 5, 20), [3.0, 999.0]),
    }
    for name, (cfg, xs, cs, ts) in UNETS.items():
        add_case(name, {"class": "UNet2DConditionModel", "config": cfg}, UNet2DConditionModel(**cfg).float(),
                 {"sample": inp(f"input.{name}.sample", xs), "context": inp(f"input.{name}.context", cs),
                  "timesteps": torch.tensor(ts, dtype=torch.float32)},
                 unet_call)

    VAES = {
        "vae_tiny": (dict(in_channels=3, out_channels=3, down_block_types=["DownEncoderBlock2D"] * 2,
                          up_block_types=["UpDecoderBlock2D"] * 2, block_out_channels=[32, 64], layers_per_block=2,
                          latent_channels=4, norm_num_groups=32, sample_size=32), (1, 3, 32, 32), (1, 4, 16, 16)),
        # 3 levels of 16/24/32 channels, 8 groups, one resnet per encoder level, 3 latent channels, 2 out
        "vae_b": (dict(in_channels=3, out_channels=2, down_block_types=["DownEncoderBlock2D"] * 3,
                       up_block_types=["UpDecoderBlock2D"] * 3, block_out_channels=[16, 24, 32], layers_per_block=1,
                       latent_channels=3, norm_num_groups=8, sample_size=16), (2, 3, 16, 16), (2, 3, 4, 4)),
    }
    for name, (cfg, xs, zs) in VAES.items():
        meta = {"class": "AutoencoderKL", "config": cfg}
        add_case(f"{name}_encode", meta, AutoencoderKL(**cfg).float(), {"image": inp(f"input.{name}.image", xs)},
                 lambda m, image: {"mean": (p := m.encode(image).latent_dist).mean, "logvar": p.logvar},
                 keep=lambda k: k.startswith(("encoder.", "quant_conv.")))
        add_case(f"{name}_decode", meta, AutoencoderKL(**cfg).float(), {"latent": inp(f"input.{name}.latent", zs)},
                 lambda m, latent: {"out": m.decode(latent).sample},
                 keep=lambda k: k.startswith(("decoder.", "post_quant_conv.")))

    CLIP_BASE = dict(projection_dim=64, attention_dropout=0.0, dropout=0.0, initializer_range=0.02,
                     initializer_factor=1.0, pad_token_id=1, bos_token_id=0, eos_token_id=2, layer_norm_eps=1e-5)
    CLIPS = {
        # the tiny CLIP of ref_blocks.safetensors, on its two prompts of 77 ids
        "clip_tiny": (dict(CLIP_BASE, vocab_size=1000, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                           num_attention_heads=4, max_position_embeddings=77, hidden_act="quick_gelu"),
                      np.stack([np.r_[[998], np.arange(5, 20), [999] * 61], np.r_[[998], [999] * 76]])),
        # 3 heads of 16, exact GELU, 3 layers, 12 of 20 positions, a repeated id (its gradient rows sum)
        "clip_b": (dict(CLIP_BASE, vocab_size=300, hidden_size=48, intermediate_size=80, num_hidden_layers=3,
                        num_attention_heads=3, max_position_embeddings=20, hidden_act="gelu"),
                   np.stack([np.r_[[298], [7, 7, 42, 100, 7], [299] * 6], np.r_[[298], np.arange(200, 211)]])),
    }
    for name, (cfg, ids) in CLIPS.items():
        m = CLIPTextModel(CLIPTextConfig(**cfg)).float()
        prefix = "" if any(k.startswith("text_model.") for k in m.state_dict()) else "text_model."
        add_case(name, {"class": "CLIPTextModel", "config": cfg}, m,
                 {"input_ids": torch.from_numpy(ids.astype(np.int64))},
                 lambda m, input_ids: {"last_hidden_state": m(input_ids).last_hidden_state}, prefix=prefix)

    # Appended last, so that the random grad_out draws of the cases above stay as they were.
    # SD2.x's Linear proj_in / proj_out (use_linear_projection): their gradients are [out, in].
    name, cfg = "unet_linear", dict(sample_size=8, in_channels=4, out_channels=4, block_out_channels=[16, 32],
                                    layers_per_block=1, down_block_types=["CrossAttnDownBlock2D", "DownBlock2D"],
                                    up_block_types=["UpBlock2D", "CrossAttnUpBlock2D"], cross_attention_dim=24,
                                    attention_head_dim=[2, 4], norm_num_groups=8, use_linear_projection=True)
    add_case(name, {"class": "UNet2DConditionModel", "config": cfg}, UNet2DConditionModel(**cfg).float(),
             {"sample": inp(f"input.{name}.sample", (2, 4, 8, 8)), "context": inp(f"input.{name}.context", (2, 5, 24)),
              "timesteps": torch.tensor([50.0, 900.0], dtype=torch.float32)},
             unet_call)


SD15_UNET = dict(
    sample_size=64, in_channels=4, out_channels=4, center_input_sample=False, flip_sin_to_cos=True, freq_shift=0,
    down_block_types=["CrossAttnDownBlock2D"] * 3 + ["DownBlock2D"],
    up_block_types=["UpBlock2D"] + ["CrossAttnUpBlock2D"] * 3,
    block_out_channels=[320, 640, 1280, 1280], layers_per_block=2, downsample_padding=1, mid_block_scale_factor=1,
    act_fn="silu", norm_num_groups=32, norm_eps=1e-5, cross_attention_dim=768, attention_head_dim=8,
    use_linear_projection=False, upcast_attention=False)
# The parameters whose gradients the full-size case stores (every one would be 3.4 GB): small ones
# at both ends and in the middle of the network.
SD15_KEEP = ["conv_in.weight", "conv_in.bias", "time_embedding.linear_1.bias", "time_embedding.linear_2.bias",
             "down_blocks.0.resnets.0.norm1.weight",
             "down_blocks.0.attentions.0.transformer_blocks.0.attn2.to_out.0.bias",
             "down_blocks.1.resnets.0.conv_shortcut.bias", "down_blocks.2.attentions.1.norm.bias",
             "down_blocks.3.resnets.1.time_emb_proj.bias", "mid_block.attentions.0.transformer_blocks.0.norm2.weight",
             "mid_block.resnets.1.conv2.bias", "up_blocks.0.upsamplers.0.conv.bias",
             "up_blocks.1.attentions.2.transformer_blocks.0.ff.net.2.bias", "up_blocks.2.resnets.2.conv_shortcut.bias",
             "up_blocks.3.attentions.2.transformer_blocks.0.norm3.bias", "conv_norm_out.weight", "conv_norm_out.bias",
             "conv_out.weight", "conv_out.bias"]


def sd15_unet():
    """The SD1.5 U-Net at a 16x16 latent, batch 1, in float64 (6.9 GB of weights, made in place
    so that no float32 copy exists beside them); only SD15_KEEP's parameters need gradients."""
    with torch.device("meta"):
        m = UNet2DConditionModel(**SD15_UNET)
    m = m.to(torch.float64).to_empty(device="cpu")
    assert not list(m.buffers())
    with torch.no_grad():
        for k, p in m.named_parameters():
            p.copy_(torch.from_numpy(synth.param(k, tuple(p.shape))))
            p.requires_grad_(k in SD15_KEEP)
    params = dict(m.named_parameters())
    assert set(SD15_KEEP) <= set(params), set(SD15_KEEP) - set(params)
    add_case("unet_sd15", {"class": "UNet2DConditionModel", "config": SD15_UNET, "stored": "SD15_KEEP only"}, m,
             {"sample": inp("input.unet_sd15.sample", (1, 4, 16, 16)),
              "context": inp("input.unet_sd15.context", (1, 8, 768)),
              "timesteps": torch.tensor([500.0], dtype=torch.float32)},
             unet_call, keep=lambda k: k in SD15_KEEP, params=params)


def save(path):
    save_file({k: v.contiguous() for k, v in tensors.items()}, path, metadata={"cases": json.dumps(cases)})
    print(f"{len(cases)} cases, {len(tensors)} tensors -> {os.path.normpath(path)} ({os.path.getsize(path)} bytes)")


if __name__ == "__main__":
    if "--sd15" in sys.argv:
        sd15_unet()
        save(os.path.join(HERE, "..", "tests", "data", "grad_unet_sd15.safetensors"))
    else:
        blocks()
        models()
        save(os.path.join(HERE, "..", "tests", "data", "grad_blocks.safetensors"))
