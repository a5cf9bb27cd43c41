#!/usr/bin/env bash
# Configures and builds ldm.cpp (Release, -march=native) into build/. Extra args go to cmake.
set -euo pipefail
cd "$(dirname "$0")/.."
# LDM_PROGRAMS_UNOPTIMIZED=OFF unless the caller says otherwise: a build CI left behind (scripts/test.sh)
# would otherwise keep its -O0 lessons and benchmarks in the CMake cache.
cmake -S . -B build -G Ninja -DCMAKE_BUILD_TYPE=Release -DLDM_PROGRAMS_UNOPTIMIZED=OFF "$@"
cmake --build build -j "$(nproc)"
