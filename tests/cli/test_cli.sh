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
  # REPARQ_CLI_LOG=FILE records every command's exit code and message (docs/RELIABILITY.md's table)
  [ -n "${REPARQ_CLI_LOG:-}" ] && printf '%s\t%s\t%s\n' "$rc" "${*#"$B "}" "$out" >> "$REPARQ_CLI_LOG"
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
expect 1 "--cls-bits" -- "$B" quantize "$M" -o "$T/o.st" --cls-bits 9
expect 1 "--col-shift" -- "$B" quantize "$M" -o "$T/o.st" --col-shift 2                           # U7
expect 1 "--ef-block" -- "$B" quantize "$M" -o "$T/o.st" --ef-block -1                            # U8
expect 1 "--cls-attn-dynamic" -- "$B" quantize "$M" -o "$T/o.st" --cls-attn-dynamic 2
expect 1 "choose one" -- "$B" quantize "$M" -o "$T/o.st" --cls-attn-dynamic 1 --cls-bits 8
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

# ---- Bad-input catalogue (docs/RELIABILITY.md): each line's tag is the table's id -----------
C=$SRC/tests/cli/corrupt_st.py
G=$SRC/tests/data/golden_vit_w8a8.safetensors   # a valid quantized model, 16x16 images
bad() { python3 "$C" "$@" || { echo "FAIL: corrupt_st.py $*"; fail=$((fail + 1)); }; }
printf 'P5\n16 16\n255\n' > "$T/img16.pgm"; head -c 256 /dev/zero >> "$T/img16.pgm"
# float model (safetensors reader, then Vit::load)
: > "$T/empty.st"
expect 2 "empty.st: empty file" -- "$B" eval "$T/empty.st" -q                                   # F1
bad "$M" "$T/hugehdr.st" header-len 1099511627776
expect 2 "hugehdr.st: header length 1099511627776 exceeds the limit" -- "$B" eval "$T/hugehdr.st" -q   # F2
bad "$M" "$T/shorthdr.st" header-len 999999
expect 2 "shorthdr.st: truncated: header says 999999 bytes" -- "$B" eval "$T/shorthdr.st" -q      # F3
bad "$M" "$T/notjson.st" header-json '{"a": [1, 2'
expect 2 "notjson.st: header is not valid JSON" -- "$B" eval "$T/notjson.st" -q                  # F4
bad "$M" "$T/overlap.st" overlap blocks.0.attn.qkv.weight
expect 2 "overlap.st: tensors .* overlap" -- "$B" eval "$T/overlap.st" -q                        # F5
bad "$M" "$T/hole.st" hole head.weight
expect 2 "hole.st: (hole in the data section|trailing bytes)" -- "$B" eval "$T/hole.st" -q       # F6
bad "$M" "$T/dtype.st" dtype blocks.0.norm1.weight I32
expect 2 "dtype.st: tensor 'blocks.0.norm1.weight' has dtype I32, expected a float type" -- "$B" eval "$T/dtype.st" -q   # F7
bad "$M" "$T/unkdtype.st" dtype head.bias F8
expect 2 "unkdtype.st: tensor 'head.bias': unknown dtype 'F8'" -- "$B" eval "$T/unkdtype.st" -q  # F8
bad "$M" "$T/shape.st" shape blocks.0.attn.proj.weight 1,1024
expect 2 "shape.st: .*blocks.0.attn.proj.weight.* shape" -- "$B" eval "$T/shape.st" -q           # F9
bad "$M" "$T/nbytes.st" shape head.bias 1000
expect 2 "nbytes.st: tensor 'head.bias': F32 x shape \[1000\] is 4000 bytes" -- "$B" eval "$T/nbytes.st" -q   # F10
bad "$M" "$T/missing.st" rename head.weight head.weights
expect 2 "missing.st: missing tensor 'head.weight'" -- "$B" eval "$T/missing.st" -q              # F11
bad "$M" "$T/noheads.st" meta num_heads -
expect 2 "noheads.st: metadata key 'num_heads' is missing" -- "$B" eval "$T/noheads.st" -q        # F12
bad "$M" "$T/nanw.st" set-f32 blocks.0.norm1.weight 3 nan
expect 2 "nanw.st: tensor 'blocks.0.norm1.weight' holds NaN" -- "$B" quantize "$T/nanw.st" -o "$T/o.st" -q   # F13
expect 2 "is a directory" -- "$B" eval "$T/emptydata" -q                                          # F14
# quantized model (load_quant_model: FORMAT.md's rules)
bad "$G" "$T/qnan.st" set-f32 blocks.0.attn.qkv.input.scale 0 nan
expect 2 "qnan.st: tensor 'blocks.0.attn.qkv.input.scale' holds NaN" -- "$B" run "$T/qnan.st" "$T/img16.pgm"   # Q1
bad "$G" "$T/qneg.st" set-f32 head.weight_scale 2 -0.5
expect 2 "qneg.st: tensor 'head.weight_scale' holds a scale <= 0" -- "$B" inspect "$T/qneg.st" --verify   # Q2
bad "$G" "$T/qzero.st" set-i32 blocks.1.mlp.fc1.input.zero_bits 0 300
expect 2 "qzero.st: 'blocks.1.mlp.fc1.input' zero point 300 is outside \[0, 255\]" -- "$B" run "$T/qzero.st" "$T/img16.pgm"   # Q3
bad "$G" "$T/qwzero.st" set-i32 blocks.0.attn.proj.weight_zero 5 200
expect 2 "qwzero.st: 'blocks.0.attn.proj.weight_zero' holds 200, outside \[-128, 127\]" -- "$B" run "$T/qwzero.st" "$T/img16.pgm"   # Q4
bad "$G" "$T/qabits.st" set-i32 blocks.0.attn.k.zero_bits 1 9
expect 2 "qabits.st: 'blocks.0.attn.k' has 9-bit activations; supported: 2..8" -- "$B" run "$T/qabits.st" "$T/img16.pgm"   # Q5
bad "$G" "$T/qwbits.st" set-i32 head.weight_bits 0 1
expect 2 "qwbits.st: 'head' has 1-bit weights; supported: 2..8" -- "$B" run "$T/qwbits.st" "$T/img16.pgm"   # Q6
bad "$G" "$T/qwbits6.st" set-i32 blocks.0.mlp.fc2.weight_bits 0 6
expect 2 "qwbits6.st: 'blocks.0.mlp.fc2.weight' holds -?[0-9]+, outside the 6-bit range" -- "$B" run "$T/qwbits6.st" "$T/img16.pgm"   # Q7
bad "$G" "$T/qkind.st" set-i32 blocks.1.attn.softmax.kind_bits 0 7
expect 2 "qkind.st: 'blocks.1.attn.softmax' has an unknown quantizer kind 7" -- "$B" run "$T/qkind.st" "$T/img16.pgm"   # Q8
bad "$G" "$T/qthr.st" set-f32 blocks.0.attn.softmax.thresholds 3 0.99
expect 2 "qthr.st: 'blocks.0.attn.softmax.thresholds' are not strictly decreasing" -- "$B" run "$T/qthr.st" "$T/img16.pgm"   # Q9
bad "$G" "$T/qdtype.st" dtype blocks.0.attn.qkv.weight U8
expect 2 "qdtype.st: tensor 'blocks.0.attn.qkv.weight' has dtype U8, expected I8" -- "$B" run "$T/qdtype.st" "$T/img16.pgm"   # Q10
bad "$G" "$T/qshape.st" shape blocks.0.mlp.fc1.weight 48,96
expect 2 "qshape.st: tensor 'blocks.0.mlp.fc1.weight' has shape \[48, 96\], expected \[96, 48\]" -- "$B" run "$T/qshape.st" "$T/img16.pgm"   # Q11
bad "$G" "$T/qformat.st" meta format reparq-quant-9
expect 2 "qformat.st: format 'reparq-quant-9' is not supported" -- "$B" run "$T/qformat.st" "$T/img16.pgm"   # Q12
bad "$G" "$T/qdepth.st" meta depth 3
expect 2 "qdepth.st: missing tensor 'blocks.2.norm1.weight'" -- "$B" run "$T/qdepth.st" "$T/img16.pgm"   # Q13
bad "$G" "$T/qdim.st" meta embed_dim 4x8
expect 2 "qdim.st: metadata key 'embed_dim' = '4x8' is not an integer" -- "$B" run "$T/qdim.st" "$T/img16.pgm"   # Q14
bad "$G" "$T/qpix.st" set-i32 patch_embed.input.zero_bits 0 3
expect 2 "qpix.st: 'patch_embed.input' must be 8-bit with zero point 0" -- "$B" run "$T/qpix.st" "$T/img16.pgm"   # Q15
bad "$G" "$T/qnometa.st" meta format -
expect 2 "qnometa.st: not a reparq quantized model" -- "$B" run "$T/qnometa.st" "$T/img16.pgm"   # Q16
# images for `reparq run`
printf 'P5\n10 12\n255\n' > "$T/img10.pgm"; head -c 120 /dev/zero >> "$T/img10.pgm"
expect 2 "img10.pgm: image is 10x12, the model expects 16x16" -- "$B" run "$G" "$T/img10.pgm"    # I1
printf 'P5\n16 16\n255\n' > "$T/short.pgm"; head -c 100 /dev/zero >> "$T/short.pgm"
expect 2 "short.pgm: PGM data truncated \(100 bytes, expected 256\)" -- "$B" run "$G" "$T/short.pgm"   # I2
printf 'P5\n16 16\n65535\n' > "$T/deep.pgm"; head -c 512 /dev/zero >> "$T/deep.pgm"
expect 2 "deep.pgm: PGM maxval 65535 is not supported" -- "$B" run "$G" "$T/deep.pgm"           # I3
printf '\x89PNG\r\n\x1a\nthis is not a png' > "$T/bad.png"
expect 2 "bad.png: cannot decode PNG" -- "$B" run "$G" "$T/bad.png"                               # I4
expect 2 "img-missing.pgm: cannot open" -- "$B" run "$G" "$T/img-missing.pgm"                     # I5
expect 2 "eval requires|expects 16x16|test set images are 28x28" -- "$B" eval "$G" -q --limit 10   # I6
# data sets (IDX reader)
mkidx() {  # mkidx DIR STEM MAGIC DIMS... : IDX with zero payload, gzip-compressed
  python3 - "$@" <<'PY'
import gzip, struct, sys, math
d, stem, magic, *dims = sys.argv[1:]
dims = [int(x) for x in dims]
data = struct.pack(">I", int(magic, 16)) + b"".join(struct.pack(">I", x) for x in dims) + bytes(math.prod(dims))
open(f"{d}/{stem}.gz", "wb").write(gzip.compress(data, mtime=0))
PY
}
mkdir -p "$T/d_magic" "$T/d_count" "$T/d_corrupt" "$T/d_trunc" "$T/d_isdir"
mkidx "$T/d_magic" t10k-images-idx3-ubyte 0801 3 28 28; mkidx "$T/d_magic" t10k-labels-idx1-ubyte 0801 3
expect 2 "d_magic/t10k-images-idx3-ubyte.gz: bad magic number 0x00000801, expected 0x00000803" -- "$B" eval "$M" --data-dir "$T/d_magic" -q   # D1
mkidx "$T/d_count" t10k-images-idx3-ubyte 0803 3 28 28; mkidx "$T/d_count" t10k-labels-idx1-ubyte 0801 5
expect 2 "d_count/t10k-labels-idx1-ubyte.gz: holds 5 labels but .* holds 3 images" -- "$B" eval "$M" --data-dir "$T/d_count" -q   # D2
mkidx "$T/d_corrupt" t10k-labels-idx1-ubyte 0801 3
{ printf '\x1f\x8b\x08\x00\x00\x00\x00\x00\x00\x03'; head -c 200 /dev/urandom; } > "$T/d_corrupt/t10k-images-idx3-ubyte.gz"
expect 2 "d_corrupt/t10k-images-idx3-ubyte.gz: (corrupt gzip data|truncated)" -- "$B" eval "$M" --data-dir "$T/d_corrupt" -q   # D3
mkidx "$T/d_trunc" t10k-images-idx3-ubyte 0803 3 28 28; mkidx "$T/d_trunc" t10k-labels-idx1-ubyte 0801 3
head -c 30 "$T/d_trunc/t10k-images-idx3-ubyte.gz" > "$T/d_trunc/x" && mv "$T/d_trunc/x" "$T/d_trunc/t10k-images-idx3-ubyte.gz"
expect 2 "d_trunc/t10k-images-idx3-ubyte.gz: truncated" -- "$B" eval "$M" --data-dir "$T/d_trunc" -q   # D4
mkdir -p "$T/d_isdir/t10k-images-idx3-ubyte.gz"; mkidx "$T/d_isdir" t10k-labels-idx1-ubyte 0801 3
expect 2 "d_isdir/t10k-images-idx3-ubyte.gz: is a directory" -- "$B" eval "$M" --data-dir "$T/d_isdir" -q   # D5
printf 'x' > "$T/d_file"
expect 2 "d_file: data directory not found" -- "$B" eval "$M" --data-dir "$T/d_file" -q           # D6
if [ "$(id -u)" -ne 0 ]; then   # root reads anything: this entry is only testable as a user
  mkdir -p "$T/d_noread"; mkidx "$T/d_noread" t10k-images-idx3-ubyte 0803 3 28 28; mkidx "$T/d_noread" t10k-labels-idx1-ubyte 0801 3
  chmod 000 "$T/d_noread"
  expect 2 "d_noread.*(not found|permission denied)" -- "$B" eval "$M" --data-dir "$T/d_noread" -q   # D7
  chmod 755 "$T/d_noread"
fi
# outputs and flags
expect 2 "no-such-dir/o.st: cannot write: directory .* does not exist" -- "$B" quantize "$M" -o "$T/no-such-dir/o.st" --calib 8 -q   # O1
expect 2 "emptydata: -o names a directory" -- "$B" quantize "$M" -o "$T/emptydata" --calib 8 -q   # O2
expect 1 "--bits 'W9A4'" -- "$B" quantize "$M" -o "$T/o.st" --bits W9A4                         # U1
expect 1 "--bits 'W1A1'" -- "$B" quantize "$M" -o "$T/o.st" --bits W1A1                         # U2
expect 1 "--isa=?.*avx9|unknown ISA 'avx9'" -- "$B" run "$G" "$T/img16.pgm" --isa avx9          # U3
expect 1 "--topk must be >= 1" -- "$B" run "$G" "$T/img16.pgm" --topk 0                          # U4
expect 1 "threads" -- "$B" run "$G" "$T/img16.pgm" --threads 1000                                 # U5
expect 1 "--softmax|softmax" -- "$B" quantize "$M" -o "$T/o.st" --softmax cubic --calib 8 -q     # U6
# calibrate (streaming statistics)
expect 1 "--calib must be positive" -- "$B" calibrate "$M" --calib 0 -q                            # C1
expect 1 "larger than the training set" -- "$B" calibrate "$M" --calib 60001 -q                  # C2
expect 1 "--batch must be >= 1" -- "$B" calibrate "$M" --batch 0 -q                                # C3
expect 1 "--percentile must be in" -- "$B" calibrate "$M" --percentile 30 -q                       # C4
expect 1 "--bins must be in" -- "$B" calibrate "$M" --bins 1 -q                                     # C5
expect 2 "truncated.safetensors" -- "$B" calibrate "$T/truncated.safetensors" -q                   # C6
expect 2 "no-such-dir/s.json: cannot write" -- "$B" calibrate "$M" -o "$T/no-such-dir/s.json" -q   # C7
# stress (the outlier-stressed variant of a float model)
expect 1 "--factor must be a finite number > 1" -- "$B" stress "$M" -o "$T/s.st" --factor 1 -q       # S1
expect 1 "--channels must be positive" -- "$B" stress "$M" -o "$T/s.st" --channels 0 -q            # S2
expect 1 "--channels 100000 exceeds the model width" -- "$B" stress "$M" -o "$T/s.st" --channels 100000 -q   # S3
expect 2 "truncated.safetensors" -- "$B" stress "$T/truncated.safetensors" -o "$T/s.st" -q         # S4
expect 2 "no-such-dir/s.st: cannot write" -- "$B" stress "$M" -o "$T/no-such-dir/s.st" -q         # S5
[ -e "$T/s.st" ] && { echo "FAIL: a failed stress left $T/s.st behind"; fail=$((fail + 1)); }
n=$((n + 1))   # the stressed model computes the same function: same predictions, KL ~ 0
if ! "$B" stress "$M" -o "$T/s.st" --channels 2 --factor 20 -q >/dev/null 2>&1; then
  echo "FAIL: stress of the tiny model failed"; fail=$((fail + 1))
elif ! "$B" eval "$M" "$T/s.st" --limit 200 --json -q 2>/dev/null | python3 -c '
import json, sys
r = json.load(sys.stdin)["rows"][1]
sys.exit(0 if r["agree_fp32"] == 100.0 and r["mean_kl"] < 1e-6 else 1)'; then
  echo "FAIL: the stressed tiny model does not compute the same function"; fail=$((fail + 1))
fi
rm -f "$T/s.st"
n=$((n + 1))
if ! "$B" calibrate "$M" --calib 8 --batch 3 -o "$T/s.json" -q >/dev/null 2>&1 || ! grep -q '"reparq-calib-stats-1"' "$T/s.json"; then
  echo "FAIL: calibrate of the tiny model did not write its statistics"; fail=$((fail + 1))
fi
rm -f "$T/q.st" "$T/qtrunc.st" "$T/s.json"
[ -e "$T/o.st" ] && { echo "FAIL: a failed quantize left $T/o.st behind"; fail=$((fail + 1)); }
ls "$T" | grep -q '\.tmp\.' && { echo "FAIL: temporary files left behind: $(ls "$T")"; fail=$((fail + 1)); }

echo "$((n - fail))/$n CLI error checks passed"
[ "$fail" -eq 0 ]
