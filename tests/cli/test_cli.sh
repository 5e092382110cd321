#!/usr/bin/env bash
# Error paths a user can hit from the CLI: each must print one clear line naming the file or
# flag and the problem, exit with the documented code, and leave no output file behind.
# usage: test_cli.sh REPARQ_BINARY SOURCE_DIR
set -u
B=$1
SRC=$2
T=$(mktemp -d)
trap 'rm -rf "$T"' EXIT
fail=0
n=0

# expect CODE PATTERN -- command...
expect() {
  local code=$1 pat=$2
  shift 3
  n=$((n + 1))
  local out rc
  out=$("$@" 2>&1 >/dev/null)
  rc=$?
  if [ "$rc" -ne "$code" ]; then
    echo "FAIL [$*]: exit $rc, expected $code; stderr: $out"
    fail=$((fail + 1))
  elif ! grep -qiE -- "$pat" <<<"$out"; then
    echo "FAIL [$*]: stderr does not match /$pat/: $out"
    fail=$((fail + 1))
  elif grep -q "Segmentation\|Aborted\|terminate called" <<<"$out"; then
    echo "FAIL [$*]: crashed: $out"
    fail=$((fail + 1))
  fi
}

M=$SRC/tests/data/tiny_vit.safetensors
[ -f "$M" ] || { echo "missing $M"; exit 1; }
printf 'not a safetensors file at all' > "$T/garbage.safetensors"
head -c 100 "$M" > "$T/truncated.safetensors"
mkdir -p "$T/emptydata"

expect 1 "unknown|extra|not expected|could not be matched" -- "$B" quantize "$M" -o "$T/o.st" --no-such-flag
expect 1 "subcommand|required" -- "$B"
expect 1 "--bits 'W0A4'" -- "$B" quantize "$M" -o "$T/o.st" --bits W0A4
expect 1 "--bits 'W9A8'" -- "$B" quantize "$M" -o "$T/o.st" --bits W9A8
expect 1 "not of the form" -- "$B" quantize "$M" -o "$T/o.st" --bits 44
expect 1 "unknown --method 'nope'" -- "$B" quantize "$M" -o "$T/o.st" --method nope
expect 1 "--calib must be positive" -- "$B" quantize "$M" -o "$T/o.st" --calib 0 -q
expect 1 "larger than the training set" -- "$B" quantize "$M" -o "$T/o.st" --calib 60001 -q
expect 2 "garbage.safetensors" -- "$B" eval "$T/garbage.safetensors" -q
expect 2 "truncated.safetensors" -- "$B" quantize "$T/truncated.safetensors" -o "$T/o.st" -q
expect 2 "does-not-exist" -- "$B" eval "$T/does-not-exist.safetensors" -q
expect 2 "emptydata.*(not found|missing|no such)" -- "$B" eval "$M" --data-dir "$T/emptydata" -q
expect 2 "data directory not found" -- "$B" eval "$M" --data-dir "$T/nope" -q
expect 1 "needs a quantized model" -- "$B" eval "$M" --engine int -q
expect 1 "threads" -- "$B" eval "$M" --threads 0 -q
# A valid quantized file, then the errors that need one.
n=$((n + 1))
if ! "$B" quantize "$M" -o "$T/q.st" --bits W8A8 --method minmax --calib 8 -q >/dev/null 2>&1; then
  echo "FAIL: quantize of the tiny model failed"; fail=$((fail + 1))
fi
expect 1 "--engine must be" -- "$B" eval "$T/q.st" --engine warp -q --limit 10
expect 1 "needs a float model" -- "$B" eval "$T/q.st" --engine fp32 -q --limit 10
expect 1 "--isa" -- "$B" eval "$T/q.st" --isa sse9 -q --limit 10
head -c 5000 "$T/q.st" > "$T/qtrunc.st"
expect 2 "qtrunc.st" -- "$B" eval "$T/qtrunc.st" -q
expect 2 "qtrunc.st" -- "$B" run "$T/qtrunc.st" test:0
expect 2 "garbage.safetensors" -- "$B" run "$T/q.st" "$T/garbage.safetensors"
expect 1 "test" -- "$B" run "$T/q.st" test:99999
rm -f "$T/q.st" "$T/qtrunc.st"
[ -e "$T/o.st" ] && { echo "FAIL: a failed quantize left $T/o.st behind"; fail=$((fail + 1)); }
ls "$T" | grep -q '\.tmp\.' && { echo "FAIL: temporary files left behind: $(ls "$T")"; fail=$((fail + 1)); }

echo "$((n - fail))/$n CLI error checks passed"
[ "$fail" -eq 0 ]
