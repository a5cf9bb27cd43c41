#!/usr/bin/env python3
"""PyTorch (CUDA) peer of bench/bench_cuda.cpp, on the same GPU in the same device call:
diffusers' SD1.5 U-Net, one CFG step (batch 2, 64x64 latents, 77x768 context, t = 981), with
the same synthetic weights (../shared/reference/synth.py) and the same inputs as ours, eager
and with torch.compile(mode="reduce-overhead") (CUDA graphs; channels_last, as the reference
figures of ../shared/README.md were taken); in eager mode also the VAE decode 64 -> 512 and
the CLIP text encoder (batch 2).

    python3 scripts/bench_torch_cuda.py --modes eager,compile --dtypes fp16 [--json out.jsonl]

The models and configs come from scripts/bench_torch_models.py (the CPU peer). fp32 runs with
TF32 off (parity, as bench_cuda's fp32); fp16/bf16 are the model and inputs cast (SDPA
attention, as diffusers picks by default). Each result is timed with CUDA events: one warm-up
(three for compile: compilation and graph recording), then `reps` calls, reported as the
median ms; TFLOP/s with bench_cuda.cpp's FLOP counts (U-Net CFG step 1.68 TFLOP). Each
result is printed and appended to --json as one JSON line as soon as it exists, so a run cut
short keeps what it measured. Not part of the library or its tests.
"""
import argparse
import json
import os
import statistics
import sys
import time

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import bench_torch_models as peer  # noqa: E402  (SD15 configs, load_synthetic, synth)

DTYPES = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}
FLOPS = {"unet": 1.68e12, "vae": 2.5145e12, "clip": 26.6e9}


def emit(path, record):
    print(json.dumps(record), flush=True)
    if path:
        with open(path, "a") as f:
            f.write(json.dumps(record) + "\n")


def time_cuda(fn, reps, warmup):
    for _ in range(warmup):
        fn()
    torch.cuda.synchronize()
    times = []
    for _ in range(reps):
        a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        a.record()
        fn()
        b.record()
        b.synchronize()
        times.append(a.elapsed_time(b))  # ms
    return times


def build_unet(dtype):
    from diffusers import UNet2DConditionModel
    m = peer.load_synthetic(UNet2DConditionModel(**peer.SD15_UNET).eval())
    m = m.to("cuda", dtype)
    x = torch.from_numpy(peer.synth.tensor("input.unet_64.sample", (2, 4, 64, 64))).to("cuda", dtype)
    c = torch.from_numpy(peer.synth.tensor("input.unet_64.context", (2, 77, 768))).to("cuda", dtype)
    t = torch.tensor(981.0, device="cuda")
    return m, x, t, c


def bench_unet(mode, dname, reps, out):
    dtype = DTYPES[dname]
    t0 = time.time()
    m, x, t, c = build_unet(dtype)
    build_s = time.time() - t0
    torch.cuda.reset_peak_memory_stats()
    with torch.no_grad():
        if mode == "compile":
            m = m.to(memory_format=torch.channels_last)
            fn_m = torch.compile(m, mode="reduce-overhead")
            fn = lambda: fn_m(x, t, encoder_hidden_states=c).sample  # noqa: E731
            t1 = time.time()
            fn()
            torch.cuda.synchronize()
            compile_s = time.time() - t1
            times = time_cuda(fn, reps, warmup=3)
        else:
            fn = lambda: m(x, t, encoder_hidden_states=c).sample  # noqa: E731
            compile_s = 0.0
            times = time_cuda(fn, reps, warmup=1)
    med = statistics.median(times)
    emit(out, {"model": "unet_step", "mode": mode, "dtype": dname, "ms": med, "ms_min": min(times),
               "tflops": FLOPS["unet"] / (med * 1e-3) * 1e-12, "reps": reps, "build_s": round(build_s, 1),
               "compile_s": round(compile_s, 1),
               "peak_gib": torch.cuda.max_memory_allocated() / 2**30})
    del m, fn
    torch.cuda.empty_cache()


def bench_vae_clip(dname, reps, out):
    dtype = DTYPES[dname]
    for name in ("vae", "clip"):
        m, fn = peer.build(name)  # CPU module and a CPU closure: rebuild the inputs on the GPU
        m = m.to("cuda", dtype)
        with torch.no_grad():
            if name == "vae":
                z = torch.from_numpy(peer.synth.tensor("input.vae_64.latent", (1, 4, 64, 64))).to("cuda", dtype)
                f = lambda: m.decode(z).sample  # noqa: E731
            else:
                ids = torch.full((2, 77), 49407, dtype=torch.int64)
                ids[:, 0] = 49406
                ids[0, 1:11] = torch.arange(321, 331)
                ids = ids.cuda()
                f = lambda: m(ids).last_hidden_state  # noqa: E731
            times = time_cuda(f, reps, warmup=1)
        med = statistics.median(times)
        emit(out, {"model": name, "mode": "eager", "dtype": dname, "ms": med, "ms_min": min(times),
                   "tflops": FLOPS[name] / (med * 1e-3) * 1e-12, "reps": reps})
        del m, f
        torch.cuda.empty_cache()


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--modes", default="eager,compile")
    ap.add_argument("--dtypes", default="fp16")
    ap.add_argument("--reps", type=int, default=20)
    ap.add_argument("--json", default="")
    ap.add_argument("--no-vae-clip", action="store_true")
    a = ap.parse_args()
    torch.backends.cuda.matmul.allow_tf32 = False  # fp32 parity; no effect on fp16/bf16
    torch.backends.cudnn.allow_tf32 = False
    import diffusers
    import transformers
    emit(a.json, {"torch": torch.__version__, "diffusers": diffusers.__version__,
                  "transformers": transformers.__version__, "device": torch.cuda.get_device_name(),
                  "sdpa_backends": "default"})
    for mode in a.modes.split(","):
        for d in a.dtypes.split(","):
            bench_unet(mode.strip(), d.strip(), a.reps, a.json)
            if mode.strip() == "eager" and not a.no_vae_clip:
                bench_vae_clip(d.strip(), a.reps, a.json)


if __name__ == "__main__":
    main()
