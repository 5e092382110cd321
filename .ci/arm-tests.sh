#!/usr/bin/env bash
# Arm64 tests under qemu-user: cross-builds kernels/, the C API runtime, its example and the
# kernel tests for aarch64 (cmake/aarch64-linux-gnu.cmake), then runs them on three emulated
# CPUs so that every kernel path runs with real feature detection:
#   max         FEAT_DotProd + FEAT_I8MM  -> neoni8mm (the GEMM and executor tests loop over
#               every available ISA), then the C API under REPARQ_MAX_ISA=neondot/neon/scalar
#   cortex-a76  DotProd, no I8MM          -> neondot
#   cortex-a53  plain Advanced SIMD       -> neon
# The executor's logits must equal the x86-64 golden files (tests/data/golden_*) bit for bit.
# Needs: scripts/setup.sh --with-arm (g++-aarch64-linux-gnu, qemu-user; googletest sources).
# Usage: .ci/arm-tests.sh [BUILD_DIR=build-arm]
#        env JOBS (default 2), NICE (default 10), INSN_MODEL (see the end)
set -euo pipefail
cd "$(dirname "$0")/.."
build=${1:-build-arm}
jobs=${JOBS:-2}
run() { nice -n "${NICE:-10}" "$@"; }
start=$(date +%s)

for tool in aarch64-linux-gnu-g++ qemu-aarch64; do
  command -v "$tool" >/dev/null || { echo "arm-tests: $tool missing (scripts/setup.sh --with-arm)" >&2; exit 1; }
done

run cmake --no-warn-unused-cli -S . -B "$build" -G Ninja -DCMAKE_TOOLCHAIN_FILE=cmake/aarch64-linux-gnu.cmake \
  -DREPARQ_WITH_TORCH=OFF -DREPARQ_BUILD_BENCH=OFF >/dev/null
run cmake --build "$build" -j "$jobs" --target test_kernels test_c_api classify reparq_bench
echo "arm-tests: built in $(( $(date +%s) - start )) s"

qemu=(qemu-aarch64 -L /usr/aarch64-linux-gnu)
status=0
suite() {  # suite CPU CAP TEST [gtest filter]
  local cpu=$1 cap=$2 exe=$3 filter=${4:-*} t0
  t0=$(date +%s)
  if env ${cap:+REPARQ_MAX_ISA=$cap} QEMU_CPU="$cpu" nice -n "${NICE:-10}" "${qemu[@]}" \
       "$build/tests/$exe" --gtest_brief=1 --gtest_filter="$filter" >"$build/arm-$exe-$cpu-${cap:-best}.log" 2>&1; then
    echo "arm-tests: PASS $exe cpu=$cpu isa=${cap:-best} ($(( $(date +%s) - t0 )) s)"
  else
    echo "arm-tests: FAIL $exe cpu=$cpu isa=${cap:-best} (log: $build/arm-$exe-$cpu-${cap:-best}.log)"
    tail -30 "$build/arm-$exe-$cpu-${cap:-best}.log"
    status=1
  fi
}

# Full suites on the richest CPU; the GEMM and executor suites again under real detection of
# smaller CPUs and under ISA caps (the other suites do not depend on the ISA).
suite max "" test_kernels
suite max "" test_c_api
suite cortex-a76 "" test_kernels '*GemmIsa*:*IsaCap*:Executor.*'
suite cortex-a53 "" test_kernels '*GemmIsa*:*IsaCap*:Executor.*'
suite cortex-a53 "" test_c_api
# The cap end to end: the C API opens its executor with the capped ISA (best_isa()).
for cap in neondot neon scalar; do suite max "$cap" test_c_api; done

# Optional: guest instructions per inference for each ISA (qemu plugin scripts/qemu_insn_count.c;
# runs 0 and N inferences, one thread, and divides the difference), e.g.
#   INSN_MODEL=w8a8.safetensors .ci/arm-tests.sh
if [ -n "${INSN_MODEL:-}" ]; then
  gcc -O2 -shared -fPIC scripts/qemu_insn_count.c -o "$build/libinsncount.so"
  insns() {  # insns ISA RUNS
    REPARQ_MAX_ISA=$1 QEMU_CPU=max nice -n "${NICE:-10}" "${qemu[@]}" -plugin "$build/libinsncount.so" -d plugin \
      "$build/examples/reparq_bench" "$INSN_MODEL" "$2" 1 2>&1 | sed -n 's/.*insns: //p'
  }
  for isa in scalar neon neondot neoni8mm; do
    i0=$(insns $isa 0); i1=$(insns $isa 10)
    echo "arm-tests: $isa: $(( (i1 - i0) / 10 )) instructions per inference ($INSN_MODEL, batch 1, 1 thread)"
  done
fi

echo "arm-tests: $( [ $status -eq 0 ] && echo passed || echo FAILED ) in $(( $(date +%s) - start )) s"
exit $status
