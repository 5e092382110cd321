#!/usr/bin/env bash
# Long local fuzzing (docs/RELIABILITY.md, "Exec counts"): each harness runs RUNS executions
# (default 10^7) in a fast build, then every input of the corpus it grew is replayed under
# AddressSanitizer + UndefinedBehaviorSanitizer (the CI build of .ci/fuzz.sh).
#   fast build (build-fuzz-fast): -fsanitize=fuzzer,undefined, -O2, no comparison tracing
#     (-fno-sanitize-coverage=trace-cmp): 3-10x the executions per second of the CI build;
#     a crash, abort, UBSan report, timeout (> 10 s) or RSS above 2 GB fails the run.
#   replay (build-fuzz): the CI build; any ASan/UBSan report fails.
# Usage: scripts/fuzz_long.sh    env RUNS (10000000), TARGETS ("idx safetensors qmodel"),
#        NICE (19), WORKERS (1: with N, N processes share the corpus directory, each running
#        RUNS/N executions; their counts are summed). Prints one summary line per harness;
#        logs in build-fuzz-fast/long-<harness>[-<worker>].log.
set -euo pipefail
cd "$(dirname "$0")/.."
src=$PWD
runs=${RUNS:-10000000}
run() { nice -n "${NICE:-19}" "$@"; }
fast=build-fuzz-fast ci=build-fuzz
run env CC=clang-14 CXX=clang++-14 cmake --no-warn-unused-cli -S . -B "$fast" -G Ninja \
  -DCMAKE_BUILD_TYPE=Release -DCMAKE_CXX_FLAGS_RELEASE="-O2 -g1" \
  -DCMAKE_CXX_FLAGS="-fno-sanitize-coverage=trace-cmp" -DREPARQ_FUZZ=ON -DREPARQ_FUZZ_SANITIZERS=undefined \
  -DREPARQ_WITH_TORCH=OFF -DREPARQ_BUILD_TESTS=OFF -DREPARQ_BUILD_BENCH=OFF -DREPARQ_BUILD_EXAMPLES=OFF >/dev/null
run env CC=clang-14 CXX=clang++-14 cmake --no-warn-unused-cli -S . -B "$ci" -G Ninja \
  -DCMAKE_BUILD_TYPE=Release -DCMAKE_CXX_FLAGS_RELEASE="-O1 -g1" -DREPARQ_FUZZ=ON -DREPARQ_WITH_TORCH=OFF \
  -DREPARQ_BUILD_TESTS=OFF -DREPARQ_BUILD_BENCH=OFF -DREPARQ_BUILD_EXAMPLES=OFF >/dev/null
for b in "$fast" "$ci"; do
  run cmake --build "$b" -j "${JOBS:-1}" --target fuzz_safetensors fuzz_qmodel fuzz_idx >/dev/null
done
rm -rf "$fast/seeds"
python3 fuzz/make_seeds.py "$fast/seeds" "$src"
mkdir -p "$fast/artifacts"
export ASAN_OPTIONS=detect_leaks=1:abort_on_error=1
export UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1
status=0
for t in ${TARGETS:-idx safetensors qmodel}; do
  corpus=$fast/corpus/$t reg=$src/tests/data/fuzz-regressions/$t
  mkdir -p "$corpus"
  dirs=("$corpus" "$fast/seeds/$t")
  [ -d "$reg" ] && dirs+=("$reg")
  start=$(date +%s)
  workers=${WORKERS:-1} pids=() logs=()
  for w in $(seq 1 "$workers"); do
    log=$fast/long-$t.log
    [ "$workers" -gt 1 ] && log=$fast/long-$t-$w.log
    logs+=("$log")
    run "$fast/fuzz/fuzz_$t" -runs=$(( runs / workers )) -timeout=10 -rss_limit_mb=2048 -print_final_stats=1 \
      -artifact_prefix="$fast/artifacts/$t-$w-" "${dirs[@]}" >"$log" 2>&1 &
    pids+=($!)
  done
  failed=0
  for i in "${!pids[@]}"; do
    if ! wait "${pids[$i]}"; then
      echo "fuzz_long: FAIL $t (log: ${logs[$i]}; reproducer in $fast/artifacts/)"; tail -30 "${logs[$i]}"
      failed=1
    fi
  done
  if [ "$failed" -ne 0 ]; then status=1; continue; fi
  secs=$(( $(date +%s) - start ))
  execs=$(cat "${logs[@]}" | grep -o 'stat::number_of_executed_units: *[0-9]*' | grep -o '[0-9]*$' | awk '{s += $1} END {print s}')
  # Replay every corpus input under ASan+UBSan (one execution each).
  n=$(find "$corpus" -type f | wc -l)
  if ! find "$corpus" -type f -print0 | run xargs -0 -n 500 "$ci/fuzz/fuzz_$t" -runs=0 -rss_limit_mb=2048 \
       >"$fast/replay-$t.log" 2>&1; then
    echo "fuzz_long: FAIL $t: a corpus input trips ASan/UBSan (log: $fast/replay-$t.log)"; tail -30 "$fast/replay-$t.log"
    status=1; continue
  fi
  echo "fuzz_long: PASS $t: $execs executions in $secs s ($workers process(es), fast build), $n corpus inputs replayed under ASan+UBSan"
done
exit $status
