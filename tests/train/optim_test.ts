import * as tf from "@tensorflow/tfjs-core";
import { assert, assertAlmostEquals, assertEquals, assertThrows } from "@std/assert";
import { initBackend } from "../../lib/backends/mod.ts";
import {
  applyGradients,
  createOptimizerState,
  decays,
  disposeOptimizerState,
  globalNorm,
  loadOptimizerState,
  type OptimizerConfig,
  optimizerStateTensors,
} from "../../lib/optim/optim.ts";
import { lrAt, momentumAt, scaledLr } from "../../lib/optim/schedule.ts";
import { fastPathCalls, registerFastPaths } from "../../lib/backends/fused.ts";

await initBackend({ backend: "cpu" });

// ---------- helpers ----------

type Arrays = Record<string, number[]>;
type Shapes = Record<string, number[]>;

function makeParams(values: Arrays, shapes: Shapes): Record<string, tf.Variable> {
  const out: Record<string, tf.Variable> = {};
  for (const [k, v] of Object.entries(values)) {
    out[k] = tf.variable(tf.tensor(v, shapes[k]), true);
  }
  return out;
}

function makeGrads(values: Arrays, shapes: Shapes): Record<string, tf.Tensor> {
  const out: Record<string, tf.Tensor> = {};
  for (const [k, v] of Object.entries(values)) out[k] = tf.tensor(v, shapes[k]);
  return out;
}

function read(t: tf.Tensor): number[] {
  return Array.from(t.dataSync());
}

function assertClose(actual: number[], expected: number[], tol = 1e-6, msg = ""): void {
  assertEquals(actual.length, expected.length, `${msg}: length`);
  for (let i = 0; i < actual.length; i++) {
    const e = expected[i];
    const err = Math.abs(actual[i] - e);
    assert(
      err <= tol * Math.max(1, Math.abs(e)),
      `${msg}[${i}]: got ${actual[i]}, expected ${e} (|err| ${err})`,
    );
  }
}

function disposeAll(...recs: Record<string, tf.Tensor>[]): void {
  for (const r of recs) tf.dispose(Object.values(r));
}

const norm = (a: number[]) => Math.sqrt(a.reduce((s, x) => s + x * x, 0));

// Plain-JS (float64) reference updates, written from the PyTorch / timm algorithm statements.

/** torch.optim.AdamW on one array; mutates p, m, v. */
function refAdamW(
  p: number[],
  g: number[],
  m: number[],
  v: number[],
  t: number,
  lr: number,
  wd: number,
  b1 = 0.9,
  b2 = 0.999,
  eps = 1e-8,
): void {
  const bc1 = 1 - b1 ** t;
  const bc2 = 1 - b2 ** t;
  for (let i = 0; i < p.length; i++) {
    p[i] = p[i] * (1 - lr * wd);
    m[i] = b1 * m[i] + (1 - b1) * g[i];
    v[i] = b2 * v[i] + (1 - b2) * g[i] * g[i];
    const mHat = m[i] / bc1;
    const vHat = v[i] / bc2;
    p[i] -= lr * mHat / (Math.sqrt(vHat) + eps);
  }
}

/** timm Lamb (coupled decay, trust ratio only where wd > 0); mutates p, m, v. */
function refLamb(
  p: number[],
  g: number[],
  m: number[],
  v: number[],
  t: number,
  lr: number,
  wd: number,
  b1 = 0.9,
  b2 = 0.999,
  eps = 1e-6,
): void {
  const bc1 = 1 - b1 ** t;
  const bc2 = 1 - b2 ** t;
  const u: number[] = [];
  for (let i = 0; i < p.length; i++) {
    m[i] = b1 * m[i] + (1 - b1) * g[i];
    v[i] = b2 * v[i] + (1 - b2) * g[i] * g[i];
    u.push((m[i] / bc1) / (Math.sqrt(v[i] / bc2) + eps) + wd * p[i]);
  }
  let r = 1;
  if (wd > 0) {
    const pn = norm(p);
    const un = norm(u);
    r = pn > 0 && un > 0 ? pn / un : 1;
  }
  for (let i = 0; i < p.length; i++) p[i] -= lr * r * u[i];
}

/** torch.optim.SGD (dampening 0, no nesterov); mutates p, buf. */
function refSgd(
  p: number[],
  g: number[],
  buf: number[],
  lr: number,
  wd: number,
  mom: number,
  first: boolean,
): void {
  for (let i = 0; i < p.length; i++) {
    const d = g[i] + wd * p[i];
    buf[i] = first ? d : mom * buf[i] + d;
    p[i] -= lr * buf[i];
  }
}

const SHAPES: Shapes = { "blocks.0.attn.qkv.weight": [2, 3], "blocks.0.attn.qkv.bias": [3] };
const P0: Arrays = {
  "blocks.0.attn.qkv.weight": [0.5, -1.2, 0.3, 2.0, -0.7, 0.05],
  "blocks.0.attn.qkv.bias": [0.1, -0.2, 0.4],
};
const GRAD_SEQ: Arrays[] = [
  {
    "blocks.0.attn.qkv.weight": [0.3, -0.1, 0.02, 1.5, -0.8, 0.0],
    "blocks.0.attn.qkv.bias": [1, 2, -3],
  },
  {
    "blocks.0.attn.qkv.weight": [-0.2, 0.4, 0.1, 1.0, 0.3, -0.5],
    "blocks.0.attn.qkv.bias": [0.5, -1, 0],
  },
  {
    "blocks.0.attn.qkv.weight": [0.05, 0.05, -0.3, -2, 0.1, 0.2],
    "blocks.0.attn.qkv.bias": [-0.1, 0.3, 2],
  },
];

function copyArrays(a: Arrays): Arrays {
  return Object.fromEntries(Object.entries(a).map(([k, v]) => [k, [...v]]));
}
function zerosLike(a: Arrays): Arrays {
  return Object.fromEntries(Object.entries(a).map(([k, v]) => [k, v.map(() => 0)]));
}

// ---------- AdamW ----------

Deno.test("adamw: first step by hand is a sign step of size lr plus decoupled decay", () => {
  const params = makeParams({ w: [1, -2, 3, 0.5] }, { w: [2, 2] });
  const grads = makeGrads({ w: [0.2, -4, 1e-3, -0.5] }, { w: [2, 2] });
  const cfg: OptimizerConfig = { name: "adamw", weightDecay: 0.5 };
  const state = createOptimizerState(cfg, params);
  applyGradients(params, grads, state, cfg, 0.1);
  // m_hat = g, v_hat = g^2, so the Adam step is lr * g / (|g| + eps) = lr * sign(g) (to 1e-5).
  // p <- p * (1 - 0.1 * 0.5) - 0.1 * sign(g)
  assertClose(read(params.w), [0.95 - 0.1, -1.9 + 0.1, 2.85 - 0.1, 0.475 + 0.1], 1e-5, "w");
  assertEquals(state.step, 1);
  disposeAll(params, grads);
  disposeOptimizerState(state);
});

Deno.test("adamw: three steps (bias correction, varying lr) match torch.optim.AdamW by hand", () => {
  const params = makeParams(P0, SHAPES);
  const cfg: OptimizerConfig = { name: "adamw", weightDecay: 0.1, betas: [0.8, 0.95], eps: 1e-3 };
  const state = createOptimizerState(cfg, params);
  const p = copyArrays(P0), m = zerosLike(P0), v = zerosLike(P0);
  const lrs = [0.05, 0.1, 0.02];
  GRAD_SEQ.forEach((gs, i) => {
    const grads = makeGrads(gs, SHAPES);
    applyGradients(params, grads, state, cfg, lrs[i]);
    disposeAll(grads);
    for (const k of Object.keys(P0)) {
      refAdamW(p[k], gs[k], m[k], v[k], i + 1, lrs[i], 0.1, 0.8, 0.95, 1e-3);
    }
  });
  for (const k of Object.keys(P0)) {
    assertClose(read(params[k]), p[k], 2e-6, k);
    assertClose(read(state.slots[`exp_avg/${k}`]), m[k], 2e-6, `m ${k}`);
    assertClose(read(state.slots[`exp_avg_sq/${k}`]), v[k], 2e-6, `v ${k}`);
  }
  assertEquals(state.step, 3);
  disposeAll(params);
  disposeOptimizerState(state);
});

Deno.test("adamw: decay is decoupled (zero gradient gives p * (1 - lr * wd), not an Adam step)", () => {
  const params = makeParams({ w: [2, -3, 0.25] }, { w: [1, 3] });
  const grads = makeGrads({ w: [0, 0, 0] }, { w: [1, 3] });
  const cfg: OptimizerConfig = { name: "adamw", weightDecay: 0.1 };
  const state = createOptimizerState(cfg, params);
  applyGradients(params, grads, state, cfg, 0.5);
  // L2-coupled decay would feed wd * p through Adam and move each entry by about lr = 0.5.
  assertClose(read(params.w), [2 * 0.95, -3 * 0.95, 0.25 * 0.95], 1e-6, "w");
  disposeAll(params, grads);
  disposeOptimizerState(state);
});

// ---------- LAMB ----------

Deno.test("lamb: two steps with trust ratio (decayed) and without (skipped) match by hand", () => {
  const params = makeParams(P0, SHAPES);
  const cfg: OptimizerConfig = { name: "lamb", weightDecay: 0.01, skipDecay: true };
  const state = createOptimizerState(cfg, params);
  const p = copyArrays(P0), m = zerosLike(P0), v = zerosLike(P0);
  for (let i = 0; i < 2; i++) {
    const grads = makeGrads(GRAD_SEQ[i], SHAPES);
    applyGradients(params, grads, state, cfg, 0.01);
    disposeAll(grads);
    refLamb(
      p["blocks.0.attn.qkv.weight"],
      GRAD_SEQ[i]["blocks.0.attn.qkv.weight"],
      m["blocks.0.attn.qkv.weight"],
      v["blocks.0.attn.qkv.weight"],
      i + 1,
      0.01,
      0.01,
    );
    // 1-D bias: no decay, so no trust ratio either.
    refLamb(
      p["blocks.0.attn.qkv.bias"],
      GRAD_SEQ[i]["blocks.0.attn.qkv.bias"],
      m["blocks.0.attn.qkv.bias"],
      v["blocks.0.attn.qkv.bias"],
      i + 1,
      0.01,
      0,
    );
  }
  for (const k of Object.keys(P0)) assertClose(read(params[k]), p[k], 2e-6, k);
  disposeAll(params);
  disposeOptimizerState(state);
});

Deno.test("lamb: first step by hand, layer-wise step length is lr * ||p||", () => {
  // With m_hat/sqrt(v_hat) = sign(g) and wd tiny, u ~ sign(g); the trust ratio rescales the step
  // to length lr * ||p|| (up to eps and the wd * p term, computed here explicitly).
  const w = [3, 4]; // ||w|| = 5
  const params = makeParams({ w }, { w: [1, 2] });
  const grads = makeGrads({ w: [1, -1] }, { w: [1, 2] });
  const cfg: OptimizerConfig = { name: "lamb", weightDecay: 1e-3, eps: 0 };
  const state = createOptimizerState(cfg, params);
  applyGradients(params, grads, state, cfg, 0.1);
  const u = [1 + 1e-3 * 3, -1 + 1e-3 * 4];
  const r = 5 / Math.hypot(u[0], u[1]);
  const after = read(params.w);
  assertClose(after, [3 - 0.1 * r * u[0], 4 - 0.1 * r * u[1]], 1e-6, "w");
  assertAlmostEquals(Math.hypot(after[0] - 3, after[1] - 4), 0.1 * 5, 1e-5);
  disposeAll(params, grads);
  disposeOptimizerState(state);
});

Deno.test("lamb: maxGradNorm divides gradients by max(1, globalNorm / maxGradNorm)", () => {
  const params = makeParams(P0, SHAPES);
  const cfg: OptimizerConfig = { name: "lamb", weightDecay: 0.02, maxGradNorm: 1 };
  const state = createOptimizerState(cfg, params);
  const gs = GRAD_SEQ[0];
  const gn = Math.sqrt(Object.values(gs).flat().reduce((s, x) => s + x * x, 0));
  assert(gn > 1);
  const grads = makeGrads(gs, SHAPES);
  applyGradients(params, grads, state, cfg, 0.01);
  for (const k of Object.keys(P0)) {
    const p = [...P0[k]], m = P0[k].map(() => 0), v = P0[k].map(() => 0);
    refLamb(p, gs[k].map((x) => x / gn), m, v, 1, 0.01, 0.02);
    assertClose(read(params[k]), p, 2e-6, k);
    assertClose(read(state.slots[`exp_avg/${k}`]), gs[k].map((x) => 0.1 * x / gn), 1e-6, `m ${k}`);
  }
  disposeAll(params, grads);
  disposeOptimizerState(state);
});

// ---------- SGD ----------

Deno.test("sgd: two momentum steps with L2 weight decay match torch.optim.SGD by hand", () => {
  const params = makeParams(P0, SHAPES);
  const cfg: OptimizerConfig = { name: "sgd", weightDecay: 1e-2, momentum: 0.9 };
  const state = createOptimizerState(cfg, params);
  const p = copyArrays(P0), buf = zerosLike(P0);
  const lrs = [0.1, 0.05];
  for (let i = 0; i < 2; i++) {
    const grads = makeGrads(GRAD_SEQ[i], SHAPES);
    applyGradients(params, grads, state, cfg, lrs[i]);
    disposeAll(grads);
    for (const k of Object.keys(P0)) {
      refSgd(p[k], GRAD_SEQ[i][k], buf[k], lrs[i], 1e-2, 0.9, i === 0);
    }
  }
  for (const k of Object.keys(P0)) {
    assertClose(read(params[k]), p[k], 1e-6, k);
    assertClose(read(state.slots[`momentum_buffer/${k}`]), buf[k], 1e-6, `buf ${k}`);
  }
  disposeAll(params);
  disposeOptimizerState(state);
});

Deno.test("sgd: first step by hand, and momentum 0 keeps no slots", () => {
  const params = makeParams({ w: [1, 2] }, { w: [2, 1] });
  const grads = makeGrads({ w: [0.5, -1] }, { w: [2, 1] });
  const cfg: OptimizerConfig = { name: "sgd", weightDecay: 0, momentum: 0 };
  const state = createOptimizerState(cfg, params);
  assertEquals(Object.keys(state.slots).length, 0);
  applyGradients(params, grads, state, cfg, 0.2);
  assertClose(read(params.w), [1 - 0.1, 2 + 0.2], 1e-7, "w");
  disposeAll(params, grads);
});

// ---------- decay selection and frozen parameters ----------

Deno.test("decays: skipDecay excludes rank <= 1 params, cls_token, pos_embed; default decays all", () => {
  const skip = { skipDecay: true };
  assertEquals(decays("blocks.0.attn.qkv.weight", [384, 1152], skip), true);
  assertEquals(decays("patch_embed.proj.weight", [384, 3, 16, 16], skip), true);
  assertEquals(decays("blocks.0.attn.qkv.bias", [1152], skip), false);
  assertEquals(decays("norm.weight", [384], skip), false);
  assertEquals(decays("norm.bias", [384], skip), false);
  assertEquals(decays("cls_token", [1, 1, 384], skip), false);
  assertEquals(decays("pos_embed", [1, 197, 384], skip), false);
  assertEquals(decays("base.pos_embed", [1, 197, 384], skip), false);
  assertEquals(decays("cls_token_proj.weight", [4, 4], skip), true);
  assertEquals(decays("norm.bias", [384], {}), true);
  assertEquals(decays("cls_token", [1, 1, 384], { skipDecay: false }), true);
});

for (const name of ["adamw", "lamb", "sgd"] as const) {
  Deno.test(`${name}: skipDecay leaves 1-D params and tokens undecayed (zero gradient)`, () => {
    const shapes: Shapes = {
      "head.weight": [2, 2],
      "norm.bias": [2],
      "cls_token": [1, 1, 2],
      "pos_embed": [1, 2, 2],
    };
    const vals: Arrays = {
      "head.weight": [1, -2, 3, -4],
      "norm.bias": [0.5, -0.5],
      "cls_token": [0.3, 0.7],
      "pos_embed": [1, 2, 3, 4],
    };
    const params = makeParams(vals, shapes);
    const grads = makeGrads(zerosLike(vals), shapes);
    const cfg: OptimizerConfig = { name, weightDecay: 0.1, skipDecay: true, momentum: 0.9 };
    const state = createOptimizerState(cfg, params);
    applyGradients(params, grads, state, cfg, 0.5);
    for (const k of ["norm.bias", "cls_token", "pos_embed"]) {
      assertClose(read(params[k]), vals[k].map(Math.fround), 0, k);
    }
    // The 2-D weight does decay: adamw multiplies by 1 - lr*wd; sgd steps by lr*wd*p; lamb's
    // update is wd*p with trust ratio ||p|| / ||wd*p|| = 1/wd, so p <- p - lr*p.
    const factor = name === "lamb" ? 0.5 : 0.95;
    assertClose(read(params["head.weight"]), vals["head.weight"].map((x) => x * factor), 1e-6, "w");
    disposeAll(params, grads);
    disposeOptimizerState(state);
  });

  Deno.test(`${name}: parameters without a gradient are untouched, slots included`, () => {
    const shapes: Shapes = { "patch_embed.proj.weight": [2, 3], "head.weight": [3, 2] };
    const vals: Arrays = {
      "patch_embed.proj.weight": [1, 2, 3, 4, 5, 6],
      "head.weight": [0.1, 0.2, 0.3, 0.4, 0.5, 0.6],
    };
    const params = makeParams(vals, shapes);
    const cfg: OptimizerConfig = { name, weightDecay: 0.3, momentum: 0.9 };
    const state = createOptimizerState(cfg, params);
    for (let i = 0; i < 2; i++) {
      const grads = makeGrads({ "head.weight": [1, 1, 1, 1, 1, 1] }, shapes);
      applyGradients(params, grads, state, cfg, 0.1);
      disposeAll(grads);
    }
    assertClose(read(params["patch_embed.proj.weight"]), vals["patch_embed.proj.weight"], 0, "p");
    for (const [key, slot] of Object.entries(state.slots)) {
      if (key.endsWith("/patch_embed.proj.weight")) {
        assertClose(read(slot), [0, 0, 0, 0, 0, 0], 0, key);
      }
    }
    assert(read(params["head.weight"]).every((x, i) => x !== vals["head.weight"][i]));
    disposeAll(params);
    disposeOptimizerState(state);
  });

  Deno.test(`${name}: no tensor leaks and no host reads during applyGradients`, () => {
    const params = makeParams(P0, SHAPES);
    const cfg: OptimizerConfig = {
      name,
      weightDecay: 0.05,
      skipDecay: true,
      maxGradNorm: name === "lamb" ? 1 : undefined,
    };
    const state = createOptimizerState(cfg, params);
    const grads = makeGrads(GRAD_SEQ[0], SHAPES);
    const backend = tf.backend();
    const origRead = backend.read.bind(backend), origReadSync = backend.readSync.bind(backend);
    let reads = 0;
    backend.read = (id) => (reads++, origRead(id));
    backend.readSync = (id) => (reads++, origReadSync(id));
    const before = tf.memory().numTensors;
    try {
      for (let i = 0; i < 3; i++) applyGradients(params, grads, state, cfg, 0.01);
    } finally {
      backend.read = origRead;
      backend.readSync = origReadSync;
    }
    assertEquals(tf.memory().numTensors, before);
    assertEquals(reads, 0);
    disposeAll(params, grads);
    disposeOptimizerState(state);
  });
}

Deno.test("adamw: a fixed, small number of kernels per parameter", async () => {
  const params = makeParams(P0, SHAPES);
  const cfg: OptimizerConfig = { name: "adamw", weightDecay: 0.1 };
  const state = createOptimizerState(cfg, params);
  const grads = makeGrads(GRAD_SEQ[0], SHAPES);
  const info = await tf.profile(() => applyGradients(params, grads, state, cfg, 0.01));
  assert(info.kernels.length <= 2 * 15, `${info.kernels.length} kernels for 2 params`);
  disposeAll(params, grads);
  disposeOptimizerState(state);
});

Deno.test("adamw: a backend's fused AdamW is used (and only for adamw), with its coefficients", () => {
  const seen: Record<string, number | boolean>[] = [];
  try {
    // A stand-in fused kernel whose outputs are visibly not an Adam step.
    registerFastPaths("cpu", {
      adamw: (p, _g, _m, _v, c) => {
        seen.push({ ...c });
        return [tf.fill(p.shape, 7), tf.fill(p.shape, 8), tf.fill(p.shape, 9)];
      },
    });
    for (const name of ["adamw", "lamb", "sgd"] as const) {
      const params = makeParams({ w: [1, 2] }, { w: [2] });
      const cfg: OptimizerConfig = { name, weightDecay: 0.1 };
      const state = createOptimizerState(cfg, params);
      const grads = makeGrads({ w: [0.5, -0.5] }, { w: [2] });
      const before = fastPathCalls().adamw;
      applyGradients(params, grads, state, cfg, 0.01);
      const fused = name === "adamw";
      assertEquals(fastPathCalls().adamw, before + (fused ? 1 : 0));
      assertEquals(Array.from(params.w.dataSync()).every((v) => v === 7), fused);
      if (fused) {
        assertEquals(Array.from(state.slots["exp_avg/w"].dataSync()), [8, 8]);
        assertEquals(Array.from(state.slots["exp_avg_sq/w"].dataSync()), [9, 9]);
      }
      disposeAll(params, grads);
      disposeOptimizerState(state);
    }
  } finally {
    registerFastPaths("cpu", {});
  }
  // Step 1, betas (0.9, 0.999), lr 0.01, wd 0.1: the coefficients of torch.optim.AdamW.
  assertEquals(seen.length, 1);
  const c = seen[0];
  assertAlmostEquals(c.c1m as number, 0.1, 1e-15);
  assertAlmostEquals(c.b2 as number, 0.999, 1e-15);
  assertAlmostEquals(c.c2 as number, 0.001, 1e-15);
  assertAlmostEquals(c.sbc2 as number, Math.sqrt(0.001), 1e-15);
  assertAlmostEquals(c.decay as number, 1 - 0.01 * 0.1, 1e-15);
  assertAlmostEquals(c.step as number, 0.01 / 0.1, 1e-12);
  assertEquals(c.eps, 1e-8);
  assertEquals(c.hasDecay, true);
});

Deno.test("applyGradients: errors name the problem", () => {
  const params = makeParams({ w: [1, 2] }, { w: [2] });
  const cfg: OptimizerConfig = { name: "adamw", weightDecay: 0 };
  const state = createOptimizerState(cfg, params);
  const wrongName = makeGrads({ v: [1, 2] }, { v: [2] });
  const wrongShape = makeGrads({ w: [1, 2] }, { w: [1, 2] });
  assertThrows(() => applyGradients(params, wrongName, state, cfg, 0.1), Error, '"v"');
  assertThrows(() => applyGradients(params, wrongShape, state, cfg, 0.1), Error, "shape");
  assertThrows(() => applyGradients(params, {}, state, cfg, NaN), Error, "lr");
  assertThrows(
    () => createOptimizerState({ name: "adam" as "adamw", weightDecay: 0 }, params),
    Error,
    "unknown optimiser",
  );
  assertEquals(state.step, 0);
  disposeAll(params, wrongName, wrongShape);
  disposeOptimizerState(state);
});

// ---------- checkpoint ----------

Deno.test("optimizer state round-trips through checkpoint tensors", () => {
  const cfg: OptimizerConfig = { name: "adamw", weightDecay: 0.1 };
  const paramsA = makeParams(P0, SHAPES);
  const stateA = createOptimizerState(cfg, paramsA);
  for (let i = 0; i < 2; i++) {
    const g = makeGrads(GRAD_SEQ[i], SHAPES);
    applyGradients(paramsA, g, stateA, cfg, 0.01);
    disposeAll(g);
  }
  const saved = optimizerStateTensors(stateA);
  assertEquals(
    Object.keys(saved).sort(),
    [
      "optim.exp_avg.blocks.0.attn.qkv.bias",
      "optim.exp_avg.blocks.0.attn.qkv.weight",
      "optim.exp_avg_sq.blocks.0.attn.qkv.bias",
      "optim.exp_avg_sq.blocks.0.attn.qkv.weight",
    ],
  );
  const copies = Object.fromEntries(Object.entries(saved).map(([k, t]) => [k, tf.clone(t)]));
  const paramsB = makeParams(
    Object.fromEntries(Object.keys(P0).map((k) => [k, read(paramsA[k])])),
    SHAPES,
  );
  const stateB = createOptimizerState(cfg, paramsB);
  const before = tf.memory().numTensors;
  loadOptimizerState(stateB, {
    ...copies,
    "blocks.0.attn.qkv.weight": paramsA["blocks.0.attn.qkv.weight"],
  }, stateA.step);
  assertEquals(tf.memory().numTensors, before);
  assertEquals(stateB.step, 2);
  disposeAll(copies); // the state keeps its own references
  const g = makeGrads(GRAD_SEQ[2], SHAPES);
  applyGradients(paramsA, g, stateA, cfg, 0.01);
  applyGradients(paramsB, g, stateB, cfg, 0.01);
  for (const k of Object.keys(P0)) assertClose(read(paramsB[k]), read(paramsA[k]), 0, k);

  const sgdState = createOptimizerState({ name: "sgd", weightDecay: 0 }, paramsB);
  assertThrows(() => loadOptimizerState(sgdState, saved, 2), Error, "matches no slot");
  assertThrows(() => loadOptimizerState(stateB, {}, 2), Error, "lacks");
  disposeAll(paramsA, paramsB, g);
  disposeOptimizerState(stateA);
  disposeOptimizerState(stateB);
  disposeOptimizerState(sgdState);
});

// ---------- schedules ----------

Deno.test("scaledLr: base * batch / 256", () => {
  assertAlmostEquals(scaledLr(1.5e-4, 4096), 2.4e-3, 1e-15);
  assertAlmostEquals(scaledLr(1.5e-4, 1024), 6e-4, 1e-15);
});

Deno.test("lrAt: warmup from 0, then half-cycle cosine (main_moco.py adjust_learning_rate)", () => {
  const o = { peakLr: 1e-3, warmupSteps: 100, totalSteps: 1100 };
  assertEquals(lrAt(0, o), 0);
  assertAlmostEquals(lrAt(25, o), 2.5e-4, 1e-15);
  assertAlmostEquals(lrAt(99, o), 9.9e-4, 1e-15);
  assertAlmostEquals(lrAt(100, o), 1e-3, 1e-15); // end of warmup = peak
  assertAlmostEquals(lrAt(350, o), 1e-3 * 0.5 * (1 + Math.SQRT1_2), 1e-15); // quarter: cos(pi/4)
  assertAlmostEquals(lrAt(600, o), 5e-4, 1e-15); // middle of the cosine
  assertAlmostEquals(lrAt(1100, o), 0, 1e-15);
  assertAlmostEquals(lrAt(5000, o), 0, 1e-15); // clamped after the end
  // Official form with fractional epochs: 10 epochs of 100 iterations, 1 warmup epoch.
  // adjust_learning_rate(epoch + i / iters): epoch 3, i = 50 -> 3.5 epochs.
  const e = 3.5;
  const official = 1e-3 * 0.5 * (1 + Math.cos(Math.PI * (e - 1) / (10 - 1)));
  assertAlmostEquals(
    lrAt(350, { peakLr: 1e-3, warmupSteps: 100, totalSteps: 1000 }),
    official,
    1e-15,
  );
  // minLr floor
  const m = { ...o, minLr: 1e-5 };
  assertAlmostEquals(lrAt(600, m), 1e-5 + (1e-3 - 1e-5) * 0.5, 1e-15);
  assertAlmostEquals(lrAt(1100, m), 1e-5, 1e-15);
  assertAlmostEquals(lrAt(50, m), 5e-4, 1e-15); // warmup is from 0, not from minLr
  // no warmup
  assertAlmostEquals(lrAt(0, { peakLr: 2, warmupSteps: 0, totalSteps: 10 }), 2, 1e-15);
  assertThrows(() => lrAt(0, { peakLr: 1, warmupSteps: 10, totalSteps: 10 }), Error, "warmupSteps");
});

Deno.test("momentumAt: m0 at 0, (1 + m0) / 2 at T/2, 1 at T", () => {
  assertAlmostEquals(momentumAt(0, 1000, 0.99), 0.99, 1e-15);
  assertAlmostEquals(momentumAt(500, 1000, 0.99), 0.995, 1e-15);
  assertAlmostEquals(momentumAt(1000, 1000, 0.99), 1, 1e-15);
  assertAlmostEquals(momentumAt(250, 1000, 0.9), 1 - 0.5 * (1 + Math.SQRT1_2) * 0.1, 1e-15);
  assertAlmostEquals(momentumAt(0, 10, 0), 0, 1e-15);
});

Deno.test("globalNorm: sqrt of the summed squares over all tensors", () => {
  const a = tf.tensor([3, 0], [2]);
  const b = tf.tensor([[0, 4], [0, 12]]);
  const before = tf.memory().numTensors;
  const n1 = globalNorm([a, b]);
  const n2 = globalNorm({ a });
  const n0 = globalNorm([]);
  assertEquals(tf.memory().numTensors, before + 3);
  assertAlmostEquals(n1.dataSync()[0], 13, 1e-6);
  assertAlmostEquals(n2.dataSync()[0], 3, 1e-6);
  assertEquals(n0.dataSync()[0], 0);
  assertEquals(n1.shape, []);
  tf.dispose([a, b, n0, n1, n2]);
});
