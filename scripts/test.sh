#!/usr/bin/env bash
# What CI runs: builds ldm.cpp and runs the whole test suite (full-size model checks included),
# then the fast tests again under AddressSanitizer + UBSan (scripts/sanitize.sh), then each fuzz
# target for a few seconds (scripts/fuzz.sh).
# Tests needing ../shared/reference skip cleanly when it is absent; GPU tests skip without a GPU.
# Extra args go to the first ctest.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
scripts/build.sh
(cd build && ctest --output-on-failure --timeout 1500 "$@")
scripts/sanitize.sh
scripts/fuzz.sh 10
