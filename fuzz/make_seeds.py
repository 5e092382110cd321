#!/usr/bin/env python3
"""Seed corpora for the libFuzzer harnesses (standard library only).

usage: make_seeds.py OUT_DIR SOURCE_DIR
Writes OUT_DIR/{safetensors,qmodel,idx}/: small valid files made here (a minimal quantized ViT
at W8A8 and W4A4, a few plain safetensors, IDX image/label files plain and gzip-compressed)
plus the project's own test files (tests/data/*.safetensors). Deterministic.
"""
import gzip
import json
import os
import random
import shutil
import struct
import sys


def safetensors(tensors, metadata=None, align=64):
    """tensors: list of (name, dtype, shape, bytes). Same layout rules as kernels/ writes."""
    header = {}
    if metadata:
        header["__metadata__"] = metadata
    data = bytearray()
    pads = 0
    for i, (name, dt, shape, raw) in enumerate(tensors):
        header[name] = {"dtype": dt, "shape": shape, "data_offsets": [len(data), len(data) + len(raw)]}
        data += raw
        gap = (-len(data)) % align if align else 0
        if gap and i + 1 < len(tensors):
            header[f"__pad.{pads}"] = {"dtype": "U8", "shape": [gap], "data_offsets": [len(data), len(data) + gap]}
            pads += 1
            data += bytes(gap)
    text = json.dumps(header, separators=(",", ":")).encode()
    text += b" " * ((-(8 + len(text))) % 8)
    return struct.pack("<Q", len(text)) + text + bytes(data)


def f32(v):
    return struct.pack(f"<{len(v)}f", *v)


def i32(v):
    return struct.pack(f"<{len(v)}i", *v)


def qmodel(wbits, abits, rng, align=0, dim=8, heads=2, image=4, patch=2, mlp=8, classes=3, depth=1, kind=2, sbits=4, gelu_mul=False,
           levels=False, v6=False, v7=False):
    T = (image // patch) ** 2 + 1
    P = patch * patch
    lo, hi = -(1 << (wbits - 1)), (1 << (wbits - 1)) - 1
    ts = []

    def linear(p, out, inp, in_bits=abits, in_zero=None):
        w = [rng.randint(lo, hi) for _ in range(out * inp)]
        if wbits <= 4:
            row = (inp + 1) // 2
            packed = bytearray(out * row)
            for n in range(out):
                for k in range(inp):
                    nib = w[n * inp + k] & 15
                    packed[n * row + k // 2] |= nib << (4 * (k % 2))
            ts.append((p + ".weight", "U8", [out, row], bytes(packed)))
        else:
            ts.append((p + ".weight", "I8", [out, inp], struct.pack(f"<{out * inp}b", *w)))
        ts.append((p + ".weight_scale", "F32", [out], f32([0.01 + 0.001 * n for n in range(out)])))
        ts.append((p + ".weight_zero", "I32", [out], i32([0] * out)))
        ts.append((p + ".weight_bits", "I32", [1], i32([wbits])))
        ts.append((p + ".bias", "F32", [out], f32([0.1 * (n % 3 - 1) for n in range(out)])))
        act(p + ".input", in_bits, (1 << (in_bits - 1)) if in_zero is None else in_zero, 0.05, p != "patch_embed")
        if v6:  # format version 6: weight column shifts everywhere; error feedback in blocks at the blocks' Linears
            smax = 0
            while ((1 << wbits) - 1) << (smax + 1) <= 127:
                smax += 1
            ts.append((p + ".weight_shift", "U8", [inp], bytes([k % (smax + 1) for k in range(inp)])))
            if p.startswith("blocks."):
                ts.append((p + ".input.ef_damp", "F32", [1], f32([0.1])))
                ts.append((p + ".input.ef_block", "I32", [1], i32([max(1, inp // 2)])))

    def act(p, bits, zero, scale, table=True):
        ts.append((p + ".scale", "F32", [1], f32([scale])))
        ts.append((p + ".zero_bits", "I32", [2], i32([zero, bits])))
        if levels and table:  # format version 3: non-uniform levels, every 4th code
            Q = (1 << bits) - 1
            ts.append((p + ".lut", "U8", [Q + 1], bytes([min(Q, (c // 4) * 4) for c in range(Q + 1)])))

    linear("patch_embed", dim, P, in_bits=8, in_zero=0)
    ts.append(("cls_token", "F32", [1, 1, dim], f32([0.01 * i for i in range(dim)])))
    ts.append(("pos_embed", "F32", [1, T, dim], f32([0.001 * i for i in range(T * dim)])))
    for b in range(depth):
        p = f"blocks.{b}."
        ts.append((p + "norm1.weight", "F32", [dim], f32([1.0] * dim)))
        ts.append((p + "norm1.bias", "F32", [dim], f32([0.0] * dim)))
        linear(p + "attn.qkv", 3 * dim, dim)
        for n in "qkv":
            act(p + "attn." + n, abits, 1 << (abits - 1), 0.1)
        L = 1 << sbits
        ts.append((p + "attn.softmax.kind_bits", "I32", [2], i32([kind, sbits])))
        ts.append((p + "attn.softmax.params", "F32", [3], f32([1.0, 0.0, 1.0 / 255])))
        ts.append((p + "attn.softmax.thresholds", "F32", [L - 1], f32([2.0 ** (-0.5 - i) for i in range(L - 1)])))
        ts.append((p + "attn.softmax.lut", "U8", [L], bytes([max(0, 255 >> i) for i in range(L - 1)] + [0])))
        if v7:  # format version 7: the class row's post-Softmax with its own dynamic scale
            ts.append((p + "attn.softmax.cls_dynamic", "I32", [1], i32([1])))
        linear(p + "attn.proj", dim, dim)
        ts.append((p + "norm2.weight", "F32", [dim], f32([1.0] * dim)))
        ts.append((p + "norm2.bias", "F32", [dim], f32([0.0] * dim)))
        linear(p + "mlp.fc1", mlp, dim)
        linear(p + "mlp.fc2", dim, mlp)
        if gelu_mul:  # format version 2: the GELU output multiplier
            ts.append((p + "mlp.fc2.input_mul", "F32", [mlp], f32([0.5 + 0.25 * (n % 4) for n in range(mlp)])))
    ts.append(("norm.weight", "F32", [dim], f32([1.0] * dim)))
    ts.append(("norm.bias", "F32", [dim], f32([0.0] * dim)))
    linear("head", classes, dim)
    meta = {"format": "reparq-quant-7" if v7 else "reparq-quant-6" if v6 else "reparq-quant-3" if levels else "reparq-quant-2" if gelu_mul else "reparq-quant-1", "arch": "seed", "image_size": str(image), "patch_size": str(patch),
            "in_chans": "1", "embed_dim": str(dim), "depth": str(depth), "num_heads": str(heads),
            "mlp_hidden": str(mlp), "num_classes": str(classes), "ln_eps": "1e-06", "mean": "0.286",
            "std": "0.353"}
    return safetensors(ts, meta, align)


def idx(magic, dims, payload):
    return struct.pack(">I", magic) + b"".join(struct.pack(">I", d) for d in dims) + payload


def main():
    out, src = sys.argv[1], sys.argv[2]
    rng = random.Random(0)
    dirs = {k: os.path.join(out, k) for k in ("safetensors", "qmodel", "idx")}
    for d in dirs.values():
        os.makedirs(d, exist_ok=True)

    def put(kind, name, data):
        with open(os.path.join(dirs[kind], name), "wb") as f:
            f.write(data)

    # safetensors
    put("safetensors", "empty_header", safetensors([]))
    put("safetensors", "metadata_only", safetensors([], {"a": "1", "b": "x"}))
    put("safetensors", "all_dtypes", safetensors([
        ("f32", "F32", [2, 2], f32([1, 2, 3, 4])), ("f16", "F16", [3], bytes(6)), ("bf16", "BF16", [1], bytes(2)),
        ("i8", "I8", [5], bytes(5)), ("u8", "U8", [1, 1, 3], bytes(3)), ("i32", "I32", [2], i32([1, -1])),
        ("i64", "I64", [1], bytes(8)), ("scalar", "F32", [], f32([7])), ("empty", "F32", [0, 9], b"")],
        {"num_heads": "2", "ln_eps": "1e-6"}))
    put("safetensors", "unaligned", safetensors([("a", "F32", [3], f32([1, 2, 3])), ("b", "U8", [2], b"xy")], align=0))
    # quantized models: tiny W8A8 and W4A4 (int4 nibbles), different softmax kinds
    put("qmodel", "tiny_w8a8", qmodel(8, 8, rng, kind=2, sbits=4))
    put("qmodel", "tiny_w8a8_aligned", qmodel(8, 8, rng, align=64, kind=2, sbits=4))
    put("qmodel", "tiny_w4a4", qmodel(4, 4, rng, kind=1, sbits=3))
    put("qmodel", "tiny_w6a6_2blocks", qmodel(6, 6, rng, depth=2, kind=3, sbits=4, mlp=16))
    put("qmodel", "tiny_w3a8_uniform", qmodel(3, 8, rng, kind=0, sbits=8, heads=1))
    put("qmodel", "tiny_w4a4_gelu_mul", qmodel(4, 4, rng, kind=1, sbits=4, gelu_mul=True))
    put("qmodel", "tiny_w4a8_levels", qmodel(4, 8, rng, kind=2, sbits=4, levels=True))
    put("qmodel", "tiny_w3a4_shift_efblock", qmodel(3, 4, rng, kind=1, sbits=4, v6=True))
    put("qmodel", "tiny_w4a4_cls_dynamic", qmodel(4, 4, rng, kind=1, sbits=4, depth=2, v7=True))
    for name in sorted(os.listdir(os.path.join(src, "tests", "data"))):
        if name.endswith(".safetensors"):
            path = os.path.join(src, "tests", "data", name)
            shutil.copy(path, os.path.join(dirs["safetensors"], name))
            if name.startswith("golden_"):
                shutil.copy(path, os.path.join(dirs["qmodel"], name))
    for name in os.listdir(dirs["qmodel"]):  # every valid model is a valid safetensors file
        shutil.copy(os.path.join(dirs["qmodel"], name), os.path.join(dirs["safetensors"], "q_" + name))
    # IDX: first byte selects the expected magic (odd: images 0x803, even: labels 0x801)
    images = idx(0x803, [3, 2, 2], bytes(range(12)))
    labels = idx(0x801, [3], bytes([0, 9, 4]))
    put("idx", "images", b"\x01" + images)
    put("idx", "labels", b"\x00" + labels)
    put("idx", "images_gz", b"\x01" + gzip.compress(images, mtime=0))
    put("idx", "labels_gz", b"\x00" + gzip.compress(labels, mtime=0))
    put("idx", "images_28x28_gz", b"\x01" + gzip.compress(idx(0x803, [2, 28, 28], bytes(range(256)) * 6 + bytes(32)), mtime=0))


if __name__ == "__main__":
    main()
