#!/usr/bin/env python3
"""Whole-process txt2img, ours against diffusers (issue 15, goals 3 and 4): the time from starting
the process to the PNG on disk (load + text encoding + steps + decode + exit), and its peak RSS,
for SD1.5 at 512x512 from the same diffusers folder (synthetic weights, fp32).

    pip install torch diffusers transformers safetensors
    python3 scripts/bench_txt2img.py --make-folder /tmp/sd15-synth     # once: writes the folder (~4.3 GB)
    python3 scripts/bench_txt2img.py --folder /tmp/sd15-synth --steps 4 --reps 3
    python3 scripts/bench_txt2img.py --folder /tmp/sd15-synth --steps 4 --reps 3 --fp16-weights   # ours in fp16

Both sides: Euler (the folder's own PNDM config, as `EulerDiscreteScheduler.from_config`), the
same step count, guidance 7.5, one image, 2 threads. Runs alternate (ours, diffusers, ours, ...)
so that a drift of the machine hits both; each is a fresh process, timed by this script (wall
seconds around it) with its peak RSS from the kernel (wait4's ru_maxrss). Prints each run and
the medians (min-max), and ours / diffusers. Not part of the library or its tests.
"""
import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.join(HERE, "..")
SHARED = os.environ.get("LDM_SHARED_DIR", os.path.join(ROOT, "..", "shared"))
PROMPT = "a photograph of an astronaut riding a horse"


def make_folder(path):
    """The SD1.5 pipeline with bench_torch_models.py's configs and synthetic weights, saved as a
    diffusers folder (fp32 safetensors) with the CLIP tokenizer of ../shared/clip-tokenizer."""
    sys.path.insert(0, HERE)
    from bench_torch_models import SD15_CLIP, SD15_UNET, SD15_VAE, load_synthetic
    from diffusers import AutoencoderKL, PNDMScheduler, StableDiffusionPipeline, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer

    tok_dir = os.path.join(SHARED, "clip-tokenizer")
    tokenizer = CLIPTokenizer(os.path.join(tok_dir, "vocab.json"), os.path.join(tok_dir, "merges.txt"),
                              model_max_length=77)
    scheduler = PNDMScheduler(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear",
                              num_train_timesteps=1000, set_alpha_to_one=False, skip_prk_steps=True,
                              steps_offset=1)
    pipe = StableDiffusionPipeline(
        vae=load_synthetic(AutoencoderKL(**SD15_VAE).eval()),
        text_encoder=load_synthetic(CLIPTextModel(CLIPTextConfig(**SD15_CLIP)).eval()),
        tokenizer=tokenizer, unet=load_synthetic(UNet2DConditionModel(**SD15_UNET).eval()),
        scheduler=scheduler, safety_checker=None, feature_extractor=None, requires_safety_checker=False)
    pipe.save_pretrained(path, safe_serialization=True)
    # transformers >= 5 saves tokenizer.json only, and CLIPTextModel's weights without the
    # 'text_model.' prefix. ldm.cpp reads that layout too; the folder is made to look like an SD1.5
    # download (vocab.json, merges.txt, prefixed names), the layout users have.
    for name in ("vocab.json", "merges.txt"):
        shutil.copy(os.path.join(tok_dir, name), os.path.join(path, "tokenizer", name))
    from safetensors.torch import load_file, save_file
    te = os.path.join(path, "text_encoder", "model.safetensors")
    weights = load_file(te)
    save_file({(k if k.startswith("text_model.") else "text_model." + k): v for k, v in weights.items()}, te,
              metadata={"format": "pt"})
    print(f"wrote {path}")


def diffusers_run(folder, steps, threads, out):
    """One whole txt2img in this process (the child of a timed run)."""
    import torch
    torch.set_num_threads(threads)
    from diffusers import EulerDiscreteScheduler, StableDiffusionPipeline
    pipe = StableDiffusionPipeline.from_pretrained(folder, torch_dtype=torch.float32, safety_checker=None)
    pipe.scheduler = EulerDiscreteScheduler.from_config(pipe.scheduler.config)
    pipe.set_progress_bar_config(disable=True)
    with torch.no_grad():
        image = pipe(PROMPT, num_inference_steps=steps, guidance_scale=7.5, height=512, width=512,
                     generator=torch.Generator("cpu").manual_seed(1)).images[0]
    image.save(out)


def timed(cmd, env):
    """(wall seconds, peak RSS in GB) of one process; its output is dropped unless it fails."""
    with tempfile.TemporaryFile() as log:  # a file, not a pipe: a long output cannot block the child
        start = time.perf_counter()
        proc = subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT)
        _, status, usage = os.wait4(proc.pid, 0)
        wall = time.perf_counter() - start
        log.seek(0)
        output = log.read().decode(errors="replace")
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit(f"{' '.join(cmd)} failed:\n{output}")
    return wall, usage.ru_maxrss * 1024 / 1e9


def summary(runs):
    walls = [w for w, _ in runs]
    return statistics.median(walls), min(walls), max(walls), max(r for _, r in runs)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--make-folder", metavar="DIR", help="write the synthetic SD1.5 diffusers folder and stop")
    ap.add_argument("--folder", default="/tmp/sd15-synth")
    ap.add_argument("--steps", type=int, default=4)
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--fp16-weights", action="store_true", help="ours with --fp16-weights")
    ap.add_argument("--ldm", default=os.path.join(ROOT, "build", "bin", "ldm"))
    ap.add_argument("--diffusers-run", action="store_true", help=argparse.SUPPRESS)  # the child
    ap.add_argument("--out", default="/tmp/bench_txt2img.png", help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.make_folder:
        return make_folder(a.make_folder)
    if a.diffusers_run:
        return diffusers_run(a.folder, a.steps, a.threads, a.out)

    env = dict(os.environ, OMP_NUM_THREADS=str(a.threads))
    ours = [a.ldm, "generate", "--model", a.folder, "--prompt", PROMPT, "--scheduler", "euler", "--steps",
            str(a.steps), "--guidance", "7.5", "--width", "512", "--height", "512", "--seed", "1",
            "--threads", str(a.threads), "--output", "/tmp/bench_txt2img_ours.png"] + (
                ["--fp16-weights"] if a.fp16_weights else [])
    peer = [sys.executable, os.path.abspath(__file__), "--diffusers-run", "--folder", a.folder, "--steps",
            str(a.steps), "--threads", str(a.threads), "--out", "/tmp/bench_txt2img_diffusers.png"]
    results = {"ours": [], "diffusers": []}
    for rep in range(a.reps):
        for name, cmd in (("ours", ours), ("diffusers", peer)):
            wall, rss = timed(cmd, env)
            results[name].append((wall, rss))
            print(f"  run {rep + 1} {name}: {wall:.2f} s, peak RSS {rss:.2f} GB", flush=True)
    o, d = summary(results["ours"]), summary(results["diffusers"])
    label = "ours --fp16-weights" if a.fp16_weights else "ours (fp32)"
    print(f"txt2img 512x512, {a.steps} Euler steps, whole process, {a.threads} threads, medians of {a.reps}:")
    print(f"  {label}: {o[0]:.2f} s ({o[1]:.2f}-{o[2]:.2f}), peak RSS {o[3]:.2f} GB")
    print(f"  diffusers (fp32): {d[0]:.2f} s ({d[1]:.2f}-{d[2]:.2f}), peak RSS {d[3]:.2f} GB")
    print(f"  ours / diffusers: time {o[0] / d[0]:.2f}, peak RSS {o[3] / d[3]:.2f}")


if __name__ == "__main__":
    main()
