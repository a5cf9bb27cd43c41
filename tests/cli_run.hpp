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

// `cd FOLDER && EXE ARGS` (FOLDER "": the test's own folder), stdout discarded, stderr captured:
// what a user running EXE in FOLDER gets.
inline Run run_cli_in(const std::string& folder, const std::string& exe, const std::string& args) {
  TmpPath err_file("ldm_run_stderr.txt");
  const std::string cmd = (folder.empty() ? "" : "cd '" + folder + "' && ") + "'" + exe + "' " + args;
  const int raw = std::system((cmd + " > /dev/null 2> " + err_file.path).c_str());
  std::ifstream f(err_file.path);
  std::stringstream ss;
  ss << f.rdbuf();
  Run r{WIFEXITED(raw) ? WEXITSTATUS(raw) : -1, ss.str()};
  std::printf("  $ %s\n    -> exit %d; stderr: %s", cmd.c_str(), r.status, r.err.empty() ? "(empty)\n" : r.err.c_str());
  return r;
}

// `ldm ARGS` (the built LDM_CLI).
inline Run ldm_run(const std::string& args) { return run_cli_in("", LDM_CLI, args); }

}  // namespace ldm::test
