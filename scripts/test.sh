#!/usr/bin/env bash
# Builds ldm.cpp and runs the whole test suite (full-size model checks included).
# Tests needing ../shared/reference skip cleanly when it is absent; GPU tests skip without a GPU.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
scripts/build.sh
cd build
ctest --output-on-failure --timeout 1500 "$@"
