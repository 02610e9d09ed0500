#!/usr/bin/env python3
"""PyTorch reference of the MoCo v3 training step, for measuring only (not part of vitssl).

Implements the same step and workloads as `lib/bench/` (see lib/bench/workloads.ts) in plain
torch, so `deno task bench` can be compared with native PyTorch on the same CPU:

  both views through the online encoder (ViT + projector + predictor) with backward, the momentum
  encoder (ViT + projector) forward without gradient, ctr(q1, k2) + ctr(q2, k1), AdamW, and the
  EMA update of the momentum encoder. Inputs are pre-augmented float32 batches (two pairs of random
  views, alternated). `vit_small224` runs a backbone forward only on the CPU.

The ViT matches lib/model/vit.ts in its operations and shapes: conv patch embedding, class token,
fixed 2D sin-cos position embedding (of the same shape, but its values are the transpose of the
library's: see sincos_table; the values do not change what this script measures, the time),
pre-norm blocks (LayerNorm eps 1e-6, qkv with bias, exact GELU), final LayerNorm, class-token
pooling. Heads match the official `_build_mlp`: Linear without bias, BN, ReLU; the
last layer Linear -> BN without affine.

Run with Debian's python3-torch (1.13) and its OpenMP OpenBLAS (the faster of Debian's two, and
the anchor of issue #22), 2 threads; --bf16 for PyTorch's mixed precision (torch.autocast):

  apt-get install -y python3-torch libopenblas0-openmp
  update-alternatives --display libblas.so.3-x86_64-linux-gnu   # should point to openblas-openmp
  # where libopenblas0-pthread is installed too (priority 100 against 95), choose it yourself,
  # for both links (libblas.so.3 loads libopenblas.so.0, which would stay on the pthread build
  # and run float32 2-4x slower; the JSON line's "blas" lists what was loaded):
  update-alternatives --set libblas.so.3-x86_64-linux-gnu \
    /usr/lib/x86_64-linux-gnu/openblas-openmp/libblas.so.3
  update-alternatives --set libopenblas.so.0-x86_64-linux-gnu \
    /usr/lib/x86_64-linux-gnu/openblas-openmp/libopenblas.so.0
  /usr/bin/python3 tests/reference/moco_step_torch.py --workload small28 --threads 2 [--bf16]

`deno task bench --pytorch` runs it beside each workload, in both precisions.

It prints one JSON line per workload with the same field names as `deno task bench --json`, plus
the BLAS library actually loaded (read from /proc/self/maps) so a run on the reference BLAS is
visible.
"""

import argparse
import contextlib
import copy
import json
import math
import os
import resource
import statistics
import sys
import time

# PyTorch as its users run it: libgomp's default wait policy (its threads spin a while before they
# sleep), the faster on a quiet machine (BENCHMARKS.md, 2026-12-06: small28 on a Zen 4 ran about
# 15% slower in float32 and 28% slower with autocast under OMP_WAIT_POLICY=PASSIVE, which this
# script set until then). On a loaded machine the spinning threads fight the other processes: set
# OMP_WAIT_POLICY=PASSIVE there (the JSON line records it).
import torch  # noqa: E402
from torch import nn  # noqa: E402
import torch.nn.functional as F  # noqa: E402

HEADS = dict(hidden=1024, out_dim=256, temperature=0.2)
WORKLOADS = {
    "small28": dict(dim=128, depth=6, heads=4, patch=7, image=28, channels=1, batch=128,
                    cpu_mode="step", **HEADS),
    "tiny32": dict(dim=192, depth=12, heads=3, patch=4, image=32, channels=3, batch=64,
                   cpu_mode="step", **HEADS),
    "vit_small224": dict(dim=384, depth=12, heads=12, patch=16, image=224, channels=3, batch=32,
                         cpu_mode="forward", **HEADS),
}


def sincos_table(grid, dim, temperature=10000.0):
    """[grid*grid + 1, dim]: zero row for the class token, then 2D sin-cos rows.

    Not the library's table (sincosPosEmbedWithCls in lib/model/vit.ts, which is the official
    build_2d_sincos_position_embedding): this one is its transpose, rows and columns of the patch
    grid swapped. Patch (r, c) gets [sin(c w), cos(c w), sin(r w), cos(r w)] here, where the
    library gives it [sin(r w), cos(r w), sin(c w), cos(c w)]: row 1 + r*grid + c here equals the
    library's row 1 + c*grid + r. Swapping ox and oy in the concatenation would give the
    library's values; nothing depends on them (this script only measures time).
    """
    d = dim // 4
    omega = 1.0 / temperature ** (torch.arange(d, dtype=torch.float64) / d)
    ys, xs = torch.meshgrid(torch.arange(grid, dtype=torch.float64),
                            torch.arange(grid, dtype=torch.float64), indexing="ij")
    oy = ys.flatten()[:, None] * omega[None]
    ox = xs.flatten()[:, None] * omega[None]
    table = torch.cat([ox.sin(), ox.cos(), oy.sin(), oy.cos()], dim=1)
    return torch.cat([torch.zeros(1, dim, dtype=torch.float64), table]).float()


class Block(nn.Module):
    def __init__(self, dim, heads, mlp_ratio=4):
        super().__init__()
        self.heads = heads
        self.norm1 = nn.LayerNorm(dim, eps=1e-6)
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)
        self.norm2 = nn.LayerNorm(dim, eps=1e-6)
        self.fc1 = nn.Linear(dim, mlp_ratio * dim)
        self.fc2 = nn.Linear(mlp_ratio * dim, dim)

    def forward(self, x):
        B, T, D = x.shape
        hd = D // self.heads
        qkv = self.qkv(self.norm1(x)).reshape(B, T, 3, self.heads, hd).permute(2, 0, 3, 1, 4)
        q, k, v = qkv[0], qkv[1], qkv[2]
        attn = ((q @ k.transpose(-2, -1)) * hd ** -0.5).softmax(dim=-1)
        x = x + self.proj((attn @ v).transpose(1, 2).reshape(B, T, D))
        return x + self.fc2(F.gelu(self.fc1(self.norm2(x))))


class ViT(nn.Module):
    def __init__(self, dim, depth, heads, patch, image, channels, **_):
        super().__init__()
        self.patch_embed = nn.Conv2d(channels, dim, patch, stride=patch)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, dim))
        nn.init.normal_(self.cls_token, std=1e-6)
        self.register_buffer("pos_embed", sincos_table(image // patch, dim)[None])
        self.blocks = nn.ModuleList([Block(dim, heads) for _ in range(depth)])
        self.norm = nn.LayerNorm(dim, eps=1e-6)

    def forward(self, x):
        x = self.patch_embed(x).flatten(2).transpose(1, 2)
        x = torch.cat([self.cls_token.expand(x.shape[0], -1, -1), x], dim=1) + self.pos_embed
        for blk in self.blocks:
            x = blk(x)
        return self.norm(x)[:, 0]


def build_mlp(num_layers, in_dim, hidden, out_dim):
    layers = []
    for l in range(num_layers):
        d1 = in_dim if l == 0 else hidden
        d2 = out_dim if l == num_layers - 1 else hidden
        layers.append(nn.Linear(d1, d2, bias=False))
        if l < num_layers - 1:
            layers += [nn.BatchNorm1d(d2), nn.ReLU(inplace=True)]
        else:
            layers.append(nn.BatchNorm1d(d2, affine=False))
    return nn.Sequential(*layers)


def ctr(q, k, T):
    logits = F.normalize(q, dim=1) @ F.normalize(k, dim=1).t() / T
    labels = torch.arange(q.shape[0])
    return F.cross_entropy(logits, labels) * (2 * T)


def vit_flops(w):
    """Forward FLOPs per image, as lib/model/vit.ts vitFlops (a multiply-add counts 2)."""
    D, n = w["dim"], (w["image"] // w["patch"]) ** 2
    T, hidden = n + 1, 4 * w["dim"]
    patch = 2 * n * w["channels"] * w["patch"] ** 2 * D
    block = 2 * T * D * 3 * D + 2 * 2 * T * T * D + 2 * T * D * D + 2 * 2 * T * D * hidden
    return patch + w["depth"] * block


def step_flops(w, mode, B):
    """As lib/bench/workloads.ts stepFlops: online branch 3x forward, momentum branch 1x."""
    bb = vit_flops(w)
    if mode == "forward":
        return B * bb
    h, o, D = w["hidden"], w["out_dim"], w["dim"]
    proj = 2 * (D * h + h * h + h * o)
    pred = 2 * (o * h + h * o)
    return 2 * B * bb * 4 + 2 * B * (3 * (proj + pred) + proj) + 3 * 2 * (2 * B * B * o)


def loaded_blas():
    """Paths of the BLAS/LAPACK libraries mapped into this process."""
    libs = set()
    with open("/proc/self/maps") as f:
        for line in f:
            path = line.split()[-1]
            if any(s in path for s in ("blas", "lapack", "mkl")):
                libs.add(os.path.realpath(path))
    return sorted(libs)


def load_avg():
    try:
        return os.getloadavg()[0]
    except OSError:
        return None


def make_step(w, mode, B, seed, bf16=False):
    torch.manual_seed(seed)
    # bf16: PyTorch's mixed precision, torch.autocast around every forward (matrix products in
    # bf16, float32 weights, optimiser and gradients), as a PyTorch user trains on a CPU.
    cast = (lambda: torch.autocast("cpu", dtype=torch.bfloat16)) if bf16 else contextlib.nullcontext
    base = ViT(**w)
    if mode == "forward":
        base.eval()

        def fwd(x1, _x2):
            with torch.no_grad(), cast():
                return base(x1).float().sum().item()
        return fwd
    projector = build_mlp(3, w["dim"], w["hidden"], w["out_dim"])
    predictor = build_mlp(2, w["out_dim"], w["hidden"], w["out_dim"])
    online = nn.ModuleList([base, projector])
    momentum = copy.deepcopy(online)
    for p in momentum.parameters():
        p.requires_grad = False
    params = list(online.parameters()) + list(predictor.parameters())
    opt = torch.optim.AdamW(params, lr=1.5e-4 * B / 256, weight_decay=0.1)
    T, m = w["temperature"], 0.99

    def step(x1, x2):
        with torch.no_grad():
            for pm, po in zip(momentum.parameters(), online.parameters()):
                pm.mul_(m).add_(po, alpha=1 - m)
            with cast():
                k1 = momentum[1](momentum[0](x1))
                k2 = momentum[1](momentum[0](x2))
        with cast():
            q1 = predictor(projector(base(x1)))
            q2 = predictor(projector(base(x2)))
            loss = (ctr(q1, k2, T) + ctr(q2, k1, T)).float()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        return loss.item()
    return step


def bench(name, args):
    w = WORKLOADS[name]
    mode = args.mode or w["cpu_mode"]
    B = args.batch or w["batch"]
    step = make_step(w, mode, B, args.seed, args.bf16)
    g = torch.Generator().manual_seed(args.seed)
    shape = (B, w["channels"], w["image"], w["image"])
    views = [(torch.randn(shape, generator=g), torch.randn(shape, generator=g)) for _ in range(2)]
    load0 = load_avg()
    for i in range(args.warmup):
        step(*views[i % 2])
    times, last, t0 = [], float("nan"), time.perf_counter()
    while True:
        s = time.perf_counter()
        last = step(*views[len(times) % 2])
        times.append(time.perf_counter() - s)
        print(f"{name} {mode} step {len(times)}: {1000 * times[-1]:.0f} ms", file=sys.stderr)
        total = time.perf_counter() - t0
        if args.steps:
            if len(times) >= args.steps:
                break
        elif total >= args.seconds and len(times) >= 3:
            break
    flops = step_flops(w, mode, B)
    ms = 1000 * total / len(times)
    return dict(
        workload=name, mode=mode, backend="pytorch", device="cpu",
        precision="bf16-autocast" if args.bf16 else "fp32", threads=torch.get_num_threads(),
        batch=B, warmup_steps=args.warmup, steps=len(times), seconds=round(total, 3),
        images_per_s=round(B * len(times) / total, 2), ms_per_step=round(ms, 1),
        ms_per_step_median=round(1000 * statistics.median(times), 1), flops_per_step=flops,
        gflops_per_s=round(flops / 1e6 / ms, 2),
        peak_rss_bytes=resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024,
        last_value=last, load_avg_start=load0, load_avg_end=load_avg(),
        torch=torch.__version__, blas=loaded_blas(),
        omp_wait_policy=os.environ.get("OMP_WAIT_POLICY"),
    )


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--workload", default=",".join(WORKLOADS),
                   help="comma-separated: " + ", ".join(WORKLOADS))
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--seconds", type=float, default=10.0, help="minimum timed seconds")
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--steps", type=int, default=0, help="exactly this many timed steps")
    p.add_argument("--batch", type=int, default=0, help="override the batch (not for the table)")
    p.add_argument("--mode", choices=["step", "forward"], default=None)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--bf16", action="store_true",
                   help='mixed precision: torch.autocast("cpu", dtype=torch.bfloat16)')
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    for name in args.workload.split(","):
        if name not in WORKLOADS:
            p.error(f'unknown workload "{name}": choose one of {", ".join(WORKLOADS)}')
        print(json.dumps(bench(name, args)), flush=True)


if __name__ == "__main__":
    main()
