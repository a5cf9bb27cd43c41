// The one Catch2 main shared by every test executable: exit code 77 (CTest's "Skipped") when a
// test case skipped for lack of ../shared and none failed (tests/skip.hpp).
#define CATCH_CONFIG_RUNNER
#include <catch2/catch.hpp>

#include "skip.hpp"

int main(int argc, char** argv) { return ldm::test::exit_code(Catch::Session().run(argc, argv)); }
