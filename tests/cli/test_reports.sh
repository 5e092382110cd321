#!/usr/bin/env bash
# Reports a user reads (issue 5): quantize writes OUT.report.{md,json} with one row per site;
# eval with several models prints them side by side with agreement and KL against FP32 and
# writes --report files; train --init continues a checkpoint and records where it started.
# usage: test_reports.sh REPARQ_BINARY SOURCE_DIR
set -u
B=$1
SRC=$2
T=$(mktemp -d)
trap 'rm -rf "$T"' EXIT
fail=0
check() {   # check DESCRIPTION -- command...
  local what=$1
  shift 2
  if ! "$@"; then echo "FAIL: $what"; fail=$((fail + 1)); fi
}
M=$SRC/tests/data/tiny_vit.safetensors

"$B" quantize "$M" -o "$T/q4.safetensors" --bits W4A4 --calib 8 --threads 1 --quiet > "$T/q.out" 2>&1 ||
  { echo "FAIL: quantize"; cat "$T/q.out"; exit 1; }
check "report files next to the output" -- test -s "$T/q4.report.md" -a -s "$T/q4.report.json"
check "quantize names the report and the worst sites" -- grep -q "lowest output SQNR" "$T/q.out"
check "report JSON: schema, header, one row per site, finite numbers" -- python3 - "$T/q4.report.json" "$M" <<'PY'
import json, sys
r = json.load(open(sys.argv[1]))
assert r["schema"] == "reparq-quantize-1", r["schema"]
for k in ("tool", "commit", "cpu", "isa", "threads", "calib_ids", "recipe", "command"):
    assert k in r, k
assert len(r["calib_ids"]) == 8
sites = [s["site"] for s in r["sites"]]
depth = sum(1 for s in sites if s.endswith(".attn.softmax"))
assert depth >= 1 and len(sites) == 2 + 8 * depth, sites
assert sites[0] == "patch_embed" and sites[-1] == "head"
for s in r["sites"]:
    assert 0 <= s["clipped_pct"] <= 100, s
    assert s["out_sqnr_db"] is not None and s["out_sqnr_db"] > 0, s
    assert 0 < s["out_cosine"] <= 1.000001, s
PY
check "report Markdown has the per-site table" -- grep -q "| blocks.0.attn.softmax |" "$T/q4.report.md"

"$B" quantize "$M" -o "$T/mm.safetensors" --bits W4A4 --method minmax --calib 8 --threads 1 --quiet --no-report > /dev/null 2>&1
check "--no-report writes no report" -- test ! -e "$T/mm.report.md"
"$B" quantize "$M" -o "$T/v.safetensors" --bits W8A8 --calib 4 --threads 1 --quiet -v > "$T/v.out" 2>&1
check "-v prints the per-site table" -- grep -q "^| blocks.0.mlp.fc2 |" "$T/v.out"

"$B" eval "$M" "$T/q4.safetensors" "$T/mm.safetensors" --limit 200 --threads 1 --quiet --report "$T/cmp" > "$T/cmp.out" 2>&1 ||
  { echo "FAIL: eval compare"; cat "$T/cmp.out"; fail=$((fail + 1)); }
check "compare prints one row per model" -- test "$(grep -c '^| .*safetensors |' "$T/cmp.out")" -eq 3
check "compare report: agreement and KL" -- python3 - "$T/cmp.json" <<'PY'
import json, sys
r = json.load(open(sys.argv[1]))
assert r["schema"] == "reparq-eval-1"
rows = r["rows"]
assert len(rows) == 3 and rows[0]["engine"] == "fp32" and rows[1]["engine"] == "int"
assert rows[0]["agree_fp32"] == 100 and rows[0]["mean_kl"] == 0
for x in rows[1:]:
    assert 0 <= x["agree_fp32"] <= 100 and x["mean_kl"] >= 0 and x["images"] == 200
PY
out=$("$B" eval --compare "$M" 2>&1 >/dev/null); rc=$?
check "--compare with one model is a usage error" -- test "$rc" -eq 1
"$B" eval --compare "$M" "$T/q4.safetensors" --limit 20 --threads 1 --quiet > "$T/cmp2.out" 2>&1
check "eval --compare A B" -- test "$(grep -c '^| .*safetensors |' "$T/cmp2.out")" -eq 2
out=$("$B" eval "$T/q4.safetensors" "$T/mm.safetensors" --limit 10 2>&1 >/dev/null); rc=$?
check "compare without the float model is a usage error" -- test "$rc" -eq 1
check "... with a message" -- grep -q "float model" <<<"$out"

"$B" train --depth 1 --dim 16 --heads 2 --patch 7 --mlp-ratio 2 --epochs 1 --limit 256 --eval-limit 100 --threads 1 \
  --quiet -o "$T/t.safetensors" > /dev/null 2>&1 || { echo "FAIL: train"; fail=$((fail + 1)); }
"$B" train --init "$T/t.safetensors" --epochs 1 --limit 256 --eval-limit 100 --threads 1 --quiet -o "$T/t2.safetensors" \
  > /dev/null 2>&1 || { echo "FAIL: train --init"; fail=$((fail + 1)); }
check "train --init records the checkpoint it continued" -- sh -c "\"$B\" inspect \"$T/t2.safetensors\" | grep -q 'init.train.command'"
out=$("$B" train --init "$T/t.safetensors" --depth 3 -o "$T/t3.safetensors" 2>&1 >/dev/null); rc=$?
check "train --init with --depth is a usage error" -- test "$rc" -eq 1 -a ! -e "$T/t3.safetensors"

[ $fail -eq 0 ] && echo "reports: all checks passed"
exit $fail
