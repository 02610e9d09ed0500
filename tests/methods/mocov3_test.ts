/**
 * Tests of MoCo v3 (lib/methods/mocov3.ts) and its heads (lib/model/heads.ts): the loss against a plain-JS
 * computation and its chance level, the EMA of the momentum encoder (before the keys, with the
 * online weights before the optimiser update), the stop-gradient on the keys, the head layout
 * and names, a finite-difference check of the gradient, and tensor leaks over 20 steps.
 */
import * as tf from "@tensorflow/tfjs-core";
import { assert, assertAlmostEquals, assertEquals } from "@std/assert";
import { initBackend } from "../../lib/backends/mod.ts";
import { buildMlp, mlpForward } from "../../lib/model/heads.ts";
import { ctr } from "../../lib/methods/losses.ts";
import {
  createMomentumNetworks,
  disposeMomentumNetworks,
  emaUpdate,
  type MomentumNetworks,
  momentumState,
  momentumTrainable,
} from "../../lib/methods/two_view.ts";
import { momentumUpdateThenMocoGrads } from "../../lib/methods/mocov3.ts";
import {
  applyGradients,
  createOptimizerState,
  disposeOptimizerState,
} from "../../lib/optim/optim.ts";
import { createRng, type Rng } from "../../lib/core/rng.ts";
import { vitForward } from "../../lib/model/vit.ts";
import { maxAbsDiff } from "../_helpers/numeric.ts";

await initBackend({ backend: "cpu" });

// ---------- plain-JS helpers (float64, independent of the code under test) ----------

type Mat = number[][];

function randMat(rows: number, cols: number, rng: Rng, scale = 1): Mat {
  return Array.from(
    { length: rows },
    () => Array.from({ length: cols }, () => scale * rng.normal()),
  );
}

function normalizeRows(x: Mat): Mat {
  return x.map((r) => {
    const n = Math.max(Math.hypot(...r), 1e-12);
    return r.map((v) => v / n);
  });
}

/** ctr(q, k) = CE(normalize(q) normalize(k)^T / T, diagonal labels) * 2T, in float64. */
function ctrByHand(q: Mat, k: Mat, T: number): number {
  const qn = normalizeRows(q), kn = normalizeRows(k);
  const B = q.length;
  let ce = 0;
  for (let i = 0; i < B; i++) {
    const logits = kn.map((kr) => kr.reduce((s, v, c) => s + v * qn[i][c], 0) / T);
    const mx = Math.max(...logits);
    const lse = mx + Math.log(logits.reduce((s, l) => s + Math.exp(l - mx), 0));
    ce += lse - logits[i];
  }
  return (ce / B) * 2 * T;
}

const tinyVit = {
  name: "vit_nano",
  imageSize: 8,
  patchSize: 4,
  channels: 1,
  dim: 16,
  depth: 1,
  heads: 2,
};

function images(B: number, seed: number): tf.Tensor4D {
  const rng = createRng(seed);
  const v = new Float32Array(B * 8 * 8);
  for (let i = 0; i < v.length; i++) v[i] = rng.normal();
  return tf.tensor4d(v, [B, 8, 8, 1]);
}

// ---------- loss ----------

Deno.test("ctr equals CE(normalize(q) normalize(k)^T / T) * 2T computed by hand", () => {
  const q: Mat = [[1, 2, -1], [0.5, -0.3, 2], [-1, 0.1, 0.4], [3, 0, 0]];
  const k: Mat = [[0.9, 2.2, -0.7], [1, -1, 1], [-0.2, 0.3, 0.9], [2, 1, -1]];
  for (const T of [0.2, 1]) {
    const expected = ctrByHand(q, k, T);
    const qt = tf.tensor2d(q), kt = tf.tensor2d(k);
    const n0 = tf.memory().numTensors;
    const loss = ctr(qt, kt, T);
    assertEquals(tf.memory().numTensors, n0 + 1, "only the loss remains");
    assertAlmostEquals(loss.dataSync()[0], expected, 1e-5, `T=${T}`);
    tf.dispose([loss, qt, kt]);
  }
  // Scaling q does not change the loss (normalisation).
  const scaled = tf.tidy(() =>
    ctr(tf.tensor2d(q.map((r) => r.map((v) => 7 * v))), tf.tensor2d(k), 0.2)
      .dataSync()[0]
  );
  assertAlmostEquals(scaled, ctrByHand(q, k, 0.2), 1e-5);
});

Deno.test("ctr of random unit vectors in high dimension is about 2T ln(B)", () => {
  const rng = createRng(3);
  const T = 0.2, C = 4096;
  for (const B of [16, 64]) {
    const q = randMat(B, C, rng), k1 = randMat(B, C, rng), q2 = randMat(B, C, rng);
    const k2 = randMat(B, C, rng);
    const total = tf.tidy(() =>
      tf.add(
        ctr(tf.tensor2d(q), tf.tensor2d(k2), T),
        ctr(tf.tensor2d(q2), tf.tensor2d(k1), T),
      ).dataSync()[0]
    );
    const one = tf.tidy(() => ctr(tf.tensor2d(q), tf.tensor2d(k1), T).dataSync()[0]);
    // Cosines are ~N(0, 1/C): logits of std 1/(T sqrt C) = 0.08 shift CE by ~var/2 = 0.3%.
    assertAlmostEquals(one, 2 * T * Math.log(B), 0.03 * 2 * T * Math.log(B), `B=${B}`);
    assertAlmostEquals(total, 4 * T * Math.log(B), 0.03 * 4 * T * Math.log(B), `B=${B}`);
  }
});

// ---------- momentum ----------

Deno.test("emaUpdate computes t = m t + (1 - m) s elementwise", () => {
  const t = {
    a: tf.variable(tf.tensor1d([1, 2, 3]), false),
    b: tf.variable(tf.tensor2d([[4, -4]]), false),
  };
  const s = { a: tf.tensor1d([3, 2, -1]), b: tf.tensor2d([[0, 10]]) };
  const n0 = tf.memory().numTensors;
  emaUpdate(t, s, 0.9);
  assertEquals(tf.memory().numTensors, n0);
  const a = t.a.dataSync(), b = t.b.dataSync();
  const expA = [0.9 * 1 + 0.1 * 3, 0.9 * 2 + 0.1 * 2, 0.9 * 3 + 0.1 * -1];
  const expB = [0.9 * 4 + 0.1 * 0, 0.9 * -4 + 0.1 * 10];
  expA.forEach((e, i) => assertAlmostEquals(a[i], e, 1e-6));
  expB.forEach((e, i) => assertAlmostEquals(b[i], e, 1e-6));
  // With a rename function the source keys may differ from the target keys.
  const t2 = { "momentum_encoder.x": tf.variable(tf.tensor1d([10]), false) };
  emaUpdate(
    t2,
    { "base_encoder.x": tf.tensor1d([0]) },
    0.5,
    (k) => k.replace("momentum_encoder.", "base_encoder."),
  );
  assertAlmostEquals(t2["momentum_encoder.x"].dataSync()[0], 5, 1e-6);
  tf.dispose([...Object.values(t), ...Object.values(s), ...Object.values(t2)]);
});

/** The online state and the momentum state of a MoCo model, paired by name. */
function pairs(model: MomentumNetworks): [string, tf.Variable, tf.Variable][] {
  const state = momentumState(model);
  const out: [string, tf.Variable, tf.Variable][] = [];
  for (const [name, v] of Object.entries(model.momentumBackbone.params)) {
    out.push([name, model.backbone.params[name], v]);
  }
  for (const [name, v] of Object.entries(model.momentumProjector.params)) {
    out.push([name, model.projector.params[name], v]);
  }
  // The momentum tensors listed above are exactly the momentum_encoder.* entries of the state.
  const momentumNames = Object.keys(state).filter((k) => k.startsWith("momentum_encoder."));
  assertEquals(momentumNames.length, out.length);
  return out;
}

Deno.test("momentum encoder: starts equal, then EMA of the pre-update online weights, before the keys", () => {
  const model = createMomentumNetworks(tinyVit, { hidden: 16, outDim: 8, temperature: 0.2 }, 1);
  const params = momentumTrainable(model);
  const optCfg = { name: "adamw" as const, weightDecay: 0.1 };
  const opt = createOptimizerState(optCfg, params);
  // 1. The momentum encoder starts as an exact copy (and as distinct variables).
  for (const [name, online, mom] of pairs(model)) {
    assert(online !== mom, `${name}: the momentum encoder must own its variables`);
    assertEquals(maxAbsDiff(online.dataSync(), mom.dataSync()), 0, name);
  }
  const x1 = images(6, 10), x2 = images(6, 11);
  // 2. One update with m = 1 (so the momentum encoder stays put) makes online != momentum.
  {
    const { loss, grads } = momentumUpdateThenMocoGrads(model, x1, x2, { momentum: 1 });
    applyGradients(params, grads, opt, optCfg, 1e-2);
    tf.dispose([loss, ...Object.values(grads)]);
  }
  const online0 = Object.fromEntries(pairs(model).map(([n, o]) => [n, o.dataSync().slice()]));
  const mom0 = Object.fromEntries(pairs(model).map(([n, , m]) => [n, m.dataSync().slice()]));
  const differs = pairs(model).filter(([n]) => maxAbsDiff(online0[n], mom0[n]) > 1e-4);
  assert(differs.length > 5, "the optimiser step should move the online weights");

  // The loss with the keys from the updated momentum encoder, computed outside momentumUpdateThenMocoGrads.
  const m = 0.8;
  const emaByHand = (n: string) => mom0[n].map((k, i) => m * k + (1 - m) * online0[n][i]);
  const lossWith = (useUpdatedKeys: boolean) =>
    tf.tidy(() => {
      const keyModel = createMomentumNetworks(
        tinyVit,
        { hidden: 16, outDim: 8, temperature: 0.2 },
        1,
      );
      for (const [n, , mk] of pairs(keyModel)) {
        mk.assign(tf.tensor(useUpdatedKeys ? emaByHand(n) : mom0[n], mk.shape));
      }
      const keys = [x1, x2].map((x) =>
        mlpForward(
          keyModel.momentumProjector,
          vitForward(keyModel.momentumBackbone, x, { training: true }).features,
        )
      );
      const qs = [x1, x2].map((x) =>
        mlpForward(
          model.predictor,
          mlpForward(model.projector, vitForward(model.backbone, x, { training: true }).features),
        )
      );
      const l = tf.add(ctr(qs[0], keys[1], 0.2), ctr(qs[1], keys[0], 0.2));
      const out = l.dataSync()[0];
      disposeMomentumNetworks(keyModel);
      return out;
    });
  const withNew = lossWith(true), withOld = lossWith(false);
  assert(Math.abs(withNew - withOld) > 1e-4, "test setup: old and new keys should differ");

  // 3. One step with momentum m: momentum = m old_k + (1 - m) online_before_step.
  const { loss, grads } = momentumUpdateThenMocoGrads(model, x1, x2, { momentum: m });
  for (const [n, , mom] of pairs(model)) {
    assert(maxAbsDiff(mom.dataSync(), emaByHand(n)) < 1e-6, `${n}: EMA by hand`);
  }
  // The loss used the keys of the updated momentum encoder (EMA before the keys).
  assertAlmostEquals(loss.dataSync()[0], withNew, 1e-5);
  // 4. The optimiser update changes the online weights but not the momentum encoder.
  applyGradients(params, grads, opt, optCfg, 1e-2);
  tf.dispose([loss, ...Object.values(grads)]);
  for (const [n, online, mom] of pairs(model)) {
    assert(maxAbsDiff(mom.dataSync(), emaByHand(n)) < 1e-6, `${n}: untouched by the optimiser`);
    if (!model.backbone.frozen.has(n)) {
      assert(maxAbsDiff(online.dataSync(), online0[n]) > 0, `${n}: online weights moved`);
    }
  }
  disposeOptimizerState(opt);
  disposeMomentumNetworks(model);
  tf.dispose([x1, x2]);
});

Deno.test("momentumUpdateThenMocoGrads: gradients exactly for the trainable online weights, none for the keys", () => {
  const model = createMomentumNetworks(tinyVit, { hidden: 16, outDim: 8 }, 2);
  const x1 = images(4, 1), x2 = images(4, 2);
  const { loss, grads } = momentumUpdateThenMocoGrads(model, x1, x2, { momentum: 0.99 });
  const names = Object.keys(grads).sort();
  assertEquals(names, Object.keys(momentumTrainable(model)).sort());
  assert(!names.some((n) => n.startsWith("momentum_encoder.")), "no gradient for the keys");
  // The fixed sin-cos table is frozen: no gradient.
  assert(!names.includes("base_encoder.pos_embed"));
  for (const n of names) assertEquals(grads[n].shape, momentumTrainable(model)[n].shape, n);
  tf.dispose([loss, ...Object.values(grads), x1, x2]);
  disposeMomentumNetworks(model);
});

// ---------- heads ----------

Deno.test("heads: PyTorch Sequential names, no Linear biases, last BN without affine", () => {
  const model = createMomentumNetworks(tinyVit, { hidden: 12, outDim: 6 }, 0);
  const shapes = Object.fromEntries(
    Object.entries(momentumState(model))
      .filter(([k]) => /head\.|predictor\./.test(k))
      .map(([k, v]) => [k, v.shape]),
  );
  const D = 16;
  assertEquals(shapes, {
    // projector: Linear(D, 12) BN ReLU Linear(12, 12) BN ReLU Linear(12, 6) BN(affine=False)
    "base_encoder.head.0.weight": [12, D],
    "base_encoder.head.1.weight": [12],
    "base_encoder.head.1.bias": [12],
    "base_encoder.head.3.weight": [12, 12],
    "base_encoder.head.4.weight": [12],
    "base_encoder.head.4.bias": [12],
    "base_encoder.head.6.weight": [6, 12],
    // predictor: Linear(6, 12) BN ReLU Linear(12, 6) BN(affine=False)
    "predictor.0.weight": [12, 6],
    "predictor.1.weight": [12],
    "predictor.1.bias": [12],
    "predictor.3.weight": [6, 12],
    // momentum projector, same layout, no predictor
    "momentum_encoder.head.0.weight": [12, D],
    "momentum_encoder.head.1.weight": [12],
    "momentum_encoder.head.1.bias": [12],
    "momentum_encoder.head.3.weight": [12, 12],
    "momentum_encoder.head.4.weight": [12],
    "momentum_encoder.head.4.bias": [12],
    "momentum_encoder.head.6.weight": [6, 12],
  });
  // Backbone names follow timm under base_encoder. / momentum_encoder.
  const state = momentumState(model);
  for (const n of ["patch_embed.proj.weight", "blocks.0.attn.qkv.weight", "norm.weight"]) {
    assert(`base_encoder.${n}` in state && `momentum_encoder.${n}` in state, n);
  }
  disposeMomentumNetworks(model);
});

Deno.test("mlpForward = Linear -> BN -> ReLU -> ... -> Linear -> BN(no affine), by hand", () => {
  const rng = createRng(5);
  const head = buildMlp({ numLayers: 2, inDim: 3, hidden: 4, outDim: 2 }, rng, "p.");
  // Non-trivial BN affine parameters, so that a missing affine would show.
  head.params["p.1.weight"].assign(tf.tensor1d([1.5, 0.5, -1, 2]));
  head.params["p.1.bias"].assign(tf.tensor1d([0.1, -0.2, 0.3, 0]));
  const x = randMat(5, 3, rng);
  const W0 = head.params["p.0.weight"].arraySync() as Mat;
  const W1 = head.params["p.3.weight"].arraySync() as Mat;
  const g = [1.5, 0.5, -1, 2], b = [0.1, -0.2, 0.3, 0];
  const matT = (a: Mat, w: Mat) =>
    a.map((r) => w.map((wr) => wr.reduce((s, v, i) => s + v * r[i], 0)));
  const bn = (a: Mat) => {
    const B = a.length;
    return a.map((r) =>
      r.map((v, j) => {
        const mean = a.reduce((s, rr) => s + rr[j], 0) / B;
        const variance = a.reduce((s, rr) => s + (rr[j] - mean) ** 2, 0) / B; // biased
        return (v - mean) / Math.sqrt(variance + 1e-5);
      })
    );
  };
  const h = bn(matT(x, W0)).map((r) => r.map((v, j) => Math.max(0, v * g[j] + b[j])));
  const expected = bn(matT(h, W1));
  const got = tf.tidy(() => mlpForward(head, tf.tensor2d(x)).arraySync() as Mat);
  for (let i = 0; i < 5; i++) {
    for (let j = 0; j < 2; j++) assertAlmostEquals(got[i][j], expected[i][j], 1e-4);
  }
  tf.dispose(Object.values(head.params));
});

Deno.test("the last BN of the heads has no affine: zero mean, unit variance per feature", () => {
  const model = createMomentumNetworks(tinyVit, { hidden: 32, outDim: 8 }, 4);
  // Even after training-like changes of the hidden BN parameters, the output stays standardised.
  model.projector.params["base_encoder.head.4.bias"].assign(tf.fill([32], 3));
  const x = images(10, 7);
  const [proj, pred] = tf.tidy(() => {
    const f = vitForward(model.backbone, x, { training: true }).features;
    const p = mlpForward(model.projector, f);
    return [p.arraySync() as Mat, mlpForward(model.predictor, p).arraySync() as Mat];
  });
  for (const out of [proj, pred]) {
    for (let j = 0; j < 8; j++) {
      const col = out.map((r) => r[j]);
      const mean = col.reduce((s, v) => s + v, 0) / col.length;
      const variance = col.reduce((s, v) => s + (v - mean) ** 2, 0) / col.length;
      assertAlmostEquals(mean, 0, 1e-5);
      assertAlmostEquals(variance, 1, 1e-2); // v / (v + 1e-5)
    }
  }
  tf.dispose(x);
  disposeMomentumNetworks(model);
});

// ---------- gradient ----------

Deno.test("momentumUpdateThenMocoGrads gradient matches central finite differences (momentum 1: fixed keys)", () => {
  const model = createMomentumNetworks(
    { ...tinyVit, dim: 8, heads: 2 },
    { hidden: 8, outDim: 4 },
    3,
  );
  const x1 = images(4, 21), x2 = images(4, 22);
  const trainable = momentumTrainable(model);
  // m = 1 keeps the momentum encoder fixed, so the loss is a function of the online weights only.
  const lossAt = () =>
    tf.tidy(() => {
      const { loss, grads } = momentumUpdateThenMocoGrads(model, x1, x2, { momentum: 1 });
      tf.dispose(Object.values(grads));
      return loss.dataSync()[0];
    });
  const { loss, grads } = momentumUpdateThenMocoGrads(model, x1, x2, { momentum: 1 });
  const base = loss.dataSync()[0];
  const names = [
    "base_encoder.patch_embed.proj.weight",
    "base_encoder.patch_embed.proj.bias",
    "base_encoder.blocks.0.attn.qkv.weight",
    "base_encoder.blocks.0.mlp.fc1.weight",
    "base_encoder.norm.weight",
    "base_encoder.head.0.weight",
    "base_encoder.head.1.bias",
    "predictor.0.weight",
    "predictor.3.weight",
  ];
  let checked = 0;
  for (const name of names) {
    const v = trainable[name];
    const g = grads[name].dataSync();
    // The two largest entries: their finite differences are the best conditioned.
    const order = [...g.keys()].sort((a, b) => Math.abs(g[b]) - Math.abs(g[a])).slice(0, 2);
    for (const idx of order) {
      const orig = v.dataSync().slice();
      const h = 1e-3;
      const at = (delta: number) => {
        const w = orig.slice();
        w[idx] += delta;
        v.assign(tf.tensor(w, v.shape));
        return lossAt();
      };
      const fd = (at(h) - at(-h)) / (2 * h);
      v.assign(tf.tensor(orig, v.shape));
      const err = Math.abs(fd - g[idx]);
      assert(
        err <= 2e-3 + 0.02 * Math.abs(g[idx]),
        `${name}[${idx}]: autodiff ${g[idx]}, finite difference ${fd}`,
      );
      checked++;
    }
  }
  assertEquals(checked, 2 * names.length);
  // The weights were restored: the loss is back to its value.
  assertAlmostEquals(lossAt(), base, 1e-6);
  tf.dispose([loss, ...Object.values(grads), x1, x2]);
  disposeMomentumNetworks(model);
});

// ---------- leaks ----------

Deno.test("20 training steps (momentumUpdateThenMocoGrads + applyGradients + dispose) leave numTensors constant", () => {
  for (const mlpNorm of ["layernorm", "batchnorm"] as const) {
    const model = createMomentumNetworks({ ...tinyVit, mlpNorm }, { hidden: 16, outDim: 8 }, 6);
    const params = momentumTrainable(model);
    const cfg = { name: "adamw" as const, weightDecay: 0.1 };
    const opt = createOptimizerState(cfg, params);
    const x1 = images(4, 31), x2 = images(4, 32);
    const n0 = tf.memory().numTensors;
    const losses: number[] = [];
    for (let i = 0; i < 20; i++) {
      const { loss, grads } = momentumUpdateThenMocoGrads(model, x1, x2, { momentum: 0.99 });
      losses.push(loss.dataSync()[0]);
      applyGradients(params, grads, opt, cfg, 1e-3);
      tf.dispose([loss, ...Object.values(grads)]);
      assertEquals(tf.memory().numTensors, n0, `${mlpNorm}: step ${i}`);
    }
    assert(losses.every(Number.isFinite));
    // ViT-BN: the running statistics were updated from the batch.
    if (mlpNorm === "batchnorm") {
      const rm = model.backbone.buffers["blocks.0.norm2.running_mean"].dataSync();
      assert(rm.some((v) => v !== 0), "running_mean should move");
    }
    tf.dispose([x1, x2]);
    disposeOptimizerState(opt);
    disposeMomentumNetworks(model);
  }
});

Deno.test("disposeMomentumNetworks frees every variable it created", () => {
  const n0 = tf.memory().numTensors;
  const model = createMomentumNetworks(tinyVit, { hidden: 16, outDim: 8 }, 0);
  assert(tf.memory().numTensors > n0);
  disposeMomentumNetworks(model);
  assertEquals(tf.memory().numTensors, n0);
});
