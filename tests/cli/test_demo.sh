#!/usr/bin/env bash
# A reduced `reparq demo` end to end (issue 5 acceptance): on the tiny test model, 300 test
# images, W8A8 and W4A4 with both recipes; checks the table files parse and every number is
# inside its range (accuracies in [0, 100], W8A8 executor close to the simulation, files smaller
# than FP32, speed-up positive).
# usage: test_demo.sh REPARQ_BINARY SOURCE_DIR
set -u
B=$1
SRC=$2
T=$(mktemp -d)
trap 'rm -rf "$T"' EXIT
"$B" demo --model "$SRC/tests/data/tiny_vit.safetensors" --limit 300 --sim-limit 300 --bits W8A8 W4A4 \
  --threads 1 --quiet --out-dir "$T/demo" > "$T/out.txt" 2>&1 || { echo "FAIL: demo exited $?"; cat "$T/out.txt"; exit 1; }
grep -q "wrote $T/demo/report.md" "$T/out.txt" || { echo "FAIL: demo does not name its output"; cat "$T/out.txt"; exit 1; }
python3 - "$T/demo" <<'PY' || exit 1
import json, os, sys
d = sys.argv[1]
r = json.load(open(os.path.join(d, "report.json")))
assert r["schema"] == "reparq-demo-1", r["schema"]
rows = r["rows"]
assert [x["bits"] for x in rows] == ["FP32", "W8A8", "W8A8", "W4A4", "W4A4"], [x["bits"] for x in rows]
fp = rows[0]
for x in rows:
    assert 0 <= x["top1"] <= 100 and 0 <= x["agree_fp32"] <= 100, x
    assert x["ms"] > 0 and x["speedup"] > 0 and x["bytes"] > 0, x
for x in rows[1:]:
    assert os.path.isfile(x["file"]), x["file"]
    assert x["bytes"] < fp["bytes"], x
    assert abs(x["drop"] - (fp["top1"] - x["top1"])) < 1e-9, x
    assert 0 <= x["agree_sim"] <= 100, x
w8 = [x for x in rows if x["bits"] == "W8A8" and x["method"] == "reparq"][0]
assert w8["agree_sim"] >= 97, w8          # integer executor vs simulation at 8 bits
assert w8["agree_fp32"] >= 90, w8
md = open(os.path.join(d, "report.md")).read()
assert md.count("\n| W") == 4, md
import xml.dom.minidom   # the plots: named in the report, well-formed SVG
assert sorted(os.path.basename(p) for p in r["plots"]) == ["accuracy.svg", "ranges.svg", "softmax.svg"], r["plots"]
for p in r["plots"]:
    assert xml.dom.minidom.parse(p).documentElement.tagName == "svg", p
print("demo report: %d rows, W8A8 reparq top-1 %.2f (FP32 %.2f), int vs sim %.1f %%" %
      (len(rows), w8["top1"], fp["top1"], w8["agree_sim"]))
PY
