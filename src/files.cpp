// Reading files a user names. See include/ldm/core/files.hpp.
#include "ldm/core/files.hpp"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <new>

#include "ldm/core/error.hpp"

namespace ldm {
namespace {

const char* kind_of(mode_t mode) {
  if (S_ISDIR(mode)) return "a folder";
  if (S_ISFIFO(mode)) return "a FIFO (named pipe)";
  if (S_ISSOCK(mode)) return "a socket";
  if (S_ISCHR(mode) || S_ISBLK(mode)) return "a device";
  return "not a file";
}

void require_regular(const struct stat& st, const std::string& path, const std::string& what) {
  LDM_CHECK(S_ISREG(st.st_mode), what, " '", path, "' is ", kind_of(st.st_mode), ", not a regular file");
}

}  // namespace

void check_regular_file(const std::string& path, const std::string& what) {
  struct stat st {};
  LDM_CHECK(::stat(path.c_str(), &st) == 0, "cannot read ", what, " '", path, "': ", std::strerror(errno));
  require_regular(st, path, what);
}

int open_regular_file(const std::string& path, const std::string& what, uint64_t* size) {
  const int fd = ::open(path.c_str(), O_RDONLY | O_NONBLOCK | O_CLOEXEC);
  LDM_CHECK(fd >= 0, "cannot read ", what, " '", path, "': ", std::strerror(errno));
  struct stat st {};
  const bool stat_ok = ::fstat(fd, &st) == 0;
  const int err = errno;
  if (!stat_ok || !S_ISREG(st.st_mode)) {
    ::close(fd);
    LDM_CHECK(stat_ok, "cannot read ", what, " '", path, "': ", std::strerror(err));
    require_regular(st, path, what);
  }
  *size = uint64_t(st.st_size);
  return fd;
}

std::string read_file(const std::string& path, const std::string& what, uint64_t max_bytes) {
  uint64_t size = 0;
  const int fd = open_regular_file(path, what, &size);
  std::string text;
  try {
    LDM_CHECK(size <= max_bytes, what, " '", path, "' is ", size, " bytes, more than the ", max_bytes,
              " such a file can have: is it the right file?");
    text.resize(size_t(size));
    size_t done = 0;
    while (done < text.size()) {
      const ssize_t n = ::read(fd, &text[done], text.size() - done);
      if (n < 0 && errno == EINTR) continue;
      LDM_CHECK(n >= 0, "cannot read ", what, " '", path, "': ", std::strerror(errno));
      if (n == 0) break;  // the file shrank while being read
      done += size_t(n);
    }
    text.resize(done);
  } catch (const std::bad_alloc&) {
    ::close(fd);
    LDM_FAIL("out of memory reading ", what, " '", path, "' (", size >> 20, " MiB)");
  } catch (...) {
    ::close(fd);
    throw;
  }
  ::close(fd);
  return text;
}

std::string json_error_reason(const std::exception& e) {
  const std::string m = e.what();  // "[json.exception.parse_error.101] parse error at line 1, ..."
  const size_t tag_end = m.find("] ");
  return m.compare(0, 16, "[json.exception.") == 0 && tag_end != std::string::npos ? m.substr(tag_end + 2) : m;
}

nlohmann::json read_json_file(const std::string& path, const std::string& what) {
  const std::string text = read_file(path, what);
  try {
    return nlohmann::json::parse(text);
  } catch (const nlohmann::json::exception& e) {
    LDM_FAIL(what, " '", path, "' is not valid JSON: ", json_error_reason(e));
  } catch (const std::bad_alloc&) {
    LDM_FAIL("out of memory parsing ", what, " '", path, "' as JSON");
  }
}

}  // namespace ldm
