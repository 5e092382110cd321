#!/usr/bin/env bash
# `reparq plot` end to end on the tiny model: the three SVGs exist, parse as XML (python3's
# minidom) and render (rsvg-convert, when installed: package librsvg2-bin); and its error
# paths give one clear line with the documented exit code.
# usage: test_plot.sh REPARQ_BINARY SOURCE_DIR
set -u
B=$1
SRC=$2
T=$(mktemp -d)
trap 'rm -rf "$T"' EXIT
fail=0
n=0
M=$SRC/tests/data/tiny_vit.safetensors

ok() { n=$((n + 1)); }
bad() { n=$((n + 1)); fail=$((fail + 1)); echo "FAIL: $*"; }

# expect CODE PATTERN -- command...
expect() {
  local code=$1 pat=$2
  shift 3
  n=$((n + 1))
  local out rc
  out=$("$@" 2>&1 >/dev/null)
  rc=$?
  if [ "$rc" -ne "$code" ]; then
    echo "FAIL [$*]: exit $rc, expected $code; stderr: $out"; fail=$((fail + 1))
  elif ! grep -qiE -- "$pat" <<<"$out"; then
    echo "FAIL [$*]: stderr does not match /$pat/: $out"; fail=$((fail + 1))
  elif [ "$(grep -vc '^Run with --help' <<<"$out")" -ne 1 ]; then
    echo "FAIL [$*]: more than one line: $out"; fail=$((fail + 1))
  fi
}

parses() {   # parses FILE: well-formed XML whose root is <svg>
  python3 -c 'import sys, xml.dom.minidom as m; d = m.parse(sys.argv[1]); sys.exit(d.documentElement.tagName != "svg")' "$1"
}

"$B" quantize "$M" -o "$T/q.st" --bits W4A4 --calib 8 --threads 1 -q >/dev/null 2>"$T/err" || bad "quantize: $(cat "$T/err")"
cat > "$T/results.json" <<'EOF'
{"schema": "reparq-ablation-1", "seeds": [0, 1], "test_images": 100, "runs": [
 {"model": "m", "label": "minmax W8A8", "recipe": {"method": "minmax", "wbits": 8, "abits": 8}, "seed": 0, "top1": 80.0, "fp32": 81.0},
 {"model": "m", "label": "minmax W4A4", "recipe": {"method": "minmax", "wbits": 4, "abits": 4}, "seed": 0, "top1": 10.0, "fp32": 81.0},
 {"model": "m", "label": "reparq W8A8", "recipe": {"method": "reparq", "wbits": 8, "abits": 8}, "seed": 0, "top1": 80.5, "fp32": 81.0},
 {"model": "m", "label": "reparq W8A8", "recipe": {"method": "reparq", "wbits": 8, "abits": 8}, "seed": 1, "top1": 80.7, "fp32": 81.0},
 {"model": "m", "label": "reparq W4A4", "recipe": {"method": "reparq", "wbits": 4, "abits": 4}, "seed": 0, "top1": 78.0, "fp32": 81.0},
 {"model": "m", "label": "W4A4 softmax log2", "recipe": {"method": "reparq", "wbits": 4, "abits": 4}, "seed": 0, "top1": 1.0, "fp32": 81.0}]}
EOF
if "$B" plot "$M" "$T/q.st" -o "$T/plots" --results "$T/results.json" --calib 8 --threads 1 -q >"$T/out" 2>"$T/err"; then
  ok
  for f in ranges softmax accuracy; do
    p=$T/plots/$f.svg
    if [ ! -s "$p" ]; then bad "$f.svg not written"; continue; fi
    if parses "$p"; then ok; else bad "$f.svg is not well-formed XML"; fi
    grep -q "wrote $p" "$T/out" && ok || bad "plot did not say it wrote $p"
    if command -v rsvg-convert >/dev/null; then
      if rsvg-convert "$p" -o "$T/$f.png" 2>"$T/rerr" && [ -s "$T/$f.png" ]; then ok; else bad "rsvg-convert $f.svg: $(cat "$T/rerr")"; fi
    fi
  done
  grep -q 'layer-wise quantizer range' "$T/plots/ranges.svg" && ok || bad "ranges.svg lacks the quantizer band"
  grep -q 'log-sqrt2' "$T/plots/softmax.svg" && ok || bad "softmax.svg lacks the log-sqrt2 levels"
  grep -q 'minmax: W4A4 10.00' "$T/plots/accuracy.svg" && ok || bad "accuracy.svg does not list the off-scale point"
  ls "$T/plots" | grep -q '\.tmp' && bad "temporary files left in $T/plots"
else
  bad "plot failed: $(cat "$T/err")"
fi
# Accuracy alone, and the default calibration images (those recorded in the quantized file).
"$B" plot --results "$T/results.json" -o "$T/acc" -q >/dev/null 2>"$T/err" && parses "$T/acc/accuracy.svg" && ok || bad "plot --results alone: $(cat "$T/err")"
"$B" plot "$M" "$T/q.st" -o "$T/own" -q >/dev/null 2>"$T/err" && parses "$T/own/ranges.svg" && ok || bad "plot with the file's calibration ids: $(cat "$T/err")"

printf 'not json' > "$T/garbage.json"
printf '{"schema": "something-else", "runs": []}' > "$T/other.json"
printf '{"schema": "reparq-ablation-1", "runs": [{"model": "m"}]}' > "$T/partial.json"
printf '{"schema": "reparq-ablation-1", "runs": []}' > "$T/empty.json"
expect 1 "MODEL.*QUANT_MODEL|--results" -- "$B" plot -o "$T/x"
expect 1 "both MODEL" -- "$B" plot "$M" -o "$T/x"
expect 1 "required|--out" -- "$B" plot "$M" "$T/q.st"
expect 1 "QUANT_MODEL .*float model" -- "$B" plot "$M" "$M" -o "$T/x" -q
expect 1 "MODEL .*quantized file" -- "$B" plot "$T/q.st" "$T/q.st" -o "$T/x" -q
expect 1 "--block 5: the model has blocks 0..0" -- "$B" plot "$M" "$T/q.st" -o "$T/x" --block 5 -q
expect 1 "--site must be" -- "$B" plot "$M" "$T/q.st" -o "$T/x" --site norm3 -q
expect 2 "does not match" -- "$B" plot "$M" "$SRC/tests/data/golden_vit_w4a4.safetensors" -o "$T/x" -q
expect 2 "nope.safetensors" -- "$B" plot "$M" "$T/nope.safetensors" -o "$T/x" -q
expect 2 "garbage.json: not valid JSON" -- "$B" plot --results "$T/garbage.json" -o "$T/x" -q
expect 2 "other.json: not a reparq ablation result" -- "$B" plot --results "$T/other.json" -o "$T/x" -q
expect 2 "partial.json: run 1 lacks a field" -- "$B" plot --results "$T/partial.json" -o "$T/x" -q
expect 2 "empty.json: no method x bits runs" -- "$B" plot --results "$T/empty.json" -o "$T/x" -q
expect 2 "missing.json: cannot open" -- "$B" plot --results "$T/missing.json" -o "$T/x" -q
[ -e "$T/x/accuracy.svg" ] && bad "a failed plot left $T/x/accuracy.svg behind"

echo "$((n - fail))/$n plot checks passed"
[ "$fail" -eq 0 ]
