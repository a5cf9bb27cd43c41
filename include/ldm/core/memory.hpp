// Process memory: the peak resident size (getrusage's high-water mark), for reports and memory
// tests, and keep_freed_memory, the allocator policy of programs that repeat the same steps.
#pragma once
#include <sys/resource.h>
#ifdef __GLIBC__
#include <malloc.h>
#endif

namespace ldm {

inline double peak_rss_bytes() {
  struct rusage ru {};
  getrusage(RUSAGE_SELF, &ru);
  return double(ru.ru_maxrss) * 1024.0;  // ru_maxrss is in KiB on Linux
}

inline double peak_rss_gb() { return peak_rss_bytes() / double(1 << 30); }

// Keeps freed memory in the process for the next allocation instead of handing it back to the
// kernel. glibc's malloc by default maps each block over 128 KiB (a threshold that rises with
// use, to 32 MiB at most) afresh and unmaps it when freed, and trims the heap's free top: a
// program that repeats the same steps frees and allocates the same tensors every step, and
// each fresh page then costs a page fault and the kernel's zeroing: fresh memory is written at
// 2 GB/s on the development machine, memory the process already holds at 22 GB/s. That was
// 15-25% of the tests' tiny U-Net backward (perf); in an SD1.5 U-Net step, glibc's default
// policy took 1.3 s of kernel time per step (perf stat) before FeedForward stopped making its
// 84 MB output.
// With this, every block comes from the heap (no block is mapped on its own) and the heap is
// never trimmed: the resident size stays near its peak (the peak is unchanged). Process-wide,
// so programs choose it and the library never does: `ldm generate`, `ldm train vae|unet`,
// bench_models and bench_train call it. release_freed_memory() hands the free heap back at the
// end of a phase. A no-op outside glibc.
inline void keep_freed_memory() {
#ifdef __GLIBC__
  mallopt(M_MMAP_MAX, 0);  // 0: never map a block on its own; glibc still maps when the heap cannot grow
  mallopt(M_TRIM_THRESHOLD, -1);  // -1: never trim
#endif
}

// Hands the free pages of the heap back to the kernel (malloc_trim): where a phase ends whose
// memory the next one will not reuse, e.g. when the pipeline leaves the U-Net for the VAE.
inline void release_freed_memory() {
#ifdef __GLIBC__
  malloc_trim(0);
#endif
}

}  // namespace ldm
