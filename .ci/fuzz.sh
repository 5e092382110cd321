#!/usr/bin/env bash
# libFuzzer job: builds fuzz/ with clang (-DREPARQ_FUZZ=ON: -fsanitize=fuzzer,address,undefined,
# torch-free) in its own build directory, makes the seed corpora (fuzz/make_seeds.py + the
# regression inputs in tests/data/fuzz-regressions), replays the regressions, then runs each
# harness for SECONDS (default 45) on one core. Any crash, leak, timeout or sanitizer report
# fails the job and leaves the reproducer in BUILD/artifacts/.
# Usage: .ci/fuzz.sh [BUILD_DIR=build-fuzz]   env SECONDS_EACH (45), NICE (10), JOBS (2),
#        TARGETS ("safetensors qmodel idx")
set -euo pipefail
cd "$(dirname "$0")/.."
src=$PWD
build=${1:-build-fuzz}
secs=${SECONDS_EACH:-45}
run() { nice -n "${NICE:-10}" "$@"; }
for tool in clang-14 clang++-14; do
  command -v "$tool" >/dev/null || { echo "fuzz: $tool missing (apt-get install clang-14)" >&2; exit 1; }
done
start=$(date +%s)
run env CC=clang-14 CXX=clang++-14 cmake --no-warn-unused-cli -S . -B "$build" -G Ninja \
  -DCMAKE_BUILD_TYPE=Release -DCMAKE_CXX_FLAGS_RELEASE="-O1 -g1" -DREPARQ_FUZZ=ON -DREPARQ_WITH_TORCH=OFF \
  -DREPARQ_BUILD_TESTS=OFF -DREPARQ_BUILD_BENCH=OFF -DREPARQ_BUILD_EXAMPLES=OFF >/dev/null
run cmake --build "$build" -j "${JOBS:-2}" --target fuzz_safetensors fuzz_qmodel fuzz_idx
echo "fuzz: built in $(( $(date +%s) - start )) s"

rm -rf "$build/seeds"
python3 fuzz/make_seeds.py "$build/seeds" "$src"
mkdir -p "$build/corpus" "$build/artifacts"
export ASAN_OPTIONS=detect_leaks=1:abort_on_error=1
export UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1
status=0
for t in ${TARGETS:-safetensors qmodel idx}; do
  exe=$build/fuzz/fuzz_$t
  reg=$src/tests/data/fuzz-regressions/$t
  # 1. every past crash input must now be handled cleanly
  if [ -d "$reg" ] && [ -n "$(ls -A "$reg")" ]; then
    if ! run "$exe" -runs=0 "$reg"/* >"$build/regress-$t.log" 2>&1; then
      echo "fuzz: FAIL $t: a regression input crashes again (log: $build/regress-$t.log)"; tail -30 "$build/regress-$t.log"; status=1; continue
    fi
  fi
  # 2. a bounded run: the corpus kept between runs in $build/corpus/$t, seeds and regressions read-only
  mkdir -p "$build/corpus/$t"
  dirs=("$build/corpus/$t" "$build/seeds/$t")
  [ -d "$reg" ] && dirs+=("$reg")
  if run "$exe" -max_total_time="$secs" -timeout=10 -rss_limit_mb=2048 -print_final_stats=1 \
       -artifact_prefix="$build/artifacts/$t-" "${dirs[@]}" >"$build/fuzz-$t.log" 2>&1; then
    echo "fuzz: PASS $t: $(grep -o 'stat::number_of_executed_units: *[0-9]*' "$build/fuzz-$t.log" | grep -o '[0-9]*$') runs in ${secs} s"
  else
    echo "fuzz: FAIL $t (log: $build/fuzz-$t.log; reproducer in $build/artifacts/)"; tail -40 "$build/fuzz-$t.log"; status=1
  fi
done
echo "fuzz: done in $(( $(date +%s) - start )) s"
exit $status
