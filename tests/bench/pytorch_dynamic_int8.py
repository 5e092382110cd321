#!/usr/bin/python3
"""PyTorch dynamic int8 yardstick for `reparq bench`: a DeiT-S-shaped ViT built from nn modules
(random weights), its nn.Linear layers quantized with torch.ao.quantization.quantize_dynamic
(qint8 weights, activations quantized per call) on the onednn engine. Prints the median ms per
image. Run with Debian's interpreter: /usr/bin/python3 (python3-torch 1.13).

    /usr/bin/python3 tests/bench/pytorch_dynamic_int8.py [--batch 1] [--threads 1] [--repeats 20] [--json]
"""
import argparse
import json
import statistics
import sys
import time

import torch
import torch.nn as nn


class Attention(nn.Module):
    def __init__(self, dim, heads):
        super().__init__()
        self.heads = heads
        self.scale = (dim // heads) ** -0.5
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x):
        b, n, d = x.shape
        qkv = self.qkv(x).reshape(b, n, 3, self.heads, d // self.heads).permute(2, 0, 3, 1, 4)
        q, k, v = qkv[0], qkv[1], qkv[2]
        a = (q @ k.transpose(-2, -1)) * self.scale
        a = a.softmax(dim=-1)
        return self.proj((a @ v).transpose(1, 2).reshape(b, n, d))


class Block(nn.Module):
    def __init__(self, dim, heads, hidden):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=1e-6)
        self.attn = Attention(dim, heads)
        self.norm2 = nn.LayerNorm(dim, eps=1e-6)
        self.fc1 = nn.Linear(dim, hidden)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x):
        x = x + self.attn(self.norm1(x))
        return x + self.fc2(self.act(self.fc1(self.norm2(x))))


class Vit(nn.Module):
    def __init__(self, image=224, patch=16, chans=3, dim=384, depth=12, heads=6, hidden=1536, classes=1000):
        super().__init__()
        self.proj = nn.Conv2d(chans, dim, patch, patch)
        tokens = (image // patch) ** 2 + 1
        self.cls_token = nn.Parameter(torch.randn(1, 1, dim) * 0.02)
        self.pos_embed = nn.Parameter(torch.randn(1, tokens, dim) * 0.02)
        self.blocks = nn.Sequential(*[Block(dim, heads, hidden) for _ in range(depth)])
        self.norm = nn.LayerNorm(dim, eps=1e-6)
        self.head = nn.Linear(dim, classes)

    def forward(self, x):
        x = self.proj(x).flatten(2).transpose(1, 2)
        x = torch.cat([self.cls_token.expand(x.shape[0], -1, -1), x], dim=1) + self.pos_embed
        x = self.norm(self.blocks(x))
        return self.head(x[:, 0])


def median_ms(model, x, repeats):
    with torch.no_grad():
        for _ in range(2):
            model(x)
        times = []
        for _ in range(repeats):
            t0 = time.perf_counter()
            model(x)
            times.append(time.perf_counter() - t0)
    return 1000.0 * statistics.median(times) / x.shape[0]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--batch", type=int, default=1)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--repeats", type=int, default=20)
    ap.add_argument("--fp32", action="store_true", help="also time the float model")
    ap.add_argument("--json", action="store_true")
    a = ap.parse_args()
    if "onednn" not in torch.backends.quantized.supported_engines:
        print("pytorch_dynamic_int8: this PyTorch has no onednn quantized engine", file=sys.stderr)
        return 2
    torch.backends.quantized.engine = "onednn"
    torch.set_num_threads(a.threads)
    torch.manual_seed(0)
    model = Vit().eval()
    x = torch.randn(a.batch, 3, 224, 224)
    out = {"torch": torch.__version__, "engine": "onednn", "batch": a.batch, "threads": a.threads}
    if a.fp32:
        out["fp32_ms_per_image"] = median_ms(model, x, a.repeats)
    q = torch.ao.quantization.quantize_dynamic(model, {nn.Linear}, dtype=torch.qint8)
    out["dynamic_int8_ms_per_image"] = median_ms(q, x, a.repeats)
    if a.json:
        print(json.dumps(out))
    else:
        print("PyTorch %s dynamic int8 (onednn), batch %d, %d thread(s): %.2f ms/image"
              % (torch.__version__, a.batch, a.threads, out["dynamic_int8_ms_per_image"]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
