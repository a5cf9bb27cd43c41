#!/usr/bin/env bash
# Installs the Debian packages ldm.cpp builds with. Safe to run again; skips what is there.
set -euo pipefail
packages=(build-essential cmake ninja-build pkg-config libeigen3-dev libxtensor-dev catch2 libbenchmark-dev
          nlohmann-json3-dev libcli11-dev libstb-dev libomp-dev
          clang libclang-rt-14-dev)  # clang + libFuzzer for scripts/fuzz.sh
missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
  echo "setup: installing ${missing[*]}"
  SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${missing[@]}"
else
  echo "setup: all packages present"
fi
command -v nvcc >/dev/null && echo "setup: nvcc found ($(nvcc --version | tail -1)): the CUDA path will be built" \
  || echo "setup: no nvcc: building CPU only"
