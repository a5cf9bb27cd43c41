// Scratch buffers kept across calls (thread_local vectors of packed panels, Winograd bands and
// transforms): internal to src/.
#pragma once
#include <cstddef>
#include <vector>

namespace ldm {

// Makes buf hold at least n elements and returns its data; it never shrinks. std::vector::resize
// writes zeros over every element it adds, and a kept buffer that shrank for one shape and grew
// back for the next paid that memset on every call: ~1% of an SD1.5 U-Net step on the main
// thread alone (perf), while the other thread waited. The contents are whatever the last user
// left (zeros when fresh): callers write what they read. A buffer that must grow is freed first
// and made at exactly n: resize on the full buffer would copy it and double its capacity (the
// full-size VAE decode's peak RSS rose 2027 -> 2068 MiB that way, against 2035 with this).
template <typename T>
T* grow_scratch(std::vector<T>& buf, size_t n) {
  if (buf.size() < n) {
    std::vector<T>().swap(buf);
    buf.resize(n);
  }
  return buf.data();
}

}  // namespace ldm
