// Running the built `ldm` (LDM_CLI) from a test as a user would: the exit status and stderr,
// the command and its stderr echoed into the test log.
#pragma once
#include <sys/wait.h>

#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <sstream>
#include <string>

#include "tmp_path.hpp"

namespace ldm::test {

struct Run {
  int status;       // the exit status of `ldm`
  std::string err;  // what it wrote to stderr
};

// `ldm ARGS`, stdout discarded, stderr captured.
inline Run ldm_run(const std::string& args) {
  TmpPath err_file("ldm_run_stderr.txt");
  const int raw = std::system((std::string(LDM_CLI) + " " + args + " > /dev/null 2> " + err_file.path).c_str());
  std::ifstream f(err_file.path);
  std::stringstream ss;
  ss << f.rdbuf();
  Run r{WIFEXITED(raw) ? WEXITSTATUS(raw) : -1, ss.str()};
  std::printf("  $ ldm %s\n    -> exit %d; stderr: %s", args.c_str(), r.status, r.err.empty() ? "(empty)\n" : r.err.c_str());
  return r;
}

}  // namespace ldm::test
