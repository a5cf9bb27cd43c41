// Tests that skip honestly (tests/skip.hpp): a test executable whose case had nothing to check
// for lack of ../shared exits with 77, which CTest reports as "Skipped"; a failure beside a
// skip still fails; with LDM_REQUIRE_SHARED=1 the skip itself is a failure; and $LDM_SHARED
// wins over the folder compiled in (LDM_SHARED_DIR), even when it names no folder.
// Each check runs this executable again on hidden probe cases.
#include <catch2/catch.hpp>
#include <cctype>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>
#include <sys/wait.h>

#include "reference.hpp"
#include "tmp_path.hpp"

namespace {

struct ProbeRun {
  int status;
  std::string out;  // without whitespace: Catch wraps its messages at 80 columns
};

std::string squeezed(const std::string& s) {
  std::string t;
  for (char c : s)
    if (!std::isspace(static_cast<unsigned char>(c))) t += c;
  return t;
}

// This executable on the probe cases of `tags`, with `env` (VAR=value ...) and
// LDM_REQUIRE_SHARED unset unless env sets it.
ProbeRun run_probe(const std::string& env, const std::string& tags) {
  ldm::test::TmpPath log("skip_probe.log");
  const std::string self = std::filesystem::read_symlink("/proc/self/exe").string();
  const std::string cmd = "env -u LDM_REQUIRE_SHARED " + env + " " + self + " '" + tags + "' > " + log.path + " 2>&1";
  const int raw = std::system(cmd.c_str());
  std::ifstream f(log.path);
  std::stringstream ss;
  ss << f.rdbuf();
  return {WIFEXITED(raw) ? WEXITSTATUS(raw) : -1, squeezed(ss.str())};
}

}  // namespace

TEST_CASE("skip probe: needs ../shared/reference", "[.][probe-reference]") {
  LDM_REQUIRE_REFERENCE(path, "ref_blocks.safetensors");
  CHECK(ldm::test::Reference(path).cases.size() > 0);
}

TEST_CASE("skip probe: checks something without ../shared", "[.][probe-pass]") { CHECK(1 + 1 == 2); }

TEST_CASE("skip probe: fails", "[.][probe-fail]") { CHECK(1 + 1 == 3); }

TEST_CASE("skip: without ../shared a test reports Skipped (77), never Passed; failures still fail") {
  const std::string none = "LDM_SHARED=/nonexistent";
  ProbeRun r = run_probe(none, "[probe-reference]");
  INFO(r.out);
  CHECK(r.status == 77);
  CHECK_THAT(r.out, Catch::Contains(squeezed("../shared/reference not found (looked in '/nonexistent'")) &&
                        Catch::Contains(squeezed("SKIPPED: 1 test case(s)")) &&
                        Catch::Contains(squeezed("skip probe: needs ../shared/reference")));

  r = run_probe(none, "[probe-reference],[probe-pass]");  // one case ran, one skipped: still Skipped
  CHECK(r.status == 77);
  r = run_probe(none, "[probe-pass]");
  CHECK(r.status == 0);
  r = run_probe(none, "[probe-reference],[probe-fail]");  // a failure is a failure, skip or not
  CHECK(r.status == 1);

  // CI (scripts/test.sh under CI=...): a missing ../shared is a failure.
  r = run_probe(none + " LDM_REQUIRE_SHARED=1", "[probe-reference]");
  CHECK(r.status == 1);
  CHECK_THAT(r.out, Catch::Contains(squeezed("LDM_REQUIRE_SHARED is set: a missing ../shared is a failure")));
}

TEST_CASE("skip: with ../shared the reference probe runs and passes") {
  LDM_REQUIRE_SHARED(shared, "reference");
  const ProbeRun r = run_probe("LDM_SHARED=" + ldm::shared_dir() + " LDM_REQUIRE_SHARED=1", "[probe-reference]");
  INFO(r.out);
  CHECK(r.status == 0);
}
