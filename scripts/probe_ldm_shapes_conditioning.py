#!/usr/bin/env python3
"""Which caption words a shapes model uses, at which noise level: a training diagnostic.

For held-out pictures (`ldm dataset shapes --seed 999`) and noise levels t, the U-Net's
v-prediction loss with the right full caption, and with one part of it swapped for another
value (the position, the colour, the shape) or the caption left empty. A part the model has
learnt raises the loss when swapped; a part it ignores does not. The layout is decided at the
noisiest steps (t >= 800, where the input is nearly pure noise), so that is where the position
must show; that is how we found the Min-SNR-weighted run ignoring its position words entirely
after 1500 steps (docs/training.md).

    python3 scripts/probe_ldm_shapes_conditioning.py [MODEL] [--ldm build/bin/ldm] [--count 96]

MODEL is a diffusers folder (models/ldm-shapes, or a run folder after `ldm train unet`).
Needs torch + diffusers + transformers; not part of the test suite.
"""
import argparse
import os
import random
import subprocess
import tempfile

import numpy as np
import torch
from diffusers import StableDiffusionPipeline
from PIL import Image

POSITIONS = ["top left", "top right", "bottom left", "bottom right", "top", "bottom", "left", "right", "center"]
COLOURS = ["red", "orange", "yellow", "green", "blue", "purple", "white", "black"]
SHAPES = ["circle", "square", "triangle"]


def swap_position(caption, rng):
    for p in POSITIONS:
        if f" at the {p} on " in caption:
            q = rng.choice([x for x in POSITIONS if x != p])
            return caption.replace(f" at the {p} on ", f" at the {q} on ")
    raise ValueError(f"no position in '{caption}'")


def swap_word(caption, choices, rng, avoid_background=False):
    words = caption.split()
    i = next(k for k, w in enumerate(words) if w in choices)
    background = words[-2]
    words[i] = rng.choice([x for x in choices if x != words[i] and not (avoid_background and x == background)])
    return " ".join(words)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("model", nargs="?", default="models/ldm-shapes")
    ap.add_argument("--ldm", default="build/bin/ldm")
    ap.add_argument("--count", type=int, default=96)
    ap.add_argument("--threads", type=int, default=1)
    a = ap.parse_args()
    torch.set_num_threads(a.threads)

    pipe = StableDiffusionPipeline.from_pretrained(a.model, safety_checker=None, requires_safety_checker=False)
    vae, unet, text_encoder, tokenizer = pipe.vae, pipe.unet, pipe.text_encoder, pipe.tokenizer
    with tempfile.TemporaryDirectory() as tmp:
        subprocess.run([a.ldm, "dataset", "shapes", "--count", str(a.count), "--seed", "999", "--output", tmp],
                       check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        lines = [l.rstrip("\n").split("\t") for l in open(os.path.join(tmp, "full_captions.txt"))]
        images = torch.stack([
            torch.from_numpy(np.array(Image.open(os.path.join(tmp, f)).convert("RGB"))).permute(2, 0, 1).float()
            / 127.5 - 1 for f, _ in lines])
    captions = [c for _, c in lines]
    rng = random.Random(0)
    variants = {
        "right caption": captions,
        "position swapped": [swap_position(c, rng) for c in captions],
        "colour swapped": [swap_word(c, COLOURS, rng, avoid_background=True) for c in captions],
        "shape swapped": [swap_word(c, SHAPES, rng) for c in captions],
        "empty caption": [""] * len(captions),
    }
    with torch.no_grad():
        z0 = vae.encode(images).latent_dist.mean * vae.config.scaling_factor
        context = {}
        for name, texts in variants.items():
            ids = tokenizer(texts, padding="max_length", max_length=tokenizer.model_max_length,
                            truncation=True, return_tensors="pt").input_ids
            context[name] = text_encoder(ids)[0]
        alphas_cumprod = pipe.scheduler.alphas_cumprod
        generator = torch.Generator().manual_seed(0)
        print(f"v-prediction loss of {len(captions)} held-out pictures (same noise in every column)")
        print("   t  " + "".join(f"{name:>18}" for name in variants))
        for t in [999, 950, 900, 800, 700, 500, 300, 100]:
            eps = torch.randn(z0.shape, generator=generator)
            a_t, s_t = alphas_cumprod[t].sqrt(), (1 - alphas_cumprod[t]).sqrt()
            z_t, v = a_t * z0 + s_t * eps, a_t * eps - s_t * z0
            timesteps = torch.full((len(captions),), t)
            row = [((unet(z_t, timesteps, encoder_hidden_states=context[n]).sample - v) ** 2).mean().item()
                   for n in variants]
            print(f"{t:4d}  " + "".join(f"{x:18.4f}" for x in row))


if __name__ == "__main__":
    main()
