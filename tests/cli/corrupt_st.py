#!/usr/bin/env python3
"""Writes a corrupted copy of a safetensors file, for the bad-input catalogue (docs/RELIABILITY.md).

usage: corrupt_st.py IN OUT MODE [ARGS...]

Modes (standard library only):
  header-len N            replace the 8-byte header length by N (rest unchanged)
  truncate N              keep the first N bytes
  set-f32 TENSOR I VALUE  overwrite element I of an F32 tensor ("nan", "inf", "-1", ...)
  set-i32 TENSOR I VALUE  overwrite element I of an I32 tensor
  set-u8 TENSOR I VALUE   overwrite byte I of a U8/I8 tensor
  meta KEY VALUE          set __metadata__[KEY] (VALUE "-" deletes the key)
  dtype TENSOR DT         change the declared dtype (byte size unchanged when DT has the same width)
  shape TENSOR D0,D1,...  change the declared shape (keep the element count to keep the bytes valid)
  rename TENSOR NEW       rename a tensor (the old name goes missing)
  overlap TENSOR          move TENSOR's data_offsets back by 4 bytes into its predecessor
  hole TENSOR             shrink TENSOR's range by its last element (bytes belonging to no tensor)
  header-json TEXT        replace the whole JSON header by TEXT (data section unchanged)
"""
import json
import math
import struct
import sys


def main():
    src, dst, mode, *args = sys.argv[1:]
    b = bytearray(open(src, "rb").read())
    n = struct.unpack("<Q", b[:8])[0]
    header = json.loads(b[8:8 + n])
    data = bytearray(b[8 + n:])
    raw_header = None

    def tensor(name):
        if name not in header:
            sys.exit(f"corrupt_st.py: no tensor {name!r} in {src}")
        return header[name]

    if mode == "header-len":
        b[:8] = struct.pack("<Q", int(args[0]))
        open(dst, "wb").write(b)
        return
    if mode == "truncate":
        open(dst, "wb").write(b[:int(args[0])])
        return
    if mode in ("set-f32", "set-i32", "set-u8"):
        t = tensor(args[0])
        i = int(args[1])
        fmt, size = {"set-f32": ("<f", 4), "set-i32": ("<i", 4), "set-u8": ("<B", 1)}[mode]
        v = float(args[2]) if mode == "set-f32" else int(args[2]) & (0xff if size == 1 else 0xffffffff)
        if mode == "set-i32" and v >= 1 << 31:
            v -= 1 << 32
        at = t["data_offsets"][0] + i * size
        data[at:at + size] = struct.pack(fmt, v)
    elif mode == "meta":
        md = header.setdefault("__metadata__", {})
        if args[1] == "-":
            md.pop(args[0], None)
        else:
            md[args[0]] = args[1]
    elif mode == "dtype":
        tensor(args[0])["dtype"] = args[1]
    elif mode == "shape":
        tensor(args[0])["shape"] = [int(x) for x in args[1].split(",") if x]
    elif mode == "rename":
        header[args[1]] = header.pop(args[0])
    elif mode == "overlap":
        t = tensor(args[0])
        t["data_offsets"] = [t["data_offsets"][0] - 4, t["data_offsets"][1] - 4]
    elif mode == "hole":
        t = tensor(args[0])
        width = {"F32": 4, "I32": 4, "I8": 1, "U8": 1, "F16": 2, "BF16": 2, "I64": 8}[t["dtype"]]
        t["shape"] = [t["shape"][0] - 1] + t["shape"][1:]
        t["data_offsets"][1] -= width * math.prod(t["shape"][1:])
    elif mode == "header-json":
        raw_header = args[0].encode()
    else:
        sys.exit(f"corrupt_st.py: unknown mode {mode!r}")

    text = raw_header if raw_header is not None else json.dumps(header).encode()
    open(dst, "wb").write(struct.pack("<Q", len(text)) + text + bytes(data))


if __name__ == "__main__":
    main()
