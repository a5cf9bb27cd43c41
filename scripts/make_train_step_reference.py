"""Reference of `ldm train-step`, for tests/test_cli_backward.cpp: the course's train_step
(add_noise with the SD1.5 DDPM schedule, predict the noise, MSE) on the tiny U-Net of
grad_blocks.safetensors' "unet_tiny" case, in float64 torch autograd with diffusers, weights by
the synthetic rule of ../shared/reference/synth.py.

Stored as float32 in tests/data/train_step_reference.safetensors, cases "train_step" (epsilon
prediction, SD1.5) and "train_step_v" (v_prediction: the target is DDPMScheduler.get_velocity),
on the same batch: the inputs (latents, noise, timesteps int64, context), loss [1],
noisy_latents, grad.context and the gradients of a handful of parameters (the file stays
small); the metadata's "cases" JSON has the U-Net config, the scheduler config and the stored
parameter names.

    python3 scripts/make_train_step_reference.py    # needs torch, diffusers, numpy
"""
import json
import os
import sys

import torch
import torch.nn.functional as F
from safetensors.torch import save_file

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "..", "shared", "reference"))
import synth  # noqa: E402
from diffusers import DDPMScheduler, UNet2DConditionModel  # noqa: E402

UNET = dict(sample_size=16, in_channels=4, out_channels=4, block_out_channels=[32, 64], layers_per_block=2,
            down_block_types=["CrossAttnDownBlock2D", "DownBlock2D"],
            up_block_types=["UpBlock2D", "CrossAttnUpBlock2D"], cross_attention_dim=32, attention_head_dim=8,
            norm_num_groups=32)
# SD1.5's scheduler/scheduler_config.json, as far as training reads it
SCHEDULER = dict(num_train_timesteps=1000, beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear",
                 prediction_type="epsilon")
STORED = ["conv_in.weight", "time_embedding.linear_1.weight", "down_blocks.0.resnets.0.conv1.weight",
          "down_blocks.0.attentions.0.transformer_blocks.0.attn2.to_k.weight",
          "down_blocks.0.attentions.0.transformer_blocks.0.attn2.to_v.weight",
          "mid_block.attentions.0.proj_out.weight", "up_blocks.1.resnets.2.conv_shortcut.weight",
          "conv_norm_out.weight", "conv_out.weight", "conv_out.bias"]


def synthetic_unet():
    unet = UNet2DConditionModel(**UNET)
    sd = unet.state_dict()
    unet.load_state_dict({k: torch.from_numpy(synth.param(k, tuple(v.shape))) for k, v in sd.items()}, strict=True)
    return unet.to(torch.float64).eval()


def main():
    torch.manual_seed(0)
    latents = torch.randn(2, 4, 16, 16)
    noise = torch.randn(2, 4, 16, 16)
    timesteps = torch.tensor([37, 912], dtype=torch.int64)
    context = torch.randn(2, 7, 32)

    tensors, cases = {}, {}
    for c, prediction_type in [("train_step", "epsilon"), ("train_step_v", "v_prediction")]:
        unet = synthetic_unet()
        scheduler_config = dict(SCHEDULER, prediction_type=prediction_type)
        scheduler = DDPMScheduler(**scheduler_config)
        ctx = context.double().requires_grad_(True)
        x0, eps = latents.double(), noise.double()
        noisy = scheduler.add_noise(x0, eps, timesteps)
        target = eps if prediction_type == "epsilon" else scheduler.get_velocity(x0, eps, timesteps)
        pred = unet(noisy, timesteps, encoder_hidden_states=ctx).sample
        loss = F.mse_loss(pred, target, reduction="mean")
        loss.backward()

        params = dict(unet.named_parameters())
        tensors.update({f"{c}.latents": latents.clone(), f"{c}.noise": noise.clone(), f"{c}.timesteps": timesteps.clone(),
                        f"{c}.context": context.clone(), f"{c}.loss": loss.detach().reshape(1).float(),
                        f"{c}.noisy_latents": noisy.float(), f"{c}.grad.context": ctx.grad.float()})
        for k in STORED:
            tensors[f"{c}.grad.{k}"] = params[k].grad.float()
        cases[c] = {"config": UNET, "scheduler": scheduler_config, "parameters": STORED}
        print(f"{c}: loss {loss.item():.10g}")
    path = os.path.join(HERE, "..", "tests", "data", "train_step_reference.safetensors")
    save_file({k: v.contiguous() for k, v in tensors.items()}, path, metadata={"cases": json.dumps(cases)})
    print(f"{len(tensors)} tensors -> {os.path.normpath(path)} ({os.path.getsize(path)} bytes)")


if __name__ == "__main__":
    main()
