// Writing a file so that an interrupted write (disk full, file-size limit, an error, a kill)
// never destroys what was there: the bytes go to a temporary file in the same folder, which
// is flushed to disk (fsync) and then renamed over the target in one step (rename(2) is
// atomic within a file system). Until commit() the target is untouched; a writer destroyed
// without commit() removes its temporary file.
//   AtomicFile f("out.png");
//   f.write(png.data(), png.size());
//   f.commit();
#pragma once
#include <fcntl.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <cstring>
#include <string>

#include "ldm/core/error.hpp"

namespace ldm {

class AtomicFile {
 public:
  explicit AtomicFile(std::string path) : path_(std::move(path)) {
    static std::atomic<unsigned> counter{0};
    // O_EXCL: never reuse a file someone else made; mode 0666 minus the umask, as a plain open gives.
    for (int attempt = 0;; ++attempt) {
      const std::string tmp = str(path_, ".tmp-", ::getpid(), "-", counter++);
      fd_ = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0666);
      if (fd_ >= 0) {
        tmp_ = tmp;
        break;
      }
      if (errno != EEXIST || attempt == 100) fail("cannot create a temporary file beside it");
    }
  }
  AtomicFile(const AtomicFile&) = delete;
  AtomicFile& operator=(const AtomicFile&) = delete;
  ~AtomicFile() { discard(); }

  void write(const void* data, size_t n) {
    const char* p = static_cast<const char*>(data);
    while (n > 0) {
      const ssize_t k = ::write(fd_, p, n);
      if (k < 0 && errno == EINTR) continue;
      if (k <= 0) fail("error while writing");
      p += k;
      n -= size_t(k);
    }
  }

  // Makes the new contents durable, then puts them in place of the target.
  void commit() {
    if (::fsync(fd_) != 0) fail("error while flushing it to disk");
    const int fd = fd_;
    fd_ = -1;
    if (::close(fd) != 0) fail("error while closing it");
    if (::rename(tmp_.c_str(), path_.c_str()) != 0) fail("cannot move the temporary file over it");
    tmp_.clear();
  }

 private:
  // Removes the temporary file (the target keeps its old contents) and throws with the OS reason.
  [[noreturn]] void fail(const char* what) {
    const int err = errno;
    discard();
    LDM_FAIL("cannot write '", path_, "': ", what, ": ", std::strerror(err),
             " (the file, if it existed, is unchanged)");
  }
  void discard() {
    if (fd_ >= 0) ::close(fd_);
    fd_ = -1;
    if (!tmp_.empty()) ::unlink(tmp_.c_str());
    tmp_.clear();
  }

  std::string path_, tmp_;
  int fd_ = -1;
};

}  // namespace ldm
