#!/usr/bin/env bash
# Atomic outputs (docs/RELIABILITY.md): `reparq quantize -o DIR/out.safetensors` is SIGKILLed
# midway, at several points of its run, while DIR/out.safetensors holds a previous valid output.
# After each kill the previous file must be byte-identical and DIR must hold nothing else (no
# partial output, no temporary file). A run that finishes before its kill must have replaced
# the file by a complete, loadable model. Also: two runs with the same seed write the same bytes.
# usage: test_kill.sh REPARQ_BINARY SOURCE_DIR
set -u
B=$1
SRC=$2
M=$SRC/tests/data/tiny_vit.safetensors
T=$(mktemp -d)
pid=
trap '[ -n "$pid" ] && kill -9 "$pid" 2>/dev/null; rm -rf "$T"' EXIT
fail=0
D=$T/out
mkdir -p "$D"
OUT=$D/out.safetensors

# The previous output: a W8A8 min-max model.
"$B" quantize "$M" -o "$OUT" --bits W8A8 --method minmax --calib 8 --seed 1 -q >/dev/null || { echo "FAIL: first quantize"; exit 1; }
cp "$OUT" "$T/prev.safetensors"
# Everything the first run left (the model and its reports): must stay exactly as it is.
snapshot() { (cd "$D" && ls -A | sort && md5sum -- * 2>/dev/null); }
before=$(snapshot)

# The killed runs: the full recipe (calibration with dual clipping and GPTQ) takes long enough to
# be killed in the middle. `reparq` re-execs itself once at start (OMP_WAIT_POLICY, apps/main.cpp)
# through execv: same pid, so $! is the process to kill.
killed=0 finished=0
for delay in 0.2 0.5 1 1.5 2 3 4 6; do
  "$B" quantize "$M" -o "$OUT" --bits W4A4 --method reparq --calib 32 --seed 2 -q --threads 1 >/dev/null 2>&1 &
  pid=$!
  sleep "$delay"
  if kill -9 "$pid" 2>/dev/null; then
    wait "$pid" 2>/dev/null
    rc=$?
  else
    wait "$pid"
    rc=$?
  fi
  pid=
  if [ "$rc" -eq 137 ] && ! cmp -s "$OUT" "$T/prev.safetensors"; then
    # Killed after the new model was renamed into place (the last milliseconds of the run):
    # acceptable only if that model is whole; then treat the run as finished.
    if "$B" inspect "$OUT" --verify >/dev/null 2>&1; then
      rc=0
    else
      echo "FAIL: killed after ${delay} s: the output is neither the previous file nor a whole new model"; fail=$((fail + 1))
    fi
  fi
  if [ "$rc" -eq 137 ]; then
    killed=$((killed + 1))
  elif [ "$rc" -eq 0 ]; then
    finished=$((finished + 1))
    # The run completed: the new file must be whole (the eval loads and validates it).
    if ! "$B" inspect "$OUT" --verify >/dev/null 2>&1; then
      echo "FAIL: a run that finished left an invalid $OUT"; fail=$((fail + 1))
    fi
    rm -rf "$D" && mkdir -p "$D" && "$B" quantize "$M" -o "$OUT" --bits W8A8 --method minmax --calib 8 --seed 1 -q >/dev/null
    cp "$OUT" "$T/prev.safetensors"
    before=$(snapshot)
    continue
  else
    echo "FAIL: quantize exited with $rc (neither killed nor finished)"; fail=$((fail + 1))
  fi
  if [ "$(snapshot)" != "$before" ]; then
    echo "FAIL: after a run stopped at ${delay} s the directory changed; it holds: $(ls -A "$D")"; fail=$((fail + 1))
  fi
done
echo "killed $killed runs midway, $finished finished before their kill"
[ "$killed" -ge 3 ] || { echo "FAIL: fewer than 3 runs were killed midway (is quantize too fast to test?)"; fail=$((fail + 1)); }

# Same seed -> the same bytes. The file records its command line (metadata quantize.command),
# so the runs with 1 and 2 threads are compared without that one key.
q() { "$B" quantize "$M" -o "$OUT" --bits W4A4 --method reparq --calib 8 --seed 3 -q --no-report "$@" >/dev/null 2>&1 || { echo "FAIL: quantize $*"; fail=$((fail + 1)); }; }
q --threads 2; mv "$OUT" "$T/a.safetensors"
q --threads 2; mv "$OUT" "$T/b.safetensors"
q --threads 1; mv "$OUT" "$T/c.safetensors"
cmp -s "$T/a.safetensors" "$T/b.safetensors" || { echo "FAIL: two identical quantize runs wrote different bytes"; fail=$((fail + 1)); }
python3 - "$T/a.safetensors" "$T/c.safetensors" <<'PY' || { echo "FAIL: quantize with 1 and 2 threads wrote different models"; fail=$((fail + 1)); }
import json, struct, sys
def body(p):
    b = open(p, "rb").read()
    n = struct.unpack("<Q", b[:8])[0]
    h = json.loads(b[8:8 + n])
    h["__metadata__"].pop("quantize.command")
    return json.dumps(h, sort_keys=True), b[8 + n:]
sys.exit(body(sys.argv[1]) != body(sys.argv[2]))
PY

[ "$fail" -eq 0 ] && echo "PASS: previous output intact after every kill, no partial or temporary file left"
[ "$fail" -eq 0 ]
