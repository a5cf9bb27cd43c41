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
// use) afresh and unmaps it when freed, and trims the heap's free top: a training step frees
// and allocates the same tensors every step, and each fresh page then costs a page fault and
// the kernel's zeroing (15-25% of the tests' tiny U-Net backward, measured with perf). With
// this, blocks up to 32 MiB (glibc's largest threshold) come from the heap and the heap is
// never trimmed. The price: the resident size stays near its peak (the peak is unchanged).
// Process-wide, so programs choose it and the library never does: `ldm train vae|unet` and
// bench_train call it. A no-op outside glibc.
inline void keep_freed_memory() {
#ifdef __GLIBC__
  mallopt(M_MMAP_THRESHOLD, 32 << 20);
  mallopt(M_TRIM_THRESHOLD, -1);  // -1: never trim
#endif
}

}  // namespace ldm
