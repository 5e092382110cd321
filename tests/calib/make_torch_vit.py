#!/usr/bin/python3
"""Writes a small ViT built from PyTorch's own nn modules (nn.Conv2d, nn.LayerNorm,
nn.MultiheadAttention, nn.Linear, nn.GELU) in timm's tensor layout as safetensors, plus the
logits PyTorch computes for the first 16 Fashion-MNIST test images. reparq's C++ model must
load the file and reproduce the logits (tests/calib/test_vit.cpp).

usage: make_torch_vit.py OUT_DIR DATA_DIR
"""
import gzip, json, struct, sys
import numpy as np
import torch
from torch import nn

torch.manual_seed(123)
D, DEPTH, HEADS, HID, P, IMG, CLASSES = 48, 2, 3, 96, 4, 28, 10
MEAN, STD, EPS = 0.2860, 0.3530, 1e-6


class Block(nn.Module):
    def __init__(self):
        super().__init__()
        self.norm1 = nn.LayerNorm(D, eps=EPS)
        self.attn = nn.MultiheadAttention(D, HEADS, batch_first=True)
        self.norm2 = nn.LayerNorm(D, eps=EPS)
        self.fc1, self.act, self.fc2 = nn.Linear(D, HID), nn.GELU(), nn.Linear(HID, D)

    def forward(self, x):
        h = self.norm1(x)
        x = x + self.attn(h, h, h, need_weights=False)[0]
        return x + self.fc2(self.act(self.fc1(self.norm2(x))))


class ViT(nn.Module):
    def __init__(self):
        super().__init__()
        self.proj = nn.Conv2d(1, D, P, P)
        n = (IMG // P) ** 2 + 1
        self.cls_token = nn.Parameter(torch.randn(1, 1, D) * 0.5)
        self.pos_embed = nn.Parameter(torch.randn(1, n, D) * 0.5)
        self.blocks = nn.ModuleList([Block() for _ in range(DEPTH)])
        self.norm = nn.LayerNorm(D, eps=EPS)
        self.head = nn.Linear(D, CLASSES)

    def forward(self, x):
        x = self.proj(x).flatten(2).transpose(1, 2)
        x = torch.cat([self.cls_token.expand(x.shape[0], -1, -1), x], 1) + self.pos_embed
        for b in self.blocks:
            x = b(x)
        return self.head(self.norm(x)[:, 0])


def timm_state(m):
    s = {"patch_embed.proj.weight": m.proj.weight, "patch_embed.proj.bias": m.proj.bias,
         "cls_token": m.cls_token, "pos_embed": m.pos_embed,
         "norm.weight": m.norm.weight, "norm.bias": m.norm.bias,
         "head.weight": m.head.weight, "head.bias": m.head.bias}
    for i, b in enumerate(m.blocks):
        p = f"blocks.{i}."
        s.update({p + "norm1.weight": b.norm1.weight, p + "norm1.bias": b.norm1.bias,
                  p + "attn.qkv.weight": b.attn.in_proj_weight, p + "attn.qkv.bias": b.attn.in_proj_bias,
                  p + "attn.proj.weight": b.attn.out_proj.weight, p + "attn.proj.bias": b.attn.out_proj.bias,
                  p + "norm2.weight": b.norm2.weight, p + "norm2.bias": b.norm2.bias,
                  p + "mlp.fc1.weight": b.fc1.weight, p + "mlp.fc1.bias": b.fc1.bias,
                  p + "mlp.fc2.weight": b.fc2.weight, p + "mlp.fc2.bias": b.fc2.bias})
    return {k: v.detach().float().contiguous().numpy() for k, v in s.items()}


def save_safetensors(path, tensors, meta):
    header, off, blobs = {"__metadata__": meta}, 0, []
    for k, a in tensors.items():
        b = a.tobytes()
        header[k] = {"dtype": "F32", "shape": list(a.shape), "data_offsets": [off, off + len(b)]}
        blobs.append(b)
        off += len(b)
    h = json.dumps(header).encode()
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(h)) + h + b"".join(blobs))


def main():
    out, data = sys.argv[1], sys.argv[2]
    m = ViT().eval()
    with torch.no_grad():  # random but non-trivial norms and biases
        for n, p in m.named_parameters():
            if "norm" in n or n.endswith("bias"):
                p.add_(torch.randn_like(p) * 0.1)
    with gzip.open(f"{data}/t10k-images-idx3-ubyte.gz") as f:
        raw = f.read()
    px = np.frombuffer(raw, np.uint8, offset=16)[: 16 * IMG * IMG].reshape(16, 1, IMG, IMG)
    x = (torch.from_numpy(px.astype(np.float32)) / 255.0 - MEAN) / STD
    with torch.no_grad():
        logits = m(x).numpy()
    meta = {"num_heads": str(HEADS), "ln_eps": str(EPS), "mean": str(MEAN), "std": str(STD), "arch": "torch-nn"}
    save_safetensors(f"{out}/torch_vit.safetensors", timm_state(m), meta)
    save_safetensors(f"{out}/torch_vit_logits.safetensors", {"logits": logits.astype(np.float32)}, {})


if __name__ == "__main__":
    main()
