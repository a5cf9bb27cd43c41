#!/usr/bin/env python3
"""OpenVINO (CPU, fp32) peer of bench/bench_models.cpp, beside scripts/bench_torch_models.py:
the SD1.5 U-Net CFG step and the VAE decode 64 -> 512, built with diffusers from the SD1.5
configs and filled with the same synthetic weights (../shared/reference/synth.py), converted
with openvino.convert_model and compiled for the CPU.

    pip install openvino torch diffusers transformers safetensors
    python3 scripts/bench_openvino_models.py [--threads 2] [--reps 3] [--models unet,vae]
                                             [--max-load 0.8] [--max-wait 600]

Per model: build and fill it in PyTorch (bench_torch_models.build), convert it with
`openvino.convert_model(module, example_input=...)` (the U-Net: batch 2, 64x64 latents, t = 981,
77x768 context; the VAE decoder: one 64x64 latent), free the PyTorch model, compile for "CPU"
with INFERENCE_NUM_THREADS = threads, INFERENCE_PRECISION_HINT = f32 and the LATENCY hint, one
untimed warm-up, then `reps` timed synchronous inferences; prints the median, min and max wall
seconds, GFLOP/s from the median (bench_models.cpp's FLOP counts), the cores kept busy, the
peak RSS during the timed runs, and the largest |difference| from PyTorch's output on the same
input (fp32 should agree to ~1e-4 of the output's scale). Not part of the library or its tests.
"""
import argparse
import gc
import os
import sys
import time
import warnings

import numpy as np
import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import bench_torch_models as peer  # noqa: E402  (the same models, weights, inputs and counters)


class UNetStep(torch.nn.Module):
    """UNet2DConditionModel with plain tensor inputs and output, for tracing."""

    def __init__(self, unet):
        super().__init__()
        self.unet = unet

    def forward(self, sample, timestep, encoder_hidden_states):
        return self.unet(sample, timestep, encoder_hidden_states=encoder_hidden_states, return_dict=False)[0]


class VAEDecode(torch.nn.Module):
    def __init__(self, vae):
        super().__init__()
        self.vae = vae

    def forward(self, z):
        return self.vae.decode(z, return_dict=False)[0]


def inputs(name):
    s = peer.synth
    if name == "unet":
        return (torch.from_numpy(s.tensor("input.unet_64.sample", (2, 4, 64, 64))), torch.tensor(981.0),
                torch.from_numpy(s.tensor("input.unet_64.context", (2, 77, 768))))
    if name == "vae":
        return (torch.from_numpy(s.tensor("input.vae_64.latent", (1, 4, 64, 64))),)
    raise SystemExit(f"unknown model {name!r} (unet, vae)")


def bench(name, threads, reps, max_load, max_wait):
    import openvino as ov

    # The tracer's notes on diffusers' shape asserts (constant here: one input shape) and on
    # torch.jit.trace's deprecation, which convert_model still uses.
    warnings.filterwarnings("ignore", category=torch.jit.TracerWarning)
    warnings.filterwarnings("ignore", category=FutureWarning)
    t0 = time.time()
    m, _ = peer.build(name)
    wrapped = (UNetStep if name == "unet" else VAEDecode)(m).eval()
    x = inputs(name)
    with torch.no_grad():
        reference = wrapped(*x).numpy()
        ov_model = ov.convert_model(wrapped, example_input=x)
    del wrapped, m
    gc.collect()
    compiled = ov.Core().compile_model(ov_model, "CPU", {
        "INFERENCE_NUM_THREADS": threads, "INFERENCE_PRECISION_HINT": "f32", "PERFORMANCE_HINT": "LATENCY"})
    del ov_model
    gc.collect()
    feed = [t.numpy() for t in x]
    print(f"{name}: built, converted and compiled in {time.time() - t0:.1f} s "
          f"(precision {compiled.get_property('INFERENCE_PRECISION_HINT')}, "
          f"{compiled.get_property('INFERENCE_NUM_THREADS')} threads)", flush=True)
    request = compiled.create_infer_request()
    s = time.perf_counter()
    out = request.infer(feed)[0]
    print(f"  warm-up {time.perf_counter() - s:.3f} s, output {tuple(out.shape)}, "
          f"max |ov - torch| {np.abs(out - reference).max():.3g} (output max |.| {np.abs(reference).max():.3g})",
          flush=True)
    peer.time_runs(name, lambda: request.infer(feed), reps, max_load, max_wait)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    peer.add_common_args(ap, "unet,vae")
    a = ap.parse_args()
    torch.set_num_threads(a.threads)  # the conversion's own PyTorch runs
    import openvino as ov
    print(f"openvino {ov.get_version()}, torch {torch.__version__}, threads {a.threads}, fp32", flush=True)
    for name in a.models.split(","):
        bench(name.strip(), a.threads, a.reps, a.max_load, a.max_wait)


if __name__ == "__main__":
    main()
