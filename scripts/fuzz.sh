#!/usr/bin/env bash
# Builds the libFuzzer targets of fuzz/ (clang, ASan + UBSan, in build-fuzz/) and runs each for a
# set time, from the seed corpus in fuzz/corpus/<target>/ plus what earlier runs found
# (build-fuzz/corpus/<target>/, kept, so longer runs build on shorter ones).
#
#   scripts/fuzz.sh [seconds-per-target] [targets...]     e.g. scripts/fuzz.sh 600; scripts/fuzz.sh 30 image config
#
# FUZZ_RUNS=N runs N inputs per target instead of a time, FUZZ_SEED=S fixes libFuzzer's seed (a new
# one per run otherwise). CI sets both and starts from the committed corpus only, so that its run
# is the same on every machine and a finding there is reproducible here; open-ended search for new
# bugs is a developer's long run (scripts/fuzz.sh 600).
#
# Prints per target libFuzzer's final stats (executions, exec/s, corpus) and, for a finding, the
# sanitizer's summary and the input that caused it (build-fuzz/findings/<target>/crash-*, re-run it
# with build-fuzz/fuzz/fuzz_<target> FILE). Exits non-zero when any target found something.
set -euo pipefail
cd "$(dirname "$0")/.."
seconds=${1:-60}
shift || true
targets=("$@")
if ((${#targets[@]} == 0)); then
  for f in fuzz/fuzz_*.cpp; do t=${f#fuzz/fuzz_}; targets+=("${t%.cpp}"); done
fi

cmake -S . -B build-fuzz -G Ninja -DCMAKE_CXX_COMPILER=clang++ -DCMAKE_BUILD_TYPE=RelWithDebInfo -DLDM_FUZZ=ON \
  -DLDM_CUDA=OFF -DLDM_BUILD_TESTS=OFF -DLDM_BUILD_BENCH=OFF -DLDM_BUILD_LESSONS=OFF >/dev/null
cmake --build build-fuzz -j "$(nproc)" --target "${targets[@]/#/fuzz_}"

# One thread: the inputs are small, and OpenMP's pool only slows each execution down.
export OMP_NUM_THREADS=1
export ASAN_OPTIONS=${ASAN_OPTIONS:-detect_leaks=1:print_stacktrace=1}
export UBSAN_OPTIONS=${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1}

budget=(-max_total_time="$seconds")
what="${seconds} s"
if [[ -n ${FUZZ_RUNS:-} ]]; then budget=(-runs="$FUZZ_RUNS"); what="$FUZZ_RUNS runs"; fi
[[ -n ${FUZZ_SEED:-} ]] && budget+=(-seed="$FUZZ_SEED") && what+=", seed $FUZZ_SEED"

failed=()
for t in "${targets[@]}"; do
  corpus=build-fuzz/corpus/$t
  if [[ -n ${FUZZ_RUNS:-} ]]; then corpus=build-fuzz/corpus-runs/$t; rm -rf "$corpus"; fi  # the committed seeds only
  findings=build-fuzz/findings/$t log=build-fuzz/fuzz_$t.log
  # Where the target writes each input as a file: its own folder, so runs of other targets beside it are not disturbed.
  export TMPDIR=$PWD/build-fuzz/tmp/$t
  mkdir -p "$corpus" "$findings" "$TMPDIR"
  echo "== fuzz_$t: $what"
  dict=()
  [[ -f fuzz/$t.dict ]] && dict=(-dict="fuzz/$t.dict")  # the format's words, for the fuzzer to splice in
  # -timeout: an input taking 30 s (sanitized) is a hang; -rss_limit_mb: also the largest single malloc.
  if build-fuzz/fuzz/fuzz_"$t" "${budget[@]}" -print_final_stats=1 -timeout=30 -rss_limit_mb=2048 \
      "${dict[@]}" -artifact_prefix="$findings/" "$corpus" fuzz/corpus/"$t" >"$log" 2>&1; then
    status=ok
  else
    status=FINDING
    failed+=("$t")
  fi
  grep -E '^stat::(number_of_executed_units|average_exec_per_sec|new_units_added|peak_rss_mb)' "$log" | sed 's/^/   /'
  echo "   corpus: $(find "$corpus" -type f | wc -l) files; result: $status (log: $log)"
  if [[ $status != ok ]]; then
    grep -m1 -E '^(SUMMARY|==[0-9]+==ERROR)|deadly signal|uncaught exception|out-of-memory|timeout' "$log" | sed 's/^/   /' || true
    grep -E 'Test unit written to' "$log" | sed 's/^.*written to /   input: /' || true
  fi
  rm -rf "$TMPDIR"
done

if ((${#failed[@]})); then
  echo "fuzz: findings in ${failed[*]}"
  exit 1
fi
echo "fuzz: no findings (${#targets[@]} targets, $what each)"
