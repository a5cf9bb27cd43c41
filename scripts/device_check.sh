#!/usr/bin/env bash
# The one-call GPU check: build the CUDA path for sm_90, run the CUDA tests, time our GPU code
# and the PyTorch peer on the same GPU, and write everything to $OUT. Runs ON the GPU machine:
#
#   here, first:   scripts/device_prepare.sh      (references, .debs and the diffusers wheel)
#   device tool:   run(command="bash scripts/device_check.sh",
#                      carry=[".devshared", ".devdeps", ".whl"], timeout_s=600)
#
# Steps, most important first; each writes its log as it goes, and each is given only the time
# left of the budget (DEVICE_BUDGET_S, default 520 s: the whole script stays under 9 minutes),
# so a slow step cuts the later ones short instead of losing everything:
#   1. unpack .devdeps/*.deb into a private prefix (dpkg -x; nothing is installed), configure
#      (Release, LDM_BUILD_LESSONS=OFF, LDM_SHARED_DIR=.devshared/shared), build only ldm_cli,
#      the test_cuda_* tests and bench_cuda                                   -> build.log
#   2. ctest -R cuda (verbose: every relative L2 reached is in the log)     -> tests.log
#   3. bench_cuda, models: U-Net step per precision, VAE, CLIP, 50-step txt2img -> bench_models.json
#   4. PyTorch peer, eager: diffusers U-Net step (+ VAE, CLIP)               -> torch.jsonl
#   5. bench_cuda, ops: every implementation, CPU beside                      -> bench_ops.json
#   6. PyTorch peer, torch.compile(mode="reduce-overhead") U-Net step        -> torch.jsonl
#   summary.txt: the device, each step's status and time, the headline numbers; bench.log and
#   torch.log: the programs' console output. At most 8 files, all flat in $OUT.
# A missing piece (no .debs: system packages are tried; no wheel: the peer is skipped; no
# GPU: the tests exit 77 and report Skipped) is said in the summary, and the rest goes on.
#
# Dry run on a machine without a GPU (proves unpack, configure and build from the .debs alone):
#   DEVICE_CHECK_DRY=1 OUT=/tmp/devout DEVICE_PREFIX=/tmp/devprefix DEVICE_BUILD_DIR=build-devdry \
#     DEVICE_JOBS=1 bash scripts/device_check.sh
# runs steps 1-2 (the tests' CPU sides; they exit 77) and one benchmark that must skip, then stops.
set -uo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
OUT=${OUT:-/tmp/ldm_device_out}
DRY=${DEVICE_CHECK_DRY:-0}
PREFIX=${DEVICE_PREFIX:-/tmp/ldm_devdeps}
BUILD=${DEVICE_BUILD_DIR:-build-device}
JOBS=${DEVICE_JOBS:-$(nproc)}
BUDGET=${DEVICE_BUDGET_S:-$([ "$DRY" = 1 ] && echo 14400 || echo 520)}
SHARED=$ROOT/.devshared/shared
mkdir -p "$OUT"
OUT=$(cd "$OUT" && pwd)
T0=$(date +%s)
SUMMARY=$OUT/summary.txt
: > "$SUMMARY"

elapsed() { echo $(($(date +%s) - T0)); }
left() { echo $((BUDGET - $(elapsed))); }
note() { echo "[$(elapsed) s] $*" | tee -a "$SUMMARY"; }
# run_step NAME LOG MIN_SECONDS CMD...: runs CMD with the time left (if at least MIN_SECONDS),
# output appended to LOG; notes the exit status.
run_step() {
  local name=$1 log=$2 min=$3
  shift 3
  local t=$(left)
  if ((t < min)); then
    note "$name: SKIPPED (only ${t} s of the budget left, needs ${min})"
    return 1
  fi
  note "$name: start (up to ${t} s)"
  local s=$(date +%s)
  timeout --kill-after=10 "$t" "$@" >> "$log" 2>&1
  local rc=$?
  note "$name: exit $rc after $(($(date +%s) - s)) s$([ $rc = 124 ] && echo ' (TIMED OUT)')"
  return $rc
}

# ---- 0. what machine this is
{
  echo "ldm.cpp device check, $(date -u +%FT%TZ), commit $(git rev-parse --short HEAD 2>/dev/null || echo '?')"
  echo "dry run: $DRY"
  nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.max.sm --format=csv,noheader 2>&1 | sed 's/^/gpu: /'
  echo "nvcc: $(nvcc --version 2>&1 | tail -1)"
  echo "cmake: $(cmake --version 2>&1 | head -1); ninja: $(ninja --version 2>&1); g++: $(g++ --version 2>&1 | head -1)"
  echo "cpu: $(nproc) cores; python: $(python3 --version 2>&1)"
} >> "$SUMMARY" 2>&1
cat "$SUMMARY"

# ---- 1. dependencies, configure, build
cmake_args=(-S "$ROOT" -B "$ROOT/$BUILD" -DCMAKE_BUILD_TYPE=Release -DLDM_BUILD_LESSONS=OFF
            "-DLDM_SHARED_DIR=$SHARED")
command -v ninja > /dev/null && cmake_args+=(-G Ninja)
[ -n "${CUDA_ARCH:-}" ] && cmake_args+=("-DCMAKE_CUDA_ARCHITECTURES=$CUDA_ARCH")
if ls .devdeps/*.deb > /dev/null 2>&1; then
  rm -rf "$PREFIX"
  mkdir -p "$PREFIX"
  for f in .devdeps/*.deb; do dpkg -x "$f" "$PREFIX"; done
  P=$PREFIX/usr
  LIB=$P/lib/x86_64-linux-gnu
  rm -f "$LIB/libstb.so"  # link stb statically (libstb.a): nothing to find at run time
  export LD_LIBRARY_PATH=$LIB${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}
  cmake_args+=("-DCMAKE_PREFIX_PATH=$P"
               "-DEigen3_DIR=$P/share/eigen3/cmake"
               "-Dnlohmann_json_DIR=$P/share/cmake/nlohmann_json"
               "-DCatch2_DIR=$P/lib/cmake/Catch2"
               "-Dbenchmark_DIR=$LIB/cmake/benchmark"
               "-DCMAKE_CXX_FLAGS=-isystem $P/include -isystem $P/include/stb"
               "-DCMAKE_CUDA_FLAGS=-isystem $P/include"
               "-DCMAKE_EXE_LINKER_FLAGS=-L$LIB"
               "-DCMAKE_BUILD_RPATH=$LIB")
  note "deps: unpacked $(ls .devdeps/*.deb | wc -l) .debs into $PREFIX"
else
  note "deps: no .devdeps/*.deb (run scripts/device_prepare.sh here first); trying the system's packages"
fi
[ -d "$SHARED/reference" ] || note "references: $SHARED/reference missing: the tests will skip their checks"

if ! run_step configure "$OUT/build.log" 10 cmake "${cmake_args[@]}"; then
  note "configure FAILED: see build.log"
  exit 1
fi
help=$(cmake --build "$BUILD" --target help 2>/dev/null)
targets=()
for t in ldm_cli bench_cuda; do grep -qE "(^|[ .])$t(:|$)" <<< "$help" && targets+=("$t"); done
targets+=($(grep -o 'test_cuda[A-Za-z0-9_]*' <<< "$help" | sort -u))
note "build targets: ${targets[*]}"
if [ -f "$BUILD/build.ninja" ]; then
  run_step build "$OUT/build.log" 30 ninja -C "$BUILD" -k 0 -j "$JOBS" "${targets[@]}"
else
  run_step build "$OUT/build.log" 30 make -C "$BUILD" -k -j "$JOBS" "${targets[@]}"
fi
grep -E "error|FAILED" "$OUT/build.log" | head -20 >> "$SUMMARY"

# ---- 2. the CUDA tests (exit 77 = Skipped without a GPU)
export LDM_SHARED=$SHARED
run_step tests "$OUT/tests.log" 30 ctest --test-dir "$BUILD" -R cuda -V --timeout 300
grep -E "tests passed|tests failed|Test +#[0-9]+:|\*\*\*|Skipped|Failed" "$OUT/tests.log" | grep -v "^[0-9]*: " \
  >> "$SUMMARY"

BENCH=$BUILD/bench/bench_cuda
if [ "$DRY" = 1 ]; then
  # where the headers of the carried packages came from (the prefix, not /usr)
  [ -f "$BUILD/build.ninja" ] && ninja -C "$BUILD" -t deps 2>/dev/null |
    grep -E "(Eigen/Core|nlohmann/json.hpp|catch2/catch.hpp|benchmark/benchmark.h|CLI/CLI.hpp|stb_image.h)$" |
    sed 's/^ *//' | sort -u | sed 's/^/header used: /' >> "$SUMMARY"
  # one GPU benchmark: it must skip cleanly ("no CUDA device") where there is no GPU
  run_step bench-skip-check "$OUT/bench.log" 5 "$BENCH" \
    --benchmark_filter='^gpu/unet_step/fp16/manual_time$'
  grep -E "^gpu/" "$OUT/bench.log" | head -3 >> "$SUMMARY"
  note "dry run: stopping before the GPU benchmarks and the PyTorch peer"
  exit 0
fi

# ---- 3. our models on the GPU
if [ -x "$BENCH" ]; then
  run_step bench-models "$OUT/bench.log" 30 "$BENCH" --benchmark_filter='^gpu/(unet_step|txt2img|vae|clip)' \
    --benchmark_min_time=0.5 --benchmark_out="$OUT/bench_models.json" --benchmark_out_format=json
  grep -E "^gpu/" "$OUT/bench.log" >> "$SUMMARY"
else
  note "bench_cuda was not built: no GPU timings"
fi

# ---- 4. the PyTorch peer, eager (diffusers from the carried wheel)
peer_ok=0
if ls .whl/diffusers-*.whl > /dev/null 2>&1; then
  wheels=$(ls .whl/diffusers-*.whl .whl/importlib_metadata-*.whl 2>/dev/null)
  if python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/ldm_site \
      $wheels >> "$OUT/torch.log" 2>&1; then
    peer_ok=1
  else
    note "peer: installing the diffusers wheel failed (torch.log)"
  fi
else
  note "peer: no .whl/diffusers-*.whl (run scripts/device_prepare.sh): PyTorch peer skipped"
fi
if [ $peer_ok = 1 ]; then
  export PYTHONPATH=/tmp/ldm_site${PYTHONPATH:+:$PYTHONPATH} LDM_SHARED_DIR=$SHARED PYTHONUNBUFFERED=1
  run_step torch-eager "$OUT/torch.log" 30 python3 scripts/bench_torch_cuda.py --modes eager --dtypes fp16,fp32 \
    --json "$OUT/torch.jsonl"
  grep '"model"' "$OUT/torch.jsonl" 2>/dev/null | sed 's/^/torch: /' >> "$SUMMARY"
fi

# ---- 5. ops, every implementation, CPU beside
[ -x "$BENCH" ] && run_step bench-ops "$OUT/bench.log" 20 "$BENCH" --benchmark_filter='^(gpu|cpu)/op/' \
  --benchmark_min_time=0.2 --benchmark_out="$OUT/bench_ops.json" --benchmark_out_format=json

# ---- 6. the PyTorch peer, torch.compile(mode="reduce-overhead") (compiling takes minutes)
if [ $peer_ok = 1 ]; then
  run_step torch-compile "$OUT/torch.log" 60 python3 scripts/bench_torch_cuda.py --modes compile --dtypes fp16 \
    --json "$OUT/torch.jsonl"
  grep '"mode": "compile"' "$OUT/torch.jsonl" 2>/dev/null | sed 's/^/torch: /' >> "$SUMMARY"
fi
note "done"
