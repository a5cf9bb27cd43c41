#!/usr/bin/env python3
"""Reference for ldm.cpp's VAE tiling (include/ldm/models/vae_tiling.hpp): diffusers' own.

Runs diffusers' AutoencoderKL after enable_tiling() (tiled_decode, _tiled_encode: tiles of the
config's sample_size, 25% overlap, blended first with the tile above, then with the one on the
left) on synthetic weights (synth.param of ../shared/reference/synth.py, the weights ldm.cpp's
SyntheticSource gives) and synthetic inputs (synth.tensor of the keys below), and writes the
outputs to tests/data/vae_tiling_reference.safetensors (tests/test_vae_tiling.cpp):

  tiny   AutoencoderKL block_out_channels [32, 64] (factor 2), sample_size 32 (tiles of 16
         latents / 32 pixels), float64: decode of a [2, 4, 40, 56] latent (80x112 pixels: edge
         tiles narrower than the rest, a batch of two) and encode of a [1, 3, 80, 112] image.
  full   the SD1.5 VAE (sample_size 512), float32: decode of a [1, 4, 128, 128] latent to
         1024x1024 (3x3 tiles) and encode of a [1, 3, 1024, 1024] image (3x3 tiles).

The inputs are not stored: synth.tensor(key, shape) gives them in both languages. The metadata
holds each case's config and input keys.

    python3 scripts/make_vae_tiling_reference.py [--skip-full]
"""
import argparse
import json
import os
import sys

import numpy as np
import torch
from diffusers import AutoencoderKL
from safetensors.numpy import save_file

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "..", "shared", "reference"))
import synth  # noqa: E402

TINY = dict(in_channels=3, out_channels=3, down_block_types=["DownEncoderBlock2D"] * 2,
            up_block_types=["UpDecoderBlock2D"] * 2, block_out_channels=[32, 64], layers_per_block=2,
            latent_channels=4, norm_num_groups=32, sample_size=32, scaling_factor=0.18215)
SD15 = dict(in_channels=3, out_channels=3, down_block_types=["DownEncoderBlock2D"] * 4,
            up_block_types=["UpDecoderBlock2D"] * 4, block_out_channels=[128, 256, 512, 512], layers_per_block=2,
            act_fn="silu", latent_channels=4, norm_num_groups=32, sample_size=512, scaling_factor=0.18215)

CASES = {  # name: (config, dtype, latent shape, image shape)
    "tiny": (TINY, torch.float64, (2, 4, 40, 56), (1, 3, 80, 112)),
    "full": (SD15, torch.float32, (1, 4, 128, 128), (1, 3, 1024, 1024)),
}


def synthetic_vae(cfg, dtype):
    vae = AutoencoderKL(**cfg)
    sd = vae.state_dict()
    vae.load_state_dict({k: torch.from_numpy(synth.param(k, tuple(v.shape))) for k, v in sd.items()}, strict=True)
    vae = vae.to(dtype).eval()
    vae.enable_tiling()
    return vae


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--skip-full", action="store_true", help="only the tiny case (seconds instead of minutes)")
    ap.add_argument("--output", default=os.path.join(HERE, "..", "tests", "data", "vae_tiling_reference.safetensors"))
    a = ap.parse_args()
    torch.set_grad_enabled(False)
    tensors, meta = {}, {}
    for name, (cfg, dtype, lat_shape, img_shape) in CASES.items():
        if name == "full" and a.skip_full:
            continue
        vae = synthetic_vae(cfg, dtype)
        lat_key, img_key = f"input.vae_tiling.{name}.latent", f"input.vae_tiling.{name}.image"
        latent = synth.tensor(lat_key, lat_shape)
        image = synth.tensor(img_key, img_shape)
        decoded = vae.decode(torch.from_numpy(latent).to(dtype)).sample
        post = vae.encode(torch.from_numpy(image).to(dtype)).latent_dist
        f32 = lambda t: t.to(torch.float32).contiguous().numpy()  # noqa: E731
        tensors[f"{name}.decoded"] = f32(decoded)
        tensors[f"{name}.mean"] = f32(post.mean)
        tensors[f"{name}.logvar"] = f32(post.logvar)
        meta[name] = dict(config=cfg, latent_key=lat_key, latent_shape=lat_shape, image_key=img_key,
                          image_shape=img_shape, dtype=str(dtype))
        print(f"{name}: decoded {tuple(decoded.shape)}, mean {tuple(post.mean.shape)}", flush=True)
    save_file(tensors, a.output, metadata={"cases": json.dumps(meta), "diffusers": __import__("diffusers").__version__})
    print("wrote", a.output)


if __name__ == "__main__":
    main()
