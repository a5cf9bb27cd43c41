#!/usr/bin/env bash
# What CI runs: builds ldm.cpp and runs the whole test suite (full-size model checks included),
# then the fast tests again under AddressSanitizer + UBSan (scripts/sanitize.sh), then each fuzz
# target for 20000 inputs from a fixed seed (scripts/fuzz.sh). Extra args go to the first ctest.
# Tests needing ../shared skip when it is absent (CTest reports them "Skipped", not "Passed"); GPU
# tests skip without a GPU. Under CI (CI set, as .ci/run runs) a missing ../shared is a failure:
# CI is never green while checking nothing.
set -euo pipefail
cd "$(dirname "$0")/.."
werror=()
if [ -n "${CI:-}" ]; then
  export LDM_REQUIRE_SHARED=1  # no ../shared under CI is a failure, not a skip
  werror=(-DLDM_WERROR=ON)     # and so is a compiler warning
fi
scripts/setup.sh
scripts/build.sh "${werror[@]}"
# Two tests at a time (nproc on the 2-core machines): the full-size ones hold a few GB each, so two
# fit in 24 GB, and the suite takes minutes less.
(cd build && ctest --output-on-failure --timeout 1500 -j "$(nproc)" "$@")
scripts/sanitize.sh
FUZZ_RUNS=20000 FUZZ_SEED=1 scripts/fuzz.sh  # the same inputs on every machine: a finding is reproducible
