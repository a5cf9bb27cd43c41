// Peak resident memory of this process (getrusage), for reports and memory tests.
#pragma once
#include <sys/resource.h>

namespace ldm {

inline double peak_rss_gb() {
  struct rusage ru {};
  getrusage(RUSAGE_SELF, &ru);
  return double(ru.ru_maxrss) / (1024.0 * 1024.0);  // ru_maxrss is in KiB on Linux
}

}  // namespace ldm
