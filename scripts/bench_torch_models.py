#!/usr/bin/env python3
"""PyTorch (CPU, fp32) peer of bench/bench_models.cpp: the SD1.5 U-Net CFG step, VAE decode
64 -> 512 and CLIP text encoder, built with diffusers / transformers from the SD1.5 configs and
filled with the same synthetic weights (../shared/reference/synth.py), same inputs.

    pip install torch diffusers transformers safetensors    # torch: the CPU wheel, or any
    python3 scripts/bench_torch_models.py [--threads 2] [--reps 3] [--models unet,vae,clip]
                                          [--max-load 0.8] [--max-wait 600]

Per model: build, fill the weights in place (one tensor at a time, so the weights are held
once), one untimed warm-up under torch.no_grad(), then `reps` timed runs; prints the median,
min and max wall seconds, GFLOP/s from the median (the FLOP counts of bench_models.cpp), the
cores the process kept busy (CPU seconds / wall seconds: 2.0 = both cores to itself), and
the peak RSS during the timed runs (VmHWM after resetting it through /proc/self/clear_refs;
weights + activations), plus the process's lifetime peak (getrusage ru_maxrss).

With --max-load, waits (up to --max-wait seconds) before each model until the 1-minute load
average is below that value, and prints the load seen before and after the timed runs: the
machine is shared, and a busy neighbour slows a 2-thread run. Run one model per process
(--models unet) for a clean lifetime peak. Not part of the library or its tests.
"""
import argparse
import os
import resource
import statistics
import sys
import time

import numpy as np
import torch

SHARED = os.environ.get("LDM_SHARED_DIR", os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "shared"))
sys.path.insert(0, os.path.join(SHARED, "reference"))
import synth  # noqa: E402

# The SD1.5 configs, as in ../shared/reference/make_reference.py.
SD15_UNET = dict(
    sample_size=64, in_channels=4, out_channels=4, center_input_sample=False, flip_sin_to_cos=True,
    freq_shift=0, down_block_types=["CrossAttnDownBlock2D"] * 3 + ["DownBlock2D"],
    up_block_types=["UpBlock2D"] + ["CrossAttnUpBlock2D"] * 3, block_out_channels=[320, 640, 1280, 1280],
    layers_per_block=2, downsample_padding=1, mid_block_scale_factor=1, act_fn="silu", norm_num_groups=32,
    norm_eps=1e-5, cross_attention_dim=768, attention_head_dim=8, use_linear_projection=False,
    upcast_attention=False,
)
SD15_VAE = dict(
    in_channels=3, out_channels=3, down_block_types=["DownEncoderBlock2D"] * 4,
    up_block_types=["UpDecoderBlock2D"] * 4, block_out_channels=[128, 256, 512, 512], layers_per_block=2,
    act_fn="silu", latent_channels=4, norm_num_groups=32, sample_size=512, scaling_factor=0.18215,
)
SD15_CLIP = dict(
    vocab_size=49408, hidden_size=768, intermediate_size=3072, projection_dim=768, num_hidden_layers=12,
    num_attention_heads=12, max_position_embeddings=77, hidden_act="quick_gelu", layer_norm_eps=1e-5,
    attention_dropout=0.0, dropout=0.0, initializer_range=0.02, initializer_factor=1.0,
    pad_token_id=1, bos_token_id=0, eos_token_id=2,
)

# FLOPs (2 per multiply-add) as bench_models.cpp counts them.
FLOPS = {"unet": 1.68e12,  # the count for one CFG step (bench_models.cpp's own: 1.607e12)
         "vae": 2.5145e12, "clip": 26.6e9}


def load_synthetic(module):
    """Every floating tensor of module.state_dict() := synth.param(key), written in place.
    key = the name in a diffusers / transformers file (CLIPTextModel: under 'text_model.',
    which transformers >= 5 drops from state_dict())."""
    sd = module.state_dict()
    prefix = "text_model." if type(module).__name__ == "CLIPTextModel" and not any(
        k.startswith("text_model.") for k in sd) else ""
    with torch.no_grad():
        for k, v in sd.items():
            if v.is_floating_point():
                v.copy_(torch.from_numpy(synth.param(prefix + k, tuple(v.shape))))
    return module


def load_avg():
    return os.getloadavg()[0]


def wait_quiet(max_load, max_wait):
    if max_load is None:
        return load_avg()
    t0 = time.time()
    while load_avg() >= max_load and time.time() - t0 < max_wait:
        time.sleep(10)
    la = load_avg()
    if la >= max_load:
        print(f"  (gave up waiting after {max_wait:.0f} s: load {la:.2f} >= {max_load})", flush=True)
    return la


def reset_peak_rss():
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def peak_rss_gb():
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024 / 1e9
    return float("nan")


def maxrss_gb():
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 / 1e9


def build(name):
    if name == "unet":
        from diffusers import UNet2DConditionModel
        m = load_synthetic(UNet2DConditionModel(**SD15_UNET).eval())
        x = torch.from_numpy(synth.tensor("input.unet_64.sample", (2, 4, 64, 64)))
        c = torch.from_numpy(synth.tensor("input.unet_64.context", (2, 77, 768)))
        t = torch.tensor(981.0)
        return m, lambda: m(x, t, encoder_hidden_states=c).sample
    if name == "vae":
        from diffusers import AutoencoderKL
        m = load_synthetic(AutoencoderKL(**SD15_VAE).eval())
        z = torch.from_numpy(synth.tensor("input.vae_64.latent", (1, 4, 64, 64)))
        return m, lambda: m.decode(z).sample
    if name == "clip":
        from transformers import CLIPTextConfig, CLIPTextModel
        m = load_synthetic(CLIPTextModel(CLIPTextConfig(**SD15_CLIP)).eval())
        ids = np.full((2, 77), 49407, np.int64)
        ids[:, 0] = 49406
        ids[0, 1:11] = np.arange(321, 331)  # the same ids as bench_models.cpp
        ids = torch.from_numpy(ids)
        return m, lambda: m(ids).last_hidden_state
    raise SystemExit(f"unknown model {name!r} (unet, vae, clip)")


def time_runs(name, fn, reps, max_load, max_wait):
    """Waits for a quiet machine (--max-load), runs fn() `reps` times (its result dropped at
    once) and prints the median, min and max wall seconds, GFLOP/s, peak RSS, cores and load."""
    la0 = wait_quiet(max_load, max_wait)
    reset = reset_peak_rss()
    times = []
    c0, w0 = time.process_time(), time.perf_counter()
    for _ in range(reps):
        s = time.perf_counter()
        fn()
        times.append(time.perf_counter() - s)
    cores = (time.process_time() - c0) / (time.perf_counter() - w0)
    peak = peak_rss_gb() if reset else maxrss_gb()
    med = statistics.median(times)
    print(f"  {name}: median {med:.3f} s (min {min(times):.3f}, max {max(times):.3f}; "
          f"{', '.join(f'{t:.3f}' for t in times)}), {FLOPS[name] / med / 1e9:.1f} GFLOP/s, "
          f"peak RSS {peak:.2f} GB during the runs, lifetime {maxrss_gb():.2f} GB; "
          f"{cores:.2f} cores busy (CPU s / wall s); load average {la0:.2f} before, {load_avg():.2f} after", flush=True)


def add_common_args(ap, models):
    """The options this script and its peers (bench_openvino_models.py) share."""
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--models", default=models)
    ap.add_argument("--max-load", type=float, default=None, help="wait until the 1-min load average is below this")
    ap.add_argument("--max-wait", type=float, default=600.0)


def bench(name, reps, max_load, max_wait):
    t0 = time.time()
    m, fn = build(name)
    print(f"{name}: built and filled in {time.time() - t0:.1f} s, "
          f"{sum(p.numel() for p in m.parameters()) / 1e6:.1f}M parameters", flush=True)
    with torch.no_grad():
        s = time.perf_counter()
        out = fn()
        warm = time.perf_counter() - s
        print(f"  warm-up {warm:.3f} s, output {tuple(out.shape)}", flush=True)
        del out
        time_runs(name, fn, reps, max_load, max_wait)
    del m, fn


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_common_args(ap, "unet,vae,clip")
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    import diffusers
    import transformers
    print(f"torch {torch.__version__} ({torch.backends.cpu.get_cpu_capability()}), diffusers {diffusers.__version__}, "
          f"transformers {transformers.__version__}, threads {torch.get_num_threads()}, fp32", flush=True)
    for name in a.models.split(","):
        bench(name.strip(), a.reps, a.max_load, a.max_wait)


if __name__ == "__main__":
    main()
