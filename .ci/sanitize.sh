#!/usr/bin/env bash
# AddressSanitizer + UndefinedBehaviorSanitizer job: a separate torch-free build (kernels/, the
# C API runtime, the IDX/Fashion-MNIST reader) with -DREPARQ_SANITIZE=ON (any report aborts:
# -fno-sanitize-recover=all), then its GoogleTest suites through ctest: test_kernels,
# test_c_api, test_data. The LibTorch suites (test_quant, test_vit, the CLI) are left out:
# Debian's LibTorch is not instrumented, so ASan would see only half of every allocation and
# its false reports would drown real ones (docs/RELIABILITY.md).
# Usage: .ci/sanitize.sh [BUILD_DIR=build-san]   env JOBS (default 2), NICE (default 10)
set -euo pipefail
cd "$(dirname "$0")/.."
build=${1:-build-san}
run() { nice -n "${NICE:-10}" "$@"; }
start=$(date +%s)
run cmake --no-warn-unused-cli -S . -B "$build" -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo \
  -DREPARQ_SANITIZE=ON -DREPARQ_WITH_TORCH=OFF -DREPARQ_BUILD_BENCH=OFF -DREPARQ_BUILD_EXAMPLES=OFF >/dev/null
run cmake --build "$build" -j "${JOBS:-2}" --target test_kernels test_c_api test_data
echo "sanitize: built in $(( $(date +%s) - start )) s"
export ASAN_OPTIONS=detect_leaks=1:abort_on_error=1:strict_string_checks=1:detect_stack_use_after_return=1
export UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1
cd "$build"
run ctest --output-on-failure -j "${JOBS:-2}" --timeout 900
echo "sanitize: ASan+UBSan suites passed in $(( $(date +%s) - start )) s"
