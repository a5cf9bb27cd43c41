#!/usr/bin/env bash
# What CI runs: builds ldm.cpp and runs the whole test suite (full-size model checks included),
# then the fast tests again under AddressSanitizer + UBSan (scripts/sanitize.sh), then each fuzz
# target for 20000 inputs from a fixed seed (scripts/fuzz.sh). Extra args go to the first ctest.
# Tests needing ../shared skip when it is absent (CTest reports them "Skipped", not "Passed"); GPU
# tests skip without a GPU. Under CI (CI set, as .ci/run runs) a missing ../shared is a failure:
# CI is never green while checking nothing.
set -euo pipefail
cd "$(dirname "$0")/.."
ci_options=()
if [ -n "${CI:-}" ]; then
  export LDM_REQUIRE_SHARED=1  # no ../shared under CI is a failure, not a skip
  ci_options=(-DLDM_WERROR=ON  # and so is a compiler warning
    # No test runs the lesson or benchmark programs (the tests include the lessons' code): CI
    # compiles them at -O0, a check that they build, in half the time (-3 min of a 31-min run).
    -DLDM_PROGRAMS_UNOPTIMIZED=ON
    # and the test files and the command line are compiled several to a translation unit
    # (LDM_UNITY_BUILD): the shared headers parsed and their inline code compiled once per batch.
    -DLDM_UNITY_BUILD=ON)
fi
scripts/setup.sh
scripts/build.sh "${ci_options[@]}"
# One test at a time: each uses every core (OpenMP), and two side by side were slower, not faster
# (test_vae_tiling 86 -> 243 s, test_lessons_pipeline 26 -> 185 s on the 2-core Xeon: the threads
# of two OpenMP programs spin against each other).
(cd build && ctest --output-on-failure --timeout 1500 "$@")
scripts/sanitize.sh
FUZZ_RUNS=20000 FUZZ_SEED=1 scripts/fuzz.sh  # the same inputs on every machine: a finding is reproducible
