// Catch2 main of the CUDA tests (tests/test_cuda_*.cpp). On a machine without a GPU each test
// still runs its CPU side (references, weights, host-side preparation) and returns 77, which
// CTest reports as "Skipped" (SKIP_RETURN_CODE in CMakeLists.txt) instead of a silent pass; so
// does a test case that skipped for lack of ../shared (tests/skip.hpp).
#define CATCH_CONFIG_RUNNER
#include <catch2/catch.hpp>
#include <cstdio>

#include "ldm/cuda/device_tensor.hpp"
#include "skip.hpp"

int main(int argc, char** argv) {
  const int code = ldm::test::exit_code(Catch::Session().run(argc, argv));
  if (code != 0) return code;
  if (!ldm::cuda::available()) {
    std::printf("SKIPPED on the GPU: %s. The CPU-side checks passed.\n", ldm::cuda::device_description().c_str());
    return 77;
  }
  return 0;
}
