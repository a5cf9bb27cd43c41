// Peak resident memory of this process (getrusage's high-water mark), for reports and memory tests.
#pragma once
#include <sys/resource.h>

namespace ldm {

inline double peak_rss_bytes() {
  struct rusage ru {};
  getrusage(RUSAGE_SELF, &ru);
  return double(ru.ru_maxrss) * 1024.0;  // ru_maxrss is in KiB on Linux
}

inline double peak_rss_gb() { return peak_rss_bytes() / double(1 << 30); }

}  // namespace ldm
