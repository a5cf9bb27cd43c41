// Running the built `ldm` (LDM_CLI) from a test as a user would: the exit status, stderr and
// wall time, the command and its stderr echoed into the test log.
#pragma once
#include <sys/wait.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <sstream>
#include <string>

#include "tmp_path.hpp"

namespace ldm::test {

struct Run {
  int status;       // the exit status (-1: killed by a signal)
  std::string err;  // what it wrote to stderr
  double seconds;   // wall time
};

// The shell command `cmd`, stdout discarded, stderr captured.
inline Run run_shell(const std::string& cmd) {
  TmpPath err_file("ldm_run_stderr.txt");
  const auto t0 = std::chrono::steady_clock::now();
  const int raw = std::system((cmd + " > /dev/null 2> " + err_file.path).c_str());
  const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  std::ifstream f(err_file.path);
  std::stringstream ss;
  ss << f.rdbuf();
  Run r{WIFEXITED(raw) ? WEXITSTATUS(raw) : -1, ss.str(), seconds};
  std::printf("  $ %s\n    -> exit %d in %.1f s; stderr: %s", cmd.c_str(), r.status, r.seconds,
              r.err.empty() ? "(empty)\n" : r.err.c_str());
  return r;
}

// `cd FOLDER && EXE ARGS` (FOLDER "": the test's own folder): what a user running EXE in FOLDER gets.
inline Run run_cli_in(const std::string& folder, const std::string& exe, const std::string& args) {
  return run_shell((folder.empty() ? "" : "cd '" + folder + "' && ") + "'" + exe + "' " + args);
}

// `ldm ARGS` (the built LDM_CLI).
inline Run ldm_run(const std::string& args) { return run_cli_in("", LDM_CLI, args); }

}  // namespace ldm::test
