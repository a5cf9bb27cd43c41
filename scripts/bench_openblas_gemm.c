// OpenBLAS cblas_sgemm at the GEMM shapes of bench/bench_ops.cpp, for docs/performance.md.
// Not part of the library (which does not depend on OpenBLAS). Build and run:
//
//   apt-get install -y libopenblas-dev
//   gcc -O2 scripts/bench_openblas_gemm.c -o /tmp/bench_openblas_gemm -lopenblas
//   env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE OPENBLAS_NUM_THREADS=2 /tmp/bench_openblas_gemm [reps]
//   ... /tmp/bench_openblas_gemm REPS M N K TRANS_B     # one shape
//
// Prints, per shape, the median of `reps` timings (each the best-of-one of a loop sized to
// ~0.3 s) and GFLOP/s, GFLOP per CPU-second of all threads (with one thread: the rate on
// an unshared core, which other processes on the machine disturb less), and the kernel
// OpenBLAS picked (openblas_get_corename).
#include <cblas.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

char* openblas_get_corename(void);
int openblas_get_num_threads(void);

static double clock_s(clockid_t id) {
  struct timespec t;
  clock_gettime(id, &t);
  return t.tv_sec + 1e-9 * t.tv_nsec;
}
static double now(void) { return clock_s(CLOCK_MONOTONIC); }
static double cpu(void) { return clock_s(CLOCK_PROCESS_CPUTIME_ID); }

static int cmp(const void* a, const void* b) {
  double x = *(const double*)a, y = *(const double*)b;
  return (x > y) - (x < y);
}

// C[M, N] = A[M, K] * B^T with B [N, K] (torch.nn.Linear layout) when trans_b, else B [K, N].
static void bench(const char* what, int M, int N, int K, int trans_b, int reps) {
  float* A = malloc(sizeof(float) * (size_t)M * K);
  float* B = malloc(sizeof(float) * (size_t)N * K);
  float* C = malloc(sizeof(float) * (size_t)M * N);
  for (size_t i = 0; i < (size_t)M * K; ++i) A[i] = (float)((i * 7919) % 1000) * 1e-3f - 0.5f;
  for (size_t i = 0; i < (size_t)N * K; ++i) B[i] = (float)((i * 104729) % 1000) * 1e-3f - 0.5f;
  const double flops = 2.0 * M * N * K;
  double t0 = now();
  int iters = 0;
  while (now() - t0 < 0.1 || iters < 1) {  // warm up and size the loop
    cblas_sgemm(CblasRowMajor, CblasNoTrans, trans_b ? CblasTrans : CblasNoTrans, M, N, K, 1.0f, A, K, B,
                trans_b ? K : N, 0.0f, C, N);
    ++iters;
  }
  int n = (int)(0.3 / ((now() - t0) / iters)) + 1;
  double* ms = malloc(sizeof(double) * reps);
  double cpu0 = cpu(), wall0 = now();
  for (int r = 0; r < reps; ++r) {
    double s = now();
    for (int i = 0; i < n; ++i)
      cblas_sgemm(CblasRowMajor, CblasNoTrans, trans_b ? CblasTrans : CblasNoTrans, M, N, K, 1.0f, A, K, B,
                  trans_b ? K : N, 0.0f, C, N);
    ms[r] = (now() - s) / n * 1e3;
  }
  // CPU seconds per call over all threads: with one thread, the time it would take on an idle core.
  double cpu_ms = (cpu() - cpu0) / (reps * n) * 1e3, wall_ms = (now() - wall0) / (reps * n) * 1e3;
  qsort(ms, reps, sizeof(double), cmp);
  double med = ms[reps / 2];
  printf("%-26s M=%-5d N=%-5d K=%-5d median %8.3f ms (min %8.3f max %8.3f) %6.1f GFLOP/s | per cpu-s %6.1f\n",
         what, M, N, K, med, ms[0], ms[reps - 1], flops / (med * 1e-3) * 1e-9, flops / (cpu_ms * 1e-3) * 1e-9);
  (void)wall_ms;
  free(A);
  free(B);
  free(C);
  free(ms);
}

int main(int argc, char** argv) {
  int reps = argc > 1 ? atoi(argv[1]) : 5;
  printf("OpenBLAS core: %s, threads: %d\n", openblas_get_corename(), openblas_get_num_threads());
  if (argc > 5) {  // one shape: reps M N K trans_b
    bench("gemm", atoi(argv[2]), atoi(argv[3]), atoi(argv[4]), atoi(argv[5]), reps);
    return 0;
  }
  // Linear layers (x W^T) of the SD1.5 U-Net transformers, batch 2.
  bench("linear 64x64 attn proj", 8192, 320, 320, 1, reps);
  bench("linear 64x64 geglu proj", 8192, 2560, 320, 1, reps);
  bench("linear 64x64 ff out", 8192, 320, 1280, 1, reps);
  bench("linear 32x32 attn proj", 2048, 640, 640, 1, reps);
  bench("linear 32x32 geglu proj", 2048, 5120, 640, 1, reps);
  bench("linear 32x32 ff out", 2048, 640, 2560, 1, reps);
  bench("linear 16x16 attn proj", 512, 1280, 1280, 1, reps);
  bench("linear 16x16 geglu proj", 512, 10240, 1280, 1, reps);
  bench("linear cross k/v 320", 154, 320, 768, 1, reps);
  bench("linear cross k/v 1280", 154, 1280, 768, 1, reps);
  // A 3x3 convolution's GEMM per image (W[O, 9C] x col[9C, H*W]), twice for batch 2.
  bench("conv3x3 GEMM 64x64x320", 320, 4096, 2880, 0, reps);
  bench("conv3x3 GEMM 32x32x640", 640, 1024, 5760, 0, reps);
  bench("conv3x3 GEMM 16x16x1280", 1280, 256, 11520, 0, reps);
  bench("conv3x3 GEMM 8x8x1280", 1280, 64, 11520, 0, reps);
  bench("conv1x1 GEMM 64x64x320", 320, 4096, 320, 0, reps);
  return 0;
}
