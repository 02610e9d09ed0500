import {
  assert,
  assertAlmostEquals,
  assertEquals,
  assertInstanceOf,
  assertStringIncludes,
  assertThrows,
} from "@std/assert";
import * as tf from "@tensorflow/tfjs-core";
import { initBackend } from "../../lib/backends/mod.ts";
import { webgpuStatus } from "../_helpers/system_tools.ts";
import { createRng, type Rng } from "../../lib/core/rng.ts";
import {
  countParams,
  createViT,
  disposeViT,
  patchify,
  sincosPosEmbedWithCls,
  trainableParams,
  updateBnBuffers,
  type ViT,
  type ViTConfig,
  vitConfig,
  vitFlops,
  vitForward,
} from "../../lib/model/vit.ts";
import { ConfigError } from "../../lib/core/errors.ts";
import { maxAbsDiff } from "../_helpers/numeric.ts";
import { erf } from "../_helpers/erf.ts";

// ---------------------------------------------------------------------------------------------
// Independent helpers: a plain-JS float64 ViT written from the paper's description of the
// backbone (Chen, Xie, He 2021, "An Empirical Study of Training Self-Supervised Vision
// Transformers", arXiv:2104.02057, Sec. 5) and timm's layouts, and small utilities. Nothing here
// calls lib/model/vit.ts.

type Host = { data: Float64Array; shape: number[] };

/** A copy of every parameter (and buffer) of a model as float64 host arrays. */
function hostParams(vars: Record<string, tf.Variable>): Record<string, Host> {
  const out: Record<string, Host> = {};
  for (const [k, v] of Object.entries(vars)) {
    out[k] = { data: Float64Array.from(v.dataSync()), shape: v.shape.slice() };
  }
  return out;
}

/** `X [M, in] @ W^T + b` with W `[out, in]`. */
function linearJs(x: Float64Array, m: number, w: Host, b?: Host): Float64Array {
  const [out, inp] = w.shape;
  const y = new Float64Array(m * out);
  for (let i = 0; i < m; i++) {
    for (let o = 0; o < out; o++) {
      let s = b ? b.data[o] : 0;
      for (let k = 0; k < inp; k++) s += x[i * inp + k] * w.data[o * inp + k];
      y[i * out + o] = s;
    }
  }
  return y;
}

/** LayerNorm of each row of `[M, D]` (biased variance). */
function layerNormJs(x: Float64Array, m: number, d: number, w: Host, b: Host, eps: number) {
  const y = new Float64Array(m * d);
  for (let i = 0; i < m; i++) {
    let mu = 0;
    for (let k = 0; k < d; k++) mu += x[i * d + k];
    mu /= d;
    let v = 0;
    for (let k = 0; k < d; k++) v += (x[i * d + k] - mu) ** 2;
    v /= d;
    for (let k = 0; k < d; k++) {
      y[i * d + k] = (x[i * d + k] - mu) / Math.sqrt(v + eps) * w.data[k] + b.data[k];
    }
  }
  return y;
}

interface RefOut {
  features: Float64Array;
  attn0: Float64Array;
  bn: { mean: Float64Array; variance: Float64Array }[];
}

/**
 * The ViT forward of the paper (arXiv:2104.02057, Sec. 5) in float64: conv patch embedding (kernel [D, C, p, p] applied
 * directly to the image), class token, position table, pre-norm blocks (timm's qkv layout:
 * rows 0..D-1 are q, head h owns dims h*hd..), exact GELU, final LN on the class token (or
 * mean of patch tokens without final LN).
 */
function refForward(
  cfg: ViTConfig,
  P: Record<string, Host>,
  buf: Record<string, Host>,
  x: Float64Array,
  B: number,
  training: boolean,
): RefOut {
  const { dim: D, heads, patchSize: p, channels: C, imageSize: S } = cfg;
  const g = S / p, N = g * g, T = N + 1, hd = D / heads, M = B * T;
  let h = new Float64Array(M * D);
  const W = P["patch_embed.proj.weight"].data, pb = P["patch_embed.proj.bias"].data;
  for (let b = 0; b < B; b++) {
    for (let d = 0; d < D; d++) h[(b * T) * D + d] = P["cls_token"].data[d];
    for (let i = 0; i < g; i++) {
      for (let j = 0; j < g; j++) {
        const t = 1 + i * g + j;
        for (let d = 0; d < D; d++) {
          let s = pb[d];
          for (let c = 0; c < C; c++) {
            for (let u = 0; u < p; u++) {
              for (let v = 0; v < p; v++) {
                const px = x[((b * S + i * p + u) * S + j * p + v) * C + c];
                s += W[((d * C + c) * p + u) * p + v] * px;
              }
            }
          }
          h[(b * T + t) * D + d] = s;
        }
      }
    }
    if (P["pos_embed"]) {
      for (let k = 0; k < T * D; k++) h[b * T * D + k] += P["pos_embed"].data[k];
    }
  }
  let attn0 = new Float64Array(0);
  const bn: RefOut["bn"] = [];
  for (let l = 0; l < cfg.depth; l++) {
    const pre = `blocks.${l}.`;
    const y = layerNormJs(h, M, D, P[pre + "norm1.weight"], P[pre + "norm1.bias"], cfg.lnEps);
    const qkv = linearJs(y, M, P[pre + "attn.qkv.weight"], P[pre + "attn.qkv.bias"]);
    const ctx = new Float64Array(M * D);
    const attn = new Float64Array(B * heads * T * T);
    for (let b = 0; b < B; b++) {
      for (let hh = 0; hh < heads; hh++) {
        for (let t1 = 0; t1 < T; t1++) {
          const s = new Float64Array(T);
          let mx = -Infinity;
          for (let t2 = 0; t2 < T; t2++) {
            let dot = 0;
            for (let e = 0; e < hd; e++) {
              const q = qkv[(b * T + t1) * 3 * D + hh * hd + e];
              const k = qkv[(b * T + t2) * 3 * D + D + hh * hd + e];
              dot += q * k;
            }
            s[t2] = dot / Math.sqrt(hd);
            mx = Math.max(mx, s[t2]);
          }
          let z = 0;
          for (let t2 = 0; t2 < T; t2++) z += s[t2] = Math.exp(s[t2] - mx);
          for (let t2 = 0; t2 < T; t2++) {
            s[t2] /= z;
            attn[((b * heads + hh) * T + t1) * T + t2] = s[t2];
          }
          for (let e = 0; e < hd; e++) {
            let acc = 0;
            for (let t2 = 0; t2 < T; t2++) {
              acc += s[t2] * qkv[(b * T + t2) * 3 * D + 2 * D + hh * hd + e];
            }
            ctx[(b * T + t1) * D + hh * hd + e] = acc;
          }
        }
      }
    }
    if (l === 0) attn0 = attn;
    const a = linearJs(ctx, M, P[pre + "attn.proj.weight"], P[pre + "attn.proj.bias"]);
    h = h.map((v, i) => v + a[i]);
    let z: Float64Array;
    if (cfg.mlpNorm === "layernorm") {
      z = layerNormJs(h, M, D, P[pre + "norm2.weight"], P[pre + "norm2.bias"], cfg.lnEps);
    } else {
      // BatchNorm1d over all B*T rows, per feature; eps 1e-5 (PyTorch's default).
      const mean = new Float64Array(D), variance = new Float64Array(D);
      if (training) {
        for (let i = 0; i < M; i++) for (let d = 0; d < D; d++) mean[d] += h[i * D + d] / M;
        for (let i = 0; i < M; i++) {
          for (let d = 0; d < D; d++) variance[d] += (h[i * D + d] - mean[d]) ** 2 / M;
        }
        bn.push({ mean, variance });
      } else {
        mean.set(buf[pre + "norm2.running_mean"].data);
        variance.set(buf[pre + "norm2.running_var"].data);
      }
      const w = P[pre + "norm2.weight"].data, bb = P[pre + "norm2.bias"].data;
      z = new Float64Array(M * D);
      for (let i = 0; i < M; i++) {
        for (let d = 0; d < D; d++) {
          z[i * D + d] = (h[i * D + d] - mean[d]) / Math.sqrt(variance[d] + 1e-5) * w[d] + bb[d];
        }
      }
    }
    const f1 = linearJs(z, M, P[pre + "mlp.fc1.weight"], P[pre + "mlp.fc1.bias"]);
    const act = f1.map((v) => 0.5 * v * (1 + erf(v / Math.SQRT2)));
    const m = linearJs(act, M, P[pre + "mlp.fc2.weight"], P[pre + "mlp.fc2.bias"]);
    h = h.map((v, i) => v + m[i]);
  }
  const features = new Float64Array(B * D);
  if (cfg.pool === "cls") {
    const cls = new Float64Array(B * D);
    for (let b = 0; b < B; b++) cls.set(h.subarray(b * T * D, b * T * D + D), b * D);
    features.set(layerNormJs(cls, B, D, P["norm.weight"], P["norm.bias"], cfg.lnEps));
  } else {
    for (let b = 0; b < B; b++) {
      for (let t = 1; t < T; t++) {
        for (let d = 0; d < D; d++) features[b * D + d] += h[(b * T + t) * D + d] / N;
      }
    }
  }
  return { features, attn0, bn };
}

/** Gives every non-frozen parameter a generic value (biases, norms and tokens away from 0/1). */
function randomize(model: ViT, rng: Rng): void {
  for (const [name, v] of Object.entries(model.params)) {
    if (name === "pos_embed" && model.frozen.has(name)) continue;
    const n = v.size;
    const data = new Float32Array(n);
    const cur = v.dataSync();
    for (let i = 0; i < n; i++) {
      if (/norm.*\.weight$/.test(name)) data[i] = 1 + 0.3 * rng.normal();
      else if (/weight$/.test(name)) data[i] = cur[i] * (0.8 + 0.4 * rng.uniform());
      else data[i] = 0.3 * rng.normal();
    }
    assignData(v, data);
  }
  for (const [name, v] of Object.entries(model.buffers)) {
    const data = new Float32Array(v.size);
    for (let i = 0; i < v.size; i++) {
      data[i] = name.endsWith("mean") ? 0.2 * rng.normal() : 0.5 + rng.uniform();
    }
    assignData(v, data);
  }
}

function assignData(v: tf.Variable, data: Float32Array): void {
  const t = tf.tensor(data, v.shape);
  v.assign(t);
  t.dispose();
}

function randomArray(n: number, rng: Rng, scale = 1): Float32Array {
  const a = new Float32Array(n);
  for (let i = 0; i < n; i++) a[i] = scale * rng.normal();
  return a;
}

/** A tiny ViT for exact checks: 12x12 RGB, patch 4 (3x3 grid, 10 tokens), width 8, 2 heads. */
function tinyConfig(over: Partial<ViTConfig> = {}): Partial<ViTConfig> & { name: string } {
  return {
    name: "vit_nano",
    imageSize: 12,
    patchSize: 4,
    channels: 3,
    dim: 8,
    depth: 2,
    heads: 2,
    ...over,
  };
}

const VARIANTS: { label: string; over: Partial<ViTConfig>; training: boolean }[] = [
  { label: "sincos/cls/layernorm", over: {}, training: false },
  { label: "learned pos", over: { posEmb: "learned" }, training: false },
  { label: "mean pool, no pos", over: { pool: "mean", posEmb: "none" }, training: false },
  { label: "batchnorm (training)", over: { mlpNorm: "batchnorm" }, training: true },
  { label: "batchnorm (eval)", over: { mlpNorm: "batchnorm" }, training: false },
];

// ---------------------------------------------------------------------------------------------

Deno.test("parameter counts of ViT-S/16 and ViT-B/16 match timm's minus the head", async () => {
  await initBackend({ backend: "cpu" });
  // timm's vit_*_patch16_224: patch C*p*p*D + D, cls D, pos (N+1)*D, 12 blocks of 12D^2 + 13D,
  // final norm 2D, head 1000D + 1000. Published totals: 22,050,664 and 86,567,656.
  const timm = (D: number, depth: number) => {
    const C = 3, p = 16, N = (224 / 16) ** 2;
    return C * p * p * D + D + D + (N + 1) * D + depth * (12 * D * D + 13 * D) + 2 * D +
      D * 1000 + 1000;
  };
  assertEquals(timm(384, 12), 22_050_664);
  assertEquals(timm(768, 12), 86_567_656);
  for (
    const [name, D, total] of [["vit_small", 384, 22_050_664], [
      "vit_base",
      768,
      86_567_656,
    ]] as const
  ) {
    const before = tf.memory().numTensors;
    const m = createViT({ name }, 0);
    const head = D * 1000 + 1000, pos = 197 * D;
    assertEquals(countParams(m.params, { includeFrozen: true }), total - head, name);
    // The sin-cos table is a frozen parameter: not trainable, and not counted by default.
    assertEquals(countParams(trainableParams(m)), total - head - pos, name);
    assertEquals(countParams(m.params), total - head - pos, name);
    if (name === "vit_small") assertEquals(countParams(m.params), 21_590_016); // 21,665,664 - 197 * 384
    const millions = Math.round((total - head) / 1e6);
    assertEquals(millions, name === "vit_small" ? 22 : 86); // the paper's 22M / 86M
    disposeViT(m);
    assertEquals(tf.memory().numTensors, before, "createViT/disposeViT leaked tensors");
  }
});

Deno.test("countParams: trainable by default, frozen tensors with includeFrozen, plain tensors always", async () => {
  await initBackend({ backend: "cpu" });
  // vit_nano 8x8 / 4, 1 channel, D 32, depth 2: patch 16*32 + 32 = 544, cls 32, sin-cos pos
  // 5 * 32 = 160, blocks 2 * (12 * 32^2 + 13 * 32) = 25,408, final norm 64. Total 26,208.
  const m = createViT(
    { name: "vit_nano", imageSize: 8, patchSize: 4, channels: 1, freezePatchEmbed: true },
    0,
  );
  assertEquals(countParams(m.params, { includeFrozen: true }), 26_208);
  assertEquals(countParams(m.params), 26_208 - 544 - 160); // frozen patch projection and table
  const plain = { a: tf.zeros([3, 4]), b: tf.zeros([5]) };
  assertEquals(countParams(plain), 17);
  const frozen = tf.variable(plain.a, false);
  assertEquals(countParams({ frozen }), 0);
  assertEquals(countParams({ frozen }, { includeFrozen: true }), 12);
  tf.dispose([...Object.values(plain), frozen]);
  disposeViT(m);
});

Deno.test("sin-cos position table follows the paper (Sec. 5), class row zero, frozen", async () => {
  await initBackend({ backend: "cpu" });
  const m = createViT({ name: "vit_small" }, 0);
  const D = 384, g = 14, d = D / 4;
  const pos = m.params["pos_embed"];
  assertEquals(pos.shape, [1, g * g + 1, D]);
  assertEquals(pos.trainable, false);
  assert(m.frozen.has("pos_embed"));
  assert(!("pos_embed" in trainableParams(m)));
  const tab = pos.dataSync();
  for (let k = 0; k < D; k++) assertEquals(tab[k], 0, "class-token row must be zero");
  const omega = (k: number) => Math.exp(-Math.log(10000) * k / d);
  const expect = (r: number, c: number, j: number) => {
    const blk = Math.floor(j / d), k = j % d;
    const a = blk < 2 ? r : c;
    return blk % 2 === 0 ? Math.sin(a * omega(k)) : Math.cos(a * omega(k));
  };
  const cases: [number, number, number][] = [
    [0, 0, 0],
    [0, 1, 2 * d],
    [1, 0, 0],
    [1, 0, d],
    [13, 2, 5],
    [3, 11, 2 * d + 7],
    [7, 7, 3 * d + 40],
    [12, 5, d + 95],
    [2, 13, 4 * d - 1],
  ];
  for (const [r, c, j] of cases) {
    const got = tab[(1 + r * g + c) * D + j];
    assertAlmostEquals(got, expect(r, c, j), 1e-6, `(r=${r}, c=${c}, j=${j})`);
  }
  // Exhaustively on a small grid, through the exported function.
  const small = sincosPosEmbedWithCls(3, 8);
  assertEquals(small.length, 10 * 8);
  for (let r = 0; r < 3; r++) {
    for (let c = 0; c < 3; c++) {
      for (let j = 0; j < 8; j++) {
        const dd = 2, blk = Math.floor(j / dd), k = j % dd, a = blk < 2 ? r : c;
        const w = 1 / 10000 ** (k / dd);
        const e = blk % 2 === 0 ? Math.sin(a * w) : Math.cos(a * w);
        assertAlmostEquals(small[(1 + r * 3 + c) * 8 + j], e, 1e-6);
      }
    }
  }
  disposeViT(m);
});

Deno.test("forward equals an independent float64 implementation (all variants)", async () => {
  await initBackend({ backend: "cpu" });
  const B = 2;
  for (const { label, over, training } of VARIANTS) {
    const rng = createRng(7);
    const m = createViT(tinyConfig(over), 3);
    randomize(m, rng);
    const xs = randomArray(B * 12 * 12 * 3, rng);
    const x = tf.tensor4d(xs, [B, 12, 12, 3]);
    const out = vitForward(m, x, { training, returnAttention: true, returnTokens: true });
    const ref = refForward(
      m.config,
      hostParams(m.params),
      hostParams(m.buffers),
      Float64Array.from(xs),
      B,
      training,
    );
    assertEquals(out.features.shape, [B, 8]);
    assertEquals(out.tokens!.shape, [B, 10, 8]);
    assertEquals(out.attention!.length, 2);
    assertEquals(out.attention![0].shape, [B, 2, 10, 10]);
    const err = maxAbsDiff(out.features.dataSync(), ref.features);
    assert(err < 1e-5, `${label}: features differ from the reference by ${err}`);
    const errA = maxAbsDiff(out.attention![0].dataSync(), ref.attn0);
    assert(errA < 1e-5, `${label}: attention differs from the reference by ${errA}`);
    if (training && m.config.mlpNorm === "batchnorm") {
      assertEquals(out.bnStats!.length, 2);
      for (let l = 0; l < 2; l++) {
        assertEquals(out.bnStats![l].name, `blocks.${l}.norm2`);
        assert(maxAbsDiff(out.bnStats![l].mean.dataSync(), ref.bn[l].mean) < 1e-4);
        assert(maxAbsDiff(out.bnStats![l].variance.dataSync(), ref.bn[l].variance) < 1e-4);
      }
      // Running statistics: PyTorch's momentum 0.1 with the unbiased batch variance.
      const rows = B * 10;
      const rm0 = m.buffers["blocks.1.norm2.running_mean"].dataSync().slice();
      const rv0 = m.buffers["blocks.1.norm2.running_var"].dataSync().slice();
      updateBnBuffers(m, out.bnStats, rows);
      const rm = m.buffers["blocks.1.norm2.running_mean"].dataSync();
      const rv = m.buffers["blocks.1.norm2.running_var"].dataSync();
      for (let k = 0; k < 8; k++) {
        assertAlmostEquals(rm[k], 0.9 * rm0[k] + 0.1 * ref.bn[1].mean[k], 1e-5);
        const unbiased = ref.bn[1].variance[k] * rows / (rows - 1);
        assertAlmostEquals(rv[k], 0.9 * rv0[k] + 0.1 * unbiased, 1e-5);
      }
    }
    tf.dispose([x, out.features, out.tokens!, ...out.attention!]);
    for (const s of out.bnStats ?? []) tf.dispose([s.mean, s.variance]);
    disposeViT(m);
  }
});

Deno.test("gradients match central finite differences (all variants)", async () => {
  await initBackend({ backend: "cpu" });
  const B = 2, eps = 1e-2;
  for (const { label, over, training } of VARIANTS) {
    if (label === "batchnorm (eval)") continue; // same graph as layernorm's w.r.t. params
    const rng = createRng(11);
    const m = createViT(tinyConfig(over), 5);
    randomize(m, rng);
    const x = tf.tensor4d(randomArray(B * 12 * 12 * 3, rng), [B, 12, 12, 3]);
    const R = tf.tensor2d(randomArray(B * 8, rng), [B, 8]);
    const loss = () =>
      tf.tidy(() => tf.sum(tf.mul(vitForward(m, x, { training }).features, R)) as tf.Scalar);
    const lossValue = () => {
      const l = loss();
      const v = l.dataSync()[0];
      l.dispose();
      return v;
    };
    const trainable = trainableParams(m);
    const { value, grads } = tf.variableGrads(loss, Object.values(m.params));
    value.dispose();
    for (const [name, v] of Object.entries(m.params)) {
      const g = grads[v.name];
      if (!(name in trainable)) {
        assert(g == null, `${label}: frozen ${name} got a gradient`);
        continue;
      }
      assert(g, `${label}: trainable ${name} got no gradient`);
      const ga = g.dataSync();
      const base = Float32Array.from(v.dataSync());
      const idx = new Set<number>([0, v.size - 1]);
      while (idx.size < Math.min(v.size, 6)) idx.add(rng.int(v.size));
      const scale = Math.max(...Array.from(ga, Math.abs));
      for (const i of idx) {
        const plus = base.slice(), minus = base.slice();
        plus[i] += eps;
        minus[i] -= eps;
        assignData(v, plus);
        const lp = lossValue();
        assignData(v, minus);
        const lm = lossValue();
        assignData(v, base);
        const fd = (lp - lm) / (2 * eps);
        const tol = 5e-3 * Math.abs(fd) + 5e-4 * scale + 2e-5;
        assert(
          Math.abs(fd - ga[i]) <= tol,
          `${label}: d loss / d ${name}[${i}]: autodiff ${ga[i]}, finite difference ${fd}`,
        );
      }
    }
    tf.dispose([x, R, ...Object.values(grads)]);
    disposeViT(m);
  }
});

Deno.test("freezePatchEmbed: the patch projection gets no gradient and stays put", async () => {
  await initBackend({ backend: "cpu" });
  const m = createViT(tinyConfig({ freezePatchEmbed: true }), 1);
  const rng = createRng(2);
  randomize(m, rng);
  const trainable = trainableParams(m);
  assert(!("patch_embed.proj.weight" in trainable));
  assert(!("patch_embed.proj.bias" in trainable));
  assert("blocks.0.attn.qkv.weight" in trainable);
  assertEquals(m.params["patch_embed.proj.weight"].trainable, false);
  const x = tf.tensor4d(randomArray(2 * 12 * 12 * 3, rng), [2, 12, 12, 3]);
  const w0 = m.params["patch_embed.proj.weight"].dataSync().slice();
  const b0 = m.params["patch_embed.proj.bias"].dataSync().slice();
  const q0 = m.params["blocks.0.attn.qkv.weight"].dataSync().slice();
  const before = tf.memory().numTensors;
  // All params offered: variableGrads must leave the frozen ones out (null).
  const { value, grads } = tf.variableGrads(
    () => tf.tidy(() => tf.sum(tf.square(vitForward(m, x).features)) as tf.Scalar),
    Object.values(m.params),
  );
  assert(grads[m.params["patch_embed.proj.weight"].name] == null);
  assert(grads[m.params["patch_embed.proj.bias"].name] == null);
  // A hand-written SGD step on everything that has a gradient.
  tf.tidy(() => {
    for (const v of Object.values(m.params)) {
      const g = grads[v.name];
      if (g) v.assign(tf.sub(v, tf.mul(g, 0.5)));
    }
  });
  tf.dispose([value, ...Object.values(grads).filter((g) => g != null)]);
  assertEquals(tf.memory().numTensors, before, "the gradient step leaked tensors");
  assertEquals(m.params["patch_embed.proj.weight"].dataSync(), w0);
  assertEquals(m.params["patch_embed.proj.bias"].dataSync(), b0);
  assert(maxAbsDiff(m.params["blocks.0.attn.qkv.weight"].dataSync(), q0) > 1e-4, "no update");
  x.dispose();
  disposeViT(m);
});

Deno.test("patchify + linear equals a conv with kernel [D, C, p, p] (timm layout)", async () => {
  await initBackend({ backend: "cpu" });
  const rng = createRng(3);
  const B = 2, H = 6, W = 9, C = 2, p = 3, D = 4, gh = H / p, gw = W / p;
  const xs = randomArray(B * H * W * C, rng);
  const ks = randomArray(D * C * p * p, rng);
  // Conv by hand: out[b, i, j, d] = sum_{c,u,v} K[d, c, u, v] * x[b, i p + u, j p + v, c].
  const conv = new Float64Array(B * gh * gw * D);
  for (let b = 0; b < B; b++) {
    for (let i = 0; i < gh; i++) {
      for (let j = 0; j < gw; j++) {
        for (let d = 0; d < D; d++) {
          let s = 0;
          for (let c = 0; c < C; c++) {
            for (let u = 0; u < p; u++) {
              for (let v = 0; v < p; v++) {
                s += ks[((d * C + c) * p + u) * p + v] *
                  xs[((b * H + i * p + u) * W + j * p + v) * C + c];
              }
            }
          }
          conv[((b * gh + i) * gw + j) * D + d] = s;
        }
      }
    }
  }
  const before = tf.memory().numTensors;
  const got = tf.tidy(() => {
    const x = tf.tensor4d(xs, [B, H, W, C]);
    const pt = patchify(x, p);
    assertEquals(pt.shape, [B, gh * gw, C * p * p]);
    const k = tf.tensor2d(ks, [D, C * p * p]);
    return tf.matMul(tf.reshape(pt, [B * gh * gw, C * p * p]) as tf.Tensor2D, k, false, true);
  });
  assert(maxAbsDiff(got.dataSync(), conv) < 1e-5);
  got.dispose();
  assertEquals(tf.memory().numTensors, before);
});

Deno.test("no tensor leaks: forward in tidy, gradient step, BN update", async () => {
  await initBackend({ backend: "cpu" });
  for (const over of [{}, { mlpNorm: "batchnorm" as const }]) {
    const m = createViT(tinyConfig(over), 0);
    const x = tf.zeros([2, 12, 12, 3]) as tf.Tensor4D;
    const before = tf.memory().numTensors;
    tf.tidy(() => {
      vitForward(m, x, { returnAttention: true, returnTokens: true });
    });
    assertEquals(tf.memory().numTensors, before, "forward leaked");
    const { value, grads } = tf.variableGrads(() =>
      tf.tidy(() => {
        const out = vitForward(m, x, { training: true });
        updateBnBuffers(m, out.bnStats, 2 * 10);
        return tf.mean(tf.square(out.features)) as tf.Scalar;
      }), Object.values(trainableParams(m)));
    tf.tidy(() => {
      for (const v of Object.values(trainableParams(m))) {
        v.assign(tf.sub(v, tf.mul(grads[v.name], 0.1)));
      }
    });
    tf.dispose([value, ...Object.values(grads)]);
    assertEquals(tf.memory().numTensors, before, "gradient step leaked");
    x.dispose();
    disposeViT(m);
  }
});

Deno.test("config errors name the cause and the fix", () => {
  const e1 = assertThrows(() => vitConfig({ name: "vit_small", imageSize: 225 }), ConfigError);
  assertStringIncludes(e1.message, "225");
  assertStringIncludes(e1.message, "not divisible by patch size 16");
  assertStringIncludes(e1.message, "choose a patch size");
  const e2 = assertThrows(() => createViT({ name: "vit_gigantic" }), ConfigError);
  assertStringIncludes(e2.message, "vit_gigantic");
  assertStringIncludes(e2.message, "vit_small"); // lists what exists
  const e3 = assertThrows(() => vitConfig({ name: "vit_small", heads: 7 }), ConfigError);
  assertStringIncludes(e3.message, "384");
  assertStringIncludes(e3.message, "7 heads");
  assertStringIncludes(e3.message, "choose heads");
  const e4 = assertThrows(
    () => vitConfig({ name: "vit_nano", dim: 30, heads: 2, posEmb: "sincos" }),
    ConfigError,
  );
  assertStringIncludes(e4.message, "divisible by 4");
  assertStringIncludes(e4.message, "30");
  // Valid with a learned table.
  assertEquals(vitConfig({ name: "vit_nano", dim: 30, heads: 2, posEmb: "learned" }).dim, 30);
  const e5 = assertThrows(() => vitConfig({ name: "vit_nano", depth: 0 }), ConfigError);
  assertStringIncludes(e5.message, "depth");
});

Deno.test("vitForward rejects an input of the wrong size", async () => {
  await initBackend({ backend: "cpu" });
  const m = createViT(tinyConfig(), 0);
  const x = tf.zeros([1, 16, 16, 3]) as tf.Tensor4D;
  const e = assertThrows(() => vitForward(m, x), ConfigError);
  assertInstanceOf(e, ConfigError);
  assertStringIncludes(e.message, "16x16x3");
  assertStringIncludes(e.message, "12x12x3");
  x.dispose();
  disposeViT(m);
});

Deno.test("vitFlops matches a hand count", () => {
  // imageSize 8, patch 4, C 3, D 8, depth 1, MLP 32: N = 4 patches, T = 5 tokens.
  // Multiply-adds: patch 4*48*8 = 1536; qkv 5*8*24 = 960; scores 5*5*8 = 200; mixing 200;
  // proj 5*8*8 = 320; fc1 5*8*32 = 1280; fc2 1280. FLOPs = 2 * MACs.
  const cfg = vitConfig({ name: "vit_nano", imageSize: 8, patchSize: 4, dim: 8, depth: 1 });
  assertEquals(vitFlops(cfg), 2 * (1536 + 960 + 200 + 200 + 320 + 1280 + 1280));
  const cfg2 = { ...cfg, depth: 3 };
  assertEquals(vitFlops(cfg2), 2 * (1536 + 3 * (960 + 200 + 200 + 320 + 1280 + 1280)));
  // ViT-B/16 is usually quoted as 17.6 G multiply-adds ("GFLOPs" in DeiT/timm tables).
  const base = vitFlops(vitConfig({ name: "vit_base" })) / 2;
  assert(Math.abs(base / 17.6e9 - 1) < 0.01, `ViT-B/16: ${base} multiply-adds`);
});

/** The WebGPU adapter, or why there is none. */
async function webgpuAvailable(): Promise<string | null> {
  const status = await webgpuStatus();
  return status.ok ? null : status.why;
}

Deno.test({
  name: "cpu, wasm and webgpu give the same features for the same weights",
  // The webgpu device and wasm module stay alive after the test.
  sanitizeResources: false,
  sanitizeOps: false,
  fn: async () => {
    const B = 3;
    const backends: ("cpu" | "wasm" | "webgpu")[] = ["cpu", "wasm"];
    const why = await webgpuAvailable();
    if (why === null) backends.push("webgpu");
    else console.log(`skipping webgpu: ${why}`);
    const configs = [
      { name: "vit_nano", imageSize: 16, patchSize: 4, channels: 3 },
      { name: "vit_nano", imageSize: 16, patchSize: 4, channels: 3, mlpNorm: "batchnorm" as const },
    ];
    for (const [ci, cfg] of configs.entries()) {
      // Weights and input made once on cpu as plain arrays, then loaded on each backend.
      await initBackend({ backend: "cpu" });
      const rng = createRng(100 + ci);
      const ref = createViT(cfg, 9);
      randomize(ref, rng);
      const weights = Object.fromEntries(
        Object.entries({ ...ref.params, ...ref.buffers }).map((
          [k, v],
        ) => [k, v.dataSync().slice()]),
      );
      disposeViT(ref);
      const xs = randomArray(B * 16 * 16 * 3, rng);
      const results: Record<string, Float32Array> = {};
      for (const be of backends) {
        await initBackend({ backend: be });
        assertEquals(tf.getBackend(), be);
        const m = createViT(cfg, 9);
        for (const [k, v] of Object.entries({ ...m.params, ...m.buffers })) {
          assignData(v, weights[k] as Float32Array);
        }
        const x = tf.tensor4d(xs, [B, 16, 16, 3]);
        const before = tf.memory().numTensors;
        const f = tf.tidy(() =>
          vitForward(m, x, { training: cfg.mlpNorm === "batchnorm" }).features
        );
        results[be] = (await f.data()) as Float32Array;
        f.dispose();
        assertEquals(tf.memory().numTensors, before, `${be}: forward leaked`);
        x.dispose();
        disposeViT(m);
      }
      for (const be of backends.slice(1)) {
        const err = maxAbsDiff(results[be], results.cpu);
        assert(err < 1e-4, `config ${ci}: ${be} differs from cpu by ${err}`);
      }
    }
    await initBackend({ backend: "cpu" });
  },
});
