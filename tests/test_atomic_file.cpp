// Output files are replaced whole or not at all: a failed write (no folder, file-size limit)
// throws with the OS's reason, leaves an existing file as it was and no temporary file behind.
#include <catch2/catch.hpp>
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

#include <csignal>
#include <filesystem>
#include <fstream>
#include <functional>
#include <sstream>

#include "ldm/core/atomic_file.hpp"
#include "ldm/core/image.hpp"
#include "ldm/core/safetensors.hpp"
#include "tmp_path.hpp"

using namespace ldm;
using Catch::Contains;
namespace fs = std::filesystem;

namespace {

std::string read_all(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  std::stringstream ss;
  ss << f.rdbuf();
  return ss.str();
}

size_t files_in(const std::string& dir) {
  return size_t(std::distance(fs::directory_iterator(dir), fs::directory_iterator{}));
}

// Runs `write` in a child process whose files may not grow past 4 KiB (write() then fails with
// EFBIG instead of raising SIGXFSZ); true when it threw an ldm::Error saying "File too large".
bool fails_with_file_size_limit(const std::function<void()>& write) {
  const pid_t pid = ::fork();
  if (pid == 0) {
    std::signal(SIGXFSZ, SIG_IGN);
    const rlimit limit{4096, 4096};
    ::setrlimit(RLIMIT_FSIZE, &limit);
    try {
      write();
    } catch (const Error& e) {
      ::_exit(std::string(e.what()).find("File too large") != std::string::npos ? 0 : 2);
    }
    ::_exit(1);
  }
  int status = 0;
  ::waitpid(pid, &status, 0);
  return WIFEXITED(status) && WEXITSTATUS(status) == 0;
}

}  // namespace

TEST_CASE("atomic_file: a write replaces the file whole and leaves no temporary file") {
  test::TmpPath dir("atomic_ok");
  fs::create_directories(dir.path);
  const std::string path = dir.path + "/out.bin";
  std::ofstream(path) << "old contents";
  AtomicFile f(path);
  f.write("new", 3);
  CHECK(read_all(path) == "old contents");  // untouched until commit
  f.commit();
  CHECK(read_all(path) == "new");
  CHECK(files_in(dir) == 1);
}

TEST_CASE("atomic_file: a writer dropped without commit removes its temporary file") {
  test::TmpPath dir("atomic_drop");
  fs::create_directories(dir.path);
  {
    AtomicFile f(dir.path + "/out.bin");
    f.write("partial", 7);
  }
  CHECK(files_in(dir) == 0);
}

TEST_CASE("atomic_file: a missing folder or a folder as the target is a clear error") {
  test::TmpPath dir("atomic_missing");
  CHECK_THROWS_WITH(AtomicFile(dir.path + "/no/out.png"),
                    Contains("cannot write '" + dir.path + "/no/out.png'") && Contains("No such file or directory"));
  fs::create_directories(dir.path + "/target");
  AtomicFile f(dir.path + "/target");
  f.write("x", 1);
  CHECK_THROWS_WITH(f.commit(), Contains("cannot move the temporary file over it") && Contains("directory"));
  CHECK(files_in(dir) == 1);  // only the folder: the temporary file is gone
}

TEST_CASE("atomic_file: write_png and SafeTensorsWriter::save keep the old file when the write fails") {
  test::TmpPath dir("atomic_efbig");
  fs::create_directories(dir.path);
  const std::string png = dir.path + "/out.png", st = dir.path + "/out.safetensors";
  std::ofstream(png) << "an earlier image";
  std::ofstream(st) << "earlier tensors";
  // 64x64 of noise does not compress below the 4 KiB limit; 4096 floats are 16 KiB.
  Tensor noise = Tensor::empty({64, 64, 3});
  uint32_t state = 1;
  for (int64_t i = 0; i < noise.numel(); ++i) {
    state = state * 1103515245u + 12345u;
    noise[i] = float((state >> 16) & 255u) / 255.0f;
  }
  CHECK(fails_with_file_size_limit([&] { write_png(png, noise, {}); }));
  CHECK(fails_with_file_size_limit([&] {
    SafeTensorsWriter w;
    w.add("x", Tensor::full({4096}, 1.0f));
    w.save(st);
  }));
  CHECK(read_all(png) == "an earlier image");
  CHECK(read_all(st) == "earlier tensors");
  CHECK(files_in(dir) == 2);
}
