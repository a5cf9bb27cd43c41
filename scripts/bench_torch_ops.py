#!/usr/bin/env python3
"""PyTorch (CPU) timings of the ops in bench/bench_ops.cpp, same shapes, for docs/performance.md.

    pip install torch          # the CPU build, or any: only the CPU is used
    python3 scripts/bench_torch_ops.py --threads 2 --reps 7

Prints, per op, the median over `reps` timings (each a loop sized to ~0.25 s) in ms, GFLOP/s
(GB/s for GroupNorm) from the median, and the same figure per CPU-second of the process (with
one thread: the rate on an unshared core, which other processes on the machine disturb less).
FLOP counts are those of bench_ops.cpp. Not part of the library or its tests.
"""
import argparse
import statistics
import time

import torch
import torch.nn.functional as F


def timed(fn, reps):
    """Median and min wall seconds per call, and CPU seconds per call (all threads)."""
    fn()
    t0 = time.perf_counter()
    n = 0
    while time.perf_counter() - t0 < 0.1 or n < 2:
        fn()
        n += 1
    loop = max(1, int(0.25 / ((time.perf_counter() - t0) / n)))
    walls = []
    c0, w0 = time.process_time(), time.perf_counter()
    for _ in range(reps):
        s = time.perf_counter()
        for _ in range(loop):
            fn()
        walls.append((time.perf_counter() - s) / loop)
    cpu = (time.process_time() - c0) / (reps * loop)
    return statistics.median(walls), min(walls), cpu


def report(name, work, unit, fn, reps):
    med, lo, cpu = timed(fn, reps)
    print(f"{name:46s} median {med * 1e3:9.3f} ms (min {lo * 1e3:9.3f})  {work / med * 1e-9:7.1f} {unit}"
          f"  | per cpu-s {work / cpu * 1e-9:7.1f}", flush=True)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--reps", type=int, default=7)
    ap.add_argument("--only", default="", help="run only the ops whose name contains this")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, "
          f"CPU capability {torch.backends.cpu.get_cpu_capability()}")

    def want(name):
        return args.only in name

    with torch.inference_mode():
        # GEMM x W^T (torch.mm on a transposed view, as Linear without bias) and Linear with bias.
        for M, N, K in [(8192, 320, 320), (8192, 2560, 320), (8192, 320, 1280), (2048, 640, 640),
                        (2048, 5120, 640), (2048, 640, 2560), (512, 1280, 1280), (512, 10240, 1280),
                        (154, 320, 768), (154, 1280, 768)]:
            a, w, b = torch.randn(M, K), torch.randn(N, K), torch.randn(N)
            out = torch.empty(M, N)
            name = f"gemm M={M} N={N} K={K}"
            if want(name):
                report(name, 2.0 * M * N * K, "GFLOP/s", lambda: torch.mm(a, w.t(), out=out), args.reps)
            name = f"linear+bias M={M} N={N} K={K}"
            if (M, N, K) in [(8192, 320, 320), (8192, 2560, 320)] and want(name):
                report(name, 2.0 * M * N * K, "GFLOP/s", lambda: F.linear(a, w, b), args.reps)

        # Convolutions, batch 2, stride 1, "same" padding.
        for C, O, S, k in [(320, 320, 64, 3), (640, 640, 32, 3), (1280, 1280, 16, 3), (1280, 1280, 8, 3),
                           (320, 320, 64, 1), (640, 640, 32, 1)]:
            name = f"conv2d {k}x{k} [2,{C},{S},{S}] -> {O}"
            if not want(name):
                continue
            x, w, b = torch.randn(2, C, S, S), torch.randn(O, C, k, k) * 0.05, torch.randn(O)
            report(name, 2.0 * 2 * O * S * S * C * k * k, "GFLOP/s",
                   lambda: F.conv2d(x, w, b, padding=k // 2), args.reps)

        # GroupNorm(32) + SiLU: GB/s of input read + output written.
        for C, S in [(320, 64), (640, 32), (1280, 16), (1280, 8)]:
            name = f"group_norm+silu [2,{C},{S},{S}]"
            if not want(name):
                continue
            x, w, b = torch.randn(2, C, S, S), torch.randn(C), torch.randn(C)
            report(name, 2.0 * 4 * x.numel(), "GB/s", lambda: F.silu(F.group_norm(x, 32, w, b, 1e-5)), args.reps)

        # Attention, batch 2, 8 heads, inputs in the [B, L, H*d] layout of the projections.
        for Lq, Lk, D in [(4096, 4096, 320), (1024, 1024, 640), (4096, 77, 320)]:
            name = f"attention Lq={Lq} Lk={Lk} D={D} heads=8"
            if not want(name):
                continue
            q, k, v = torch.randn(2, Lq, D), torch.randn(2, Lk, D), torch.randn(2, Lk, D)

            def sdpa(q=q, k=k, v=v, Lq=Lq, Lk=Lk, D=D):
                heads = lambda t, L: t.view(2, L, 8, D // 8).transpose(1, 2)  # noqa: E731
                o = F.scaled_dot_product_attention(heads(q, Lq), heads(k, Lk), heads(v, Lk))
                return o.transpose(1, 2).reshape(2, Lq, D)

            report(name, 4.0 * 2 * Lq * Lk * D, "GFLOP/s", sdpa, args.reps)


if __name__ == "__main__":
    main()
