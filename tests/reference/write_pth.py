#!/usr/bin/env python3
"""Writes PyTorch checkpoints for tests/io/pth_test.ts (not part of vitssl).

Run with Debian's python3-torch (1.13): `/usr/bin/python3 tests/reference/write_pth.py OUT_DIR`.

Files written to OUT_DIR:
- official.pth.tar: a tiny ViT (D 24, depth 2, patch 4, image 8, 3 channels) in the official
  MoCo v3 layout of main_moco.py: {epoch, arch: "vit_small", state_dict: {module.base_encoder.*
  with the 3-layer projector as head.*, module.momentum_encoder.* (other values),
  module.predictor.*}, optimizer: AdamW's state_dict after one step, scaler}. pos_embed is the
  fixed 2D sin-cos table built as moco-v3's vits.py builds it.
- plain.pth: the same base encoder as a plain timm state dict, with a timm classifier head.
- half.pth: the same base encoder in float16, plus bf16, float64, int32 and int64 tensors.
- views.pth: tensors that share one storage: a transpose, a slice, a strided slice, a row, a
  scalar, an expanded (stride 0) view and a Parameter.
- legacy.pth: plain.pth's dict in the pre-1.6 (non-zip) format.
- namespace.pth: a checkpoint holding an argparse.Namespace.
- evil.pth: a pickle whose object reduces to os.system (never called by the reader).
- ref.json + ref.bin: for every tensor above (by "file:name"), its shape, dtype and its values
  as contiguous little-endian float32 (float64 for the float64 tensor, int64 for int64) at
  a byte offset in ref.bin.
"""

import argparse
import json
import os
import sys
from collections import OrderedDict

import torch

out = sys.argv[1]
torch.manual_seed(0)
D, DEPTH, P, IMG, C, MLP = 24, 2, 4, 8, 3, 96
GRID = IMG // P


def sincos(dim, grid, temperature=10000.0):
    # As moco-v3's VisionTransformerMoCo.build_2d_sincos_position_embedding.
    grid_w = torch.arange(grid, dtype=torch.float32)
    grid_h = torch.arange(grid, dtype=torch.float32)
    grid_w, grid_h = torch.meshgrid(grid_w, grid_h, indexing="ij")
    pos_dim = dim // 4
    omega = torch.arange(pos_dim, dtype=torch.float32) / pos_dim
    omega = 1.0 / (temperature**omega)
    out_w = torch.einsum("m,d->md", [grid_w.flatten(), omega])
    out_h = torch.einsum("m,d->md", [grid_h.flatten(), omega])
    pos = torch.cat([torch.sin(out_w), torch.cos(out_w), torch.sin(out_h), torch.cos(out_h)], dim=1)
    return torch.cat([torch.zeros([1, 1, dim]), pos[None]], dim=1)


def vit():
    r = lambda *s: torch.randn(*s) * 0.2
    sd = OrderedDict()
    sd["cls_token"] = r(1, 1, D)
    sd["pos_embed"] = sincos(D, GRID)
    sd["patch_embed.proj.weight"] = r(D, C, P, P)
    sd["patch_embed.proj.bias"] = r(D)
    for i in range(DEPTH):
        b = f"blocks.{i}."
        sd[b + "norm1.weight"] = 1 + r(D)
        sd[b + "norm1.bias"] = r(D)
        sd[b + "attn.qkv.weight"] = r(3 * D, D)
        sd[b + "attn.qkv.bias"] = r(3 * D)
        sd[b + "attn.proj.weight"] = r(D, D)
        sd[b + "attn.proj.bias"] = r(D)
        sd[b + "norm2.weight"] = 1 + r(D)
        sd[b + "norm2.bias"] = r(D)
        sd[b + "mlp.fc1.weight"] = r(MLP, D)
        sd[b + "mlp.fc1.bias"] = r(MLP)
        sd[b + "mlp.fc2.weight"] = r(D, MLP)
        sd[b + "mlp.fc2.bias"] = r(D)
    sd["norm.weight"] = 1 + r(D)
    sd["norm.bias"] = r(D)
    return sd


def mlp(num_layers, input_dim, mlp_dim, output_dim):
    # The parameters of moco-v3's builder._build_mlp (Linear without bias, BN, ReLU; last BN
    # without affine), by name.
    sd = OrderedDict()
    at = 0
    for layer in range(num_layers):
        d1 = input_dim if layer == 0 else mlp_dim
        d2 = output_dim if layer == num_layers - 1 else mlp_dim
        sd[f"{at}.weight"] = torch.randn(d2, d1)
        bn = at + 1
        if layer < num_layers - 1:
            sd[f"{bn}.weight"] = torch.rand(d2)
            sd[f"{bn}.bias"] = torch.randn(d2)
        sd[f"{bn}.running_mean"] = torch.randn(d2)
        sd[f"{bn}.running_var"] = torch.rand(d2)
        sd[f"{bn}.num_batches_tracked"] = torch.tensor(7)
        at += 3 if layer < num_layers - 1 else 2
    return sd


base = vit()
refs = OrderedDict()  # "file:name" -> tensor


def record(file, sd):
    for k, v in sd.items():
        refs[f"{file}:{k}"] = v


# official.pth.tar
state = OrderedDict()
for k, v in base.items():
    state["module.base_encoder." + k] = v
for k, v in mlp(3, D, 32, 16).items():
    state["module.base_encoder.head." + k] = v
momentum = vit()
for k, v in momentum.items():
    state["module.momentum_encoder." + k] = v
for k, v in mlp(3, D, 32, 16).items():
    state["module.momentum_encoder.head." + k] = v
for k, v in mlp(2, 16, 32, 16).items():
    state["module.predictor." + k] = v
state._metadata = OrderedDict([("", {"version": 1}), ("module", {"version": 1})])
params = [torch.nn.Parameter(v.clone()) for k, v in state.items() if v.is_floating_point()]
optimizer = torch.optim.AdamW(params, lr=1.5e-4, weight_decay=0.1)
for p in params:
    p.grad = torch.ones_like(p)
optimizer.step()
torch.save(
    {
        "epoch": 300,
        "arch": "vit_small",
        "state_dict": state,
        "optimizer": optimizer.state_dict(),
        "scaler": {"scale": 65536.0, "growth_factor": 2.0, "backoff_factor": 0.5,
                   "growth_interval": 2000, "_growth_tracker": 0},
    },
    f"{out}/official.pth.tar",
)
record("official", state)

# plain.pth: a timm state dict with a classifier
plain = OrderedDict(base)
plain["head.weight"] = torch.randn(10, D)
plain["head.bias"] = torch.randn(10)
torch.save(plain, f"{out}/plain.pth")
record("plain", plain)

# half.pth: float16 weights, and one tensor of each other dtype
half = OrderedDict((k, v.half()) for k, v in base.items())
half["extra.bf16"] = torch.randn(3, 5).bfloat16()
half["extra.f64"] = torch.randn(4, 2, dtype=torch.float64)
half["extra.i32"] = torch.tensor([[-3, 2, 2**31 - 1], [-(2**31), 0, 9]], dtype=torch.int32)
half["extra.i64"] = torch.tensor([-(2**40), 5, 2**62 + 3], dtype=torch.int64)
half["extra.half_t"] = torch.randn(5, 7).half().t()  # a non-contiguous float16 view
torch.save(half, f"{out}/half.pth")
record("half", half)

# views.pth: every tensor a view of one storage
whole = torch.randn(6, 10)
views = OrderedDict()
views["whole"] = whole
views["transposed"] = whole.t()
views["slice"] = whole[2:5, 3:7]
views["strided"] = whole[1::2, ::3]
views["row"] = whole[4]
views["scalar"] = whole[5, 9]
views["expanded"] = whole[0, :3].unsqueeze(0).expand(4, 3)  # stride 0
views["parameter"] = torch.nn.Parameter(whole[3])  # pickled by torch._utils._rebuild_parameter
torch.save(views, f"{out}/views.pth")
record("views", views)

torch.save(plain, f"{out}/legacy.pth", _use_new_zipfile_serialization=False)
torch.save({"args": argparse.Namespace(lr=0.1), "state_dict": plain}, f"{out}/namespace.pth")


class Evil:
    def __reduce__(self):
        return (os.system, (f"touch {out}/pwned",))


torch.save({"state_dict": plain, "x": Evil()}, f"{out}/evil.pth")

# References: contiguous values, float32 for float16/bfloat16 (exact), else the dtype itself.
index = {}
with open(f"{out}/ref.bin", "wb") as f:
    for key, t in refs.items():
        t = t.detach().contiguous()
        if t.dtype in (torch.float16, torch.bfloat16, torch.float32):
            raw, kind = t.float().numpy().astype("<f4").tobytes(), "f32"
        elif t.dtype == torch.float64:
            raw, kind = t.numpy().astype("<f8").tobytes(), "f64"
        else:
            raw, kind = t.long().numpy().astype("<i8").tobytes(), "i64"
        index[key] = {"shape": list(t.shape), "dtype": str(t.dtype).replace("torch.", ""),
                      "kind": kind, "offset": f.tell()}
        f.write(raw)
with open(f"{out}/ref.json", "w") as f:
    json.dump(index, f)
