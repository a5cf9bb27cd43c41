#!/usr/bin/env bash
# Prepares, HERE (a machine with network access to Debian and PyPI), what the GPU machine needs
# for scripts/device_check.sh and cannot fetch itself (it reaches nothing outside):
#   .devshared/shared/   the reference tensors and the CLIP tokenizer (../shared does not travel)
#   .devdeps/*.deb       the Debian packages the build needs that the GPU image lacks: Eigen,
#                        nlohmann-json, Catch2 v2, Google Benchmark, CLI11, stb (unpacked there
#                        with dpkg -x into a private prefix; nothing is installed)
#   .whl/diffusers-*.whl diffusers (pure Python) for the PyTorch peer timing
# All three are git-ignored; the device call names them in `carry`:
#   run(command="bash scripts/device_check.sh", carry=[".devshared", ".devdeps", ".whl"], timeout_s=590)
# Safe to run again: what is there already is kept (pass --force to fetch again).
set -euo pipefail
cd "$(dirname "$0")/.."
force=0
[ "${1:-}" = "--force" ] && force=1

shared="${LDM_SHARED:-../shared}"
# The packages of scripts/setup.sh that a GPU image with CUDA, CMake, ninja, g++ (libgomp) and
# Python lacks, plus the runtime libraries their -dev packages point to.
debs=(libeigen3-dev nlohmann-json3-dev catch2 libbenchmark-dev libbenchmark1debian libcli11-dev libstb-dev libstb0)

# 1. references and tokenizer (about 20 MB)
if [ ! -d "$shared/reference" ]; then
  echo "device_prepare: $shared/reference not found (set LDM_SHARED)" >&2
  exit 1
fi
if [ $force = 1 ] || [ ! -f .devshared/shared/reference/ref_pipeline_full.safetensors ]; then
  rm -rf .devshared
  mkdir -p .devshared/shared
  cp -r "$shared/reference" .devshared/shared/
  [ -d "$shared/clip-tokenizer" ] && cp -r "$shared/clip-tokenizer" .devshared/shared/
  rm -rf .devshared/shared/reference/__pycache__
fi
echo "device_prepare: .devshared/shared $(du -sh .devshared | cut -f1)"

# 2. Debian packages, downloaded (not installed)
have_all=1
for p in "${debs[@]}"; do ls .devdeps/${p}_*.deb > /dev/null 2>&1 || have_all=0; done
if [ $force = 1 ] || [ $have_all = 0 ]; then
  rm -rf .devdeps
  mkdir -p .devdeps
  [ -n "$(find /var/lib/apt/lists -maxdepth 1 -name '*Packages*' -print -quit 2>/dev/null)" ] || apt-get update -qq
  (cd .devdeps && apt-get download "${debs[@]}")
fi
echo "device_prepare: .devdeps $(ls .devdeps | wc -l) packages, $(du -sh .devdeps | cut -f1): $(ls .devdeps | tr '\n' ' ')"

# 3. diffusers wheel (pure Python; torch, transformers, safetensors, huggingface_hub are there)
mkdir -p .whl
if [ $force = 1 ] || ! ls .whl/diffusers-*.whl > /dev/null 2>&1; then
  rm -f .whl/diffusers-*.whl
  python3 -m pip download -q --no-deps --only-binary=:all: -d .whl diffusers
fi
echo "device_prepare: .whl $(ls .whl | tr '\n' ' ')"

# The working tree travels too (64 MiB in all with the carried folders).
echo "device_prepare: carried total $(du -shc .devshared .devdeps .whl | tail -1 | cut -f1)"
