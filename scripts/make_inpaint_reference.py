#!/usr/bin/env python3
"""Reference for ldm.cpp's inpainting (pipeline.hpp, inpaint.hpp): diffusers' own pipeline.

Runs diffusers' StableDiffusionInpaintPipeline on the full-size synthetic SD1.5 models
(synth.param of ../shared/reference/synth.py: what synthetic:sd15 and synthetic:sd15-inpainting
hold; float32), 128x128 pictures, 4 steps, and writes tests/data/inpaint_reference.safetensors
(tests/test_inpaint.cpp) in the layout of ../shared/reference/ref_pipeline_seeded.safetensors:
per case the prompt's token ids, the init image and mask, every step's latents and the image.

  inpaint9_*  SD1.5's inpainting U-Net (9 input channels: latents, mask, masked image latents)
  inpaint4_*  the ordinary U-Net (4 channels): the kept part put back after each step
  *_given     the starting noise given (diffusers' `latents=`), the VAE's posterior samples
              still drawn from torch.Generator("cpu").manual_seed(seed)
  *_seeded    everything drawn from the generator, as a diffusers user gets it

The init image is exactly 8-bit (a PNG carries it losslessly); the mask is 0/1 with edges off
the 8-pixel grid (the mask's nearest-neighbour downsampling is checked).

    python3 scripts/make_inpaint_reference.py
"""
import json
import os
import sys

import numpy as np
import torch
from diffusers import (DDIMScheduler, EulerAncestralDiscreteScheduler, EulerDiscreteScheduler, AutoencoderKL,
                       StableDiffusionInpaintPipeline, UNet2DConditionModel)
from safetensors.numpy import save_file
from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer

HERE = os.path.dirname(os.path.abspath(__file__))
SHARED = os.path.join(HERE, "..", "..", "shared")
sys.path.insert(0, os.path.join(SHARED, "reference"))
import synth  # noqa: E402

SD15_SCHEDULER = dict(num_train_timesteps=1000, beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear",
                      trained_betas=None, set_alpha_to_one=False, skip_prk_steps=True, steps_offset=1,
                      clip_sample=False, prediction_type="epsilon", timestep_spacing="leading")
SIZE, STEPS = 128, 4
CASES = [  # name, U-Net input channels, scheduler, seed, guidance, strength, given latents
    ("inpaint9_given", 9, DDIMScheduler, 3, 7.5, 1.0, True),
    ("inpaint9_seeded", 9, EulerAncestralDiscreteScheduler, 21, 6.0, 1.0, False),
    ("inpaint9_seeded_strength", 9, DDIMScheduler, 5, 7.5, 0.75, False),
    ("inpaint4_given", 4, DDIMScheduler, 8, 7.5, 1.0, True),
    ("inpaint4_seeded", 4, EulerDiscreteScheduler, 13, 7.5, 0.75, False),
]


def synthetic(module, prefix=""):
    sd = module.state_dict()
    module.load_state_dict({k: torch.from_numpy(synth.param(prefix + k, tuple(v.shape))) if v.is_floating_point() else v
                            for k, v in sd.items()}, strict=True)
    return module.eval()


def main():
    torch.set_grad_enabled(False)
    vae = synthetic(AutoencoderKL(block_out_channels=[128, 256, 512, 512], down_block_types=["DownEncoderBlock2D"] * 4,
                                  up_block_types=["UpDecoderBlock2D"] * 4, layers_per_block=2, latent_channels=4,
                                  norm_num_groups=32, sample_size=512, scaling_factor=0.18215))
    te = CLIPTextModel(CLIPTextConfig(vocab_size=49408, hidden_size=768, intermediate_size=3072, num_hidden_layers=12,
                                      num_attention_heads=12, max_position_embeddings=77, hidden_act="quick_gelu",
                                      projection_dim=768))
    prefix = "" if any(k.startswith("text_model.") for k in te.state_dict()) else "text_model."
    te = synthetic(te, prefix)
    tok = CLIPTokenizer(os.path.join(SHARED, "clip-tokenizer", "vocab.json"),
                        os.path.join(SHARED, "clip-tokenizer", "merges.txt"), pad_token="<|endoftext|>")
    prompt, negative = "a red house on a green hill", "blurry"
    ids = lambda t: tok(t, padding="max_length", max_length=77, truncation=True).input_ids  # noqa: E731
    pos, neg = ids(prompt), ids(negative)
    pe = te(torch.tensor([pos]))[0]
    ne = te(torch.tensor([neg]))[0]

    img = (synth.tensor("input.inpaint.image", (1, 3, SIZE, SIZE)) * 0.5 + 0.5).astype(np.float32)
    img = (np.round(img * 255.0) / 255.0).astype(np.float32)  # exactly 8-bit
    mask = np.zeros((1, 1, SIZE, SIZE), np.float32)
    mask[:, :, 29:93, 21:101] = 1.0  # edges off the 8-pixel grid
    given = synth.tensor("input.inpaint.latents", (1, 4, SIZE // 8, SIZE // 8))

    out, meta = {}, {}
    unets = {}
    for name, channels, cls, seed, g, strength, use_given in CASES:
        if channels not in unets:
            unets.clear()
            unets[channels] = synthetic(UNet2DConditionModel(sample_size=64, in_channels=channels,
                                                             cross_attention_dim=768))
        pipe = StableDiffusionInpaintPipeline(vae=vae, text_encoder=te, tokenizer=tok, unet=unets[channels],
                                              scheduler=cls.from_config(SD15_SCHEDULER), safety_checker=None,
                                              feature_extractor=None, requires_safety_checker=False)
        steps_lat = []

        def cb(p, i, t, kw):
            steps_lat.append(kw["latents"].float().numpy().copy())
            return kw
        gen = torch.Generator("cpu").manual_seed(seed)
        res = pipe(prompt_embeds=pe, negative_prompt_embeds=ne, image=torch.from_numpy(img),
                   mask_image=torch.from_numpy(mask), height=SIZE, width=SIZE, strength=strength,
                   num_inference_steps=STEPS, guidance_scale=g, generator=gen, output_type="np",
                   latents=torch.from_numpy(given) if use_given else None, callback_on_step_end=cb)
        meta[name] = dict(prompt=prompt, negative_prompt=negative, unet_in_channels=channels, scheduler=cls.__name__,
                          scheduler_config=SD15_SCHEDULER, steps=STEPS, guidance_scale=g, seed=seed,
                          strength=strength, given_latents=use_given, height=SIZE, width=SIZE,
                          model="synthetic:sd15-inpainting" if channels == 9 else "synthetic:sd15",
                          timesteps=[float(t) for t in pipe.scheduler.timesteps])
        out[f"{name}.input_ids"] = np.array([pos], np.int64)
        out[f"{name}.negative_input_ids"] = np.array([neg], np.int64)
        out[f"{name}.init_image"] = img
        out[f"{name}.mask"] = mask
        if use_given:
            out[f"{name}.latents"] = given
        out[f"{name}.step_latents"] = np.stack(steps_lat)
        # diffusers' images are an NHWC view of an NCHW buffer: made contiguous, or safetensors writes the buffer
        out[f"{name}.image"] = np.ascontiguousarray(res.images, dtype=np.float32)
        print(f"{name}: {len(steps_lat)} steps, image {res.images.shape}", flush=True)
    path = os.path.join(HERE, "..", "tests", "data", "inpaint_reference.safetensors")
    save_file(out, path, metadata={"cases": json.dumps(meta)})
    print("wrote", path)


if __name__ == "__main__":
    main()
